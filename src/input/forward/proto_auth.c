/*
 * proto_auth.c: the Forward protocol's shared-key handshake (HELO, PING,
 * PONG) for one connection.
 *
 * Shaped as a small state machine the listener drives before the event
 * decoder sees a byte: HELO goes out at accept, then every read offers the
 * buffered bytes to proto_auth_run until a whole PING is there. The PING is
 * read by a hand-written reader that knows only the shapes a PING may have
 * (an array of six str or bin), not by msgpack-c: msgpack-c allocates a
 * container's elements as soon as it reads a count, and the first value of
 * an unauthenticated connection is exactly where a hostile peer would put a
 * header announcing four billion of them. The whole PING must fit in
 * PROTO_AUTH_PING_MAX bytes. Digests are SHA-512 through OpenSSL's EVP
 * interface and compared in constant time. Loop thread only.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <msgpack.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "log.h"
#include "proto_auth.h"
#include "stats.h"

#define PROTO_AUTH_NONCE_LEN 16
#define PROTO_AUTH_DIGEST_LEN 64                 /* SHA-512 */
#define PROTO_AUTH_HEX_LEN (2 * PROTO_AUTH_DIGEST_LEN)
#define PROTO_AUTH_FIELDS 6                      /* "PING", host, salt, digest, user, password */

struct proto_auth {
	char *key;                                /* listen.shared_key, wiped at free */
	size_t key_len;
	char *peer;                               /* "tcp:127.0.0.1:5000" */
	uint64_t id;                              /* connection id for log lines */
	uint8_t nonce[PROTO_AUTH_NONCE_LEN];      /* sent in HELO, wiped at free */
};

/* One str or bin element of a PING, pointing into the pulled-up input. */
struct proto_auth_field {
	const uint8_t *ptr;
	uint32_t len;
};

/* Names of the PING's elements, for reasons. */
static const char *const proto_auth_field_names[PROTO_AUTH_FIELDS] = {
	"type", "client_hostname", "shared_key_salt", "shared_key_hexdigest", "username",
	"password",
};

/* Failed handshakes: a client can cause one per connection at will. */
static struct log_limit proto_auth_fail_limit = LOG_LIMIT_INIT(10, 1000);

/* Log "conn=ID peer=PEER: authentication failed: WHY; connection closed". */
static void proto_auth_log_fail(const struct proto_auth *a, const char *why)
{
	log_limited(&proto_auth_fail_limit, LOG_LEVEL_WARN, "auth", "conn=%llu peer=%s: "
		    "authentication failed: %s; connection closed", (unsigned long long)a->id,
		    a->peer, why);
}

struct proto_auth *proto_auth_new(const char *shared_key, const char *peer, uint64_t conn_id)
{
	struct proto_auth *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->key_len = strlen(shared_key);
	a->key = strdup(shared_key);
	a->peer = strdup(peer ? peer : "?");
	if (!a->key || !a->peer) {
		proto_auth_free(a);
		return NULL;
	}
	a->id = conn_id;
	return a;
}

void proto_auth_free(struct proto_auth *a)
{
	if (!a)
		return;
	if (a->key)
		OPENSSL_cleanse(a->key, a->key_len);
	OPENSSL_cleanse(a->nonce, sizeof(a->nonce));
	free(a->key);
	free(a->peer);
	free(a);
}

/* ---- encoding ----------------------------------------------------------- */

static int proto_auth_evbuffer_write(void *data, const char *buf, size_t len)
{
	return evbuffer_add(data, buf, len);
}

