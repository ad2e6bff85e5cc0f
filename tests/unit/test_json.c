/*
 * test_json.c: msgpack -> JSON in both modes: every msgpack type, string
 * escaping, the UTF-8 validity table, what STRICT refuses (with the path in
 * the message) and what LENIENT writes instead, timestamps, depth, base64.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "json.h"
#include "unit.h"

static char errbuf[256];
static char outbuf[4096];

/* Render O; returns the JSON text (a static buffer) or NULL on -1 (errbuf). */
static const char *render(const msgpack_object *o, enum json_mode mode, const char *path)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	int rc;

	if (!b)
		abort();
	errbuf[0] = 'X';
	errbuf[1] = '\0';
	rc = json_append_msgpack(b, o, mode, path, errbuf, sizeof(errbuf));
	n = evbuffer_get_length(b);
	if (n >= sizeof(outbuf))
		n = sizeof(outbuf) - 1;
	evbuffer_remove(b, outbuf, n);
	outbuf[n] = '\0';
	evbuffer_free(b);
	return rc == 0 ? outbuf : NULL;
}

static const char *strict(const msgpack_object *o)
{
	return render(o, JSON_STRICT, "mg_meta");
}

static const char *lenient(const msgpack_object *o)
{
	return render(o, JSON_LENIENT, "mg_meta");
}

static msgpack_object o_nil(void)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_NIL };
	return o;
}

static msgpack_object o_bool(bool v)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_BOOLEAN, .via.boolean = v };
	return o;
}

static msgpack_object o_uint(uint64_t v)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = v };
	return o;
}

static msgpack_object o_neg(int64_t v)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_NEGATIVE_INTEGER, .via.i64 = v };
	return o;
}

static msgpack_object o_f64(double v)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_FLOAT64, .via.f64 = v };
	return o;
}

static msgpack_object o_f32(float v)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_FLOAT32, .via.f64 = v };
	return o;
}

static msgpack_object o_strn(const char *s, size_t n)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_STR };

	o.via.str.ptr = s;
	o.via.str.size = (uint32_t)n;
	return o;
}

static msgpack_object o_str(const char *s)
{
	return o_strn(s, strlen(s));
}

static msgpack_object o_bin(const char *s, size_t n)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_BIN };

	o.via.bin.ptr = s;
	o.via.bin.size = (uint32_t)n;
	return o;
}

static msgpack_object o_ext(int8_t type, const char *p, size_t n)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_EXT };

	o.via.ext.type = type;
	o.via.ext.ptr = p;
	o.via.ext.size = (uint32_t)n;
	return o;
}

static msgpack_object o_array(msgpack_object *items, uint32_t n)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_ARRAY };

	o.via.array.ptr = items;
	o.via.array.size = n;
	return o;
}

static msgpack_object o_map(msgpack_object_kv *kv, uint32_t n)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_MAP };

	o.via.map.ptr = kv;
	o.via.map.size = n;
	return o;
}

static void test_scalars(void)
{
	msgpack_object o;

	o = o_nil();
	CHECK_STR(strict(&o), "null");
	o = o_bool(true);
	CHECK_STR(strict(&o), "true");
	o = o_bool(false);
	CHECK_STR(strict(&o), "false");
	o = o_uint(0);
	CHECK_STR(strict(&o), "0");
	o = o_uint(UINT64_MAX);
	CHECK_STR(strict(&o), "18446744073709551615");
	o = o_neg(-1);
	CHECK_STR(strict(&o), "-1");
	o = o_neg(INT64_MIN);
	CHECK_STR(strict(&o), "-9223372036854775808");
	o = o_f64(0.1);
	CHECK_STR(strict(&o), "0.1");
	o = o_f64(1.5);
	CHECK_STR(strict(&o), "1.5");
	o = o_f64(1e300);
	CHECK_STR(strict(&o), "1e+300");
	o = o_f64(0.1 + 0.2);
	CHECK_STR(strict(&o), "0.30000000000000004");
	o = o_f64(strtod(strict(&o), NULL)); /* round trip */
	CHECK(o.via.f64 == 0.1 + 0.2);
	o = o_f64(-2.0);
	CHECK_STR(strict(&o), "-2");
	o = o_f32(0.1f);
	CHECK_STR(strict(&o), "0.1");
	o = o_f32(16777216.0f);
	CHECK_STR(strict(&o), "16777216");
}

