/*
 * test_proto.c: the wire-protocol decoder against real queues, acks, spool
 * and stats. Inputs are built here with msgpack_packer (and zlib for gzip);
 * records are popped from the queues, their acks released the way a writer
 * would, and the dead-letter file and the log (stderr, captured around the
 * calls that must log) are read back.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <msgpack.h>
#include <zlib.h>

#include "ack.h"
#include "intake.h"
#include "log.h"
#include "proto.h"
#include "queue.h"
#include "record.h"
#include "spool.h"
#include "stats.h"
#include "unit.h"
#include "proto_scan.h"

#define T_SEC 1700000000u /* 2023-11-14 22:13:20 UTC */
#define T_MAXREC 512

/* ---- fixture ------------------------------------------------------------ */

struct fx {
	char dir[64];
	struct queue *q[2];
	struct ackq *ackq;
	struct spool *spool;
	struct intake *intake;
	int nq;
	struct proto_env env;
	struct proto_conn *pc;
	struct record *recs[T_MAXREC];
	size_t nrecs;
};

static int fx_owner; /* address stored as the acks' callback argument */

/* Fresh queues, ack channel, spool dir (DEV_FULL: dead letters cannot be written). */
static void fx_open_full(struct fx *f, int nqueues, size_t max_event_bytes, size_t max_events,
			 int dev_full)
{
	memset(f, 0, sizeof(*f));
	unit_spool_dir(f->dir, sizeof(f->dir), "test_proto", dev_full);
	f->ackq = ackq_new();
	f->spool = spool_open(f->dir);
	for (int i = 0; i < nqueues; i++)
		f->q[i] = queue_new(max_events, 1 << 30, f->ackq);
	if (!f->ackq || !f->spool || !f->q[0]) {
		fprintf(stderr, "fixture setup failed\n");
		exit(2);
	}
	f->nq = nqueues;
	f->intake = intake_new(NULL, f->q, nqueues, f->spool, f->ackq);
	CHECK(f->intake != NULL);
	f->env.intake = f->intake;
	f->env.max_event_bytes = max_event_bytes;
	f->pc = proto_conn_new(&f->env, NULL, &fx_owner, "tcp:127.0.0.1:5000", 7);
	CHECK(f->pc != NULL);
	stats_reset();
}

static void fx_open(struct fx *f)
{
	fx_open_full(f, 1, 1 << 20, 100000, 0);
}

/* Pop every queued record (arrival order per queue) into f->recs. */
static size_t fx_pop(struct fx *f)
{
	for (int i = 0; i < f->nq; i++) {
		size_t n = queue_pop_batch(f->q[i], f->recs + f->nrecs, T_MAXREC - f->nrecs, 0);

		for (size_t k = 0; k < n; k++)
			CHECK(f->recs[f->nrecs + k]->id_hash % (uint32_t)f->nq == (uint32_t)i);
		f->nrecs += n;
	}
	return f->nrecs;
}

/* Act as the writer for every popped record: release its ack, free it. */
static void fx_commit(struct fx *f)
{
	for (size_t i = 0; i < f->nrecs; i++) {
		if (f->recs[i]->ack)
			ack_release(f->ackq, f->recs[i]->ack);
		record_free(f->recs[i]);
	}
	f->nrecs = 0;
}

/* Take every posted ack; returns how many; the first is left in *FIRST (caller frees). */
static int fx_acks(struct fx *f, struct ack **first)
{
	struct ack *a, *next;
	int n = 0;

	spool_dead_letter_drain(f->spool); /* dead-letter lines hold acks until durable */
	a = ackq_take(f->ackq);
	if (first)
		*first = a;
	for (; a; a = next) {
		next = a->next;
		CHECK(a->arg == &fx_owner);
		if (n++ > 0 || !first)
			free(a);
	}
	return n;
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf;
	long len;

	if (!fp)
		return strdup("");
	fseek(fp, 0, SEEK_END);
	len = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = calloc(1, (size_t)len + 1);
	if (fread(buf, 1, (size_t)len, fp) != (size_t)len)
		buf[0] = '\0';
	fclose(fp);
	return buf;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* The dead-letter file's content (caller frees). */
static char *fx_dead(struct fx *f)
{
	spool_dead_letter_drain(f->spool);
	return slurp(spool_dead_letter_path(f->spool));
}

static void fx_close(struct fx *f)
{
	char cmd[128];

	fx_pop(f);
	fx_commit(f);
	fx_acks(f, NULL);
	proto_conn_free(f->pc);
	intake_free(f->intake);
	for (int i = 0; i < 2; i++)
		if (f->q[i])
			queue_free(f->q[i]);
	spool_close(f->spool);
	ackq_free(f->ackq);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
}

/* Feed N bytes to proto_run in one read; IN must be emptied. */
static enum proto_status feed(struct fx *f, const void *p, size_t n)
{
	struct evbuffer *in = evbuffer_new();
	enum proto_status st;

	evbuffer_add(in, p, n);
	st = proto_run(f->pc, in);
	CHECK(evbuffer_get_length(in) == 0);
	evbuffer_free(in);
	return st;
}

/* What the code under test logs (unit.h), checked by the tests of its messages. */
static struct unit_capture log_cap;

/* ---- building inputs ----------------------------------------------------- */

static msgpack_sbuffer sb;
static msgpack_packer pk;

static void pk_reset(void)
{
	msgpack_sbuffer_clear(&sb);
}

static void pk_str(const char *s)
{
	msgpack_pack_str_with_body(&pk, s, strlen(s));
}

/* {"mg_id": ID (if any), "mg_record_type": "generation", "prompt": PROMPT}. */
static void pk_event(const char *id, const char *prompt)
{
	msgpack_pack_map(&pk, id ? 3 : 2);
	if (id) {
		pk_str("mg_id");
		pk_str(id);
	}
	pk_str("mg_record_type");
	pk_str("generation");
	pk_str("prompt");
	pk_str(prompt);
}

static void pk_eventtime(uint32_t sec, uint32_t nsec)
{
	unsigned char b[8] = {
		sec >> 24, sec >> 16, sec >> 8, sec, nsec >> 24, nsec >> 16, nsec >> 8, nsec,
	};

	msgpack_pack_ext_with_body(&pk, b, 8, 0);
}

/* msgpack timestamp 64 (ext -1, 8 bytes). */
static void pk_timestamp64(uint32_t sec, uint32_t nsec)
{
	uint64_t v = (uint64_t)nsec << 34 | sec;
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	msgpack_pack_ext_with_body(&pk, b, 8, -1);
}

/* {"chunk": CHUNK (str)} plus "compressed": COMP when COMP. */
static void pk_option(const char *chunk, const char *comp)
{
	msgpack_pack_map(&pk, (chunk != NULL) + (comp != NULL));
	if (chunk) {
		pk_str("chunk");
		pk_str(chunk);
	}
	if (comp) {
		pk_str("compressed");
		pk_str(comp);
	}
}

/* Copy of the packed bytes so far (caller frees); *LEN set. */
static char *pk_take(size_t *len)
{
	char *p = malloc(sb.size ? sb.size : 1);

	memcpy(p, sb.data, sb.size);
	*len = sb.size;
	pk_reset();
	return p;
}

/* gzip (one member) of P. Caller frees. */
static unsigned char *gz(const void *p, size_t n, size_t *outlen)
{
	z_stream zs;
	unsigned char *out;
	size_t cap;

	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		exit(2);
	cap = deflateBound(&zs, n);
	out = malloc(cap);
	zs.next_in = (Bytef *)p;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		exit(2);
	*outlen = cap - zs.avail_out;
	deflateEnd(&zs);
	return out;
}

static const char *rget(const struct record *r, int i)
{
	const char *v = record_get(r, i);

	return v ? v : "(absent)";
}

static void check_created(const struct record *r, int64_t ns)
{
	char want[48];

	record_format_time(ns, want, sizeof(want));
	CHECK_STR(rget(r, TABLE_GEN_CREATED_AT), want);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_plain_map(void)
{
	struct fx f;

	fx_open(&f);
	pk_event("id-plain", "hello");
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 1);
	CHECK_STR(rget(f.recs[0], TABLE_GEN_ID), "id-plain");
	CHECK_STR(rget(f.recs[0], TABLE_GEN_PROMPT), "hello");
	CHECK(record_get(f.recs[0], RECORD_SLOT_TAG) == NULL);
	CHECK_STR(rget(f.recs[0], RECORD_SLOT_PEER), "tcp:127.0.0.1:5000");
	CHECK(f.recs[0]->ack == NULL);
	CHECK(f.recs[0]->recv_ns > (uint64_t)T_SEC * 1000000000ull);
	CHECK(stats_get(STAT_events_received_total) == 1);
	CHECK(proto_values_done(f.pc) == 1);
	CHECK(proto_acks_created(f.pc) == 0);
	CHECK(proto_pending_bytes(f.pc) == 0);
	fx_close(&f);
}

/* Message mode with the four kinds of time. */
static void test_message_times(void)
{
	struct fx f;
	int64_t want[5] = {
		(int64_t)T_SEC * 1000000000,
		(int64_t)T_SEC * 1000000000 + 500000000,
		(int64_t)T_SEC * 1000000000 + 123456789,
		(int64_t)T_SEC * 1000000000 + 987654321,
		(int64_t)T_SEC * 1000000000,
	};

	fx_open(&f);
	for (int i = 0; i < 5; i++) {
		msgpack_pack_array(&pk, 3);
		pk_str("mega.generation");
		if (i == 0)
			msgpack_pack_uint32(&pk, T_SEC);
		else if (i == 1)
			msgpack_pack_double(&pk, T_SEC + 0.5);
		else if (i == 2)
			pk_eventtime(T_SEC, 123456789);
		else if (i == 3)
			pk_timestamp64(T_SEC, 987654321);
		else
			msgpack_pack_float(&pk, (float)T_SEC); /* float32: exact for T_SEC */
		pk_event(NULL, "t");
	}
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 5);
	for (int i = 0; i < 5 && i < (int)f.nrecs; i++) {
		check_created(f.recs[i], want[i]);
		CHECK_STR(rget(f.recs[i], RECORD_SLOT_TAG), "mega.generation");
	}
	CHECK(stats_get(STAT_events_received_total) == 5);
	fx_close(&f);
}

