/*
 * record_time.h: the one parser of event times (src/core/record_time.c),
 * for every input that reads a time from msgpack: the Forward entry time
 * (src/input/forward/proto_time.c) and the TIMESTAMPTZ columns (record.c).
 *
 * Forms, all within years 1..9999 UTC:
 *   positive or negative integer   epoch seconds
 *   float (32 or 64 bit)           epoch seconds, rounded to the nearest
 *                                  microsecond: a double near 1.7e9 is only
 *                                  good to about 0.24 us, so the nearest
 *                                  microsecond is the one the client meant
 *   ext 0 (Fluent EventTime)       be32 seconds (unsigned), be32 nanoseconds
 *   ext -1 (msgpack timestamp)     32, 64 or 96 bit
 *   str or bin                     YYYY-MM-DD, 'T', 't' or ' ', HH:MM:SS
 *                                  (second 60 allowed), optional .fraction
 *                                  (digits past the ninth ignored), then
 *                                  Z, z, +HH, +HHMM, +HH:MM or +HH:MM:SS
 *                                  (or '-'): ISO 8601 / RFC 3339 and the
 *                                  text PostgreSQL prints for a timestamptz
 *                                  ("2026-12-06 19:57:03+00"). Offsets keep
 *                                  ISO 8601's ranges: hours 00..23, minutes
 *                                  and seconds 00..59.
 */
#ifndef MI_RECORD_TIME_H
#define MI_RECORD_TIME_H

#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

/* A point in time: seconds since the epoch and nanoseconds within it.
 * Wider than int64 nanoseconds: years 1..9999 all fit. */
struct record_time {
	int64_t sec;
	uint32_t nsec; /* 0..999999999 */
};

/* record_time_from_msgpack's results besides 0. */
#define RECORD_TIME_BAD (-1)       /* a time form, but malformed or out of range */
#define RECORD_TIME_WRONG_TYPE (-2) /* a msgpack type no time form has */

/*
 * O as a time into *T. 0, or RECORD_TIME_BAD / RECORD_TIME_WRONG_TYPE with
 * the reason in WHY (LEN bytes, NUL-terminated; client text in it is
 * cleaned and cut), worded to follow "field: ". *T is undefined then.
 * Cost bounded by O's size. Any thread.
 */
int record_time_from_msgpack(const msgpack_object *o, struct record_time *t, char *why,
			     size_t len);

/* Text S[0..N) (the str/bin form above) into *T; 0, or -1 with WHY filled. */
int record_time_parse_text(const char *s, size_t n, struct record_time *t, char *why,
			   size_t len);

/* T as nanoseconds since the epoch into *NS; 0, or -1 outside int64
 * (1677-09-21 .. 2262-04-11 UTC). */
int record_time_to_ns(struct record_time t, int64_t *ns);

#endif
