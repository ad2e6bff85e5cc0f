/*
 * ack: the promise behind an input's answer to its client (a Forward
 * {"ack": chunk} reply, an HTTP response).
 *
 * The loop creates one struct ack per unit of input that wants an answer
 * (intake_ack_open), with PENDING = events queued or dead-lettered + 1 (a
 * guard the loop drops once the whole unit is handed in). Each writer drops
 * one reference per event once its batch has committed (or is spooled), the
 * dead-letter thread one per line once it is durable; whoever drops the last
 * one posts the ack to the completion channel (struct ackq), whose eventfd
 * wakes the loop. There the intake calls the ack's done_cb, which answers
 * the client if it is still there, and frees the ack.
 *
 * An event that cannot be made durable (its dead-letter line could not be
 * written) sets FAILED before its reference is dropped: done_cb is then
 * told so (durable false) and must not answer "ok" (Forward closes the
 * connection, so the client resends).
 *
 * Thread rules: pending and failed are atomic (any thread); next is written
 * only under the ackq lock; done_cb, arg and the chunk are set at creation
 * and read by the loop thread only (done_cb runs on the loop).
 */
#ifndef MI_ACK_H
#define MI_ACK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct ack;

/* Runs on the loop once ACK's last reference is dropped; DURABLE is false
 * when an event could not be made durable. ACK is freed after it returns. */
typedef void ack_done_cb(struct ack *ack, bool durable, void *arg);

struct ack {
	atomic_uint pending;      /* events not yet durable, +1 guard while queuing */
	atomic_bool failed;       /* an event could not be made durable: never answer "ok" */
	struct ack *next;         /* completion list link; under ackq lock */
	ack_done_cb *done_cb;     /* the input's answer; loop thread only */
	void *arg;                /* its argument (Forward: the connection); loop thread only */
	uint8_t chunk_is_bin;     /* echo as bin (1) or str (0) */
	uint32_t chunk_len;
	char chunk[];             /* bytes the input keeps for its answer (Forward: option.chunk) */
};

struct ackq;

/* New ack for CHUNK (LEN bytes; NULL when LEN is 0) with pending = 1 (the
 * guard). NULL on allocation failure. Inputs use intake_ack_open. */
struct ack *ack_new(ack_done_cb *done_cb, void *arg, const char *chunk, uint32_t len,
		    bool is_bin) __attribute__((warn_unused_result));

/* Completion channel. The eventfd is readable while acks wait. */
struct ackq *ackq_new(void) __attribute__((warn_unused_result));
void ackq_free(struct ackq *q);
int ackq_fd(const struct ackq *q);

/* Drop one reference; on the last one post ACK to Q. Any thread. */
void ack_release(struct ackq *q, struct ack *ack);

/* Wake the loop without an ack (e.g. the queue drained below its low mark). Any thread. */
void ackq_wake(struct ackq *q);

/* Loop thread: clear the eventfd and take every posted ack (a list via next). */
struct ack *ackq_take(struct ackq *q);

#endif
