/*
 * record.c: one decoded event (a msgpack map) -> one mega_generations row.
 *
 * Shaped for the loop thread's hot path. One pass over the map's keys finds
 * each key's column through a small hash table and converts its value where
 * it lies: TEXT values stay pointers into the msgpack zone, INT and
 * TIMESTAMPTZ values are formatted into a stack buffer. Only when the event
 * has something for mg_meta (its meta map, keys that are no column, Fluent
 * Bit metadata) is JSON built, into a per-thread scratch evbuffer. Then the
 * sizes are known and the record is one malloc: header plus every value,
 * NUL-terminated, copied once. The only other allocation is libevent's
 * buffer chain for mg_meta, and only for events that have one.
 *
 * Times are kept as seconds + nanoseconds internally so that the whole
 * range PostgreSQL and RFC 3339 share (years 1..9999) works, although the
 * public helpers speak int64 nanoseconds (years 1678..2261).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/buffer.h>
#include <msgpack.h>
#include <msgpack/timestamp.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>

#include "json.h"
#include "record.h"

#define REC_MIN_SEC INT64_C(-62135596800)  /* 0001-01-01T00:00:00Z */
#define REC_MAX_SEC INT64_C(253402300799)  /* 9999-12-31T23:59:59Z */
#define REC_NUM_MAX 40                     /* formatted INT/TIMESTAMPTZ text */
#define REC_HASH_SLOTS 128                 /* column lookup table; > 3x the columns */
#define REC_ID_LEN 36                      /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
#define REC_TIME_LEN 29                    /* "YYYY-MM-DD HH:MM:SS.ffffff+00" */

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

/* A point in time: seconds since the epoch and nanoseconds within it. */
struct rec_time {
	int64_t sec;
	uint32_t nsec;
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
	size_t meta_len;                          /* JSON bytes in the scratch buffer */
	char num[RECORD_COL_COUNT][REC_NUM_MAX];  /* INT and TIMESTAMPTZ text */
	char id[REC_ID_LEN + 1];                  /* a generated mg_id */
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

/* Column lookup: bare names ("prompt") hashed into open-addressed slots. */
struct rec_slot {
	uint8_t col1;  /* column index + 1; 0 = empty slot */
	uint8_t len;   /* length of the bare name */
};
static struct rec_slot rec_slots[REC_HASH_SLOTS];

/* Per-thread scratch for mg_meta JSON: reused, never freed (lives as long
 * as the thread, which for the loop is the process). */
static __thread struct evbuffer *rec_scratch;

/* Per-thread pool of random bytes for UUIDv7, refilled by getrandom(2). */
static __thread unsigned char rec_rand_pool[256];
static __thread size_t rec_rand_left;

/* Per-thread text of the last second formatted by rec_format. */
static __thread int64_t rec_time_cache_sec;
static __thread char rec_time_cache[REC_TIME_LEN + 1];

static pthread_once_t rec_sha_once = PTHREAD_ONCE_INIT;
static const EVP_MD *rec_sha256; /* fetched once, kept for the process's life */
static __thread EVP_MD_CTX *rec_sha_ctx; /* per thread, reused, never freed */

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

/* Cheap hash of a bare column name; collision-free for today's columns in
 * 128 slots, but lookups probe, so a future column can only cost a probe. */
static inline unsigned rec_hash(const unsigned char *s, size_t n)
{
	return (s[0] * 6u + s[n - 1] * 8u + s[n / 2] + (unsigned)n * 5u) & (REC_HASH_SLOTS - 1);
}

/* Fill rec_slots[] from record_columns[] before main() runs, so the table
 * can never disagree with the column list and lookups need no once-check. */
__attribute__((constructor)) static void rec_slots_init(void)
{
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		const char *bare = record_columns[i].name + 3;
		unsigned h = rec_hash((const unsigned char *)bare, strlen(bare));

		while (rec_slots[h].col1)
			h = (h + 1) & (REC_HASH_SLOTS - 1);
		rec_slots[h].col1 = (uint8_t)(i + 1);
		rec_slots[h].len = (uint8_t)strlen(bare);
	}
}

