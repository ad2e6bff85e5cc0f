/*
 * test_http_body.c: HTTP request bodies -> events. Each test decodes a body
 * the way the HTTP input will and compares what the callbacks saw (every
 * event printed by msgpack-c, every rejection's index, reason, field and
 * message) or the whole-body error (status, byte offset, message).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zlib.h>

#include "../../src/input/http/http_body.h"
#include "record.h"
#include "unit.h"

#define MAX_SEEN 16
#define MAX_EVENT 4096 /* listen.max_event_bytes for these tests */

/* What the callbacks saw. */
static struct {
	int nev, nrej;
	int stop_after;              /* the event callback returns -1 after this many; 0: never */
	uint32_t ev_index[MAX_SEEN];
	char ev[MAX_SEEN][512];      /* msgpack_object_print_buffer of each event */
	msgpack_object_type ev_types[MAX_SEEN][8]; /* types of each event's first values */
	uint32_t ev_strlen[MAX_SEEN][8];           /* their lengths when strings */
	struct {
		uint32_t index;
		enum record_reason reason;
		char field[64];
		char message[256];
		char value[128];     /* the element as printed, or "-" */
	} rej[MAX_SEEN];
	int record_rc;               /* record_from_map of the last event */
	char meta[256];              /* its mg_meta column */
} G;
static struct http_body_error E;

static int seen_event(void *arg, uint32_t index, const msgpack_object *map)
{
	struct record_ctx ctx = { .peer = "unix", .recv_ns = UINT64_C(1795576098123456789) };
	struct record_error rerr;
	struct record *rec = NULL;
	int meta;

	(void)arg;
	if (G.nev < MAX_SEEN) {
		G.ev_index[G.nev] = index;
		msgpack_object_print_buffer(G.ev[G.nev], sizeof(G.ev[0]), *map);
		for (uint32_t i = 0; i < map->via.map.size && i < 8; i++)
		{
			G.ev_types[G.nev][i] = map->via.map.ptr[i].val.type;
			G.ev_strlen[G.nev][i] = map->via.map.ptr[i].val.via.str.size;
		}
	}
	G.nev++;
	G.record_rc = record_from_map(map, &ctx, &rec, &rerr);
	meta = rec ? record_column_find((int)rec->table, "mg_meta", 7) : -1;
	snprintf(G.meta, sizeof(G.meta), "%s",
		 meta >= 0 && record_get(rec, meta) ? record_get(rec, meta) : "-");
	record_free(rec);
	return G.stop_after && G.nev >= G.stop_after ? -1 : 0;
}

static int seen_reject(void *arg, const struct http_body_reject *r)
{
	(void)arg;
	if (G.nrej < MAX_SEEN) {
		G.rej[G.nrej].index = r->index;
		G.rej[G.nrej].reason = r->reason;
		snprintf(G.rej[G.nrej].field, sizeof(G.rej[0].field), "%s", r->field);
		snprintf(G.rej[G.nrej].message, sizeof(G.rej[0].message), "%s", r->message);
		if (r->value)
			msgpack_object_print_buffer(G.rej[G.nrej].value, sizeof(G.rej[0].value),
						    *r->value);
		else
			snprintf(G.rej[G.nrej].value, sizeof(G.rej[0].value), "-");
	}
	G.nrej++;
	return 0;
}

static const struct http_body_cb cb = { seen_event, seen_reject, NULL };

static enum http_body_status run_n(const char *type, const char *encoding, const char *body,
				   size_t len, size_t max)
{
	enum http_body_status st;

	memset(&G, 0, sizeof(G));
	memset(&E, 0, sizeof(E));
	st = http_body_decode(type, encoding, body, len, max, &cb, &E);
	CHECK(E.status == st);
	return st;
}

static enum http_body_status run(const char *type, const char *body)
{
	return run_n(type, NULL, body, strlen(body), MAX_EVENT);
}

