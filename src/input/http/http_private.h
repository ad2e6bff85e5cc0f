/*
 * http_private.h: what the HTTP input's files share (http_input.c: the
 * server and its answers; http_items.c: a request's elements between the
 * decode and the intake). Not for other modules: they use http_input.h.
 */
#ifndef MI_HTTP_PRIVATE_H
#define MI_HTTP_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <msgpack.h>

#include "ack.h"
#include "http_body.h"

struct evbuffer;
struct evhttp_request;
struct http_input;
struct intake;

/* One element of a request: an event to hand in, or one the decoder
 * rejected (REASON >= 0, with its FIELD and MESSAGE), packed in
 * http_req.packed at [off, off + len). */
struct http_item {
	uint32_t index;
	uint32_t off, len;
	int reason;                  /* -1: an event; else enum record_reason */
	char *field, *message;       /* rejected elements only (malloc'ed) */
};

/* A request from its arrival to its answer. */
struct http_req {
	struct http_input *hi;
	struct evhttp_request *req;
	int64_t start_ns;            /* CLOCK_MONOTONIC at arrival */
	msgpack_sbuffer packed;      /* every element, packed, in order */
	struct http_item *items;
	size_t nitems, cap;
	uint32_t accepted;           /* events queued */
	uint32_t nrejected;
	struct evbuffer *rejected;   /* the answer's "rejected" entries, comma-separated */
	bool failed;                 /* an event was neither queued nor dead-lettered */
	char tag[64];                /* record type from the path, or "" */
	char key[256];               /* Idempotency-Key, or "" */
	char peer[80];               /* "http:1.2.3.4:5678" */
};

static inline int64_t http_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* http_body callbacks: pack the element into HR (ARG). 0, or -1 (out of memory). */
int http_items_event(void *arg, uint32_t index, const msgpack_object *map);
int http_items_reject(void *arg, const struct http_body_reject *r);

/* Hand every item of HR to the intake under one ack whose callback is
 * DONE_CB(ack, durable, HR). 0, or -1 when no ack could be made (nothing
 * was handed in). */
int http_items_submit(struct intake *in, struct http_req *hr, ack_done_cb *done_cb);

/* Free the items' strings. */
void http_items_clear(struct http_req *hr);

#endif
