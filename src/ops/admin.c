/*
 * admin.c: the HTTP endpoint on admin.http: /metrics /stats /healthz /readyz.
 *
 * One evhttp on the loop's event_base, with a dispatch table of one small
 * handler per path (PgBouncer's show_map[] shape). Handlers take a stats
 * snapshot and format it with stats.c, so the endpoint adds no figure of
 * its own and never takes a lock the writers hold. Requests are small and
 * bounded: GET and HEAD only (else 405), 8 KiB of headers, no body, 10 s
 * timeout; at most 16 connections, and headers due within 10 s whatever the
 * pace (conn_guard.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "admin.h"
#include "conn_guard.h"
#include "admin_page.h"
#include "log.h"
#include "queue.h"
#include "stats.h"

#define ADMIN_MAX_HEADERS 8192
#define ADMIN_TIMEOUT_S 10   /* evhttp's per-read timeout, and the headers' deadline */
#define ADMIN_MAX_CONNS 16   /* admin connections open at once */

struct admin {
	struct evhttp *http;
	struct conn_guard *guard;    /* connection cap and header deadline */
	struct queue **queues;   /* owned by main; checked by /readyz */
	int nqueues;
	bool stopping;           /* draining after SIGTERM: not ready */
};

struct admin_route {
	const char *path;
	void (*handle)(struct admin *a, struct evhttp_request *req, struct evbuffer *body);
};

/* Send BODY with CODE and CONTENT_TYPE. */
static void admin_reply(struct evhttp_request *req, int code, const char *content_type,
			struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", content_type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply(req, code, code == 200 ? "OK" : code == 503 ? "Service Unavailable" :
			  code == 404 ? "Not Found" : code == 405 ? "Method Not Allowed" :
			  "Internal Server Error", body);
}

static void admin_oom(struct evhttp_request *req)
{
	log_error("admin", "out of memory formatting %s; answered 500",
		  evhttp_request_get_uri(req));
	evhttp_send_error(req, 500, "out of memory");
}

static void admin_metrics(struct admin *a, struct evhttp_request *req, struct evbuffer *body)
{
	struct stats_snapshot s;

	(void)a;
	stats_snapshot(&s);
	if (stats_format_prometheus(&s, body) < 0) {
		admin_oom(req);
		return;
	}
	admin_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", body);
}

static void admin_stats(struct admin *a, struct evhttp_request *req, struct evbuffer *body)
{
	struct stats_snapshot s;

	(void)a;
	stats_snapshot(&s);
	if (stats_format_json(&s, body) < 0) {
		admin_oom(req);
		return;
	}
	admin_reply(req, 200, "application/json", body);
}

static void admin_healthz(struct admin *a, struct evhttp_request *req, struct evbuffer *body)
{
	(void)a;
	/* Answering at all proves the loop turns: this runs on it. */
	evbuffer_add_printf(body, "ok\n");
	admin_reply(req, 200, "text/plain; charset=utf-8", body);
}

/* Why the writers cannot commit now, into WHY (the worst writer); 0: they can. */
static int admin_writers_not_ready(char *why, size_t len)
{
	static const char *const reason[STATS_WRITER_STATE_COUNT] = {
		[STATS_WRITER_SPOOLING] = "PostgreSQL is away or refuses writes: batches go "
					  "to the spool (see the log)",
		[STATS_WRITER_HOLDING] = "the spool refuses batches too: clients are not acked "
					 "(see the log)",
		[STATS_WRITER_STALLED] = "a statement has been running for more than half of "
					 "writer.statement_timeout_ms (see the log)",
	};
	struct stats_snapshot s;
	int worst = -1, who = 0;

	stats_snapshot(&s);
	for (int i = 0; i < s.writers; i++)
		if (s.writer_state[i] > worst) {
			worst = s.writer_state[i];
			who = i;
		}
	if (worst >= 0 && reason[worst]) {
		snprintf(why, len, "writer %d %s: %s", who, stats_writer_state_label(worst),
			 reason[worst]);
		return -1;
	}
	if (!s.gauge[STAT_postgres_up]) {
		snprintf(why, len, "PostgreSQL is not connected, or its last statement failed "
			 "(see the log)");
		return -1;
	}
	return 0;
}

/* Why the daemon cannot take events right now, into WHY; 0 when it can. */
static int admin_not_ready(const struct admin *a, char *why, size_t len)
{
	if (a->stopping) {
		snprintf(why, len, "shutting down: draining the queues");
		return -1;
	}
	if (admin_writers_not_ready(why, len) < 0)
		return -1;
	/* Blocked, not only over the limit: reading stays paused until the
	 * writer drains the queue below 3/4, and so does readiness. */
	for (int i = 0; i < a->nqueues; i++)
		if (queue_over_limit(a->queues[i]) || queue_blocked(a->queues[i])) {
			snprintf(why, len, "queue %d is full (%zu events, %zu bytes): clients are "
				 "paused until it drains below 3/4", i, queue_events(a->queues[i]),
				 queue_bytes(a->queues[i]));
			return -1;
		}
	return 0;
}

