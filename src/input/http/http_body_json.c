/*
 * http_body_json.c: JSON and NDJSON bodies -> one msgpack map per element,
 * through yajl's callbacks, with no document tree.
 *
 * yajl was chosen by measurement (tests/bench/json_libs.c: an 8 MiB array
 * of 545-byte events to one msgpack map each, best of 5 on 2 cores): yajl
 * 2.1.0 callbacks into msgpack_packer 180 MB/s in 9.5 MB of RSS (the body
 * itself); json-c 0.16 parse-then-walk 41-57 MB/s, 79 MB; jansson 2.14
 * 28-39 MB/s, 65 MB. It also stays out of the json_* names json.c owns.
 * This whole module, with its checks and each event unpacked to a
 * msgpack_object, ran the same body at 100-120 MB/s (180-220 k events/s)
 * on the same machine under load (BENCH_HTTP_BODY in that file).
 *
 * Each element is packed into one buffer as its callbacks arrive. msgpack
 * wants a container's count before its items, so every map and array is
 * written with a 5-byte map32/array32 header whose count is patched when
 * the container closes (valid msgpack, a few bytes longer than the
 * shortest form; max_event_bytes counts them). The finished element is
 * unpacked into a zone that is cleared for the next one, and handed out.
 *
 * What yajl does not check, we do: strings go through json_utf8_valid (no
 * overlong forms, no surrogates), and a string written with \u escapes has
 * its escapes checked for lone UTF-16 surrogates, which yajl would turn
 * into "?" or a wrong character. Those, numbers out of range and events
 * over max_event_bytes reject their element only; the parse goes on and
 * skips the rest of it. Nesting deeper than HTTP_BODY_MAX_DEPTH stops the
 * parse (yajl's own stack then stays that small). yajl never checks its
 * own allocations, so they go through json_yajl_alloc (json_yajl.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <yajl/yajl_parse.h>

#include "json_yajl.h"
#include "http_body_private.h"
#include "json.h"
#include "log.h"

#define HB_NUMBER_MAX 512   /* longest number text we convert */
#define HB_BUF_INITIAL 1024 /* event buffer at start; doubles up to max_event_bytes */

enum hb_kind {
	HB_SCALAR = 0,
	HB_MAP,
	HB_ARRAY,
	HB_KIND_COUNT /* number of kinds; not a kind */
};

struct hb_json {
	yajl_handle h;
	const char *body;
	size_t len;
	bool ndjson;
	const struct http_body_cb *cb;
	struct http_body_error *err;
	enum http_body_status status;  /* why a callback cancelled the parse */
	size_t max_event_bytes;
	int depth;                     /* containers open, from the root */
	int base;                      /* depth of the elements: 1 inside a root array */
	uint32_t index;                /* current element */
	bool notmap;                   /* current element is not an object */
	bool skip;                     /* current element rejected: nothing more is packed */
	enum record_reason reason;     /* the rejection */
	char why[160];
	char field[64];                /* top-level key being read, for messages */
	char *buf;                     /* current element as msgpack */
	size_t used, cap;
	msgpack_packer pk;
	size_t open[HTTP_BODY_MAX_DEPTH];   /* header offset of each open container */
	uint32_t count[HTTP_BODY_MAX_DEPTH];/* items (map: pairs) so far */
	bool ismap[HTTP_BODY_MAX_DEPTH];
	msgpack_zone zone;
};