/* Pack time form I (of TIME_FORMS) for test_time_both_paths. */
#define TIME_FORMS 9
static void pk_time_form(int i)
{
	switch (i) {
	case 0: msgpack_pack_double(&pk, 1700000000.000001); break;
	case 1: msgpack_pack_double(&pk, 1700000000.123456); break;
	case 2: msgpack_pack_double(&pk, 1700000000.9999997); break;
	case 3: msgpack_pack_double(&pk, -1.5); break;
	case 4: msgpack_pack_float(&pk, (float)T_SEC); break;
	case 5: msgpack_pack_uint32(&pk, T_SEC); break;
	case 6: msgpack_pack_int64(&pk, -86400); break;
	case 7: pk_eventtime(T_SEC, 999999999); break;
	default: pk_timestamp64(T_SEC, 1000); break;
	}
}

/* One parser: each time form, sent as the Forward entry time and as
 * mg_deleted_at of the same event, is stored as the same text. */
static void test_time_both_paths(void)
{
	static const char *const want[TIME_FORMS] = {
		"2023-11-14 22:13:20.000001+00", "2023-11-14 22:13:20.123456+00",
		"2023-11-14 22:13:21.000000+00", "1969-12-31 23:59:58.500000+00",
		"2023-11-14 22:13:20.000000+00", "2023-11-14 22:13:20.000000+00",
		"1969-12-31 00:00:00.000000+00", "2023-11-14 22:13:20.999999+00",
		"2023-11-14 22:13:20.000001+00",
	};
	struct fx f;
	char *dead;

	fx_open(&f);
	for (int i = 0; i < TIME_FORMS; i++) {
		msgpack_pack_array(&pk, 3);
		pk_str("mega.generation");
		pk_time_form(i);
		msgpack_pack_map(&pk, 2);
		pk_str("mg_record_type");
		pk_str("generation");
		pk_str("mg_deleted_at");
		pk_time_form(i);
	}
	/* A refused time: the same reason either way. */
	msgpack_pack_array(&pk, 3);
	pk_str("mega.generation");
	msgpack_pack_double(&pk, 1e300);
	pk_event("far", "x");
	msgpack_pack_array(&pk, 3);
	pk_str("mega.generation");
	msgpack_pack_uint32(&pk, T_SEC);
	msgpack_pack_map(&pk, 2);
	pk_str("mg_record_type");
	pk_str("generation");
	pk_str("mg_deleted_at");
	msgpack_pack_double(&pk, 1e300);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == TIME_FORMS);
	for (int i = 0; i < TIME_FORMS && i < (int)f.nrecs; i++) {
		CHECK_STR(rget(f.recs[i], TABLE_GEN_CREATED_AT), want[i]);
		CHECK_STR(rget(f.recs[i], TABLE_GEN_DELETED_AT), want[i]);
	}
	dead = fx_dead(&f);
	CHECK(count_lines(dead) == 2);
	CHECK_CONTAINS(dead, "message: time: 1.0000000000000001e+300 epoch seconds is outside "
		       "years 1..9999");
	CHECK_CONTAINS(dead, "mg_deleted_at: 1.0000000000000001e+300 epoch seconds is outside "
		       "years 1..9999");
	free(dead);
	fx_close(&f);
}

