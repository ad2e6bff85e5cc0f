/*
 * record.c: one decoded event (a msgpack map) -> one row of its table.
 *
 * The event's mg_record_type (or its tag) picks the table (table.h); that
 * table's description gives the columns. Owns the column lookup, every validation rule and its
 * message, which entries go into mg_meta in which order, and the assembly
 * of the record. The other files of the module each own one leaf
 * (record_private.h is all they share): record_meta.c writes mg_meta's JSON
 * text and words why an entry cannot be stored there; record_time.c
 * parses and formats timestamps and words why a time is refused;
 * record_id.c makes ids and the id hash.
 *
 * Shaped for the loop thread's hot path. One pass over the map's keys finds
 * each key's column through a small hash table and converts its value where
 * it lies: TEXT values stay pointers into the msgpack zone, INT and
 * TIMESTAMPTZ values are formatted into a stack buffer; keys that name no
 * column are only counted. Only when the event has something for mg_meta
 * (its meta map, keys that are no column, Fluent Bit metadata) is JSON
 * built, entry by entry, by record_meta.c in a per-thread text buffer.
 * Then the sizes are known and the record is one malloc: header plus every
 * value, NUL-terminated, copied once. The per-thread buffer grows to the
 * largest mg_meta seen and is reused, so a steady stream allocates nothing
 * else.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <event2/buffer.h>
#include <msgpack.h>

#include "json.h"
#include "record.h"
#include "record_private.h"

#define REC_NUM_MAX 40                     /* formatted INT/TIMESTAMPTZ text */
#define REC_HASH_SLOTS 128                 /* column lookup table; > 3x the columns */
#define REC_NAME_MAX 24                    /* longest bare column name ("shopify_customer_id":
					      19); test_record finds every column by its name */
#define REC_JSON_MAX 4                     /* JSONB columns besides mg_meta in one table */

static const char *const record_reason_labels[RECORD_REASON_COUNT] = {
	[RECORD_REASON_NOT_A_MAP] = "not_a_map",
	[RECORD_REASON_BAD_KEY] = "bad_key",
	[RECORD_REASON_BAD_TYPE] = "bad_type",
	[RECORD_REASON_BAD_UTF8] = "bad_utf8",
	[RECORD_REASON_NUL_BYTE] = "nul_byte",
	[RECORD_REASON_OUT_OF_RANGE] = "out_of_range",
	[RECORD_REASON_TOO_LONG] = "too_long",
	[RECORD_REASON_BAD_TIMESTAMP] = "bad_timestamp",
	[RECORD_REASON_BAD_META] = "bad_meta",
	[RECORD_REASON_MISSING_TYPE] = "missing_record_type",
	[RECORD_REASON_UNKNOWN_TYPE] = "unknown_record_type",
	[RECORD_REASON_NOT_AN_EVENT] = "not_an_event",
	[RECORD_REASON_BAD_ID] = "bad_id",
	[RECORD_REASON_BAD_FRAME] = "bad_frame",
	[RECORD_REASON_UNKNOWN_PASS_ID] = "unknown_pass_id",
	[RECORD_REASON_REFUSED] = "refused",
};

/* Everything record_from_map learns before it allocates. Stack only. */
struct rec_build {
	const struct record_ctx *ctx;
	const struct table *t;                    /* the event's table */
	int ti;                                   /* its index in table_list */
	struct record_error *err;
	uint64_t present;                         /* bit I: slot I has a value */
	size_t bytes;                             /* sum of len + 1 over present slots */
	const char *val[RECORD_SLOT_COUNT];       /* value bytes, when present */
	uint32_t len[RECORD_SLOT_COUNT];
	const msgpack_object *meta;               /* the event's mg_meta map, or NULL */
	uint32_t unknown;                         /* keys that name no column */
	char num[TABLE_COLS_MAX][REC_NUM_MAX];    /* INT, TIMESTAMPTZ and UUID text */
	char id[RECORD_ID_LEN + 1];               /* a generated mg_id */
	char *json[REC_JSON_MAX];                 /* JSONB columns' text (not mg_meta): malloc'd */
	int json_col[REC_JSON_MAX];               /* the column each text is for */
	int njson;
};

_Static_assert(RECORD_SLOT_COUNT <= 64, "rec_build.present has one bit per slot");