/* Reject the current element for REASON (the first reason stands). */
static void hb_spoil(struct hb_json *j, enum record_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void hb_spoil(struct hb_json *j, enum record_reason reason, const char *fmt, ...)
{
	va_list ap;

	if (j->skip)
		return;
	j->skip = true;
	j->reason = reason;
	va_start(ap, fmt);
	vsnprintf(j->why, sizeof(j->why), fmt, ap);
	va_end(ap);
}

/* msgpack_packer's writer: append to the event, within max_event_bytes. */
static int hb_write(void *data, const char *p, size_t n)
{
	struct hb_json *j = data;
	size_t ncap = j->cap ? j->cap : HB_BUF_INITIAL;
	char *nbuf;

	if (j->skip)
		return 0;
	if (n > j->max_event_bytes - j->used) {
		hb_spoil(j, RECORD_REASON_TOO_LONG, "event over listen.max_event_bytes (%zu bytes)",
			 j->max_event_bytes);
		return 0;
	}
	if (j->used + n > j->cap) {
		while (ncap < j->used + n)
			ncap *= 2;
		if (ncap > j->max_event_bytes)
			ncap = j->max_event_bytes;
		if (!(nbuf = realloc(j->buf, ncap))) {
			j->status = http_body_fail(j->err, HTTP_BODY_NOMEM, 0, "out of memory");
			return -1;
		}
		j->buf = nbuf;
		j->cap = ncap;
	}
	memcpy(j->buf + j->used, p, n);
	j->used += n;
	return 0;
}

/* Where the parse is, for a cancelled parse's offset. */
static size_t hb_here(const struct hb_json *j)
{
	return yajl_get_bytes_consumed(j->h);
}

static const char *hb_kind_name(enum hb_kind k, const char *scalar)
{
	return k == HB_MAP ? "object" : k == HB_ARRAY ? "array" : scalar;
}

/* Offset of the first byte that is not JSON whitespace (the root value). */
static size_t hb_first_byte(const struct hb_json *j)
{
	size_t i = 0;

	while (i < j->len && strchr(" \t\r\n", j->body[i]) && j->body[i])
		i++;
	return i;
}

/*
 * A value of kind K (a scalar named WHAT) starts. Returns 0 to pack it, 1
 * to skip it, -1 to cancel the parse. At element level it starts a new
 * element; at the root of application/json only an object or an array goes.
 */
static int hb_begin(struct hb_json *j, enum hb_kind k, const char *what)
{
	int ed = j->depth - j->base;

	if (j->depth == 0 && !j->ndjson && k == HB_ARRAY) {
		j->base = 1;
		return 1; /* the root array: its items are the elements */
	}
	if (j->depth == 0 && !j->ndjson && k == HB_SCALAR) {
		j->status = http_body_bad(j->err, j->body, j->len, hb_first_byte(j),
					  "expected an object or an array of objects");
		return -1;
	}
	if (ed == 0) {
		j->used = 0;
		j->skip = false;
		j->notmap = k != HB_MAP;
		j->field[0] = '\0';
		if (j->notmap)
			snprintf(j->why, sizeof(j->why), "expected an object, got %s",
				 hb_kind_name(k, what));
	} else if (!j->ismap[ed - 1]) {
		j->count[ed - 1]++;
	}
	return j->skip ? 1 : 0;
}

/* Hand out element J->index (packed in J->buf unless skipped). */
static int hb_finish(struct hb_json *j)
{
	const msgpack_object *value = NULL;
	msgpack_object o;
	size_t off = 0;
	int rc;

	if (!j->skip) {
		msgpack_zone_clear(&j->zone);
		switch (msgpack_unpack(j->buf, j->used, &off, &j->zone, &o)) {
		case MSGPACK_UNPACK_SUCCESS:
			value = &o;
			break;
		case MSGPACK_UNPACK_NOMEM_ERROR:
			j->status = http_body_fail(j->err, HTTP_BODY_NOMEM, 0, "out of memory");
			return -1;
		default: /* our own packing: cannot happen */
			hb_spoil(j, RECORD_REASON_BAD_FRAME, "internal: undecodable event");
		}
	}
	if (j->skip)
		rc = http_body_reject(j->cb, j->index, j->reason, j->field, NULL, "%s", j->why);
	else if (j->notmap)
		rc = http_body_reject(j->cb, j->index, RECORD_REASON_NOT_A_MAP, "", value, "%s",
				      j->why);
	else
		rc = j->cb->event(j->cb->arg, j->index, value);
	j->index++;
	if (rc < 0)
		j->status = http_body_fail(j->err, HTTP_BODY_STOPPED, hb_here(j),
					   "stopped by the caller at element %" PRIu32, j->index - 1);
	return rc < 0 ? -1 : 0;
}

/* After a scalar was packed: an element by itself is finished. 1 goes on, 0 cancels. */
static int hb_scalar_done(struct hb_json *j, int packed)
{
	if (packed != 0 && j->status != HTTP_BODY_OK)
		return 0;
	if (j->depth == j->base)
		return hb_finish(j) == 0;
	return 1;
}

/* ---- strings ---------------------------------------------------------- */

static int hb_hex4(const char *p, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') :
			     c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) :
			     c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;
		if (d > 15)
			return -1;
		*v = *v << 4 | d;
	}
	return 0;
}

