/*
 * ack.c: reference-counted acks and the completion channel that carries
 * them from the writer and dead-letter threads back to the event loop.
 *
 * The channel is a mutex-protected list plus an eventfd registered with the
 * loop (the Redis bio / memcached notify shape). Wakeups are coalesced with
 * an atomic flag, so a burst of commits costs one write(2) and one loop
 * wakeup, not one per ack.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ack.h"
#include "log.h"

struct ackq {
	pthread_mutex_t lock;     /* guards head/tail */
	struct ack *head;         /* posted acks, oldest first; under lock */
	struct ack *tail;         /* under lock */
	atomic_bool notified;     /* eventfd already poked since the loop last read it */
	int fd;                   /* eventfd; written by any thread, read by the loop */
};

struct ack *ack_new(ack_done_cb *done_cb, void *arg, const char *chunk, uint32_t len,
		    bool is_bin)
{
	struct ack *a = malloc(sizeof(*a) + len);

	if (!a)
		return NULL;
	atomic_init(&a->pending, 1);
	atomic_init(&a->failed, false);
	a->next = NULL;
	a->done_cb = done_cb;
	a->arg = arg;
	a->chunk_is_bin = is_bin;
	a->chunk_len = len;
	if (len > 0)
		memcpy(a->chunk, chunk, len);
	return a;
}

struct ackq *ackq_new(void)
{
	struct ackq *q = calloc(1, sizeof(*q));
	int err;

	if (!q)
		return NULL;
	q->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->fd < 0) {
		log_error("ack", "cannot create the completion channel: %s", strerror(errno));
		free(q);
		return NULL;
	}
	err = pthread_mutex_init(&q->lock, NULL); /* returns the error; errno is not set */
	if (err != 0) {
		log_error("ack", "cannot create the completion channel's lock: %s", strerror(err));
		close(q->fd);
		free(q);
		return NULL;
	}
	atomic_init(&q->notified, false);
	return q;
}

void ackq_free(struct ackq *q)
{
	struct ack *a, *next;

	if (!q)
		return;
	for (a = q->head; a; a = next) {
		next = a->next;
		free(a);
	}
	close(q->fd);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

int ackq_fd(const struct ackq *q)
{
	return q->fd;
}

void ackq_wake(struct ackq *q)
{
	uint64_t one = 1;

	if (atomic_exchange(&q->notified, true))
		return;
	/* EAGAIN means the counter is saturated: the loop is awake anyway. */
	while (write(q->fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

void ack_release(struct ackq *q, struct ack *a)
{
	if (atomic_fetch_sub(&a->pending, 1) != 1)
		return;
	a->next = NULL;
	pthread_mutex_lock(&q->lock);
	if (q->tail)
		q->tail->next = a;
	else
		q->head = a;
	q->tail = a;
	pthread_mutex_unlock(&q->lock);
	ackq_wake(q);
}

struct ack *ackq_take(struct ackq *q)
{
	uint64_t n;
	struct ack *list;

	while (read(q->fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
	/* Clear the flag before taking the list: a post that races with us
	 * either lands in this list or pokes the eventfd again. */
	atomic_store(&q->notified, false);
	pthread_mutex_lock(&q->lock);
	list = q->head;
	q->head = q->tail = NULL;
	pthread_mutex_unlock(&q->lock);
	return list;
}
