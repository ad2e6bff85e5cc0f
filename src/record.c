/*
 * record.c: one decoded event (a msgpack map) -> one mega_generations row.
 *
 * Owns the column table, the column lookup, every validation rule and its
 * message, mg_meta and the assembly of the record. Timestamps are
 * converted and formatted in record_time.c, generated ids and the id hash
 * come from record_id.c (record_int.h is all the three share): both are
 * leaf computations that say 0 or -1, so every rejection is worded here.
 *
 * Shaped for the loop thread's hot path. One pass over the map's keys finds
 * each key's column through a small hash table and converts its value where
 * it lies: TEXT values stay pointers into the msgpack zone, INT and
 * TIMESTAMPTZ values are formatted into a stack buffer. Only when the event
 * has something for mg_meta (its meta map, keys that are no column, Fluent
 * Bit metadata) is JSON built, into a per-thread text buffer: simple
 * entries (plain text keys; nil, bool, integer and plain text values) are
 * written there directly, anything else through json.c. Then the sizes
 * are known and the record is one malloc: header plus every value,
 * NUL-terminated, copied once. The per-thread buffers grow to the largest
 * mg_meta seen and are reused, so a steady stream allocates nothing else.
 */
#include <inttypes.h>
#include <math.h>
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
#include "record_int.h"

#define REC_NUM_MAX 40                     /* formatted INT/TIMESTAMPTZ text */
#define REC_HASH_SLOTS 128                 /* column lookup table; > 3x the columns */
#define REC_META_KEEP (64 * 1024)          /* mg_meta text kept between events */
#define REC_NAME_MAX 16                    /* longest bare column name ("client_version": 14);
					      test_record finds every column by its name */

const struct record_column record_columns[RECORD_COL_COUNT] = {
	[RECORD_COL_ID]             = { "mg_id",             RECORD_TYPE_TEXT,        256 },
	[RECORD_COL_RECORD_TYPE]    = { "mg_record_type",    RECORD_TYPE_TEXT,        256 },
	[RECORD_COL_PASS_ID]        = { "mg_pass_id",        RECORD_TYPE_TEXT,        256 },
	[RECORD_COL_SESSION_ID]     = { "mg_session_id",     RECORD_TYPE_TEXT,        256 },
	[RECORD_COL_GENERATION_ID]  = { "mg_generation_id",  RECORD_TYPE_TEXT,        256 },
	[RECORD_COL_PLATFORM]       = { "mg_platform",       RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_TITLE]          = { "mg_title",          RECORD_TYPE_TEXT,        0 },
	[RECORD_COL_TYPE]           = { "mg_type",           RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_PROMPT]         = { "mg_prompt",         RECORD_TYPE_TEXT,        0 },
	[RECORD_COL_OUTPUT_URL]     = { "mg_output_url",     RECORD_TYPE_TEXT,        0 },
	[RECORD_COL_OUTPUT_KEY]     = { "mg_output_key",     RECORD_TYPE_TEXT,        0 },
	[RECORD_COL_PROVIDER]       = { "mg_provider",       RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_MODEL]          = { "mg_model",          RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_LATENCY_MS]     = { "mg_latency_ms",     RECORD_TYPE_INT,         0 },
	[RECORD_COL_INPUT_CHARS]    = { "mg_input_chars",    RECORD_TYPE_INT,         0 },
	[RECORD_COL_OUTPUT_CHARS]   = { "mg_output_chars",   RECORD_TYPE_INT,         0 },
	[RECORD_COL_INPUT_TOKENS]   = { "mg_input_tokens",   RECORD_TYPE_INT,         0 },
	[RECORD_COL_OUTPUT_TOKENS]  = { "mg_output_tokens",  RECORD_TYPE_INT,         0 },
	[RECORD_COL_CONTENT_TYPE]   = { "mg_content_type",   RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_STATUS]         = { "mg_status",         RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_ERROR]          = { "mg_error",          RECORD_TYPE_TEXT,        0 },
	[RECORD_COL_RESULT_TYPE]    = { "mg_result_type",    RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_COMMENT]        = { "mg_comment",        RECORD_TYPE_TEXT,        0 },
	[RECORD_COL_IMAGE_URL]      = { "mg_image_url",      RECORD_TYPE_TEXT,        0 },
	[RECORD_COL_VIDEO_URL]      = { "mg_video_url",      RECORD_TYPE_TEXT,        0 },
	[RECORD_COL_DELTA]          = { "mg_delta",          RECORD_TYPE_INT,         0 },
	[RECORD_COL_REASON]         = { "mg_reason",         RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_SOURCE]         = { "mg_source",         RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_REF_TYPE]       = { "mg_ref_type",       RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_REF_ID]         = { "mg_ref_id",         RECORD_TYPE_TEXT,        256 },
	[RECORD_COL_CLIENT_VERSION] = { "mg_client_version", RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_OS]             = { "mg_os",             RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_BROWSER]        = { "mg_browser",        RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_DEVICE]         = { "mg_device",         RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_META]           = { "mg_meta",           RECORD_TYPE_JSONB,       0 },
	[RECORD_COL_SOURCE_SYSTEM]  = { "mg_source_system",  RECORD_TYPE_TEXT,        1024 },
	[RECORD_COL_DELETED_AT]     = { "mg_deleted_at",     RECORD_TYPE_TIMESTAMPTZ, 0 },
	[RECORD_COL_CREATED_AT]     = { "mg_created_at",     RECORD_TYPE_TIMESTAMPTZ, 0 },
};

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
	[RECORD_REASON_BAD_ID] = "bad_id",
	[RECORD_REASON_BAD_FRAME] = "bad_frame",
	[RECORD_REASON_UNKNOWN_PASS_ID] = "unknown_pass_id",
	[RECORD_REASON_REFUSED] = "refused",
};

