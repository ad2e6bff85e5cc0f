/*
 * http_items.c: a request's elements between the decode and the intake.
 *
 * While the body is decoded, each element is only packed (msgpack) into
 * the request's buffer: the decode may still end in a 400 at a later
 * byte, and then nothing of the request may reach the pipeline. Once it
 * has parsed whole, every element is unpacked again and handed to the
 * intake in request order under the request's one ack; the answer's
 * "rejected" list is built as they go.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "http_private.h"
#include "intake.h"
#include "json.h"
#include "log.h"

static int http_items_add(struct http_req *hr, uint32_t index, size_t off, int reason)
{
	struct http_item *it;

	if (hr->nitems == hr->cap) {
		size_t cap = hr->cap ? hr->cap * 2 : 64;
		struct http_item *grown = realloc(hr->items, cap * sizeof(*grown));

		if (!grown)
			return -1;
		hr->items = grown;
		hr->cap = cap;
	}
	it = &hr->items[hr->nitems++];
	*it = (struct http_item){ .index = index, .off = (uint32_t)off,
				  .len = (uint32_t)(hr->packed.size - off), .reason = reason };
	return 0;
}

int http_items_event(void *arg, uint32_t index, const msgpack_object *map)
{
	struct http_req *hr = arg;
	size_t off = hr->packed.size;
	msgpack_packer pk;

	msgpack_packer_init(&pk, &hr->packed, msgpack_sbuffer_write);
	if (msgpack_pack_object(&pk, *map) != 0 || hr->packed.size > UINT32_MAX)
		return -1;
	return http_items_add(hr, index, off, -1);
}

int http_items_reject(void *arg, const struct http_body_reject *r)
{
	struct http_req *hr = arg;
	size_t off = hr->packed.size;
	msgpack_packer pk;
	struct http_item *it;

	msgpack_packer_init(&pk, &hr->packed, msgpack_sbuffer_write);
	if ((r->value ? msgpack_pack_object(&pk, *r->value) : msgpack_pack_nil(&pk)) != 0 ||
	    http_items_add(hr, r->index, off, (int)r->reason) < 0)
		return -1;
	it = &hr->items[hr->nitems - 1];
	it->field = strdup(r->field ? r->field : "");
	it->message = strdup(r->message ? r->message : "");
	return it->field && it->message ? 0 : -1;
}

void http_items_clear(struct http_req *hr)
{
	for (size_t i = 0; i < hr->nitems; i++) {
		free(hr->items[i].field);
		free(hr->items[i].message);
		hr->items[i].field = hr->items[i].message = NULL;
	}
}

/* {"index":I,"field":"F","reason":"label","message":"M"} into the answer;
 * out of memory fails the request (503: the client sends it again). */
static void http_items_note(struct http_req *hr, uint32_t index, const struct record_error *e)
{
	struct evbuffer *b = hr->rejected;

	if ((hr->nrejected++ && evbuffer_add(b, ",", 1) < 0) ||
	    evbuffer_add_printf(b, "{\"index\":%u,\"field\":", index) < 0 ||
	    json_append_string(b, e->field, strlen(e->field)) < 0 ||
	    evbuffer_add_printf(b, ",\"reason\":\"%s\",\"message\":",
				record_reason_label(e->reason)) < 0 ||
	    json_append_string(b, e->message, strlen(e->message)) < 0 ||
	    evbuffer_add(b, "}", 1) < 0)
		hr->failed = true;
}

/* Hand item IT (unpacked as OBJ) to the intake. */
static void http_items_one(struct intake *in, struct http_req *hr, const struct http_item *it,
			   const msgpack_object *obj, struct ack *ack)
{
	struct record_ctx ctx = {
		.tag = hr->tag[0] ? hr->tag : NULL,
		.tag_len = strlen(hr->tag),
		.chunk = hr->key[0] ? hr->key : NULL,
		.chunk_len = strlen(hr->key),
		.index = it->index,
		.peer = hr->peer,
		.recv_ns = 0,
	};
	struct record_error why = { .reason = RECORD_REASON_BAD_FRAME };
	enum intake_verdict v;
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	ctx.recv_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	if (it->reason < 0) {
		v = intake_event(in, obj, &ctx, ack, &why);
	} else {
		why.reason = (enum record_reason)it->reason;
		snprintf(why.field, sizeof(why.field), "%s", it->field);
		snprintf(why.message, sizeof(why.message), "element %u: %s", it->index, it->message);
		v = intake_reject(in, obj, &ctx, ack, &why);
	}
	if (v == INTAKE_QUEUED)
		hr->accepted++;
	else if (v == INTAKE_REJECTED)
		http_items_note(hr, it->index, &why);
	else
		hr->failed = true;
}

int http_items_submit(struct intake *in, struct http_req *hr, ack_done_cb *done_cb)
{
	struct ack *ack = intake_ack_open(in, done_cb, hr, NULL, 0, false);
	msgpack_unpacked up;

	if (!ack)
		return -1;
	msgpack_unpacked_init(&up);
	for (size_t i = 0; i < hr->nitems; i++) {
		const struct http_item *it = &hr->items[i];
		size_t off = 0;

		if (msgpack_unpack_next(&up, hr->packed.data + it->off, it->len, &off) !=
		    MSGPACK_UNPACK_SUCCESS) {
			/* Our own packing: only memory can fail here. */
			log_error("http", "%s: cannot unpack element %u again; the request is "
				  "answered 503", hr->peer, it->index);
			hr->failed = true;
			continue;
		}
		http_items_one(in, hr, it, &up.data, ack);
	}
	msgpack_unpacked_destroy(&up);
	intake_ack_close(in, ack);
	return 0;
}
