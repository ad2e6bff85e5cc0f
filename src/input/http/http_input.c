/*
 * http_input.c: POST /v1/events, answered once the events are committed.
 *
 * libevent's evhttp serves the listeners of http.listen (HTTPS with
 * http.tls.*, through listener_tls.c's OpenSSL setup). A request is
 * checked in the order a client can fix it: path (404), method (405),
 * bearer token (401), room in the queues (503 with Retry-After), then the
 * body is decoded (http_body.c: 400 with the byte offset, 413, 415).
 *
 * The body is decoded whole before any event is handed on, because a
 * body that turns out not to parse at byte N must be refused whole: the
 * decoder's callbacks only pack each element into one buffer. Then every
 * element goes through the intake with one ack for the request, and the
 * reply is deferred until that ack's callback runs: every accepted event
 * committed (or fsync'ed in the spool) and every rejected one's
 * dead-letter line on disk. Only then does the client hear 200 with the
 * count and the rejections; an event that could not be made durable turns
 * the answer into 503, so the client sends the request again. Handing in
 * pauses while the intake is busy and goes on from its room callback
 * (http_items.c bounds what one request costs).
 *
 * An event without mg_id gets one derived from the request's
 * Idempotency-Key and its index (record_id.c), so a retried request makes
 * no second row. A client that disconnects before its answer loses
 * nothing: its events are in the pipeline, and evhttp frees the request
 * when the deferred reply is sent to a connection that is gone.
 * Loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <msgpack.h>

#include "config.h"
#include "conn_guard.h"
#include "http_body.h"
#include "http_input.h"
#include "http_private.h"
#include "http_tokens.h"
#include "intake.h"
#include "json.h"
#include "listener_tls.h"
#include "log.h"
#include "stats.h"

#define HTTP_MAX_HEADERS (64 * 1024)
#define HTTP_PATH "/v1/events"
#define HTTP_TYPE_MAX 64           /* /v1/events/{record_type} */
#define HTTP_KEY_MAX 256           /* Idempotency-Key bytes */
#define HTTP_RETRY_AFTER "1"

struct http_input {
	struct event_base *base;
	struct evhttp *http;
	struct conn_guard *guard;       /* http.max_connections */
	struct intake *in;
	struct listener_tls *tls;       /* NULL: plain HTTP */
	struct http_tokens *tokens;     /* NULL: no token needed */
	size_t max_event_bytes;         /* listen.max_event_bytes, live */
	size_t waiting;                 /* requests whose answer waits for their ack */
	struct http_req *paused;        /* requests whose handing in waits for room, in order */
	struct http_req **paused_tail;
	bool watching;                  /* intake_watch'ed */
};

/* ---- answers ------------------------------------------------------------ */

static const char *http_reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 503: return "Service Unavailable";
	default: return "Internal Server Error";
	}
}

/* Send BODY (JSON) with CODE; counts it and the request's duration. */
static void http_send(struct evhttp_request *req, int code, struct evbuffer *body,
		      int64_t start_ns)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (code == 503)
		evhttp_add_header(h, "Retry-After", HTTP_RETRY_AFTER);
	if (code == 401)
		evhttp_add_header(h, "WWW-Authenticate", "Bearer realm=\"megaingest\"");
	if (code == 405)
		evhttp_add_header(h, "Allow", "POST");
	stats_http_request(code);
	stats_observe_ns(STAT_http_request_seconds, clock_mono_ns() - start_ns);
	evhttp_send_reply(req, code, http_reason(code), body);
}

/* An error answer {"error": MESSAGE} (plus "offset" when OFFSET >= 0). */
static void http_fail(struct evhttp_request *req, int code, const char *message, long offset,
		      int64_t start_ns)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	if (evbuffer_add(b, "{\"error\":", 9) < 0 ||
	    json_append_string(b, message, strlen(message)) < 0 ||
	    (offset >= 0 && evbuffer_add_printf(b, ",\"offset\":%ld", offset) < 0) ||
	    evbuffer_add(b, "}\n", 2) < 0) {
		evbuffer_free(b);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	http_send(req, code, b, start_ns);
	evbuffer_free(b);
}

