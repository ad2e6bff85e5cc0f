/*
 * record_meta.c: mg_meta's JSON text, written one entry at a time into a
 * per-thread buffer.
 *
 * Owns that buffer, the JSON of each entry, and the message when an
 * entry cannot be stored. Simple entries (plain text keys; nil, bool,
 * integer and plain text values) are written into the buffer directly,
 * byte for byte what json.c would write; anything else goes through
 * json.c's STRICT encoder by way of a scratch evbuffer, and a refusal is
 * worded by rendering the entry again with its path. The buffer grows to
 * the largest mg_meta seen and is reused (given back past REC_META_KEEP),
 * so a steady stream allocates nothing here.
 *
 * Which entries go in, and in which order, is record.c's business, since
 * it knows the columns: it calls record_meta_entry for each, then
 * record_meta_end, copies the text into the record and calls
 * record_meta_trim. A file of its own because it is a self-contained
 * writer (a growable text and a JSON fast path that must match json.c)
 * sharing nothing with the column scan but the entries it is handed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "json.h"
#include "record.h"
#include "record_private.h"

#define REC_META_KEEP (64 * 1024) /* mg_meta text kept between events */

/* A growable text; see rec_meta. */
struct rec_text {
	char *p;
	size_t len;
	size_t cap;
};

/* Per-thread mg_meta JSON being built, and a scratch evbuffer for the
 * values json.c writes: reused, never freed (they live as long as the
 * thread, which for the loop is the process). Plain memory rather than
 * an evbuffer, because nearly every entry is a few bytes written here
 * directly, where each evbuffer_add would cost more than the entry. */
static __thread struct rec_text rec_meta;
static __thread struct evbuffer *rec_scratch;

/*
 * Why entry KEY: VAL cannot be stored, found by rendering it again with
 * its path (the fast path renders without one): sets ERR, returns -1.
 * PREFIX and FIELD as for record_meta_entry.
 */
static int rec_meta_fail(struct record_error *err, const msgpack_object *key,
			 const msgpack_object *val, const char *prefix, const char *field,
			 const char *first_msg)
{
	char path[128], msg[sizeof(err->message)], keytext[sizeof(err->field)];
	struct evbuffer *tmp;
	size_t pl = 0;
	int rc = 0;

	if (strcmp(first_msg, "out of memory") == 0)
		return rec_oom(err);
	if (prefix) {
		pl = strlen(prefix);
		memcpy(path, prefix, pl);
		path[pl++] = '.';
	}
	record_clean(path + pl, sizeof(path) - pl, key->via.str.ptr, key->via.str.size);
	snprintf(msg, sizeof(msg), "%s", first_msg);
	tmp = evbuffer_new();
	if (tmp) {
		rc = json_append_msgpack(tmp, key, JSON_STRICT, path, msg, sizeof(msg));
		if (rc == 0)
			rc = json_append_msgpack(tmp, val, JSON_STRICT, path, msg, sizeof(msg));
		evbuffer_free(tmp);
	}
	if (!field) {
		record_clean(keytext, sizeof(keytext), key->via.str.ptr, key->via.str.size);
		field = keytext;
	}
	/* NUL gets its own reason, as it does for TEXT columns. */
	return record_fail(err, strstr(msg, "NUL byte") ? RECORD_REASON_NUL_BYTE :
			   RECORD_REASON_BAD_META, field, "%s", msg);
}

/* High bit set in every byte of the 8 in V that JSON must escape or that
 * is not ASCII: below 0x20, 0x80 and up, '"' and '\\' (json.c's test). */
static inline uint64_t rec_json_flags(uint64_t v)
{
	const uint64_t ones = UINT64_C(0x0101010101010101);
	uint64_t q = v ^ (ones * '"'), bs = v ^ (ones * '\\');

	return v | ((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((bs - ones) & ~bs);
}

/* True when S can be written between quotes as it is: ASCII from 0x20
 * on, without '"' or '\\' (nearly every key and short value), so it
 * needs no escaping pass and is exactly what json.c would write. Eight
 * bytes at a time, the last eight overlapping. */
static inline bool rec_json_plain(const char *s, size_t n)
{
	uint64_t v, acc = 0;

	if (n < 8) {
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c < 0x20 || c > 0x7f || c == '"' || c == '\\')
				return false;
		}
		return true;
	}
	for (size_t i = 0; i + 8 <= n; i += 8) {
		memcpy(&v, s + i, 8);
		acc |= rec_json_flags(v);
	}
	memcpy(&v, s + n - 8, 8);
	acc |= rec_json_flags(v);
	return !(acc & UINT64_C(0x8080808080808080));
}

/* Make room for MORE bytes after the text's end; -1 when it cannot grow.
 * Never inlined: it is the rare path, and inlined it would make the
 * callers' common path save and restore registers only realloc needs. */
static __attribute__((noinline)) int rec_text_grow(struct rec_text *t, size_t more)
{
	size_t cap = t->cap ? t->cap : 256;
	char *p;

	if (more > SIZE_MAX / 4 - t->len)
		return -1;
	while (cap < t->len + more)
		cap *= 2;
	p = realloc(t->p, cap);
	if (!p)
		return -1;
	t->p = p;
	t->cap = cap;
	return 0;
}

