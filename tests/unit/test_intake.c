/*
 * test_intake.c: a fake input driven through the intake, against real
 * queues, a real dead-letter file in a temporary directory, a real ack
 * channel and a real libevent loop. The test plays the writer (pops
 * records, releases their acks) and checks that the fake input's ack
 * callback runs once, on the loop, with the right outcome.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <msgpack.h>

#include "ack.h"
#include "intake.h"
#include "log.h"
#include "queue.h"
#include "record.h"
#include "spool.h"
#include "stats.h"
#include "unit.h"

#define T_MAXREC 64

/* ---- the fake input ------------------------------------------------------ */

/* What a request of the fake input learns from its ack. */
struct fake_req {
	int done;              /* callback runs */
	bool durable;          /* its last outcome */
	uint32_t chunk_len;    /* what the ack carried back */
	char chunk[16];
};

static void fake_done_cb(struct ack *ack, bool durable, void *arg)
{
	struct fake_req *req = arg;

	req->done++;
	req->durable = durable;
	req->chunk_len = ack->chunk_len;
	memcpy(req->chunk, ack->chunk, ack->chunk_len < 16 ? ack->chunk_len : 16);
}

static int room_calls;

static void fake_room_cb(void *arg)
{
	(void)arg;
	room_calls++;
}

/* ---- fixture ------------------------------------------------------------- */

struct fx {
	char dir[64];
	struct event_base *base;
	struct queue *q[2];
	struct ackq *ackq;
	struct spool *spool;
	struct intake *in;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked val;
};

/* Two queues of MAX_EVENTS; DEV_FULL: the dead-letter file cannot be written. */
static void fx_open(struct fx *f, size_t max_events, bool dev_full)
{
	memset(f, 0, sizeof(*f));
	unit_spool_dir(f->dir, sizeof(f->dir), "test_intake", dev_full);
	f->base = event_base_new();
	f->ackq = ackq_new();
	f->spool = spool_open(f->dir);
	for (int i = 0; i < 2 && f->ackq; i++)
		f->q[i] = queue_new(max_events, 1 << 30, f->ackq);
	if (!f->base || !f->ackq || !f->spool || !f->q[0] || !f->q[1]) {
		fprintf(stderr, "fixture setup failed\n");
		exit(2);
	}
	f->in = intake_new(f->base, f->q, 2, f->spool, f->ackq);
	CHECK(f->in != NULL);
	CHECK(intake_watch(f->in, fake_room_cb, f) == 0);
	msgpack_sbuffer_init(&f->sb);
	msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
	msgpack_unpacked_init(&f->val);
	room_calls = 0;
	stats_reset();
}

/* Run the loop until nothing is ready: the ack channel's eventfd fires here. */
static void fx_loop(struct fx *f)
{
	spool_dead_letter_drain(f->spool); /* dead-letter lines hold acks until durable */
	CHECK(event_base_loop(f->base, EVLOOP_NONBLOCK) >= 0);
}

/* Play the writer: pop every record, release its ack, free it. Returns the count. */
static size_t fx_commit(struct fx *f, struct ack *want_ack)
{
	struct record *recs[T_MAXREC];
	size_t total = 0;

	for (int i = 0; i < 2; i++) {
		size_t n = queue_pop_batch(f->q[i], recs, T_MAXREC, 0);

		for (size_t k = 0; k < n; k++) {
			CHECK(recs[k]->id_hash % 2 == (uint32_t)i); /* routed by id */
			CHECK(recs[k]->ack == want_ack);
			if (recs[k]->ack)
				ack_release(f->ackq, recs[k]->ack);
			record_free(recs[k]);
		}
		total += n;
	}
	return total;
}

static void fx_close(struct fx *f)
{
	char cmd[128];

	fx_commit(f, NULL);
	intake_unwatch(f->in, f);
	intake_free(f->in);
	queue_free(f->q[0]);
	queue_free(f->q[1]);
	spool_close(f->spool);
	ackq_free(f->ackq);
	event_base_free(f->base);
	msgpack_unpacked_destroy(&f->val);
	msgpack_sbuffer_destroy(&f->sb);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
}