/* ---- the deferred answer ---------------------------------------------- */

static void http_req_free(struct http_req *hr)
{
	if (!hr)
		return;
	http_items_clear(hr);
	msgpack_sbuffer_destroy(&hr->packed);
	if (hr->rejected)
		evbuffer_free(hr->rejected);
	free(hr->items);
	free(hr);
}

/* The request's ack is done: every event is durable (or one could not be). */
static void http_done_cb(struct ack *ack, bool durable, void *arg)
{
	struct http_req *hr = arg;
	struct evbuffer *b = evbuffer_new();

	(void)ack;
	hr->hi->waiting--;
	if (!durable || hr->failed) {
		if (b)
			evbuffer_free(b);
		log_warn("http", "%s: a request's events could not all be made durable; answered "
			 "503 so the client sends it again", hr->peer);
		http_fail(hr->req, 503, "some events could not be made durable (see the daemon's "
			  "log); nothing was lost: send the request again", -1, hr->start_ns);
		http_req_free(hr);
		return;
	}
	if (!b || evbuffer_add_printf(b, "{\"accepted\":%u,\"rejected\":[", hr->accepted) < 0 ||
	    evbuffer_add_buffer(b, hr->rejected) < 0 || evbuffer_add(b, "]", 1) < 0 ||
	    (hr->rejected_more && evbuffer_add_printf(b, ",\"rejected_more\":%llu",
						      (unsigned long long)hr->rejected_more) < 0) ||
	    evbuffer_add(b, "}\n", 2) < 0) {
		if (b)
			evbuffer_free(b);
		evhttp_send_error(hr->req, 500, NULL);
		http_req_free(hr);
		return;
	}
	http_send(hr->req, 200, b, hr->start_ns);
	evbuffer_free(b);
	http_req_free(hr);
}

/* ---- a request ---------------------------------------------------------- */

/* The record type of /v1/events/{type} into HR->tag, or "" for
 * /v1/events. -1 for any other path. */
static int http_route(struct evhttp_request *req, struct http_req *hr)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	size_t n;

	hr->tag[0] = '\0';
	if (!path || strncmp(path, HTTP_PATH, sizeof(HTTP_PATH) - 1) != 0)
		return -1;
	path += sizeof(HTTP_PATH) - 1;
	if (*path == '\0' || strcmp(path, "/") == 0)
		return 0;
	if (*path++ != '/')
		return -1;
	n = strspn(path, "abcdefghijklmnopqrstuvwxyz_");
	if (n == 0 || n >= HTTP_TYPE_MAX || (path[n] && strcmp(path + n, "/") != 0))
		return -1;
	memcpy(hr->tag, path, n);
	hr->tag[n] = '\0';
	return 0;
}

/* "http:1.2.3.4:5678" into HR->peer. */
static void http_peer(struct evhttp_request *req, struct http_req *hr)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	char *addr = NULL;
	ev_uint16_t port = 0;

	if (conn)
		evhttp_connection_get_peer(conn, &addr, &port);
	snprintf(hr->peer, sizeof(hr->peer), "http:%s:%u", addr ? addr : "?", port);
}

/* A request that may go on to its body: 0, or -1 after answering it. */
static int http_admit(struct http_input *hi, struct evhttp_request *req, struct http_req *hr)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const char *key = evhttp_find_header(h, "Idempotency-Key");

	if (http_route(req, hr) < 0) {
		http_fail(req, 404, "no such path: POST events to /v1/events or "
			  "/v1/events/{record_type}", -1, hr->start_ns);
		return -1;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		http_fail(req, 405, "only POST is accepted here", -1, hr->start_ns);
		return -1;
	}
	if (hi->tokens && !http_tokens_allow(hi->tokens, evhttp_find_header(h, "Authorization"))) {
		http_fail(req, 401, "a valid \"Authorization: Bearer <token>\" header is required",
			  -1, hr->start_ns);
		return -1;
	}
	if (intake_busy(hi->in)) {
		http_fail(req, 503, "the daemon is busy (its queues are full) or shutting down; "
			  "send the request again after Retry-After seconds", -1, hr->start_ns);
		return -1;
	}
	if (key && strlen(key) >= HTTP_KEY_MAX) {
		http_fail(req, 400, "the Idempotency-Key header is longer than 255 bytes", -1,
			  hr->start_ns);
		return -1;
	}
	snprintf(hr->key, sizeof(hr->key), "%s", key ? key : "");
	return 0;
}

