/*
 * megactl_conn.c: megactl's client side of a megaingestd listener — the
 * socket, TLS over it, and the Fluentd Forward shared-key handshake as the
 * client (the wire protocol in the README, "Sending events").
 *
 * Everything is blocking with SO_RCVTIMEO/SO_SNDTIMEO bounds: megactl has
 * one connection and nothing else to do while it waits, so an event loop
 * would only add code. TLS is OpenSSL on the same fd; a timeout surfaces
 * from SSL_read as WANT_READ and is reported as EAGAIN, like a plain recv.
 * The handshake reads HELO and PONG with its own msgpack unpacker, bounded
 * to CONN_HS_MAX bytes: the daemon sends nothing after PONG until we send
 * events, so no byte of the event stream can be left in it. The PONG's
 * digest is checked too, so a server that merely accepts anything (or a
 * man in the middle without the key) is not taken for the daemon.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "megactl_conn.h"

#define CONN_HS_MAX 4096          /* bytes a HELO or PONG may take */
#define CONN_HS_TIMEOUT_S 10      /* a listener without shared_key never says HELO */
#define CONN_DIGEST_LEN 64        /* SHA-512 */
#define CONN_HEX_LEN (2 * CONN_DIGEST_LEN)
#define CONN_SALT_LEN 16
#define CONN_KEY_MAX 4096

struct megactl_conn {
	int fd;
	SSL_CTX *ctx;             /* NULL without TLS */
	SSL *ssl;                 /* NULL without TLS */
	const char *who;          /* borrowed from the options */
	int timeout_s;
	bool has_cert;            /* TLS: we present a client certificate */
	size_t received;          /* TLS: bytes read so far, for hints */
	char where[300];          /* the address as given, for messages */
	char host[256];           /* TCP host, for the certificate check and SNI */
	char err[256];            /* why the last send or receive failed */
};

static void conn_say(const struct megactl_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Print "WHO: WHERE: message" on stderr. */
static void conn_say(const struct megactl_conn *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: %s: ", c->who, c->where);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* OpenSSL's latest queued error in words (the queue is cleared). */
static void conn_ssl_reason(char *buf, size_t len)
{
	unsigned long e, last = 0;
	const char *reason;

	while ((e = ERR_get_error()) != 0)
		last = e;
	reason = last ? ERR_reason_error_string(last) : NULL;
	if (reason)
		snprintf(buf, len, "%s", reason);
	else if (last)
		ERR_error_string_n(last, buf, len);
	else
		snprintf(buf, len, "unknown OpenSSL error");
}

/* ---- the socket ------------------------------------------------------------ */

static int conn_connect_unix(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Split "host:port" ("[v6]:port") into C->host and PORT. 0 or -1. */
static int conn_split(struct megactl_conn *c, const char *hostport, const char **port)
{
	const char *colon = strrchr(hostport, ':');
	size_t n;

	if (!colon || (size_t)(colon - hostport) >= sizeof(c->host))
		return -1;
	n = (size_t)(colon - hostport);
	if (n >= 2 && hostport[0] == '[' && hostport[n - 1] == ']')
		snprintf(c->host, sizeof(c->host), "%.*s", (int)(n - 2), hostport + 1);
	else
		snprintf(c->host, sizeof(c->host), "%.*s", (int)n, hostport);
	*port = colon + 1;
	return 0;
}

static int conn_connect_tcp(struct megactl_conn *c, const char *hostport)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	const char *port;
	int fd = -1, e = 0;

	if (conn_split(c, hostport, &port) < 0) {
		errno = EINVAL;
		return -1;
	}
	if (getaddrinfo(c->host, port, &hints, &res) != 0) {
		errno = EHOSTUNREACH;
		return -1;
	}
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			e = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0 && e)
		errno = e;
	return fd;
}

static int conn_set_timeout(struct megactl_conn *c, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };

	if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
		conn_say(c, "cannot set the socket timeout: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- TLS ------------------------------------------------------------------- */

/* Our client certificate, when we have one (a listener with tls.ca asks). */
static int conn_tls_client_cert(struct megactl_conn *c, const struct megactl_conn_opts *o)
{
	const char *key = o->key_file ? o->key_file : o->cert_file;
	char why[200];

	if (!o->cert_file)
		return 0;
	if (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert_file) != 1) {
		conn_ssl_reason(why, sizeof(why));
		conn_say(c, "cannot load the client certificate %s: %s", o->cert_file, why);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(c->ctx) != 1) {
		conn_ssl_reason(why, sizeof(why));
		conn_say(c, "cannot use the client key %s: %s", key, why);
		return -1;
	}
	return 0;
}

/* The context: TLS 1.2 or later (as the daemon), whom to trust, our certificate. */
static int conn_tls_ctx(struct megactl_conn *c, const struct megactl_conn_opts *o)
{
	char why[200];
	int ok;

	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx || SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1) {
		conn_ssl_reason(why, sizeof(why));
		conn_say(c, "cannot set up TLS: %s", why);
		return -1;
	}
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
	/* A daemon closing without close_notify is an EOF like any other: what
	 * counts is the acks we read, each a whole msgpack value. */
	SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
	if (o->insecure) {
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
		return conn_tls_client_cert(c, o);
	}
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	ok = o->ca_file ? SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL) :
	     SSL_CTX_set_default_verify_paths(c->ctx);
	if (ok != 1) {
		conn_ssl_reason(why, sizeof(why));
		conn_say(c, "cannot load the CA certificates %s: %s",
			 o->ca_file ? o->ca_file : "of the system store", why);
		return -1;
	}
	return conn_tls_client_cert(c, o);
}