static void test_nonfinite(void)
{
	msgpack_object o = o_f64(NAN);

	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: float NaN has no JSON form");
	CHECK_STR(lenient(&o), "null");
	o = o_f64(INFINITY);
	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: float Infinity has no JSON form");
	CHECK_STR(lenient(&o), "null");
	o = o_f64(-INFINITY);
	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: float -Infinity has no JSON form");
	o = o_f32(NAN);
	CHECK(strict(&o) == NULL);
}

static void test_escaping(void)
{
	static const char raw[] = "q\"b\\s/n\nt\tr\rb\bf\f\x01\x1f\x7f end";
	msgpack_object o = o_strn(raw, sizeof(raw) - 1);

	CHECK_STR(strict(&o), "\"q\\\"b\\\\s/n\\nt\\tr\\rb\\bf\\f\\u0001\\u001f\x7f end\"");
	o = o_str("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");
	CHECK_STR(strict(&o), "\"caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80\"");
	o = o_str("");
	CHECK_STR(strict(&o), "\"\"");
	/* Specials past the 8-byte fast path, and right at a block edge. */
	o = o_str("0123456789abcdef\"0123456\n");
	CHECK_STR(strict(&o), "\"0123456789abcdef\\\"0123456\\n\"");
	o = o_str("01234567890123456789012345678901");
	CHECK_STR(strict(&o), "\"01234567890123456789012345678901\"");
}

struct utf8_case {
	const char *s;
	size_t n;
	bool valid;
};

#define U(lit, v) { lit, sizeof(lit) - 1, v }

static void test_utf8_table(void)
{
	static const struct utf8_case cases[] = {
		U("", true),
		U("plain ascii", true),
		U("\xc2\x80", true),                 /* U+0080 */
		U("\xdf\xbf", true),                 /* U+07FF */
		U("\xe0\xa0\x80", true),             /* U+0800 */
		U("\xed\x9f\xbf", true),             /* U+D7FF, last before surrogates */
		U("\xee\x80\x80", true),             /* U+E000, first after */
		U("\xef\xbf\xbf", true),             /* U+FFFF */
		U("\xf0\x90\x80\x80", true),         /* U+10000 */
		U("\xf4\x8f\xbf\xbf", true),         /* U+10FFFF */
		U("0123456789abcdef0123456789\xc3\xa9", true),
		U("0123456789\xc3\xa9" "0123456789abcdefghij", true),
		U("abc\xe2\x82\xac", true),
		U("\x80", false),                    /* stray continuation */
		U("\xbf", false),
		U("\xc0\x80", false),                /* overlong NUL */
		U("\xc1\xbf", false),                /* overlong */
		U("\xe0\x80\x80", false),            /* overlong 3-byte */
		U("\xe0\x9f\xbf", false),
		U("\xed\xa0\x80", false),            /* surrogate D800 */
		U("\xed\xbf\xbf", false),            /* surrogate DFFF */
		U("\xf0\x80\x80\x80", false),        /* overlong 4-byte */
		U("\xf0\x8f\xbf\xbf", false),
		U("\xf4\x90\x80\x80", false),        /* U+110000 */
		U("\xf5\x80\x80\x80", false),
		U("\xff", false),
		U("\xfe", false),
		U("\xc2", false),                    /* truncated */
		U("\xe2\x82", false),
		U("\xf0\x9f\x98", false),
		U("\xc2\x41", false),                /* bad continuation */
		U("\xe2\x28\xa1", false),
		U("0123456789abcdef0\xff", false),   /* after the fast path */
		U("0123456789abcdef0123456789abcde\x80", false),
		U("\xc3\xa9" "0123456789abcdefghij" "\xff", false),
		U("0123456\xed\xa0\x80" "0123456789abcdefghij", false),
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool got = json_utf8_valid(cases[i].s, cases[i].n);

		if (got != cases[i].valid)
			fprintf(stderr, "utf8 case %zu: expected %d\n", i, cases[i].valid);
		CHECK(got == cases[i].valid);
	}
}

