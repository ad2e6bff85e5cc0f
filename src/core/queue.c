/*
 * queue.c: the bounded ring between the event loop and one writer thread.
 *
 * DESIGN
 * ------
 * One producer (the loop) and one consumer (a writer) share a ring of record
 * pointers under one mutex, in the shape of Redis's bio.c: the producer locks,
 * appends, signals and unlocks; the consumer waits on a condition variable
 * while the ring is empty, moves a whole batch out, and
 * unlocks before it touches libpq, so the lock is held for a few pointer
 * copies per batch and never across I/O.
 *
 * A free writer takes whatever is queued at once (group commit): while one
 * transaction runs, the next batch accumulates, so batches grow with the
 * load by themselves and an event never waits for a batch to fill. Only
 * writer.flush_interval_ms > 0 makes the writer linger (queue_wait) for a
 * fuller batch, trading latency for fewer transactions at light load.
 *
 * The limits (queue.max_events, queue.max_bytes) are a policy enforced by
 * the loop: it asks queue_full() before decoding each value and stops reading
 * every socket while the answer is yes (TCP backpressure). A push never
 * fails for being over a limit; the ring grows instead, so the events of the
 * one message being decoded when the limit is hit are kept, not dropped.
 * That overshoot is bounded by listen.max_event_bytes (x16 when gzip).
 *
 * The loop reads the fill level without the lock through atomic mirrors of
 * count and bytes. When it sees the queue full it raises BLOCKED; the writer,
 * after each pop or idle wait, lowers it once the queue is below three
 * quarters of both limits and pokes the loop's eventfd so it resumes reading.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "ack.h"
#include "queue.h"
#include "record.h"

#define QUEUE_MIN_CAPACITY 1024

struct queue {
	pthread_mutex_t lock;
	pthread_cond_t more;        /* writer waits here for WANT records or close */
	struct record **ring;       /* CAP slots; under lock */
	size_t cap;                 /* power of two; under lock */
	size_t head;                /* index of the oldest record; under lock */
	size_t count;               /* records in the ring; under lock */
	size_t bytes;               /* sum of record->size; under lock */
	size_t want;                /* writer sleeps until COUNT >= WANT; under lock */
	bool waiting;               /* writer is in pthread_cond_timedwait; under lock */
	bool closed;                /* no more pushes; under lock */
	atomic_size_t n_events;     /* mirror of COUNT for lock-free readers */
	atomic_size_t n_bytes;      /* mirror of BYTES for lock-free readers */
	atomic_size_t max_events;   /* queue.max_events; any thread, relaxed */
	atomic_size_t max_bytes;    /* queue.max_bytes; any thread, relaxed */
	atomic_bool blocked;        /* loop saw the queue full and paused reading */
	struct ackq *wake;          /* poked when BLOCKED clears; may be NULL */
};

static size_t queue_pow2(size_t n)
{
	size_t c = QUEUE_MIN_CAPACITY;

	while (c < n)
		c <<= 1;
	return c;
}

struct queue *queue_new(size_t max_events, size_t max_bytes, struct ackq *wake)
{
	struct queue *q = calloc(1, sizeof(*q));
	pthread_condattr_t attr;
	bool ok;

	if (!q)
		return NULL;
	q->cap = queue_pow2(max_events < 65536 ? max_events : 65536);
	q->ring = calloc(q->cap, sizeof(*q->ring));
	if (!q->ring || pthread_mutex_init(&q->lock, NULL) != 0) {
		free(q->ring);
		free(q);
		return NULL;
	}
	/* Waits are timed on CLOCK_MONOTONIC: a step of the wall clock must
	 * not stretch a writer's idle wait. */
	ok = pthread_condattr_init(&attr) == 0;
	if (ok) {
		ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
		     pthread_cond_init(&q->more, &attr) == 0;
		pthread_condattr_destroy(&attr);
	}
	if (!ok) {
		pthread_mutex_destroy(&q->lock);
		free(q->ring);
		free(q);
		return NULL;
	}
	atomic_init(&q->max_events, max_events);
	atomic_init(&q->max_bytes, max_bytes);
	q->wake = wake;
	return q;
}

void queue_free(struct queue *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < q->count; i++)
		record_free(q->ring[(q->head + i) & (q->cap - 1)]);
	pthread_cond_destroy(&q->more);
	pthread_mutex_destroy(&q->lock);
	free(q->ring);
	free(q);
}

void queue_set_limits(struct queue *q, size_t max_events, size_t max_bytes)
{
	atomic_store_explicit(&q->max_events, max_events, memory_order_relaxed);
	atomic_store_explicit(&q->max_bytes, max_bytes, memory_order_relaxed);
}

/* Double the ring, unwrapping it. Caller holds the lock. */
static int queue_grow(struct queue *q)
{
	size_t ncap = q->cap * 2;
	struct record **nring = malloc(ncap * sizeof(*nring));

	if (!nring)
		return -1;
	for (size_t i = 0; i < q->count; i++)
		nring[i] = q->ring[(q->head + i) & (q->cap - 1)];
	free(q->ring);
	q->ring = nring;
	q->cap = ncap;
	q->head = 0;
	return 0;
}

