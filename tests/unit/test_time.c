/*
 * test_time.c: every msgpack time form a client may send, through a
 * timestamp column (record_from_map), and every refusal with its reason.
 * The Forward entry time reads the same parser; test_proto.c checks that
 * both paths give the same instant.
 */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "record.h"
#include "unit.h"

static msgpack_sbuffer sb;
static msgpack_packer pk;
static struct record_error err;

/* The packer holds one value: the time. Build {"mg_record_type":
 * "generation", "mg_deleted_at": value} around it and map it. Returns the
 * column's text (static) or NULL with ERR filled. */
static const char *take(void)
{
	static char out[64];
	msgpack_sbuffer ev;
	msgpack_packer ep;
	msgpack_unpacked up;
	struct record_ctx ctx = { .peer = "test", .recv_ns = 1 };
	struct record *r = NULL;
	const char *v;

	msgpack_sbuffer_init(&ev);
	msgpack_packer_init(&ep, &ev, msgpack_sbuffer_write);
	msgpack_pack_map(&ep, 2);
	msgpack_pack_str_with_body(&ep, "mg_record_type", 14);
	msgpack_pack_str_with_body(&ep, "generation", 10);
	msgpack_pack_str_with_body(&ep, "mg_deleted_at", 13);
	msgpack_sbuffer_write(&ev, sb.data, sb.size);
	msgpack_sbuffer_clear(&sb);
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, ev.data, ev.size, NULL) != MSGPACK_UNPACK_SUCCESS)
		exit(2);
	memset(&err, 0, sizeof(err));
	if (record_from_map(&up.data, &ctx, &r, &err) != 0) {
		v = NULL;
	} else {
		v = record_get(r, TABLE_GEN_DELETED_AT);
		snprintf(out, sizeof(out), "%s", v ? v : "(absent)");
		v = out;
		record_free(r);
	}
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&ev);
	return v;
}

static const char *text(const char *s)
{
	msgpack_pack_str_with_body(&pk, s, strlen(s));
	return take();
}

static const char *ext(int8_t type, const void *p, size_t n)
{
	msgpack_pack_ext_with_body(&pk, p, n, type);
	return take();
}

/* ---- accepted ------------------------------------------------------------ */

static void test_numbers(void)
{
	msgpack_pack_uint64(&pk, 1700000000);
	CHECK_STR(take(), "2023-11-14 22:13:20.000000+00");
	msgpack_pack_int64(&pk, -1);
	CHECK_STR(take(), "1969-12-31 23:59:59.000000+00");
	msgpack_pack_int64(&pk, INT64_C(-62135596800));
	CHECK_STR(take(), "0001-01-01 00:00:00.000000+00");
	msgpack_pack_uint64(&pk, UINT64_C(253402300799));
	CHECK_STR(take(), "9999-12-31 23:59:59.000000+00");
	/* Floats: the nearest microsecond, what the client meant. */
	msgpack_pack_double(&pk, 1700000000.000001);
	CHECK_STR(take(), "2023-11-14 22:13:20.000001+00");
	msgpack_pack_double(&pk, 1700000000.123456);
	CHECK_STR(take(), "2023-11-14 22:13:20.123456+00");
	msgpack_pack_double(&pk, 1700000000.9999997);
	CHECK_STR(take(), "2023-11-14 22:13:21.000000+00");
	msgpack_pack_double(&pk, -0.000001);
	CHECK_STR(take(), "1969-12-31 23:59:59.999999+00");
	msgpack_pack_double(&pk, -1.5);
	CHECK_STR(take(), "1969-12-31 23:59:58.500000+00");
	msgpack_pack_float(&pk, 1700000000.0f);
	CHECK_STR(take(), "2023-11-14 22:13:20.000000+00");
}

static void test_exts(void)
{
	/* EventTime: be32 1700000000, be32 123456789 (ns truncated to us). */
	CHECK_STR(ext(0, "\x65\x53\xf1\x00\x07\x5b\xcd\x15", 8), "2023-11-14 22:13:20.123456+00");
	/* EventTime's seconds are unsigned: 0xffffffff is 2106. */
	CHECK_STR(ext(0, "\xff\xff\xff\xff\x00\x00\x00\x00", 8), "2106-02-07 06:28:15.000000+00");
	CHECK_STR(ext(-1, "\x65\x53\xf1\x00", 4), "2023-11-14 22:13:20.000000+00");
	/* timestamp 64: nsec 1000 << 34 | sec 1700000000 */
	CHECK_STR(ext(-1, "\x00\x00\x0f\xa0\x65\x53\xf1\x00", 8), "2023-11-14 22:13:20.000001+00");
	/* timestamp 96: nsec 500000000, sec -1 */
	CHECK_STR(ext(-1, "\x1d\xcd\x65\x00\xff\xff\xff\xff\xff\xff\xff\xff", 12),
		  "1969-12-31 23:59:59.500000+00");
}