/* A and B equal over N bytes (both readable that far): two overlapping
 * word compares instead of a memcmp call, for names of 1..20 bytes. */
static inline bool rec_name_eq(const unsigned char *a, const unsigned char *b, size_t n)
{
	uint64_t x0, x1, y0, y1;
	uint32_t u0, u1, v0, v1;

	if (n >= 8) {
		memcpy(&x0, a, 8);
		memcpy(&y0, b, 8);
		memcpy(&x1, a + n - 8, 8);
		memcpy(&y1, b + n - 8, 8);
		return x0 == y0 && x1 == y1;
	}
	if (n >= 4) {
		memcpy(&u0, a, 4);
		memcpy(&v0, b, 4);
		memcpy(&u1, a + n - 4, 4);
		memcpy(&v1, b + n - 4, 4);
		return u0 == v0 && u1 == v1;
	}
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

/* Column index for NAME ("mg_prompt" or "prompt"), or -1: a hash and,
 * for a column, one compare. Inlined into the per-key scan. */
static inline __attribute__((always_inline))
int rec_column_lookup(const char *name, size_t len)
{
	const unsigned char *s = (const unsigned char *)name;
	unsigned h;

	if (len > 3 && s[0] == 'm' && s[1] == 'g' && s[2] == '_') {
		s += 3;
		len -= 3;
	}
	if (len == 0 || len > 20)
		return -1;
	for (h = rec_hash(s, len); rec_slots[h].col1; h = (h + 1) & (REC_HASH_SLOTS - 1)) {
		int col = rec_slots[h].col1 - 1;

		if (rec_slots[h].len == len &&
		    rec_name_eq((const unsigned char *)record_columns[col].name + 3, s, len))
			return col;
	}
	return -1;
}

int record_column_find(const char *name, size_t len)
{
	return rec_column_lookup(name, len);
}

/* ---- errors ----------------------------------------------------------- */

static const char *rec_type_name(const msgpack_object *o)
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

/* ---- time ------------------------------------------------------------- */

/* Days from 1970-01-01 to Y-M-D (proleptic Gregorian). March-based years
 * put the leap day last, so a year's day count is a closed formula. */
static int64_t rec_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era, yoe, doy, doe;

	if (m <= 2)
		y--;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;                                   /* 0..399 */
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* 0..365, from March 1 */
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* 0..146096 */
	return era * 146097 + doe - 719468;                    /* 719468: 0000-03-01 to 1970 */
}

/* The inverse of rec_days_from_civil. */
static void rec_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	*m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static bool rec_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned rec_month_days(int64_t y, unsigned m)
{
	static const unsigned char days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && rec_leap(y) ? 29 : days[m - 1];
}

