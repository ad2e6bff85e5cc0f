/*
 * record_int.h: what the three files of the record module share, and
 * nothing else. record.c (column table, lookup, validation, assembly) calls
 * record_time.c for timestamps and record_id.c for generated ids and the
 * id hash; neither of those knows about struct rec_build or error messages,
 * so the validation stays in one file. Not for other modules: they use
 * include/record.h.
 */
#ifndef MI_RECORD_INT_H
#define MI_RECORD_INT_H

#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#include "record.h"

#define RECORD_ID_LEN 36   /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
#define RECORD_TIME_LEN 29 /* "YYYY-MM-DD HH:MM:SS.ffffff+00" */

/* A point in time: seconds since the epoch and nanoseconds within it.
 * Wider than record.h's int64 nanoseconds: years 1..9999 all fit. */
struct record_time {
	int64_t sec;
	uint32_t nsec; /* 0..999999999 */
};

/*
 * ---- record_time.c ----
 * O as a time: ext -1 (msgpack timestamp), ext 0 (Fluent EventTime), epoch
 * seconds as int or float, or an RFC 3339 str/bin. 0 and *T set when it is
 * one within years 1..9999; -1 otherwise (*T then undefined). The caller
 * words the error. Any thread.
 */
int record_time_from_msgpack(const msgpack_object *o, struct record_time *t);

/* T (years 1..9999) as "YYYY-MM-DD HH:MM:SS.ffffff+00" plus NUL into BUF;
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