/* The four values mg_record_type may take (the table's CHECK constraint). */
static const char *const record_types[] = {
	"generation", "session", "feedback", "credit_transaction",
};

/* Everything record_from_map learns before it allocates. Stack only. */
struct rec_build {
	const struct record_ctx *ctx;
	struct record_error *err;
	uint64_t present;                         /* bit I: slot I has a value */
	size_t bytes;                             /* sum of len + 1 over present slots */
	const char *val[RECORD_SLOT_COUNT];       /* value bytes, when present */
	uint32_t len[RECORD_SLOT_COUNT];
	const msgpack_object *meta;               /* the event's mg_meta map, or NULL */
	uint32_t unknown;                         /* keys that name no column */
	char num[RECORD_COL_COUNT][REC_NUM_MAX];  /* INT and TIMESTAMPTZ text */
	char id[RECORD_ID_LEN + 1];               /* a generated mg_id */
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
static struct rec_slot rec_slots[REC_HASH_SLOTS];

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

/* memcpy for the short values most columns hold, without a call: two
 * overlapping loads and stores (never reading past SRC + N). */
static inline void rec_copy(char *dst, const char *src, size_t n)
{
	uint64_t a, b;
	uint32_t c, d;

	if (n > 16) {
		memcpy(dst, src, n);
	} else if (n >= 8) {
		memcpy(&a, src, 8);
		memcpy(&b, src + n - 8, 8);
		memcpy(dst, &a, 8);
		memcpy(dst + n - 8, &b, 8);
	} else if (n >= 4) {
		memcpy(&c, src, 4);
		memcpy(&d, src + n - 4, 4);
		memcpy(dst, &c, 4);
		memcpy(dst + n - 4, &d, 4);
	} else {
		for (size_t i = 0; i < n; i++)
			dst[i] = src[i];
	}
}

/* ---- column lookup ---------------------------------------------------- */

/*
 * Name S of N (1..REC_NAME_MAX) bytes as two words that are equal for two
 * names of the same length exactly when the names are: the first and last
 * 8 bytes (overlapping), or 4 and 4, or for 1..3 bytes the bytes
 * themselves. Loads within S only, as the key lies in the msgpack buffer.
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

/* Fill rec_slots[] from record_columns[] before main() runs, so the table
 * can never disagree with the column list and lookups need no once-check. */
__attribute__((constructor)) static void rec_slots_init(void)
{
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		const char *bare = record_columns[i].name + 3;
		size_t n = strlen(bare);
		uint64_t w0, w1;
		unsigned h;

		rec_name_words((const unsigned char *)bare, n, &w0, &w1);
		h = rec_hash(w0, n);
		while (rec_slots[h].col1)
			h = (h + 1) & (REC_HASH_SLOTS - 1);
		rec_slots[h] = (struct rec_slot){ w0, w1, (uint8_t)(i + 1), (uint8_t)n };
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

/* Column index for NAME ("mg_prompt" or "prompt"), or -1: a hash and,
 * for a column, one compare. Inlined into the per-key scan. */
static inline __attribute__((always_inline))
int rec_column_lookup(const char *name, size_t len)
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
		const struct rec_slot *sl = &rec_slots[h];

		/* An empty slot has len 0, which no name here has. */
		if (sl->len == len && sl->w0 == w0 && sl->w1 == w1)
			return sl->col1 - 1;
		if (!sl->col1)
			return -1;
	}
}

