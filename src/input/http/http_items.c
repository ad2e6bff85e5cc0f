/*
 * http_items.c: a request's elements between the decode and the intake.
 *
 * While the body is decoded, each element is only packed (msgpack) into
 * the request's buffer: the decode may still end in a 400 at a later
 * byte, and then nothing of the request may reach the pipeline. Once it
 * has parsed whole, every element is unpacked again and handed to the
 * intake in request order under the request's one ack; the answer's
 * "rejected" list is built as they go.
 *
 * What one request costs is bounded by its size, not by its number of
 * elements: consecutive elements share one item; after HTTP_REJECT_MAX
 * rejections the rest of the rejected elements go to the dead-letter file
 * as one line with their count (valid events among them are still
 * queued), and the answer lists only the first ones. Handing in stops
 * while the intake is busy (a full queue) and goes on from its room
 * callback, so a request of many events fills the queues no further than
 * the Forward input's reading does.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "clock_ns.h"
#include "http_private.h"
#include "intake.h"
#include "json.h"
#include "log.h"

#define HTTP_BUSY_EVERY 64  /* elements handed in between two looks at intake_busy */

static struct log_limit http_items_limit = LOG_LIMIT_INIT(5, 10000);

/* Element INDEX, packed at [OFF, packed.size): appended to the last item
 * when it is a run of the same kind, else a new item. */
static int http_items_add(struct http_req *hr, uint32_t index, size_t off, int reason, int note)
{
	struct http_item *it = hr->nitems ? &hr->items[hr->nitems - 1] : NULL;

	if (hr->packed.size > UINT32_MAX)
		return -1;
	if (it && note < 0 && it->note < 0 && (it->reason < 0) == (reason < 0) &&
	    it->index + it->count == index && it->off + it->len == off) {
		it->count++;
		it->len = (uint32_t)(hr->packed.size - it->off);
		return 0;
	}
	if (hr->nitems == hr->cap) {
		size_t cap = hr->cap ? hr->cap * 2 : 64;
		struct http_item *grown = realloc(hr->items, cap * sizeof(*grown));

		if (!grown)
			return -1;
		hr->items = grown;
		hr->cap = cap;
	}
	hr->items[hr->nitems++] = (struct http_item){
		.index = index, .off = (uint32_t)off, .len = (uint32_t)(hr->packed.size - off),
		.count = 1, .reason = (int16_t)reason, .note = (int16_t)note };
	return 0;
}

int http_items_event(void *arg, uint32_t index, const msgpack_object *map)
{
	struct http_req *hr = arg;
	size_t off = hr->packed.size;
	msgpack_packer pk;

	msgpack_packer_init(&pk, &hr->packed, msgpack_sbuffer_write);
	if (msgpack_pack_object(&pk, *map) != 0)
		return -1;
	return http_items_add(hr, index, off, -1, -1);
}

/* The first HTTP_REJECT_MAX rejections keep what the decoder said; the
 * first one past them keeps it for the line of the rest. */
static int http_items_keep(struct http_req *hr, const struct http_body_reject *r)
{
	struct http_note *n = &hr->notes[hr->nnotes];

	if (hr->nnotes == HTTP_REJECT_MAX) {
		if (!hr->run_why.message[0]) {
			hr->run_why.reason = r->reason;
			snprintf(hr->run_why.field, sizeof(hr->run_why.field), "%s",
				 r->field ? r->field : "");
			snprintf(hr->run_why.message, sizeof(hr->run_why.message), "element %u: %s",
				 r->index, r->message ? r->message : "");
		}
		return -1;
	}
	n->field = strdup(r->field ? r->field : "");
	n->message = strdup(r->message ? r->message : "");
	return hr->nnotes++;
}

int http_items_reject(void *arg, const struct http_body_reject *r)
{
	struct http_req *hr = arg;
	size_t off = hr->packed.size;
	msgpack_packer pk;
	int note;

	msgpack_packer_init(&pk, &hr->packed, msgpack_sbuffer_write);
	if ((r->value ? msgpack_pack_object(&pk, *r->value) : msgpack_pack_nil(&pk)) != 0)
		return -1;
	note = http_items_keep(hr, r);
	if (note >= 0 && (!hr->notes[note].field || !hr->notes[note].message))
		return -1;
	return http_items_add(hr, r->index, off, (int)r->reason, note);
}

