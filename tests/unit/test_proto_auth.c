/*
 * test_proto_auth.c: the shared-key handshake against a client built here
 * from the protocol text (HELO nonce -> PING with salt and SHA-512 hex ->
 * PONG), with msgpack-c packing the client's messages and reading the
 * server's, and OpenSSL computing the digests independently of the module.
 * Checks the PING reader at every split point, at its size limit, and on
 * each malformed shape, and that bytes behind the PING are left for the
 * event decoder.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <msgpack.h>
#include <openssl/evp.h>

#include "log.h"
#include "proto_auth.h"
#include "unit.h"

#define KEY "unit-shared-key"

/* ---- the client side ---------------------------------------------------- */

struct helo {
	uint8_t nonce[16];
	int ok;
};

/* Decode the HELO at the front of OUT (and drain it). */
static struct helo read_helo(struct evbuffer *out)
{
	struct helo h = { { 0 }, 0 };
	size_t len = evbuffer_get_length(out), off = 0;
	const char *p = (const char *)evbuffer_pullup(out, -1);
	msgpack_unpacked u;

	msgpack_unpacked_init(&u);
	if (p && msgpack_unpack_next(&u, p, len, &off) == MSGPACK_UNPACK_SUCCESS) {
		msgpack_object *a = &u.data;
		msgpack_object_map *m = &a->via.array.ptr[1].via.map;

		h.ok = a->type == MSGPACK_OBJECT_ARRAY && a->via.array.size == 2 &&
		       a->via.array.ptr[0].via.str.size == 4 &&
		       memcmp(a->via.array.ptr[0].via.str.ptr, "HELO", 4) == 0 && m->size == 3;
		for (uint32_t i = 0; h.ok && i < m->size; i++) {
			msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;

			if (k->via.str.size == 5 && memcmp(k->via.str.ptr, "nonce", 5) == 0) {
				h.ok = v->type == MSGPACK_OBJECT_BIN && v->via.bin.size == 16;
				if (h.ok)
					memcpy(h.nonce, v->via.bin.ptr, 16);
			} else if (k->via.str.size == 9 && memcmp(k->via.str.ptr, "keepalive", 9) == 0) {
				h.ok = v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean;
			}
		}
	}
	msgpack_unpacked_destroy(&u);
	evbuffer_drain(out, off);
	return h;
}

static void sha512_hex(const char *salt, const char *host, const uint8_t nonce[16],
		       const char *key, char hex[129])
{
	unsigned char md[64];
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, salt, strlen(salt)) != 1 ||
	    EVP_DigestUpdate(ctx, host, strlen(host)) != 1 ||
	    EVP_DigestUpdate(ctx, nonce, 16) != 1 ||
	    EVP_DigestUpdate(ctx, key, strlen(key)) != 1 || EVP_DigestFinal_ex(ctx, md, &n) != 1)
		abort();
	EVP_MD_CTX_free(ctx);
	for (int i = 0; i < 64; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* Pack ["PING", HOST, SALT, DIGEST, "", ""] (NFIELDS elements) into SB. */
static void pack_ping(msgpack_sbuffer *sb, const char *host, const char *salt,
		      const char *digest, int nfields)
{
	const char *f[7] = { "PING", host, salt, digest, "", "", "" };
	msgpack_packer pk;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, (size_t)nfields);
	for (int i = 0; i < nfields; i++)
		msgpack_pack_str_with_body(&pk, f[i], strlen(f[i]));
}

/* The PONG at the front of OUT: 1 true, 0 false; REASON, HOST and DIGEST (256 bytes
 * each) copied. */
static int read_pong(struct evbuffer *out, char *reason, char *host, char *digest)
{
	size_t len = evbuffer_get_length(out), off = 0;
	const char *p = (const char *)evbuffer_pullup(out, -1);
	msgpack_unpacked u;
	int rc = -1;

	msgpack_unpacked_init(&u);
	if (p && msgpack_unpack_next(&u, p, len, &off) == MSGPACK_UNPACK_SUCCESS &&
	    u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 5) {
		msgpack_object *e = u.data.via.array.ptr;
		char *dst[3] = { reason, host, digest };

		for (int i = 0; i < 3; i++)
			snprintf(dst[i], 256, "%.*s", (int)e[2 + i].via.str.size, e[2 + i].via.str.ptr);
		rc = e[1].type == MSGPACK_OBJECT_BOOLEAN && e[1].via.boolean;
	}
	msgpack_unpacked_destroy(&u);
	evbuffer_drain(out, off);
	return rc;
}