static inline bool rec_has(const struct rec_build *b, int i)
{
	return b->present >> i & 1;
}

static inline void rec_clear(struct rec_build *b, int i)
{
	if (rec_has(b, i))
		b->bytes -= (size_t)b->len[i] + 1;
	b->present &= ~(UINT64_C(1) << i);
}

/* Slot I holds N bytes at S (replacing what it held: a repeated key). */
static inline void rec_set(struct rec_build *b, int i, const char *s, size_t n)
{
	rec_clear(b, i);
	b->bytes += n + 1;
	b->present |= UINT64_C(1) << i;
	b->val[i] = s;
	b->len[i] = (uint32_t)n;
}

/* Column lookup: bare names ("prompt") hashed into open-addressed slots,
 * each holding the words rec_name_words makes of its name, so a lookup
 * compares two words and never reads the column table. */
struct rec_slot {
	uint64_t w0, w1; /* the bare name as rec_name_words loads it */
	uint8_t col1;    /* column index + 1; 0 = empty slot */
	uint8_t len;     /* length of the bare name; 0 for an empty slot */
};
static struct rec_slot rec_slots[TABLE_COUNT][REC_HASH_SLOTS];

const char *record_reason_label(enum record_reason reason)
{
	if ((unsigned)reason >= RECORD_REASON_COUNT)
		return "unknown";
	return record_reason_labels[reason];
}

void record_free(struct record *r)
{
	free(r);
}

/* ---- column lookup ---------------------------------------------------- */

/*
 * Name S of N (1..REC_NAME_MAX) bytes as two words that are equal for two
 * names of the same length up to 16 bytes exactly when the names are: the
 * first and last 8 bytes (overlapping), or 4 and 4, or for 1..3 bytes the
 * bytes themselves (longer names are compared whole after a match). Loads
 * within S only, as the key lies in the msgpack buffer.
 */
static inline void rec_name_words(const unsigned char *s, size_t n, uint64_t *w0, uint64_t *w1)
{
	uint32_t a, b;

	if (n >= 8) {
		memcpy(w0, s, 8);
		memcpy(w1, s + n - 8, 8);
	} else if (n >= 4) {
		memcpy(&a, s, 4);
		memcpy(&b, s + n - 4, 4);
		*w0 = a;
		*w1 = b;
	} else {
		*w0 = (uint64_t)s[0] | (uint64_t)s[n / 2] << 8 | (uint64_t)s[n - 1] << 16;
		*w1 = 0;
	}
}

_Static_assert(REC_HASH_SLOTS == 128, "rec_hash keeps the top 7 bits of its product");

/* Slot of a name: a multiplicative hash of its first word and its length
 * (which already tell today's names apart but for a probe or two; a
 * collision only costs a probe). */
static inline unsigned rec_hash(uint64_t w0, size_t n)
{
	return (unsigned)(((w0 ^ n) * UINT64_C(0x9e3779b97f4a7c15)) >> 57);
}

/* Fill rec_slots[] from the table descriptions before main() runs, so
 * the lookup can never disagree with a column list and needs no
 * once-check. */
__attribute__((constructor)) static void rec_slots_init(void)
{
	for (int t = 0; t < TABLE_COUNT; t++) {
		for (int i = 0; i < table_list[t]->ncols; i++) {
			const char *bare = table_list[t]->cols[i].name + 3;
			size_t n = strlen(bare);
			uint64_t w0, w1;
			unsigned h;

			rec_name_words((const unsigned char *)bare, n, &w0, &w1);
			h = rec_hash(w0, n);
			while (rec_slots[t][h].col1)
				h = (h + 1) & (REC_HASH_SLOTS - 1);
			rec_slots[t][h] = (struct rec_slot){ w0, w1, (uint8_t)(i + 1), (uint8_t)n };
		}
	}
}

/* True when S (N > 3 bytes) starts with "mg_": one masked 4-byte compare. */
static inline bool rec_has_prefix(const unsigned char *s)
{
	static const unsigned char pfx[4] = { 'm', 'g', '_', 0 }, mask[4] = { 0xff, 0xff, 0xff, 0 };
	uint32_t w, p, m;

	memcpy(&w, s, 4);
	memcpy(&p, pfx, 4); /* constants in the byte order of the load */
	memcpy(&m, mask, 4);
	return (w & m) == p;
}