static void test_invalid_utf8(void)
{
	msgpack_object o = o_str("ab\xff\xfe");

	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: string is not valid UTF-8 (byte 2)");
	CHECK_STR(lenient(&o), "{\"$base64\":\"YWL//g==\"}");
	o = o_bin("\xff\xfe", 2);
	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: bin value is not valid UTF-8 (byte 0)");
	CHECK_STR(lenient(&o), "{\"$base64\":\"//4=\"}");
	o = o_bin("h\xc3\xa9", 3); /* bin that is UTF-8 is text in both modes */
	CHECK_STR(strict(&o), "\"h\xc3\xa9\"");
	CHECK_STR(lenient(&o), "\"h\xc3\xa9\"");
}

static void test_nul(void)
{
	msgpack_object o = o_strn("a\0b", 3);
	msgpack_object_kv kv[1];
	msgpack_object m;

	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: string holds a NUL byte (\\u0000), which PostgreSQL's "
		  "jsonb cannot store");
	CHECK_STR(lenient(&o), "\"a\\u0000b\"");
	kv[0].key = o_str("a");
	kv[0].val = o;
	m = o_map(kv, 1);
	CHECK(strict(&m) == NULL);
	CHECK_CONTAINS(errbuf, "mg_meta.a: string holds a NUL byte");
	kv[0].key = o_strn("k\0", 2); /* NUL in a key */
	kv[0].val = o_uint(1);
	CHECK(strict(&m) == NULL);
	CHECK_CONTAINS(errbuf, "mg_meta.k?: string holds a NUL byte");
	CHECK_STR(lenient(&m), "{\"k\\u0000\":1}");
	o = o_bin("\0", 1);
	CHECK(strict(&o) == NULL);
	CHECK_STR(lenient(&o), "\"\\u0000\"");
}

static void test_containers_and_paths(void)
{
	msgpack_object list[4] = { o_uint(0), o_uint(1), o_uint(2), o_f64(NAN) };
	msgpack_object_kv inner[1], outer[3];
	msgpack_object m;

	inner[0].key = o_str("b");
	inner[0].val = o_f64(NAN);
	outer[0].key = o_str("a");
	outer[0].val = o_map(inner, 1);
	outer[1].key = o_str("list");
	outer[1].val = o_array(list, 4);
	outer[2].key = o_bin("z", 1);
	outer[2].val = o_array(NULL, 0);
	m = o_map(outer, 3);
	CHECK(strict(&m) == NULL);
	CHECK_STR(errbuf, "mg_meta.a.b: float NaN has no JSON form");
	CHECK_STR(lenient(&m), "{\"a\":{\"b\":null},\"list\":[0,1,2,null],\"z\":[]}");
	inner[0].val = o_str("ok");
	CHECK(strict(&m) == NULL);
	CHECK_STR(errbuf, "mg_meta.list[3]: float NaN has no JSON form");
	list[3] = o_nil();
	CHECK_STR(strict(&m), "{\"a\":{\"b\":\"ok\"},\"list\":[0,1,2,null],\"z\":[]}");
	m = o_map(NULL, 0);
	CHECK_STR(strict(&m), "{}");
	/* No root name: the message starts at the first key. */
	list[3] = o_f64(NAN);
	m = o_map(outer, 3);
	CHECK(render(&m, JSON_STRICT, NULL) == NULL);
	CHECK_STR(errbuf, "list[3]: float NaN has no JSON form");
	m = o_f64(NAN);
	CHECK(render(&m, JSON_STRICT, NULL) == NULL);
	CHECK_STR(errbuf, "float NaN has no JSON form");
}

static void test_keys(void)
{
	msgpack_object arr[2] = { o_uint(1), o_str("a") };
	msgpack_object_kv kv[4];
	msgpack_object m;

	kv[0].key = o_str("s");
	kv[0].val = o_uint(0);
	kv[1].key = o_uint(7);
	kv[1].val = o_bool(true);
	kv[2].key = o_array(arr, 2);
	kv[2].val = o_nil();
	kv[3].key = o_bin("\xff", 1);
	kv[3].val = o_uint(3);
	m = o_map(kv, 4);
	CHECK(strict(&m) == NULL);
	CHECK_STR(errbuf, "mg_meta: key #2: expected string, got int");
	CHECK_STR(lenient(&m), "{\"s\":0,\"7\":true,\"[1,\\\"a\\\"]\":null,"
		  "\"{\\\"$base64\\\":\\\"/w==\\\"}\":3}");
	kv[1].key = o_bin("bk", 2); /* UTF-8 bin key is a name */
	kv[2].key = o_str("t");
	kv[3].key = o_str("u");
	CHECK_STR(strict(&m), "{\"s\":0,\"bk\":true,\"t\":null,\"u\":3}");
	kv[3].key = o_bin("\xff", 1);
	CHECK(strict(&m) == NULL);
	CHECK_STR(errbuf, "mg_meta.?: bin value is not valid UTF-8 (byte 0)");
}