/* Two decimal digits of V (< 100) at P. */
static inline void rec_pair(char *p, unsigned v)
{
	p[0] = (char)('0' + v / 10);
	p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DD HH:MM:SS.ffffff+00" (29 bytes + NUL) into BUF; microseconds
 * truncated, as PostgreSQL keeps no more. SEC must be in years 1..9999. */
static void rec_format(struct rec_time t, char buf[REC_TIME_LEN + 1])
{
	unsigned usec = t.nsec / 1000;

	/* Events arrive in bursts within one second: reuse that second's
	 * text and write only the microseconds. */
	if (t.sec != rec_time_cache_sec || !rec_time_cache[0]) {
		int64_t days = t.sec >= 0 ? t.sec / 86400 : (t.sec - 86399) / 86400;
		unsigned secs = (unsigned)(t.sec - days * 86400), m, d;
		int64_t y;
		char *c = rec_time_cache;

		rec_civil_from_days(days, &y, &m, &d);
		memcpy(c, "0000-00-00 00:00:00.000000+00", REC_TIME_LEN + 1);
		rec_pair(c, (unsigned)y / 100);
		rec_pair(c + 2, (unsigned)y % 100);
		rec_pair(c + 5, m);
		rec_pair(c + 8, d);
		rec_pair(c + 11, secs / 3600);
		rec_pair(c + 14, secs / 60 % 60);
		rec_pair(c + 17, secs % 60);
		rec_time_cache_sec = t.sec;
	}
	memcpy(buf, rec_time_cache, REC_TIME_LEN + 1);
	rec_pair(buf + 20, usec / 10000);
	rec_pair(buf + 22, usec / 100 % 100);
	rec_pair(buf + 24, usec % 100);
}

void record_format_time(int64_t ns, char *buf, size_t buflen)
{
	char tmp[REC_TIME_LEN + 1];
	int64_t sec = ns / 1000000000;
	int64_t rem = ns % 1000000000;

	if (rem < 0) {
		sec--;
		rem += 1000000000;
	}
	if (buflen > REC_TIME_LEN) {
		rec_format((struct rec_time){ sec, (uint32_t)rem }, buf);
	} else if (buflen > 0) {
		rec_format((struct rec_time){ sec, (uint32_t)rem }, tmp);
		memcpy(buf, tmp, buflen - 1);
		buf[buflen - 1] = '\0';
	}
}

/* N decimal digits at S as a number, or -1 if any is not a digit. */
static int rec_num(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* ".fraction" at S[*P], if any: nanoseconds (digits past the ninth are
 * truncated). Returns -1 for a '.' with no digits. */
static int rec_parse_frac(const char *s, size_t n, size_t *p, uint32_t *nsec)
{
	size_t start;
	int digits = 0;

	*nsec = 0;
	if (*p >= n || s[*p] != '.')
		return 0;
	start = ++*p;
	for (; *p < n && s[*p] >= '0' && s[*p] <= '9'; ++*p) {
		if (digits < 9) {
			*nsec = *nsec * 10 + (uint32_t)(s[*p] - '0');
			digits++;
		}
	}
	for (; digits < 9; digits++)
		*nsec *= 10;
	return *p > start ? 0 : -1;
}

/* "Z", "z" or "+HH:MM"/"-HH:MM" ending the string: the offset in seconds. */
static int rec_parse_offset(const char *s, size_t n, size_t p, int64_t *off)
{
	int hh, mm;

	if (p + 1 == n && (s[p] == 'Z' || s[p] == 'z')) {
		*off = 0;
		return 0;
	}
	if (p + 6 != n || (s[p] != '+' && s[p] != '-') || s[p + 3] != ':')
		return -1;
	hh = rec_num(s + p + 1, 2);
	mm = rec_num(s + p + 4, 2);
	if (hh < 0 || hh > 23 || mm < 0 || mm > 59)
		return -1;
	*off = (hh * 3600 + mm * 60) * (s[p] == '-' ? -1 : 1);
	return 0;
}

/* RFC 3339 date-time (T, t or space between date and time) -> UTC. */
static int rec_parse_time(const char *s, size_t n, struct rec_time *t)
{
	int y, mo, d, h, mi, se;
	size_t p = 19;
	int64_t off;

	if (n < 20 || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' '))
		return -1;
	y = rec_num(s, 4);
	mo = rec_num(s + 5, 2);
	d = rec_num(s + 8, 2);
	h = rec_num(s + 11, 2);
	mi = rec_num(s + 14, 2);
	se = rec_num(s + 17, 2);
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || (unsigned)d > rec_month_days(y, (unsigned)mo) ||
	    h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 60)
		return -1;
	if (rec_parse_frac(s, n, &p, &t->nsec) != 0 || rec_parse_offset(s, n, p, &off) != 0)
		return -1;
	t->sec = rec_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 +
		 h * 3600 + mi * 60 + se - off;
	return t->sec >= REC_MIN_SEC && t->sec <= REC_MAX_SEC ? 0 : -1;
}

