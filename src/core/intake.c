/*
 * intake.c: the step between an input's decoder and the writers' queues.
 *
 * Every input (Forward, HTTP) hands its decoded events here, so
 * validation, routing, counting, dead-lettering and the ack bookkeeping
 * exist once. An event is validated into a record (record_from_map) and
 * pushed to queues[id_hash % nqueues]: one writer owns each id, so two
 * versions of a row never race in two transactions. queue_push is called
 * from here only.
 *
 * Acks: an input opens one struct ack per unit its client wants answered,
 * with a guard reference; every queued event and every dead-letter line
 * takes a reference (the writer drops it once the batch is committed or
 * spooled, the dead-letter thread once the line is durable, marking the ack
 * failed if it cannot be written), and the input drops the guard with
 * intake_ack_close once the unit is handed in. The last release posts the
 * ack to the channel; intake_flush, on the loop, runs its done_cb and
 * frees it. An event neither queued nor dead-lettered (out of memory, or
 * the daemon stopping) takes no reference, marks the ack failed and is
 * reported INTAKE_FAILED: the callback then hears "not durable" and the
 * input never answers "ok" (Forward closes the connection at once, so the
 * client resends).
 *
 * Backpressure: a queue over its limits, or a dead-letter file that lags,
 * makes intake_busy true; inputs stop reading until a room callback (run
 * after each flush of the ack channel, which is also the queues' wakeup)
 * finds it false again. Queues only bound memory by this agreement: pushes
 * themselves never fail for being full. After intake_stop (shutdown, before
 * the queues close) the intake stays busy and takes nothing, so no event
 * lands on a queue whose writer is draining for the last time. Loop
 * thread only.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "ack.h"
#include "intake.h"
#include "log.h"
#include "queue.h"
#include "record.h"
#include "spool.h"
#include "stats.h"

struct intake_watcher {
	void (*room_cb)(void *arg);
	void *arg;
};

struct intake {
	struct queue **queues;     /* one per writer; owned by main */
	int nqueues;
	struct spool *spool;       /* dead-letter file */
	struct ackq *ackq;         /* where finished acks come back */
	struct event *ack_ev;      /* ackq's eventfd on the loop, or NULL */
	struct intake_watcher watchers[INTAKE_MAX_WATCHERS];
	int nwatchers;
	bool stopped;              /* intake_stop: busy for good, takes nothing */
};

static void intake_ack_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	intake_flush(arg);
}

struct intake *intake_new(struct event_base *base, struct queue **queues, int nqueues,
			  struct spool *spool, struct ackq *ackq)
{
	struct intake *in = calloc(1, sizeof(*in));

	if (!in) {
		log_error("intake", "out of memory");
		return NULL;
	}
	in->queues = queues;
	in->nqueues = nqueues;
	in->spool = spool;
	in->ackq = ackq;
	if (!base)
		return in;
	in->ack_ev = event_new(base, ackq_fd(ackq), EV_READ | EV_PERSIST, intake_ack_ev_cb, in);
	if (!in->ack_ev || event_add(in->ack_ev, NULL) < 0) {
		log_error("intake", "cannot watch the ack channel");
		intake_free(in);
		return NULL;
	}
	return in;
}

void intake_free(struct intake *in)
{
	if (!in)
		return;
	/* Queued dead-letter lines still hold acks: let them reach the channel
	 * before the caller frees it. */
	spool_dead_letter_drain(in->spool);
	if (in->ack_ev)
		event_free(in->ack_ev);
	free(in);
}

/* ---- acks --------------------------------------------------------------- */

struct ack *intake_ack_open(struct intake *in, ack_done_cb *done_cb, void *arg,
			    const char *chunk, uint32_t len, bool is_bin)
{
	struct ack *a = ack_new(done_cb, arg, chunk, len, is_bin);

	(void)in;
	if (!a)
		log_error("intake", "out of memory creating an ack");
	return a;
}

void intake_ack_close(struct intake *in, struct ack *ack)
{
	if (ack)
		ack_release(in->ackq, ack);
}

void intake_flush(struct intake *in)
{
	struct ack *a = ackq_take(in->ackq), *next;

	for (; a; a = next) {
		next = a->next;
		if (a->done_cb)
			a->done_cb(a, !atomic_load(&a->failed), a->arg);
		free(a);
	}
	for (int i = 0; i < in->nwatchers; i++)
		in->watchers[i].room_cb(in->watchers[i].arg);
}

int intake_watch(struct intake *in, void (*room_cb)(void *arg), void *arg)
{
	if (in->nwatchers == INTAKE_MAX_WATCHERS)
		return -1;
	in->watchers[in->nwatchers++] = (struct intake_watcher){ room_cb, arg };
	return 0;
}

