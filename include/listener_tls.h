/*
 * listener_tls: TLS for the TCP listeners (listen.tls.cert, key, ca).
 *
 * Owns the one OpenSSL server context the daemon builds at start and the
 * libevent OpenSSL bufferevents made from it for each accepted TCP socket:
 * TLS 1.2 or later (TLS 1.2 with listen.tls.ciphers: ECDHE and AEAD only by
 * default), no compression or renegotiation, and, when ca is set, a client
 * certificate that chains to it is required. Loop thread only.
 */
#ifndef MI_LISTENER_TLS_H
#define MI_LISTENER_TLS_H

#include <stddef.h>

#include <event2/util.h>

struct bufferevent;
struct event_base;
struct listener_tls;

/*
 * Load CERT (PEM chain) and KEY (PEM) and, when CA is non-empty, the PEM
 * bundle client certificates must chain to; TLS 1.2 offers only the
 * OpenSSL cipher list CIPHERS. NULL after logging which file or setting
 * failed and OpenSSL's reason.
 */
struct listener_tls *listener_tls_new(const char *cert, const char *key, const char *ca,
				      const char *ciphers) __attribute__((warn_unused_result));

void listener_tls_free(struct listener_tls *t);

/*
 * A bufferevent that runs the server side of a TLS handshake on the accepted
 * socket FD, then carries its plaintext; freeing it closes FD. NULL on
 * failure (logged); FD is taken either way: the caller never closes it.
 */
struct bufferevent *listener_tls_bufferevent(struct listener_tls *t, struct event_base *base,
					     evutil_socket_t fd)
	__attribute__((warn_unused_result));

/* After BEV_EVENT_ERROR on such a bufferevent: OpenSSL's reason into BUF
 * ("unsupported protocol") and 0, or -1 when the error was not TLS's (see errno). */
int listener_tls_error(struct bufferevent *bev, char *buf, size_t len);

/* After BEV_EVENT_CONNECTED: "TLSv1.3 TLS_AES_256_GCM_SHA384 client=CN=...". */
void listener_tls_describe(struct bufferevent *bev, char *buf, size_t len);

#endif
