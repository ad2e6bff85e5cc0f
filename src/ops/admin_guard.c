/*
 * admin_guard.c: bounds on the admin endpoint's connections, which evhttp
 * (libevent 2.1) does not have: at most ADMIN_GUARD_MAX_CONNS open at once
 * (a connection past it is closed as soon as it is set up), and a request's
 * headers must all arrive within ADMIN_GUARD_DEADLINE_S of the connection
 * opening or of the previous answer. evhttp's own timeout restarts with
 * every byte, so without a deadline a client sending one byte every few
 * seconds would hold its connection for ever.
 *
 * evhttp creates each connection's bufferevent through admin_guard_bev_cb
 * (evhttp_set_bevcb). The guard keeps a reference to it: once evhttp has
 * freed the connection, the bufferevent's callbacks are cleared, and the
 * guard drops its reference (which closes the socket). To close a
 * connection the guard raises an error event on it, which evhttp answers
 * by freeing the connection. A sweep every second retires freed
 * connections and enforces deadlines. Loop thread only.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "admin_guard.h"
#include "log.h"
#include "stats.h"

struct admin_guard_conn {
	struct bufferevent *bev;      /* evhttp's; we hold a reference */
	int64_t deadline_ms;          /* CLOCK_MONOTONIC: headers due by then */
	bool doomed;                  /* over the cap: close at the next turn */
	struct admin_guard_conn *next;
};

struct admin_guard {
	struct event_base *base;
	struct event *sweep;          /* every second */
	struct event *doom;           /* closes over-cap connections right after set-up */
	struct admin_guard_conn *conns;
	int nconns;                   /* not doomed */
};

static struct log_limit admin_guard_limit = LOG_LIMIT_INIT(5, 10000);

static int64_t admin_guard_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether evhttp has freed C's connection (it clears the callbacks). */
static bool admin_guard_gone(const struct admin_guard_conn *c)
{
	bufferevent_data_cb readcb = NULL;

	bufferevent_getcb(c->bev, &readcb, NULL, NULL, NULL);
	return readcb == NULL;
}

/* Ask evhttp to close C's connection: an error while reading frees it. */
static void admin_guard_close(struct admin_guard_conn *c)
{
	if (!admin_guard_gone(c))
		bufferevent_trigger_event(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, 0);
}

/* Drop the entries whose connections evhttp has freed. */
static void admin_guard_reap(struct admin_guard *g)
{
	struct admin_guard_conn **pp = &g->conns, *c;

	while ((c = *pp)) {
		if (!admin_guard_gone(c)) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		if (!c->doomed)
			g->nconns--;
		bufferevent_decref(c->bev);
		free(c);
	}
}

static void admin_guard_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct admin_guard *g = arg;
	int64_t now = admin_guard_now_ms();

	(void)fd;
	(void)what;
	for (struct admin_guard_conn *c = g->conns; c; c = c->next)
		if (now >= c->deadline_ms && !admin_guard_gone(c)) {
			log_limited(&admin_guard_limit, LOG_LEVEL_WARN, "admin", "a request's headers "
				    "did not arrive within %d s; connection closed",
				    ADMIN_GUARD_DEADLINE_S);
			admin_guard_close(c);
		}
	admin_guard_reap(g);
}

static void admin_guard_doom_cb(evutil_socket_t fd, short what, void *arg)
{
	struct admin_guard *g = arg;

	(void)fd;
	(void)what;
	for (struct admin_guard_conn *c = g->conns; c; c = c->next)
		if (c->doomed)
			admin_guard_close(c);
	admin_guard_reap(g);
}

/* evhttp's bufferevent factory: every accepted admin connection passes here. */
static struct bufferevent *admin_guard_bev_cb(struct event_base *base, void *arg)
{
	struct admin_guard *g = arg;
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	struct admin_guard_conn *c = calloc(1, sizeof(*c));
	struct timeval now = { 0, 0 };

	if (!bev || !c) {
		/* evhttp makes its own; this one connection goes unguarded */
		log_error("admin", "out of memory guarding an admin connection");
		if (bev)
			bufferevent_free(bev);
		free(c);
		return NULL;
	}
	admin_guard_reap(g); /* connections evhttp freed since the last sweep */
	bufferevent_incref(bev);
	c->bev = bev;
	c->deadline_ms = admin_guard_now_ms() + ADMIN_GUARD_DEADLINE_S * 1000;
	c->doomed = g->nconns >= ADMIN_GUARD_MAX_CONNS;
	c->next = g->conns;
	g->conns = c;
	if (!c->doomed) {
		g->nconns++;
		return bev;
	}
	stats_add(STAT_admin_connections_refused_total, 1);
	log_limited(&admin_guard_limit, LOG_LEVEL_WARN, "admin", "%d admin connections are open; "
		    "a new one is closed", ADMIN_GUARD_MAX_CONNS);
	event_add(g->doom, &now); /* once evhttp has set it up */
	return bev;
}

struct admin_guard *admin_guard_new(struct event_base *base, struct evhttp *http)
{
	struct admin_guard *g = calloc(1, sizeof(*g));
	struct timeval second = { 1, 0 };

	if (!g)
		return NULL;
	g->base = base;
	g->sweep = event_new(base, -1, EV_PERSIST, admin_guard_sweep_cb, g);
	g->doom = evtimer_new(base, admin_guard_doom_cb, g);
	if (!g->sweep || !g->doom || event_add(g->sweep, &second) < 0) {
		admin_guard_free(g);
		return NULL;
	}
	evhttp_set_bevcb(http, admin_guard_bev_cb, g);
	return g;
}

void admin_guard_request(struct admin_guard *g, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;

	for (struct admin_guard_conn *c = g->conns; c && bev; c = c->next)
		if (c->bev == bev) {
			c->deadline_ms = admin_guard_now_ms() + ADMIN_GUARD_DEADLINE_S * 1000;
			return;
		}
}

void admin_guard_free(struct admin_guard *g)
{
	struct admin_guard_conn *c, *next;

	if (!g)
		return;
	for (c = g->conns; c; c = next) {
		next = c->next;
		bufferevent_decref(c->bev);
		free(c);
	}
	if (g->sweep)
		event_free(g->sweep);
	if (g->doom)
		event_free(g->doom);
	free(g);
}