int record_parse_rfc3339(const char *s, size_t len, int64_t *ns_out)
{
	struct rec_time t;
	int64_t ns;

	if (rec_parse_time(s, len, &t) != 0)
		return -1;
	if (__builtin_mul_overflow(t.sec, INT64_C(1000000000), &ns) ||
	    __builtin_add_overflow(ns, (int64_t)t.nsec, &ns))
		return -1;
	*ns_out = ns;
	return 0;
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
				"%s: expected string, got %s", c->name, rec_type_name(o));
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
				"%s: expected integer, got %s", name, rec_type_name(o));
	}
	*--p = '\0';
	do {
		*--p = (char)('0' + mag % 10);
		mag /= 10;
	} while (mag);
	if (neg)
		*--p = '-';
	rec_set(b, col, p, (size_t)(b->num[col] + REC_NUM_MAX - 1 - p));
	return 0;
}

/* ext -1 (msgpack timestamp) or ext 0 (EventTime: be32 sec, be32 nsec). */
static int rec_ext_time(const msgpack_object *o, struct rec_time *t)
{
	const unsigned char *p = (const unsigned char *)o->via.ext.ptr;
	msgpack_timestamp ts;

	if (o->via.ext.type == -1) {
		if (!msgpack_object_to_timestamp(o, &ts))
			return -1;
		t->sec = ts.tv_sec;
		t->nsec = ts.tv_nsec;
	} else if (o->via.ext.type == 0 && o->via.ext.size == 8) {
		t->sec = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
				   (uint32_t)p[2] << 8 | p[3]);
		t->nsec = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
	} else {
		return -1;
	}
	return t->nsec < 1000000000u ? 0 : -1;
}

/* Float epoch seconds, rounded to the microsecond (a double near 1.7e9
 * carries about 0.2 us, so truncating would turn .123456 into .123455). */
static int rec_float_time(double f, struct rec_time *t)
{
	double whole;
	int64_t usec;

	if (!(f >= (double)REC_MIN_SEC && f < (double)REC_MAX_SEC + 1.0))
		return -1;
	t->sec = (int64_t)f; /* toward zero; the range check above keeps it exact */
	if ((double)t->sec > f)
		t->sec--;
	whole = (double)t->sec;
	usec = (int64_t)((f - whole) * 1e6 + 0.5);
	if (usec >= 1000000) {
		t->sec++;
		usec -= 1000000;
	}
	t->nsec = (uint32_t)usec * 1000u;
	return t->sec <= REC_MAX_SEC ? 0 : -1;
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
				"%s: expected timestamp, got %s", name, rec_type_name(o));
	}
}

/* TIMESTAMPTZ: ext -1, ext 0, epoch seconds (int or float) or RFC 3339. */
static int rec_take_time(struct rec_build *b, int col, const msgpack_object *o)
{
	struct rec_time t;
	int rc;

	switch (o->type) {
	case MSGPACK_OBJECT_EXT:
		rc = rec_ext_time(o, &t);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		rc = o->via.u64 <= (uint64_t)REC_MAX_SEC ? 0 : -1;
		t = (struct rec_time){ (int64_t)o->via.u64, 0 };
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		rc = o->via.i64 >= REC_MIN_SEC && o->via.i64 <= REC_MAX_SEC ? 0 : -1;
		t = (struct rec_time){ o->via.i64, 0 };
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		rc = rec_float_time(o->via.f64, &t);
		break;
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		rc = rec_parse_time(o->via.str.ptr, o->via.str.size, &t);
		break;
	default:
		rc = -1;
		break;
	}
	if (rc != 0 || t.sec < REC_MIN_SEC || t.sec > REC_MAX_SEC)
		return rec_time_fail(b, record_columns[col].name, o);
	rec_format(t, b->num[col]);
	rec_set(b, col, b->num[col], REC_TIME_LEN);
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
	switch (record_columns[col].type) {
	case RECORD_TYPE_TEXT:
		return rec_take_text(b, col, o);
	case RECORD_TYPE_INT:
		return rec_take_int(b, col, o);
	case RECORD_TYPE_TIMESTAMPTZ:
		return rec_take_time(b, col, o);
	case RECORD_TYPE_JSONB:
	case RECORD_TYPE_COUNT:
		break;
	}
	if (o->type != MSGPACK_OBJECT_MAP)
		return rec_fail(b->err, RECORD_REASON_BAD_TYPE, "mg_meta",
				"mg_meta: expected map, got %s", rec_type_name(o));
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
			"got %s", i + 1, rec_type_name(k));
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