/* Column index of table TI for NAME ("mg_prompt" or "prompt"), or -1: a
 * hash and, for a column, one compare. Inlined into the per-key scan. */
static inline __attribute__((always_inline))
int rec_column_lookup(int ti, const char *name, size_t len)
{
	const unsigned char *s = (const unsigned char *)name;
	uint64_t w0, w1;
	unsigned h;

	if (len > 3 && rec_has_prefix(s)) {
		s += 3;
		len -= 3;
	}
	if (len == 0 || len > REC_NAME_MAX)
		return -1;
	rec_name_words(s, len, &w0, &w1);
	for (h = rec_hash(w0, len); ; h = (h + 1) & (REC_HASH_SLOTS - 1)) {
		const struct rec_slot *sl = &rec_slots[ti][h];

		/* An empty slot has len 0, which no name here has. */
		if (sl->len == len && sl->w0 == w0 && sl->w1 == w1 &&
		    (len <= 16 || memcmp(table_list[ti]->cols[sl->col1 - 1].name + 3, s, len) == 0))
			return sl->col1 - 1;
		if (!sl->col1)
			return -1;
	}
}

int record_column_find(int table, const char *name, size_t len)
{
	if (table < 0 || table >= TABLE_COUNT)
		return -1;
	return rec_column_lookup(table, name, len);
}

/* ---- errors ----------------------------------------------------------- */

/* See record_private.h. */
void record_clean(char *dst, size_t size, const char *s, size_t n)
{
	size_t keep = n < 48 ? n : 48, i;
	bool utf8 = json_utf8_valid(s, n);

	if (keep + 4 > size)
		keep = size - 4;
	while (keep < n && keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80)
		keep--;
	for (i = 0; i < keep; i++) {
		unsigned char c = (unsigned char)s[i];

		dst[i] = c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8) ? '?' : (char)c;
	}
	if (keep < n) {
		memcpy(dst + i, "...", 3);
		i += 3;
	}
	dst[i] = '\0';
}

/* See record_private.h. */
int record_fail(struct record_error *err, enum record_reason reason, const char *field,
		const char *fmt, ...)
{
	va_list ap;

	err->reason = reason;
	snprintf(err->field, sizeof(err->field), "%s", field);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* Offset of the first byte that starts no valid UTF-8 sequence in S. */
static size_t rec_utf8_bad_offset(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t k = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;

		if (k > n - i || !json_utf8_valid(s + i, k))
			return i;
		i += k;
	}
	return n;
}

/* ---- column values ---------------------------------------------------- */

/* True when every byte of S is 0x01..0x7f: ASCII without NUL, the common
 * case, checked a word at a time with no call. Anything else takes the
 * full UTF-8 and NUL checks. */
static inline bool rec_text_plain(const char *s, size_t n)
{
	const uint64_t ones = UINT64_C(0x0101010101010101), high = ones * 0x80;
	uint64_t v, acc = 0;
	size_t i = 0;

	if (n < 8) {
		uint32_t a, b, o4 = 0x01010101u;
		unsigned bad = 0;

		if (n >= 4) { /* two overlapping words cover 4..7 bytes */
			memcpy(&a, s, 4);
			memcpy(&b, s + n - 4, 4);
			return !((a | b | ((a - o4) & ~a) | ((b - o4) & ~b)) & (o4 * 0x80));
		}
		for (; i < n; i++) {
			unsigned char c = (unsigned char)s[i];

			bad |= (c & 0x80u) | (c == 0);
		}
		return !bad;
	}
#ifdef __SSE2__
	if (n >= 16) { /* 16 bytes a step; the last 16 overlapping */
		__m128i zero = _mm_setzero_si128(), bad = zero, x;

		for (; i + 16 <= n; i += 16) {
			x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
			bad = _mm_or_si128(bad, _mm_or_si128(x, _mm_cmpeq_epi8(x, zero)));
		}
		x = _mm_loadu_si128((const __m128i *)(const void *)(s + n - 16));
		bad = _mm_or_si128(bad, _mm_or_si128(x, _mm_cmpeq_epi8(x, zero)));
		return _mm_movemask_epi8(bad) == 0; /* high bit: >= 0x80, or a NUL */
	}
#endif
	for (; i + 8 <= n; i += 8) {
		memcpy(&v, s + i, 8);
		acc |= v | ((v - ones) & ~v);
	}
	memcpy(&v, s + n - 8, 8);
	acc |= v | ((v - ones) & ~v);
	return !(acc & high);
}

