/*
 * proto_auth: the Fluentd Forward protocol's shared-key handshake.
 *
 * With listen.shared_key set, a TCP connection starts with the server's
 * ["HELO", {"nonce": 16 random bytes, "auth": "", "keepalive": true}]; the
 * client must answer with ["PING", client_hostname, salt,
 * hex(sha512(salt || client_hostname || nonce || shared_key)), "", ""] before
 * anything else, and gets ["PONG", true, "", server_hostname,
 * hex(sha512(salt || server_hostname || nonce || shared_key))] back, or
 * ["PONG", false, reason, "", ""] and a closed connection. The nonce is new
 * for every connection, so a PING recorded on one connection is worthless on
 * another. The PING is read by a small bounded reader of its own (never by
 * msgpack-c), so a hostile first value costs at most PROTO_AUTH_PING_MAX
 * bytes. Loop thread only.
 */
#ifndef MI_PROTO_AUTH_H
#define MI_PROTO_AUTH_H

#include <stdint.h>

struct evbuffer;
struct proto_auth;

#define PROTO_AUTH_PING_MAX 4096 /* bytes a PING may take on the wire */

enum proto_auth_status {
	PROTO_AUTH_WAIT = 0,   /* the PING is not complete yet: call again with more bytes */
	PROTO_AUTH_DONE,       /* PING accepted, PONG true written; what follows in IN is events */
	PROTO_AUTH_FAIL,       /* refused (logged, PONG false written): flush OUT, then close */
	PROTO_AUTH_STATUS_COUNT /* number of statuses; not a status */
};

/*
 * New handshake state for one connection: SHARED_KEY (non-empty) and PEER
 * are copied, CONN_ID names the connection in log lines. NULL on ENOMEM.
 */
struct proto_auth *proto_auth_new(const char *shared_key, const char *peer, uint64_t conn_id)
	__attribute__((warn_unused_result));

/* Wipe the key and nonce and free A (NULL is fine). */
void proto_auth_free(struct proto_auth *a);

/*
 * Draw a fresh nonce and append the HELO message to OUT. 0, or -1 when the
 * random generator or an allocation failed (logged; close the connection).
 */
int proto_auth_helo(struct proto_auth *a, struct evbuffer *out)
	__attribute__((warn_unused_result));

/*
 * Read the client's PING from IN (after proto_auth_helo). On DONE the PING's
 * bytes are drained from IN and the PONG is in OUT; on FAIL the reason is
 * logged and, when it could be encoded, a PONG false is in OUT.
 */
enum proto_auth_status proto_auth_run(struct proto_auth *a, struct evbuffer *in,
				      struct evbuffer *out);

#endif