/* gzip of LEN bytes at P into a new buffer (*OUTLEN bytes). */
static char *gzip_of(const char *p, size_t len, size_t *outlen)
{
	z_stream zs;
	size_t cap = deflateBound(&(z_stream){ 0 }, len) + 64;
	char *out = malloc(cap + len / 100 + 1024);

	memset(&zs, 0, sizeof(zs));
	if (!out || deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	zs.next_in = (Bytef *)p;
	zs.avail_in = (uInt)len;
	zs.next_out = (Bytef *)out;
	zs.avail_out = (uInt)(cap + len / 100 + 1024);
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		abort();
	*outlen = zs.total_out;
	deflateEnd(&zs);
	return out;
}

/* ---- application/json ------------------------------------------------- */

static void test_json_object(void)
{
	CHECK(run("application/json", " {\"mg_id\":\"g1\",\"n\":1,\"f\":1.5,\"neg\":-3,\"t\":true,"
		  "\"z\":null,\"mg_meta\":{\"a\":[1,{\"b\":\"c\"}],\"e\":{}}}\n") == HTTP_BODY_OK);
	CHECK(G.nev == 1 && G.nrej == 0 && G.ev_index[0] == 0);
	CHECK_STR(G.ev[0], "{\"mg_id\"=>\"g1\", \"n\"=>1, \"f\"=>1.500000, \"neg\"=>-3, "
		  "\"t\"=>true, \"z\"=>nil, \"mg_meta\"=>{\"a\"=>[1, {\"b\"=>\"c\"}], \"e\"=>{}}}");
	CHECK(G.ev_types[0][1] == MSGPACK_OBJECT_POSITIVE_INTEGER);
	CHECK(G.ev_types[0][2] == MSGPACK_OBJECT_FLOAT64);
	CHECK(G.ev_types[0][3] == MSGPACK_OBJECT_NEGATIVE_INTEGER);
	CHECK(G.ev_types[0][6] == MSGPACK_OBJECT_MAP);
	CHECK(http_body_http_status(HTTP_BODY_OK) == 200);
}

static void test_json_array(void)
{
	CHECK(run("application/json", "[{\"a\":1},\n {\"a\":2}, {\"a\":\"x\\\"y\\u00e9\"}]")
	      == HTTP_BODY_OK);
	CHECK(G.nev == 3 && G.nrej == 0);
	CHECK(G.ev_index[0] == 0 && G.ev_index[1] == 1 && G.ev_index[2] == 2);
	CHECK_STR(G.ev[1], "{\"a\"=>2}");
	CHECK_STR(G.ev[2], "{\"a\"=>\"x\"y\xc3\xa9\"}"); /* msgpack-c prints quotes bare */
}

static void test_json_empty_array(void)
{
	CHECK(run("application/json", " [ ] ") == HTTP_BODY_OK);
	CHECK(G.nev == 0 && G.nrej == 0);
}

/* The event reaches record_from_map as a Forward map would: mg_meta nests. */
static void test_json_record(void)
{
	CHECK(run("application/json", "{\"mg_id\":\"g1\",\"mg_record_type\":\"generation\","
		  "\"mg_latency_ms\":1200,\"mg_meta\":{\"seed\":7,\"cfg\":7.5,\"tags\":[\"a\",null]}}")
	      == HTTP_BODY_OK);
	CHECK(G.nev == 1 && G.record_rc == 0);
	CHECK_STR(G.meta, "{\"seed\":7,\"cfg\":7.5,\"tags\":[\"a\",null]}");
}

static void test_json_wrong_elements(void)
{
	CHECK(run("application/json", "[1, {\"a\":1}, \"x\", [2, {\"b\":[]}], null, true, 2.5]")
	      == HTTP_BODY_OK);
	CHECK(G.nev == 1 && G.ev_index[0] == 1 && G.nrej == 6);
	CHECK(G.rej[0].index == 0 && G.rej[0].reason == RECORD_REASON_NOT_A_MAP);
	CHECK_STR(G.rej[0].message, "expected an object, got number");
	CHECK_STR(G.rej[0].value, "1");
	CHECK(G.rej[1].index == 2);
	CHECK_STR(G.rej[1].message, "expected an object, got string");
	CHECK_STR(G.rej[1].value, "\"x\"");
	CHECK(G.rej[2].index == 3);
	CHECK_STR(G.rej[2].message, "expected an object, got array");
	CHECK_STR(G.rej[2].value, "[2, {\"b\"=>[]}]");
	CHECK(G.rej[3].index == 4);
	CHECK_STR(G.rej[3].value, "nil");
	CHECK(G.rej[4].index == 5);
	CHECK_STR(G.rej[4].message, "expected an object, got boolean");
	CHECK(G.rej[5].index == 6);
	CHECK_STR(G.rej[5].value, "2.500000");
}

static void test_json_root_not_object(void)
{
	CHECK(run("application/json", "\n 42") == HTTP_BODY_BAD);
	CHECK(E.offset == 2);
	CHECK_STR(E.message, "does not parse at byte 2 (line 2): expected an object or an array "
		  "of objects");
	CHECK(http_body_http_status(HTTP_BODY_BAD) == 400);
	CHECK(run("application/json", "") == HTTP_BODY_BAD);
	CHECK(E.offset == 0);
	CHECK_CONTAINS(E.message, "premature EOF");
}

/* The offset is the first byte at which the body stops being valid JSON. */
static void test_json_bad_offsets(void)
{
	static const struct {
		const char *body;
		size_t offset;
		const char *why;
	} cases[] = {
		{ "[{\"a\":1},\n{\"a\": tru}]", 19, "(line 2): lexical error: invalid string" },
		{ "[{\"a\":1}, @]", 10, "(line 1): lexical error: invalid char" },
		{ "[{\"a\":\"\\q\"}]", 8, "inside a string, '\\' occurs before a character" },
		{ "[{\"a\":\"x\x01\"}]", 8, "invalid character inside string" },
		{ "[{\"a\":-}]", 7, "malformed number" },
		{ "{\"a\":[1,2}", 9, "after array element, I expect ',' or ']'" },
		{ "[{\"a\":1} {\"b\":2}]", 9, "after array element" },
		{ "{\"a\":1} x", 8, "trailing garbage" },
		{ "[{\"a\":truex}]", 10, "invalid char" },
		{ "[{\"a\":\"\xe2\x28\xa1\"}]", 8, "invalid bytes in UTF8 string" },
		{ "[{\"b\":\"\xff\"}]", 7, "invalid bytes in UTF8 string" },
	};
	char want[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK(run("application/json", cases[i].body) == HTTP_BODY_BAD);
		if (E.offset != cases[i].offset)
			fprintf(stderr, "case %zu: offset %zu, want %zu\n", i, E.offset,
				cases[i].offset);
		CHECK(E.offset == cases[i].offset);
		snprintf(want, sizeof(want), "does not parse at byte %zu ", cases[i].offset);
		CHECK_CONTAINS(E.message, want);
		CHECK_CONTAINS(E.message, cases[i].why);
	}
	/* The whole-body error can follow callbacks: the caller drops them. */
	CHECK(run("application/json", "[{\"a\":1}, @]") == HTTP_BODY_BAD && G.nev == 1);
}

static void test_json_truncated(void)
{
	const char *body = "[{\"a\":1},{\"b\":\"abc";

	CHECK(run("application/json", body) == HTTP_BODY_BAD);
	CHECK(E.offset == strlen(body));
	CHECK_STR(E.message, "does not parse at byte 18 (line 1): parse error: premature EOF");
	CHECK(run("application/json", "[{\"a\":1}") == HTTP_BODY_BAD && E.offset == 8);
}

/* DEPTH containers in the event ({"a": then arrays), inside a root array. */
static char *nested(int depth, size_t *len)
{
	size_t n = 8 + 2 * (size_t)depth + 8;
	char *s = malloc(n), *p = s;

	if (!s)
		abort();
	p += sprintf(p, "[{\"a\":");
	for (int i = 1; i < depth; i++)
		*p++ = '[';
	*p++ = '1';
	for (int i = 1; i < depth; i++)
		*p++ = ']';
	p += sprintf(p, "}]");
	*len = (size_t)(p - s);
	return s;
}

static void test_json_depth(void)
{
	size_t len;
	char *s = nested(HTTP_BODY_MAX_DEPTH, &len);

	CHECK(run_n("application/json", NULL, s, len, MAX_EVENT) == HTTP_BODY_OK);
	CHECK(G.nev == 1);
	free(s);
	s = nested(HTTP_BODY_MAX_DEPTH + 1, &len);
	CHECK(run_n("application/json", NULL, s, len, MAX_EVENT) == HTTP_BODY_BAD);
	CHECK(E.offset == 6 + HTTP_BODY_MAX_DEPTH - 1); /* the 33rd container's '[' */
	CHECK_CONTAINS(E.message, "nested deeper than 32 levels in one event");
	CHECK(G.nev == 0);
	free(s);
	/* A bomb: a million open brackets stops at the 33rd. */
	s = nested(1000000, &len);
	CHECK(run_n("application/json", NULL, s, len, 1 << 30) == HTTP_BODY_BAD);
	CHECK(E.offset == 6 + HTTP_BODY_MAX_DEPTH - 1);
	free(s);
}

static void test_json_huge_string(void)
{
	size_t n = 1 << 20;
	char *s = malloc(n + 64);

	if (!s)
		abort();
	memcpy(s, "[{\"a\":\"", 7);
	memset(s + 7, 'x', n);
	strcpy(s + 7 + n, "\", \"b\":[1]}, {\"c\":2}]");
	CHECK(run_n("application/json", NULL, s, strlen(s), MAX_EVENT) == HTTP_BODY_OK);
	CHECK(G.nrej == 1 && G.rej[0].index == 0 && G.rej[0].reason == RECORD_REASON_TOO_LONG);
	CHECK_STR(G.rej[0].message, "event over listen.max_event_bytes (4096 bytes)");
	CHECK_STR(G.rej[0].value, "-");
	CHECK(G.nev == 1 && G.ev_index[0] == 1);
	CHECK_STR(G.ev[0], "{\"c\"=>2}");
	/* Just under the limit goes through. */
	strcpy(s + 7 + 4000, "\"}]");
	CHECK(run_n("application/json", NULL, s, strlen(s), MAX_EVENT) == HTTP_BODY_OK);
	CHECK(G.nev == 1 && G.nrej == 0);
	free(s);
}

static void test_json_numbers(void)
{
	CHECK(run("application/json", "{\"u\":18446744073709551615,\"m\":-9223372036854775808,"
		  "\"e\":1E2,\"z\":-0,\"x\":2.5e3,\"s\":0.000001}") == HTTP_BODY_OK);
	CHECK_STR(G.ev[0], "{\"u\"=>18446744073709551615, \"m\"=>-9223372036854775808, "
		  "\"e\"=>100.000000, \"z\"=>0, \"x\"=>2500.000000, \"s\"=>0.000001}");
	CHECK(G.ev_types[0][0] == MSGPACK_OBJECT_POSITIVE_INTEGER);
	CHECK(G.ev_types[0][1] == MSGPACK_OBJECT_NEGATIVE_INTEGER);
	CHECK(G.ev_types[0][2] == MSGPACK_OBJECT_FLOAT64);
	CHECK(G.ev_types[0][3] == MSGPACK_OBJECT_POSITIVE_INTEGER);
	CHECK(run("application/json", "[{\"c\":18446744073709551616}, {\"d\":-9223372036854775809},"
		  "{\"e\":1e400, \"f\":{\"g\":1}}, {\"ok\":1}]") == HTTP_BODY_OK);
	CHECK(G.nrej == 3 && G.nev == 1 && G.ev_index[0] == 3);
	CHECK(G.rej[0].reason == RECORD_REASON_OUT_OF_RANGE);
	CHECK_STR(G.rej[0].field, "c");
	CHECK_STR(G.rej[0].message, "c: 18446744073709551616 is out of range for a 64-bit integer");
	CHECK_STR(G.rej[1].message, "d: -9223372036854775809 is out of range for a 64-bit integer");
	CHECK_STR(G.rej[2].message, "e: 1e400 is out of range for a 64-bit float");
}

static void test_json_utf8(void)
{
	CHECK(run("application/json", "[{\"a\":\"\xc0\x80\"}, {\"a\":\"\xed\xa0\x80\"},"
		  "{\"a\":\"\\ud800\"}, {\"a\":\"\\udc00x\"}, {\"k\\ud800\":1},"
		  "{\"a\":\"\\ud83d\\ude00\", \"b\":\"\\\\ud800\", \"c\":\"\\u0000\"}]")
	      == HTTP_BODY_OK);
	CHECK(G.nrej == 5);
	for (int i = 0; i < 5; i++) {
		CHECK(G.rej[i].index == (uint32_t)i);
		CHECK(G.rej[i].reason == RECORD_REASON_BAD_UTF8);
	}
	CHECK_STR(G.rej[0].message, "a: not valid UTF-8");         /* overlong NUL */
	CHECK_STR(G.rej[0].field, "a");
	CHECK_STR(G.rej[1].message, "a: not valid UTF-8");         /* a raw surrogate */
	CHECK_STR(G.rej[2].message, "a: unpaired UTF-16 surrogate escape");
	CHECK_STR(G.rej[3].message, "a: unpaired UTF-16 surrogate escape");
	CHECK_STR(G.rej[4].message, "a key: unpaired UTF-16 surrogate escape");
	CHECK_STR(G.rej[4].field, "");
	CHECK(G.nev == 1 && G.ev_index[0] == 5);
	CHECK_STR(G.ev[0], "{\"a\"=>\"\xf0\x9f\x98\x80\", \"b\"=>\"\\ud800\", \"c\"=>\""); /* NUL ends it */
	CHECK(G.ev_strlen[0][1] == 6 && G.ev_strlen[0][2] == 1);
}

/* ---- application/x-ndjson --------------------------------------------- */

static void test_ndjson(void)
{
	CHECK(run("application/x-ndjson", "{\"a\":1}\r\n\r\n \t\r\n{\"a\":2}\r\n\n42\n[1]\n"
		  "{\"a\":3}") == HTTP_BODY_OK);
	CHECK(G.nev == 3 && G.nrej == 2);
	CHECK(G.ev_index[0] == 0 && G.ev_index[1] == 1 && G.ev_index[2] == 4);
	CHECK_STR(G.ev[2], "{\"a\"=>3}");
	CHECK(G.rej[0].index == 2 && G.rej[0].reason == RECORD_REASON_NOT_A_MAP);
	CHECK_STR(G.rej[0].value, "42");
	CHECK(G.rej[1].index == 3);
	CHECK_STR(G.rej[1].value, "[1]");
	CHECK(run("application/x-ndjson", "") == HTTP_BODY_OK && G.nev == 0);
	CHECK(run("application/x-ndjson", "\r\n\r\n") == HTTP_BODY_OK && G.nev == 0);
	CHECK(run("application/x-ndjson", "{\"a\":1}\n{\"a\":2}\n{\"a\" 3}\n") == HTTP_BODY_BAD);
	CHECK(E.offset == 22);
	CHECK_CONTAINS(E.message, "at byte 22 (line 3): parse error: object key and value");
	CHECK(run("application/x-ndjson", "{\"a\":1}\n{\"a\":") == HTTP_BODY_BAD);
	CHECK_CONTAINS(E.message, "premature EOF");
}

/* ---- application/msgpack ---------------------------------------------- */

static msgpack_sbuffer sb;
static msgpack_packer pk;

static void mp_begin(void)
{
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
}

static void mp_kv(const char *k, int64_t v)
{
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str_with_body(&pk, k, strlen(k));
	msgpack_pack_int64(&pk, v);
}

static enum http_body_status mp_run(const char *encoding)
{
	enum http_body_status st = run_n("application/msgpack", encoding, sb.data, sb.size,
					 MAX_EVENT);

	msgpack_sbuffer_destroy(&sb);
	return st;
}

static void test_msgpack(void)
{
	char big[5000];

	mp_begin();
	mp_kv("a", 1);
	CHECK(mp_run(NULL) == HTTP_BODY_OK && G.nev == 1);
	CHECK_STR(G.ev[0], "{\"a\"=>1}");

	memset(big, 'x', sizeof(big));
	mp_begin();
	msgpack_pack_array(&pk, 4);
	mp_kv("a", 1);
	msgpack_pack_int(&pk, 5);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str_with_body(&pk, "big", 3);
	msgpack_pack_str_with_body(&pk, big, sizeof(big));
	mp_kv("b", -2);
	CHECK(mp_run(NULL) == HTTP_BODY_OK);
	CHECK(G.nev == 2 && G.ev_index[0] == 0 && G.ev_index[1] == 3);
	CHECK_STR(G.ev[1], "{\"b\"=>-2}");
	CHECK(G.nrej == 2 && G.rej[0].index == 1 && G.rej[0].reason == RECORD_REASON_NOT_A_MAP);
	CHECK_STR(G.rej[0].message, "expected a map, got int");
	CHECK_STR(G.rej[0].value, "5");
	CHECK(G.rej[1].index == 2 && G.rej[1].reason == RECORD_REASON_TOO_LONG);

	mp_begin();
	msgpack_pack_array(&pk, 0);
	CHECK(mp_run(NULL) == HTTP_BODY_OK && G.nev == 0 && G.nrej == 0);
}

static void test_msgpack_bad(void)
{
	/* Announces 3 items, holds 2. */
	mp_begin();
	msgpack_pack_array(&pk, 3);
	mp_kv("a", 1);
	mp_kv("a", 2);
	CHECK(mp_run(NULL) == HTTP_BODY_BAD && E.offset == 9);
	CHECK_CONTAINS(E.message, "the array holds fewer items than it announces");
	/* Holds more than it announces. */
	mp_begin();
	msgpack_pack_array(&pk, 1);
	mp_kv("a", 1);
	mp_kv("a", 2);
	CHECK(mp_run(NULL) == HTTP_BODY_BAD && E.offset == 5);
	CHECK_CONTAINS(E.message, "bytes after the last item");
	/* Two maps without an array. */
	mp_begin();
	mp_kv("a", 1);
	mp_kv("a", 2);
	CHECK(mp_run(NULL) == HTTP_BODY_BAD && E.offset == 4);
	/* A map announcing 2^32 - 1 pairs in 5 bytes: refused before msgpack-c allocates. */
	CHECK(run_n("application/msgpack", NULL, "\x91\xdf\xff\xff\xff\xff\xa1" "a", 8, MAX_EVENT)
	      == HTTP_BODY_BAD && E.offset == 1);
	CHECK_CONTAINS(E.message, "truncated msgpack value");
	/* An item of 2 000 elements, more than max_event_bytes / 4 = 1 024. */
	mp_begin();
	msgpack_pack_array(&pk, 2);
	mp_kv("a", 1);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str_with_body(&pk, "a", 1);
	msgpack_pack_array(&pk, 2000);
	for (int i = 0; i < 2000; i++)
		msgpack_pack_nil(&pk);
	CHECK(mp_run(NULL) == HTTP_BODY_BAD && E.offset == 8 && G.nev == 0); /* its header */
	CHECK_CONTAINS(E.message, "announces more elements than listen.max_event_bytes / 4");
	CHECK(run_n("application/msgpack", NULL, "\x81\xa1" "a\xc1", 4, MAX_EVENT) == HTTP_BODY_BAD);
	CHECK(E.offset == 3);
	CHECK_CONTAINS(E.message, "not msgpack");
	CHECK(run_n("application/msgpack", NULL, "\x05", 1, MAX_EVENT) == HTTP_BODY_BAD);
	CHECK_CONTAINS(E.message, "expected a map or an array of maps");
	CHECK(run_n("application/msgpack", NULL, "", 0, MAX_EVENT) == HTTP_BODY_BAD);
	CHECK(run_n("application/msgpack", NULL, "\xdd\x00\x00", 3, MAX_EVENT) == HTTP_BODY_BAD);
	CHECK_CONTAINS(E.message, "truncated array header");
	CHECK(run_n("application/msgpack", NULL, "\x81\xa1" "a\xa5" "ab", 6, MAX_EVENT)
	      == HTTP_BODY_BAD && E.offset == 3);
	CHECK_CONTAINS(E.message, "truncated msgpack value");
}

static void test_msgpack_depth(void)
{
	char body[64];

	body[0] = (char)0x81;
	body[1] = (char)0xa1;
	body[2] = 'a';
	memset(body + 3, 0x91, 40);
	body[43] = 1;
	CHECK(run_n("application/msgpack", NULL, body, 44, MAX_EVENT) == HTTP_BODY_BAD);
	CHECK_CONTAINS(E.message, "nested deeper than 32 levels");
}

/* ---- gzip, types, encodings ------------------------------------------- */

static void test_gzip(void)
{
	const char *json = "[{\"a\":1},{\"a\":2}]";
	size_t n, zeros = (size_t)MAX_EVENT * 16 + 1;
	char *z = gzip_of(json, strlen(json), &n), *big;

	CHECK(run_n("application/json", "gzip", z, n, MAX_EVENT) == HTTP_BODY_OK && G.nev == 2);
	CHECK(run_n("application/json", " GZIP ", z, n, MAX_EVENT) == HTTP_BODY_OK && G.nev == 2);
	CHECK(run_n("application/json", "x-gzip", z, n, MAX_EVENT) == HTTP_BODY_OK && G.nev == 2);
	/* The same bytes without the header are not JSON. */
	CHECK(run_n("application/json", NULL, z, n, MAX_EVENT) == HTTP_BODY_BAD);
	free(z);

	mp_begin();
	msgpack_pack_array(&pk, 1);
	mp_kv("m", 7);
	z = gzip_of(sb.data, sb.size, &n);
	msgpack_sbuffer_destroy(&sb);
	CHECK(run_n("application/msgpack", "gzip", z, n, MAX_EVENT) == HTTP_BODY_OK && G.nev == 1);
	CHECK_STR(G.ev[0], "{\"m\"=>7}");
	free(z);

	z = gzip_of("{\"a\":1}\n{\"a\" 2}", 15, &n);
	CHECK(run_n("application/x-ndjson", "gzip", z, n, MAX_EVENT) == HTTP_BODY_BAD);
	CHECK_CONTAINS(E.message, "at byte 14 (line 2)");
	CHECK_CONTAINS(E.message, "(offsets count inflated bytes)");
	free(z);

	CHECK(run_n("application/json", "gzip", json, strlen(json), MAX_EVENT) == HTTP_BODY_BAD);
	CHECK_CONTAINS(E.message, "Content-Encoding gzip: ");
	z = gzip_of(json, strlen(json), &n);
	CHECK(run_n("application/json", "gzip", z, n - 4, MAX_EVENT) == HTTP_BODY_BAD);
	CHECK_CONTAINS(E.message, "truncated gzip data");
	free(z);

	/* One byte over max_event_bytes x 16 once inflated: 413, whatever it holds. */
	big = calloc(1, zeros);
	if (!big)
		abort();
	memset(big, ' ', zeros);
	z = gzip_of(big, zeros, &n);
	CHECK(run_n("application/json", "gzip", z, n, MAX_EVENT) == HTTP_BODY_TOO_LARGE);
	CHECK_STR(E.message, "gzip body inflates past 65536 bytes (listen.max_event_bytes x 16)");
	CHECK(http_body_http_status(HTTP_BODY_TOO_LARGE) == 413);
	CHECK(run_n("application/json", "gzip", z, n, MAX_EVENT + 1) != HTTP_BODY_TOO_LARGE);
	free(z);
	free(big);
}

static void test_types(void)
{
	const char *obj = "{\"a\":1}";

	CHECK(run_n(NULL, NULL, obj, 7, MAX_EVENT) == HTTP_BODY_UNSUPPORTED);
	CHECK_STR(E.message, "no Content-Type; send application/json, application/x-ndjson or "
		  "application/msgpack (Content-Encoding: identity or gzip)");
	CHECK(http_body_http_status(HTTP_BODY_UNSUPPORTED) == 415);
	CHECK(run_n("text/plain", NULL, obj, 7, MAX_EVENT) == HTTP_BODY_UNSUPPORTED);
	CHECK_CONTAINS(E.message, "Content-Type \"text/plain\" is not accepted; send application/json");
	CHECK(run_n("application/jsonx", NULL, obj, 7, MAX_EVENT) == HTTP_BODY_UNSUPPORTED);
	CHECK(run_n("application/x-www-form-urlencoded", NULL, obj, 7, MAX_EVENT) ==
	      HTTP_BODY_UNSUPPORTED);
	CHECK(run_n(" Application/JSON ; charset=\"UTF-8\"", NULL, obj, 7, MAX_EVENT) == HTTP_BODY_OK);
	CHECK(G.nev == 1);
	CHECK(run_n("application/json; charset=iso-8859-1", NULL, obj, 7, MAX_EVENT) ==
	      HTTP_BODY_UNSUPPORTED);
	CHECK_CONTAINS(E.message, "only UTF-8 is accepted");
	CHECK(run_n("application/json", "br", obj, 7, MAX_EVENT) == HTTP_BODY_UNSUPPORTED);
	CHECK_CONTAINS(E.message, "Content-Encoding \"br\" is not accepted");
	CHECK(run_n("application/json", "gzip, br", obj, 7, MAX_EVENT) == HTTP_BODY_UNSUPPORTED);
	CHECK(run_n("application/json", "identity", obj, 7, MAX_EVENT) == HTTP_BODY_OK);
	CHECK(run_n("application/json", "", obj, 7, MAX_EVENT) == HTTP_BODY_OK);
	CHECK(run_n("application/x-msgpack", NULL, "\x80", 1, MAX_EVENT) == HTTP_BODY_OK);
	CHECK(run_n("application/ndjson", NULL, obj, 7, MAX_EVENT) == HTTP_BODY_OK);
}

static void test_stop(void)
{
	memset(&G, 0, sizeof(G));
	G.stop_after = 2;
	CHECK(http_body_decode("application/json", NULL, "[{},{},{}]", 10, MAX_EVENT, &cb, &E) ==
	      HTTP_BODY_STOPPED);
	CHECK(G.nev == 2 && E.status == HTTP_BODY_STOPPED);
	CHECK_STR(E.message, "stopped by the caller at element 1");
	memset(&G, 0, sizeof(G));
	G.stop_after = 1;
	CHECK(http_body_decode("application/msgpack", NULL, "\x92\x80\x80", 3, MAX_EVENT, &cb, &E)
	      == HTTP_BODY_STOPPED);
	CHECK(G.nev == 1 && E.status == HTTP_BODY_STOPPED);
	CHECK_STR(E.message, "stopped by the caller at element 0");
	CHECK(http_body_http_status(HTTP_BODY_STOPPED) == 500);
}

int main(void)
{
	test_json_object();
	test_json_array();
	test_json_empty_array();
	test_json_record();
	test_json_wrong_elements();
	test_json_root_not_object();
	test_json_bad_offsets();
	test_json_truncated();
	test_json_depth();
	test_json_huge_string();
	test_json_numbers();
	test_json_utf8();
	test_ndjson();
	test_msgpack();
	test_msgpack_bad();
	test_msgpack_depth();
	test_gzip();
	test_types();
	test_stop();
	return unit_done("test_http_body");
}
