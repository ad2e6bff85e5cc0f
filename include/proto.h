/*
 * proto: a connection's byte stream -> events, in the daemon's wire protocol.
 *
 * Each connection owns a struct proto_conn holding a msgpack_unpacker, so a
 * value split across reads is completed by later reads and many values in
 * one read are all taken. A value is a plain event map, a Fluentd Forward
 * protocol message (Message, Forward, PackedForward, CompressedPackedForward)
 * or nil (heartbeat). Every event goes to the intake (intake.h), which
 * queues or dead-letters it; a message's ack is opened here with the
 * listener's callback, which sends it once the intake hands it back. Loop
 * thread only.
 */
#ifndef MI_PROTO_H
#define MI_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "ack.h"

struct evbuffer;
struct intake;

/*
 * The memory every connection's unfinished input may take together
 * (listen.max_buffered_bytes). A connection's cost is the bytes its decoder
 * holds plus 24 for each element its open value announced (what msgpack-c
 * allocates on reading the count). Owned by the listener; loop thread.
 */
struct proto_budget {
	size_t max;                /* 0: no limit */
	size_t used;               /* every connection's cost */
	int holders;               /* connections whose cost is not 0 */
};

/* Everything proto needs from the rest of the daemon; owned by main. */
struct proto_env {
	struct intake *intake;     /* where events go */
	size_t max_event_bytes;    /* listen.max_event_bytes (read live on reload) */
	struct proto_budget *budget; /* or NULL: no memory budget */
};

/* A value may announce at most max_event_bytes / PROTO_ELEMS_DIVISOR elements
 * (a map pair counts two): msgpack-c then takes at most 6 x max_event_bytes. */
#define PROTO_ELEMS_DIVISOR 4

enum proto_status {
	PROTO_OK = 0,     /* consumed all complete values; wants more bytes */
	PROTO_BLOCKED,    /* intake_busy: stop reading, call proto_run again later */
	PROTO_CLOSE,      /* fatal stream error (logged): close the connection */
	PROTO_HELD,       /* over the memory budget: stop reading this connection until
			   * proto_budget.used falls, then call proto_run again */
	PROTO_STATUS_COUNT /* number of statuses; not a status */
};

struct proto_conn;

/* New decoder for one connection. Its acks get ACK_CB(ack, durable, ACK_ARG)
 * (see ack.h). PEER is copied ("tcp:127.0.0.1:5000", "unix"). NULL on ENOMEM. */
struct proto_conn *proto_conn_new(const struct proto_env *env, ack_done_cb *ack_cb,
				  void *ack_arg, const char *peer, uint64_t conn_id)
	__attribute__((warn_unused_result));
void proto_conn_free(struct proto_conn *pc);

/*
 * Move the bytes of IN into the decoder and decode every complete value,
 * handing events to the intake. Stops early with PROTO_BLOCKED when the
 * intake is busy (bytes stay buffered in the decoder; call again with an empty IN to
 * resume). PROTO_HELD, with the bytes left in IN, when taking them could
 * pass the memory budget and this connection holds at least its share.
 * PROTO_CLOSE on bytes that are not msgpack, a value over max_event_bytes
 * or announcing too many elements, after logging why.
 */
enum proto_status proto_run(struct proto_conn *pc, struct evbuffer *in);

/* Bytes buffered in the decoder and not yet decoded. */
size_t proto_pending_bytes(const struct proto_conn *pc);

/* Acks created so far for this connection (the listener keeps a closed
 * connection's struct until as many have come back). */
uint64_t proto_acks_created(const struct proto_conn *pc);

/* Complete values decoded so far (the idle timeout counts from the last). */
uint64_t proto_values_done(const struct proto_conn *pc);

/* Append the msgpack reply {"ack": chunk} for ACK to OUT. 0 or -1. */
int proto_ack_encode(const struct ack *ack, struct evbuffer *out);

#endif