/* TEXT: str or bin, valid UTF-8, no NUL, within the column's max_bytes. */
static int rec_take_text(struct rec_build *b, int col, const msgpack_object *o)
{
	const struct table_column *c = &b->t->cols[col];
	const char *s;
	uint32_t n;
	const void *nul;

	if (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN)
		return record_fail(b->err, RECORD_REASON_BAD_TYPE, c->name,
				   "%s: expected string, got %s", c->name, json_type_name(o));
	s = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
	n = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;
	if (c->max_bytes && n > c->max_bytes)
		return record_fail(b->err, RECORD_REASON_TOO_LONG, c->name,
				   "%s: %" PRIu32 " bytes, longer than the %" PRIu32 " allowed",
				   c->name, n, c->max_bytes);
	if (rec_text_plain(s, n)) {
		rec_set(b, col, s, n);
		return 0;
	}
	if (!json_utf8_valid(s, n))
		return record_fail(b->err, RECORD_REASON_BAD_UTF8, c->name,
				   "%s: not valid UTF-8 (byte %zu)", c->name,
				   rec_utf8_bad_offset(s, n));
	nul = memchr(s, 0, n);
	if (nul)
		return record_fail(b->err, RECORD_REASON_NUL_BYTE, c->name,
				   "%s: holds a NUL byte (byte %td), which PostgreSQL text cannot "
				   "store", c->name, (const char *)nul - s);
	rec_set(b, col, s, n);
	return 0;
}

/* INT: a msgpack integer within int4. */
static int rec_take_int(struct rec_build *b, int col, const msgpack_object *o)
{
	const char *name = b->t->cols[col].name;
	char *p = b->num[col] + REC_NUM_MAX;
	uint64_t mag;
	bool neg = o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 < 0;

	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && !neg)) {
		mag = o->via.u64;
		if (mag > INT32_MAX)
			return record_fail(b->err, RECORD_REASON_OUT_OF_RANGE, name,
					   "%s: %" PRIu64 " is outside the int4 range", name, mag);
	} else if (neg) {
		if (o->via.i64 < INT32_MIN)
			return record_fail(b->err, RECORD_REASON_OUT_OF_RANGE, name,
					   "%s: %" PRId64 " is outside the int4 range", name,
					   o->via.i64);
		mag = (uint64_t)0 - (uint64_t)o->via.i64;
	} else {
		return record_fail(b->err, RECORD_REASON_BAD_TYPE, name,
				   "%s: expected integer, got %s", name, json_type_name(o));
	}
	*--p = '\0';
	p = rec_decimal(p, mag);
	if (neg)
		*--p = '-';
	rec_set(b, col, p, (size_t)(b->num[col] + REC_NUM_MAX - 1 - p));
	return 0;
}

/* TIMESTAMPTZ: any form record_time.h lists; its reason when refused. */
static int rec_take_time(struct rec_build *b, int col, const msgpack_object *o)
{
	const char *name = b->t->cols[col].name;
	struct record_time t;
	char why[200];
	int rc = record_time_from_msgpack(o, &t, why, sizeof(why));

	if (rc != 0)
		return record_fail(b->err, rc == RECORD_TIME_WRONG_TYPE ? RECORD_REASON_BAD_TYPE :
				   RECORD_REASON_BAD_TIMESTAMP, name, "%s: %s", name, why);
	record_time_format(t, b->num[col]);
	rec_set(b, col, b->num[col], RECORD_TIME_LEN);
	return 0;
}

/* UUID: text of 32 hex digits, in PostgreSQL's input forms (dashes after
 * any group of four, braces around); stored in canonical form. */
