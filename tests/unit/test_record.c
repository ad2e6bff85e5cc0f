/*
 * test_record.c: msgpack map -> struct record. Events are packed with
 * msgpack_packer and unpacked again, as the decoder would see them; each
 * test checks the column text, or the rejection's reason, field and message.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "json.h"
#include "record.h"
#include "unit.h"

/* One event being packed, then unpacked. */
struct ev {
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked up;
};

static struct ev E;
static struct record_error err;
static struct record_ctx ctx;
static struct record *rec;

static void ev_begin(void)
{
	msgpack_sbuffer_init(&E.sb);
	msgpack_packer_init(&E.pk, &E.sb, msgpack_sbuffer_write);
}

static void ev_map(uint32_t n)
{
	ev_begin();
	msgpack_pack_map(&E.pk, n);
}

static void p_str(const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(&E.pk, n);
	msgpack_pack_str_body(&E.pk, s, n);
}

static void p_strn(const char *s, size_t n)
{
	msgpack_pack_str(&E.pk, n);
	msgpack_pack_str_body(&E.pk, s, n);
}

static void p_bin(const char *s, size_t n)
{
	msgpack_pack_bin(&E.pk, n);
	msgpack_pack_bin_body(&E.pk, s, n);
}

static void p_ext(int8_t type, const char *s, size_t n)
{
	msgpack_pack_ext(&E.pk, n, type);
	msgpack_pack_ext_body(&E.pk, s, n);
}

static void kv_str(const char *k, const char *v)
{
	p_str(k);
	p_str(v);
}

static void kv_int(const char *k, int64_t v)
{
	p_str(k);
	msgpack_pack_int64(&E.pk, v);
}

static void ctx_reset(void)
{
	memset(&ctx, 0, sizeof(ctx));
	ctx.peer = "unix";
	ctx.recv_ns = UINT64_C(1795576098123456789); /* 2026-11-25 03:08:18.123456789 */
}

/* Unpack the packed event and run record_from_map; returns its result. */
static int ev_run(void)
{
	int rc;

	msgpack_unpacked_init(&E.up);
	if (msgpack_unpack_next(&E.up, E.sb.data, E.sb.size, NULL) != MSGPACK_UNPACK_SUCCESS)
		abort();
	record_free(rec);
	rec = NULL;
	memset(&err, 0, sizeof(err));
	rc = record_from_map(&E.up.data, &ctx, &rec, &err);
	msgpack_unpacked_destroy(&E.up);
	msgpack_sbuffer_destroy(&E.sb);
	CHECK((rc == 0) == (rec != NULL));
	return rc;
}

/* The event must be rejected with REASON, FIELD and exactly MESSAGE. */
static void want_reject(enum record_reason reason, const char *field, const char *message)
{
	int rc = ev_run();

	CHECK(rc == -1);
	CHECK(err.reason == reason);
	if (err.reason != reason)
		fprintf(stderr, "  reason %s, wanted %s (%s)\n", record_reason_label(err.reason),
			record_reason_label(reason), err.message);
	CHECK_STR(err.field, field);
	CHECK_STR(err.message, message);
}

static const char *col(int i)
{
	return rec ? record_get(rec, i) : NULL;
}

/* A one-key event besides mg_record_type "generation". */
static void ev_one_str(const char *k, const char *v)
{
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_str(k, v);
}

static void test_labels_and_lookup(void)
{
	static const char *const labels[RECORD_REASON_COUNT] = {
		"not_a_map", "bad_key", "bad_type", "bad_utf8", "nul_byte", "out_of_range",
		"too_long", "bad_timestamp", "bad_meta", "missing_record_type",
		"unknown_record_type", "bad_id", "bad_frame", "unknown_pass_id", "refused", "not_an_event",
	};

	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		CHECK_STR(record_reason_label((enum record_reason)i), labels[i]);
	for (int i = 0; i < TABLE_GEN_COUNT; i++) {
		const char *name = table_generations.cols[i].name;

		CHECK(strncmp(name, "mg_", 3) == 0);
		CHECK(record_column_find(0, name, strlen(name)) == i);
		CHECK(record_column_find(0, name + 3, strlen(name) - 3) == i);
		/* Names are compared by words: any one byte changed is no match. */
		for (size_t k = 0; k < strlen(name); k++) {
			char near[32];

			snprintf(near, sizeof(near), "%s", name);
			near[k] ^= 0x20;
			CHECK(record_column_find(0, near, strlen(near)) != i);
			CHECK(k < 3 || record_column_find(0, near + 3, strlen(near) - 3) != i);
		}
	}
	CHECK(record_column_find(0, "prompt", 6) == TABLE_GEN_PROMPT);
	CHECK(record_column_find(0, "meta", 4) == TABLE_GEN_META);
	CHECK(record_column_find(0, "mg_updated_at", 13) == -1);
	CHECK(record_column_find(0, "updated_at", 10) == -1);
	CHECK(record_column_find(0, "mg_", 3) == -1);
	CHECK(record_column_find(0, "", 0) == -1);
	CHECK(record_column_find(0, "MG_ID", 5) == -1);
	CHECK(record_column_find(0, "mg_mg_id", 8) == -1);
	CHECK(record_column_find(0, "mg_idx", 6) == -1);
	CHECK(record_column_find(0, "mg_prompt", 8) == -1); /* length counts, not NUL */
	CHECK(record_column_find(0, "promptx", 7) == -1);
	CHECK(table_generations.cols[TABLE_GEN_ID].max_bytes == 256);
	CHECK(table_generations.cols[TABLE_GEN_MODEL].max_bytes == 1024);
	CHECK(table_generations.cols[TABLE_GEN_PROMPT].max_bytes == 0);
	CHECK(table_generations.cols[TABLE_GEN_LATENCY_MS].type == TABLE_TYPE_INT);
	CHECK(table_generations.cols[TABLE_GEN_DELETED_AT].type == TABLE_TYPE_TIMESTAMPTZ);
	CHECK(table_generations.cols[TABLE_GEN_META].type == TABLE_TYPE_JSONB);
}

