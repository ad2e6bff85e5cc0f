/*
 * ack: the promise behind a forward-protocol {"ack": chunk} reply.
 *
 * The loop creates one struct ack per message that asked for one, with
 * PENDING = number of events queued + 1 (a guard the loop drops once the whole
 * message is queued). Each writer drops one reference per event once its
 * batch has committed; whoever drops the last one posts the ack to the
 * completion channel (struct ackq), whose eventfd wakes the loop, which sends
 * the reply if the connection is still open and frees the ack.
 *
 * An event that cannot be made durable (its dead-letter line could not be
 * written) sets FAILED before its reference is dropped: the loop then closes
 * the connection instead of acking, so the client resends.
 *
 * Thread rules: pending and failed are atomic (any thread); next is written only under
 * the ackq lock; owner is read and written by the loop thread only.
 */
#ifndef MI_ACK_H
#define MI_ACK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct ack {
	atomic_uint pending;      /* events not yet durable, +1 guard while queuing */
	atomic_bool failed;       /* an event could not be made durable: never send this ack */
	struct ack *next;         /* completion list link; under ackq lock */
	void *owner;              /* connection that asked; loop thread only, NULL once closed */
	uint8_t chunk_is_bin;     /* echo as bin (1) or str (0) */
	uint32_t chunk_len;
	char chunk[];             /* the option.chunk value, byte for byte */
};

struct ackq;

/* New ack for CHUNK with pending = 1 (the guard). NULL on allocation failure. */
struct ack *ack_new(void *owner, const char *chunk, uint32_t len, bool is_bin)
	__attribute__((warn_unused_result));

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
