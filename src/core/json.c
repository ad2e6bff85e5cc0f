/*
 * json.c: msgpack values -> JSON text, for mg_meta (jsonb) and the dead-letter file.
 *
 * One recursive walk serves both modes; the mode only decides what happens to
 * a value JSON (or jsonb) cannot hold: STRICT stops with a message naming
 * the value's path ("mg_meta.list[3]"), LENIENT writes a stand-in and goes
 * on. The path is not built while walking: the walk keeps a stack of (key,
 * index) steps and turns it into text only when it has to report an error,
 * so the common, valid case costs no formatting. Strings take one scanning
 * pass (UTF-8 check, NUL check and escaped length, eight ASCII bytes at a
 * time) and one write into space reserved in the evbuffer.
 *
 * Message wording other modules rely on: a NUL in a STRICT string always
 * says "NUL byte", and allocation failure is exactly "out of memory".
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "json.h"
#include "record_time.h"

#define SWAR_ONES UINT64_C(0x0101010101010101)
#define SWAR_HIGH UINT64_C(0x8080808080808080)

/* One step down from the root: a map entry (KEY set) or an array element. */
struct json_step {
	const msgpack_object *key; /* the entry's key, NULL for an array element */
	uint32_t index;            /* array index, or the entry's position in its map */
};

/* State of one json_append_msgpack call. */
struct json_walk {
	struct evbuffer *out;
	enum json_mode mode;
	const char *root;          /* caller's name for the value ("mg_meta"), may be NULL */
	char *err;                 /* caller's message buffer, may be NULL */
	size_t errlen;
	unsigned depth;            /* containers currently open */
	unsigned key_depth;        /* LENIENT: keys being written as text around this walk */
	unsigned nsteps;           /* entries of steps[] in use */
	struct json_step steps[JSON_MAX_DEPTH];
};

/* Result of scanning a string before it is written. */
struct json_scan {
	size_t outlen;             /* escaped length with quotes; invalid bytes count as \ufffd */
	size_t bad;                /* offset of the first invalid UTF-8 byte, or the length */
	size_t nul;                /* offset of the first NUL byte, or the length */
};

/* Short escapes for control characters; 0 means "use \u00XX". */
static const char json_ctrl_short[32] = {
	['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r',
};

static int walk_value(struct json_walk *w, const msgpack_object *o);

/* True when every byte of the 8 in V is ASCII, >= 0x20 and not '"' or '\\'. */
static inline int swar_plain(uint64_t v)
{
	uint64_t lt20 = (v - SWAR_ONES * 0x20) & ~v;
	uint64_t q = v ^ (SWAR_ONES * '"');
	uint64_t bs = v ^ (SWAR_ONES * '\\');

	q = (q - SWAR_ONES) & ~q;
	bs = (bs - SWAR_ONES) & ~bs;
	return ((v | lt20 | q | bs) & SWAR_HIGH) == 0;
}

static inline int utf8_cont(unsigned char c)
{
	return (c & 0xc0) == 0x80;
}

/*
 * Length of the valid multi-byte UTF-8 sequence at P (P[0] >= 0x80, AVAIL
 * bytes readable), or 0 when it is invalid: a stray continuation byte, an
 * overlong form (C0, C1, E0 80..9F, F0 80..8F), a surrogate (ED A0..BF),
 * a code point above U+10FFFF (F4 90.., F5..FF) or a truncated sequence.
 */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
	unsigned c = p[0], lo = 0x80, hi = 0xbf;

	if (c < 0xc2)
		return 0;
	if (c < 0xe0)
		return avail >= 2 && utf8_cont(p[1]) ? 2 : 0;
	if (c < 0xf0) {
		if (avail < 3 || !utf8_cont(p[2]))
			return 0;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
		return p[1] >= lo && p[1] <= hi ? 3 : 0;
	}
	if (c > 0xf4 || avail < 4 || !utf8_cont(p[2]) || !utf8_cont(p[3]))
		return 0;
	if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	return p[1] >= lo && p[1] <= hi ? 4 : 0;
}

