/*
 * bench_http.c: the HTTP mode of megaingest-bench (--http host:port).
 *
 * Each connection is one keep-alive HTTP/1.1 connection of libevent's
 * evhttp client; a chunk is one POST /v1/events whose body is a JSON array
 * of the same events the Forward mode sends (bench_json_event: the same
 * columns and mg_id scheme, mg_created_at for the entry time), with the
 * chunk id as its Idempotency-Key. HTTP/1.1 without pipelining allows one
 * request in flight per connection, so the window is 1 and the load comes
 * from the number of connections.
 *
 * The daemon answers once every accepted event is committed, so the
 * request -> answer time is the ack latency, measured as bench.c measures
 * a Forward ack (from the send, or from the schedule with -r). Answers:
 *   200  {"accepted": N, "rejected": [...]}: N events acked; events not
 *        accepted count in http_rejected (the run is then not ok);
 *   503  sent again, the same body, after its Retry-After (seconds; 1 when
 *        absent or not a number): http_retries; the latency keeps running;
 *   else the chunk is dropped and counts in http_errors (first few logged).
 * A connection that fails (refused, reset, evhttp's timeout) fails the
 * run, as a closed Forward connection does.
 *
 * The body stays in the connection's own yajl generator until the answer,
 * so a resend costs a copy, not a new encoding. Loop thread only.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "bench_private.h"
#include "log.h"

#define BENCH_HTTP_PATH "/v1/events"
#define BENCH_HTTP_MAX_ANSWER (1 << 20)   /* answer body we read, bytes */
#define BENCH_HTTP_MAX_HEADERS (64 << 10)
#define BENCH_HTTP_RETRY_MAX_S 60         /* longest Retry-After we honour */
#define BENCH_HTTP_ERRORS_LOGGED 5

struct bench_http_conn {
	struct evhttp_connection *evcon;
	struct event *retry_ev;     /* a 503's Retry-After wait */
	yajl_gen gen;               /* the body of the request in flight */
	char idem[BENCH_CHUNK_ID_LEN + 1];   /* its Idempotency-Key */
	char host_hdr[300];         /* Host: as given to --http */
	evutil_socket_t nodelay_fd; /* the socket TCP_NODELAY was set on */
	enum evhttp_request_error err;
	bool have_err;              /* err is this request's, from the error callback */
};

/* ---- setup --------------------------------------------------------------- */

/* Split --http host:port into HOST (SIZE bytes) and *PORT; 0 or -1 (logged). */
static int bench_http_address(const char *arg, char *host, size_t size, uint16_t *port)
{
	const char *colon = strrchr(arg, ':');
	char *end;
	unsigned long p;

	if (!colon || colon == arg || (size_t)(colon - arg) >= size) {
		log_error("bench", "--http %s: expected host:port", arg);
		return -1;
	}
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || p == 0 || p > 65535) {
		log_error("bench", "--http %s: the port is not a number in 1..65535", arg);
		return -1;
	}
	memcpy(host, arg, (size_t)(colon - arg));
	host[colon - arg] = '\0';
	/* [::1]:8080: evhttp wants the address without the brackets */
	if (host[0] == '[' && colon[-1] == ']') {
		memmove(host, host + 1, (size_t)(colon - arg) - 2);
		host[colon - arg - 2] = '\0';
	}
	*port = (uint16_t)p;
	return 0;
}

static void bench_http_retry_cb(evutil_socket_t fd, short what, void *arg);

/* The socket is gone: the next one, even under the same number, needs
 * TCP_NODELAY again. */
static void bench_http_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct bench_conn *c = arg;

	(void)evcon;
	c->http->nodelay_fd = -1;
}

int bench_http_open(struct bench_conn *c)
{
	struct bench *b = c->b;
	struct bench_http_conn *h;
	char host[256];
	uint16_t port;

	if (bench_http_address(b->o.http, host, sizeof(host), &port) < 0)
		return -1;
	c->inflight = calloc(1, sizeof(*c->inflight));
	h = c->http = calloc(1, sizeof(*h));
	if (!c->inflight || !h)
		goto oom;
	h->nodelay_fd = -1;
	snprintf(h->host_hdr, sizeof(h->host_hdr), "%s", b->o.http);
	h->gen = yajl_gen_alloc(NULL);
	h->retry_ev = evtimer_new(b->base, bench_http_retry_cb, c);
	h->evcon = evhttp_connection_base_new(b->base, NULL, host, port);
	if (!h->gen || !h->retry_ev || !h->evcon)
		goto oom;
	/* Our watch reports a late answer first (with --timeout); evhttp's
	 * own timeout only ends a connection that is truly stuck. */
	evhttp_connection_set_timeout(h->evcon, b->o.timeout + 5 > INT_MAX ? INT_MAX :
					       (int)b->o.timeout + 5);
	evhttp_connection_set_retries(h->evcon, 0);
	evhttp_connection_set_closecb(h->evcon, bench_http_close_cb, c);
	evhttp_connection_set_max_body_size(h->evcon, BENCH_HTTP_MAX_ANSWER);
	evhttp_connection_set_max_headers_size(h->evcon, BENCH_HTTP_MAX_HEADERS);
	/* An early 413 or 401 on a body still being written is read, not lost. */
	if (evhttp_connection_set_flags(h->evcon, EVHTTP_CON_READ_ON_WRITE_ERROR) != 0)
		log_warn("bench", "conn=%d: evhttp cannot read answers after a write error; "
			 "going on", c->idx);
	c->connected = true;
	return 0;
oom:
	log_error("bench", "conn=%d: out of memory setting up an HTTP connection", c->idx);
	return -1;
}