/* True when KEY can be written between quotes as it is: printable ASCII
 * without '"' or '\\' (nearly every key), so no escaping pass is needed. */
static bool rec_key_plain(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
			return false;
	}
	return true;
}

/*
 * Append one entry to OUT: '{' before the first, ',' before the others,
 * then "key":value. PREFIX names where the entry lives in messages
 * ("mg_meta", or NULL for a top-level key); FIELD is err->field on
 * failure (NULL: the key itself).
 */
static int rec_meta_entry(struct rec_build *b, struct evbuffer *out, size_t *count,
			  const msgpack_object *key, const msgpack_object *val,
			  const char *prefix, const char *field)
{
	const char *k = key->via.str.ptr;
	size_t kn = key->via.str.size;
	char head[136], msg[sizeof(b->err->message)];
	int rc;

	head[0] = (*count)++ ? ',' : '{';
	msg[0] = '\0';
	if (kn <= sizeof(head) - 4 && rec_key_plain(k, kn)) {
		head[1] = '"';
		memcpy(head + 2, k, kn);
		head[kn + 2] = '"';
		head[kn + 3] = ':';
		rc = evbuffer_add(out, head, kn + 4);
	} else {
		rc = evbuffer_add(out, head, 1);
		if (rc == 0)
			rc = json_append_msgpack(out, key, JSON_STRICT, NULL, msg, sizeof(msg));
		if (rc == 0)
			rc = evbuffer_add(out, ":", 1);
	}
	if (rc == 0)
		rc = json_append_msgpack(out, val, JSON_STRICT, NULL, msg, sizeof(msg));
	if (rc != 0)
		return rec_meta_fail(b, key, val, prefix, field, msg[0] ? msg : "out of memory");
	return 0;
}

/* The event's own mg_meta map, entry by entry; its keys must be text. */
static int rec_meta_map(struct rec_build *b, struct evbuffer *out, size_t *count)
{
	const msgpack_object_map *m = &b->meta->via.map;

	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object *k = &m->ptr[i].key;

		if (k->type != MSGPACK_OBJECT_STR && k->type != MSGPACK_OBJECT_BIN)
			return rec_fail(b->err, RECORD_REASON_BAD_META, "mg_meta",
					"mg_meta: key #%" PRIu32 ": expected string, got %s",
					i + 1, rec_type_name(k));
		if (rec_meta_entry(b, out, count, k, &m->ptr[i].val, "mg_meta", "mg_meta") != 0)
			return -1;
	}
	return 0;
}

/* Top-level keys that name no column, in order; they win over mg_meta's
 * own entries of the same name (jsonb keeps the last duplicate). */
static int rec_meta_unknown(struct rec_build *b, const msgpack_object_map *m,
			    struct evbuffer *out, size_t *count)
{
	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object *k = &m->ptr[i].key;

		if (rec_column_lookup(k->via.str.ptr, k->via.str.size) >= 0)
			continue;
		if (rec_meta_entry(b, out, count, k, &m->ptr[i].val, NULL, NULL) != 0)
			return -1;
	}
	return 0;
}

/*
 * Build mg_meta in the thread's scratch buffer: the event's meta map, then
 * unknown keys, then "fluent_metadata". No entry at all leaves the column
 * absent (the stored value, or the '{}' default, stays).
 */
static int rec_meta_build(struct rec_build *b, const msgpack_object_map *m)
{
	static const msgpack_object fluent_key = {
		.type = MSGPACK_OBJECT_STR,
		.via.str = { .size = 15, .ptr = "fluent_metadata" },
	};
	struct evbuffer *out = rec_scratch;
	size_t count = 0, left;

	if (!out && !(out = rec_scratch = evbuffer_new()))
		return rec_oom(b->err);
	left = evbuffer_get_length(out); /* what a failed build left behind */
	if (left && evbuffer_drain(out, left) != 0)
		return rec_oom(b->err);
	if (b->meta && rec_meta_map(b, out, &count) != 0)
		return -1;
	if (b->unknown && rec_meta_unknown(b, m, out, &count) != 0)
		return -1;
	if (b->ctx->fluent_meta && rec_meta_entry(b, out, &count, &fluent_key,
						  b->ctx->fluent_meta, NULL,
						  "fluent_metadata") != 0)
		return -1;
	if (count == 0)
		return 0;
	if (evbuffer_add(out, "}", 1) != 0)
		return rec_oom(b->err);
	b->meta_len = evbuffer_get_length(out);
	rec_set(b, RECORD_COL_META, NULL, b->meta_len); /* bytes stay in the scratch */
	return 0;
}