/* A Forward time within years 1..9999 but past int64 nanoseconds. */
static void test_time_forward_range(void)
{
	struct fx f;
	char *dead;

	fx_open(&f);
	msgpack_pack_array(&pk, 3);
	pk_str("mega.generation");
	msgpack_pack_uint64(&pk, UINT64_C(9300000000)); /* year 2264 */
	pk_event("late", "x");
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 0);
	dead = fx_dead(&f);
	CHECK_CONTAINS(dead, "message: time: 9300000000 epoch seconds is outside the Forward "
		       "time's range (1677-09-21..2262-04-11)");
	free(dead);
	fx_close(&f);
}

/* Forward with option.chunk: one ack, sent only after every event is released. */
static void test_forward_ack(void)
{
	struct fx f;
	struct ack *a = NULL;

	fx_open(&f);
	msgpack_pack_array(&pk, 3);
	pk_str("mega.generation");
	msgpack_pack_array(&pk, 3);
	for (int i = 0; i < 3; i++) {
		char id[16];

		snprintf(id, sizeof(id), "fw-%d", i);
		msgpack_pack_array(&pk, 2);
		msgpack_pack_uint32(&pk, T_SEC + (uint32_t)i);
		pk_event(id, "p");
	}
	pk_option("Y2h1bmsx\n", NULL);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(proto_acks_created(f.pc) == 1);
	CHECK(fx_pop(&f) == 3);
	CHECK(fx_acks(&f, NULL) == 0);
	for (int i = 0; i < 3; i++) {
		char id[16];

		snprintf(id, sizeof(id), "fw-%d", i);
		CHECK_STR(rget(f.recs[i], TABLE_GEN_ID), id);
		CHECK(f.recs[i]->ack != NULL && f.recs[i]->ack == f.recs[0]->ack);
		check_created(f.recs[i], (int64_t)(T_SEC + i) * 1000000000);
	}
	ack_release(f.ackq, f.recs[0]->ack);
	ack_release(f.ackq, f.recs[1]->ack);
	CHECK(fx_acks(&f, NULL) == 0);
	ack_release(f.ackq, f.recs[2]->ack);
	for (int i = 0; i < 3; i++) {
		f.recs[i]->ack = NULL;
		record_free(f.recs[i]);
	}
	f.nrecs = 0;
	CHECK(fx_acks(&f, &a) == 1);
	CHECK(a && a->chunk_len == 9 && memcmp(a->chunk, "Y2h1bmsx\n", 9) == 0 && !a->chunk_is_bin);
	free(a);
	/* a bin chunk is echoed as bin */
	msgpack_pack_array(&pk, 4);
	pk_str("mega.generation");
	msgpack_pack_uint32(&pk, T_SEC);
	pk_event("fw-bin", "p");
	msgpack_pack_map(&pk, 1);
	pk_str("chunk");
	msgpack_pack_bin_with_body(&pk, "\x01\x02\n", 3);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 1);
	fx_commit(&f);
	CHECK(fx_acks(&f, &a) == 1);
	CHECK(a && a->chunk_len == 3 && memcmp(a->chunk, "\x01\x02\n", 3) == 0 && a->chunk_is_bin);
	free(a);
	fx_close(&f);
}

/* The reply echoes the chunk byte for byte, as str or bin like the request. */
static void test_ack_encode(void)
{
	struct ack *a = ack_new(NULL, NULL, "abc\n", 4, false);
	struct ack *b = ack_new(NULL, NULL, "\x00\xff\n", 3, true);
	struct evbuffer *out = evbuffer_new();
	const unsigned char want_a[] = { 0x81, 0xa3, 'a', 'c', 'k', 0xa4, 'a', 'b', 'c', '\n' };
	const unsigned char want_b[] = { 0x81, 0xa3, 'a', 'c', 'k', 0xc4, 3, 0x00, 0xff, '\n' };
	unsigned char got[32];

	CHECK(proto_ack_encode(a, out) == 0);
	CHECK(evbuffer_get_length(out) == sizeof(want_a));
	evbuffer_remove(out, got, sizeof(got));
	CHECK(memcmp(got, want_a, sizeof(want_a)) == 0);
	CHECK(proto_ack_encode(b, out) == 0);
	CHECK(evbuffer_get_length(out) == sizeof(want_b));
	evbuffer_remove(out, got, sizeof(got));
	CHECK(memcmp(got, want_b, sizeof(want_b)) == 0);
	evbuffer_free(out);
	free(a);
	free(b);
}

/* Concatenated [time, record] entries for packed modes; N entries, ids "PREFIX-i". */
static char *packed_entries(const char *prefix, int n, size_t *len)
{
	for (int i = 0; i < n; i++) {
		char id[32];

		snprintf(id, sizeof(id), "%s-%d", prefix, i);
		msgpack_pack_array(&pk, 2);
		pk_eventtime(T_SEC, (uint32_t)i);
		pk_event(id, "packed");
	}
	return pk_take(len);
}

/* [tag, entries as bin or str, option], OPT_KIND: 0 absent, 1 nil, 2 text, 3 gzip. */
static void pk_packed(const char *data, size_t len, int as_str, int opt_kind, const char *chunk)
{
	msgpack_pack_array(&pk, opt_kind == 0 ? 2 : 3);
	pk_str("mega.generation");
	if (as_str)
		msgpack_pack_str_with_body(&pk, data, len);
	else
		msgpack_pack_bin_with_body(&pk, data, len);
	if (opt_kind == 1)
		msgpack_pack_nil(&pk);
	else if (opt_kind >= 2)
		pk_option(chunk, opt_kind == 2 ? "text" : "gzip");
}

static void test_packed(void)
{
	struct fx f;
	size_t len;
	char *data = packed_entries("pk", 2, &len);
	char want[16];

	fx_open(&f);
	pk_packed(data, len, 0, 0, NULL);  /* bin, option absent */
	pk_packed(data, len, 1, 1, NULL);  /* str, option nil */
	pk_packed(data, len, 0, 2, "c-text");  /* compressed "text" */
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 6);
	for (int i = 0; i < 6; i++) {
		snprintf(want, sizeof(want), "pk-%d", i % 2);
		CHECK_STR(rget(f.recs[i], TABLE_GEN_ID), want);
		check_created(f.recs[i], (int64_t)T_SEC * 1000000000 + i % 2);
		CHECK((f.recs[i]->ack != NULL) == (i >= 4));
	}
	fx_commit(&f);
	CHECK(fx_acks(&f, NULL) == 1);
	CHECK(stats_get(STAT_events_dead_lettered_total) == 0);
	free(data);
	fx_close(&f);
}