/* The name the server's certificate must carry: an IP address or a DNS
 * name (which also goes out as SNI). 0 or -1. */
static int conn_tls_peer_name(struct megactl_conn *c, bool verify)
{
	X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
	unsigned char ip[16];
	bool is_ip = inet_pton(AF_INET, c->host, ip) == 1 || inet_pton(AF_INET6, c->host, ip) == 1;

	if (!is_ip && SSL_set_tlsext_host_name(c->ssl, c->host) != 1)
		return -1;
	if (!verify)
		return 0;
	if (is_ip)
		return X509_VERIFY_PARAM_set1_ip_asc(param, c->host) == 1 ? 0 : -1;
	return SSL_set1_host(c->ssl, c->host) == 1 ? 0 : -1;
}

/* Why SSL_connect returned RC, in words, with what to do about it. */
static void conn_tls_why(struct megactl_conn *c, int rc, char *buf, size_t len)
{
	long verify = SSL_get_verify_result(c->ssl);
	int e = SSL_get_error(c->ssl, rc);

	if (verify != X509_V_OK) {
		ERR_clear_error();
		snprintf(buf, len, "the daemon's certificate is not trusted: %s (--ca FILE names "
			 "the CA that signed it; --insecure skips the check)",
			 X509_verify_cert_error_string(verify));
	} else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		snprintf(buf, len, "no answer within %d s (is TLS on for that listener?)",
			 c->timeout_s);
	} else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
		snprintf(buf, len, "%s (is TLS on for that listener?)", errno ?
			 strerror(errno) : "the daemon closed the connection");
	} else {
		conn_ssl_reason(buf, len);   /* an alert from the daemon, or plain bytes */
	}
}

static int conn_tls_start(struct megactl_conn *c, const struct megactl_conn_opts *o)
{
	char why[400];
	int rc;

	if (conn_tls_ctx(c, o) < 0)
		return -1;
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 || conn_tls_peer_name(c, !o->insecure) < 0) {
		conn_ssl_reason(why, sizeof(why));
		conn_say(c, "cannot set up TLS: %s", why);
		return -1;
	}
	errno = 0;
	rc = SSL_connect(c->ssl);
	if (rc != 1) {
		conn_tls_why(c, rc, why, sizeof(why));
		conn_say(c, "TLS handshake failed: %s", why);
		return -1;
	}
	return 0;
}

/* ---- bytes ------------------------------------------------------------------ */

/*
 * The connection broke under TLS, for WHY. Before the daemon sent a byte and
 * without a client certificate, say the likeliest cause: TLS 1.3 lets the
 * client finish its side and write before a listener with tls.ca refuses
 * it, and that refusal often arrives as a bare reset, not as an alert.
 */