/* ---- fixture ------------------------------------------------------------ */

struct fx {
	struct proto_auth *a;
	struct evbuffer *in, *out;
	struct helo helo;
};

static void fx_open(struct fx *f)
{
	f->a = proto_auth_new(KEY, "tcp:127.0.0.1:1", 1);
	f->in = evbuffer_new();
	f->out = evbuffer_new();
	if (!f->a || !f->in || !f->out || proto_auth_helo(f->a, f->out) < 0)
		abort();
	f->helo = read_helo(f->out);
}

static void fx_close(struct fx *f)
{
	proto_auth_free(f->a);
	evbuffer_free(f->in);
	evbuffer_free(f->out);
}

/* ---- tests -------------------------------------------------------------- */

static void test_helo_nonces_differ(void)
{
	struct fx a, b;

	fx_open(&a);
	fx_open(&b);
	CHECK(a.helo.ok && b.helo.ok);
	CHECK(memcmp(a.helo.nonce, b.helo.nonce, 16) != 0);
	fx_close(&a);
	fx_close(&b);
	proto_auth_free(NULL);
}

static void test_good_ping_and_what_follows(void)
{
	struct fx f;
	msgpack_sbuffer sb;
	char digest[129], reason[256], host[256], got[256], want[129];

	fx_open(&f);
	sha512_hex("salt", "client.example", f.helo.nonce, KEY, digest);
	pack_ping(&sb, "client.example", "salt", digest, 6);
	evbuffer_add(f.in, sb.data, sb.size);
	evbuffer_add(f.in, "\x81\xa1k\x01", 4); /* an event right behind the PING */
	CHECK(proto_auth_run(f.a, f.in, f.out) == PROTO_AUTH_DONE);
	CHECK(read_pong(f.out, reason, host, got) == 1);
	CHECK_STR(reason, "");
	sha512_hex("salt", host, f.helo.nonce, KEY, want);
	CHECK_STR(got, want);
	CHECK(evbuffer_get_length(f.in) == 4);
	msgpack_sbuffer_destroy(&sb);
	fx_close(&f);
}

static void test_every_split_point(void)
{
	msgpack_sbuffer sb;
	char digest[129];
	int bad = 0;
	struct fx f;

	fx_open(&f);
	sha512_hex("s", "h", f.helo.nonce, KEY, digest);
	pack_ping(&sb, "h", "s", digest, 6);
	fx_close(&f);
	for (size_t cut = 1; cut < sb.size; cut++) {
		fx_open(&f);
		sha512_hex("s", "h", f.helo.nonce, KEY, digest);
		msgpack_sbuffer_destroy(&sb);
		pack_ping(&sb, "h", "s", digest, 6);
		evbuffer_add(f.in, sb.data, cut);
		if (proto_auth_run(f.a, f.in, f.out) != PROTO_AUTH_WAIT)
			bad++;
		evbuffer_add(f.in, sb.data + cut, sb.size - cut);
		if (proto_auth_run(f.a, f.in, f.out) != PROTO_AUTH_DONE)
			bad++;
		fx_close(&f);
	}
	CHECK(bad == 0);
	msgpack_sbuffer_destroy(&sb);
}

/* Run RAW as the client's first bytes; the status, and the PONG's reason in WHY. */
static enum proto_auth_status run_raw(const void *raw, size_t len, char *why)
{
	struct fx f;
	char host[256], digest[256];
	enum proto_auth_status st;

	fx_open(&f);
	evbuffer_add(f.in, raw, len);
	st = proto_auth_run(f.a, f.in, f.out);
	why[0] = '\0';
	if (st == PROTO_AUTH_FAIL)
		CHECK(read_pong(f.out, why, host, digest) == 0);
	fx_close(&f);
	return st;
}