/* CompressedPackedForward: one gzip member, then two concatenated members. */
static void test_gzip(void)
{
	struct fx f;
	size_t l1, l2, g1, g2;
	char *e1 = packed_entries("g1", 3, &l1);
	char *e2 = packed_entries("g2", 2, &l2);
	unsigned char *z1 = gz(e1, l1, &g1), *z2 = gz(e2, l2, &g2);
	unsigned char *both = malloc(g1 + g2);
	const char *want[] = { "g1-0", "g1-1", "g1-2", "g1-0", "g1-1", "g1-2", "g2-0", "g2-1" };

	memcpy(both, z1, g1);
	memcpy(both + g1, z2, g2);
	fx_open(&f);
	pk_packed((const char *)z1, g1, 0, 3, "gz-1");
	pk_packed((const char *)both, g1 + g2, 0, 3, "gz-2");
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 8);
	for (int i = 0; i < 8 && i < (int)f.nrecs; i++)
		CHECK_STR(rget(f.recs[i], TABLE_GEN_ID), want[i]);
	fx_commit(&f);
	CHECK(fx_acks(&f, NULL) == 2);
	free(e1);
	free(e2);
	free(z1);
	free(z2);
	free(both);
	fx_close(&f);
}

/* Fluent Bit 2: [[time, metadata], record] entries; group markers -1/-2 skipped. */
static void test_fluent_bit(void)
{
	struct fx f;
	char *dead;

	fx_open(&f);
	msgpack_pack_array(&pk, 2);
	pk_str("mega.generation");
	msgpack_pack_array(&pk, 4);
	/* group start marker: [[-1, {group meta}], {group attributes}] */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, -1);
	msgpack_pack_map(&pk, 0);
	msgpack_pack_map(&pk, 0);
	/* a record with metadata */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_array(&pk, 2);
	pk_eventtime(T_SEC, 5);
	msgpack_pack_map(&pk, 1);
	pk_str("otlp");
	pk_str("yes");
	pk_event("fb-1", "meta");
	/* an EventTime-encoded marker (seconds 0xfffffffe = -2) */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_array(&pk, 2);
	pk_eventtime(0xfffffffeu, 0);
	msgpack_pack_map(&pk, 0);
	msgpack_pack_map(&pk, 0);
	/* group end marker as a plain int */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, -2);
	msgpack_pack_map(&pk, 0);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	/* Message mode with [time, metadata] as its time. */
	msgpack_pack_array(&pk, 3);
	pk_str("mega.generation");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint32(&pk, T_SEC);
	msgpack_pack_map(&pk, 1);
	pk_str("src");
	pk_str("fb");
	pk_event("fb-2", "meta");
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 2);
	CHECK_STR(rget(f.recs[0], TABLE_GEN_ID), "fb-1");
	check_created(f.recs[0], (int64_t)T_SEC * 1000000000 + 5);
	CHECK_CONTAINS(rget(f.recs[0], TABLE_GEN_META), "fluent_metadata");
	CHECK_CONTAINS(rget(f.recs[0], TABLE_GEN_META), "otlp");
	CHECK_STR(rget(f.recs[1], TABLE_GEN_ID), "fb-2");
	CHECK_CONTAINS(rget(f.recs[1], TABLE_GEN_META), "fluent_metadata");
	CHECK(stats_get(STAT_events_received_total) == 2);
	dead = fx_dead(&f);
	CHECK(count_lines(dead) == 0);
	free(dead);
	fx_close(&f);
}

/* nil is a heartbeat: nothing queued, nothing dead-lettered, but a value. */
static void test_heartbeat(void)
{
	struct fx f;
	const char nil = (char)0xc0;

	fx_open(&f);
	CHECK(feed(&f, &nil, 1) == PROTO_OK);
	CHECK(feed(&f, &nil, 1) == PROTO_OK);
	CHECK(proto_values_done(f.pc) == 2);
	CHECK(fx_pop(&f) == 0);
	CHECK(stats_get(STAT_events_received_total) == 0);
	fx_close(&f);
}

/* A Forward message arriving one byte per read. */
static void test_split_bytes(void)
{
	struct fx f;
	size_t len;
	char *msg;

	fx_open(&f);
	msgpack_pack_array(&pk, 3);
	pk_str("mega.generation");
	msgpack_pack_array(&pk, 2);
	for (int i = 0; i < 2; i++) {
		msgpack_pack_array(&pk, 2);
		pk_eventtime(T_SEC, 0);
		pk_event(i ? "split-1" : "split-0", "a prompt that spans many reads");
	}
	pk_option("split-chunk", NULL);
	msg = pk_take(&len);
	for (size_t i = 0; i + 1 < len; i++) {
		CHECK(feed(&f, msg + i, 1) == PROTO_OK);
		CHECK(proto_pending_bytes(f.pc) == i + 1);
	}
	CHECK(fx_pop(&f) == 0);
	CHECK(proto_values_done(f.pc) == 0);
	CHECK(feed(&f, msg + len - 1, 1) == PROTO_OK);
	CHECK(proto_pending_bytes(f.pc) == 0);
	CHECK(fx_pop(&f) == 2);
	CHECK_STR(rget(f.recs[1], TABLE_GEN_ID), "split-1");
	free(msg);
	fx_close(&f);
}

/* Many values in one read, spread over two writer queues by id hash. */
static void test_many_values(void)
{
	struct fx f;
	int seen[200] = { 0 }, all = 1;

	fx_open_full(&f, 2, 1 << 20, 100000, 0);
	for (int i = 0; i < 200; i++) {
		char id[16];

		snprintf(id, sizeof(id), "many-%d", i);
		pk_event(id, "x");
	}
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 200);
	CHECK(queue_events(f.q[0]) == 0 && queue_events(f.q[1]) == 0);
	for (size_t i = 0; i < f.nrecs; i++) {
		int k = -1;

		if (sscanf(rget(f.recs[i], TABLE_GEN_ID), "many-%d", &k) == 1 && k >= 0 && k < 200)
			seen[k]++;
	}
	for (int i = 0; i < 200; i++)
		all &= seen[i] == 1;
	CHECK(all);
	CHECK(proto_values_done(f.pc) == 200);
	fx_close(&f);
}