bool json_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	for (;;) {
		uint64_t v;
		size_t k;

		/* ASCII runs eight bytes at a time; a short tail by one
		 * overlapping load, or byte by byte when the text is short. */
		for (; len - i >= 8; i += 8) {
			memcpy(&v, p + i, 8);
			if (v & SWAR_HIGH)
				break;
		}
		if (len - i < 8) {
			if (len >= 8) {
				memcpy(&v, p + len - 8, 8);
				if (!(v & SWAR_HIGH))
					return true;
			} else {
				unsigned acc = 0;

				for (size_t j = i; j < len; j++)
					acc |= p[j];
				if (!(acc & 0x80))
					return true;
			}
		}
		while (i < len && p[i] < 0x80)
			i++;
		if (i == len)
			return true;
		k = utf8_seq(p + i, len - i);
		if (k == 0)
			return false;
		i += k;
	}
}

/* Extra output bytes (beyond the byte itself) that ASCII byte C needs. */
static inline size_t json_ascii_extra(unsigned char c)
{
	if (c < 0x20)
		return json_ctrl_short[c] ? 1 : 5;
	return c == '"' || c == '\\';
}

/* Scan S: escaped length, first invalid UTF-8 byte, first NUL. */
static void json_scan_text(const unsigned char *s, size_t n, struct json_scan *sc)
{
	size_t i = 0, out = 2;

	sc->bad = n;
	sc->nul = n;
	while (i < n) {
		uint64_t v;
		size_t k;

		if (n - i >= 8) {
			memcpy(&v, s + i, 8);
			if (swar_plain(v)) {
				i += 8;
				out += 8;
				continue;
			}
		}
		if (s[i] < 0x80) {
			if (s[i] == 0 && sc->nul == n)
				sc->nul = i;
			out += 1 + json_ascii_extra(s[i++]);
			continue;
		}
		k = utf8_seq(s + i, n - i);
		if (k == 0) {
			if (sc->bad == n)
				sc->bad = i;
			out += 6; /* written as \ufffd */
			i++;
		} else {
			out += k;
			i += k;
		}
	}
	sc->outlen = out;
}

/* Write S escaped, with quotes, into D (which has room for the scanned length). */
static void json_write_text(char *d, const unsigned char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0;

	*d++ = '"';
	while (i < n) {
		unsigned char c = s[i];

		if (c >= 0x80) {
			size_t k = utf8_seq(s + i, n - i);

			if (k == 0) {
				memcpy(d, "\\ufffd", 6);
				d += 6;
				i++;
			} else {
				memcpy(d, s + i, k);
				d += k;
				i += k;
			}
			continue;
		}
		i++;
		if (c >= 0x20 && c != '"' && c != '\\') {
			*d++ = (char)c;
		} else if (c >= 0x20 || json_ctrl_short[c]) {
			*d++ = '\\';
			*d++ = c >= 0x20 ? (char)c : json_ctrl_short[c];
		} else {
			memcpy(d, "\\u00", 4);
			d[4] = hex[c >> 4];
			d[5] = hex[c & 15];
			d += 6;
		}
	}
	*d = '"';
}

/* Reserve SC->outlen bytes in OUT and write S there. 0, or -1 on ENOMEM. */
static int json_put_scanned(struct evbuffer *out, const char *s, size_t n,
			    const struct json_scan *sc)
{
	struct evbuffer_iovec v;

	if (sc->outlen > (size_t)EV_SSIZE_MAX)
		return -1;
	if (evbuffer_reserve_space(out, (ev_ssize_t)sc->outlen, &v, 1) != 1)
		return -1;
	if (sc->outlen == n + 2) {
		char *d = v.iov_base;

		d[0] = '"';
		if (n > 0) /* msgpack-c gives an empty str a NULL ptr */
			memcpy(d + 1, s, n);
		d[n + 1] = '"';
	} else {
		json_write_text(v.iov_base, (const unsigned char *)s, n);
	}
	v.iov_len = sc->outlen;
	return evbuffer_commit_space(out, &v, 1);
}

/*
 * Any bytes at all become a valid JSON string: valid UTF-8 passes through,
 * each byte that is not part of a valid sequence becomes U+FFFD. Returns 0,
 * or -1 when OUT cannot grow.
 */
