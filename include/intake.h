/*
 * intake: the one door from every input into the pipeline.
 *
 * An input decodes its wire format into events (a msgpack map plus what the
 * framing knew, struct record_ctx) and hands each one here with the ack
 * that answers its client. The intake validates the event (record_from_map),
 * routes it to its writer's queue (id_hash % nqueues), counts it (stats),
 * dead-letters what it rejects, keeps one ack reference per event, and says
 * when inputs must stop reading (backpressure). It also drains the ack
 * channel: each finished ack's callback runs on the loop, so the input
 * answers its client (Forward: {"ack": chunk}; HTTP: the deferred reply).
 *
 * Usage by an input, per unit the client wants answered (a Forward message,
 * an HTTP request):
 *
 *     ack = intake_ack_open(in, my_done_cb, my_req, chunk, len, is_bin);
 *     for each event: v = intake_event(in, &map, &ctx, ack, &why);
 *         INTAKE_QUEUED: fine; INTAKE_REJECTED: dead-lettered, WHY says why;
 *         INTAKE_FAILED: neither queued nor dead-lettered: never answer "ok"
 *     intake_ack_close(in, ack);
 *
 * my_done_cb(ack, durable, my_req) later runs once, on the loop, when every
 * queued event is committed (or spooled) and every dead-letter line is on
 * disk; DURABLE is false when one of them could not be made durable or an
 * event was INTAKE_FAILED. An input may pass ack NULL when its client
 * wants no answer.
 *
 * Threads: every function here is for the loop thread; the writers and the
 * dead-letter thread only drop ack references (ack.h).
 */
#ifndef MI_INTAKE_H
#define MI_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "ack.h"
#include "record.h"

struct event_base;
struct queue;
struct spool;
struct intake;

enum intake_verdict {
	INTAKE_QUEUED = 0,   /* on its writer's queue; the ack counts it */
	INTAKE_REJECTED,     /* invalid: dead-lettered with the reason in WHY */
	INTAKE_FAILED,       /* neither queued nor dead-lettered (out of memory, or
			      * after intake_stop): the ack is marked failed, the
			      * caller must not acknowledge it; WHY says what failed */
	INTAKE_VERDICT_COUNT /* number of verdicts; not a verdict */
};

/*
 * New intake over the writers' QUEUES (NQUEUES of them, owned by the
 * caller), the dead-letter file of SPOOL and the ack channel ACKQ. With
 * BASE, the ack channel's eventfd is watched there and intake_flush runs on
 * it; without (unit tests), the caller runs intake_flush. NULL after
 * logging on failure.
 */
struct intake *intake_new(struct event_base *base, struct queue **queues, int nqueues,
			  struct spool *spool, struct ackq *ackq)
	__attribute__((warn_unused_result));

/* Wait for queued dead-letter lines (they hold ack references), then free
 * IN. Acks still in the channel are left to ackq_free: no callback runs. */
void intake_free(struct intake *in);

/*
 * An ack for one unit of input, holding a guard reference until
 * intake_ack_close. DONE_CB(ack, durable, ARG) runs once, from intake_flush,
 * after which the ack is freed: the callback must not keep it. CHUNK (LEN
 * bytes, may be NULL when LEN is 0) is copied into the ack for the input's
 * reply. NULL on allocation failure (logged).
 */
struct ack *intake_ack_open(struct intake *in, ack_done_cb *done_cb, void *arg,
			    const char *chunk, uint32_t len, bool is_bin)
	__attribute__((warn_unused_result));

/* Every event of ACK's unit was handed in: drop the guard. The callback
 * runs later, from intake_flush, never inside this call. ACK may be NULL. */
void intake_ack_close(struct intake *in, struct ack *ack);

/*
 * Validate MAP (with what the framing knew, CTX) and queue it, counting it
 * toward ACK (or NULL); an invalid event is dead-lettered instead, holding
 * a reference on ACK until its line is durable. WHY is filled unless the
 * verdict is INTAKE_QUEUED.
 */
enum intake_verdict intake_event(struct intake *in, const msgpack_object *map,
				 const struct record_ctx *ctx, struct ack *ack,
				 struct record_error *why)
	__attribute__((warn_unused_result));

/*
 * An event the input itself could not read as one (bad framing, bad time):
 * counted as received and rejected for WHY->reason, dead-lettered as
 * EVENT (what was received) with WHY's message and field. Returns
 * INTAKE_REJECTED, or INTAKE_FAILED when it could not be queued for the
 * disk; after intake_stop, INTAKE_FAILED with WHY rewritten to say the
 * daemon is stopping.
 */
enum intake_verdict intake_reject(struct intake *in, const msgpack_object *event,
				  const struct record_ctx *ctx, struct ack *ack,
				  struct record_error *why)
	__attribute__((warn_unused_result));

/* COUNT events (>= 1) dead-lettered as one line holding EVENT: what an
 * input does with the rest of a message that was rejected too often. WHY
 * as for intake_reject. */
enum intake_verdict intake_reject_bulk(struct intake *in, const msgpack_object *event,
				       const struct record_ctx *ctx, struct ack *ack,
				       struct record_error *why, uint64_t count)
	__attribute__((warn_unused_result));

/* True while a writer's queue is full or the dead-letter file lags (and
 * for good after intake_stop): every input stops reading until its room
 * callback runs and this is false (HTTP: answers 503 meanwhile). */
bool intake_busy(const struct intake *in);
/* After intake_stop: busy for good, so an input waiting for room stops
 * waiting and lets the intake refuse what it has left. Loop thread. */
bool intake_stopped(const struct intake *in);

/* Shutdown, before the queues close: take no event any more (each is
 * INTAKE_FAILED); acks already given out still come back. */
void intake_stop(struct intake *in);

/*
 * ROOM_CB(ARG) runs after every intake_flush: acks went out, or a queue
 * drained below its low mark; a paused input checks intake_busy and reads
 * again. 0, or -1 when INTAKE_MAX_WATCHERS are registered already.
 */
#define INTAKE_MAX_WATCHERS 4
int intake_watch(struct intake *in, void (*room_cb)(void *arg), void *arg)
	__attribute__((warn_unused_result));
void intake_unwatch(struct intake *in, void *arg);

/* Take every finished ack from the channel, run its callback and free it,
 * then run the room callbacks. */
void intake_flush(struct intake *in);

/* Dead-letter bytes not yet on disk: acks still to come (shutdown waits). */
size_t intake_pending(const struct intake *in);

#endif