/* The dead-letter file's content (caller frees). */
static char *fx_dead(struct fx *f)
{
	FILE *fp;
	char *buf = calloc(1, 1 << 16);
	size_t n;

	spool_dead_letter_drain(f->spool);
	fp = fopen(spool_dead_letter_path(f->spool), "r");
	if (!buf || !fp) {
		fprintf(stderr, "cannot read the dead-letter file\n");
		exit(2);
	}
	n = fread(buf, 1, (1 << 16) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static void pk_str(struct fx *f, const char *s)
{
	msgpack_pack_str_with_body(&f->pk, s, strlen(s));
}

/* The map {"mg_id": ID, "mg_record_type": "generation", KEY: VALUE} as the
 * decoded object an input would hand in (valid until the next call). */
static const msgpack_object *fx_map(struct fx *f, const char *id, const char *key,
				    const char *value)
{
	msgpack_sbuffer_clear(&f->sb);
	msgpack_pack_map(&f->pk, 3);
	pk_str(f, "mg_id");
	pk_str(f, id);
	pk_str(f, "mg_record_type");
	pk_str(f, "generation");
	pk_str(f, key);
	pk_str(f, value);
	if (msgpack_unpack_next(&f->val, f->sb.data, f->sb.size, NULL) != MSGPACK_UNPACK_SUCCESS) {
		fprintf(stderr, "cannot decode the map just packed\n");
		exit(2);
	}
	return &f->val.data;
}

static const struct record_ctx fake_ctx = { .peer = "fake:1", .recv_ns = 1 };

/* ---- tests --------------------------------------------------------------- */

/* Good events are queued by id; the ack's callback runs once, on the loop,
 * only after every event is committed and the input closed its ack. */
static void test_queued_then_acked(void)
{
	struct fx f;
	struct fake_req req = { 0 };
	struct record_error why;
	struct ack *ack;
	char id[16];

	fx_open(&f, 1000, false);
	ack = intake_ack_open(f.in, fake_done_cb, &req, "c1", 2, false);
	CHECK(ack != NULL);
	for (int i = 0; i < 8; i++) {
		snprintf(id, sizeof(id), "id-%d", i);
		CHECK(intake_event(f.in, fx_map(&f, id, "prompt", "hi"), &fake_ctx, ack, &why) ==
		      INTAKE_QUEUED);
	}
	CHECK(queue_events(f.q[0]) + queue_events(f.q[1]) == 8);
	CHECK(queue_events(f.q[0]) > 0 && queue_events(f.q[1]) > 0); /* both writers used */
	CHECK(stats_get(STAT_events_received_total) == 8);
	intake_ack_close(f.in, ack);
	fx_loop(&f);
	CHECK(req.done == 0); /* the writer has not committed yet */
	CHECK(fx_commit(&f, ack) == 8);
	fx_loop(&f);
	CHECK(req.done == 1);
	CHECK(req.durable);
	CHECK(req.chunk_len == 2 && memcmp(req.chunk, "c1", 2) == 0);
	CHECK(room_calls >= 1);
	fx_loop(&f);
	CHECK(req.done == 1); /* once */
	fx_close(&f);
}

/* The guard: events committed before the input closes its ack do not run
 * the callback early. */
static void test_guard_holds(void)
{
	struct fx f;
	struct fake_req req = { 0 };
	struct record_error why;
	struct ack *ack;

	fx_open(&f, 1000, false);
	ack = intake_ack_open(f.in, fake_done_cb, &req, NULL, 0, false);
	CHECK(ack != NULL);
	CHECK(intake_event(f.in, fx_map(&f, "a", "prompt", "x"), &fake_ctx, ack, &why) ==
	      INTAKE_QUEUED);
	CHECK(fx_commit(&f, ack) == 1);
	fx_loop(&f);
	CHECK(req.done == 0);
	intake_ack_close(f.in, ack);
	CHECK(req.done == 0); /* never inside intake_ack_close */
	fx_loop(&f);
	CHECK(req.done == 1);
	CHECK(req.durable);
	CHECK(req.chunk_len == 0);
	fx_close(&f);
}

/* A bad event is dead-lettered with reason and field, reported back with
 * them (what HTTP lists per index), and the ack waits for its line. */
static void test_rejected_dead_lettered(void)
{
	struct fx f;
	struct fake_req req = { 0 };
	struct record_error why;
	struct ack *ack;
	char *dead;

	fx_open(&f, 1000, false);
	ack = intake_ack_open(f.in, fake_done_cb, &req, "c2", 2, true);
	CHECK(ack != NULL);
	CHECK(intake_event(f.in, fx_map(&f, "good", "prompt", "ok"), &fake_ctx, ack, &why) ==
	      INTAKE_QUEUED);
	CHECK(intake_event(f.in, fx_map(&f, "bad", "mg_latency_ms", "slow"), &fake_ctx, ack,
			   &why) == INTAKE_REJECTED);
	CHECK(why.reason == RECORD_REASON_BAD_TYPE);
	CHECK_STR(why.field, "mg_latency_ms");
	CHECK_CONTAINS(why.message, "mg_latency_ms");
	intake_ack_close(f.in, ack);
	CHECK(fx_commit(&f, ack) == 1);
	fx_loop(&f);
	CHECK(req.done == 1);
	CHECK(req.durable);
	dead = fx_dead(&f);
	CHECK_CONTAINS(dead, "\"field\":\"mg_latency_ms\"");
	CHECK_CONTAINS(dead, "\"bad\"");
	CHECK_CONTAINS(dead, "fake:1");
	CHECK(strstr(dead, "\"good\"") == NULL);
	free(dead);
	CHECK(stats_get(STAT_events_received_total) == 2);
	CHECK(stats_get(STAT_events_dead_lettered_total) == 1);
	CHECK(stats_rejected(RECORD_REASON_BAD_TYPE) == 1);
	fx_close(&f);
}

/* What the input could not read itself: one line each, or one for many. */
static void test_reject_and_bulk(void)
{
	struct fx f;
	struct fake_req req = { 0 };
	struct record_error why = { .reason = RECORD_REASON_BAD_FRAME };
	msgpack_object nil = { .type = MSGPACK_OBJECT_NIL };
	struct ack *ack;
	char *dead;

	fx_open(&f, 1000, false);
	ack = intake_ack_open(f.in, fake_done_cb, &req, "c3", 2, false);
	CHECK(ack != NULL);
	snprintf(why.message, sizeof(why.message), "frame: not an event");
	CHECK(intake_reject(f.in, &nil, &fake_ctx, ack, &why) == INTAKE_REJECTED);
	snprintf(why.message, sizeof(why.message), "entries 3 to 9 not read");
	CHECK(intake_reject_bulk(f.in, &nil, &fake_ctx, ack, &why, 7) == INTAKE_REJECTED);
	intake_ack_close(f.in, ack);
	fx_loop(&f);
	CHECK(req.done == 1);
	CHECK(req.durable);
	dead = fx_dead(&f);
	CHECK_CONTAINS(dead, "frame: not an event");
	CHECK_CONTAINS(dead, "\"count\":7");
	free(dead);
	CHECK(stats_get(STAT_events_received_total) == 8);
	CHECK(stats_get(STAT_events_dead_lettered_total) == 8);
	CHECK(stats_get(STAT_dead_letter_bulk_total) == 1);
	CHECK(stats_rejected(RECORD_REASON_BAD_FRAME) == 8);
	fx_close(&f);
}

/* A dead-letter line that cannot be written: the callback hears "not
 * durable", so the input never answers ok. */
static void test_dead_letter_failure_not_durable(void)
{
	struct fx f;
	struct fake_req req = { 0 };
	struct record_error why;
	struct ack *ack;
	struct unit_capture log_cap;

	fx_open(&f, 1000, true);
	ack = intake_ack_open(f.in, fake_done_cb, &req, "c4", 2, false);
	CHECK(ack != NULL);
	unit_capture_begin(&log_cap); /* the spool logs the failed write */
	CHECK(intake_event(f.in, fx_map(&f, "bad", "mg_latency_ms", "slow"), &fake_ctx, ack,
			   &why) == INTAKE_REJECTED);
	intake_ack_close(f.in, ack);
	fx_loop(&f);
	free(unit_capture_end(&log_cap));
	CHECK(req.done == 1);
	CHECK(!req.durable);
	fx_close(&f);
}

/* Without an ack (a client that wants no answer) events still flow. */
static void test_no_ack(void)
{
	struct fx f;
	struct record_error why;

	fx_open(&f, 1000, false);
	CHECK(intake_event(f.in, fx_map(&f, "n", "prompt", "x"), &fake_ctx, NULL, &why) ==
	      INTAKE_QUEUED);
	CHECK(intake_event(f.in, fx_map(&f, "m", "mg_latency_ms", "x"), &fake_ctx, NULL, &why) ==
	      INTAKE_REJECTED);
	intake_ack_close(f.in, NULL);
	CHECK(fx_commit(&f, NULL) == 1);
	fx_close(&f);
}

/* A full queue makes the intake busy; once the writer drains it the loop
 * wakes, the room callback runs and the intake has room again. */
static void test_backpressure(void)
{
	struct fx f;
	struct record_error why;
	char id[16];
	int queued = 0;

	fx_open(&f, 4, false);
	CHECK(!intake_busy(f.in));
	for (int i = 0; i < 64 && !intake_busy(f.in); i++) {
		snprintf(id, sizeof(id), "bp-%d", i);
		CHECK(intake_event(f.in, fx_map(&f, id, "prompt", "x"), &fake_ctx, NULL, &why) ==
		      INTAKE_QUEUED);
		queued++;
	}
	CHECK(intake_busy(f.in));
	CHECK(queued >= 4 && queued <= 8); /* one queue reached its 4 events */
	fx_loop(&f);
	room_calls = 0;
	CHECK(fx_commit(&f, NULL) == (size_t)queued);
	fx_loop(&f);
	CHECK(room_calls >= 1); /* the drained queue woke the loop */
	CHECK(!intake_busy(f.in));
	fx_close(&f);
}

/* After intake_stop (shutdown) nothing is taken: the intake stays busy,
 * events and rejections fail, and the ack's callback hears "not durable"
 * while what was queued before still completes normally. */
static void test_stopped(void)
{
	struct fx f;
	struct fake_req before = { 0 }, after = { 0 };
	struct record_error why = { .reason = RECORD_REASON_BAD_FRAME };
	msgpack_object nil = { .type = MSGPACK_OBJECT_NIL };
	struct ack *a1, *a2;

	fx_open(&f, 1000, false);
	a1 = intake_ack_open(f.in, fake_done_cb, &before, NULL, 0, false);
	a2 = intake_ack_open(f.in, fake_done_cb, &after, NULL, 0, false);
	CHECK(a1 && a2);
	CHECK(intake_event(f.in, fx_map(&f, "s1", "prompt", "x"), &fake_ctx, a1, &why) ==
	      INTAKE_QUEUED);
	intake_ack_close(f.in, a1);
	intake_stop(f.in);
	CHECK(intake_busy(f.in));
	CHECK(intake_event(f.in, fx_map(&f, "s2", "prompt", "x"), &fake_ctx, a2, &why) ==
	      INTAKE_FAILED);
	CHECK_CONTAINS(why.message, "stopping");
	/* The caller logs WHY: it must say why the event was not taken. */
	snprintf(why.message, sizeof(why.message), "frame: not an event");
	CHECK(intake_reject(f.in, &nil, &fake_ctx, a2, &why) == INTAKE_FAILED);
	CHECK_CONTAINS(why.message, "stopping");
	snprintf(why.message, sizeof(why.message), "entries 3 to 9 not read");
	CHECK(intake_reject_bulk(f.in, &nil, &fake_ctx, a2, &why, 3) == INTAKE_FAILED);
	CHECK_CONTAINS(why.message, "stopping");
	intake_ack_close(f.in, a2);
	CHECK(stats_get(STAT_events_received_total) == 1);
	CHECK(fx_commit(&f, a1) == 1); /* only the event from before the stop */
	fx_loop(&f);
	CHECK(before.done == 1 && before.durable);
	CHECK(after.done == 1 && !after.durable);
	fx_close(&f);
}

/* The room callbacks are bounded and can be removed. */
static void test_watchers(void)
{
	struct fx f;
	int a[INTAKE_MAX_WATCHERS];

	fx_open(&f, 1000, false); /* registers one */
	for (int i = 0; i < INTAKE_MAX_WATCHERS - 1; i++)
		CHECK(intake_watch(f.in, fake_room_cb, &a[i]) == 0);
	CHECK(intake_watch(f.in, fake_room_cb, &a[INTAKE_MAX_WATCHERS - 1]) == -1);
	room_calls = 0;
	intake_flush(f.in);
	CHECK(room_calls == INTAKE_MAX_WATCHERS);
	intake_unwatch(f.in, &a[0]);
	room_calls = 0;
	intake_flush(f.in);
	CHECK(room_calls == INTAKE_MAX_WATCHERS - 1);
	fx_close(&f);
}

int main(void)
{
	log_set_level(LOG_LEVEL_ERROR); /* rejections warn; that is their normal outcome */
	test_queued_then_acked();
	test_guard_holds();
	test_rejected_dead_lettered();
	test_reject_and_bulk();
	test_dead_letter_failure_not_durable();
	test_no_ack();
	test_backpressure();
	test_stopped();
	test_watchers();
	return unit_done("test_intake");
}