static int rec_take_uuid(struct rec_build *b, int col, const msgpack_object *o)
{
	const char *name = b->t->cols[col].name;
	char *out = b->num[col], text[64];
	const char *s;
	uint32_t n, i = 0, digits = 0;

	if (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN)
		return record_fail(b->err, RECORD_REASON_BAD_TYPE, name,
				   "%s: expected a UUID string, got %s", name, json_type_name(o));
	s = o->via.str.ptr;
	n = o->via.str.size;
	if (n >= 2 && s[0] == '{' && s[n - 1] == '}') {
		i = 1;
		n--;
	}
	for (; i < n && digits < 32; i++) {
		char c = s[i];

		if (c == '-' && digits > 0 && digits % 4 == 0 && s[i - 1] != '-')
			continue;
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			break;
		*out++ = (char)(c >= 'A' && c <= 'F' ? c + 32 : c);
		if (++digits == 8 || digits == 12 || digits == 16 || digits == 20)
			*out++ = '-';
	}
	if (digits != 32 || i != n) {
		record_clean(text, sizeof(text), o->via.str.ptr, o->via.str.size);
		return record_fail(b->err, RECORD_REASON_BAD_TYPE, name,
				   "%s: \"%s\" is not a UUID", name, text);
	}
	*out = '\0';
	rec_set(b, col, b->num[col], 36);
	return 0;
}

/* JSONB other than mg_meta: any msgpack value as JSON text (json.c), kept
 * in a malloc'd buffer until the record is assembled. */
static int rec_take_json(struct rec_build *b, int col, const msgpack_object *o)
{
	const char *name = b->t->cols[col].name;
	struct evbuffer *out;
	char msg[200] = "";
	size_t n;
	char *text;

	out = evbuffer_new();
	if (!out)
		return rec_oom(b->err);
	if (json_append_msgpack(out, o, JSON_STRICT, name, msg, sizeof(msg)) != 0) {
		evbuffer_free(out);
		if (!msg[0])
			return rec_oom(b->err);
		return record_fail(b->err, RECORD_REASON_BAD_META, name, "%s", msg);
	}
	n = evbuffer_get_length(out);
	text = malloc(n + 1);
	if (!text || evbuffer_remove(out, text, n) != (int)n) {
		free(text);
		evbuffer_free(out);
		return rec_oom(b->err);
	}
	evbuffer_free(out);
	text[n] = '\0';
	for (int i = 0; i < b->njson; i++)
		if (b->json_col[i] == col) { /* the column again (key and alias): last wins */
			free(b->json[i]);
			b->json[i] = text;
			rec_set(b, col, text, n);
			return 0;
		}
	if (b->njson == REC_JSON_MAX) { /* a table with more JSONB columns than we keep */
		free(text);
		return record_fail(b->err, RECORD_REASON_BAD_META, name, "%s: too many JSON "
				   "columns", name);
	}
	b->json_col[b->njson] = col;
	b->json[b->njson++] = text;
	rec_set(b, col, text, n);
	return 0;
}

/* Value O for column COL: nil means absent; otherwise checked by type. */
static int rec_take_column(struct rec_build *b, int col, const msgpack_object *o)
{
	enum table_type type = b->t->cols[col].type;

	if (o->type == MSGPACK_OBJECT_NIL) {
		rec_clear(b, col);
		if (col == b->t->col_meta)
			b->meta = NULL;
		return 0;
	}
	/* Tests rather than a switch: TEXT, most columns, costs one compare
	 * instead of a jump table's bounds check and indirect jump. */
	if (type == TABLE_TYPE_TEXT)
		return rec_take_text(b, col, o);
	if (type == TABLE_TYPE_INT)
		return rec_take_int(b, col, o);
	if (type == TABLE_TYPE_TIMESTAMPTZ)
		return rec_take_time(b, col, o);
	if (type == TABLE_TYPE_UUID)
		return rec_take_uuid(b, col, o);
	if (col != b->t->col_meta)
		return rec_take_json(b, col, o);
	if (o->type != MSGPACK_OBJECT_MAP)
		return record_fail(b->err, RECORD_REASON_BAD_TYPE, "mg_meta",
				   "mg_meta: expected map, got %s", json_type_name(o));
	b->meta = o;
	return 0;
}

/* Key of entry I as text: str or bin (whose UTF-8 the caller checks when
 * it matters); -1 with BAD_KEY. msgpack-c gives str and bin the same
 * layout, so via.str reads both here and below. */
