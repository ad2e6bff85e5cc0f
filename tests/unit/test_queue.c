/*
 * test_queue: the ring between loop and writer: FIFO order, limits and
 * queue_full, wrap-around and growth past the initial capacity, blocking
 * pops that time out or wake on close, the writer's optional linger
 * (queue_wait), the low-water wakeup (also from an idle linger), and a
 * producer/consumer thread pair that must lose nothing.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ack.h"
#include "queue.h"
#include "record.h"
#include "unit.h"

static struct record *mk(uint32_t n, uint32_t size)
{
	struct record *r = calloc(1, sizeof(*r));

	r->size = size;
	r->id_hash = n;
	return r;
}

static void test_fifo_and_wrap(void)
{
	struct queue *q = queue_new(100000, 1u << 30, NULL);
	struct record *out[700];
	uint32_t next_in = 0, next_out = 0;
	int ok = 1;

	/* 50 rounds of 700 in / 700 out cycle the head through a 1024 ring many times. */
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 700; i++)
			CHECK(queue_push(q, mk(next_in++, 10)) == 0);
		size_t n = queue_pop_batch(q, out, 700, 0);
		CHECK(n == 700);
		for (size_t i = 0; i < n; i++) {
			ok &= out[i]->id_hash == next_out++;
			free(out[i]);
		}
	}
	CHECK(ok);
	CHECK(queue_events(q) == 0);
	CHECK(queue_bytes(q) == 0);
	CHECK(queue_pop_batch(q, out, 10, 0) == 0);
	queue_free(q);
}

static void test_growth_keeps_order(void)
{
	struct queue *q = queue_new(10, 1u << 30, NULL);
	struct record *out[5000];
	int ok = 1;

	/* Over the limit: pushes still succeed (no drop), full stays true. */
	for (uint32_t i = 0; i < 5000; i++)
		CHECK(queue_push(q, mk(i, 1)) == 0);
	CHECK(queue_full(q));
	CHECK(queue_events(q) == 5000);
	CHECK(queue_pop_batch(q, out, 5000, 0) == 5000);
	for (uint32_t i = 0; i < 5000; i++) {
		ok &= out[i]->id_hash == i;
		free(out[i]);
	}
	CHECK(ok);
	CHECK(!queue_full(q));
	queue_free(q);
}