void bench_http_close(struct bench_conn *c)
{
	struct bench_http_conn *h = c->http;

	if (!h)
		return;
	if (h->evcon)
		evhttp_connection_free(h->evcon);
	if (h->retry_ev)
		event_free(h->retry_ev);
	if (h->gen)
		yajl_gen_free(h->gen);
	free(h);
	c->http = NULL;
}

/* ---- requests ------------------------------------------------------------ */

/* The next N events of the mix as a JSON array in H's generator; 0 or -1. */
static int bench_http_encode(struct bench *b, struct bench_http_conn *h, uint32_t n)
{
	struct bench_event ev;

	yajl_gen_reset(h->gen, NULL);
	yajl_gen_clear(h->gen);
	if (yajl_gen_array_open(h->gen) != yajl_gen_status_ok)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		bench_event_next(&b->gen, &ev);
		if (bench_json_event(h->gen, &ev) < 0)
			return -1;
	}
	return yajl_gen_array_close(h->gen) == yajl_gen_status_ok ? 0 : -1;
}

/* Each chunk's tail must not wait for the previous segment's ACK (Nagle).
 * evhttp makes the socket inside evhttp_make_request, and again after a
 * reconnect: set the option on every new one. */
static void bench_http_nodelay(struct bench_conn *c)
{
	struct bench_http_conn *h = c->http;
	struct bufferevent *bev = evhttp_connection_get_bufferevent(h->evcon);
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
	int one = 1;

	if (fd < 0 || fd == h->nodelay_fd)
		return;
	h->nodelay_fd = fd;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_warn("bench", "conn=%d: TCP_NODELAY: %s; going on", c->idx, strerror(errno));
}

static void bench_http_done_cb(struct evhttp_request *req, void *arg);

static void bench_http_error_cb(enum evhttp_request_error err, void *arg)
{
	struct bench_conn *c = arg;

	c->http->err = err;
	c->http->have_err = true;
}

/* POST the body in C's generator; 0 or -1 (logged, the run has failed). */
static int bench_http_post(struct bench_conn *c)
{
	struct bench_http_conn *h = c->http;
	struct evhttp_request *req = evhttp_request_new(bench_http_done_cb, c);
	struct evkeyvalq *hdr;
	const unsigned char *body;
	size_t len;
	char auth[512];
	int rc = 0;

	if (!req) {
		bench_fail(c->b, "out of memory making an HTTP request");
		return -1;
	}
	evhttp_request_set_error_cb(req, bench_http_error_cb);
	h->have_err = false;
	hdr = evhttp_request_get_output_headers(req);
	rc |= evhttp_add_header(hdr, "Host", h->host_hdr);
	rc |= evhttp_add_header(hdr, "Content-Type", "application/json");
	rc |= evhttp_add_header(hdr, "Idempotency-Key", h->idem);
	if (c->b->o.token) {
		snprintf(auth, sizeof(auth), "Bearer %s", c->b->o.token);
		rc |= evhttp_add_header(hdr, "Authorization", auth);
	}
	if (yajl_gen_get_buf(h->gen, &body, &len) != yajl_gen_status_ok)
		rc = -1;
	else
		rc |= evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
	if (rc != 0) {
		evhttp_request_free(req);
		bench_fail(c->b, "out of memory building an HTTP request");
		return -1;
	}
	/* On failure evhttp has freed REQ already. */
	if (evhttp_make_request(h->evcon, req, EVHTTP_REQ_POST, BENCH_HTTP_PATH) != 0) {
		char why[400];

		snprintf(why, sizeof(why), "conn=%d: cannot send a request to http://%s%s",
			 c->idx, h->host_hdr, BENCH_HTTP_PATH);
		bench_fail(c->b, why);
		return -1;
	}
	bench_http_nodelay(c);
	return 0;
}

int bench_http_send(struct bench_conn *c, struct bench_chunk *ch, uint32_t n)
{
	if (bench_http_encode(c->b, c->http, n) < 0) {
		bench_fail(c->b, "out of memory encoding a chunk as JSON");
		return -1;
	}
	bench_chunk_id(c->b, ch->seq, c->http->idem);
	return bench_http_post(c);
}

static void bench_http_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench_conn *c = arg;

	(void)fd;
	(void)what;
	if (!c->b->failed)
		(void)bench_http_post(c);  /* a failure is the run's, already logged */
}

/* ---- answers ------------------------------------------------------------- */