static void admin_readyz(struct admin *a, struct evhttp_request *req, struct evbuffer *body)
{
	char why[256];

	if (admin_not_ready(a, why, sizeof(why)) < 0) {
		evbuffer_add_printf(body, "not ready: %s\n", why);
		admin_reply(req, 503, "text/plain; charset=utf-8", body);
		return;
	}
	evbuffer_add_printf(body, "ready\n");
	admin_reply(req, 200, "text/plain; charset=utf-8", body);
}

/* The status page and its script and style (compiled in, see admin_page.h). */
static void admin_page(struct admin *a, struct evhttp_request *req, struct evbuffer *body)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct admin_page_file f;

	(void)a;
	if (admin_page_find(path && *path ? path : "/", &f) < 0) {
		log_error("admin", "%s: in the route table but not compiled in; answered 500",
			  path);
		evhttp_send_error(req, 500, "status page file missing");
		return;
	}
	if (evbuffer_add_reference(body, f.data, f.len, NULL, NULL) < 0) {
		admin_oom(req);
		return;
	}
	evhttp_add_header(h, "Content-Security-Policy", ADMIN_PAGE_CSP);
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	admin_reply(req, 200, f.content_type, body);
}

static const struct admin_route admin_routes[] = {
	{ "/", admin_page },
	{ "/status.js", admin_page },
	{ "/status.css", admin_page },
	{ "/metrics", admin_metrics },
	{ "/stats", admin_stats },
	{ "/healthz", admin_healthz },
	{ "/readyz", admin_readyz },
};

static void admin_not_found(struct evhttp_request *req, const char *path, struct evbuffer *body)
{
	evbuffer_add_printf(body, "no such page: %s\nthis endpoint serves:", path);
	for (size_t i = 0; i < sizeof(admin_routes) / sizeof(admin_routes[0]); i++)
		evbuffer_add_printf(body, " %s", admin_routes[i].path);
	evbuffer_add_printf(body, "\n");
	admin_reply(req, 404, "text/plain; charset=utf-8", body);
}

static void admin_request_cb(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	struct evbuffer *body = evbuffer_new();

	conn_guard_request(((struct admin *)arg)->guard, req);
	if (!body) {
		admin_oom(req);
		return;
	}
	if (!path || !*path)
		path = "/";
	if (!(evhttp_request_get_command(req) & (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD))) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		evbuffer_add_printf(body, "%s: only GET and HEAD are served here\n", path);
		admin_reply(req, 405, "text/plain; charset=utf-8", body);
		evbuffer_free(body);
		return;
	}
	for (size_t i = 0; i < sizeof(admin_routes) / sizeof(admin_routes[0]); i++)
		if (strcmp(path, admin_routes[i].path) == 0) {
			admin_routes[i].handle(arg, req, body);
			evbuffer_free(body);
			return;
		}
	admin_not_found(req, path, body);
	evbuffer_free(body);
}

struct admin *admin_start(struct event_base *base, const char *addr, struct queue **queues,
			  int nqueues)
{
	struct admin *a = calloc(1, sizeof(*a));

	if (!a || !(a->http = evhttp_new(base))) {
		log_error("admin", "out of memory starting the admin endpoint");
		free(a);
		return NULL;
	}
	a->queues = queues;
	a->nqueues = nqueues;
	/* Every common method reaches admin_request_cb, which answers 405 to
	 * all but GET and HEAD (libevent itself would say 501). */
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
				   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
				   EVHTTP_REQ_PATCH);
	evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS);
	evhttp_set_max_body_size(a->http, 0);
	evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
	evhttp_set_gencb(a->http, admin_request_cb, a);
	a->guard = conn_guard_new(base, a->http, &(struct conn_guard_opts){
		.who = "admin", .max_conns = ADMIN_MAX_CONNS, .deadline_s = ADMIN_TIMEOUT_S,
		.refused = STAT_admin_connections_refused_total });
	if (!a->guard || conn_guard_bind(base, a->http, addr, "admin", "admin.http") < 0) {
		admin_free(a);
		return NULL;
	}
	log_info("admin", "serving the status page, /metrics /stats /healthz /readyz on http://%s/", addr);
	return a;
}

void admin_set_stopping(struct admin *a)
{
	if (a)
		a->stopping = true;
}

void admin_free(struct admin *a)
{
	if (!a)
		return;
	if (a->http)
		evhttp_free(a->http);
	conn_guard_free(a->guard);
	free(a);
}