int record_column_find(const char *name, size_t len)
{
	return rec_column_lookup(name, len);
}

/* ---- errors ----------------------------------------------------------- */

/* Copy client bytes S into DST (>= 8 bytes) for a message: at most 48
 * bytes, never cutting a UTF-8 sequence, "..." when cut; control
 * characters (and every non-ASCII byte when S is not UTF-8) become '?'. */
static void rec_clean(char *dst, size_t size, const char *s, size_t n)
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

/* Fill ERR with REASON, FIELD and a formatted message; returns -1. */
static int rec_fail(struct record_error *err, enum record_reason reason, const char *field,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int rec_fail(struct record_error *err, enum record_reason reason, const char *field,
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

static int rec_oom(struct record_error *err)
{
	return rec_fail(err, RECORD_REASON_BAD_FRAME, "", "out of memory");
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
	const struct record_column *c = &record_columns[col];
	const char *s;
	uint32_t n;
	const void *nul;

	if (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN)
		return rec_fail(b->err, RECORD_REASON_BAD_TYPE, c->name,
				"%s: expected string, got %s", c->name, json_type_name(o));
	s = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
	n = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;
	if (c->max_bytes && n > c->max_bytes)
		return rec_fail(b->err, RECORD_REASON_TOO_LONG, c->name,
				"%s: %" PRIu32 " bytes, longer than the %" PRIu32 " allowed",
				c->name, n, c->max_bytes);
	if (rec_text_plain(s, n)) {
		rec_set(b, col, s, n);
		return 0;
	}
	if (!json_utf8_valid(s, n))
		return rec_fail(b->err, RECORD_REASON_BAD_UTF8, c->name,
				"%s: not valid UTF-8 (byte %zu)", c->name,
				rec_utf8_bad_offset(s, n));
	nul = memchr(s, 0, n);
	if (nul)
		return rec_fail(b->err, RECORD_REASON_NUL_BYTE, c->name,
				"%s: holds a NUL byte (byte %td), which PostgreSQL text cannot "
				"store", c->name, (const char *)nul - s);
	rec_set(b, col, s, n);
	return 0;
}

/* Decimal digits of V written backwards ending before END; returns the
 * first. Two digits a division, from a table: half the divisions. */
static inline char *rec_decimal(char *end, uint64_t v)
{
	static const char pairs[201] =
		"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
		"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
		"8081828384858687888990919293949596979899";
	char *p = end;

	while (v >= 100) {
		unsigned d = (unsigned)(v % 100) * 2;

		v /= 100;
		*--p = pairs[d + 1];
		*--p = pairs[d];
	}
	if (v >= 10) {
		*--p = pairs[v * 2 + 1];
		*--p = pairs[v * 2];
	} else {
		*--p = (char)('0' + v);
	}
	return p;
}

/* INT: a msgpack integer within int4. */
static int rec_take_int(struct rec_build *b, int col, const msgpack_object *o)
{
	const char *name = record_columns[col].name;
	char *p = b->num[col] + REC_NUM_MAX;
	uint64_t mag;
	bool neg = o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 < 0;

	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && !neg)) {
		mag = o->via.u64;
		if (mag > INT32_MAX)
			return rec_fail(b->err, RECORD_REASON_OUT_OF_RANGE, name,
					"%s: %" PRIu64 " is outside the int4 range", name, mag);
	} else if (neg) {
		if (o->via.i64 < INT32_MIN)
			return rec_fail(b->err, RECORD_REASON_OUT_OF_RANGE, name,
					"%s: %" PRId64 " is outside the int4 range", name,
					o->via.i64);
		mag = (uint64_t)0 - (uint64_t)o->via.i64;
	} else {
		return rec_fail(b->err, RECORD_REASON_BAD_TYPE, name,
				"%s: expected integer, got %s", name, json_type_name(o));
	}
	*--p = '\0';
	p = rec_decimal(p, mag);
	if (neg)
		*--p = '-';
	rec_set(b, col, p, (size_t)(b->num[col] + REC_NUM_MAX - 1 - p));
	return 0;
}