/* Every column, by type: TEXT echoes, INT is decimal, TIMESTAMPTZ is UTC. */
static void test_every_column(void)
{
	char want[TABLE_GEN_COUNT][64];
	size_t total = RECORD_HEADER_SIZE;

	ctx_reset();
	ev_map(TABLE_GEN_COUNT);
	for (int i = 0; i < TABLE_GEN_COUNT; i++) {
		const struct table_column *c = &table_generations.cols[i];

		p_str(c->name);
		switch (c->type) {
		case TABLE_TYPE_TEXT:
			snprintf(want[i], sizeof(want[i]), "v-%s", c->name);
			if (i == TABLE_GEN_RECORD_TYPE)
				snprintf(want[i], sizeof(want[i]), "session");
			p_str(want[i]);
			break;
		case TABLE_TYPE_INT:
			msgpack_pack_int(&E.pk, -i);
			snprintf(want[i], sizeof(want[i]), "%d", -i);
			break;
		case TABLE_TYPE_TIMESTAMPTZ:
			msgpack_pack_uint32(&E.pk, 1764040098u + (unsigned)i);
			snprintf(want[i], sizeof(want[i]), "2025-11-25 03:%02d:%02d.000000+00",
				 (18 + i) / 60 + 8, (18 + i) % 60);
			break;
		default:
			msgpack_pack_map(&E.pk, 1);
			kv_int("k", 1);
			snprintf(want[i], sizeof(want[i]), "{\"k\":1}");
			break;
		}
	}
	CHECK(ev_run() == 0);
	for (int i = 0; i < TABLE_GEN_COUNT; i++) {
		CHECK_STR(col(i), want[i]);
		if (rec) {
			CHECK(rec->len[i] == strlen(want[i]));
			total += rec->len[i] + 1;
		}
	}
	CHECK_STR(col(RECORD_SLOT_PEER), "unix");
	CHECK(col(RECORD_SLOT_TAG) == NULL);
	if (rec) {
		total += 5;
		CHECK(rec->size == total);
		CHECK(rec->ack == NULL);
		CHECK(rec->recv_ns == ctx.recv_ns);
	}
}

static void test_aliases_and_nil(void)
{
	ctx_reset();
	ev_map(6);
	kv_str("record_type", "feedback");
	kv_str("prompt", "draw a cat");
	kv_str("mg_status", "pending");
	p_str("mg_model");
	msgpack_pack_nil(&E.pk);
	p_str("latency_ms");
	msgpack_pack_nil(&E.pk);
	p_str("mg_meta");
	msgpack_pack_nil(&E.pk);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_RECORD_TYPE), "feedback");
	CHECK_STR(col(TABLE_GEN_PROMPT), "draw a cat");
	CHECK_STR(col(TABLE_GEN_STATUS), "pending");
	CHECK(col(TABLE_GEN_MODEL) == NULL);
	CHECK(col(TABLE_GEN_LATENCY_MS) == NULL);
	CHECK(col(TABLE_GEN_META) == NULL);
	CHECK(col(TABLE_GEN_PASS_ID) == NULL);
	CHECK(col(TABLE_GEN_DELETED_AT) == NULL);
	CHECK(rec && rec->len[TABLE_GEN_MODEL] == RECORD_ABSENT);
	/* A later nil takes back an earlier value. */
	ev_map(3);
	kv_str("mg_record_type", "session");
	kv_str("mg_model", "m1");
	p_str("model");
	msgpack_pack_nil(&E.pk);
	CHECK(ev_run() == 0);
	CHECK(col(TABLE_GEN_MODEL) == NULL);
}

static void test_rejections(void)
{
	ctx_reset();
	ev_begin();
	msgpack_pack_array(&E.pk, 0);
	want_reject(RECORD_REASON_NOT_A_MAP, "", "event is array, not a map");

	ev_map(3);
	kv_str("mg_record_type", "generation");
	kv_str("a", "b");
	msgpack_pack_int(&E.pk, 5);
	kv_str("", "");
	want_reject(RECORD_REASON_BAD_KEY, "", "key #3: expected string, got int");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_bin("\xff", 1);
	p_str("v");
	want_reject(RECORD_REASON_BAD_KEY, "", "key #2: not valid UTF-8 (byte 0)");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_int("mg_status", 3);
	want_reject(RECORD_REASON_BAD_TYPE, "mg_status", "mg_status: expected string, got int");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("latency_ms");
	msgpack_pack_double(&E.pk, 12.0);
	want_reject(RECORD_REASON_BAD_TYPE, "mg_latency_ms",
		    "mg_latency_ms: expected integer, got float");

	ev_one_str("mg_delta", "5");
	want_reject(RECORD_REASON_BAD_TYPE, "mg_delta", "mg_delta: expected integer, got str");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_input_tokens");
	msgpack_pack_true(&E.pk);
	want_reject(RECORD_REASON_BAD_TYPE, "mg_input_tokens",
		    "mg_input_tokens: expected integer, got bool");

	ev_one_str("mg_meta", "{}");
	want_reject(RECORD_REASON_BAD_TYPE, "mg_meta", "mg_meta: expected map, got str");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_created_at");
	msgpack_pack_false(&E.pk);
	want_reject(RECORD_REASON_BAD_TYPE, "mg_created_at",
		    "mg_created_at: expected timestamp, got bool");

}