static void test_limits(void)
{
	struct queue *q = queue_new(4, 100, NULL);
	struct record *out[8];

	CHECK(!queue_full(q));
	for (int i = 0; i < 3; i++)
		CHECK(queue_push(q, mk(i, 10)) == 0);
	CHECK(!queue_full(q));
	CHECK(queue_push(q, mk(3, 10)) == 0);
	CHECK(queue_full(q)); /* 4 events */
	CHECK(queue_pop_batch(q, out, 8, 0) == 4);
	for (int i = 0; i < 4; i++)
		free(out[i]);
	CHECK(queue_push(q, mk(0, 100)) == 0);
	CHECK(queue_full(q)); /* 100 bytes */
	CHECK(queue_bytes(q) == 100);
	queue_set_limits(q, 4, 1000);
	CHECK(!queue_full(q));
	queue_free(q); /* frees the record still queued */
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_pop_waits_then_times_out(void)
{
	struct queue *q = queue_new(100, 1000, NULL);
	struct record *out[4];
	double t0 = now_s();

	CHECK(queue_pop_batch(q, out, 4, 50) == 0);
	CHECK(now_s() - t0 >= 0.045);
	CHECK(queue_push(q, mk(1, 1)) == 0);
	/* Group commit: a partial batch is taken at once, not after the wait. */
	t0 = now_s();
	CHECK(queue_pop_batch(q, out, 4, 5000) == 1);
	CHECK(now_s() - t0 < 1.0);
	free(out[0]);
	queue_close(q);
	t0 = now_s();
	CHECK(queue_pop_batch(q, out, 4, 5000) == 0); /* closed: no wait */
	CHECK(now_s() - t0 < 1.0);
	CHECK(queue_closed_and_empty(q));
	CHECK(queue_is_closed(q));
	queue_free(q);
}

struct linger_arg {
	struct queue *q;
	int n;
};

static void *linger_producer(void *arg)
{
	struct linger_arg *a = arg;

	for (int i = 0; i < a->n; i++) {
		struct timespec ts = { 0, 5 * 1000000L };

		nanosleep(&ts, NULL);
		CHECK(queue_push(a->q, mk((uint32_t)i, 1)) == 0);
	}
	return NULL;
}

/* queue_wait (writer.flush_interval_ms > 0): wakes once WANT records are
 * queued, returns early on close, and times out with what there is. */
static void test_wait_for_a_fuller_batch(void)
{
	struct queue *q = queue_new(100, 1000, NULL);
	struct linger_arg a = { q, 4 };
	struct record *out[8];
	pthread_t t;
	double t0 = now_s();

	CHECK(pthread_create(&t, NULL, linger_producer, &a) == 0);
	CHECK(queue_wait(q, 4, 5000) == 4);
	CHECK(now_s() - t0 < 4.0);
	pthread_join(t, NULL);
	t0 = now_s();
	CHECK(queue_wait(q, 8, 30) == 4);          /* timed out: the 4 it has */
	CHECK(now_s() - t0 >= 0.025);
	CHECK(queue_wait(q, 2, 5000) == 4);        /* already enough: no wait */
	queue_close(q);
	t0 = now_s();
	CHECK(queue_wait(q, 8, 5000) == 4);        /* closed: no wait */
	CHECK(now_s() - t0 < 1.0);
	CHECK(queue_pop_batch(q, out, 8, 0) == 4);
	for (int i = 0; i < 4; i++) {
		CHECK(out[i]->id_hash == (uint32_t)i);
		free(out[i]);
	}
	queue_free(q);
}

static void test_low_water_wakes_loop(void)
{
	struct ackq *aq = ackq_new();
	struct queue *q = queue_new(8, 1u << 20, aq);
	struct record *out[8];
	int woke = 0;

	for (int i = 0; i < 8; i++)
		CHECK(queue_push(q, mk(i, 1)) == 0);
	CHECK(queue_full(q)); /* the loop saw it full */
	CHECK(queue_pop_batch(q, out, 1, 0) == 1); /* 7 left: still above 3/4 */
	free(out[0]);
	CHECK(ackq_take(aq) == NULL);
	CHECK(queue_pop_batch(q, out, 4, 0) == 4); /* 3 left: wake */
	for (int i = 0; i < 4; i++)
		free(out[i]);
	{
		/* The eventfd is readable exactly when the loop was poked. */
		uint64_t v;
		woke = read(ackq_fd(aq), &v, sizeof(v)) == sizeof(v);
	}
	CHECK(woke);
	queue_free(q);
	ackq_free(aq);
}

/* The loop raised BLOCKED after the writer's last pop had looked: its
 * queue_full read the count just before that pop took everything. Emulated
 * here with a momentary zero limit. A writer that lingers
 * (writer.flush_interval_ms > 0) calls only queue_wait while the queue is
 * empty; that look must lower BLOCKED and wake the loop, or reading stays
 * paused with nothing queued. */
static void test_idle_wait_lowers_a_late_block(void)
{
	struct ackq *aq = ackq_new();
	struct queue *q = queue_new(8, 1u << 20, aq);
	struct record *out[8];
	uint64_t v;

	for (int i = 0; i < 8; i++)
		CHECK(queue_push(q, mk(i, 1)) == 0);
	CHECK(queue_pop_batch(q, out, 8, 0) == 8); /* not blocked yet: no wake */
	for (int i = 0; i < 8; i++)
		free(out[i]);
	CHECK(read(ackq_fd(aq), &v, sizeof(v)) < 0);
	queue_set_limits(q, 0, 0);
	CHECK(queue_full(q));                      /* the loop's late verdict */
	queue_set_limits(q, 8, 1u << 20);
	CHECK(queue_blocked(q));
	CHECK(queue_wait(q, 1, 10) == 0);          /* the lingering writer's look */
	CHECK(!queue_blocked(q));
	CHECK(read(ackq_fd(aq), &v, sizeof(v)) == sizeof(v));
	queue_free(q);
	ackq_free(aq);
}

#define PC_TOTAL 200000

static void *producer(void *arg)
{
	struct queue *q = arg;

	for (uint32_t i = 0; i < PC_TOTAL; i++) {
		while (queue_full(q)) {
			struct timespec ts = { 0, 100000 };
			nanosleep(&ts, NULL);
		}
		if (queue_push(q, mk(i, 3)) != 0)
			abort();
	}
	queue_close(q);
	return NULL;
}

static void test_threads_lose_nothing(void)
{
	struct queue *q = queue_new(1000, 1u << 20, NULL);
	struct record *out[333];
	pthread_t t;
	uint32_t expect = 0;
	int ok = 1;

	CHECK(pthread_create(&t, NULL, producer, q) == 0);
	for (;;) {
		size_t n = queue_pop_batch(q, out, 333, 5);
		for (size_t i = 0; i < n; i++) {
			ok &= out[i]->id_hash == expect++;
			free(out[i]);
		}
		if (n == 0 && queue_closed_and_empty(q))
			break;
	}
	pthread_join(t, NULL);
	CHECK(ok);
	CHECK(expect == PC_TOTAL);
	queue_free(q);
}

int main(void)
{
	test_fifo_and_wrap();
	test_growth_keeps_order();
	test_limits();
	test_pop_waits_then_times_out();
	test_wait_for_a_fuller_batch();
	test_low_water_wakes_loop();
	test_idle_wait_lowers_a_late_block();
	test_threads_lose_nothing();
	return unit_done("test_queue");
}