/* Give back a text that an unusually large mg_meta grew past
 * REC_META_KEEP, so one huge event does not pin its size for good. */
static void rec_text_trim(struct rec_text *t)
{
	if (t->cap <= REC_META_KEEP)
		return;
	free(t->p);
	*t = (struct rec_text){ NULL, 0, 0 };
}

/* Room for MORE bytes after the text's end; -1 when it cannot grow. */
static inline int rec_text_reserve(struct rec_text *t, size_t more)
{
	return more <= t->cap - t->len ? 0 : rec_text_grow(t, more);
}

/* Append N bytes at S, which the caller has made room for (S may be
 * msgpack-c's NULL for an empty str: rec_copy reads nothing then). */
static inline void rec_text_put(struct rec_text *t, const char *s, size_t n)
{
	rec_copy(t->p + t->len, s, n);
	t->len += n;
}

/* "S" when S is plain (see rec_json_plain); false, with nothing written,
 * otherwise. Inlined into its two callers: it runs for every key and most
 * values of mg_meta, which are a few bytes, less work than a call's
 * register saves. */
static inline __attribute__((always_inline))
bool rec_text_quoted(struct rec_text *t, const char *s, size_t n)
{
	if (!rec_json_plain(s, n) || rec_text_reserve(t, n + 2) != 0)
		return false;
	t->p[t->len++] = '"';
	rec_text_put(t, s, n);
	t->p[t->len++] = '"';
	return true;
}

/*
 * O as JSON when it is one of the common simple values (nil, bool, an
 * integer, plain text), written as json_append_msgpack would write it;
 * false, with nothing written, for anything else (which json.c then
 * writes, checks and, if need be, refuses).
 */
static bool rec_meta_simple(struct rec_text *t, const msgpack_object *o)
{
	char num[24], *p = num + sizeof(num);
	uint64_t v;

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN: /* as for keys, via.str reads both */
		return rec_text_quoted(t, o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_NIL:
		p -= 4;
		memcpy(p, "null", 4);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		p -= o->via.boolean ? 4 : 5;
		memcpy(p, o->via.boolean ? "true" : "false", (size_t)(num + sizeof(num) - p));
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		v = o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 < 0 ?
		    (uint64_t)0 - (uint64_t)o->via.i64 : o->via.u64;
		p = rec_decimal(p, v);
		if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 < 0)
			*--p = '-';
		break;
	default:
		return false;
	}
	if (rec_text_reserve(t, (size_t)(num + sizeof(num) - p)) != 0)
		return false;
	rec_text_put(t, p, (size_t)(num + sizeof(num) - p));
	return true;
}

/* O as JSON through json.c (STRICT), appended to T by way of the scratch
 * evbuffer. 0, or -1 with json.c's message (or none: out of memory) in MSG. */
static int rec_meta_json(struct rec_text *t, const msgpack_object *o, char *msg, size_t len)
{
	struct evbuffer *out = rec_scratch;
	size_t n, left;

	if (!out && !(out = rec_scratch = evbuffer_new()))
		return -1;
	left = evbuffer_get_length(out); /* what a refused value left behind */
	if (left && evbuffer_drain(out, left) != 0)
		return -1;
	if (json_append_msgpack(out, o, JSON_STRICT, NULL, msg, len) != 0)
		return -1;
	n = evbuffer_get_length(out);
	if (rec_text_reserve(t, n) != 0 || evbuffer_remove(out, t->p + t->len, n) != (int)n)
		return -1;
	t->len += n;
	return 0;
}

/* One "key":value, after '{' (a new text) or ','; see record_private.h. */
int record_meta_entry(struct record_error *err, size_t *count, const msgpack_object *key,
		      const msgpack_object *val, const char *prefix, const char *field)
{
	struct rec_text *t = &rec_meta;
	char msg[sizeof(err->message)];
	int rc = 0;

	msg[0] = '\0';
	if (*count == 0)
		t->len = 0; /* the event's first entry: the last event's text is done with */
	if (rec_text_reserve(t, 1) != 0)
		return rec_oom(err);
	t->p[t->len++] = (*count)++ ? ',' : '{';
	if (!rec_text_quoted(t, key->via.str.ptr, key->via.str.size))
		rc = rec_meta_json(t, key, msg, sizeof(msg));
	if (rc == 0)
		rc = rec_text_reserve(t, 1);
	if (rc == 0) {
		t->p[t->len++] = ':';
		if (!rec_meta_simple(t, val))
			rc = rec_meta_json(t, val, msg, sizeof(msg));
	}
	if (rc != 0)
		return rec_meta_fail(err, key, val, prefix, field, msg[0] ? msg : "out of memory");
	return 0;
}

/* The closing '}' of an entry or more; see record_private.h. */
int record_meta_end(struct record_error *err, const char **text, size_t *len)
{
	if (rec_text_reserve(&rec_meta, 1) != 0)
		return rec_oom(err);
	rec_meta.p[rec_meta.len++] = '}';
	*text = rec_meta.p;
	*len = rec_meta.len;
	return 0;
}

void record_meta_trim(void)
{
	rec_text_trim(&rec_meta);
}