static void test_text_rejections(void)
{
	char big[1501];

	ctx_reset();
	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_prompt");
	p_strn("seventeen bytes!!\xff tail", 23);
	want_reject(RECORD_REASON_BAD_UTF8, "mg_prompt", "mg_prompt: not valid UTF-8 (byte 17)");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_title");
	p_strn("ab\0c", 4);
	want_reject(RECORD_REASON_NUL_BYTE, "mg_title",
		    "mg_title: holds a NUL byte (byte 2), which PostgreSQL text cannot store");

	memset(big, 'm', 1500);
	big[1500] = '\0';
	ev_one_str("mg_model", big);
	want_reject(RECORD_REASON_TOO_LONG, "mg_model",
		    "mg_model: 1500 bytes, longer than the 1024 allowed");
	big[257] = '\0';
	ev_one_str("mg_pass_id", big);
	want_reject(RECORD_REASON_TOO_LONG, "mg_pass_id",
		    "mg_pass_id: 257 bytes, longer than the 256 allowed");
	big[256] = '\0';
	ev_one_str("mg_pass_id", big);
	CHECK(ev_run() == 0);

	ev_one_str("mg_id", "");
	want_reject(RECORD_REASON_BAD_ID, "mg_id", "mg_id: empty string");
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_int("mg_id", 7);
	want_reject(RECORD_REASON_BAD_TYPE, "mg_id", "mg_id: expected string, got int");
}

static void test_record_type(void)
{
	ctx_reset();
	ev_map(1);
	kv_str("mg_prompt", "p");
	want_reject(RECORD_REASON_MISSING_TYPE, "mg_record_type",
		    "mg_record_type: missing, and no tag to derive it from");
	ev_map(1);
	kv_str("mg_record_type", "foo");
	want_reject(RECORD_REASON_UNKNOWN_TYPE, "mg_record_type",
		    "mg_record_type: unknown record type \"foo\" (expected generation, "
		    "session, feedback, credit_transaction, admin_audit or admin_session)");
	ev_map(1);
	kv_str("mg_record_type", "Generation");
	CHECK(ev_run() == -1);
	CHECK(err.reason == RECORD_REASON_UNKNOWN_TYPE);

	ctx.tag = "mega.feedback";
	ctx.tag_len = strlen(ctx.tag);
	ev_map(1);
	kv_str("mg_prompt", "p");
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_RECORD_TYPE), "feedback");
	CHECK_STR(col(RECORD_SLOT_TAG), "mega.feedback");
	/* The event's own value wins over the tag. */
	ev_map(1);
	kv_str("mg_record_type", "credit_transaction");
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_RECORD_TYPE), "credit_transaction");

	ctx.tag = "session";
	ctx.tag_len = 7;
	ev_map(0);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_RECORD_TYPE), "session");

	ctx.tag = "mega.foo";
	ctx.tag_len = 8;
	ev_map(0);
	want_reject(RECORD_REASON_UNKNOWN_TYPE, "mg_record_type",
		    "mg_record_type: unknown record type \"foo\" from tag \"mega.foo\" "
		    "(expected generation, session, feedback, credit_transaction, admin_audit or admin_session)");

	/* A tag that is not UTF-8 still names the type, but is not kept. */
	ctx.tag = "\xff.generation";
	ctx.tag_len = strlen(ctx.tag);
	ev_map(0);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_RECORD_TYPE), "generation");
	CHECK(col(RECORD_SLOT_TAG) == NULL);
}

static void test_int4_bounds(void)
{
	static const struct {
		int64_t v;
		const char *text;
	} ok[] = {
		{ 2147483647, "2147483647" }, { -2147483647 - 1, "-2147483648" },
		{ 0, "0" }, { -1, "-1" }, { 1500, "1500" },
	};

	ctx_reset();
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ev_map(2);
		kv_str("mg_record_type", "credit_transaction");
		kv_int("mg_delta", ok[i].v);
		CHECK(ev_run() == 0);
		CHECK_STR(col(TABLE_GEN_DELTA), ok[i].text);
	}
	/* 1, 9, 10, 99, ... 10^9: every digit count, both signs, against printf. */
	for (int64_t m = 1, step = 0; step < 19; step++, m = step % 2 ? m * 10 - 1 : m + 1) {
		for (int sign = -1; sign <= 1; sign += 2) {
			char want[24];

			snprintf(want, sizeof(want), "%" PRId64, sign * m);
			ev_map(2);
			kv_str("mg_record_type", "credit_transaction");
			kv_int("mg_delta", sign * m);
			CHECK(ev_run() == 0);
			CHECK_STR(col(TABLE_GEN_DELTA), want);
		}
	}
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_int("mg_latency_ms", 2147483648);
	want_reject(RECORD_REASON_OUT_OF_RANGE, "mg_latency_ms",
		    "mg_latency_ms: 2147483648 is outside the int4 range");
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_int("mg_latency_ms", 3000000000);
	want_reject(RECORD_REASON_OUT_OF_RANGE, "mg_latency_ms",
		    "mg_latency_ms: 3000000000 is outside the int4 range");
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_int("mg_delta", -2147483649);
	want_reject(RECORD_REASON_OUT_OF_RANGE, "mg_delta",
		    "mg_delta: -2147483649 is outside the int4 range");
	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_delta");
	msgpack_pack_uint64(&E.pk, UINT64_MAX);
	want_reject(RECORD_REASON_OUT_OF_RANGE, "mg_delta",
		    "mg_delta: 18446744073709551615 is outside the int4 range");
}

/* mg_deleted_at from whatever the packer call left as the last value. */
static const char *time_of(void (*pack)(void))
{
	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_deleted_at");
	pack();
	if (ev_run() != 0)
		return NULL;
	return col(TABLE_GEN_DELETED_AT);
}