static int proto_auth_pack_str(msgpack_packer *pk, const char *s)
{
	return msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Append what FILL packs to OUT whole, or nothing. 0 or -1. */
static int proto_auth_emit(struct evbuffer *out, int (*fill)(msgpack_packer *, const void *),
			   const void *arg)
{
	struct evbuffer *tmp = evbuffer_new();
	msgpack_packer pk;
	int rc;

	if (!tmp)
		return -1;
	msgpack_packer_init(&pk, tmp, proto_auth_evbuffer_write);
	rc = fill(&pk, arg);
	if (rc == 0)
		rc = evbuffer_add_buffer(out, tmp);
	evbuffer_free(tmp);
	return rc == 0 ? 0 : -1;
}

static int proto_auth_fill_helo(msgpack_packer *pk, const void *arg)
{
	const struct proto_auth *a = arg;

	if (msgpack_pack_array(pk, 2) || proto_auth_pack_str(pk, "HELO") ||
	    msgpack_pack_map(pk, 3) ||
	    proto_auth_pack_str(pk, "nonce") ||
	    msgpack_pack_bin_with_body(pk, a->nonce, sizeof(a->nonce)) ||
	    proto_auth_pack_str(pk, "auth") || proto_auth_pack_str(pk, "") ||
	    proto_auth_pack_str(pk, "keepalive") || msgpack_pack_true(pk))
		return -1;
	return 0;
}

int proto_auth_helo(struct proto_auth *a, struct evbuffer *out)
{
	if (RAND_bytes(a->nonce, sizeof(a->nonce)) != 1) {
		log_error("auth", "conn=%llu peer=%s: cannot draw a random nonce for HELO; "
			  "connection closed", (unsigned long long)a->id, a->peer);
		return -1;
	}
	if (proto_auth_emit(out, proto_auth_fill_helo, a) < 0) {
		log_error("auth", "conn=%llu peer=%s: out of memory writing HELO; connection closed",
			  (unsigned long long)a->id, a->peer);
		return -1;
	}
	return 0;
}

/* What a PONG carries. */
struct proto_auth_pong {
	bool ok;
	const char *reason;       /* "" when ok */
	const char *hostname;     /* "" when refused */
	const char *hexdigest;    /* "" when refused */
};

static int proto_auth_fill_pong(msgpack_packer *pk, const void *arg)
{
	const struct proto_auth_pong *p = arg;

	if (msgpack_pack_array(pk, 5) || proto_auth_pack_str(pk, "PONG") ||
	    (p->ok ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
	    proto_auth_pack_str(pk, p->reason) || proto_auth_pack_str(pk, p->hostname) ||
	    proto_auth_pack_str(pk, p->hexdigest))
		return -1;
	return 0;
}

/* Log WHY, append ["PONG", false, WHY, "", ""] to OUT; always PROTO_AUTH_FAIL. */
static enum proto_auth_status proto_auth_refuse(const struct proto_auth *a,
						struct evbuffer *out, const char *why)
{
	struct proto_auth_pong p = { false, why, "", "" };

	proto_auth_log_fail(a, why);
	stats_add(STAT_auth_failures_total, 1);
	if (proto_auth_emit(out, proto_auth_fill_pong, &p) < 0)
		log_error("auth", "conn=%llu peer=%s: out of memory writing PONG false",
			  (unsigned long long)a->id, a->peer);
	return PROTO_AUTH_FAIL;
}

/* ---- digests ------------------------------------------------------------ */

/* sha512(SALT || HOST || nonce || key) into MD. 0, or -1 when OpenSSL failed. */
static int proto_auth_digest(const struct proto_auth *a, const struct proto_auth_field *salt,
			     const void *host, size_t host_len, uint8_t md[PROTO_AUTH_DIGEST_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = 0;
	int ok;

	if (!ctx)
		return -1;
	ok = EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, salt->ptr, salt->len) == 1 &&
	     EVP_DigestUpdate(ctx, host, host_len) == 1 &&
	     EVP_DigestUpdate(ctx, a->nonce, sizeof(a->nonce)) == 1 &&
	     EVP_DigestUpdate(ctx, a->key, a->key_len) == 1 &&
	     EVP_DigestFinal_ex(ctx, md, &n) == 1 && n == PROTO_AUTH_DIGEST_LEN;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

static int proto_auth_hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* 128 hex characters (either case) -> 64 bytes. 0, or -1 on anything else. */
static int proto_auth_unhex(const struct proto_auth_field *f, uint8_t md[PROTO_AUTH_DIGEST_LEN])
{
	if (f->len != PROTO_AUTH_HEX_LEN)
		return -1;
	for (size_t i = 0; i < PROTO_AUTH_DIGEST_LEN; i++) {
		int hi = proto_auth_hexval(f->ptr[2 * i]), lo = proto_auth_hexval(f->ptr[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		md[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static void proto_auth_hex(const uint8_t md[PROTO_AUTH_DIGEST_LEN], char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < PROTO_AUTH_DIGEST_LEN; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[PROTO_AUTH_HEX_LEN] = '\0';
}

/* ---- reading the PING --------------------------------------------------- */

enum proto_auth_rd {
	PROTO_AUTH_RD_OK = 0, /* a header was read */
	PROTO_AUTH_RD_MORE,   /* the input ends inside it */
	PROTO_AUTH_RD_COUNT   /* number of outcomes; not an outcome */
};

/* A bounded cursor over the pulled-up start of the input. */
struct proto_auth_cursor {
	const uint8_t *p;
	size_t len;
	size_t pos;
};

/* What a value's header says: KIND 's' str, 'b' bin, 'a' array, 'm' map, else a type name. */
struct proto_auth_head {
	char kind;
	const char *type;         /* for reasons: "str", "int", ... */
	uint32_t n;               /* str/bin length or array/map count */
};

/* The size of the length field after lead byte B for str, bin, array and map; -1 else. */
static int proto_auth_lenbytes(uint8_t b, struct proto_auth_head *h)
{
	static const struct { uint8_t lead; char kind; int bytes; } tab[] = {
		{ 0xc4, 'b', 1 }, { 0xc5, 'b', 2 }, { 0xc6, 'b', 4 }, { 0xd9, 's', 1 },
		{ 0xda, 's', 2 }, { 0xdb, 's', 4 }, { 0xdc, 'a', 2 }, { 0xdd, 'a', 4 },
		{ 0xde, 'm', 2 }, { 0xdf, 'm', 4 },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (tab[i].lead == b) {
			h->kind = tab[i].kind;
			return tab[i].bytes;
		}
	}
	return -1;
}

/* Type name of a lead byte that is not a str, bin, array or map. */
static const char *proto_auth_other_type(uint8_t b)
{
	if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3))
		return "int";
	if (b == 0xc0)
		return "nil";
	if (b == 0xc2 || b == 0xc3)
		return "bool";
	if (b == 0xca || b == 0xcb)
		return "float";
	if (b == 0xc1)
		return "a byte that is not msgpack";
	return "ext";
}

static const char *proto_auth_kind_type(char kind)
{
	switch (kind) {
	case 's': return "str";
	case 'b': return "bin";
	case 'a': return "array";
	default: return "map";
	}
}

/* Read one value header at C into H. */
static enum proto_auth_rd proto_auth_head(struct proto_auth_cursor *c, struct proto_auth_head *h)
{
	uint8_t b;
	int bytes;

	if (c->pos >= c->len)
		return PROTO_AUTH_RD_MORE;
	b = c->p[c->pos];
	h->n = 0;
	if ((b & 0xe0) == 0xa0 || (b & 0xf0) == 0x90 || (b & 0xf0) == 0x80) {
		h->kind = (b & 0xe0) == 0xa0 ? 's' : (b & 0xf0) == 0x90 ? 'a' : 'm';
		h->n = (b & 0xe0) == 0xa0 ? (uint32_t)(b & 0x1f) : (uint32_t)(b & 0x0f);
		bytes = 0;
	} else if ((bytes = proto_auth_lenbytes(b, h)) < 0) {
		h->kind = 'o';
		h->type = proto_auth_other_type(b);
		c->pos++;
		return PROTO_AUTH_RD_OK;
	}
	if (c->len - c->pos < (size_t)bytes + 1)
		return PROTO_AUTH_RD_MORE;
	for (int i = 1; i <= bytes; i++)
		h->n = h->n << 8 | c->p[c->pos + (size_t)i];
	h->type = proto_auth_kind_type(h->kind);
	c->pos += (size_t)bytes + 1;
	return PROTO_AUTH_RD_OK;
}

/* The outcome of reading a PING. */
struct proto_auth_read {
	enum proto_auth_status st;                  /* WAIT, DONE (read whole) or FAIL */
	char why[160];                              /* FAIL: the reason */
	struct proto_auth_field f[PROTO_AUTH_FIELDS];
	size_t size;                                /* DONE: bytes the PING took */
};

static void proto_auth_bad(struct proto_auth_read *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void proto_auth_bad(struct proto_auth_read *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	r->st = PROTO_AUTH_FAIL;
}

/* Element I of the PING: a str or bin whose bytes are all in C. */
static void proto_auth_field(struct proto_auth_cursor *c, struct proto_auth_read *r, int i)
{
	struct proto_auth_head h;

	if (proto_auth_head(c, &h) == PROTO_AUTH_RD_MORE)
		return; /* r->st stays WAIT */
	if (h.kind != 's' && h.kind != 'b') {
		proto_auth_bad(r, "PING element %d (%s): expected str or bin, got %s", i,
			       proto_auth_field_names[i], h.type);
		return;
	}
	if (c->len - c->pos < h.n)
		return;
	r->f[i].ptr = c->p + c->pos;
	r->f[i].len = h.n;
	c->pos += h.n;
}

/* The array header and element 0, which tell a PING from anything else. */
static void proto_auth_ping_head(struct proto_auth_cursor *c, struct proto_auth_read *r)
{
	struct proto_auth_head h;

	if (proto_auth_head(c, &h) == PROTO_AUTH_RD_MORE)
		return;
	if (h.kind == 'm') {
		proto_auth_bad(r, "an event (a map) arrived before the PING");
		return;
	}
	if (h.kind != 'a' || h.n == 0) {
		proto_auth_bad(r, "expected the PING message, got %s%s", h.kind == 'a' ? "an empty " :
			       "", h.type);
		return;
	}
	proto_auth_field(c, r, 0);
	if (r->st != PROTO_AUTH_WAIT || !r->f[0].ptr)
		return;
	if (r->f[0].len != 4 || memcmp(r->f[0].ptr, "PING", 4) != 0)
		proto_auth_bad(r, "a message arrived before the PING (element 0 is not \"PING\")");
	else if (h.n != PROTO_AUTH_FIELDS)
		proto_auth_bad(r, "PING: expected %d elements, got %u", PROTO_AUTH_FIELDS, h.n);
}

/* Read a whole PING from the LEN bytes at P (LEN <= PROTO_AUTH_PING_MAX). */
static void proto_auth_read_ping(const uint8_t *p, size_t len, struct proto_auth_read *r)
{
	struct proto_auth_cursor c = { p, len, 0 };

	memset(r, 0, sizeof(*r));
	r->st = PROTO_AUTH_WAIT;
	proto_auth_ping_head(&c, r);
	for (int i = 1; i < PROTO_AUTH_FIELDS && r->st == PROTO_AUTH_WAIT && r->f[i - 1].ptr; i++)
		proto_auth_field(&c, r, i);
	if (r->st == PROTO_AUTH_WAIT && r->f[PROTO_AUTH_FIELDS - 1].ptr) {
		r->st = PROTO_AUTH_DONE;
		r->size = c.pos;
	}
}

/* ---- checking it -------------------------------------------------------- */

/* The PING R was read whole: check its digest and answer. */
static enum proto_auth_status proto_auth_check(struct proto_auth *a,
					       const struct proto_auth_read *r,
					       struct evbuffer *out)
{
	uint8_t want[PROTO_AUTH_DIGEST_LEN], got[PROTO_AUTH_DIGEST_LEN];
	char host[256], hex[PROTO_AUTH_HEX_LEN + 1];
	struct proto_auth_pong p = { true, "", host, hex };

	if (proto_auth_unhex(&r->f[3], got) < 0)
		return proto_auth_refuse(a, out, "PING element 3 (shared_key_hexdigest): "
					 "expected 128 hex characters");
	if (proto_auth_digest(a, &r->f[2], r->f[1].ptr, r->f[1].len, want) < 0)
		return proto_auth_refuse(a, out, "cannot compute SHA-512 (OpenSSL error)");
	if (CRYPTO_memcmp(want, got, sizeof(want)) != 0)
		return proto_auth_refuse(a, out, "shared_key mismatch");
	if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "megaingestd");
	host[sizeof(host) - 1] = '\0';
	if (proto_auth_digest(a, &r->f[2], host, strlen(host), want) < 0)
		return proto_auth_refuse(a, out, "cannot compute SHA-512 (OpenSSL error)");
	proto_auth_hex(want, hex);
	if (proto_auth_emit(out, proto_auth_fill_pong, &p) < 0) {
		log_error("auth", "conn=%llu peer=%s: out of memory writing PONG; connection closed",
			  (unsigned long long)a->id, a->peer);
		return PROTO_AUTH_FAIL;
	}
	log_debug("auth", "conn=%llu peer=%s: shared key accepted (client %.*s)",
		  (unsigned long long)a->id, a->peer, (int)r->f[1].len, (const char *)r->f[1].ptr);
	return PROTO_AUTH_DONE;
}

enum proto_auth_status proto_auth_run(struct proto_auth *a, struct evbuffer *in,
				      struct evbuffer *out)
{
	size_t len = evbuffer_get_length(in);
	size_t take = len < PROTO_AUTH_PING_MAX ? len : PROTO_AUTH_PING_MAX;
	const uint8_t *p;
	struct proto_auth_read r;
	enum proto_auth_status st;

	if (take == 0)
		return PROTO_AUTH_WAIT;
	p = evbuffer_pullup(in, (ev_ssize_t)take);
	if (!p) {
		log_error("auth", "conn=%llu peer=%s: out of memory reading PING; connection closed",
			  (unsigned long long)a->id, a->peer);
		return PROTO_AUTH_FAIL;
	}
	proto_auth_read_ping(p, take, &r);
	if (r.st == PROTO_AUTH_WAIT && take == PROTO_AUTH_PING_MAX)
		proto_auth_bad(&r, "PING larger than %d bytes", PROTO_AUTH_PING_MAX);
	if (r.st == PROTO_AUTH_WAIT)
		return PROTO_AUTH_WAIT;
	if (r.st == PROTO_AUTH_FAIL)
		return proto_auth_refuse(a, out, r.why);
	st = proto_auth_check(a, &r, out);
	if (st == PROTO_AUTH_DONE && evbuffer_drain(in, r.size) < 0)
		return PROTO_AUTH_FAIL;
	return st;
}