void intake_unwatch(struct intake *in, void *arg)
{
	for (int i = 0; i < in->nwatchers; i++) {
		if (in->watchers[i].arg != arg)
			continue;
		memmove(&in->watchers[i], &in->watchers[i + 1],
			(size_t)(in->nwatchers - i - 1) * sizeof(in->watchers[0]));
		in->nwatchers--;
		return;
	}
}

/* ---- events ------------------------------------------------------------- */

/* EVENT of ACK was neither queued nor dead-lettered: ACK must never say "ok". */
static enum intake_verdict intake_failed(struct ack *ack)
{
	if (ack)
		atomic_store(&ack->failed, true);
	return INTAKE_FAILED;
}

/* After intake_stop: WHY says so. */
static enum intake_verdict intake_refuse(struct ack *ack, struct record_error *why)
{
	why->reason = RECORD_REASON_BAD_FRAME;
	why->field[0] = '\0';
	snprintf(why->message, sizeof(why->message), "daemon stopping: event not taken");
	return intake_failed(ack);
}

/*
 * Dead-letter EVENT (COUNT events in one line when more than 1) for WHY.
 * Counted as rejected by the caller; counted dead-lettered here once the
 * line is queued for the disk.
 */
static enum intake_verdict intake_dead_letter(struct intake *in, const msgpack_object *event,
					      const struct record_ctx *ctx, struct ack *ack,
					      const struct record_error *why, uint64_t count)
{
	struct dead_letter dl = {
		.reason = why->message,
		.field = why->field[0] ? why->field : NULL,
		.tag = ctx->tag,
		.tag_len = ctx->tag_len,
		.peer = ctx->peer,
		.has_event_time = ctx->has_time, /* megactl replay sends it back with it */
		.event_time_ns = ctx->has_time ? ctx->time_ns : 0,
		.event = event,
		.count = count,
	};

	/* Written by the dead-letter thread; ACK waits for it to be durable. */
	if (spool_dead_letter_post(in->spool, &dl, in->ackq, ack) < 0)
		return intake_failed(ack);
	stats_add(STAT_events_dead_lettered_total, count);
	return INTAKE_REJECTED;
}

/* Push R to its writer's queue, counting it toward ACK. */
static enum intake_verdict intake_queue(struct intake *in, struct record *r, struct ack *ack,
					struct record_error *why)
{
	struct queue *q = in->queues[r->id_hash % (uint32_t)in->nqueues];

	r->ack = ack;
	if (ack)
		atomic_fetch_add(&ack->pending, 1);
	if (queue_push(q, r) == 0)
		return INTAKE_QUEUED;
	r->ack = NULL;
	record_free(r);
	if (ack)
		ack_release(in->ackq, ack); /* never the last: the input holds the guard */
	why->reason = RECORD_REASON_BAD_FRAME;
	why->field[0] = '\0';
	snprintf(why->message, sizeof(why->message), "out of memory queueing the event");
	return intake_failed(ack);
}

enum intake_verdict intake_event(struct intake *in, const msgpack_object *map,
				 const struct record_ctx *ctx, struct ack *ack,
				 struct record_error *why)
{
	struct record *r = NULL;

	if (in->stopped)
		return intake_refuse(ack, why);
	stats_add(STAT_events_received_total, 1);
	if (record_from_map(map, ctx, &r, why) == 0)
		return intake_queue(in, r, ack, why);
	stats_reject(why->reason);
	return intake_dead_letter(in, map, ctx, ack, why, 1);
}

enum intake_verdict intake_reject(struct intake *in, const msgpack_object *event,
				  const struct record_ctx *ctx, struct ack *ack,
				  struct record_error *why)
{
	if (in->stopped)
		return intake_refuse(ack, why);
	stats_add(STAT_events_received_total, 1);
	stats_reject(why->reason);
	return intake_dead_letter(in, event, ctx, ack, why, 1);
}

enum intake_verdict intake_reject_bulk(struct intake *in, const msgpack_object *event,
				       const struct record_ctx *ctx, struct ack *ack,
				       struct record_error *why, uint64_t count)
{
	if (in->stopped)
		return intake_refuse(ack, why);
	stats_add(STAT_events_received_total, count);
	stats_reject_n(why->reason, count);
	stats_add(STAT_dead_letter_bulk_total, 1);
	return intake_dead_letter(in, event, ctx, ack, why, count);
}

/* ---- backpressure ------------------------------------------------------- */

bool intake_busy(const struct intake *in)
{
	if (in->stopped || spool_dead_letter_busy(in->spool))
		return true;
	for (int i = 0; i < in->nqueues; i++)
		if (queue_full(in->queues[i]))
			return true;
	return false;
}

bool intake_stopped(const struct intake *in)
{
	return in->stopped;
}

void intake_stop(struct intake *in)
{
	in->stopped = true;
}

size_t intake_pending(const struct intake *in)
{
	return spool_dead_letter_pending(in->spool);
}
