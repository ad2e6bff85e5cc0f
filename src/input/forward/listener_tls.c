/*
 * listener_tls.c: the OpenSSL server context for TCP listeners and the
 * per-connection OpenSSL bufferevents built on it.
 *
 * Kept apart from listener.c so that the connection code stays the same
 * with or without TLS: the listener asks for a bufferevent, gets a plain
 * socket one or one of these, and reads plaintext from it either way. The
 * context is built once at start (listen.tls.* need a restart): TLS 1.2 is
 * the floor and offers only listen.tls.ciphers (by default ECDHE key
 * exchange with AES-GCM or ChaCha20-Poly1305: forward secrecy, no CBC, no
 * SHA-1 MAC; TLS 1.3's suites are all of that kind already), compression and renegotiation are off (CRIME, and a
 * renegotiation storm as a CPU attack), the server-side session cache is
 * off (no per-client state that outlives a connection; TLS 1.3 tickets
 * still allow resumption), and with listen.tls.ca a client certificate that
 * chains to it is required. A client that closes without close_notify is
 * treated as an ordinary EOF: every value it completed was decoded already,
 * and a truncated one is discarded by the decoder either way.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "listener_tls.h"
#include "log.h"

struct listener_tls {
	SSL_CTX *ctx;             /* shared by every TLS connection; freed last */
};

/* OpenSSL error E in words: its reason ("unsupported protocol"), else the whole code. */
static void listener_tls_reason(unsigned long e, char *buf, size_t len)
{
	const char *reason = ERR_reason_error_string(e);

	if (reason)
		snprintf(buf, len, "%s", reason);
	else
		ERR_error_string_n(e, buf, len);
}

/* OpenSSL's most recent queued error in words (the queue is cleared). */
static void listener_tls_last_error(char *buf, size_t len)
{
	unsigned long e, last = 0;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last)
		listener_tls_reason(last, buf, len);
	else
		snprintf(buf, len, "unknown OpenSSL error");
}

/* Log that loading KEY_NAME from PATH failed: the file's own problem, else OpenSSL's reason. */
static void listener_tls_log_load(const char *key_name, const char *path)
{
	char why[256];

	if (access(path, R_OK) < 0) {
		ERR_clear_error();
		snprintf(why, sizeof(why), "cannot read: %s", strerror(errno));
	} else {
		listener_tls_last_error(why, sizeof(why));
	}
	log_error("tls", "listen.tls.%s \"%s\": %s", key_name, path, why);
}

/* Require client certificates that chain to the PEM bundle CA. 0 or -1 (logged). */
static int listener_tls_verify_clients(SSL_CTX *ctx, const char *ca)
{
	STACK_OF(X509_NAME) *names;

	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		listener_tls_log_load("ca", ca);
		return -1;
	}
	names = SSL_load_client_CA_file(ca);
	if (!names) {
		listener_tls_log_load("ca", ca);
		return -1;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return 0;
}

/* Protocol floor, TLS 1.2 ciphers, options and the certificate and key. 0 or -1 (logged). */
static int listener_tls_setup(SSL_CTX *ctx, const char *cert, const char *key,
			      const char *ciphers)
{
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		log_error("tls", "cannot set TLS 1.2 as the minimum protocol version");
		return -1;
	}
	if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		char why[256];

		listener_tls_last_error(why, sizeof(why));
		log_error("tls", "listen.tls.ciphers \"%s\": %s", ciphers, why);
		return -1;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
			    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		listener_tls_log_load("cert", cert);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		listener_tls_log_load("key", key);
		return -1;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		listener_tls_log_load("key", key);
		return -1;
	}
	return 0;
}

struct listener_tls *listener_tls_new(const char *cert, const char *key, const char *ca,
				      const char *ciphers)
{
	struct listener_tls *t = calloc(1, sizeof(*t));

	if (!t) {
		log_error("tls", "out of memory creating the TLS context");
		return NULL;
	}
	ERR_clear_error();
	t->ctx = SSL_CTX_new(TLS_server_method());
	if (!t->ctx) {
		char why[256];

		listener_tls_last_error(why, sizeof(why));
		log_error("tls", "cannot create the TLS context: %s", why);
		free(t);
		return NULL;
	}
	if (listener_tls_setup(t->ctx, cert, key, ciphers) < 0 ||
	    (ca && ca[0] && listener_tls_verify_clients(t->ctx, ca) < 0)) {
		listener_tls_free(t);
		return NULL;
	}
	log_info("tls", "TLS on TCP listeners (certificate %s%s%s)", cert,
		 ca && ca[0] ? ", client certificates required, CA " : "", ca && ca[0] ? ca : "");
	return t;
}

void listener_tls_free(struct listener_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

/*
 * On failure libevent 2.1 may or may not have freed the SSL and closed FD
 * already (it depends on how far it got), so a NULL from
 * bufferevent_openssl_socket_new leaves both alone: at worst one SSL object
 * and one socket leak in an out-of-memory path, never a double free or a
 * close of a descriptor another thread has just been given.
 */
struct bufferevent *listener_tls_bufferevent(struct listener_tls *t, struct event_base *base,
					     evutil_socket_t fd)
{
	SSL *ssl = SSL_new(t->ctx);
	struct bufferevent *bev;

	if (!ssl) {
		log_error("tls", "out of memory creating a TLS session");
		evutil_closesocket(fd);
		return NULL;
	}
	bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		log_error("tls", "out of memory creating a TLS bufferevent");
		return NULL;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

int listener_tls_error(struct bufferevent *bev, char *buf, size_t len)
{
	unsigned long e, last = 0;

	while ((e = bufferevent_get_openssl_error(bev)) != 0)
		if (!last)
			last = e; /* they come out newest first; the newest says most */
	if (!last)
		return -1;
	listener_tls_reason(last, buf, len);
	return 0;
}

void listener_tls_describe(struct bufferevent *bev, char *buf, size_t len)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	X509 *peer;
	char subject[256] = "none";

	if (!ssl) {
		snprintf(buf, len, "not TLS");
		return;
	}
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	peer = SSL_get1_peer_certificate(ssl);
#else
	peer = SSL_get_peer_certificate(ssl);
#endif
	if (peer) {
		X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
		X509_free(peer);
	}
	snprintf(buf, len, "%s %s client=%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl),
		 subject);
}
