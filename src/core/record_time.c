/*
 * record_time.c: the one parser of event times, and the TIMESTAMPTZ text
 * PostgreSQL's COPY reads.
 *
 * Every time a client sends, as a Forward entry time (proto_time.c keeps
 * only the Forward framing around it) or in a timestamp column (record.c),
 * is read here, so one value means the same instant either way: msgpack
 * timestamp ext -1, Fluent EventTime ext 0, epoch seconds as int or float,
 * and text (ISO 8601 / RFC 3339 and PostgreSQL's own output). The forms and
 * their rules are listed in include/record_time.h. Each refusal says why,
 * worded to follow "field: ", so both callers report the same reason.
 *
 * Times are kept as seconds + nanoseconds so that the whole range
 * PostgreSQL and RFC 3339 share (years 1..9999) works, although the
 * Forward path and record.h's helpers speak int64 nanoseconds (years
 * 1678..2261).
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <msgpack.h>
#include <msgpack/timestamp.h>

#include "json.h"
#include "record.h"
#include "record_private.h"
#include "record_time.h"

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

/* ---- time text: ISO 8601 / RFC 3339 and PostgreSQL's output ----------- */

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

/* Fill WHY with "\"TEXT\" is not a timestamp: " and the formatted detail;
 * returns -1. TEXT is the client's, cleaned and cut. */