int json_append_string(struct evbuffer *out, const char *s, size_t len)
{
	struct json_scan sc;

	if (len > (SIZE_MAX - 2) / 6)
		return -1;
	json_scan_text((const unsigned char *)s, len, &sc);
	return json_put_scanned(out, s, len, &sc);
}

int json_append_base64(struct evbuffer *out, const unsigned char *s, size_t len)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	struct evbuffer_iovec v;
	size_t outlen, i;
	char *d;

	if (len == 0)
		return 0;
	if (len > (size_t)EV_SSIZE_MAX / 4 * 3 - 3)
		return -1;
	outlen = (len + 2) / 3 * 4;
	if (evbuffer_reserve_space(out, (ev_ssize_t)outlen, &v, 1) != 1)
		return -1;
	d = v.iov_base;
	for (i = 0; i + 3 <= len; i += 3, d += 4) {
		uint32_t t = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];

		d[0] = b64[t >> 18];
		d[1] = b64[(t >> 12) & 63];
		d[2] = b64[(t >> 6) & 63];
		d[3] = b64[t & 63];
	}
	if (i < len) {
		uint32_t t = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);

		d[0] = b64[t >> 18];
		d[1] = b64[(t >> 12) & 63];
		d[2] = i + 1 < len ? b64[(t >> 6) & 63] : '=';
		d[3] = '=';
	}
	v.iov_len = outlen;
	return evbuffer_commit_space(out, &v, 1);
}

/* Append SRC (N bytes) to BUF at *LEN, with control bytes as '?' (and high
 * bytes too when SRC is not UTF-8), truncating at SIZE. */
static void json_path_add(char *buf, size_t size, size_t *len, const char *src, size_t n)
{
	bool utf8 = json_utf8_valid(src, n);

	for (size_t i = 0; i < n && *len + 1 < size; i++) {
		unsigned char c = (unsigned char)src[i];

		buf[(*len)++] = (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) ? '?' : (char)c;
	}
	buf[*len] = '\0';
}

/* Text of the current path ("mg_meta.a.list[3]"), or "" at an unnamed root. */
static void walk_path(const struct json_walk *w, char *buf, size_t size)
{
	size_t len = 0;
	char tmp[32];

	buf[0] = '\0';
	if (w->root)
		json_path_add(buf, size, &len, w->root, strlen(w->root));
	for (unsigned i = 0; i < w->nsteps; i++) {
		const struct json_step *st = &w->steps[i];
		const msgpack_object *k = st->key;
		int n;

		if (k && (k->type == MSGPACK_OBJECT_STR || k->type == MSGPACK_OBJECT_BIN)) {
			if (len)
				json_path_add(buf, size, &len, ".", 1);
			json_path_add(buf, size, &len, k->via.str.ptr, k->via.str.size);
			continue;
		}
		if (k)
			n = snprintf(tmp, sizeof(tmp), "[key #%" PRIu32 "]", st->index + 1);
		else
			n = snprintf(tmp, sizeof(tmp), "[%" PRIu32 "]", st->index);
		if (n > 0)
			json_path_add(buf, size, &len, tmp, (size_t)n);
	}
}