/* Decode the body into HR's items. 0, or -1 after answering. */
static int http_decode(struct http_input *hi, struct evhttp_request *req, struct http_req *hr)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
	struct http_body_cb cb = { .event = http_items_event, .reject = http_items_reject,
				   .arg = hr };
	struct http_body_error err;
	enum http_body_status st;

	if (len && !body) {
		http_fail(req, 500, "out of memory reading the body", -1, hr->start_ns);
		return -1;
	}
	stats_add(STAT_http_bytes_received_total, len);
	st = http_body_decode(evhttp_find_header(h, "Content-Type"),
			      evhttp_find_header(h, "Content-Encoding"), body, len,
			      hi->max_event_bytes, &cb, &err);
	if (st == HTTP_BODY_OK)
		return 0;
	http_fail(req, st == HTTP_BODY_STOPPED ? 500 : http_body_http_status(st), err.message,
		  st == HTTP_BODY_BAD ? (long)err.offset : -1, hr->start_ns);
	return -1;
}

/* Hand HR's events in (again); paused when the intake is busy first. */
/* Hand HR's events in; one that must wait for room is queued among the
 * paused requests: at the front when it was the first of them (FRONT), so
 * they go on in arrival order. */
static void http_submit(struct http_input *hi, struct http_req *hr, bool front)
{
	bool first = !hr->ack;
	int rc = http_items_submit(hi->in, hr, http_done_cb);

	if (rc < 0) {
		http_fail(hr->req, 500, "out of memory handing the events on", -1, hr->start_ns);
		http_req_free(hr);
		return;
	}
	if (first)
		hi->waiting++;
	if (rc == 0)
		return;
	/* The ack's callback cannot run before its guard is closed, at the end. */
	if (front) {
		hr->next = hi->paused;
		hi->paused = hr;
		if (!hr->next)
			hi->paused_tail = &hr->next;
		return;
	}
	*hi->paused_tail = hr;
	hi->paused_tail = &hr->next;
}

static void http_request_cb(struct evhttp_request *req, void *arg)
{
	struct http_input *hi = arg;
	struct http_req *hr = calloc(1, sizeof(*hr));

	if (!hr || !(hr->rejected = evbuffer_new())) {
		free(hr);
		log_error("http", "out of memory taking a request; answered 500");
		evhttp_send_error(req, 500, NULL);
		return;
	}
	msgpack_sbuffer_init(&hr->packed);
	hr->hi = hi;
	hr->req = req;
	hr->start_ns = clock_mono_ns();
	http_peer(req, hr);
	if (http_admit(hi, req, hr) < 0 || http_decode(hi, req, hr) < 0) {
		http_req_free(hr);
		return;
	}
	http_submit(hi, hr, false);
}

/* The intake has room again: go on with the paused requests, in order. */
static void http_room_cb(void *arg)
{
	struct http_input *hi = arg;
	struct http_req *hr;

	while ((hr = hi->paused) && (!intake_busy(hi->in) || intake_stopped(hi->in))) {
		hi->paused = hr->next;
		if (!hi->paused)
			hi->paused_tail = &hi->paused;
		hr->next = NULL;
		http_submit(hi, hr, true);
	}
}

void http_input_stop(struct http_input *hi)
{
	if (hi)
		http_room_cb(hi);
}

/* ---- listeners ---------------------------------------------------------- */

/* HTTPS: each connection's bufferevent runs the TLS handshake first. */
static struct bufferevent *http_tls_bev_cb(struct event_base *base, void *arg)
{
	struct http_input *hi = arg;

