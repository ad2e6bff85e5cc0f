/*
 * record_private.h: what the four files of the record module share, and
 * nothing else. record.c (column table, lookup, validation, assembly)
 * calls record_meta.c to write mg_meta's JSON, record_time.c for
 * timestamps and record_id.c for generated ids and the id hash;
 * record_meta.c words its errors with record.c's record_fail. Functions
 * with external linkage carry the record_ prefix; the rec_ ones here are
 * static inline hot-path helpers that record.c and record_meta.c both
 * use. Not for other modules: they use include/record.h.
 */
#ifndef MI_RECORD_INT_H
#define MI_RECORD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <msgpack.h>

#include "record.h"
#include "record_time.h"

#define RECORD_ID_LEN 36   /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
#define RECORD_TIME_LEN 29 /* "YYYY-MM-DD HH:MM:SS.ffffff+00" */


/* ---- record.c ---- */

/* Fill ERR with REASON, FIELD and a formatted message; returns -1. Any
 * thread. */
int record_fail(struct record_error *err, enum record_reason reason, const char *field,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* record_fail for an allocation that failed; returns -1. */
static inline int rec_oom(struct record_error *err)
{
	return record_fail(err, RECORD_REASON_BAD_FRAME, "", "out of memory");
}

/* Copy client bytes S into DST (>= 8 bytes) for a message: at most 48
 * bytes, never cutting a UTF-8 sequence, "..." when cut; control
 * characters (and every non-ASCII byte when S is not UTF-8) become '?'. */
void record_clean(char *dst, size_t size, const char *s, size_t n);

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

/*
 * ---- record_meta.c ----
 * Append entry KEY (str or bin): VAL to the calling thread's mg_meta text
 * as JSON: '{' before the first (*COUNT 0, which starts the text afresh),
 * ',' before the others; *COUNT then counts it. 0, or -1 with ERR filled
 * when VAL (or KEY) cannot be stored: PREFIX names where the entry lives
 * in the message ("mg_meta", or NULL for a top-level key) and FIELD is
 * ERR->field (NULL: the key itself). Any thread.
 */
int record_meta_entry(struct record_error *err, size_t *count, const msgpack_object *key,
		      const msgpack_object *val, const char *prefix, const char *field)
	__attribute__((warn_unused_result));

/* Close the text after one entry or more: *TEXT and *LEN are the JSON,
 * valid until the thread's next record_meta_entry or record_meta_trim. 0,
 * or -1 with ERR filled (out of memory). */
int record_meta_end(struct record_error *err, const char **text, size_t *len)
	__attribute__((warn_unused_result));

/* Give back the calling thread's mg_meta text if the last event grew it
 * unusually large, so one huge event does not pin its size for good. Call
 * once the text has been copied. */
void record_meta_trim(void);

/*
 * ---- record_time.c ---- (the parser: include/record_time.h)
 * T (years 1..9999) as "YYYY-MM-DD HH:MM:SS.ffffff+00" plus NUL into BUF;
 * microseconds truncated. Reuses a per-thread text of the last second. */
void record_time_format(struct record_time t, char buf[RECORD_TIME_LEN + 1]);

/*
 * ---- record_id.c ----
 * A generated mg_id for an event that has none, into OUT (NUL-terminated):
 * a UUIDv8 derived from CTX's chunk id, tag and entry index when CTX has a
 * chunk (the same on every resend), else a UUIDv7 of CTX->recv_ns (the
 * clock when 0). 0, or -1 when libcrypto or the random source fails. Any
 * thread; uses per-thread state only.
 */
int record_id_make(const struct record_ctx *ctx, char out[RECORD_ID_LEN + 1])
	__attribute__((warn_unused_result));

/* 32-bit hash of mg_id bytes S[0..N): picks the writer. Not cryptographic. */
uint32_t record_id_hash(const char *s, size_t n);

#endif