/* msgpack-c decodes an empty str or bin with a NULL ptr (found by fuzz_proto:
 * memcpy from NULL, undefined even for 0 bytes, aborted the sanitizer build). */
static void test_empty_strings_from_msgpack_c(void)
{
	msgpack_object empty_str = { .type = MSGPACK_OBJECT_STR, .via.str = { 0, NULL } };
	msgpack_object empty_bin = { .type = MSGPACK_OBJECT_BIN, .via.bin = { 0, NULL } };
	msgpack_object_kv kv[2];
	msgpack_object m;

	CHECK_STR(strict(&empty_str), "\"\"");
	CHECK_STR(lenient(&empty_bin), "\"\"");
	kv[0].key = empty_str;
	kv[0].val = empty_bin;
	kv[1].key = empty_bin;
	kv[1].val = empty_str;
	m = o_map(kv, 2);
	CHECK_STR(strict(&m), "{\"\":\"\",\"\":\"\"}");
	CHECK_STR(lenient(&m), "{\"\":\"\",\"\":\"\"}");
}

/* Map keys that are maps whose keys are maps...: LENIENT output stays linear
 * (found by fuzz_proto: escaping each level's text again doubled it per level). */
static void test_nested_container_keys(void)
{
	msgpack_object_kv kv[30];
	msgpack_object leaf = o_str("\"q\""), m = leaf;
	struct evbuffer *b = evbuffer_new();
	char err[128];

	if (!b)
		abort();
	for (int i = 0; i < 30; i++) {
		kv[i].key = m;
		kv[i].val = o_uint((uint64_t)i);
		m = o_map(&kv[i], 1);
	}
	CHECK(json_append_msgpack(b, &m, JSON_LENIENT, "event", err, sizeof(err)) == 0);
	CHECK(evbuffer_get_length(b) < 4096);
	evbuffer_free(b);
	/* One level of container key is still readable JSON text. */
	kv[1].key = o_map(&kv[0], 1);
	m = o_map(&kv[1], 1);
	CHECK_STR(lenient(&m), "{\"{\\\"\\\\\\\"q\\\\\\\"\\\":0}\":1}");
	/* Two levels: the inner one is its msgpack bytes in base64. */
	kv[2].key = o_map(&kv[1], 1);
	m = o_map(&kv[2], 1);
	CHECK_CONTAINS(lenient(&m), "$msgpack");
}

static void test_timestamps(void)
{
	/* 1795576098 = 2026-11-25T03:08:18Z = 0x6B065122 */
	static const char ts32[] = "\x6b\x06\x51\x22";
	/* timestamp 64: nsec 123456789 << 34 | sec */
	char ts64[8], ts96[12], et[8];
	uint64_t v = ((uint64_t)123456789 << 34) | 1795576098u;
	msgpack_object o;

	for (int i = 0; i < 8; i++)
		ts64[i] = (char)(v >> (56 - 8 * i));
	o = o_ext(-1, ts32, 4);
	CHECK_STR(strict(&o), "\"2026-11-25T03:08:18Z\"");
	o = o_ext(-1, ts64, 8);
	CHECK_STR(strict(&o), "\"2026-11-25T03:08:18.123456789Z\"");
	/* timestamp 96: be32 nsec = 5e8, be64 sec = -1 */
	memcpy(ts96, "\x1d\xcd\x65\x00\xff\xff\xff\xff\xff\xff\xff\xff", 12);
	o = o_ext(-1, ts96, 12);
	CHECK_STR(strict(&o), "\"1969-12-31T23:59:59.500Z\"");
	/* EventTime: be32 sec, be32 nsec = 123456000 */
	memcpy(et, "\x6b\x06\x51\x22\x07\x5b\xca\x00", 8);
	o = o_ext(0, et, 8);
	CHECK_STR(strict(&o), "\"2026-11-25T03:08:18.123456Z\"");
	CHECK_STR(lenient(&o), "\"2026-11-25T03:08:18.123456Z\"");
	o = o_ext(0, et, 5);
	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: EventTime (ext 0) must have 8 bytes, got 5");
	CHECK_STR(lenient(&o), "{\"$ext\":0,\"$base64\":\"awZRIgc=\"}");
	o = o_ext(-1, et, 3);
	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: malformed msgpack timestamp (ext -1, 3 bytes)");
	/* year 10000 in a timestamp 96 */
	memcpy(ts96, "\0\0\0\0\0\0\0\x3a\xff\xf4\x41\x80", 12);
	o = o_ext(-1, ts96, 12);
	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: msgpack timestamp of 253402300800 epoch seconds is outside "
		  "years 1..9999");
	o = o_ext(5, "ab", 2);
	CHECK(strict(&o) == NULL);
	CHECK_STR(errbuf, "mg_meta: ext type 5 has no JSON form");
	CHECK_STR(lenient(&o), "{\"$ext\":5,\"$base64\":\"YWI=\"}");
	o = o_ext(-7, "", 0);
	CHECK_STR(lenient(&o), "{\"$ext\":-7,\"$base64\":\"\"}");
}