static int rec_key(struct rec_build *b, const msgpack_object *k, uint32_t i,
		   const char **s, uint32_t *n)
{
	if (k->type == MSGPACK_OBJECT_STR || k->type == MSGPACK_OBJECT_BIN) {
		*s = k->via.str.ptr;
		*n = k->via.str.size;
		return 0;
	}
	return record_fail(b->err, RECORD_REASON_BAD_KEY, "", "key #%" PRIu32 ": expected string, "
			   "got %s", i + 1, json_type_name(k));
}

/* First pass: every key named, every column value checked and converted. */
static int rec_scan_keys(struct rec_build *b, const msgpack_object_map *m)
{
	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object_kv *kv = &m->ptr[i];
		const char *k = NULL;
		uint32_t kn = 0;
		int col;

		if (rec_key(b, &kv->key, i, &k, &kn) != 0)
			return -1;
		col = rec_column_lookup(b->ti, k, kn);
		if (col >= 0) {
			if (rec_take_column(b, col, &kv->val) != 0)
				return -1;
			continue;
		}
		/* Only a key bound for mg_meta needs the UTF-8 check: a column
		 * name matched is ASCII. */
		if (!json_utf8_valid(k, kn))
			return record_fail(b->err, RECORD_REASON_BAD_KEY, "",
					   "key #%" PRIu32 ": not valid UTF-8 (byte %zu)", i + 1,
					   rec_utf8_bad_offset(k, kn));
		b->unknown++;
	}
	return 0;
}

/* ---- mg_meta (its JSON is written in record_meta.c) ------------------- */

/* The event's own mg_meta map, entry by entry; its keys must be text. */
static int rec_meta_map(struct rec_build *b, size_t *count)
{
	const msgpack_object_map *m = &b->meta->via.map;

	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object *k = &m->ptr[i].key;

		if (k->type != MSGPACK_OBJECT_STR && k->type != MSGPACK_OBJECT_BIN)
			return record_fail(b->err, RECORD_REASON_BAD_META, "mg_meta",
					   "mg_meta: key #%" PRIu32 ": expected string, got %s",
					   i + 1, json_type_name(k));
		if (record_meta_entry(b->err, count, k, &m->ptr[i].val, "mg_meta", "mg_meta") != 0)
			return -1;
	}
	return 0;
}

/* Top-level keys that name no column, in order; they win over mg_meta's
 * own entries of the same name (jsonb keeps the last duplicate). */
static int rec_meta_unknown(struct rec_build *b, const msgpack_object_map *m, size_t *count)
{
	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object *k = &m->ptr[i].key;

		if (rec_column_lookup(b->ti, k->via.str.ptr, k->via.str.size) >= 0)
			continue;
		if (record_meta_entry(b->err, count, k, &m->ptr[i].val, NULL, NULL) != 0)
			return -1;
	}
	return 0;
}

/*
 * Build mg_meta in the thread's text buffer: the event's meta map, then
 * unknown keys, then "fluent_metadata". No entry at all leaves the column
 * absent (the stored value, or the '{}' default, stays). Only fields of B
 * go to record_meta.c, never B itself: handed to another file, B costs
 * the column scan reloads, as the compiler must then assume that any call
 * may change it.
 */
static int rec_meta_build(struct rec_build *b, const msgpack_object_map *m)
{
	static const msgpack_object fluent_key = {
		.type = MSGPACK_OBJECT_STR,
		.via.str = { .size = 15, .ptr = "fluent_metadata" },
	};
	size_t count = 0, len;
	const char *text;

	if (b->meta && rec_meta_map(b, &count) != 0)
		return -1;
	if (b->unknown && rec_meta_unknown(b, m, &count) != 0)
		return -1;
	if (b->ctx->fluent_meta && record_meta_entry(b->err, &count, &fluent_key,
						     b->ctx->fluent_meta, NULL,
						     "fluent_metadata") != 0)
		return -1;
	if (count == 0)
		return 0;
	if (record_meta_end(b->err, &text, &len) != 0)
		return -1;
	/* Set last: the text may have moved while it grew. */
	rec_set(b, b->t->col_meta, text, len);
	return 0;
}

/* ---- record type and id (ids are made in record_id.c) ----------------- */

