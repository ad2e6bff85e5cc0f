/*
 * queue: the bounded ring between the event loop (one producer) and one
 * writer thread (one consumer).
 *
 * The loop pushes validated records (from intake.c only); the writer pops
 * batches. Limits are a policy, not a hard wall: queue_push never fails
 * for being full (only when the ring cannot grow: out of memory, and the
 * record stays the caller's), and inputs stop reading while queue_full()
 * is true (through intake_busy), so the queue can exceed its limits by at
 * most the events of the message being decoded (itself bounded by
 * listen.max_event_bytes). Nothing is ever dropped here.
 * See queue.c for the locking design.
 */
#ifndef MI_QUEUE_H
#define MI_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct record;
struct ackq;

struct queue;

/* New queue with the given limits; WAKE (may be NULL) is poked when the
 * queue drains below its low-water mark after having been full. */
struct queue *queue_new(size_t max_events, size_t max_bytes, struct ackq *wake)
	__attribute__((warn_unused_result));
/* Frees the ring and any records still in it. No thread may use Q anymore. */
void queue_free(struct queue *q);

/* Change limits live (reload). Any thread. */
void queue_set_limits(struct queue *q, size_t max_events, size_t max_bytes);

/* Loop thread: append R (ownership moves to the queue). -1 only on ENOMEM. */
int queue_push(struct queue *q, struct record *r) __attribute__((warn_unused_result));
/* Loop thread: at or over a limit; the loop must stop reading, and the
 * queue is marked blocked (queue_blocked) until a writer drains it. */
bool queue_full(struct queue *q);
/* At or over a limit now, changing nothing (health checks). Any thread. */
bool queue_over_limit(struct queue *q);
/* True from queue_full() returning true until the writer drained the queue
 * below 3/4 of its limits: the loop's reading is paused meanwhile. Any thread. */
bool queue_blocked(struct queue *q);

/*
 * Writer thread: wait up to WAIT_MS while the queue is empty, then move up
 * to MAX records into OUT in arrival order, at once: a free writer never
 * waits for a batch to fill (see queue.c). Returns the count (0: timed out
 * empty, or closed and empty).
 */
size_t queue_pop_batch(struct queue *q, struct record **out, size_t max, int wait_ms);
/* Writer thread: wait up to WAIT_MS until WANT records are queued or the
 * queue is closed; returns how many are queued (writer.flush_interval_ms).
 * Like a pop, it lowers queue_blocked() once there is room. */
size_t queue_wait(struct queue *q, size_t want, int wait_ms);

/* No more pushes will come; wakes the writer so it drains and stops. */
void queue_close(struct queue *q);
bool queue_closed_and_empty(struct queue *q);
bool queue_is_closed(struct queue *q);

/* Figures for stats; any thread. */
size_t queue_events(struct queue *q);
size_t queue_bytes(struct queue *q);

#endif