/* Shapes no mode has are dead-lettered one by one; their neighbours go through. */
static void test_bad_frames(void)
{
	struct fx f;
	size_t plen;
	char *dead, *packed;

	fx_open(&f);
	pk_event("ok-1", "x");
	pk_str("just a string");                         /* top-level str */
	msgpack_pack_array(&pk, 3);                      /* tag not a string */
	msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 2);
	pk_event("lost-1", "x");
	msgpack_pack_array(&pk, 4);                      /* option is an int */
	pk_str("t.x");
	msgpack_pack_uint32(&pk, T_SEC);
	pk_event("lost-2", "x");
	msgpack_pack_int(&pk, 5);
	msgpack_pack_array(&pk, 2);                      /* bad forward entries */
	pk_str("t.y");
	msgpack_pack_array(&pk, 4);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint32(&pk, T_SEC);
	pk_event("ok-2", "x");
	msgpack_pack_int(&pk, 7);                        /* entry 1: int */
	msgpack_pack_array(&pk, 2);                      /* entry 2: bad time */
	pk_str("yesterday");
	pk_event("lost-3", "x");
	msgpack_pack_array(&pk, 3);                      /* entry 3: three elements */
	msgpack_pack_uint32(&pk, T_SEC);
	pk_event("lost-4", "x");
	msgpack_pack_nil(&pk);
	msgpack_pack_array(&pk, 3);                      /* unknown ext type as time */
	pk_str("t.z");
	msgpack_pack_ext_with_body(&pk, "abc", 3, 9);
	pk_event("lost-5", "x");
	pk_event("ok-3", "x");
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	/* PackedForward corrupt part-way: the entry before the damage is kept. */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint32(&pk, T_SEC);
	pk_event("ok-4", "x");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint32(&pk, T_SEC);
	msgpack_sbuffer_write(&sb, "\xc1\x01\x02", 3);
	packed = pk_take(&plen);
	pk_packed(packed, plen, 0, 0, NULL);
	/* PackedForward whose last entry is cut short. */
	pk_packed(packed, 12, 0, 0, NULL);
	/* gzip option on data that is not gzip. */
	pk_packed("not gzip at all", 15, 0, 3, NULL);
	pk_event("ok-5", "x");
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 5);
	CHECK_STR(rget(f.recs[0], TABLE_GEN_ID), "ok-1");
	CHECK_STR(rget(f.recs[1], TABLE_GEN_ID), "ok-2");
	CHECK_STR(rget(f.recs[2], TABLE_GEN_ID), "ok-3");
	CHECK_STR(rget(f.recs[3], TABLE_GEN_ID), "ok-4");
	CHECK_STR(rget(f.recs[4], TABLE_GEN_ID), "ok-5");
	dead = fx_dead(&f);
	CHECK(count_lines(dead) == 10);
	CHECK_CONTAINS(dead, "frame: expected map, array or nil at top level, got str");
	CHECK_CONTAINS(dead, "frame: tag (element 0): expected str, got int");
	CHECK_CONTAINS(dead, "option: expected map or nil, got int");
	CHECK_CONTAINS(dead, "forward entry 1: expected [time, record], got int");
	CHECK_CONTAINS(dead, "forward entry 2: time: expected integer, float, EventTime");
	CHECK_CONTAINS(dead, "forward entry 3: expected [time, record], got array of 3 elements");
	CHECK_CONTAINS(dead, "ext type 9 of 3 bytes is not a time");
	CHECK_CONTAINS(dead, "packed entry 1: not msgpack at byte");
	CHECK_CONTAINS(dead, "packed entry 0: truncated msgpack value at byte 0 of 12");
	CHECK_CONTAINS(dead, "compressed \\\"gzip\\\"");
	CHECK_CONTAINS(dead, "\"tag\":\"t.y\"");
	CHECK_CONTAINS(dead, "lost-3");
	CHECK(strstr(dead, "ok-1") == NULL);
	CHECK(stats_rejected(RECORD_REASON_BAD_FRAME) == 8);
	CHECK(stats_rejected(RECORD_REASON_BAD_TIMESTAMP) == 2);
	CHECK(stats_get(STAT_events_dead_lettered_total) == 10);
	CHECK(stats_get(STAT_events_received_total) == 15);
	free(dead);
	free(packed);
	fx_close(&f);
}

/* record_from_map's rejections reach the dead-letter file with reason and field. */
static void test_rejections(void)
{
	struct fx f;
	char *dead, *line2;

	fx_open(&f);
	msgpack_pack_map(&pk, 3);                        /* a non-string key */
	pk_str("mg_record_type");
	pk_str("generation");
	pk_str("mg_id");
	pk_str("rej-1");
	msgpack_pack_int(&pk, 42);
	pk_str("v");
	msgpack_pack_map(&pk, 3);                        /* bin that is not UTF-8 */
	pk_str("mg_record_type");
	pk_str("generation");
	pk_str("mg_id");
	pk_str("rej-2");
	pk_str("mg_prompt");
	msgpack_pack_bin_with_body(&pk, "\xff\xfe\x80", 3);
	pk_event("fine", "x");
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 1);
	dead = fx_dead(&f);
	CHECK(count_lines(dead) == 2);
	line2 = strchr(dead, '\n');
	CHECK_CONTAINS(dead, "\"reason\":\"");
	CHECK_CONTAINS(dead, "rej-1");
	CHECK(line2 != NULL);
	if (line2) {
		*line2++ = '\0';
		CHECK_CONTAINS(dead, "key");
		CHECK_CONTAINS(line2, "\"field\":\"mg_prompt\"");
		CHECK_CONTAINS(line2, "UTF-8");
		CHECK_CONTAINS(line2, "\"peer\":\"tcp:127.0.0.1:5000\"");
	}
	CHECK(stats_rejected(RECORD_REASON_BAD_KEY) == 1);
	CHECK(stats_rejected(RECORD_REASON_BAD_UTF8) == 1);
	CHECK(stats_get(STAT_events_dead_lettered_total) == 2);
	CHECK(stats_get(STAT_events_received_total) == 3);
	free(dead);
	fx_close(&f);
}

/* Bytes that are not msgpack close the connection, after the values before them. */
static void test_garbage(void)
{
	struct fx f;
	char *log;
	size_t off;

	fx_open(&f);
	pk_event("before", "x");
	off = sb.size;
	msgpack_sbuffer_write(&sb, "\xc1garbage", 8);
	unit_capture_begin(&log_cap);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_CLOSE);
	log = unit_capture_end(&log_cap);
	pk_reset();
	CHECK(fx_pop(&f) == 1);
	{
		char want[80];

		snprintf(want, sizeof(want), "stream is not msgpack (byte offset %zu); "
			 "connection closed", off);
		CHECK_CONTAINS(log, want);
	}
	CHECK_CONTAINS(log, "conn=7 peer=tcp:127.0.0.1:5000");
	CHECK(proto_run(f.pc, NULL) == PROTO_CLOSE); /* stays closed */
	free(log);
	fx_close(&f);
}