static void conn_tls_broken(struct megactl_conn *c, const char *why)
{
	snprintf(c->err, sizeof(c->err), "%s%s", why, c->has_cert || c->received ? "" :
		 " (a listener with listen.tls.ca refuses clients without a certificate "
		 "from that CA: --cert FILE)");
}

static int conn_tls_send(struct megactl_conn *c, const char *p, size_t len)
{
	while (len > 0) {
		int n = SSL_write(c->ssl, p, len > 1u << 30 ? 1 << 30 : (int)len);

		if (n <= 0) {
			int e = SSL_get_error(c->ssl, n);

			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				snprintf(c->err, sizeof(c->err), "%s", strerror(EAGAIN));
			else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
				conn_tls_broken(c, errno ? strerror(errno) : "connection closed");
			else
				conn_ssl_reason(c->err, sizeof(c->err));
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int megactl_conn_send(struct megactl_conn *c, const void *buf, size_t len)
{
	const char *p = buf;

	if (c->ssl)
		return conn_tls_send(c, p, len);
	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(c->err, sizeof(c->err), "%s", strerror(errno));
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static ssize_t conn_tls_recv(struct megactl_conn *c, void *p, size_t len)
{
	int n = SSL_read(c->ssl, p, len > 1u << 30 ? 1 << 30 : (int)len);
	int e;

	if (n > 0) {
		c->received += (size_t)n;
		return n;
	}
	e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		snprintf(c->err, sizeof(c->err), "%s", strerror(EAGAIN));
		errno = EAGAIN;
		return -1;
	}
	if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
		if (errno == 0)
			return 0;
		conn_tls_broken(c, strerror(errno));
	} else {
		/* A refused client certificate arrives here under TLS 1.3. */
		conn_ssl_reason(c->err, sizeof(c->err));
	}
	errno = EPROTO;
	return -1;
}

ssize_t megactl_conn_recv(struct megactl_conn *c, void *p, size_t len)
{
	ssize_t n;

	if (c->ssl) {
		errno = 0;
		return conn_tls_recv(c, p, len);
	}
	do
		n = recv(c->fd, p, len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		snprintf(c->err, sizeof(c->err), "%s", strerror(errno));
	return n;
}

const char *megactl_conn_error(const struct megactl_conn *c)
{
	return c->err[0] ? c->err : "unknown error";
}

/* ---- the shared-key handshake ---------------------------------------------- */

/* A str or bin msgpack value's bytes; false for anything else. */
static bool conn_bytes(const msgpack_object *o, const char **p, size_t *len)
{
	if (o->type == MSGPACK_OBJECT_STR) {
		*p = o->via.str.ptr;
		*len = o->via.str.size;
		return true;
	}
	if (o->type == MSGPACK_OBJECT_BIN) {
		*p = o->via.bin.ptr;
		*len = o->via.bin.size;
		return true;
	}
	return false;
}

static bool conn_is(const msgpack_object *o, const char *s)
{
	const char *p;
	size_t len;

	return conn_bytes(o, &p, &len) && len == strlen(s) && memcmp(p, s, len) == 0;
}

static const msgpack_object *conn_map_get(const msgpack_object *map, const char *key)
{
	for (uint32_t i = 0; map->type == MSGPACK_OBJECT_MAP && i < map->via.map.size; i++)
		if (conn_is(&map->via.map.ptr[i].key, key))
			return &map->via.map.ptr[i].val;
	return NULL;
}

/* The bound on each handshake read: the shorter of --timeout and
 * CONN_HS_TIMEOUT_S, so that a listener without the handshake is found out
 * soon rather than after a long ack timeout. */
static int conn_hs_timeout(const struct megactl_conn *c)
{
	return c->timeout_s < CONN_HS_TIMEOUT_S ? c->timeout_s : CONN_HS_TIMEOUT_S;
}

/* Read the daemon's next value, WHAT ("HELO"), into UP. 0, or -1 (said). */
static int conn_hs_read(struct megactl_conn *c, msgpack_unpacker *unp, msgpack_unpacked *up,
			const char *what)
{
	size_t total = 0;

	for (;;) {
		msgpack_unpack_return ur = msgpack_unpacker_next(unp, up);
		ssize_t n;

		if (ur == MSGPACK_UNPACK_SUCCESS)
			return 0;
		if (ur != MSGPACK_UNPACK_CONTINUE) {
			conn_say(c, "the daemon's %s is not msgpack; connection closed", what);
			return -1;
		}
		if (total >= CONN_HS_MAX || !msgpack_unpacker_reserve_buffer(unp, 1024)) {
			conn_say(c, "the daemon's %s is larger than %d bytes; connection closed",
				 what, CONN_HS_MAX);
			return -1;
		}
		n = megactl_conn_recv(c, msgpack_unpacker_buffer(unp), 1024);
		if (n > 0) {
			msgpack_unpacker_buffer_consumed(unp, (size_t)n);
			total += (size_t)n;
		} else if (n == 0) {
			conn_say(c, "the daemon closed the connection before its %s%s", what,
				 c->ssl ? "" : " (is TLS on for that listener? then add --tls)");
			return -1;
		} else if (errno == EAGAIN && !strcmp(what, "HELO")) {
			conn_say(c, "no HELO within %d s: is listen.shared_key set on that listener%s?",
				 conn_hs_timeout(c), c->ssl ? "" : " (or does it want --tls)");
			return -1;
		} else {
			conn_say(c, "waiting for the daemon's %s: %s", what,
				 errno == EAGAIN ? "timed out" : megactl_conn_error(c));
			return -1;
		}
	}
}

/* hex(sha512(SALT || HOST || NONCE || KEY)) into HEX (CONN_HEX_LEN + 1). 0 or -1. */
static int conn_digest(const char *salt, const char *host, size_t host_len, const char *nonce,
		       size_t nonce_len, const char *key, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (!ctx)
		return -1;
	ok = EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, salt, strlen(salt)) == 1 &&
	     EVP_DigestUpdate(ctx, host, host_len) == 1 &&
	     EVP_DigestUpdate(ctx, nonce, nonce_len) == 1 &&
	     EVP_DigestUpdate(ctx, key, strlen(key)) == 1 &&
	     EVP_DigestFinal_ex(ctx, md, &n) == 1 && n == CONN_DIGEST_LEN;
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; ok && i < CONN_DIGEST_LEN; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[ok ? CONN_HEX_LEN : 0] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
	return ok ? 0 : -1;
}

/* What the handshake carries from HELO to PONG. */
struct conn_hs {
	const char *key;
	char nonce[64];           /* the HELO's nonce bytes */
	size_t nonce_len;
	char salt[2 * CONN_SALT_LEN + 1]; /* ours, as hex text (Fluentd sends text too) */
	char host[256];           /* our hostname */
};

/* Check the HELO in UP and keep its nonce. 0, or -1 (said). */
static int conn_hs_helo(struct megactl_conn *c, const msgpack_object *helo, struct conn_hs *hs)
{
	const msgpack_object *opts, *nonce, *auth;
	const char *p;
	size_t len;

	if (helo->type != MSGPACK_OBJECT_ARRAY || helo->via.array.size < 2 ||
	    !conn_is(&helo->via.array.ptr[0], "HELO")) {
		conn_say(c, "expected the daemon's HELO, got something else; is this a "
			 "megaingestd listener?");
		return -1;
	}
	opts = &helo->via.array.ptr[1];
	nonce = conn_map_get(opts, "nonce");
	auth = conn_map_get(opts, "auth");
	if (!nonce || !conn_bytes(nonce, &p, &len) || len == 0 || len > sizeof(hs->nonce)) {
		conn_say(c, "the daemon's HELO has no usable nonce");
		return -1;
	}
	memcpy(hs->nonce, p, len);
	hs->nonce_len = len;
	if (auth && conn_bytes(auth, &p, &len) && len > 0) {
		conn_say(c, "the listener asks for a username and password as well, which "
			 "megactl does not send");
		return -1;
	}
	return 0;
}

/* Send ["PING", host, salt, digest, "", ""]. 0, or -1 (said). */
static int conn_hs_ping(struct megactl_conn *c, struct conn_hs *hs)
{
	unsigned char raw[CONN_SALT_LEN];
	char hex[CONN_HEX_LEN + 1];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int rc;

	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		conn_say(c, "cannot draw a random salt for the handshake");
		return -1;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(hs->salt + 2 * i, 3, "%02x", raw[i]);
	if (gethostname(hs->host, sizeof(hs->host)) < 0 || !hs->host[0])
		snprintf(hs->host, sizeof(hs->host), "megactl");
	hs->host[sizeof(hs->host) - 1] = '\0';
	if (conn_digest(hs->salt, hs->host, strlen(hs->host), hs->nonce, hs->nonce_len, hs->key,
			hex) < 0) {
		conn_say(c, "cannot compute SHA-512 (OpenSSL error)");
		return -1;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	rc = msgpack_pack_array(&pk, 6) || msgpack_pack_str_with_body(&pk, "PING", 4) ||
	     msgpack_pack_str_with_body(&pk, hs->host, strlen(hs->host)) ||
	     msgpack_pack_str_with_body(&pk, hs->salt, strlen(hs->salt)) ||
	     msgpack_pack_str_with_body(&pk, hex, CONN_HEX_LEN) ||
	     msgpack_pack_str_with_body(&pk, "", 0) || msgpack_pack_str_with_body(&pk, "", 0);
	if (rc)
		conn_say(c, "out of memory writing the PING");
	else if ((rc = megactl_conn_send(c, sb.data, sb.size)) != 0)
		conn_say(c, "cannot send the PING: %s", megactl_conn_error(c));
	msgpack_sbuffer_destroy(&sb);
	return rc ? -1 : 0;
}

/* The PONG's digest (either case) equals WANT. Constant time. */
static bool conn_digest_matches(const char *got, size_t len, const char *want)
{
	char lower[CONN_HEX_LEN];

	if (len != CONN_HEX_LEN)
		return false;
	for (size_t i = 0; i < CONN_HEX_LEN; i++)
		lower[i] = got[i] >= 'A' && got[i] <= 'F' ? (char)(got[i] - 'A' + 'a') : got[i];
	return CRYPTO_memcmp(lower, want, CONN_HEX_LEN) == 0;
}

/* Check the PONG: accepted, and by someone who knows the key. 0, or -1 (said). */
static int conn_hs_pong(struct megactl_conn *c, const msgpack_object *pong,
			const struct conn_hs *hs)
{
	const msgpack_object *el;
	const char *host, *got, *reason = "";
	size_t host_len, got_len, reason_len = 0;
	char want[CONN_HEX_LEN + 1];

	if (pong->type != MSGPACK_OBJECT_ARRAY || pong->via.array.size != 5 ||
	    !conn_is(&pong->via.array.ptr[0], "PONG") ||
	    pong->via.array.ptr[1].type != MSGPACK_OBJECT_BOOLEAN) {
		conn_say(c, "expected the daemon's PONG, got something else");
		return -1;
	}
	el = pong->via.array.ptr;
	if (!el[1].via.boolean) {
		if (!conn_bytes(&el[2], &reason, &reason_len))
			reason_len = 0;
		conn_say(c, "the daemon refused the shared-key handshake: %.*s (the key must be "
			 "the listener's listen.shared_key)", (int)reason_len, reason);
		return -1;
	}
	if (!conn_bytes(&el[3], &host, &host_len) || !conn_bytes(&el[4], &got, &got_len) ||
	    conn_digest(hs->salt, host, host_len, hs->nonce, hs->nonce_len, hs->key, want) < 0 ||
	    !conn_digest_matches(got, got_len, want)) {
		conn_say(c, "the daemon's PONG does not prove it knows the shared key; "
			 "connection closed");
		return -1;
	}
	return 0;
}

/* HELO, PING, PONG as the client, bounded by CONN_HS_TIMEOUT_S per read. */
static int conn_handshake(struct megactl_conn *c, const char *key)
{
	struct conn_hs hs = { .key = key };
	msgpack_unpacker unp;
	msgpack_unpacked up;
	int rc = -1;

	if (!msgpack_unpacker_init(&unp, 1024)) {
		conn_say(c, "out of memory");
		return -1;
	}
	msgpack_unpacked_init(&up);
	if (conn_set_timeout(c, conn_hs_timeout(c)) == 0 &&
	    conn_hs_read(c, &unp, &up, "HELO") == 0 && conn_hs_helo(c, &up.data, &hs) == 0 &&
	    conn_hs_ping(c, &hs) == 0 && conn_hs_read(c, &unp, &up, "PONG") == 0 &&
	    conn_hs_pong(c, &up.data, &hs) == 0)
		rc = conn_set_timeout(c, c->timeout_s);
	msgpack_unpacked_destroy(&up);
	msgpack_unpacker_destroy(&unp);
	OPENSSL_cleanse(&hs, sizeof(hs));
	return rc;
}

/* ---- open and close ---------------------------------------------------------- */

struct megactl_conn *megactl_conn_open(const struct megactl_conn_opts *o)
{
	struct megactl_conn *c = calloc(1, sizeof(*c));
	bool tcp = !o->unix_path;

	if (!c) {
		fprintf(stderr, "%s: out of memory\n", o->who);
		return NULL;
	}
	c->fd = -1;
	c->who = o->who;
	c->timeout_s = o->timeout_s;
	c->has_cert = o->cert_file != NULL;
	snprintf(c->where, sizeof(c->where), "%s", tcp ? o->tcp : o->unix_path);
	/* SSL_write reaches write(2) without MSG_NOSIGNAL: a daemon going away
	 * must be an error to report, not a silent death by SIGPIPE. */
	if (tcp && o->tls && signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		conn_say(c, "cannot ignore SIGPIPE: %s", strerror(errno));
		goto fail;
	}
	c->fd = tcp ? conn_connect_tcp(c, o->tcp) : conn_connect_unix(o->unix_path);
	if (c->fd < 0) {
		fprintf(stderr, "%s: cannot connect to %s: %s\n", c->who, c->where,
			strerror(errno));
		goto fail;
	}
	if (conn_set_timeout(c, c->timeout_s) < 0 ||
	    (tcp && o->tls && conn_tls_start(c, o) < 0) ||
	    (tcp && o->shared_key && conn_handshake(c, o->shared_key) < 0))
		goto fail;
	return c;
fail:
	megactl_conn_close(c);
	return NULL;
}

void megactl_conn_close(struct megactl_conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		/* One close_notify, not awaiting the daemon's: every ack we wanted
		 * is read, and a failure here changes nothing for the caller. */
		if (SSL_shutdown(c->ssl) < 0)
			ERR_clear_error();
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* ---- the key file ------------------------------------------------------------ */

int megactl_conn_key_read(const char *who, const char *path, char **key)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	*key = NULL;
	if (!f) {
		fprintf(stderr, "%s: cannot open the shared key file %s: %s\n", who, path,
			strerror(errno));
		return -1;
	}
	buf = malloc(CONN_KEY_MAX + 1);
	n = buf ? fread(buf, 1, CONN_KEY_MAX + 1, f) : 0;
	if (!buf || ferror(f) || n > CONN_KEY_MAX) {
		fprintf(stderr, "%s: cannot read the shared key file %s: %s\n", who, path,
			!buf ? "out of memory" : n > CONN_KEY_MAX ? "larger than 4096 bytes" :
			strerror(errno));
		fclose(f);
		megactl_conn_key_free(buf);
		return -1;
	}
	fclose(f);
	buf[n] = '\0';
	/* The key is the first line: editors add a final newline the daemon's
	 * YAML value never has. */
	buf[strcspn(buf, "\r\n")] = '\0';
	if (!buf[0]) {
		fprintf(stderr, "%s: the shared key file %s is empty\n", who, path);
		megactl_conn_key_free(buf);
		return -1;
	}
	*key = buf;
	return 0;
}

void megactl_conn_key_free(char *key)
{
	if (!key)
		return;
	/* The whole buffer: a failed read may have left it unterminated. */
	OPENSSL_cleanse(key, CONN_KEY_MAX + 1);
	free(key);
}
