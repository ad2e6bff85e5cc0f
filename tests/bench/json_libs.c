/*
 * json_libs.c: which JSON library turns an HTTP body into msgpack fastest.
 * Not built by make; the figures are in src/input/http/http_body.c's header.
 *
 *   for l in YAJL:yajl JSONC:json-c JANSSON:jansson; do cc -O2 -DBENCH_${l%:*} \
 *     -o /tmp/jl tests/bench/json_libs.c $(pkg-config --cflags --libs ${l#*:}) -lmsgpackc \
 *     && /tmp/jl [MiB] [rounds]; done
 *   cc -O2 -DBENCH_HTTP_BODY -Iinclude -o /tmp/jl tests/bench/json_libs.c \
 *     .dev/build/libmegaingest.a $(pkg-config --libs yajl zlib libevent libcrypto) -lmsgpackc && /tmp/jl
 *
 * Builds a JSON array of ~500-byte events (strings with escapes and UTF-8,
 * integers, floats, a nested mg_meta), then for each library converts it to
 * one msgpack map per element in a reused msgpack_sbuffer: yajl through its
 * callbacks straight into msgpack_packer (container counts patched after the
 * fact), json-c and jansson by parsing the whole body into their DOM and
 * walking it. Prints MB/s of JSON input, best of ROUNDS.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#if defined(BENCH_HTTP_BODY)
#include "../../src/input/http/http_body.h"
#define BENCH_NAME "http_body_decode (yajl, msgpack_object)"
#define BENCH_RUN run_http_body
#elif defined(BENCH_YAJL)
#include <yajl/yajl_parse.h>
#define BENCH_NAME "yajl 2.1.0 (callbacks -> packer)"
#define BENCH_RUN run_yajl
#elif defined(BENCH_JSONC)
#include <json-c/json.h>
#define BENCH_NAME "json-c 0.16 (DOM -> packer)"
#define BENCH_RUN run_jsonc
#else
#include <jansson.h>
#define BENCH_NAME "jansson 2.14 (DOM -> packer)"
#define BENCH_RUN run_jansson
#endif

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *make_body(size_t want, size_t *len, size_t *nevents)
{
	char *buf = malloc(want + 4096);
	size_t n = 0, i = 0;

	buf[n++] = '[';
	while (n < want) {
		n += (size_t)sprintf(buf + n, "%s{\"mg_id\":\"gen-%08zx-4b1d-9c3e-%012zx\","
			"\"mg_record_type\":\"generation\",\"mg_pass_id\":\"pass_%zu\","
			"\"mg_session_id\":\"sess-%zu\",\"mg_platform\":\"web\",\"mg_type\":\"image\","
			"\"mg_prompt\":\"a watercolour of a lighthouse at dusk, \\\"soft\\\" light, "
			"caf\xc3\xa9 terrace in the foreground \\u2014 variant %zu\","
			"\"mg_provider\":\"openai\",\"mg_model\":\"gpt-image-1\",\"mg_latency_ms\":%zu,"
			"\"mg_input_tokens\":%zu,\"mg_output_tokens\":%zu,\"mg_status\":\"succeeded\","
			"\"mg_created_at\":\"2026-12-07T01:02:03.%06zuZ\","
			"\"mg_meta\":{\"seed\":%zu,\"cfg\":7.5,\"tags\":[\"a\",\"b\"],\"ok\":true,\"x\":null}}",
			i ? "," : "", i, i * 7919, i % 1000, i, i, 300 + i % 5000, 12 + i % 90,
			1000 + i % 4000, i % 1000000, i * 31);
		i++;
	}
	buf[n++] = ']';
	buf[n] = 0;
	*len = n;
	*nevents = i;
	return buf;
}

#if defined(BENCH_HTTP_BODY)
/* ---- the module itself: every event handed out as a msgpack_object ----- */

static int count_event(void *arg, uint32_t index, const msgpack_object *map)
{
	(void)index;
	*(size_t *)arg += map->type == MSGPACK_OBJECT_MAP;
	return 0;
}

static int count_reject(void *arg, const struct http_body_reject *r)
{
	(void)arg;
	(void)r;
	return -1;
}