/* Values over listen.max_event_bytes: complete, partial, announced, and too deep. */
static void test_too_big(void)
{
	struct fx f;
	char *big = malloc(5000), *log;
	size_t len;
	char *msg;

	memset(big, 'a', 5000);
	big[4999] = '\0';
	/* complete, in one read */
	fx_open_full(&f, 1, 4096, 1000, 0);
	pk_event("small", "x");
	pk_event("big", big);
	unit_capture_begin(&log_cap);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_CLOSE);
	log = unit_capture_end(&log_cap);
	pk_reset();
	CHECK(fx_pop(&f) == 1);
	CHECK_CONTAINS(log, "bytes exceeds listen.max_event_bytes 4096; connection closed");
	CHECK_CONTAINS(log, "value of 50");
	free(log);
	fx_close(&f);

	/* partial: an array whose elements keep coming, 500 bytes per read */
	fx_open_full(&f, 1, 4096, 1000, 0);
	msgpack_pack_array(&pk, 400); /* within the element budget (4096 / 4) */
	for (int i = 0; i < 400; i++)
		pk_str("0123456789");
	msg = pk_take(&len);
	unit_capture_begin(&log_cap);
	{
		size_t at = 0;
		enum proto_status st = PROTO_OK;

		for (; at < len && st == PROTO_OK; at += 500)
			st = feed(&f, msg + at, len - at < 500 ? len - at : 500);
		CHECK(st == PROTO_CLOSE);
		CHECK(at <= 4096 + 500);
	}
	log = unit_capture_end(&log_cap);
	CHECK_CONTAINS(log, "value of at least");
	free(msg);
	free(log);
	fx_close(&f);

	/* a 5-byte header announcing 2^32-1 elements: closed before any allocation */
	fx_open_full(&f, 1, 4096, 1000, 0);
	unit_capture_begin(&log_cap);
	CHECK(feed(&f, "\xdd\xff\xff\xff\xff", 5) == PROTO_CLOSE);
	log = unit_capture_end(&log_cap);
	CHECK_CONTAINS(log, "value of at least 4294967300 bytes");
	free(log);
	fx_close(&f);

	/* nesting deeper than the decoder handles */
	fx_open(&f);
	for (int i = 0; i < 40; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
	unit_capture_begin(&log_cap);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_CLOSE);
	log = unit_capture_end(&log_cap);
	pk_reset();
	CHECK_CONTAINS(log, "nests deeper than 32 levels");
	free(log);
	fx_close(&f);
	free(big);
}

/* 10 MB of zeros in a small gzip message: refused while inflating, quickly. The
 * gzip is ~10 KB, so max_event_bytes is 16384 (not 4096) to let the message
 * itself in: the inflate bound (16384 x 16) is what must close the connection. */
static void test_gzip_bomb(void)
{
	struct fx f;
	size_t zlen, n = 10u << 20;
	char *zeros = calloc(1, n), *log;
	unsigned char *z = gz(zeros, n, &zlen);
	struct timespec t0, t1;
	double secs;

	fx_open_full(&f, 1, 16384, 1000, 0);
	CHECK(zlen < 16000);
	pk_packed((const char *)z, zlen, 0, 3, "bomb");
	CHECK(sb.size <= 16384);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unit_capture_begin(&log_cap);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_CLOSE);
	log = unit_capture_end(&log_cap);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pk_reset();
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	CHECK(secs < 2.0);
	CHECK_CONTAINS(log, "gzip data inflates past 262144 bytes (listen.max_event_bytes x 16); "
		       "connection closed");
	CHECK(fx_pop(&f) == 0);
	/* the guard was dropped: the (never sent) ack still comes back to be freed */
	CHECK(fx_acks(&f, NULL) == 1);
	free(zeros);
	free(z);
	free(log);
	fx_close(&f);
}

/* A full queue stops decoding; an empty read resumes once there is room. */
static void test_blocked(void)
{
	struct fx f;

	fx_open_full(&f, 1, 1 << 20, 2, 0);
	for (int i = 0; i < 5; i++) {
		char id[16];

		snprintf(id, sizeof(id), "blk-%d", i);
		pk_event(id, "x");
	}
	CHECK(feed(&f, sb.data, sb.size) == PROTO_BLOCKED);
	pk_reset();
	CHECK(queue_events(f.q[0]) == 2);
	CHECK(proto_pending_bytes(f.pc) > 0);
	CHECK(proto_run(f.pc, NULL) == PROTO_BLOCKED);   /* still full */
	CHECK(fx_pop(&f) == 2);
	CHECK(feed(&f, "", 0) == PROTO_BLOCKED);
	CHECK(fx_pop(&f) == 4);
	CHECK(feed(&f, "", 0) == PROTO_OK);
	CHECK(fx_pop(&f) == 5);
	CHECK(proto_pending_bytes(f.pc) == 0);
	for (int i = 0; i < 5 && i < (int)f.nrecs; i++) {
		char id[16];

		snprintf(id, sizeof(id), "blk-%d", i);
		CHECK_STR(rget(f.recs[i], TABLE_GEN_ID), id);
	}
	fx_close(&f);
}

/* A chunked message whose events are all invalid is acked at once. */
static void test_all_invalid_acked(void)
{
	struct fx f;
	struct ack *a = NULL;
	char *dead;

	fx_open(&f);
	msgpack_pack_array(&pk, 3);
	pk_str("mega.generation");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_array(&pk, 2);
	pk_str("not a time");
	pk_event("bad-time", "x");
	pk_option("all-bad", NULL);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	pk_reset();
	CHECK(fx_pop(&f) == 0);
	dead = fx_dead(&f);
	CHECK(count_lines(dead) == 2);
	CHECK(fx_acks(&f, &a) == 1);
	CHECK(a && a->chunk_len == 7 && memcmp(a->chunk, "all-bad", 7) == 0);
	free(a);
	free(dead);
	fx_close(&f);
}

/* Id-less events of a chunked message get the same mg_id on a resend, distinct per entry. */
static void test_deterministic_id(void)
{
	struct fx f;
	char ids[3][2][128];

	fx_open(&f);
	for (int round = 0; round < 3; round++) {
		msgpack_pack_array(&pk, 3);
		pk_str("mega.generation");
		msgpack_pack_array(&pk, 2);
		for (int i = 0; i < 2; i++) {
			msgpack_pack_array(&pk, 2);
			msgpack_pack_uint32(&pk, T_SEC);
			pk_event(NULL, "no id");
		}
		pk_option(round < 2 ? "same-chunk" : "other-chunk", NULL);
		CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
		pk_reset();
		CHECK(fx_pop(&f) == 2);
		for (int i = 0; i < 2 && i < (int)f.nrecs; i++)
			snprintf(ids[round][i], sizeof(ids[round][i]), "%s",
				 rget(f.recs[i], TABLE_GEN_ID));
		fx_commit(&f);
	}
	CHECK(strcmp(ids[0][0], "(absent)") != 0);
	CHECK(strcmp(ids[0][0], ids[0][1]) != 0);
	CHECK_STR(ids[1][0], ids[0][0]);
	CHECK_STR(ids[1][1], ids[0][1]);
	CHECK(strcmp(ids[2][0], ids[0][0]) != 0);
	CHECK(fx_acks(&f, NULL) == 3);
	fx_close(&f);
}

/*
 * When the dead-letter file cannot be written, the message's ack comes back
 * marked failed (the listener then closes the connection instead of acking).
 */