static void t_ext32(void) { p_ext(-1, "\x6b\x06\x51\x22", 4); }
static void t_ext96(void)
{
	p_ext(-1, "\x1d\xcd\x65\x00\xff\xff\xff\xff\xff\xff\xff\xff", 12);
}
static void t_eventtime(void) { p_ext(0, "\x6b\x06\x51\x22\x07\x5b\xcd\x15", 8); }
static void t_uint(void) { msgpack_pack_uint64(&E.pk, 1764040098); }
static void t_neg(void) { msgpack_pack_int64(&E.pk, -1); }
static void t_float(void) { msgpack_pack_double(&E.pk, 1764040098.123456); }
static void t_neg_float(void) { msgpack_pack_double(&E.pk, -1.5); }
static void t_float_carry(void) { msgpack_pack_double(&E.pk, 1764040098.9999996); }
static void t_rfc(void) { p_str("2026-11-25T03:08:18.123456+05:30"); }
static void t_rfc_bin(void) { p_bin("2026-11-25 03:08:18z", 20); }
static void t_bad_rfc(void) { p_str("2026-02-29T00:00:00Z"); }
static void t_bad_ext(void) { p_ext(-1, "\x01\x02\x03", 3); }
static void t_other_ext(void) { p_ext(9, "\x01", 1); }
static void t_ms(void) { msgpack_pack_uint64(&E.pk, UINT64_C(1764040098123)); }
static void t_nan(void) { msgpack_pack_double(&E.pk, 0.0 / 0.0); }
static void t_ts64(void)
{
	char b[8];
	uint64_t v = ((uint64_t)999999 << 34) | 1795576098u;

	for (int i = 0; i < 8; i++)
		b[i] = (char)(v >> (56 - 8 * i));
	p_ext(-1, b, 8);
}

static void test_timestamp_inputs(void)
{
	ctx_reset();
	CHECK_STR(time_of(t_ext32), "2026-11-25 03:08:18.000000+00");
	CHECK_STR(time_of(t_ts64), "2026-11-25 03:08:18.000999+00");
	CHECK_STR(time_of(t_ext96), "1969-12-31 23:59:59.500000+00");
	CHECK_STR(time_of(t_eventtime), "2026-11-25 03:08:18.123456+00"); /* ns truncated */
	CHECK_STR(time_of(t_uint), "2025-11-25 03:08:18.000000+00");
	CHECK_STR(time_of(t_neg), "1969-12-31 23:59:59.000000+00");
	CHECK_STR(time_of(t_float), "2025-11-25 03:08:18.123456+00");
	CHECK_STR(time_of(t_float_carry), "2025-11-25 03:08:19.000000+00");
	CHECK_STR(time_of(t_neg_float), "1969-12-31 23:59:58.500000+00");
	CHECK_STR(time_of(t_rfc), "2026-11-24 21:38:18.123456+00");
	CHECK_STR(time_of(t_rfc_bin), "2026-11-25 03:08:18.000000+00");

	CHECK(time_of(t_bad_rfc) == NULL);
	CHECK(err.reason == RECORD_REASON_BAD_TIMESTAMP);
	CHECK_STR(err.field, "mg_deleted_at");
	CHECK_STR(err.message, "mg_deleted_at: \"2026-02-29T00:00:00Z\" is not a timestamp: "
		  "2026-02-29 is not a date");
	CHECK(time_of(t_bad_ext) == NULL);
	CHECK(err.reason == RECORD_REASON_BAD_TIMESTAMP);
	CHECK_STR(err.message, "mg_deleted_at: malformed msgpack timestamp (ext -1, 3 bytes)");
	CHECK(time_of(t_other_ext) == NULL);
	CHECK(err.reason == RECORD_REASON_BAD_TIMESTAMP);
	CHECK_STR(err.message, "mg_deleted_at: ext type 9 of 1 bytes is not a timestamp");
	CHECK(time_of(t_ms) == NULL);
	CHECK(err.reason == RECORD_REASON_BAD_TIMESTAMP);
	CHECK_STR(err.message, "mg_deleted_at: 1764040098123 epoch seconds is outside years "
		  "1..9999");
	CHECK(time_of(t_nan) == NULL);
	CHECK(err.reason == RECORD_REASON_BAD_TIMESTAMP);
}

static void test_rfc3339_table(void)
{
	static const struct {
		const char *s;
		int64_t ns;
	} good[] = {
		{ "2026-11-25T03:08:18Z", INT64_C(1795576098000000000) },
		{ "2026-11-25t03:08:18z", INT64_C(1795576098000000000) },
		{ "2026-11-25 03:08:18Z", INT64_C(1795576098000000000) },
		{ "2026-11-25T03:08:18.123456789Z", INT64_C(1795576098123456789) },
		{ "2026-11-25T03:08:18.1Z", INT64_C(1795576098100000000) },
		{ "2026-11-25T03:08:18.1234567891234Z", INT64_C(1795576098123456789) },
		{ "2026-11-25T08:38:18.123456+05:30", INT64_C(1795576098123456000) },
		{ "2026-11-24T23:08:18-04:00", INT64_C(1795576098000000000) },
		{ "2026-11-25T08:38:18+0530", INT64_C(1795576098000000000) },
		{ "2026-11-25 03:08:18+00", INT64_C(1795576098000000000) },
		{ "1970-01-01T00:00:00Z", 0 },
		{ "1969-12-31T23:59:59.5Z", INT64_C(-500000000) },
		{ "2024-02-29T00:00:00Z", INT64_C(1709164800000000000) },
		{ "2000-02-29T12:00:00Z", INT64_C(951825600000000000) },
		{ "2016-12-31T23:59:60Z", INT64_C(1483228800000000000) },
	};
	static const char *const bad[] = {
		"", "2026-11-25", "2026-11-25T03:08Z", "2026-11-25T03:08:18",
		"2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-11-00T00:00:00Z",
		"2026-11-31T00:00:00Z", "2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
		"2026-11-25T24:00:00Z", "2026-11-25T23:60:00Z", "2026-11-25T23:59:61Z",
		"2026-11-25T03:08:18.Z", "2026-11-25T03:08:18+530", "2026-11-25T03:08:18+24:00",
		"2026-11-25T03:08:18+05:60", "2026-11-25X03:08:18Z", "2026-11-25T03:08:18Zjunk",
		"0000-01-01T00:00:00Z", "+026-11-25T03:08:18Z", "2026-1a-25T03:08:18Z",
		"2026-11-25T03:08:18 Z", "2026/11/25T03:08:18Z",
		"1500-01-01T00:00:00Z", /* fine RFC 3339, but beyond int64 ns */
	};
	int64_t ns;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ns = -42;
		CHECK(record_parse_rfc3339(good[i].s, strlen(good[i].s), &ns) == 0);
		if (ns != good[i].ns)
			fprintf(stderr, "  %s -> %" PRId64 "\n", good[i].s, ns);
		CHECK(ns == good[i].ns);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = record_parse_rfc3339(bad[i], strlen(bad[i]), &ns);

		if (rc == 0)
			fprintf(stderr, "  accepted bad: %s\n", bad[i]);
		CHECK(rc == -1);
	}
	/* Length is what counts, not a NUL. */
	CHECK(record_parse_rfc3339("2026-11-25T03:08:18Zxx", 20, &ns) == 0);
}