static size_t run_http_body(const char *body, size_t len)
{
	size_t n = 0;
	struct http_body_cb cb = { count_event, count_reject, &n };
	struct http_body_error err;

	if (http_body_decode("application/json", NULL, body, len, 1 << 20, &cb, &err) != HTTP_BODY_OK) {
		fprintf(stderr, "http_body_decode: %s\n", err.message);
		exit(1);
	}
	return n;
}

#elif defined(BENCH_YAJL)
/* ---- yajl: callbacks straight into msgpack_packer ---------------------- */

struct ys {
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t open[64];   /* offset of each open container's header */
	uint32_t count[64];
	int depth;
	size_t events;
};

static void ys_item(struct ys *s)
{
	if (s->depth > 1)
		s->count[s->depth - 1]++;
}

static int ys_null(void *c) { struct ys *s = c; ys_item(s); return msgpack_pack_nil(&s->pk) == 0; }
static int ys_bool(void *c, int b)
{
	struct ys *s = c;
	ys_item(s);
	return (b ? msgpack_pack_true(&s->pk) : msgpack_pack_false(&s->pk)) == 0;
}
static int ys_number(void *c, const char *p, size_t n)
{
	struct ys *s = c;
	char tmp[64], *end;

	ys_item(s);
	memcpy(tmp, p, n < 63 ? n : 63);
	tmp[n < 63 ? n : 63] = 0;
	if (!memchr(p, '.', n) && !memchr(p, 'e', n) && !memchr(p, 'E', n))
		return msgpack_pack_int64(&s->pk, strtoll(tmp, &end, 10)) == 0;
	return msgpack_pack_double(&s->pk, strtod(tmp, &end)) == 0;
}
static int ys_string(void *c, const unsigned char *p, size_t n)
{
	struct ys *s = c;
	ys_item(s);
	return msgpack_pack_str_with_body(&s->pk, p, n) == 0;
}
static int ys_key(void *c, const unsigned char *p, size_t n)
{
	struct ys *s = c;
	return msgpack_pack_str_with_body(&s->pk, p, n) == 0;
}
static int ys_open(void *c, int map)
{
	struct ys *s = c;
	static const char hdr[2][5] = { { (char)0xdd }, { (char)0xdf } };

	if (s->depth == 1)
		s->sb.size = 0; /* a new event */
	ys_item(s);
	s->open[s->depth] = s->sb.size;
	s->count[s->depth] = 0;
	s->depth++;
	if (s->depth > 1)
		return msgpack_sbuffer_write(&s->sb, hdr[map], 5) == 0;
	return 1;
}
static int ys_close(void *c)
{
	struct ys *s = c;
	uint32_t n;
	unsigned char *h;

	s->depth--;
	if (s->depth == 0)
		return 1;
	n = s->count[s->depth];
	h = (unsigned char *)s->sb.data + s->open[s->depth] + 1;
	h[0] = n >> 24; h[1] = n >> 16; h[2] = n >> 8; h[3] = n;
	if (s->depth == 1)
		s->events++;
	return 1;
}
static int ys_start_map(void *c) { return ys_open(c, 1); }
static int ys_start_array(void *c) { return ys_open(c, 0); }

static const yajl_callbacks ys_cb = {
	ys_null, ys_bool, NULL, NULL, ys_number, ys_string,
	ys_start_map, ys_key, ys_close, ys_start_array, ys_close
};

static size_t run_yajl(const char *body, size_t len)
{
	struct ys s;
	yajl_handle h;

	memset(&s, 0, sizeof(s));
	msgpack_sbuffer_init(&s.sb);
	msgpack_packer_init(&s.pk, &s.sb, msgpack_sbuffer_write);
	h = yajl_alloc(&ys_cb, NULL, &s);
	if (yajl_parse(h, (const unsigned char *)body, len) != yajl_status_ok ||
	    yajl_complete_parse(h) != yajl_status_ok) {
		fprintf(stderr, "yajl failed\n");
		exit(1);
	}
	yajl_free(h);
	msgpack_sbuffer_destroy(&s.sb);
	return s.events;
}