int queue_push(struct queue *q, struct record *r)
{
	pthread_mutex_lock(&q->lock);
	if (q->count == q->cap && queue_grow(q) < 0) {
		pthread_mutex_unlock(&q->lock);
		return -1;
	}
	q->ring[(q->head + q->count) & (q->cap - 1)] = r;
	q->count++;
	q->bytes += r->size;
	atomic_store_explicit(&q->n_events, q->count, memory_order_relaxed);
	atomic_store_explicit(&q->n_bytes, q->bytes, memory_order_relaxed);
	if (q->waiting && q->count >= q->want)
		pthread_cond_signal(&q->more);
	pthread_mutex_unlock(&q->lock);
	return 0;
}

static bool queue_over(struct queue *q, size_t num, size_t den)
{
	size_t ev = atomic_load_explicit(&q->n_events, memory_order_relaxed);
	size_t by = atomic_load_explicit(&q->n_bytes, memory_order_relaxed);

	return ev * den >= atomic_load_explicit(&q->max_events, memory_order_relaxed) * num ||
	       by * den >= atomic_load_explicit(&q->max_bytes, memory_order_relaxed) * num;
}

bool queue_over_limit(struct queue *q)
{
	return queue_over(q, 1, 1);
}

bool queue_full(struct queue *q)
{
	if (!queue_over(q, 1, 1))
		return false;
	atomic_store(&q->blocked, true);
	return true;
}

bool queue_blocked(struct queue *q)
{
	return atomic_load(&q->blocked);
}

static void queue_deadline(struct timespec *ts, int wait_ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts); /* the clock of q->more */
	ts->tv_sec += wait_ms / 1000;
	ts->tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Move up to MAX records into OUT. Caller holds the lock. */
static size_t queue_take(struct queue *q, struct record **out, size_t max)
{
	size_t n = q->count < max ? q->count : max;

	for (size_t i = 0; i < n; i++) {
		struct record *r = q->ring[q->head];

		out[i] = r;
		q->bytes -= r->size;
		q->head = (q->head + 1) & (q->cap - 1);
	}
	q->count -= n;
	atomic_store_explicit(&q->n_events, q->count, memory_order_relaxed);
	atomic_store_explicit(&q->n_bytes, q->bytes, memory_order_relaxed);
	return n;
}

/* Wait on MORE until COUNT >= WANT, DEADLINE or close. Caller holds the lock. */
static void queue_wait_locked(struct queue *q, size_t want, int wait_ms)
{
	struct timespec deadline;

	if (q->count >= want || q->closed || wait_ms <= 0)
		return;
	queue_deadline(&deadline, wait_ms);
	q->want = want;
	q->waiting = true;
	while (q->count < want && !q->closed)
		if (pthread_cond_timedwait(&q->more, &q->lock, &deadline) == ETIMEDOUT)
			break;
	q->waiting = false;
}

/* Resume the loop's reading once there is real room again. Run after every
 * look the writer takes, idle ones included: the loop may raise BLOCKED just
 * after a pop looked (its queue_full read the count before that pop took
 * it), and then only the next look can lower it. */
static void queue_unblock(struct queue *q)
{
	if (atomic_load(&q->blocked) && !queue_over(q, 3, 4)) {
		atomic_store(&q->blocked, false);
		if (q->wake)
			ackq_wake(q->wake);
	}
}

size_t queue_wait(struct queue *q, size_t want, int wait_ms)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	queue_wait_locked(q, want, wait_ms);
	n = q->count;
	pthread_mutex_unlock(&q->lock);
	queue_unblock(q);
	return n;
}

size_t queue_pop_batch(struct queue *q, struct record **out, size_t max, int wait_ms)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	queue_wait_locked(q, 1, wait_ms);
	n = queue_take(q, out, max);
	pthread_mutex_unlock(&q->lock);
	queue_unblock(q);
	return n;
}

void queue_close(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	pthread_cond_broadcast(&q->more);
	pthread_mutex_unlock(&q->lock);
}

bool queue_closed_and_empty(struct queue *q)
{
	bool r;

	pthread_mutex_lock(&q->lock);
	r = q->closed && q->count == 0;
	pthread_mutex_unlock(&q->lock);
	return r;
}

bool queue_is_closed(struct queue *q)
{
	bool r;

	pthread_mutex_lock(&q->lock);
	r = q->closed;
	pthread_mutex_unlock(&q->lock);
	return r;
}

size_t queue_events(struct queue *q)
{
	return atomic_load_explicit(&q->n_events, memory_order_relaxed);
}

size_t queue_bytes(struct queue *q)
{
	return atomic_load_explicit(&q->n_bytes, memory_order_relaxed);
}