/* ---- record type and id ----------------------------------------------- */

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
	return rec_name_eq((const unsigned char *)want, (const unsigned char *)s, n);
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

/* 16 bytes as a lowercase hyphenated UUID. */
static void rec_uuid_text(const unsigned char u[16], char out[REC_ID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	char *p = out;

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[u[i] >> 4];
		*p++ = hex[u[i] & 15];
	}
	*p = '\0';
}

static void rec_sha_init(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	rec_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); /* no implicit fetch per digest */
#else
	rec_sha256 = EVP_sha256();
#endif
}

static void rec_be32(unsigned char p[4], uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/*
 * The id a chunk's entry gets on every resend: UUIDv8 (RFC 9562) from
 * SHA-256 over "mi1", the entry index (4 bytes), the tag's length (4
 * bytes), the tag, then the chunk id (its length is what remains, so the
 * encoding is unambiguous). Typical tags and chunk ids fit one SHA-256
 * block. The context is kept per thread and re-initialised each call.
 * 0, or -1 when libcrypto fails.
 */
static int rec_id_derived(const struct record_ctx *ctx, char out[REC_ID_LEN + 1])
{
	unsigned char head[11] = { 'm', 'i', '1' }, md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *mc = rec_sha_ctx;

	if (pthread_once(&rec_sha_once, rec_sha_init) != 0 || !rec_sha256)
		return -1;
	if (!mc && !(mc = rec_sha_ctx = EVP_MD_CTX_new()))
		return -1;
	rec_be32(head + 3, ctx->index);
	rec_be32(head + 7, (uint32_t)(ctx->tag ? ctx->tag_len : 0));
	if (!EVP_DigestInit_ex(mc, rec_sha256, NULL) ||
	    !EVP_DigestUpdate(mc, head, sizeof(head)) ||
	    (ctx->tag && !EVP_DigestUpdate(mc, ctx->tag, ctx->tag_len)) ||
	    !EVP_DigestUpdate(mc, ctx->chunk, ctx->chunk_len) ||
	    !EVP_DigestFinal_ex(mc, md, &mdlen) || mdlen < 16)
		return -1;
	md[6] = (unsigned char)((md[6] & 0x0f) | 0x80); /* version 8 */
	md[8] = (unsigned char)((md[8] & 0x3f) | 0x80); /* variant 10 */
	rec_uuid_text(md, out);
	return 0;
}

/* N random bytes from the thread's pool, refilled from getrandom(2) (the
 * daemon never forks after start, so a pool is never shared by two
 * processes); RAND_bytes if getrandom is unavailable. */
static int rec_random(unsigned char *dst, size_t n)
{
	size_t size = sizeof(rec_rand_pool);

	if (rec_rand_left < n) {
		size_t got = 0;

		while (got < size) {
			ssize_t r = getrandom(rec_rand_pool + got, size - got, 0);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		if (got < size && RAND_bytes(rec_rand_pool, (int)size) != 1)
			return -1;
		rec_rand_left = size;
	}
	memcpy(dst, rec_rand_pool + size - rec_rand_left, n);
	rec_rand_left -= n;
	return 0;
}

/*
 * UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 12 bits of sub-
 * millisecond time (the RFC's "increased clock precision" method, so ids
 * made in one millisecond still sort by time), then 62 random bits.
 */
static int rec_id_v7(uint64_t now_ns, char out[REC_ID_LEN + 1])
{
	unsigned char u[16];
	uint64_t ms = now_ns / 1000000;
	uint32_t sub = (uint32_t)((now_ns % 1000000) * 4096 / 1000000);

	if (rec_random(u + 8, 8) != 0)
		return -1;
	for (int i = 0; i < 6; i++)
		u[i] = (unsigned char)(ms >> (40 - 8 * i));
	u[6] = (unsigned char)(0x70 | (sub >> 8));
	u[7] = (unsigned char)sub;
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	rec_uuid_text(u, out);
	return 0;
}

/* mg_id: the event's (non-empty), else derived from the chunk, else v7. */
static int rec_resolve_id(struct rec_build *b)
{
	const struct record_ctx *ctx = b->ctx;
	uint64_t now = ctx->recv_ns;
	int rc;

	if (rec_has(b, RECORD_COL_ID)) {
		if (b->len[RECORD_COL_ID] > 0)
			return 0;
		return rec_fail(b->err, RECORD_REASON_BAD_ID, "mg_id", "mg_id: empty string");
	}
	if (ctx->chunk) {
		rc = rec_id_derived(ctx, b->id);
	} else {
		if (!now) {
			struct timespec ts;

			if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
				now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		}
		rc = rec_id_v7(now, b->id);
	}
	if (rc != 0)
		return rec_fail(b->err, RECORD_REASON_BAD_FRAME, "mg_id",
				"mg_id: cannot generate an id (%s)",
				ctx->chunk ? "SHA-256 failed" : "no random bytes");
	rec_set(b, RECORD_COL_ID, b->id, REC_ID_LEN);
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
	rec_set(b, RECORD_COL_CREATED_AT, b->num[RECORD_COL_CREATED_AT], REC_TIME_LEN);
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

/*
 * 32-bit hash of an mg_id: picks the writer, so it must spread similar ids
 * (UUIDv7s differ mostly in their tail) and be cheap; not a security
 * boundary. Eight bytes per step (multiply and fold), then a final mix.
 */
static uint32_t rec_hash_id(const char *s, size_t n)
{
	const uint64_t k = UINT64_C(0x9e3779b97f4a7c15);
	uint64_t h = n * k, w;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * k;
		h ^= h >> 29;
	}
	if (n) {
		w = 0;
		memcpy(&w, s, n);
		h = (h ^ w) * k;
	}
	h ^= h >> 32;
	h *= k;
	return (uint32_t)(h >> 32);
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
		if (i != RECORD_COL_META)
			rec_copy(r->data + pos, b->val[i], b->len[i]);
		else if (evbuffer_remove(rec_scratch, r->data + pos, b->len[i]) != (int)b->len[i])
			goto fail;
		r->data[pos + b->len[i]] = '\0';
		pos += (size_t)b->len[i] + 1;
	}
	r->ack = NULL;
	r->recv_ns = b->ctx->recv_ns;
	r->size = (uint32_t)total;
	r->id_hash = rec_hash_id(b->val[RECORD_COL_ID], b->len[RECORD_COL_ID]);
	*out = r;
	return 0;
fail:
	free(r);
	return rec_oom(b->err);
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

	if (!err)
		err = &spare;
	*out = NULL;
	err->field[0] = '\0';
	err->message[0] = '\0';
	if (map->type != MSGPACK_OBJECT_MAP)
		return rec_fail(err, RECORD_REASON_NOT_A_MAP, "", "event is %s, not a map",
				rec_type_name(map));
	b.ctx = ctx ? ctx : &no_ctx;
	b.err = err;
	b.present = 0;
	b.bytes = 0;
	b.meta = NULL;
	b.unknown = 0;
	b.meta_len = 0;
	if (rec_scan_keys(&b, &map->via.map) != 0 || rec_resolve_type(&b) != 0 ||
	    rec_resolve_id(&b) != 0)
		return -1;
	if ((b.meta || b.unknown || b.ctx->fluent_meta) && rec_meta_build(&b, &map->via.map) != 0)
		return -1;
	rec_default_created(&b);
	rec_slots_fill(&b);
	return rec_assemble(&b, out);
}