/* True when the string token ending at END (after its closing quote) pairs
 * every \u surrogate escape. The lexer accepted it, so escapes are whole. */
static bool hb_escapes_paired(const char *body, size_t end)
{
	size_t start = end - 1, i, slashes;
	unsigned v, w;

	for (;;) { /* back to the opening quote: the first one not escaped */
		start--;
		if (body[start] != '"')
			continue;
		for (slashes = 0; start > slashes && body[start - 1 - slashes] == '\\'; slashes++)
			;
		if (slashes % 2 == 0)
			break;
	}
	for (i = start + 1; i < end - 1; i++) {
		if (body[i] != '\\')
			continue;
		if (body[++i] != 'u' || hb_hex4(body + i + 1, &v) < 0)
			continue;
		i += 4;
		if (v >= 0xDC00 && v <= 0xDFFF)
			return false;
		if (v < 0xD800 || v > 0xDBFF)
			continue;
		if (i + 6 >= end || body[i + 1] != '\\' || body[i + 2] != 'u' ||
		    hb_hex4(body + i + 3, &w) < 0 || w < 0xDC00 || w > 0xDFFF)
			return false;
		i += 6;
	}
	return true;
}

/* Check a string yajl handed us (a key when KEY); false rejects the element. */
static bool hb_text_ok(struct hb_json *j, const unsigned char *s, size_t n, bool key)
{
	const char *p = (const char *)s;
	const char *where = key ? "a key" : j->field[0] ? j->field : "a string";
	uintptr_t at = (uintptr_t)p, body = (uintptr_t)j->body;
	bool escaped = at < body || at - body >= j->len; /* in yajl's decode buffer */

	if (escaped && !hb_escapes_paired(j->body, hb_here(j))) {
		hb_spoil(j, RECORD_REASON_BAD_UTF8, "%s: unpaired UTF-16 surrogate escape", where);
		return false;
	}
	if (!json_utf8_valid(p, n)) {
		hb_spoil(j, RECORD_REASON_BAD_UTF8, "%s: not valid UTF-8", where);
		return false;
	}
	return true;
}

static int hb_string(void *ctx, const unsigned char *s, size_t n)
{
	struct hb_json *j = ctx;
	int r = hb_begin(j, HB_SCALAR, "string");

	if (r)
		return r > 0 ? hb_scalar_done(j, 0) : 0;
	if (!hb_text_ok(j, s, n, false))
		return hb_scalar_done(j, 0);
	return hb_scalar_done(j, msgpack_pack_str_with_body(&j->pk, s, n));
}

static int hb_key(void *ctx, const unsigned char *s, size_t len)
{
	struct hb_json *j = ctx;
	int ed = j->depth - j->base;
	size_t n = len < sizeof(j->field) - 1 ? len : sizeof(j->field) - 1;

	j->count[ed - 1]++;
	if (j->skip || !hb_text_ok(j, s, len, true))
		return 1;
	if (ed == 1) { /* for messages; memcpy, as every key passes here */
		memcpy(j->field, s, n);
		j->field[n] = '\0';
	}
	return msgpack_pack_str_with_body(&j->pk, s, len) == 0 || j->status == HTTP_BODY_OK;
}

/* ---- numbers and constants -------------------------------------------- */