/* Why O is no valid time, as a message; always returns -1. */
static int rec_time_fail(struct rec_build *b, const char *name, const msgpack_object *o)
{
	char text[64];

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		rec_clean(text, sizeof(text), o->via.str.ptr, o->via.str.size);
		return rec_fail(b->err, RECORD_REASON_BAD_TIMESTAMP, name,
				"%s: \"%s\" is not an RFC 3339 timestamp within years 1..9999",
				name, text);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return rec_fail(b->err, RECORD_REASON_BAD_TIMESTAMP, name,
				"%s: %" PRIu64 " epoch seconds is outside years 1..9999",
				name, o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return rec_fail(b->err, RECORD_REASON_BAD_TIMESTAMP, name,
				"%s: %" PRId64 " epoch seconds is outside years 1..9999",
				name, o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64))
			return rec_fail(b->err, RECORD_REASON_BAD_TIMESTAMP, name,
					"%s: %g is not a time", name, o->via.f64);
		return rec_fail(b->err, RECORD_REASON_BAD_TIMESTAMP, name,
				"%s: %.17g epoch seconds is outside years 1..9999", name,
				o->via.f64);
	case MSGPACK_OBJECT_EXT:
		if (o->via.ext.type == -1 || o->via.ext.type == 0)
			return rec_fail(b->err, RECORD_REASON_BAD_TIMESTAMP, name,
					"%s: malformed or out-of-range %s (%" PRIu32 " bytes)",
					name, o->via.ext.type ? "msgpack timestamp" : "EventTime",
					o->via.ext.size);
		return rec_fail(b->err, RECORD_REASON_BAD_TIMESTAMP, name,
				"%s: ext type %d is not a timestamp", name, o->via.ext.type);
	default:
		return rec_fail(b->err, RECORD_REASON_BAD_TYPE, name,
				"%s: expected timestamp, got %s", name, json_type_name(o));
	}
}

/* TIMESTAMPTZ: ext -1, ext 0, epoch seconds (int or float) or RFC 3339. */
static int rec_take_time(struct rec_build *b, int col, const msgpack_object *o)
{
	struct record_time t;

	if (record_time_from_msgpack(o, &t) != 0)
		return rec_time_fail(b, record_columns[col].name, o);
	record_time_format(t, b->num[col]);
	rec_set(b, col, b->num[col], RECORD_TIME_LEN);
	return 0;
}