static void test_dead_letter_fails(void)
{
	struct fx f;
	struct ack *a = NULL;
	char *log;

	fx_open_full(&f, 1, 1 << 20, 1000, 1);
	msgpack_pack_array(&pk, 3);
	pk_str("mega.generation");
	msgpack_pack_array(&pk, 3);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint32(&pk, T_SEC);
	pk_event("kept", "x");
	msgpack_pack_int(&pk, 3);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint32(&pk, T_SEC);
	pk_event("also-kept", "x");
	pk_option("dl-fail", NULL);
	unit_capture_begin(&log_cap);
	CHECK(feed(&f, sb.data, sb.size) == PROTO_OK);
	spool_dead_letter_drain(f.spool);
	log = unit_capture_end(&log_cap);
	pk_reset();
	CHECK_CONTAINS(log, "cannot write to");
	CHECK(fx_pop(&f) == 2);
	CHECK_STR(rget(f.recs[0], TABLE_GEN_ID), "kept");
	CHECK(proto_acks_created(f.pc) == 1);
	fx_commit(&f);
	CHECK(fx_acks(&f, &a) == 1); /* comes back failed: the listener never sends it */
	CHECK(a && atomic_load(&a->failed));
	free(a);
	free(log);
	fx_close(&f);
}

/* A value may announce max_event_bytes / 4 elements (a map pair counts two). */
static void test_too_many_elements(void)
{
	struct fx f;
	char *log, *msg;
	size_t len;

	fx_open_full(&f, 1, 4096, 1000, 0); /* 1024 elements */
	msgpack_pack_array(&pk, 1);
	msgpack_pack_array(&pk, 1023); /* 1024 in all: taken (a frame error, dead-lettered) */
	for (int i = 0; i < 1023; i++)
		msgpack_pack_nil(&pk);
	msg = pk_take(&len);
	CHECK(feed(&f, msg, len) == PROTO_OK);
	free(msg);
	msgpack_pack_map(&pk, 513); /* 1026: refused from the header, nothing allocated */
	msg = pk_take(&len);
	unit_capture_begin(&log_cap);
	CHECK(feed(&f, msg, len) == PROTO_CLOSE);
	log = unit_capture_end(&log_cap);
	CHECK_CONTAINS(log, "announces 1026 or more elements, more than listen.max_event_bytes / 4 "
		       "= 1024; connection closed");
	free(msg);
	free(log);
	fx_close(&f);
}

/* ---- the header scanner against a reference ----------------------------- */

/*
 * The scanner as first written: byte by byte, every header through one
 * path. proto_scan.c's fast path must agree with it on every stream, cut
 * anywhere, at every limit: the bytes a decoder may see, the error and
 * its offsets and sizes, and the state between reads.
 */
struct ref_scan {
	uint64_t offset, value_start, head_start, items, skip, open[PROTO_MAX_DEPTH];
	int depth;
	uint8_t head[5], head_len, head_need;
	enum proto_scan_error error;
	uint64_t error_size;
	bool error_exact;
};

/* Lead byte B: 'f' fixed (EXTRA bytes follow), 'b' blob (LENBYTES length,
 * then EXTRA + length), 'a' array, 'm' map (count in LENBYTES or B), 'x' bad. */
static char ref_head(uint8_t b, int *lenbytes, int *extra)
{
	static const char kind[33] = "fxffbbbbbb" "fffffffffffffff" "bbbaamm";
	static const signed char lb[32] = { 0, 0, 0, 0, 1, 2, 4, 1, 2, 4, 0, 0, 0, 0, 0, 0,
					    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 2, 4, 2, 4 };
	static const signed char ex[32] = { 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 4, 8, 1, 2, 4, 8,
					    1, 2, 4, 8, 2, 3, 5, 9, 17, 0, 0, 0, 0, 0, 0, 0 };

	*lenbytes = 0;
	*extra = 0;
	if (b <= 0x7f || b >= 0xe0)
		return 'f';
	if (b <= 0x8f)
		return 'm';
	if (b <= 0x9f)
		return 'a';
	if (b <= 0xbf) {
		*extra = b & 0x1f;
		return 'f';
	}
	*lenbytes = lb[b - 0xc0];
	*extra = ex[b - 0xc0];
	return kind[b - 0xc0];
}

static int ref_head_done(struct ref_scan *s, uint64_t limit)
{
	int lenbytes, extra;
	char k = ref_head(s->head[0], &lenbytes, &extra);
	uint64_t n = s->head[0] & 0x0f, least;

	if (lenbytes > 0)
		n = 0;
	for (int i = 0; i < lenbytes; i++)
		n = n << 8 | s->head[1 + i];
	s->head_len = 0;
	s->items--;
	if (s->depth > 0)
		s->open[s->depth - 1]--;
	if (k == 'f' || k == 'b') {
		s->skip = (k == 'b' ? n : 0) + (uint64_t)extra;
	} else {
		if (s->depth >= PROTO_MAX_DEPTH) {
			s->error = PROTO_SCAN_TOO_DEEP;
			return -1;
		}
		n *= k == 'm' ? 2 : 1;
		s->items += n;
		if (n > 0)
			s->open[s->depth++] = n;
	}
	while (s->depth > 0 && s->open[s->depth - 1] == 0)
		s->depth--;
	least = s->offset - s->value_start + s->skip + s->items;
	if (least > limit) {
		s->error = PROTO_SCAN_TOO_BIG;
		s->error_size = least;
		s->error_exact = s->items == 0;
		return -1;
	}
	return 0;
}

static size_t ref_feed(struct ref_scan *s, const uint8_t *p, size_t n, uint64_t limit)
{
	uint64_t base = s->offset;
	size_t i = 0;

	while (i < n && s->error == PROTO_SCAN_OK) {
		int lenbytes, extra;

		if (s->skip > 0) {
			size_t take = s->skip < n - i ? (size_t)s->skip : n - i;

			s->skip -= take;
			s->offset += take;
			i += take;
			continue;
		}
		if (s->head_len == 0) {
			if (s->items == 0) {
				s->items = 1;
				s->value_start = s->offset;
			}
			s->head_start = s->offset;
			if (ref_head(p[i], &lenbytes, &extra) == 'x') {
				s->error = PROTO_SCAN_NOT_MSGPACK;
				break;
			}
			s->head_need = (uint8_t)(1 + lenbytes);
		}
		s->head[s->head_len++] = p[i++];
		s->offset++;
		if (s->head_len == s->head_need && ref_head_done(s, limit) < 0)
			break;
	}
	if (s->error == PROTO_SCAN_OK)
		return n;
	return s->head_start > base ? (size_t)(s->head_start - base) : 0;
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15u;

static uint32_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return (uint32_t)rnd_state;
}

struct gen {
	uint8_t buf[16384];
	size_t len;
};