static void test_years_1_to_9999(void)
{
	ctx_reset();
	ev_map(3);
	kv_str("mg_record_type", "generation");
	kv_str("mg_deleted_at", "0001-01-01T00:00:00Z");
	kv_str("mg_created_at", "9999-12-31T23:59:59.999999999Z");
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_DELETED_AT), "0001-01-01 00:00:00.000000+00");
	CHECK_STR(col(TABLE_GEN_CREATED_AT), "9999-12-31 23:59:59.999999+00");
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_str("mg_deleted_at", "0001-01-01T00:00:00+00:01"); /* year 0 in UTC */
	CHECK(ev_run() == -1);
	CHECK(err.reason == RECORD_REASON_BAD_TIMESTAMP);
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_int("mg_deleted_at", INT64_C(253402300800));
	CHECK(ev_run() == -1);
	CHECK(err.reason == RECORD_REASON_BAD_TIMESTAMP);
}

static void test_format_time(void)
{
	char buf[40];

	record_format_time(0, buf, sizeof(buf));
	CHECK_STR(buf, "1970-01-01 00:00:00.000000+00");
	record_format_time(INT64_C(1795576098123456789), buf, sizeof(buf));
	CHECK_STR(buf, "2026-11-25 03:08:18.123456+00");
	record_format_time(-1, buf, sizeof(buf));
	CHECK_STR(buf, "1969-12-31 23:59:59.999999+00");
	record_format_time(INT64_C(951782400000000000), buf, sizeof(buf)); /* leap day */
	CHECK_STR(buf, "2000-02-29 00:00:00.000000+00");
	record_format_time(INT64_C(-2208988800000000000), buf, sizeof(buf));
	CHECK_STR(buf, "1900-01-01 00:00:00.000000+00");
	record_format_time(0, buf, 11);
	CHECK_STR(buf, "1970-01-01");
}

/* The binary COPY form of a TIMESTAMPTZ column: microseconds since
 * 2000-01-01 UTC, from exactly the text record_format_time writes. */
static void test_time_pg_usec(void)
{
	static const int64_t ns[] = { 0, -1, INT64_C(1795576098123456789),
				      INT64_C(951782400000000000), INT64_C(-2208988800000000000) };
	char buf[40];
	int64_t us = 0;

	CHECK(record_time_pg_usec("2000-01-01 00:00:00.000000+00", 29, &us) == 0 && us == 0);
	CHECK(record_time_pg_usec("2026-11-25 03:08:18.123456+00", 29, &us) == 0 &&
	      us == INT64_C(848891298123456));
	CHECK(record_time_pg_usec("0001-01-01 00:00:00.000000+00", 29, &us) == 0 &&
	      us == INT64_C(-63082281600000000));
	CHECK(record_time_pg_usec("9999-12-31 23:59:59.999999+00", 29, &us) == 0 &&
	      us == INT64_C(252455615999999999));
	for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
		int64_t want = ns[i] / 1000 - INT64_C(946684800000000);

		if (ns[i] % 1000 < 0)
			want--; /* floor: -1 ns is the microsecond before the epoch */
		record_format_time(ns[i], buf, sizeof(buf));
		CHECK(record_time_pg_usec(buf, strlen(buf), &us) == 0);
		CHECK(us == want);
	}
	CHECK(record_time_pg_usec("2000-01-01 00:00:00+00", 22, &us) == -1);      /* short */
	CHECK(record_time_pg_usec("2000-01-01 00:00:00.000000+01", 29, &us) == -1); /* offset */
	CHECK(record_time_pg_usec("2000-02-30 00:00:00.000000+00", 29, &us) == -1); /* no day */
	CHECK(record_time_pg_usec("2000-01-01 0x:00:00.000000+00", 29, &us) == -1);
}

static void test_meta_merge(void)
{
	ctx_reset();
	ev_map(5);
	kv_str("mg_record_type", "generation");
	kv_str("x", "top");
	p_str("meta");
	msgpack_pack_map(&E.pk, 2);
	kv_int("a", 1);
	kv_str("x", "inner");
	p_str("zz");
	msgpack_pack_array(&E.pk, 2);
	msgpack_pack_true(&E.pk);
	msgpack_pack_nil(&E.pk);
	kv_str("mg_updated_at", "2026-01-01T00:00:00Z");
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_META), "{\"a\":1,\"x\":\"inner\",\"x\":\"top\",\"zz\":[true,null],"
		  "\"mg_updated_at\":\"2026-01-01T00:00:00Z\"}");
	CHECK(rec && rec->len[TABLE_GEN_META] == strlen(col(TABLE_GEN_META)));

	/* Only unknown keys. */
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_int("app_build", 77);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_META), "{\"app_build\":77}");

	/* Nothing for mg_meta: absent, not "{}". */
	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_meta");
	msgpack_pack_map(&E.pk, 0);
	CHECK(ev_run() == 0);
	CHECK(col(TABLE_GEN_META) == NULL);

	/* Keys that need escaping, or are long, take the JSON writer's path. */
	{
		char longkey[201];

		memset(longkey, 'k', 200);
		longkey[200] = '\0';
		ev_map(4);
		kv_str("mg_record_type", "generation");
		kv_int("we\"ird\\", 1);
		kv_int("\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", 2);
		kv_int(longkey, 3);
		CHECK(ev_run() == 0);
		CHECK_CONTAINS(col(TABLE_GEN_META), "{\"we\\\"ird\\\\\":1,"
			       "\"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\":2,\"kkkk");
		CHECK(rec && rec->len[TABLE_GEN_META] == 2 + 13 + 13 + 204 + 1);
	}

	ev_map(3);
	kv_str("mg_record_type", "generation");
	kv_int("back\\slash", 1);
	kv_int("tab\tkey", 2);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_META), "{\"back\\\\slash\":1,\"tab\\tkey\":2}");

	/* Bin key that is UTF-8 is a name like any other. */
	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_bin("k\xc3\xa9", 3);
	p_bin("v", 1);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_META), "{\"k\xc3\xa9\":\"v\"}");
}