static void test_text(void)
{
	static const struct {
		const char *in, *want;
	} good[] = {
		{ "2026-12-06T19:57:03Z", "2026-12-06 19:57:03.000000+00" },
		{ "2026-12-06t19:57:03z", "2026-12-06 19:57:03.000000+00" },
		/* PostgreSQL's own output, as SELECT mg_created_at::text prints it */
		{ "2026-12-06 19:57:03+00", "2026-12-06 19:57:03.000000+00" },
		{ "2026-12-06 19:57:03.123456+00", "2026-12-06 19:57:03.123456+00" },
		{ "2026-12-06 19:57:03.123456+05:30", "2026-12-06 14:27:03.123456+00" },
		{ "2026-12-06 19:57:03.5-03", "2026-12-06 22:57:03.500000+00" },
		{ "1900-01-01 00:00:00+00:19:32", "1899-12-31 23:40:28.000000+00" },
		/* ISO 8601 offsets */
		{ "2026-12-06T19:57:03+05", "2026-12-06 14:57:03.000000+00" },
		{ "2026-12-06T19:57:03-05", "2026-12-07 00:57:03.000000+00" },
		{ "2026-12-06T19:57:03+0530", "2026-12-06 14:27:03.000000+00" },
		{ "2026-12-06T19:57:03-0930", "2026-12-07 05:27:03.000000+00" },
		{ "2026-12-06T19:57:03+05:30", "2026-12-06 14:27:03.000000+00" },
		{ "2026-12-06T19:57:03-00:00", "2026-12-06 19:57:03.000000+00" },
		{ "2026-12-06T19:57:03+23:59", "2026-12-05 19:58:03.000000+00" },
		{ "2026-12-06T19:57:03.1234567891234Z", "2026-12-06 19:57:03.123456+00" },
		{ "2016-12-31T23:59:60Z", "2017-01-01 00:00:00.000000+00" },
		{ "0001-01-01 00:00:00+00", "0001-01-01 00:00:00.000000+00" },
		{ "9999-12-31 23:59:59.999999+00", "9999-12-31 23:59:59.999999+00" },
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const char *got = text(good[i].in);

		if (!got)
			fprintf(stderr, "  refused %s: %s\n", good[i].in, err.message);
		CHECK_STR(got, good[i].want);
	}
	msgpack_pack_bin_with_body(&pk, "2026-12-06 19:57:03+00", 22);
	CHECK_STR(take(), "2026-12-06 19:57:03.000000+00");
}

/* ---- refused, each with its reason ---------------------------------------- */

static void check_refused(const char *got, enum record_reason reason, const char *message)
{
	CHECK(got == NULL);
	CHECK(err.reason == reason);
	CHECK_STR(err.field, "mg_deleted_at");
	CHECK_STR(err.message, message);
}

#define TS RECORD_REASON_BAD_TIMESTAMP
#define OFFSET_FORMS "is not Z, +HH, +HHMM or +HH:MM"
#define OFFSET_RANGE "is out of range (hours 00..23, minutes and seconds 00..59)"

static void test_text_refused(void)
{
	static const struct {
		const char *in, *why;
	} bad[] = {
		{ "2026-12-06 19:57:03+5", "offset \"+5\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03+123", "offset \"+123\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03+12:3", "offset \"+12:3\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03+12:345", "offset \"+12:345\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03+123456", "offset \"+123456\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03+12:34:5", "offset \"+12:34:5\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03+1a", "offset \"+1a\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03 +00", "offset \" +00\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03Z ", "offset \"Z \" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03UTC", "offset \"UTC\" " OFFSET_FORMS },
		{ "0044-03-15 00:00:00+00 BC", "offset \"+00 BC\" " OFFSET_FORMS },
		{ "2026-12-06 19:57:03+24", "offset \"+24\" " OFFSET_RANGE },
		{ "2026-12-06 19:57:03+2400", "offset \"+2400\" " OFFSET_RANGE },
		{ "2026-12-06 19:57:03-23:60", "offset \"-23:60\" " OFFSET_RANGE },
		{ "2026-12-06 19:57:03+05:30:60", "offset \"+05:30:60\" " OFFSET_RANGE },
		{ "2026-12-06 19:57:03", "no offset: end it with Z, +HH, +HHMM or +HH:MM" },
		{ "2026-12-06 19:57:03.", "'.' without digits after it" },
		{ "2026-12-06 19:57:03.+00", "'.' without digits after it" },
		{ "2026-02-29 00:00:00+00", "2026-02-29 is not a date" },
		{ "2026-13-01 00:00:00+00", "2026-13-01 is not a date" },
		{ "0000-01-01 00:00:00+00", "0000-01-01 is not a date" },
		{ "2026-12-06 24:00:00+00", "24:00:00 is not a time of day" },
		{ "2026-12-06 23:59:61+00", "23:59:61 is not a time of day" },
		{ "0001-01-01 00:00:00+00:01", "outside years 1..9999 in UTC" },
		{ "9999-12-31 23:59:59-01", "outside years 1..9999 in UTC" },
	};
	static const char *const layout[] = {
		"", "infinity", "2026-12-06", "2026-12-06 19:57+00", "2026/12/06 19:57:03+00",
		"2026-12-06X19:57:03+00", "+026-12-06 19:57:03+00", "2026-1a-06 19:57:03+00",
		"12026-12-06 19:57:03+00",
	};
	char want[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(want, sizeof(want), "mg_deleted_at: \"%s\" is not a timestamp: %s",
			 bad[i].in, bad[i].why);
		check_refused(text(bad[i].in), TS, want);
	}
	for (size_t i = 0; i < sizeof(layout) / sizeof(layout[0]); i++) {
		snprintf(want, sizeof(want), "mg_deleted_at: \"%s\" is not a timestamp: expected "
			 "YYYY-MM-DD, 'T' or a space, HH:MM:SS[.fraction] and an offset",
			 layout[i]);
		check_refused(text(layout[i]), TS, want);
	}
	/* Client bytes in the reason are cleaned and cut. */
	check_refused(text("2026-12-06 19:57:03+00\n\x01 and a long tail of text after it"), TS,
		      "mg_deleted_at: \"2026-12-06 19:57:03+00?? and a long tail of text...\" "
		      "is not a timestamp: offset \"+00?? and a long tail of text after it\" "
		      OFFSET_FORMS);
}