/* Record "PATH: <message>" in the caller's buffer; returns -1. */
static int walk_fail(struct json_walk *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int walk_fail(struct json_walk *w, const char *fmt, ...)
{
	char path[160], msg[200];
	va_list ap;

	if (!w->err || w->errlen == 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	walk_path(w, path, sizeof(path));
	snprintf(w->err, w->errlen, "%s%s%s", path, path[0] ? ": " : "", msg);
	return -1;
}

static int walk_oom(struct json_walk *w)
{
	if (w->err && w->errlen)
		snprintf(w->err, w->errlen, "out of memory");
	return -1;
}

static int walk_put(struct json_walk *w, const char *s, size_t n)
{
	return evbuffer_add(w->out, s, n) == 0 ? 0 : walk_oom(w);
}

const char *json_type_name(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "bool";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return "float";
	case MSGPACK_OBJECT_STR: return "str";
	case MSGPACK_OBJECT_ARRAY: return "array";
	case MSGPACK_OBJECT_MAP: return "map";
	case MSGPACK_OBJECT_BIN: return "bin";
	case MSGPACK_OBJECT_EXT: return "ext";
	}
	return "unknown";
}

/* Decimal text of V (negative when NEG, magnitude V) into OUT. */
static int walk_integer(struct json_walk *w, uint64_t v, bool neg)
{
	char buf[24], *p = buf + sizeof(buf);

	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (neg)
		*--p = '-';
	return walk_put(w, p, (size_t)(buf + sizeof(buf) - p));
}

/*
 * Shortest %g text that reads back as the same value (up to 17 digits for a
 * double, 9 for a float32), so 0.1 is "0.1" and every value round-trips.
 * NaN and infinities have no JSON form: an error (STRICT) or null (LENIENT).
 */
static int walk_float(struct json_walk *w, double d, bool f32)
{
	char buf[40];
	int prec = f32 ? 6 : 15, last = f32 ? 9 : 17, n = 0;

	if (isnan(d) || isinf(d)) {
		if (w->mode == JSON_LENIENT)
			return walk_put(w, "null", 4);
		return walk_fail(w, "float %s has no JSON form",
				 isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
	}
	for (; prec <= last; prec++) {
		n = snprintf(buf, sizeof(buf), "%.*g", prec, d);
		if (f32 ? strtof(buf, NULL) == (float)d : strtod(buf, NULL) == d)
			break;
	}
	if (n <= 0 || (size_t)n >= sizeof(buf))
		return walk_fail(w, "cannot format float");
	return walk_put(w, buf, (size_t)n);
}

/* LENIENT stand-in for bytes JSON cannot carry: {"$base64":"..."}. */
static int walk_base64_obj(struct json_walk *w, const char *s, size_t n)
{
	if (walk_put(w, "{\"$base64\":\"", 12) != 0)
		return -1;
	if (json_append_base64(w->out, (const unsigned char *)s, n) != 0)
		return walk_oom(w);
	return walk_put(w, "\"}", 2);
}

/* A str or bin value: a JSON string when it is valid UTF-8. */
static int walk_text(struct json_walk *w, const char *s, size_t n, bool is_bin)
{
	struct json_scan sc;

	json_scan_text((const unsigned char *)s, n, &sc);
	if (sc.bad < n) {
		if (w->mode == JSON_LENIENT)
			return walk_base64_obj(w, s, n);
		return walk_fail(w, "%s is not valid UTF-8 (byte %zu)",
				 is_bin ? "bin value" : "string", sc.bad);
	}
	if (sc.nul < n && w->mode == JSON_STRICT)
		return walk_fail(w, "string holds a NUL byte (\\u0000), which PostgreSQL's "
				 "jsonb cannot store");
	if (json_put_scanned(w->out, s, n, &sc) != 0)
		return walk_oom(w);
	return 0;
}

/* "YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z": as many fraction digits
 * as the value needs, in groups of three (milli, micro, nano). */
static int walk_time(struct json_walk *w, int64_t sec, uint32_t nsec)
{
	char buf[48];
	struct tm tm;
	time_t t = (time_t)sec;
	size_t room;
	int n;

	if (!gmtime_r(&t, &tm))
		return walk_fail(w, "timestamp out of range");
	n = snprintf(buf, sizeof(buf), "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
		     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	room = sizeof(buf) - (size_t)n;
	if (nsec == 0)
		n += snprintf(buf + n, room, "Z\"");
	else if (nsec % 1000000 == 0)
		n += snprintf(buf + n, room, ".%03" PRIu32 "Z\"", nsec / 1000000);
	else if (nsec % 1000 == 0)
		n += snprintf(buf + n, room, ".%06" PRIu32 "Z\"", nsec / 1000);
	else
		n += snprintf(buf + n, room, ".%09" PRIu32 "Z\"", nsec);
	return walk_put(w, buf, (size_t)n);
}

/* ext -1 and 0 as RFC 3339 strings (read by the one time parser,
 * record_time.h); other ext types, and those two when malformed or out of
 * range, are refused (STRICT) or written as {"$ext": type, "$base64":
 * "..."} (LENIENT). */
static int walk_ext(struct json_walk *w, const msgpack_object *o)
{
	int type = o->via.ext.type;
	struct record_time t;
	char why[128];

	if (type == -1 || type == 0) {
		if (record_time_from_msgpack(o, &t, why, sizeof(why)) == 0)
			return walk_time(w, t.sec, t.nsec);
		if (w->mode == JSON_STRICT)
			return walk_fail(w, "%s", why);
	} else if (w->mode == JSON_STRICT) {
		return walk_fail(w, "ext type %d has no JSON form", type);
	}
	if (walk_put(w, "{\"$ext\":", 8) != 0 ||
	    walk_integer(w, (uint64_t)(type < 0 ? -type : type), type < 0) != 0)
		return -1;
	if (walk_put(w, ",\"$base64\":\"", 12) != 0)
		return -1;
	if (json_append_base64(w->out, (const unsigned char *)o->via.ext.ptr, o->via.ext.size))
		return walk_oom(w);
	return walk_put(w, "\"}", 2);
}

/*
 * LENIENT container key inside a key that is itself being written as text:
 * {"$msgpack": base64 of its msgpack bytes}, as a string. Writing it as JSON
 * text too would escape it once more per level of such keys, doubling the
 * output each time: a 700-byte event of keys nested 30 deep would take
 * gigabytes (found by fuzz_proto). Base64 keeps the output linear.
 */
static int walk_key_packed(struct json_walk *w, const msgpack_object *key)
{
	struct evbuffer *tmp = evbuffer_new();
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int rc = -1;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (tmp && msgpack_pack_object(&pk, *key) == 0 &&
	    evbuffer_add(tmp, "{\"$msgpack\":\"", 13) == 0 &&
	    json_append_base64(tmp, (const unsigned char *)sb.data, sb.size) == 0 &&
	    evbuffer_add(tmp, "\"}", 2) == 0) {
		size_t n = evbuffer_get_length(tmp);
		unsigned char *p = evbuffer_pullup(tmp, -1);

		rc = p && json_append_string(w->out, (const char *)p, n) == 0 ? 0 : -1;
	}
	msgpack_sbuffer_destroy(&sb);
	if (tmp)
		evbuffer_free(tmp);
	return rc == 0 ? 0 : walk_oom(w);
}

/* LENIENT key that is not a UTF-8 string: its JSON text, as a string. */
static int walk_key_as_text(struct json_walk *w, const msgpack_object *key)
{
	struct evbuffer *tmp = evbuffer_new();
	struct json_walk *sub;
	int rc = -1;

	if (!tmp)
		return walk_oom(w);
	sub = malloc(sizeof(*sub));
	if (sub) {
		*sub = *w;
		sub->out = tmp;
		sub->key_depth++;
		rc = walk_value(sub, key);
	}
	if (rc == 0) {
		size_t n = evbuffer_get_length(tmp);
		unsigned char *p = evbuffer_pullup(tmp, -1);

		rc = p && json_append_string(w->out, (const char *)p, n) == 0 ? 0 : -1;
	}
	free(sub);
	evbuffer_free(tmp);
	return rc == 0 ? 0 : walk_oom(w);
}

/* A map key: str, or bin that is UTF-8. Path already points at the entry. */
static int walk_key(struct json_walk *w, const msgpack_object *key, uint32_t i)
{
	bool is_bin = key->type == MSGPACK_OBJECT_BIN;

	if (key->type == MSGPACK_OBJECT_STR || is_bin) {
		/* STRICT: walk_text refuses bad bytes itself, naming this key. */
		if (w->mode == JSON_STRICT || json_utf8_valid(key->via.str.ptr, key->via.str.size))
			return walk_text(w, key->via.str.ptr, key->via.str.size, is_bin);
	}
	if (w->mode == JSON_LENIENT && w->key_depth > 0 &&
	    (key->type == MSGPACK_OBJECT_MAP || key->type == MSGPACK_OBJECT_ARRAY))
		return walk_key_packed(w, key);
	if (w->mode == JSON_LENIENT)
		return walk_key_as_text(w, key);
	w->nsteps--; /* name the map, not the entry, for a key that is no name */
	walk_fail(w, "key #%" PRIu32 ": expected string, got %s", i + 1, json_type_name(key));
	w->nsteps++;
	return -1;
}

static int walk_map(struct json_walk *w, const msgpack_object *o)
{
	const msgpack_object_map *m = &o->via.map;

	if (walk_put(w, "{", 1) != 0)
		return -1;
	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object_kv *kv = &m->ptr[i];
		int rc;

		if (i && walk_put(w, ",", 1) != 0)
			return -1;
		w->steps[w->nsteps++] = (struct json_step){ &kv->key, i };
		rc = walk_key(w, &kv->key, i);
		if (rc == 0)
			rc = walk_put(w, ":", 1);
		if (rc == 0)
			rc = walk_value(w, &kv->val);
		w->nsteps--;
		if (rc != 0)
			return -1;
	}
	return walk_put(w, "}", 1);
}

static int walk_array(struct json_walk *w, const msgpack_object *o)
{
	const msgpack_object_array *a = &o->via.array;

	if (walk_put(w, "[", 1) != 0)
		return -1;
	for (uint32_t i = 0; i < a->size; i++) {
		int rc;

		if (i && walk_put(w, ",", 1) != 0)
			return -1;
		w->steps[w->nsteps++] = (struct json_step){ NULL, i };
		rc = walk_value(w, &a->ptr[i]);
		w->nsteps--;
		if (rc != 0)
			return -1;
	}
	return walk_put(w, "]", 1);
}

/* A map or array, one level deeper; refused past JSON_MAX_DEPTH. */
static int walk_container(struct json_walk *w, const msgpack_object *o)
{
	int rc;

	if (w->depth >= JSON_MAX_DEPTH) {
		if (w->mode == JSON_LENIENT)
			return walk_put(w, "\"(nested too deep)\"", 19);
		return walk_fail(w, "nested deeper than %d levels", JSON_MAX_DEPTH);
	}
	w->depth++;
	rc = o->type == MSGPACK_OBJECT_MAP ? walk_map(w, o) : walk_array(w, o);
	w->depth--;
	return rc;
}

static int walk_value(struct json_walk *w, const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return walk_put(w, "null", 4);
	case MSGPACK_OBJECT_BOOLEAN:
		return o->via.boolean ? walk_put(w, "true", 4) : walk_put(w, "false", 5);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return walk_integer(w, o->via.u64, false);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		if (o->via.i64 >= 0)
			return walk_integer(w, (uint64_t)o->via.i64, false);
		return walk_integer(w, (uint64_t)0 - (uint64_t)o->via.i64, true);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return walk_float(w, o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32);
	case MSGPACK_OBJECT_STR:
		return walk_text(w, o->via.str.ptr, o->via.str.size, false);
	case MSGPACK_OBJECT_BIN:
		return walk_text(w, o->via.bin.ptr, o->via.bin.size, true);
	case MSGPACK_OBJECT_EXT:
		return walk_ext(w, o);
	case MSGPACK_OBJECT_ARRAY:
	case MSGPACK_OBJECT_MAP:
		return walk_container(w, o);
	}
	if (w->mode == JSON_LENIENT)
		return walk_put(w, "null", 4);
	return walk_fail(w, "unknown msgpack type %d", (int)o->type);
}

/*
 * Append O as JSON to OUT. On -1 (STRICT refusal, or out of memory in either
 * mode) ERR holds the reason and OUT may hold a partial value: the caller
 * discards it. Any thread; nothing is shared.
 */
int json_append_msgpack(struct evbuffer *out, const msgpack_object *o,
			enum json_mode mode, const char *path,
			char *err, size_t errlen)
{
	struct json_walk w;

	w.out = out;
	w.mode = mode;
	w.root = path;
	w.err = err;
	w.errlen = errlen;
	w.depth = 0;
	w.key_depth = 0;
	w.nsteps = 0;
	if (err && errlen)
		err[0] = '\0';
	return walk_value(&w, o);
}
