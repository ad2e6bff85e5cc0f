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

#include "clock_ns.h"
#include "ack.h"
#include "http_body.h"

struct evbuffer;
struct evhttp_request;
struct http_input;
struct intake;

/* Rejected elements of one request written to the dead-letter file and
 * listed in the answer one by one; the rest go out as one line with their
 * count, and the answer gives only that count (Forward's bound too). */
#define HTTP_REJECT_MAX 16

/*
 * A run of COUNT elements in request order (INDEX, INDEX + 1, ...), packed
 * one after the other in http_req.packed at [off, off + len): events
 * (REASON -1), or elements the decoder rejected (REASON >= 0). One of the
 * first HTTP_REJECT_MAX rejections is a run of 1 with its NOTE; later ones
 * share runs, so a body of millions of elements costs its packed bytes,
 * not a structure per element.
 */
struct http_item {
	uint32_t index;
	uint32_t off, len;
	uint32_t count;
	int16_t reason;              /* -1: events; else enum record_reason */
	int16_t note;                /* index in http_req.notes, or -1 */
};

/* What the decoder said of one of the first HTTP_REJECT_MAX rejections. */
struct http_note {
	char *field, *message;       /* malloc'ed */
};

/* A request from its arrival to its answer. */
struct http_req {
	struct http_input *hi;
	struct evhttp_request *req;
	struct http_req *next;       /* in http_input's list of paused requests */
	int64_t start_ns;            /* CLOCK_MONOTONIC at arrival */
	msgpack_sbuffer packed;      /* every element, packed, in order */
	struct http_item *items;
	size_t nitems, cap;
	struct http_note notes[HTTP_REJECT_MAX];
	int nnotes;
	struct record_error run_why; /* the first decoder rejection past the notes */
	/* handing in: from items[at], element at_k of it, byte at_off of it */
	struct ack *ack;             /* open from the first element to the last */
	size_t at;
	uint32_t at_k, at_off;
	uint64_t handed;             /* elements handed in: a look at intake_busy every 64 */
	uint32_t accepted;           /* events queued */
	uint32_t nrejected;          /* rejections written and listed one by one */
	msgpack_sbuffer rest;        /* the later rejected elements, packed, in order */
	uint64_t nrest;
	uint32_t rest_first, rest_last;
	struct record_error rest_why; /* the first of them */
	uint64_t rejected_more;      /* the answer's count of the unlisted rejections */
	struct evbuffer *rejected;   /* the answer's "rejected" entries, comma-separated */
	bool failed;                 /* an event was neither queued nor dead-lettered */
	char tag[64];                /* record type from the path, or "" */
	char key[256];               /* Idempotency-Key, or "" */
	char peer[80];               /* "http:1.2.3.4:5678" */
};

/* http_body callbacks: pack the element into HR (ARG). 0, or -1 (out of memory). */
int http_items_event(void *arg, uint32_t index, const msgpack_object *map);
int http_items_reject(void *arg, const struct http_body_reject *r);

/* Hand HR's items to the intake under one ack whose callback is
 * DONE_CB(ack, durable, HR), from where the last call stopped. 0 once all
 * are in (the ack is closed), 1 when the intake got busy first (call again
 * when it has room), -1 when no ack could be made (nothing was handed in). */
int http_items_submit(struct intake *in, struct http_req *hr, ack_done_cb *done_cb);

/* Free the items' notes and the rest buffer. */
void http_items_clear(struct http_req *hr);

#endif