/* The empty key "" as msgpack-c's streaming unpacker delivers it, with a
 * NULL ptr (found by fuzz_proto: memcpy from NULL, undefined even for 0
 * bytes). Built by hand: msgpack_unpack_next does not do the same. */
static void test_empty_key_with_null_ptr(void)
{
	msgpack_object_kv kv[2];
	msgpack_object m = { .type = MSGPACK_OBJECT_MAP };

	kv[0].key = (msgpack_object){ .type = MSGPACK_OBJECT_STR,
				      .via.str = { 14, "mg_record_type" } };
	kv[0].val = (msgpack_object){ .type = MSGPACK_OBJECT_STR,
				      .via.str = { 10, "generation" } };
	kv[1].key = (msgpack_object){ .type = MSGPACK_OBJECT_STR, .via.str = { 0, NULL } };
	kv[1].val = (msgpack_object){ .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = 5 };
	m.via.map.size = 2;
	m.via.map.ptr = kv;
	ctx_reset();
	record_free(rec);
	rec = NULL;
	memset(&err, 0, sizeof(err));
	CHECK(record_from_map(&m, &ctx, &rec, &err) == 0);
	CHECK_STR(col(TABLE_GEN_META), "{\"\":5}");
}

/*
 * record.c writes simple mg_meta entries itself and leaves the rest to
 * json.c: random meta maps of keys and values made of the bytes where the
 * two could differ must come out exactly as json.c writes the whole map,
 * or be refused exactly when json.c refuses it.
 */
static uint64_t meta_rnd_state = 0x2545f4914f6cdd1du;

static uint32_t meta_rnd(void)
{
	meta_rnd_state ^= meta_rnd_state << 13;
	meta_rnd_state ^= meta_rnd_state >> 7;
	meta_rnd_state ^= meta_rnd_state << 17;
	return (uint32_t)meta_rnd_state;
}

/* Up to 20 bytes, mostly plain, some from the edges of what JSON passes. */
static size_t meta_rnd_text(char *buf)
{
	static const char edge[] = { 0x00, 0x1f, 0x20, '"', '\\', 0x7e, 0x7f, (char)0x80,
				     (char)0xc3, (char)0xa9, (char)0xff, 'a', 'Z', '0' };
	size_t n = meta_rnd() % 21;

	for (size_t i = 0; i < n; i++)
		buf[i] = meta_rnd() % 4 ? (char)('a' + meta_rnd() % 26) :
			 edge[meta_rnd() % sizeof(edge)];
	return n;
}

static void meta_rnd_value(void)
{
	static const int64_t ints[] = { INT64_MIN, INT32_MIN, -1, 0, 1, 127, 128, INT64_MAX };
	char buf[24];
	size_t n;

	switch (meta_rnd() % 6) {
	case 0:
		msgpack_pack_nil(&E.pk);
		break;
	case 1:
		if (meta_rnd() & 1)
			msgpack_pack_true(&E.pk);
		else
			msgpack_pack_false(&E.pk);
		break;
	case 2:
		if (meta_rnd() & 1)
			msgpack_pack_int64(&E.pk, ints[meta_rnd() % 8]);
		else
			msgpack_pack_uint64(&E.pk, meta_rnd() % 2 ? UINT64_MAX : meta_rnd());
		break;
	case 3:
		n = meta_rnd_text(buf);
		p_bin(buf, n);
		break;
	default:
		n = meta_rnd_text(buf);
		p_strn(buf, n);
		break;
	}
}

static void test_meta_simple_like_json(void)
{
	int mismatches = 0, refused = 0;

	for (int i = 0; i < 3000; i++) {
		struct evbuffer *want = evbuffer_new();
		uint32_t entries = 1 + meta_rnd() % 4;
		char key[24], msg[256];
		msgpack_unpacked up;
		int jrc, rrc;

		ctx_reset();
		ev_map(2);
		kv_str("mg_record_type", "generation");
		p_str("mg_meta");
		msgpack_pack_map(&E.pk, entries);
		for (uint32_t k = 0; k < entries; k++) {
			p_strn(key, meta_rnd_text(key));
			meta_rnd_value();
		}
		/* What json.c makes of the same map (the event's second value). */
		msgpack_unpacked_init(&up);
		if (!want || msgpack_unpack_next(&up, E.sb.data, E.sb.size, NULL) !=
		    MSGPACK_UNPACK_SUCCESS)
			abort();
		jrc = json_append_msgpack(want, &up.data.via.map.ptr[1].val, JSON_STRICT, NULL,
					  msg, sizeof(msg));
		msgpack_unpacked_destroy(&up);
		rrc = ev_run();
		refused += rrc != 0;
		if (jrc != rrc)
			mismatches++;
		else if (jrc == 0 && (!col(TABLE_GEN_META) ||
				      rec->len[TABLE_GEN_META] != evbuffer_get_length(want) ||
				      memcmp(col(TABLE_GEN_META), evbuffer_pullup(want, -1),
					     evbuffer_get_length(want)) != 0))
			mismatches++;
		evbuffer_free(want);
	}
	CHECK(mismatches == 0);
	CHECK(refused > 100 && refused < 2900); /* both outcomes were compared */
}

/* An mg_meta past the text buffer's kept size (64 KiB), then small ones:
 * the buffer is given back and grown again, every value intact. */