/* Pack the JSON number S/N: an integer as int (64-bit), else float64. */
static int hb_pack_number(struct hb_json *j, const char *s, size_t n)
{
	char text[HB_NUMBER_MAX + 1], *end;
	bool integer = !memchr(s, '.', n) && !memchr(s, 'e', n) && !memchr(s, 'E', n);
	double d;

	if (n > HB_NUMBER_MAX) {
		hb_spoil(j, RECORD_REASON_OUT_OF_RANGE, "%s: number longer than %d characters",
			 j->field, HB_NUMBER_MAX);
		return 0;
	}
	memcpy(text, s, n);
	text[n] = '\0';
	errno = 0;
	if (integer && text[0] == '-') {
		long long v = strtoll(text, &end, 10);
		if (errno == 0)
			return msgpack_pack_int64(&j->pk, v);
	} else if (integer) {
		unsigned long long v = strtoull(text, &end, 10);
		if (errno == 0)
			return msgpack_pack_uint64(&j->pk, v);
	} else {
		d = strtod(text, &end);
		if (isfinite(d))
			return msgpack_pack_double(&j->pk, d);
	}
	hb_spoil(j, RECORD_REASON_OUT_OF_RANGE, "%s%s%.40s is out of range for a 64-bit %s",
		 j->field, j->field[0] ? ": " : "", text, integer ? "integer" : "float");
	return 0;
}

static int hb_number(void *ctx, const char *s, size_t n)
{
	struct hb_json *j = ctx;
	int r = hb_begin(j, HB_SCALAR, "number");

	if (r)
		return r > 0 ? hb_scalar_done(j, 0) : 0;
	return hb_scalar_done(j, hb_pack_number(j, s, n));
}

static int hb_null(void *ctx)
{
	struct hb_json *j = ctx;
	int r = hb_begin(j, HB_SCALAR, "null");

	if (r)
		return r > 0 ? hb_scalar_done(j, 0) : 0;
	return hb_scalar_done(j, msgpack_pack_nil(&j->pk));
}

static int hb_boolean(void *ctx, int b)
{
	struct hb_json *j = ctx;
	int r = hb_begin(j, HB_SCALAR, "boolean");

	if (r)
		return r > 0 ? hb_scalar_done(j, 0) : 0;
	return hb_scalar_done(j, b ? msgpack_pack_true(&j->pk) : msgpack_pack_false(&j->pk));
}

/* ---- containers ------------------------------------------------------- */

static int hb_open(struct hb_json *j, enum hb_kind k)
{
	static const char head[HB_KIND_COUNT][5] = { { 0 }, { (char)0xdf }, { (char)0xdd } };
	int r, ed;

	char why[64];

	if (j->depth - j->base >= HTTP_BODY_MAX_DEPTH) {
		snprintf(why, sizeof(why), "nested deeper than %d levels in one event",
			 HTTP_BODY_MAX_DEPTH);
		j->status = http_body_bad(j->err, j->body, j->len, hb_here(j) - 1, why);
		return 0;
	}
	r = hb_begin(j, k, NULL);
	if (r < 0)
		return 0;
	ed = j->depth++ - j->base;
	if (ed < 0)
		return 1; /* the root array */
	j->open[ed] = j->used;
	j->count[ed] = 0;
	j->ismap[ed] = k == HB_MAP;
	if (r == 0 && hb_write(j, head[k], sizeof(head[k])) < 0)
		return 0;
	return 1;
}

static int hb_close(void *ctx)
{
	struct hb_json *j = ctx;
	int ed = --j->depth - j->base;
	unsigned char *h;
	uint32_t n;

	if (ed < 0)
		return 1; /* the root array closed */
	if (!j->skip) {
		n = j->count[ed];
		h = (unsigned char *)j->buf + j->open[ed] + 1;
		h[0] = (unsigned char)(n >> 24);
		h[1] = (unsigned char)(n >> 16);
		h[2] = (unsigned char)(n >> 8);
		h[3] = (unsigned char)n;
	}
	if (ed == 0)
		return hb_finish(j) == 0;
	return 1;
}

static int hb_start_map(void *ctx)
{
	return hb_open(ctx, HB_MAP);
}

static int hb_start_array(void *ctx)
{
	return hb_open(ctx, HB_ARRAY);
}

static const yajl_callbacks hb_callbacks = {
	.yajl_null = hb_null,
	.yajl_boolean = hb_boolean,
	.yajl_number = hb_number,
	.yajl_string = hb_string,
	.yajl_start_map = hb_start_map,
	.yajl_map_key = hb_key,
	.yajl_end_map = hb_close,
	.yajl_start_array = hb_start_array,
	.yajl_end_array = hb_close,
};