/* Value O for column COL: nil means absent; otherwise checked by type. */
static int rec_take_column(struct rec_build *b, int col, const msgpack_object *o)
{
	if (o->type == MSGPACK_OBJECT_NIL) {
		rec_clear(b, col);
		if (col == RECORD_COL_META)
			b->meta = NULL;
		return 0;
	}
	/* Tests rather than a switch: TEXT, most columns, costs one compare
	 * instead of a jump table's bounds check and indirect jump. */
	if (record_columns[col].type == RECORD_TYPE_TEXT)
		return rec_take_text(b, col, o);
	if (record_columns[col].type == RECORD_TYPE_INT)
		return rec_take_int(b, col, o);
	if (record_columns[col].type == RECORD_TYPE_TIMESTAMPTZ)
		return rec_take_time(b, col, o);
	if (o->type != MSGPACK_OBJECT_MAP)
		return rec_fail(b->err, RECORD_REASON_BAD_TYPE, "mg_meta",
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
	return rec_fail(b->err, RECORD_REASON_BAD_KEY, "", "key #%" PRIu32 ": expected string, "
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
		col = rec_column_lookup(k, kn);
		if (col >= 0) {
			if (rec_take_column(b, col, &kv->val) != 0)
				return -1;
			continue;
		}
		/* Only a key bound for mg_meta needs the UTF-8 check: a column
		 * name matched is ASCII. */
		if (!json_utf8_valid(k, kn))
			return rec_fail(b->err, RECORD_REASON_BAD_KEY, "",
					"key #%" PRIu32 ": not valid UTF-8 (byte %zu)", i + 1,
					rec_utf8_bad_offset(k, kn));
		b->unknown++;
	}
	return 0;
}

/* ---- mg_meta ---------------------------------------------------------- */

/*
 * Why entry KEY: VAL cannot be stored, found by rendering it again with
 * its path (the fast path renders without one): sets ERR, returns -1.
 * PREFIX and FIELD as for rec_meta_entry.
 */
static int rec_meta_fail(struct rec_build *b, const msgpack_object *key,
			 const msgpack_object *val, const char *prefix, const char *field,
			 const char *first_msg)
{
	char path[128], msg[sizeof(b->err->message)], keytext[sizeof(b->err->field)];
	struct evbuffer *tmp;
	size_t pl = 0;
	int rc = 0;

	if (strcmp(first_msg, "out of memory") == 0)
		return rec_oom(b->err);
	if (prefix) {
		pl = strlen(prefix);
		memcpy(path, prefix, pl);
		path[pl++] = '.';
	}
	rec_clean(path + pl, sizeof(path) - pl, key->via.str.ptr, key->via.str.size);
	snprintf(msg, sizeof(msg), "%s", first_msg);
	tmp = evbuffer_new();
	if (tmp) {
		rc = json_append_msgpack(tmp, key, JSON_STRICT, path, msg, sizeof(msg));
		if (rc == 0)
			rc = json_append_msgpack(tmp, val, JSON_STRICT, path, msg, sizeof(msg));
		evbuffer_free(tmp);
	}
	if (!field) {
		rec_clean(keytext, sizeof(keytext), key->via.str.ptr, key->via.str.size);
		field = keytext;
	}
	/* NUL gets its own reason, as it does for TEXT columns. */
	return rec_fail(b->err, strstr(msg, "NUL byte") ? RECORD_REASON_NUL_BYTE :
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

/* Make room for MORE bytes after the text's end; -1 when it cannot grow. */
static int rec_text_grow(struct rec_text *t, size_t more)
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

/*
 * Append one entry to the thread's mg_meta text: '{' before the first, ','
 * before the others, then "key":value. PREFIX names where the entry lives
 * in messages ("mg_meta", or NULL for a top-level key); FIELD is
 * err->field on failure (NULL: the key itself).
 */
static int rec_meta_entry(struct rec_build *b, size_t *count, const msgpack_object *key,
			  const msgpack_object *val, const char *prefix, const char *field)
{
	struct rec_text *t = &rec_meta;
	char msg[sizeof(b->err->message)];
	int rc = 0;

	msg[0] = '\0';
	if (rec_text_reserve(t, 1) != 0)
		return rec_oom(b->err);
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
		return rec_meta_fail(b, key, val, prefix, field, msg[0] ? msg : "out of memory");
	return 0;
}

/* The event's own mg_meta map, entry by entry; its keys must be text. */
static int rec_meta_map(struct rec_build *b, size_t *count)
{
	const msgpack_object_map *m = &b->meta->via.map;

	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object *k = &m->ptr[i].key;

		if (k->type != MSGPACK_OBJECT_STR && k->type != MSGPACK_OBJECT_BIN)
			return rec_fail(b->err, RECORD_REASON_BAD_META, "mg_meta",
					"mg_meta: key #%" PRIu32 ": expected string, got %s",
					i + 1, json_type_name(k));
		if (rec_meta_entry(b, count, k, &m->ptr[i].val, "mg_meta", "mg_meta") != 0)
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

		if (rec_column_lookup(k->via.str.ptr, k->via.str.size) >= 0)
			continue;
		if (rec_meta_entry(b, count, k, &m->ptr[i].val, NULL, NULL) != 0)
			return -1;
	}
	return 0;
}

/*
 * Build mg_meta in the thread's text buffer: the event's meta map, then
 * unknown keys, then "fluent_metadata". No entry at all leaves the column
 * absent (the stored value, or the '{}' default, stays).
 */
static int rec_meta_build(struct rec_build *b, const msgpack_object_map *m)
{
	static const msgpack_object fluent_key = {
		.type = MSGPACK_OBJECT_STR,
		.via.str = { .size = 15, .ptr = "fluent_metadata" },
	};
	size_t count = 0;

	rec_meta.len = 0;
	if (b->meta && rec_meta_map(b, &count) != 0)
		return -1;
	if (b->unknown && rec_meta_unknown(b, m, &count) != 0)
		return -1;
	if (b->ctx->fluent_meta && rec_meta_entry(b, &count, &fluent_key, b->ctx->fluent_meta,
						  NULL, "fluent_metadata") != 0)
		return -1;
	if (count == 0)
		return 0;
	if (rec_text_reserve(&rec_meta, 1) != 0)
		return rec_oom(b->err);
	rec_meta.p[rec_meta.len++] = '}';
	/* Set last: the text may have moved while it grew. */
	rec_set(b, RECORD_COL_META, rec_meta.p, rec_meta.len);
	return 0;
}

/* ---- record type and id (ids are made in record_id.c) ----------------- */

static bool rec_type_known(const char *s, size_t n)
{
	const char *want;

	switch (n) { /* the four names differ in length */
	case 10: want = record_types[0]; break;
	case 7: want = record_types[1]; break;
	case 8: want = record_types[2]; break;
	case 18: want = record_types[3]; break;
	default: return false;
	}
	return memcmp(want, s, n) == 0;
}

/* mg_record_type from the event, else the tag's last dot-separated part. */
static int rec_resolve_type(struct rec_build *b)
{
	const struct record_ctx *ctx = b->ctx;
	const char *s = rec_has(b, RECORD_COL_RECORD_TYPE) ? b->val[RECORD_COL_RECORD_TYPE] : NULL;
	const char *tail;
	char text[64], tag[64];
	static const char expected[] = "expected generation, session, feedback or "
		"credit_transaction";

	if (s) {
		if (rec_type_known(s, b->len[RECORD_COL_RECORD_TYPE]))
			return 0;
		rec_clean(text, sizeof(text), s, b->len[RECORD_COL_RECORD_TYPE]);
		return rec_fail(b->err, RECORD_REASON_UNKNOWN_TYPE, "mg_record_type",
				"mg_record_type: unknown record type \"%s\" (%s)", text, expected);
	}
	if (!ctx->tag || ctx->tag_len == 0)
		return rec_fail(b->err, RECORD_REASON_MISSING_TYPE, "mg_record_type",
				"mg_record_type: missing, and no tag to derive it from");
	tail = memrchr(ctx->tag, '.', ctx->tag_len);
	tail = tail ? tail + 1 : ctx->tag;
	rec_set(b, RECORD_COL_RECORD_TYPE, tail, (size_t)(ctx->tag + ctx->tag_len - tail));
	if (rec_type_known(tail, b->len[RECORD_COL_RECORD_TYPE]))
		return 0;
	rec_clean(text, sizeof(text), tail, b->len[RECORD_COL_RECORD_TYPE]);
	rec_clean(tag, sizeof(tag), ctx->tag, ctx->tag_len);
	return rec_fail(b->err, RECORD_REASON_UNKNOWN_TYPE, "mg_record_type",
			"mg_record_type: unknown record type \"%s\" from tag \"%s\" (%s)",
			text, tag, expected);
}

/* mg_id: the event's (non-empty), else derived from the chunk, else v7. */
static int rec_resolve_id(struct rec_build *b)
{
	if (rec_has(b, RECORD_COL_ID)) {
		if (b->len[RECORD_COL_ID] > 0)
			return 0;
		return rec_fail(b->err, RECORD_REASON_BAD_ID, "mg_id", "mg_id: empty string");
	}
	if (record_id_make(b->ctx, b->id) != 0)
		return rec_fail(b->err, RECORD_REASON_BAD_FRAME, "mg_id",
				"mg_id: cannot generate an id (%s)",
				b->ctx->chunk ? "SHA-256 failed" : "no random bytes");
	rec_set(b, RECORD_COL_ID, b->id, RECORD_ID_LEN);
	return 0;
}

/* ---- assembly --------------------------------------------------------- */

/* mg_created_at when the event lacks it: forward time, else receive time. */
static void rec_default_created(struct rec_build *b)
{
	const struct record_ctx *ctx = b->ctx;
	int64_t ns = ctx->has_time ? ctx->time_ns : (int64_t)ctx->recv_ns;

	if (rec_has(b, RECORD_COL_CREATED_AT))
		return;
	record_format_time(ns, b->num[RECORD_COL_CREATED_AT], REC_NUM_MAX);
	rec_set(b, RECORD_COL_CREATED_AT, b->num[RECORD_COL_CREATED_AT], RECORD_TIME_LEN);
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
	size_t total = sizeof(struct record) + b->bytes, pos = 0;
	struct record *r;
	uint64_t m;

	if (total > UINT32_MAX)
		return rec_fail(b->err, RECORD_REASON_TOO_LONG, "", "event too large for a record");
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
	r->id_hash = record_id_hash(b->val[RECORD_COL_ID], b->len[RECORD_COL_ID]);
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
		return rec_fail(err, RECORD_REASON_NOT_A_MAP, "", "event is %s, not a map",
				json_type_name(map));
	b.ctx = ctx ? ctx : &no_ctx;
	b.err = err;
	b.present = 0;
	b.bytes = 0;
	b.meta = NULL;
	b.unknown = 0;
	if (rec_scan_keys(&b, &map->via.map) != 0 || rec_resolve_type(&b) != 0 ||
	    rec_resolve_id(&b) != 0)
		return -1;
	if (b.meta || b.unknown || b.ctx->fluent_meta) {
		rc = rec_meta_build(&b, &map->via.map);
		if (rc == 0) {
			rec_default_created(&b);
			rec_slots_fill(&b);
			rc = rec_assemble(&b, out);
		}
		rec_text_trim(&rec_meta);
		return rc;
	}
	rec_default_created(&b);
	rec_slots_fill(&b);
	return rec_assemble(&b, out);
}