	return listener_tls_bufferevent(hi->tls, base, -1);
}

/* TLS and tokens, as configured. 0, or -1 after logging. */
static int http_security(struct http_input *hi, const struct config *cfg)
{
	if (cfg->http_tls_cert[0]) {
		hi->tls = listener_tls_new(cfg->http_tls_cert, cfg->http_tls_key, cfg->http_tls_ca,
					   cfg->listen_tls_ciphers);
		if (!hi->tls)
			return -1;
	}
	/* No header deadline: evhttp's timeout ends a stalled connection, and a
	 * request waiting for its commit is not late. */
	hi->guard = conn_guard_new(hi->base, hi->http, &(struct conn_guard_opts){
		.who = "http", .max_conns = cfg->http_max_connections,
		.refused = STAT_http_connections_refused_total,
		.make_bev = hi->tls ? http_tls_bev_cb : NULL, .make_bev_arg = hi });
	if (!hi->guard) {
		log_error("http", "out of memory starting the HTTP input");
		return -1;
	}
	if (cfg->http_tokens_file[0]) {
		hi->tokens = http_tokens_load(cfg->http_tokens_file);
		if (!hi->tokens)
			return -1;
	}
	return 0;
}

struct http_input *http_input_start(struct event_base *base, const struct config *cfg,
				    struct intake *in)
{
	struct http_input *hi = calloc(1, sizeof(*hi));

	if (!hi || !(hi->http = evhttp_new(base))) {
		log_error("http", "out of memory starting the HTTP input");
		free(hi);
		return NULL;
	}
	hi->base = base;
	hi->in = in;
	hi->paused_tail = &hi->paused;
	hi->max_event_bytes = (size_t)cfg->listen_max_event_bytes;
	/* Every method reaches http_request_cb, which answers 405 to all but
	 * POST (libevent itself would say 501). */
	evhttp_set_allowed_methods(hi->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
				   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
				   EVHTTP_REQ_PATCH);
	evhttp_set_max_headers_size(hi->http, HTTP_MAX_HEADERS);
	/* Past it, evhttp answers 413 from Content-Length, before reading the body. */
	evhttp_set_max_body_size(hi->http, (ev_ssize_t)cfg->http_max_body_bytes);
	evhttp_set_timeout(hi->http, cfg->http_timeout_s);
	evhttp_set_gencb(hi->http, http_request_cb, hi);
	if (http_security(hi, cfg) < 0) {
		http_input_free(hi);
		return NULL;
	}
	if (intake_watch(in, http_room_cb, hi) < 0) {
		log_error("http", "too many inputs watch the intake; not starting");
		http_input_free(hi);
		return NULL;
	}
	hi->watching = true;
	for (int i = 0; i < cfg->http_listen_count; i++) {
		if (conn_guard_bind(base, hi->http, cfg->http_listen[i], "http", "http.listen") < 0) {
			http_input_free(hi);
			return NULL;
		}
		log_info("http", "listening on %s://%s%s", hi->tls ? "https" : "http",
			 cfg->http_listen[i], HTTP_PATH);
	}
	return hi;
}

size_t http_input_waiting(const struct http_input *hi)
{
	return hi ? hi->waiting : 0;
}

void http_input_reconfigure(struct http_input *hi, const struct config *cfg)
{
	if (hi)
		hi->max_event_bytes = (size_t)cfg->listen_max_event_bytes;
}

void http_input_free(struct http_input *hi)
{
	if (!hi)
		return;
	if (hi->watching)
		intake_unwatch(hi->in, hi);
	/* After the loop: the acks of paused requests will never run. */
	while (hi->paused) {
		struct http_req *hr = hi->paused;

		hi->paused = hr->next;
		intake_ack_close(hi->in, hr->ack);
		http_req_free(hr);
	}
	if (hi->http)
		evhttp_free(hi->http);
	conn_guard_free(hi->guard);
	listener_tls_free(hi->tls);
	http_tokens_free(hi->tokens);
	free(hi);
}