static void test_meta_large(void)
{
	static char big[100000];
	char want[64];

	memset(big, 'b', sizeof(big) - 1);
	for (int round = 0; round < 3; round++) {
		ctx_reset();
		ev_map(2);
		kv_str("mg_record_type", "generation");
		kv_str("note", round == 1 ? "small" : big);
		CHECK(ev_run() == 0);
		CHECK(rec && rec->len[TABLE_GEN_META] ==
		      (round == 1 ? strlen("{\"note\":\"small\"}") : sizeof(big) - 1 + 11));
		snprintf(want, sizeof(want), "{\"note\":\"%s", round == 1 ? "small\"}" : "bbbb");
		CHECK(col(TABLE_GEN_META) && strncmp(col(TABLE_GEN_META), want, strlen(want)) == 0);
	}
}

static void test_meta_rejections(void)
{
	ctx_reset();
	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_meta");
	msgpack_pack_map(&E.pk, 1);
	p_str("a");
	msgpack_pack_map(&E.pk, 1);
	p_str("b");
	p_strn("x\0y", 3);
	want_reject(RECORD_REASON_NUL_BYTE, "mg_meta",
		    "mg_meta.a.b: string holds a NUL byte (\\u0000), which PostgreSQL's "
		    "jsonb cannot store");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("extra");
	msgpack_pack_array(&E.pk, 2);
	msgpack_pack_int(&E.pk, 1);
	msgpack_pack_double(&E.pk, 1.0 / 0.0);
	want_reject(RECORD_REASON_BAD_META, "extra",
		    "extra[1]: float Infinity has no JSON form");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_meta");
	msgpack_pack_map(&E.pk, 2);
	kv_int("a", 1);
	msgpack_pack_int(&E.pk, 2);
	msgpack_pack_int(&E.pk, 3);
	want_reject(RECORD_REASON_BAD_META, "mg_meta",
		    "mg_meta: key #2: expected string, got int");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("blob");
	p_bin("\x80\x81", 2);
	want_reject(RECORD_REASON_BAD_META, "blob", "blob: bin value is not valid UTF-8 (byte 0)");

	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_strn("k\0ey", 4);
	p_str("v");
	want_reject(RECORD_REASON_NUL_BYTE, "k?ey",
		    "k?ey: string holds a NUL byte (\\u0000), which PostgreSQL's jsonb cannot "
		    "store");
}

static void test_fluent_meta(void)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked fm;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str(&pk, 4);
	msgpack_pack_str_body(&pk, "host", 4);
	msgpack_pack_str(&pk, 2);
	msgpack_pack_str_body(&pk, "h1", 2);
	msgpack_unpacked_init(&fm);
	if (msgpack_unpack_next(&fm, sb.data, sb.size, NULL) != MSGPACK_UNPACK_SUCCESS)
		abort();

	ctx_reset();
	ctx.fluent_meta = &fm.data;
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_int("u", 1);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_META), "{\"u\":1,\"fluent_metadata\":{\"host\":\"h1\"}}");
	ev_map(1);
	kv_str("mg_record_type", "generation");
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_META), "{\"fluent_metadata\":{\"host\":\"h1\"}}");
	ctx.fluent_meta = NULL;
	msgpack_unpacked_destroy(&fm);
	msgpack_sbuffer_destroy(&sb);
}

static void test_bin_text(void)
{
	ctx_reset();
	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_prompt");
	p_bin("caf\xc3\xa9", 5);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_PROMPT), "caf\xc3\xa9");
	ev_map(2);
	kv_str("mg_record_type", "generation");
	p_str("mg_prompt");
	p_bin("ok\xed\xa0\x80", 5);
	want_reject(RECORD_REASON_BAD_UTF8, "mg_prompt", "mg_prompt: not valid UTF-8 (byte 2)");
}

/* Short and long text through the word-at-a-time check and the slow path. */
static void test_text_edges(void)
{
	static const struct {
		const char *s;
		size_t n;
		enum record_reason reason; /* RECORD_REASON_COUNT: accepted */
	} cases[] = {
		{ "\xc3\xa9", 2, RECORD_REASON_COUNT },
		{ "0123456789abcdef\xc3\xa9", 18, RECORD_REASON_COUNT },
		{ "\x7f\x01", 2, RECORD_REASON_COUNT },
		{ "\x80", 1, RECORD_REASON_BAD_UTF8 },
		{ "abc\xc0\x80", 5, RECORD_REASON_BAD_UTF8 },
		{ "a\0", 2, RECORD_REASON_NUL_BYTE },
		{ "0123456789abcdef\0", 17, RECORD_REASON_NUL_BYTE },
		{ "01234567\0", 9, RECORD_REASON_NUL_BYTE },
		{ "0123456789abcde\xff", 16, RECORD_REASON_BAD_UTF8 },
	};

	ctx_reset();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		ev_map(2);
		kv_str("mg_record_type", "generation");
		p_str("mg_comment");
		p_strn(cases[i].s, cases[i].n);
		rc = ev_run();
		if (cases[i].reason == RECORD_REASON_COUNT) {
			CHECK(rc == 0);
			CHECK(rec && rec->len[TABLE_GEN_COMMENT] == cases[i].n &&
			      memcmp(col(TABLE_GEN_COMMENT), cases[i].s, cases[i].n) == 0);
		} else {
			CHECK(rc == -1 && err.reason == cases[i].reason);
		}
	}
}

static bool is_uuid(const char *s, char version)
{
	if (!s || strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!strchr("0123456789abcdef", s[i])) {
			return false;
		}
	}
	return s[14] == version && strchr("89ab", s[19]) != NULL;
}

/* mg_id of an event without one, under the current ctx. */
static void derived_id(char out[37])
{
	ev_map(1);
	kv_str("mg_record_type", "generation");
	out[0] = '\0';
	if (ev_run() == 0)
		snprintf(out, 37, "%s", col(TABLE_GEN_ID));
}