static int rec_text_fail(const char *s, size_t n, char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int rec_text_fail(const char *s, size_t n, char *why, size_t len, const char *fmt, ...)
{
	char text[64];
	va_list ap;
	int k;

	record_clean(text, sizeof(text), s, n);
	k = snprintf(why, len, "\"%s\" is not a timestamp: ", text);
	if (k >= 0 && (size_t)k < len) {
		va_start(ap, fmt);
		vsnprintf(why + k, len - (size_t)k, fmt, ap);
		va_end(ap);
	}
	return -1;
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

/* Offset O[0..M) ending the text: Z, z, or a sign then HH, HHMM, HH:MM or
 * HH:MM:SS (PostgreSQL prints seconds for historical local mean times).
 * *OFF in seconds east of UTC; 0, 1 when the layout is wrong, 2 when a
 * field is out of range. */
static int rec_parse_offset(const char *o, size_t m, int64_t *off)
{
	int hh, mm = 0, ss = 0;

	if (m == 1 && (o[0] == 'Z' || o[0] == 'z')) {
		*off = 0;
		return 0;
	}
	if (m < 3 || (o[0] != '+' && o[0] != '-'))
		return 1;
	hh = rec_num(o + 1, 2);
	if (m == 5)
		mm = rec_num(o + 3, 2);
	else if ((m == 6 || m == 9) && o[3] == ':')
		mm = rec_num(o + 4, 2);
	else if (m != 3)
		return 1;
	if (m == 9)
		ss = o[6] == ':' ? rec_num(o + 7, 2) : -1;
	if (hh < 0 || mm < 0 || ss < 0)
		return 1;
	if (hh > 23 || mm > 59 || ss > 59)
		return 2;
	*off = (hh * 3600 + mm * 60 + ss) * (o[0] == '-' ? -1 : 1);
	return 0;
}

/* The six fields of "YYYY-MM-DD?HH:MM:SS" at S (19 bytes) into F; -1 when
 * the layout is not that (separator '?': 'T', 't' or ' '). */
static int rec_parse_fields(const char *s, int f[6])
{
	static const unsigned char at[6] = { 0, 5, 8, 11, 14, 17 };

	if (s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' '))
		return -1;
	for (int i = 0; i < 6; i++) {
		f[i] = rec_num(s + at[i], i ? 2 : 4);
		if (f[i] < 0)
			return -1;
	}
	return 0;
}

/* Date, time, fraction and offset of S[0..N) -> UTC in *T; WHY on -1. */
static int rec_parse_time(const char *s, size_t n, struct record_time *t, char *why,
			  size_t len)
{
	int f[6], rc;
	size_t p = 19;
	int64_t off;

	if (n < 19 || rec_parse_fields(s, f) != 0)
		return rec_text_fail(s, n, why, len, "expected YYYY-MM-DD, 'T' or a space, "
				     "HH:MM:SS[.fraction] and an offset");
	if (f[0] < 1 || f[1] < 1 || f[1] > 12 || f[2] < 1 ||
	    (unsigned)f[2] > rec_month_days(f[0], (unsigned)f[1]))
		return rec_text_fail(s, n, why, len, "%.10s is not a date", s);
	if (f[3] > 23 || f[4] > 59 || f[5] > 60)
		return rec_text_fail(s, n, why, len, "%.8s is not a time of day", s + 11);
	if (rec_parse_frac(s, n, &p, &t->nsec) != 0)
		return rec_text_fail(s, n, why, len, "'.' without digits after it");
	if (p == n)
		return rec_text_fail(s, n, why, len, "no offset: end it with Z, +HH, "
				     "+HHMM or +HH:MM");
	rc = rec_parse_offset(s + p, n - p, &off);
	if (rc != 0) {
		char o[64];

		record_clean(o, sizeof(o), s + p, n - p);
		return rec_text_fail(s, n, why, len, rc == 1 ?
				     "offset \"%s\" is not Z, +HH, +HHMM or +HH:MM" :
				     "offset \"%s\" is out of range (hours 00..23, minutes "
				     "and seconds 00..59)", o);
	}
	t->sec = rec_days_from_civil(f[0], (unsigned)f[1], (unsigned)f[2]) * 86400 +
		 f[3] * 3600 + f[4] * 60 + f[5] - off;
	if (t->sec < REC_MIN_SEC || t->sec > REC_MAX_SEC)
		return rec_text_fail(s, n, why, len, "outside years 1..9999 in UTC");
	return 0;
}

int record_time_parse_text(const char *s, size_t n, struct record_time *t, char *why,
			   size_t len)
{
	return rec_parse_time(s, n, t, why, len);
}

int record_time_to_ns(struct record_time t, int64_t *ns)
{
	return __builtin_mul_overflow(t.sec, INT64_C(1000000000), ns) ||
	       __builtin_add_overflow(*ns, (int64_t)t.nsec, ns) ? -1 : 0;
}

int record_parse_rfc3339(const char *s, size_t len, int64_t *ns_out)
{
	struct record_time t;
	char why[8]; /* not reported */
	int64_t ns;

	if (rec_parse_time(s, len, &t, why, sizeof(why)) != 0 || record_time_to_ns(t, &ns) != 0)
		return -1;
	*ns_out = ns;
	return 0;
}

/* ---- msgpack time forms ---------------------------------------------- */

/* ext -1 (msgpack timestamp) or ext 0 (EventTime: be32 sec, be32 nsec). */
static int rec_ext_time(const msgpack_object *o, struct record_time *t, char *why, size_t len)
{
	const unsigned char *p = (const unsigned char *)o->via.ext.ptr;
	uint32_t size = o->via.ext.size;
	msgpack_timestamp ts;

	if (o->via.ext.type == -1) {
		if (!msgpack_object_to_timestamp(o, &ts)) {
			snprintf(why, len, "malformed msgpack timestamp (ext -1, %" PRIu32
				 " bytes)", size);
			return -1;
		}
		t->sec = ts.tv_sec;
		t->nsec = ts.tv_nsec;
	} else if (o->via.ext.type == 0 && size == 8) {
		t->sec = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
				   (uint32_t)p[2] << 8 | p[3]);
		t->nsec = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
	} else if (o->via.ext.type == 0) {
		snprintf(why, len, "EventTime (ext 0) must have 8 bytes, got %" PRIu32, size);
		return -1;
	} else {
		snprintf(why, len, "ext type %d of %" PRIu32 " bytes is not a timestamp",
			 o->via.ext.type, size);
		return -1;
	}
	if (t->nsec >= 1000000000u) {
		snprintf(why, len, "%s nanoseconds %" PRIu32 " are over 999999999",
			 o->via.ext.type ? "msgpack timestamp" : "EventTime", t->nsec);
		return -1;
	}
	if (t->sec < REC_MIN_SEC || t->sec > REC_MAX_SEC) {
		snprintf(why, len, "%s of %" PRId64 " epoch seconds is outside years 1..9999",
			 o->via.ext.type ? "msgpack timestamp" : "EventTime", t->sec);
		return -1;
	}
	return 0;
}