void http_items_clear(struct http_req *hr)
{
	for (int i = 0; i < hr->nnotes; i++) {
		free(hr->notes[i].field);
		free(hr->notes[i].message);
		hr->notes[i].field = hr->notes[i].message = NULL;
	}
	hr->nnotes = 0;
	msgpack_sbuffer_destroy(&hr->rest);
	memset(&hr->rest, 0, sizeof(hr->rest));
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

static struct record_ctx http_items_ctx(const struct http_req *hr, uint32_t index)
{
	return (struct record_ctx){
		.tag = hr->tag[0] ? hr->tag : NULL,
		.tag_len = strlen(hr->tag),
		.chunk = hr->key[0] ? hr->key : NULL,
		.chunk_len = strlen(hr->key),
		.index = index,
		.peer = hr->peer,
		.recv_ns = (uint64_t)clock_ns(CLOCK_REALTIME),
	};
}

/* Rejected element(s) INDEX on (COUNT of them, packed as P, LEN bytes) go
 * to the line of the rest; WHY says why the first of them was rejected. */
static void http_items_to_rest(struct http_req *hr, uint32_t index, uint32_t count,
			       const char *p, size_t len, const struct record_error *why)
{
	if (msgpack_sbuffer_write(&hr->rest, p, len) != 0 || hr->rest.size > UINT32_MAX) {
		hr->failed = true;
		return;
	}
	if (!hr->nrest++) {
		hr->rest_first = index;
		hr->rest_why = *why;
	}
	hr->nrest += count - 1;
	hr->rest_last = index + count - 1;
}

/* Whether event OBJ would be rejected, with WHY, once the request has had
 * its share: then it joins the rest instead of making a line of its own. */
static bool http_items_invalid(const msgpack_object *obj, const struct record_ctx *ctx,
			       struct record_error *why)
{
	struct record *r = NULL;

	if (record_from_map(obj, ctx, &r, why) < 0)
		return true;
	record_free(r);
	return false;
}

/* Hand event OBJ (element INDEX, packed as P, LEN bytes) to the intake. */
static void http_items_one(struct intake *in, struct http_req *hr, uint32_t index,
			   const msgpack_object *obj, const char *p, size_t len)
{
	struct record_ctx ctx = http_items_ctx(hr, index);
	struct record_error why = { .reason = RECORD_REASON_BAD_FRAME };
	enum intake_verdict v;

	if (hr->nrejected >= HTTP_REJECT_MAX && http_items_invalid(obj, &ctx, &why)) {
		http_items_to_rest(hr, index, 1, p, len, &why);
		return;
	}
	v = intake_event(in, obj, &ctx, hr->ack, &why);
	if (v == INTAKE_QUEUED)
		hr->accepted++;
	else if (v == INTAKE_REJECTED)
		http_items_note(hr, index, &why);
	else
		hr->failed = true;
}

/* Element IT (one of the first rejections, unpacked as OBJ) that the decoder rejected. */
static void http_items_noted(struct intake *in, struct http_req *hr, const struct http_item *it,
			     const msgpack_object *obj)
{
	struct record_ctx ctx = http_items_ctx(hr, it->index);
	const struct http_note *n = &hr->notes[it->note];
	struct record_error why = { .reason = (enum record_reason)it->reason };

	snprintf(why.field, sizeof(why.field), "%s", n->field);
	snprintf(why.message, sizeof(why.message), "element %u: %s", it->index, n->message);
	if (hr->nrejected >= HTTP_REJECT_MAX) {
		http_items_to_rest(hr, it->index, 1, hr->packed.data + it->off, it->len, &why);
		return;
	}
	if (intake_reject(in, obj, &ctx, hr->ack, &why) == INTAKE_REJECTED)
		http_items_note(hr, it->index, &why);
	else
		hr->failed = true;
}

/* Hand in elements of item IT from HR->at_k on; false when the intake got busy first. */
static bool http_items_run(struct intake *in, struct http_req *hr, const struct http_item *it,
			   msgpack_unpacked *up)
{
	const char *base = hr->packed.data + it->off;

	if (it->reason >= 0 && it->note < 0) {
		/* past the notes: rejected already, all of them to the rest */
		http_items_to_rest(hr, it->index, it->count, base, it->len, &hr->run_why);
		return true;
	}
	while (hr->at_k < it->count) {
		size_t off = hr->at_off;

		if (msgpack_unpack_next(up, base, it->len, &off) != MSGPACK_UNPACK_SUCCESS) {
			/* Our own packing: only memory can fail here. */
			log_error("http", "%s: cannot unpack element %u again; the request is "
				  "answered 503", hr->peer, it->index + hr->at_k);
			hr->failed = true;
			return true;
		}
		if (it->note >= 0)
			http_items_noted(in, hr, it, &up->data);
		else
			http_items_one(in, hr, it->index + hr->at_k, &up->data, base + hr->at_off,
				       off - hr->at_off);
		hr->at_off = (uint32_t)off;
		hr->at_k++;
		if (++hr->handed % HTTP_BUSY_EVERY == 0 && intake_busy(in) && !intake_stopped(in))
			return false;
	}
	return true;
}

/* The rejected elements past the first HTTP_REJECT_MAX: one line. */
static void http_items_bulk(struct intake *in, struct http_req *hr)
{
	struct record_ctx ctx = http_items_ctx(hr, hr->rest_first);
	msgpack_object held = { .type = MSGPACK_OBJECT_BIN };
	struct record_error why = hr->rest_why;

	held.via.bin.ptr = hr->rest.data;
	held.via.bin.size = (uint32_t)hr->rest.size;
	snprintf(why.message, sizeof(why.message), "elements %u to %u: %llu rejected elements "
		 "after the first %d of this request, in one line; \"event\" holds their msgpack "
		 "bytes (bin); the first: %.80s", hr->rest_first, hr->rest_last,
		 (unsigned long long)hr->nrest, HTTP_REJECT_MAX, hr->rest_why.message);
	if (intake_reject_bulk(in, &held, &ctx, hr->ack, &why, hr->nrest) != INTAKE_REJECTED) {
		hr->failed = true;
		return;
	}
	hr->rejected_more = hr->nrest;
	log_limited(&http_items_limit, LOG_LEVEL_WARN, "http", "%s: %s", hr->peer, why.message);
}

int http_items_submit(struct intake *in, struct http_req *hr, ack_done_cb *done_cb)
{
	msgpack_unpacked up;
	bool paused = false;

	if (!hr->ack && !(hr->ack = intake_ack_open(in, done_cb, hr, NULL, 0, false)))
		return -1;
	msgpack_unpacked_init(&up);
	while (hr->at < hr->nitems) {
		if (!http_items_run(in, hr, &hr->items[hr->at], &up)) {
			paused = true;
			break;
		}
		hr->at++;
		hr->at_k = hr->at_off = 0;
	}
	msgpack_unpacked_destroy(&up);
	if (paused)
		return 1;
	if (hr->nrest)
		http_items_bulk(in, hr);
	intake_ack_close(in, hr->ack);
	hr->ack = NULL;
	return 0;
}