/* The tag's last dot-separated part ("app.generation" -> "generation"). */
static const char *rec_tag_tail(const struct record_ctx *ctx, size_t *len)
{
	const char *tail = memrchr(ctx->tag, '.', ctx->tag_len);

	tail = tail ? tail + 1 : ctx->tag;
	*len = (size_t)(ctx->tag + ctx->tag_len - tail);
	return tail;
}

/* TYPE (N bytes) names the event's table, which the scan assumed: 0, or
 * -1 with the reason (FROM_TAG: the type came from the tag). */
static int rec_type_check(struct rec_build *b, const char *type, size_t n, bool from_tag)
{
	const struct record_ctx *ctx = b->ctx;
	char text[64], tag[64];
	const char *why;

	if (table_for_type(type, n) == b->ti)
		return 0;
	record_clean(text, sizeof(text), type, n);
	why = table_refused_why(type, n);
	if (why)
		return record_fail(b->err, RECORD_REASON_NOT_AN_EVENT, "mg_record_type",
				   "mg_record_type: \"%s\" %s", text, why);
	if (!from_tag)
		return record_fail(b->err, RECORD_REASON_UNKNOWN_TYPE, "mg_record_type",
				   "mg_record_type: unknown record type \"%s\" (expected %s)",
				   text, table_types_text());
	record_clean(tag, sizeof(tag), ctx->tag, ctx->tag_len);
	return record_fail(b->err, RECORD_REASON_UNKNOWN_TYPE, "mg_record_type",
			   "mg_record_type: unknown record type \"%s\" from tag \"%s\" "
			   "(expected %s)", text, tag, table_types_text());
}

/* mg_record_type from the event, else the tag's last dot-separated part. */
static int rec_resolve_type(struct rec_build *b)
{
	const struct record_ctx *ctx = b->ctx;
	const char *tail;
	size_t n;

	if (rec_has(b, TABLE_COL_RECORD_TYPE))
		return rec_type_check(b, b->val[TABLE_COL_RECORD_TYPE],
				      b->len[TABLE_COL_RECORD_TYPE], false);
	if (!ctx->tag || ctx->tag_len == 0)
		return record_fail(b->err, RECORD_REASON_MISSING_TYPE, "mg_record_type",
				   "mg_record_type: missing, and no tag to derive it from");
	tail = rec_tag_tail(ctx, &n);
	rec_set(b, TABLE_COL_RECORD_TYPE, tail, n);
	return rec_type_check(b, tail, n, true);
}

/*
 * The event's table, before its keys are read: from the last
 * mg_record_type (or record_type) string of MAP, else from the tag. An
 * event whose type names no table is read as a mega_generations row, so
 * that its column errors are reported as before its type's.
 */
static int rec_pick_table(const msgpack_object_map *m, const struct record_ctx *ctx)
{
	const char *type = NULL;
	size_t n = 0;
	int t;

	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;

		if (k->type != MSGPACK_OBJECT_STR || (k->via.str.size != 14 && k->via.str.size != 11))
			continue;
		if (memcmp(k->via.str.ptr + k->via.str.size - 11, "record_type", 11) != 0 ||
		    (k->via.str.size == 14 && memcmp(k->via.str.ptr, "mg_", 3) != 0))
			continue;
		type = v->type == MSGPACK_OBJECT_STR ? v->via.str.ptr : NULL;
		n = type ? v->via.str.size : 0;
	}
	if (!type && ctx->tag && ctx->tag_len)
		type = rec_tag_tail(ctx, &n);
	t = type ? table_for_type(type, n) : -1;
	return t < 0 ? 0 : t;
}

/* mg_id: the event's (non-empty), else derived from the chunk, else v7. */
static int rec_resolve_id(struct rec_build *b)
{
	if (rec_has(b, TABLE_COL_ID)) {
		if (b->len[TABLE_COL_ID] > 0)
			return 0;
		return record_fail(b->err, RECORD_REASON_BAD_ID, "mg_id", "mg_id: empty string");
	}
	if (record_id_make(b->ctx, b->id) != 0)
		return record_fail(b->err, RECORD_REASON_BAD_FRAME, "mg_id",
				   "mg_id: cannot generate an id (%s)",
				   b->ctx->chunk ? "SHA-256 failed" : "no random bytes");
	rec_set(b, TABLE_COL_ID, b->id, RECORD_ID_LEN);
	return 0;
}

/* ---- assembly --------------------------------------------------------- */

