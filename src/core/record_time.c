/*
 * record_time.c: event times -> the TIMESTAMPTZ text PostgreSQL's COPY reads.
 *
 * Owns the calendar arithmetic, RFC 3339 parsing, the time forms a client
 * may send (msgpack timestamp ext -1, Fluent EventTime ext 0, epoch seconds
 * as int or float) and the formatting. Split from record.c (which validates
 * and assembles the row) because none of this needs the record being built:
 * it converts one value, says 0 or -1, and record.c words the error.
 *
 * Times are kept as seconds + nanoseconds internally so that the whole
 * range PostgreSQL and RFC 3339 share (years 1..9999) works, although the
 * public helpers speak int64 nanoseconds (years 1678..2261).
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <msgpack.h>
#include <msgpack/timestamp.h>

#include "record.h"
#include "record_private.h"

#define REC_MIN_SEC INT64_C(-62135596800)  /* 0001-01-01T00:00:00Z */
#define REC_MAX_SEC INT64_C(253402300799)  /* 9999-12-31T23:59:59Z */

/* Per-thread text of the last second formatted by record_time_format. */
static __thread int64_t rec_time_cache_sec;
static __thread char rec_time_cache[RECORD_TIME_LEN + 1];

/* ---- calendar and formatting ------------------------------------------ */

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
void record_time_format(struct record_time t, char buf[RECORD_TIME_LEN + 1])
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
		memcpy(c, "0000-00-00 00:00:00.000000+00", RECORD_TIME_LEN + 1);
		rec_pair(c, (unsigned)y / 100);
		rec_pair(c + 2, (unsigned)y % 100);
		rec_pair(c + 5, m);
		rec_pair(c + 8, d);
		rec_pair(c + 11, secs / 3600);
		rec_pair(c + 14, secs / 60 % 60);
		rec_pair(c + 17, secs % 60);
		rec_time_cache_sec = t.sec;
	}
	memcpy(buf, rec_time_cache, RECORD_TIME_LEN + 1);
	rec_pair(buf + 20, usec / 10000);
	rec_pair(buf + 22, usec / 100 % 100);
	rec_pair(buf + 24, usec % 100);
}

void record_format_time(int64_t ns, char *buf, size_t buflen)
{
	char tmp[RECORD_TIME_LEN + 1];
	int64_t sec = ns / 1000000000;
	int64_t rem = ns % 1000000000;

	if (rem < 0) {
		sec--;
		rem += 1000000000;
	}
	if (buflen > RECORD_TIME_LEN) {
		record_time_format((struct record_time){ sec, (uint32_t)rem }, buf);
	} else if (buflen > 0) {
		record_time_format((struct record_time){ sec, (uint32_t)rem }, tmp);
		memcpy(buf, tmp, buflen - 1);
		buf[buflen - 1] = '\0';
	}
}

/* ---- RFC 3339 --------------------------------------------------------- */

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
static int rec_parse_time(const char *s, size_t n, struct record_time *t)
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
	struct record_time t;
	int64_t ns;

	if (rec_parse_time(s, len, &t) != 0)
		return -1;
	if (__builtin_mul_overflow(t.sec, INT64_C(1000000000), &ns) ||
	    __builtin_add_overflow(ns, (int64_t)t.nsec, &ns))
		return -1;
	*ns_out = ns;
	return 0;
}

/* ---- msgpack time forms ---------------------------------------------- */

/* ext -1 (msgpack timestamp) or ext 0 (EventTime: be32 sec, be32 nsec). */
static int rec_ext_time(const msgpack_object *o, struct record_time *t)
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
static int rec_float_time(double f, struct record_time *t)
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

int record_time_from_msgpack(const msgpack_object *o, struct record_time *t)
{
	int rc;

	switch (o->type) {
	case MSGPACK_OBJECT_EXT:
		rc = rec_ext_time(o, t);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		rc = o->via.u64 <= (uint64_t)REC_MAX_SEC ? 0 : -1;
		*t = (struct record_time){ (int64_t)o->via.u64, 0 };
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		rc = o->via.i64 >= REC_MIN_SEC && o->via.i64 <= REC_MAX_SEC ? 0 : -1;
		*t = (struct record_time){ o->via.i64, 0 };
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		rc = rec_float_time(o->via.f64, t);
		break;
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		rc = rec_parse_time(o->via.str.ptr, o->via.str.size, t);
		break;
	default:
		rc = -1;
		break;
	}
	return rc != 0 || t->sec < REC_MIN_SEC || t->sec > REC_MAX_SEC ? -1 : 0;
}

/* ---- PostgreSQL's binary form ------------------------------------------ */

#define REC_PG_EPOCH_SEC INT64_C(946684800) /* 2000-01-01T00:00:00Z */

int record_time_pg_usec(const char *s, size_t len, int64_t *usec)
{
	struct record_time t;
	char utc[RECORD_TIME_LEN];

	/* Our "+00" is PostgreSQL's short offset; RFC 3339 spells it "Z". */
	if (len != RECORD_TIME_LEN || memcmp(s + len - 3, "+00", 3) != 0)
		return -1;
	memcpy(utc, s, len - 3);
	utc[len - 3] = 'Z';
	if (rec_parse_time(utc, len - 2, &t) != 0)
		return -1;
	*usec = (t.sec - REC_PG_EPOCH_SEC) * INT64_C(1000000) + t.nsec / 1000;
	return 0;
}