#elif defined(BENCH_JSONC)
/* ---- DOM walkers -------------------------------------------------------- */

static void pack_jc(msgpack_packer *pk, struct json_object *o)
{
	switch (json_object_get_type(o)) {
	case json_type_null: msgpack_pack_nil(pk); break;
	case json_type_boolean:
		json_object_get_boolean(o) ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
		break;
	case json_type_int: msgpack_pack_int64(pk, json_object_get_int64(o)); break;
	case json_type_double: msgpack_pack_double(pk, json_object_get_double(o)); break;
	case json_type_string:
		msgpack_pack_str_with_body(pk, json_object_get_string(o),
					   (size_t)json_object_get_string_len(o));
		break;
	case json_type_array: {
		size_t n = json_object_array_length(o);
		msgpack_pack_array(pk, n);
		for (size_t i = 0; i < n; i++)
			pack_jc(pk, json_object_array_get_idx(o, i));
		break;
	}
	case json_type_object:
		msgpack_pack_map(pk, (size_t)json_object_object_length(o));
		json_object_object_foreach(o, k, v) {
			msgpack_pack_str_with_body(pk, k, strlen(k));
			pack_jc(pk, v);
		}
		break;
	}
}

static size_t run_jsonc(const char *body, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *root = json_tokener_parse_ex(tok, body, (int)len);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n;

	if (!root) {
		fprintf(stderr, "json-c failed\n");
		exit(1);
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	n = json_object_array_length(root);
	for (size_t i = 0; i < n; i++) {
		sb.size = 0;
		pack_jc(&pk, json_object_array_get_idx(root, i));
	}
	json_object_put(root);
	json_tokener_free(tok);
	msgpack_sbuffer_destroy(&sb);
	return n;
}

#else
static void pack_ja(msgpack_packer *pk, json_t *o)
{
	const char *k;
	json_t *v;
	size_t i;

	switch (json_typeof(o)) {
	case JSON_NULL: msgpack_pack_nil(pk); break;
	case JSON_TRUE: msgpack_pack_true(pk); break;
	case JSON_FALSE: msgpack_pack_false(pk); break;
	case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(o)); break;
	case JSON_REAL: msgpack_pack_double(pk, json_real_value(o)); break;
	case JSON_STRING:
		msgpack_pack_str_with_body(pk, json_string_value(o), json_string_length(o));
		break;
	case JSON_ARRAY:
		msgpack_pack_array(pk, json_array_size(o));
		json_array_foreach(o, i, v)
			pack_ja(pk, v);
		break;
	case JSON_OBJECT:
		msgpack_pack_map(pk, json_object_size(o));
		json_object_foreach(o, k, v) {
			msgpack_pack_str_with_body(pk, k, strlen(k));
			pack_ja(pk, v);
		}
		break;
	}
}

static size_t run_jansson(const char *body, size_t len)
{
	json_error_t err;
	json_t *root = json_loadb(body, len, 0, &err);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n;

	if (!root) {
		fprintf(stderr, "jansson failed: %s\n", err.text);
		exit(1);
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	n = json_array_size(root);
	for (size_t i = 0; i < n; i++) {
		sb.size = 0;
		pack_ja(&pk, json_array_get(root, i));
	}
	json_decref(root);
	msgpack_sbuffer_destroy(&sb);
	return n;
}

#endif

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 8;
	int rounds = argc > 2 ? atoi(argv[2]) : 5;
	size_t len, nev;
	char *body = make_body(mib << 20, &len, &nev);
	double best = 1e9;

	printf("body %zu bytes, %zu events, %.0f bytes/event\n", len, nev, (double)len / nev);
	for (int r = 0; r < rounds; r++) {
		double t0 = now();
		size_t got = BENCH_RUN(body, len);
		double dt = now() - t0;

		if (got != nev) {
			fprintf(stderr, "%zu events, want %zu\n", got, nev);
			return 1;
		}
		if (dt < best)
			best = dt;
	}
	printf("%-34s %7.1f MB/s  %6.0f k events/s\n", BENCH_NAME, len / best / 1e6, nev / best / 1e3);
	free(body);
	return 0;
}