/* Seconds to wait after a 503: its Retry-After, else 1; at most
 * BENCH_HTTP_RETRY_MAX_S. (The HTTP-date form is not sent by megaingestd.) */
static long bench_http_retry_after(struct evhttp_request *req)
{
	const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), "Retry-After");
	char *end;
	long s;

	if (!v)
		return 1;
	errno = 0;
	s = strtol(v, &end, 10);
	if (errno || end == v || *end || s < 0)
		return 1;
	return s > BENCH_HTTP_RETRY_MAX_S ? BENCH_HTTP_RETRY_MAX_S : s;
}

/* The answer's body, NUL-terminated in BUF (SIZE bytes; cut to fit). */
static void bench_http_body(struct evhttp_request *req, char *buf, size_t size)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	ev_ssize_t n = evbuffer_copyout(in, buf, size - 1);

	buf[n > 0 ? n : 0] = '\0';
}

/* Events of EVENTS accepted by a 200 answer's body, or -1 when the body
 * is not {"accepted": N, ...} with 0 <= N <= EVENTS. */
static int64_t bench_http_accepted(struct evhttp_request *req, uint32_t events)
{
	static const char *path[] = { "accepted", NULL };
	char body[4096], err[128];
	yajl_val root, v;
	int64_t n = -1;

	bench_http_body(req, body, sizeof(body));
	root = yajl_tree_parse(body, err, sizeof(err));
	if (!root)
		return -1;
	v = yajl_tree_get(root, path, yajl_t_number);
	if (v && YAJL_IS_INTEGER(v) && YAJL_GET_INTEGER(v) >= 0 &&
	    YAJL_GET_INTEGER(v) <= (long long)events)
		n = YAJL_GET_INTEGER(v);
	yajl_tree_free(root);
	return n;
}

/* Log a chunk's unexpected answer, for the first few only. */
static void bench_http_log_answer(struct bench_conn *c, struct evhttp_request *req,
				  const char *what)
{
	struct bench *b = c->b;
	char body[200];

	if (b->http_errors + b->http_rejected > BENCH_HTTP_ERRORS_LOGGED)
		return;
	bench_http_body(req, body, sizeof(body));
	for (char *p = body; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	log_error("bench", "conn=%d: chunk %" PRIu64 ": %s: HTTP %d: %s; going on", c->idx,
		  c->inflight[0].seq, what, evhttp_request_get_response_code(req), body);
}

/* A 503: the same body again after Retry-After; 0 or -1 (run failed). */
static int bench_http_busy(struct bench_conn *c, struct evhttp_request *req)
{
	struct timeval tv = { bench_http_retry_after(req), 0 };

	/* Retry-After: 0 must not become a busy loop against a full daemon. */
	if (tv.tv_sec == 0)
		tv.tv_usec = 10000;
	c->b->http_retries++;
	if (evtimer_add(c->http->retry_ev, &tv) < 0) {
		bench_fail(c->b, "cannot arm the Retry-After timer");
		return -1;
	}
	return 0;
}

/* A 200 for the chunk in flight; 0 or -1 (out of memory). */
static int bench_http_ok(struct bench_conn *c, struct evhttp_request *req)
{
	uint32_t events = c->inflight[0].events;
	int64_t n = bench_http_accepted(req, events);

	if (n < 0) {
		bench_http_log_answer(c, req, "not {\"accepted\": N} with N <= the events sent");
		c->b->http_errors++;
		return bench_chunk_answered(c, 0, 0, false);
	}
	if (n < events) {
		bench_http_log_answer(c, req, "events rejected");
		c->b->http_rejected += events - n;
	}
	return bench_chunk_answered(c, 0, (uint32_t)n, true);
}

static void bench_http_done_cb(struct evhttp_request *req, void *arg)
{
	struct bench_conn *c = arg;
	struct bench_http_conn *h = c->http;
	int code = req ? evhttp_request_get_response_code(req) : 0, rc;
	char why[200];

	if (c->b->failed)
		return;
	if (code == 0 || c->ninflight != 1) {
		snprintf(why, sizeof(why), "conn=%d: HTTP request failed (%s)", c->idx,
			 !h->have_err ? "connection refused or closed" :
			 h->err == EVREQ_HTTP_TIMEOUT ? "timeout" :
			 h->err == EVREQ_HTTP_EOF ? "closed by the daemon" :
			 h->err == EVREQ_HTTP_INVALID_HEADER ? "invalid answer header" :
			 h->err == EVREQ_HTTP_DATA_TOO_LONG ? "answer too long" :
			 "connection error");
		bench_fail(c->b, why);
		return;
	}
	if (code == 503) {
		(void)bench_http_busy(c, req);
		return;
	}
	if (code == 200) {
		rc = bench_http_ok(c, req);
	} else {
		bench_http_log_answer(c, req, "answer not 200 or 503");
		c->b->http_errors++;
		rc = bench_chunk_answered(c, 0, 0, false);
	}
	if (rc < 0) {
		bench_fail(c->b, "out of memory recording an answer");
		return;
	}
	bench_conn_next(c);
}