/* ---- the parse -------------------------------------------------------- */

/*
 * The first byte at which the body stops being the start of valid JSON.
 * yajl's own offset is sometimes that byte and sometimes past the token
 * holding it, so the few hundred bytes before STOP (where yajl failed) are
 * fed again one at a time to a handle without callbacks, after the bytes
 * before them in one piece. If those already fail, from the start. Costs
 * at most two more parses, on the error path only.
 */
static size_t hb_locate(const struct hb_json *j, size_t stop)
{
	size_t from[2] = { stop > 256 ? stop - 256 : 0, 0 }, i;
	const unsigned char *p = (const unsigned char *)j->body;
	yajl_handle h;
	bool ok;

	for (int k = 0; k < 2; k++) {
		if (!(h = yajl_alloc(NULL, json_yajl_alloc(), NULL)))
			return stop;
		if (j->ndjson)
			yajl_config(h, yajl_allow_multiple_values, 1);
		ok = yajl_parse(h, p, from[k]) == yajl_status_ok;
		for (i = from[k]; ok && i < j->len && i <= stop; i++)
			if (yajl_parse(h, p + i, 1) != yajl_status_ok)
				break;
		yajl_free(h);
		if (ok)
			return i < j->len && i <= stop ? i : stop;
		if (from[k] == 0)
			break;
	}
	return stop;
}

/* yajl's error for a failed parse, as one line, into ERR; returns HTTP_BODY_BAD. */
static enum http_body_status hb_yajl_error(struct hb_json *j, size_t offset)
{
	unsigned char *text = yajl_get_error(j->h, 0, (const unsigned char *)j->body, j->len);
	char why[160];
	size_t n;

	snprintf(why, sizeof(why), "%s", text ? (const char *)text : "invalid JSON");
	if (text)
		yajl_free_error(j->h, text);
	n = strlen(why);
	while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == '.' || why[n - 1] == ' '))
		why[--n] = '\0';
	return http_body_bad(j->err, j->body, j->len, hb_locate(j, offset), why);
}

static enum http_body_status hb_run(struct hb_json *j)
{
	yajl_status st = yajl_parse(j->h, (const unsigned char *)j->body, j->len);

	if (st == yajl_status_client_canceled)
		return j->status != HTTP_BODY_OK ? j->status :
		       http_body_fail(j->err, HTTP_BODY_NOMEM, 0, "internal: parse cancelled");
	if (st != yajl_status_ok)
		return hb_yajl_error(j, hb_here(j));
	/* yajl_complete_parse forgets the offset: a failure there is at the end. */
	if (yajl_complete_parse(j->h) != yajl_status_ok)
		return j->status != HTTP_BODY_OK ? j->status : hb_yajl_error(j, j->len);
	return HTTP_BODY_OK;
}

/* True when the LEN bytes at P are all JSON whitespace. */
static bool hb_blank(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
			return false;
	return true;
}

enum http_body_status http_body_json(const char *body, size_t len, bool ndjson,
				     size_t max_event_bytes, const struct http_body_cb *cb,
				     struct http_body_error *err)
{
	struct hb_json j = { .body = body, .len = len, .ndjson = ndjson, .cb = cb, .err = err,
			     .max_event_bytes = max_event_bytes };
	enum http_body_status st;

	if (ndjson && hb_blank(body, len))
		return HTTP_BODY_OK; /* no lines: no events (yajl calls that premature EOF) */
	msgpack_packer_init(&j.pk, &j, hb_write);
	if (!msgpack_zone_init(&j.zone, MSGPACK_ZONE_CHUNK_SIZE))
		return http_body_fail(err, HTTP_BODY_NOMEM, 0, "out of memory");
	j.h = yajl_alloc(&hb_callbacks, json_yajl_alloc(), &j);
	if (!j.h || (ndjson && !yajl_config(j.h, yajl_allow_multiple_values, 1))) {
		st = http_body_fail(err, HTTP_BODY_NOMEM, 0, "out of memory");
	} else {
		st = hb_run(&j);
	}
	if (j.h)
		yajl_free(j.h);
	msgpack_zone_destroy(&j.zone);
	free(j.buf);
	return st;
}