static void test_derived_id(void)
{
	char a[37], b[37], c[37], d[37], e[37];

	ctx_reset();
	ctx.tag = "mega.app";
	ctx.tag_len = 8;
	ctx.chunk = "Y2h1bmstMQ==\n";
	ctx.chunk_len = 13;
	ctx.index = 0;
	derived_id(a);
	ctx.recv_ns += 1000000000; /* time plays no part */
	derived_id(b);
	CHECK(is_uuid(a, '8'));
	CHECK_STR(a, b);
	ctx.index = 1;
	derived_id(c);
	CHECK(is_uuid(c, '8'));
	CHECK(strcmp(a, c) != 0);
	ctx.index = 0;
	ctx.chunk_len = 12; /* another chunk id */
	derived_id(d);
	CHECK(strcmp(a, d) != 0);
	ctx.chunk_len = 13;
	ctx.tag = "mega.ap";
	ctx.tag_len = 7; /* the tag counts too */
	derived_id(e);
	CHECK(strcmp(a, e) != 0);
	/* An mg_id in the event is kept as sent. */
	ev_map(2);
	kv_str("mg_record_type", "generation");
	kv_str("id", "gen-123");
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_ID), "gen-123");
}

/* id_hash: a function of mg_id alone, and spread evenly over writers. */
static void test_id_hash(void)
{
	uint32_t first = 0, buckets[4] = { 0 };
	char id[40];

	ctx_reset();
	for (int i = 0; i < 2000; i++) {
		snprintf(id, sizeof(id), "0190b3c2-7a4e-7cc1-9d2e-4b5f6a7b%04d", i);
		ev_map(2);
		kv_str("mg_record_type", "generation");
		kv_str("mg_id", id);
		CHECK(ev_run() == 0);
		if (!rec)
			return;
		if (i == 0)
			first = rec->id_hash;
		buckets[rec->id_hash % 4]++;
	}
	ctx.tag = "mega.generation"; /* other context, same id: same hash */
	ctx.tag_len = 15;
	ctx.recv_ns = 1;
	ev_map(1);
	kv_str("mg_id", "0190b3c2-7a4e-7cc1-9d2e-4b5f6a7b0000");
	CHECK(ev_run() == 0);
	CHECK(rec && rec->id_hash == first);
	for (int i = 0; i < 4; i++)
		CHECK(buckets[i] > 400 && buckets[i] < 600);
}

static void test_uuid7(void)
{
	char a[37], b[37], ms_hex[13];
	uint64_t ms;

	ctx_reset();
	derived_id(a);
	derived_id(b);
	CHECK(is_uuid(a, '7'));
	CHECK(is_uuid(b, '7'));
	CHECK(strcmp(a, b) != 0);
	ms = ctx.recv_ns / 1000000;
	snprintf(ms_hex, sizeof(ms_hex), "%012" PRIx64, ms);
	CHECK(strncmp(a, ms_hex, 8) == 0 && strncmp(a + 9, ms_hex + 8, 4) == 0);
	/* 12 sub-millisecond bits: 0.456789 ms * 4096 = 1871 = 0x74f. */
	CHECK(strncmp(a + 14, "774f", 4) == 0);
	ctx.recv_ns += 1000000;
	derived_id(b);
	CHECK(strcmp(a, b) < 0); /* later ids sort later */
}

static void test_created_at_default(void)
{
	ctx_reset();
	ev_map(1);
	kv_str("mg_record_type", "session");
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_CREATED_AT), "2026-11-25 03:08:18.123456+00");
	ctx.has_time = true;
	ctx.time_ns = INT64_C(1764040098500000000);
	ev_map(1);
	kv_str("mg_record_type", "session");
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_CREATED_AT), "2025-11-25 03:08:18.500000+00");
	ev_map(2);
	kv_str("mg_record_type", "session");
	kv_int("created_at", 0);
	CHECK(ev_run() == 0);
	CHECK_STR(col(TABLE_GEN_CREATED_AT), "1970-01-01 00:00:00.000000+00");
}

/* Values are NUL-terminated, inside the allocation, and don't overlap. */
static void test_layout(void)
{
	ctx_reset();
	ctx.tag = "mega.generation";
	ctx.tag_len = strlen(ctx.tag);
	ctx.peer = "tcp:127.0.0.1:5000";
	ev_map(4);
	kv_str("mg_prompt", "");
	kv_str("mg_model", "m");
	kv_int("mg_latency_ms", 12);
	kv_str("other", "o");
	CHECK(ev_run() == 0);
	if (!rec)
		return;
	size_t end = 0;

	for (int i = 0; i < RECORD_SLOT_COUNT; i++) {
		if (rec->len[i] == RECORD_ABSENT)
			continue;
		CHECK(rec->off[i] >= end);
		CHECK(rec->data[rec->off[i] + rec->len[i]] == '\0');
		CHECK(strlen(record_get(rec, i)) == rec->len[i]);
		end = rec->off[i] + rec->len[i] + 1;
	}
	CHECK(RECORD_HEADER_SIZE + end == rec->size);
	CHECK_STR(col(TABLE_GEN_PROMPT), "");
	CHECK_STR(col(TABLE_GEN_LATENCY_MS), "12");
	CHECK_STR(col(RECORD_SLOT_PEER), "tcp:127.0.0.1:5000");
	CHECK_STR(col(RECORD_SLOT_TAG), "mega.generation");
	CHECK_STR(col(TABLE_GEN_META), "{\"other\":\"o\"}");
}

int main(void)
{
	test_labels_and_lookup();
	test_every_column();
	test_aliases_and_nil();
	test_rejections();
	test_text_rejections();
	test_record_type();
	test_int4_bounds();
	test_timestamp_inputs();
	test_rfc3339_table();
	test_years_1_to_9999();
	test_format_time();
	test_time_pg_usec();
	test_meta_merge();
	test_empty_key_with_null_ptr();
	test_meta_rejections();
	test_meta_simple_like_json();
	test_meta_large();
	test_fluent_meta();
	test_bin_text();
	test_text_edges();
	test_derived_id();
	test_id_hash();
	test_uuid7();
	test_created_at_default();
	test_layout();
	record_free(rec);
	return unit_done("test_record");
}