static void gen_put(struct gen *g, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0 && g->len < sizeof(g->buf); i--)
		g->buf[g->len++] = (uint8_t)(v >> (8 * i));
}

static void gen_body(struct gen *g, uint32_t n)
{
	for (uint32_t i = 0; i < n && i < 300; i++)
		gen_put(g, rnd(), 1);
}

/* A length: mostly small, sometimes far past any limit. */
static uint32_t gen_len(void)
{
	uint32_t r = rnd() % 8;

	return r == 0 ? rnd() : r == 1 ? rnd() % 70000 : r == 2 ? rnd() % 300 : rnd() % 40;
}

/* One random value, mostly well formed: every header kind, huge announced
 * sizes, stray bytes and 0xc1. */
static void gen_value(struct gen *g, int depth)
{
	static const uint8_t blob[9] = { 0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9 };
	uint32_t r = rnd() % 100, n, k;

	if (g->len > sizeof(g->buf) - 64)
		return;
	if (r < 4) {
		gen_put(g, r < 2 ? 0xc1 : rnd(), 1);
	} else if (r < 25) {
		gen_put(g, r < 20 ? rnd() % 0x80 : 0xe0 | rnd() % 32, 1);
	} else if (r < 40) {
		n = rnd() % 32;
		gen_put(g, 0xa0 | n, 1);
		gen_body(g, n);
	} else if (r < 50) {
		k = rnd() % 9;
		n = gen_len() & (k % 3 == 0 ? 0xff : k % 3 == 1 ? 0xffff : 0xffffffff);
		gen_put(g, blob[k], 1);
		gen_put(g, n, k % 3 == 2 ? 4 : (int)(k % 3) + 1);
		gen_body(g, n + (k >= 6));
	} else if (r < 64) {
		gen_put(g, 0xc0 + rnd() % 0x18, 1); /* nil, bool, floats, ints, fixext */
		gen_body(g, rnd() % 20);
	} else {
		bool map = rnd() & 1;
		int w = depth > 40 ? 0 : (int)(rnd() % 3);

		n = w == 0 ? rnd() % 16 : rnd() % 10 ? rnd() % 20 : rnd();
		if (w == 0)
			gen_put(g, (map ? 0x80 : 0x90) | n, 1);
		else
			gen_put(g, (map ? 0xde : 0xdc) + (w == 2), 1);
		if (w)
			gen_put(g, w == 1 ? n & 0xffff : n, w == 1 ? 2 : 4);
		for (k = 0; k < (n < 20 ? n : 20) * (map ? 2 : 1); k++)
			gen_value(g, depth + 1);
	}
}

/* A stream of a few values, sometimes nested past PROTO_MAX_DEPTH, sometimes cut short. */
static void gen_stream(struct gen *g)
{
	g->len = 0;
	for (uint32_t v = 1 + rnd() % 6; v > 0; v--) {
		for (uint32_t d = rnd() % 8 ? 0 : 25 + rnd() % 12; d > 0; d--) {
			if (rnd() % 3)
				gen_put(g, 0x82a178a0, 4); /* {"x": "", <next level>: ...} */
			else
				gen_put(g, 0x91, 1);       /* [<next level>] */
		}
		gen_value(g, 0);
	}
	if (rnd() % 4 == 0 && g->len > 0)
		g->len = rnd() % g->len;
}

/* Count the ways S and R disagree after a read. */
static int scan_diff(const struct proto_scan *s, const struct ref_scan *r)
{
	int bad = s->error != r->error;

	if (r->error != PROTO_SCAN_OK)
		return bad + (s->head_start != r->head_start) + (s->value_start != r->value_start) +
		       (r->error == PROTO_SCAN_TOO_BIG && (s->error_size != r->error_size ||
							    s->error_exact != r->error_exact));
	bad += s->offset != r->offset || s->items != r->items || s->skip != r->skip;
	bad += s->depth != r->depth || s->value_start != r->value_start;
	bad += s->head_len != r->head_len;
	for (int d = 0; d < r->depth && d < s->depth; d++)
		bad += s->open[d] != r->open[d];
	return bad;
}

/* One stream through both scanners, fed whole, in small cuts or byte by byte. */
static int scan_compare(const struct gen *g, uint64_t limit, int cuts)
{
	struct proto_scan s;
	struct ref_scan r;
	int bad = 0;

	memset(&s, 0, sizeof(s));
	memset(&r, 0, sizeof(r));
	for (size_t pos = 0, n; pos < g->len && !bad; pos += n) {
		n = cuts == 0 ? g->len - pos : cuts == 1 ? 1 : 1 + rnd() % 200;
		if (n > g->len - pos)
			n = g->len - pos;
		bad += proto_scan_feed(&s, g->buf + pos, n, limit) != ref_feed(&r, g->buf + pos, n, limit);
		bad += scan_diff(&s, &r);
		if (r.error != PROTO_SCAN_OK)
			break;
		bad += proto_scan_idle(&s) != (r.items == 0 && r.skip == 0 && r.head_len == 0);
	}
	return bad;
}

static void test_scan_reference(void)
{
	static struct gen g;
	int bad = 0, errors[PROTO_SCAN_ERROR_COUNT] = { 0 };

	for (int i = 0; i < 30000 && bad == 0; i++) {
		uint64_t limits[4] = { rnd() % 64, rnd() % 1000, 0, 1 << 20 };
		struct ref_scan r;

		gen_stream(&g);
		limits[2] = g.len;
		bad += scan_compare(&g, limits[i % 4], i / 4 % 3);
		memset(&r, 0, sizeof(r));
		(void)ref_feed(&r, g.buf, g.len, limits[i % 4]);
		errors[r.error]++;
		if (bad)
			fprintf(stderr, "scanner and reference disagree on stream %d\n", i);
	}
	CHECK(bad == 0);
	/* The streams reached every error, so every path was compared. */
	CHECK(errors[PROTO_SCAN_OK] > 1000 && errors[PROTO_SCAN_NOT_MSGPACK] > 1000);
	CHECK(errors[PROTO_SCAN_TOO_BIG] > 1000 && errors[PROTO_SCAN_TOO_DEEP] > 100);
}

int main(void)
{
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	log_set_level(LOG_LEVEL_WARN);
	test_plain_map();
	test_message_times();
	test_time_both_paths();
	test_time_forward_range();
	test_forward_ack();
	test_ack_encode();
	test_packed();
	test_gzip();
	test_fluent_bit();
	test_heartbeat();
	test_split_bytes();
	test_many_values();
	test_bad_frames();
	test_rejections();
	test_garbage();
	test_too_big();
	test_too_many_elements();
	test_gzip_bomb();
	test_blocked();
	test_all_invalid_acked();
	test_deterministic_id();
	test_dead_letter_fails();
	test_scan_reference();
	msgpack_sbuffer_destroy(&sb);
	return unit_done("test_proto");
}