/* Float epoch seconds, rounded to the nearest microsecond (a double near
 * 1.7e9 carries about 0.24 us, so truncating would turn .000001 into
 * .000000 and .123456 into .123455). */
static int rec_float_time(double f, struct record_time *t, char *why, size_t len)
{
	int64_t usec;

	if (!isfinite(f)) {
		snprintf(why, len, "%g is not a time", f);
		return -1;
	}
	if (!(f >= (double)REC_MIN_SEC && f < (double)REC_MAX_SEC + 1.0)) {
		snprintf(why, len, "%.17g epoch seconds is outside years 1..9999", f);
		return -1;
	}
	t->sec = (int64_t)f; /* toward zero; the range check above keeps it exact */
	if ((double)t->sec > f)
		t->sec--;
	usec = (int64_t)((f - (double)t->sec) * 1e6 + 0.5);
	if (usec >= 1000000) {
		t->sec++;
		usec -= 1000000;
	}
	t->nsec = (uint32_t)usec * 1000u;
	if (t->sec > REC_MAX_SEC) {
		snprintf(why, len, "%.17g epoch seconds is outside years 1..9999", f);
		return -1;
	}
	return 0;
}

/* Integer epoch seconds, either of msgpack's two integer types. */
static int rec_int_time(const msgpack_object *o, struct record_time *t, char *why, size_t len)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > (uint64_t)REC_MAX_SEC) {
			snprintf(why, len, "%" PRIu64 " epoch seconds is outside years 1..9999",
				 o->via.u64);
			return -1;
		}
		*t = (struct record_time){ (int64_t)o->via.u64, 0 };
		return 0;
	}
	if (o->via.i64 < REC_MIN_SEC) {
		snprintf(why, len, "%" PRId64 " epoch seconds is outside years 1..9999", o->via.i64);
		return -1;
	}
	*t = (struct record_time){ o->via.i64, 0 };
	return 0;
}

int record_time_from_msgpack(const msgpack_object *o, struct record_time *t, char *why,
			     size_t len)
{
	switch (o->type) {
	case MSGPACK_OBJECT_EXT:
		return rec_ext_time(o, t, why, len);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return rec_int_time(o, t, why, len);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return rec_float_time(o->via.f64, t, why, len);
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		return rec_parse_time(o->via.str.ptr, o->via.str.size, t, why, len);
	default:
		snprintf(why, len, "expected timestamp, got %s", json_type_name(o));
		return RECORD_TIME_WRONG_TYPE;
	}
}

/* ---- PostgreSQL's binary form ------------------------------------------ */

#define REC_PG_EPOCH_SEC INT64_C(946684800) /* 2000-01-01T00:00:00Z */

int record_time_pg_usec(const char *s, size_t len, int64_t *usec)
{
	struct record_time t;
	char why[8]; /* not reported */

	/* Only the UTC text record_time_format writes. */
	if (len != RECORD_TIME_LEN || memcmp(s + len - 3, "+00", 3) != 0 ||
	    rec_parse_time(s, len, &t, why, sizeof(why)) != 0)
		return -1;
	*usec = (t.sec - REC_PG_EPOCH_SEC) * INT64_C(1000000) + t.nsec / 1000;
	return 0;
}