static void test_refusals(void)
{
	static const struct { const char *raw; size_t len; const char *why; } cases[] = {
		{ "\x81\xa1k\x01", 4, "an event (a map) arrived before the PING" },
		{ "\x93\xa4mega\x01\x80", 8,
		  "a message arrived before the PING (element 0 is not \"PING\")" },
		{ "\x95\xa4PING", 6, "PING: expected 6 elements, got 5" },
		{ "\x96\xa4PING\x07", 7, "PING element 1 (client_hostname): expected str or bin, got int" },
		{ "\x90", 1, "expected the PING message, got an empty array" },
		{ "\xc0", 1, "expected the PING message, got nil" },
		{ "\xc1", 1, "expected the PING message, got a byte that is not msgpack" },
		{ "\xdd\xff\xff\xff\xff\xa4PING", 10, "PING: expected 6 elements, got 4294967295" },
	};
	char why[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK(run_raw(cases[i].raw, cases[i].len, why) == PROTO_AUTH_FAIL);
		CHECK_STR(why, cases[i].why);
	}
	/* A header that owes more than is there: waits, it is not an error yet. */
	CHECK(run_raw("\x96\xa4PING\xdb\x00\x00\x10\x00", 10, why) == PROTO_AUTH_WAIT);
}

static void test_wrong_key_and_bad_digest(void)
{
	struct fx f;
	msgpack_sbuffer sb;
	char digest[129], reason[256], host[256], got[256];

	fx_open(&f);
	sha512_hex("salt", "h", f.helo.nonce, "another key", digest);
	pack_ping(&sb, "h", "salt", digest, 6);
	evbuffer_add(f.in, sb.data, sb.size);
	CHECK(proto_auth_run(f.a, f.in, f.out) == PROTO_AUTH_FAIL);
	CHECK(read_pong(f.out, reason, host, got) == 0);
	CHECK_STR(reason, "shared_key mismatch");
	CHECK_STR(host, "");
	msgpack_sbuffer_destroy(&sb);
	fx_close(&f);

	fx_open(&f);
	pack_ping(&sb, "h", "salt", "abc", 6);
	evbuffer_add(f.in, sb.data, sb.size);
	CHECK(proto_auth_run(f.a, f.in, f.out) == PROTO_AUTH_FAIL);
	CHECK(read_pong(f.out, reason, host, got) == 0);
	CHECK_CONTAINS(reason, "expected 128 hex characters");
	msgpack_sbuffer_destroy(&sb);
	fx_close(&f);
}

/* A PING of exactly PROTO_AUTH_PING_MAX bytes passes; one byte more does not. */
static void test_size_limit(void)
{
	char host[PROTO_AUTH_PING_MAX], digest[129], why[256], h2[256], d2[256];
	msgpack_sbuffer sb;
	size_t base;
	struct fx f;

	for (int extra = 0; extra <= 1; extra++) {
		fx_open(&f);
		host[0] = '\0';
		sha512_hex("s", host, f.helo.nonce, KEY, digest);
		pack_ping(&sb, host, "s", digest, 6);
		base = sb.size;  /* an empty host; str 16 header from 32 bytes on */
		msgpack_sbuffer_destroy(&sb);
		memset(host, 'h', sizeof(host));
		host[PROTO_AUTH_PING_MAX - base - 2 + (size_t)extra] = '\0';
		sha512_hex("s", host, f.helo.nonce, KEY, digest);
		pack_ping(&sb, host, "s", digest, 6);
		CHECK(sb.size == PROTO_AUTH_PING_MAX + (size_t)extra);
		evbuffer_add(f.in, sb.data, sb.size);
		if (extra == 0) {
			CHECK(proto_auth_run(f.a, f.in, f.out) == PROTO_AUTH_DONE);
		} else {
			CHECK(proto_auth_run(f.a, f.in, f.out) == PROTO_AUTH_FAIL);
			CHECK(read_pong(f.out, why, h2, d2) == 0);
			CHECK_STR(why, "PING larger than 4096 bytes");
		}
		msgpack_sbuffer_destroy(&sb);
		fx_close(&f);
	}
}

int main(void)
{
	log_set_level(LOG_LEVEL_ERROR); /* refusals log warnings by design */
	test_helo_nonces_differ();
	test_good_ping_and_what_follows();
	test_every_split_point();
	test_refusals();
	test_wrong_key_and_bad_digest();
	test_size_limit();
	return unit_done("test_proto_auth");
}