/* D nested one-element arrays around 1. */
static msgpack_object nest(msgpack_object *cells, int d)
{
	cells[d] = o_uint(1);
	for (int i = d - 1; i >= 0; i--)
		cells[i] = o_array(&cells[i + 1], 1);
	return cells[0];
}

static void test_depth(void)
{
	msgpack_object cells[JSON_MAX_DEPTH + 2];
	msgpack_object o = nest(cells, JSON_MAX_DEPTH);
	const char *s = strict(&o);

	CHECK(s != NULL);
	CHECK(s && strlen(s) == 2 * JSON_MAX_DEPTH + 1);
	o = nest(cells, JSON_MAX_DEPTH + 1);
	CHECK(strict(&o) == NULL);
	CHECK_CONTAINS(errbuf, "nested deeper than 32 levels");
	CHECK_CONTAINS(errbuf, "mg_meta[0][0][0]");
	s = lenient(&o);
	CHECK(s != NULL);
	CHECK_CONTAINS(s, "[[\"(nested too deep)\"]]");
	CHECK(s && strncmp(s, "[[[", 3) == 0);
}

static const char *b64(const char *s)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;

	if (!b || json_append_base64(b, (const unsigned char *)s, strlen(s)) != 0)
		abort();
	n = evbuffer_get_length(b);
	evbuffer_remove(b, outbuf, n);
	outbuf[n] = '\0';
	evbuffer_free(b);
	return outbuf;
}

static void test_base64(void)
{
	CHECK_STR(b64(""), "");
	CHECK_STR(b64("f"), "Zg==");
	CHECK_STR(b64("fo"), "Zm8=");
	CHECK_STR(b64("foo"), "Zm9v");
	CHECK_STR(b64("foob"), "Zm9vYg==");
	CHECK_STR(b64("fooba"), "Zm9vYmE=");
	CHECK_STR(b64("foobar"), "Zm9vYmFy");
	CHECK_STR(b64("\xfb\xff"), "+/8=");
}

static void test_append_string(void)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;

	if (!b)
		abort();
	CHECK(json_append_string(b, "ok\xff\"\xe2\x82", 6) == 0);
	CHECK(json_append_string(b, "\xc3\xa9\n", 3) == 0);
	n = evbuffer_get_length(b);
	evbuffer_remove(b, outbuf, n);
	outbuf[n] = '\0';
	CHECK_STR(outbuf, "\"ok\\ufffd\\\"\\ufffd\\ufffd\"\"\xc3\xa9\\n\"");
	evbuffer_free(b);
}

int main(void)
{
	test_scalars();
	test_nonfinite();
	test_escaping();
	test_utf8_table();
	test_invalid_utf8();
	test_nul();
	test_containers_and_paths();
	test_keys();
	test_empty_strings_from_msgpack_c();
	test_nested_container_keys();
	test_timestamps();
	test_depth();
	test_base64();
	test_append_string();
	return unit_done("test_json");
}