/* mg_created_at when the event lacks it: forward time, else receive time. */
static void rec_default_created(struct rec_build *b)
{
	const struct record_ctx *ctx = b->ctx;
	int64_t ns = ctx->has_time ? ctx->time_ns : (int64_t)ctx->recv_ns;

	int col = b->t->col_created;

	if (rec_has(b, col))
		return;
	record_format_time(ns, b->num[col], REC_NUM_MAX);
	rec_set(b, col, b->num[col], RECORD_TIME_LEN);
}

/* TAG and PEER slots: the tag only when it is clean text. */
static void rec_slots_fill(struct rec_build *b)
{
	const struct record_ctx *ctx = b->ctx;

	if (ctx->tag && (rec_text_plain(ctx->tag, ctx->tag_len) ||
			 (json_utf8_valid(ctx->tag, ctx->tag_len) &&
			  !memchr(ctx->tag, 0, ctx->tag_len))))
		rec_set(b, RECORD_SLOT_TAG, ctx->tag, ctx->tag_len);
	if (ctx->peer)
		rec_set(b, RECORD_SLOT_PEER, ctx->peer, strlen(ctx->peer));
}

/* One malloc: header, then every present value NUL-terminated. */
static int rec_assemble(struct rec_build *b, struct record **out)
{
	size_t total = RECORD_HEADER_SIZE + b->bytes, pos = 0;
	struct record *r;
	uint64_t m;

	if (total > UINT32_MAX)
		return record_fail(b->err, RECORD_REASON_TOO_LONG, "",
				   "event too large for a record");
	r = malloc(total);
	if (!r)
		return rec_oom(b->err);
	memset(r->off, 0, sizeof(r->off));
	memset(r->len, 0xff, sizeof(r->len)); /* RECORD_ABSENT */
	for (m = b->present; m; m &= m - 1) {
		int i = __builtin_ctzll(m);

		r->off[i] = (uint32_t)pos;
		r->len[i] = b->len[i];
		rec_copy(r->data + pos, b->val[i], b->len[i]);
		r->data[pos + b->len[i]] = '\0';
		pos += (size_t)b->len[i] + 1;
	}
	r->ack = NULL;
	r->recv_ns = b->ctx->recv_ns;
	r->size = (uint32_t)total;
	r->id_hash = record_id_hash(b->val[TABLE_COL_ID], b->len[TABLE_COL_ID]);
	r->table = (uint32_t)b->ti;
	*out = r;
	return 0;
}

/*
 * Validate MAP (with what CTX knows) and build *OUT, or fill ERR. Order of
 * checks: keys and column values (in key order), record type, mg_id,
 * mg_meta. Any thread; uses only the calling thread's scratch.
 */
int record_from_map(const msgpack_object *map, const struct record_ctx *ctx,
		    struct record **out, struct record_error *err)
{
	static const struct record_ctx no_ctx;
	struct record_error spare;
	struct rec_build b;
	int rc;

	if (!err)
		err = &spare;
	*out = NULL;
	err->field[0] = '\0';
	err->message[0] = '\0';
	if (map->type != MSGPACK_OBJECT_MAP)
		return record_fail(err, RECORD_REASON_NOT_A_MAP, "", "event is %s, not a map",
				   json_type_name(map));
	b.ctx = ctx ? ctx : &no_ctx;
	b.ti = rec_pick_table(&map->via.map, b.ctx);
	b.t = table_list[b.ti];
	b.err = err;
	b.present = 0;
	b.bytes = 0;
	b.meta = NULL;
	b.unknown = 0;
	b.njson = 0;
	if (rec_scan_keys(&b, &map->via.map) != 0 || rec_resolve_type(&b) != 0 ||
	    rec_resolve_id(&b) != 0) {
		rc = -1;
	} else if (b.meta || b.unknown || b.ctx->fluent_meta) {
		rc = rec_meta_build(&b, &map->via.map);
		if (rc == 0) {
			rec_default_created(&b);
			rec_slots_fill(&b);
			rc = rec_assemble(&b, out);
		}
		record_meta_trim();
	} else {
		rec_default_created(&b);
		rec_slots_fill(&b);
		rc = rec_assemble(&b, out);
	}
	while (b.njson > 0)
		free(b.json[--b.njson]);
	return rc;
}