static void test_other_refused(void)
{
	msgpack_pack_uint64(&pk, UINT64_C(253402300800));
	check_refused(take(), TS, "mg_deleted_at: 253402300800 epoch seconds is outside years "
		      "1..9999");
	msgpack_pack_int64(&pk, INT64_C(-62135596801));
	check_refused(take(), TS, "mg_deleted_at: -62135596801 epoch seconds is outside years "
		      "1..9999");
	msgpack_pack_double(&pk, 1e300);
	check_refused(take(), TS, "mg_deleted_at: 1.0000000000000001e+300 epoch seconds is "
		      "outside years 1..9999");
	msgpack_pack_double(&pk, NAN);
	check_refused(take(), TS, "mg_deleted_at: nan is not a time");
	msgpack_pack_double(&pk, -INFINITY);
	check_refused(take(), TS, "mg_deleted_at: -inf is not a time");
	check_refused(ext(0, "\x65\x53\xf1\x00\x07", 5), TS,
		      "mg_deleted_at: EventTime (ext 0) must have 8 bytes, got 5");
	check_refused(ext(0, "\x65\x53\xf1\x00\x3b\x9a\xca\x00", 8), TS,
		      "mg_deleted_at: EventTime nanoseconds 1000000000 are over 999999999");
	check_refused(ext(-1, "\x01\x02\x03", 3), TS,
		      "mg_deleted_at: malformed msgpack timestamp (ext -1, 3 bytes)");
	/* timestamp 96 of second 253402300800 (year 10000) */
	check_refused(ext(-1, "\x00\x00\x00\x00\x00\x00\x00\x3b\x00\x00\x00\x00", 12), TS,
		      "mg_deleted_at: msgpack timestamp of 253403070464 epoch seconds is outside "
		      "years 1..9999");
	check_refused(ext(9, "\x01", 1), TS, "mg_deleted_at: ext type 9 of 1 bytes is not a "
		      "timestamp");
	msgpack_pack_true(&pk);
	check_refused(take(), RECORD_REASON_BAD_TYPE, "mg_deleted_at: expected timestamp, got bool");
	msgpack_pack_array(&pk, 0);
	check_refused(take(), RECORD_REASON_BAD_TYPE, "mg_deleted_at: expected timestamp, got "
		      "array");
}

/* record_parse_rfc3339 (dead-letter lines' times, for megactl replay)
 * reads the same text forms. */
static void test_parse_ns(void)
{
	int64_t ns = 0;

	CHECK(record_parse_rfc3339("2023-11-14 22:13:20.000001+00", 29, &ns) == 0);
	CHECK(ns == INT64_C(1700000000000001000));
	CHECK(record_parse_rfc3339("2023-11-15 03:43:20+0530", 24, &ns) == 0);
	CHECK(ns == INT64_C(1700000000000000000));
	CHECK(record_parse_rfc3339("2023-11-14 22:13:20+5", 21, &ns) == -1);
	CHECK(record_parse_rfc3339("1500-01-01 00:00:00+00", 22, &ns) == -1); /* not int64 ns */
}

int main(void)
{
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	test_numbers();
	test_exts();
	test_text();
	test_text_refused();
	test_other_refused();
	test_parse_ns();
	msgpack_sbuffer_destroy(&sb);
	return unit_done("test_time");
}
