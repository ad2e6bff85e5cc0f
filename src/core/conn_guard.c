/*
 * conn_guard.c: bounds on an evhttp server's connections, which evhttp
 * (libevent 2.1) does not have: at most max_conns open at once (a
 * connection past it is closed as soon as it is set up), and, with a
 * deadline, a request's headers must all arrive within deadline_s of the
 * connection opening or of the previous answer. evhttp's own timeout
 * restarts with every byte, so without a deadline a client sending one
 * byte every few seconds would hold its connection for ever. (The HTTP
 * input has no deadline: a request waiting for its commit is not late.)
 *
 * evhttp creates each connection's bufferevent through conn_guard_bev_cb
 * (evhttp_set_bevcb) and the guard keeps a reference to it. The
 * connection itself does not exist yet then; on the next turn of the loop
 * the guard finds it (the bufferevent's callback argument, checked against
 * evhttp_connection_get_bufferevent) and registers a close callback
 * (evhttp_connection_set_closecb), which evhttp runs when it frees the
 * connection: only then is it no longer counted. (Its read callback is no
 * sign: evhttp clears it while it writes each answer.) A connection freed
 * before that turn has all its bufferevent callbacks cleared. To close a
 * connection the guard raises an error event on it, which evhttp answers
 * by freeing the connection. A sweep every second drops the entries of
 * closed connections and enforces deadlines. Loop thread only.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "clock_ns.h"
#include "conn_guard.h"
#include "log.h"

struct conn_guard_conn {
	struct conn_guard *g;
	struct bufferevent *bev;      /* evhttp's; we hold a reference */
	struct evhttp_connection *evcon; /* once found (the turn after set-up) */
	int64_t deadline_ms;          /* CLOCK_MONOTONIC: headers due by then */
	bool doomed;                  /* over the cap: close at the next turn */
	bool closed;                  /* evhttp freed the connection */
	struct conn_guard_conn *next;
};

struct conn_guard {
	struct conn_guard_opts o;
	struct event_base *base;
	struct event *sweep;          /* every second */
	struct event *settle;         /* the turn after set-up: find connections, close over-cap ones */
	struct conn_guard_conn *conns;
	int nconns;                   /* not doomed */
};

static struct log_limit conn_guard_limit = LOG_LIMIT_INIT(5, 10000);

/* evhttp is freeing C's connection. */
static void conn_guard_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	struct conn_guard_conn *c = arg;

	(void)evcon;
	if (c->closed)
		return;
	c->closed = true;
	if (!c->doomed)
		c->g->nconns--;
}

/* Find C's connection and learn of its close; false when evhttp freed it
 * already (bufferevent_free cleared every callback) or never made one. */
static bool conn_guard_adopt(struct conn_guard_conn *c)
{
	bufferevent_event_cb eventcb = NULL;
	void *arg = NULL;

	if (c->evcon || c->closed)
		return !c->closed;
	bufferevent_getcb(c->bev, NULL, NULL, &eventcb, &arg);
	if (!eventcb || !arg ||
	    evhttp_connection_get_bufferevent((struct evhttp_connection *)arg) != c->bev) {
		conn_guard_closed_cb(NULL, c);
		return false;
	}
	c->evcon = arg;
	evhttp_connection_set_closecb(c->evcon, conn_guard_closed_cb, c);
	return true;
}

/* Whether C's connection is gone. */
static bool conn_guard_gone(struct conn_guard_conn *c)
{
	return !conn_guard_adopt(c);
}

/* Ask evhttp to close C's connection: an error while reading frees it. */
static void conn_guard_close(struct conn_guard_conn *c)
{
	if (!conn_guard_gone(c))
		bufferevent_trigger_event(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, 0);
}

/* Drop the entries whose connections evhttp has freed. */
static void conn_guard_reap(struct conn_guard *g)
{
	struct conn_guard_conn **pp = &g->conns, *c;

	while ((c = *pp)) {
		if (!conn_guard_gone(c)) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		bufferevent_decref(c->bev);
		free(c);
	}
}

static void conn_guard_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn_guard *g = arg;
	int64_t now = clock_mono_ns() / CLOCK_NS_PER_MS;

	(void)fd;
	(void)what;
	for (struct conn_guard_conn *c = g->conns; c && g->o.deadline_s; c = c->next)
		if (now >= c->deadline_ms && !conn_guard_gone(c)) {
			log_limited(&conn_guard_limit, LOG_LEVEL_WARN, g->o.who, "a request's headers "
				    "did not arrive within %d s; connection closed",
				    g->o.deadline_s);
			conn_guard_close(c);
		}
	conn_guard_reap(g);
}

static void conn_guard_settle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn_guard *g = arg;

	(void)fd;
	(void)what;
	for (struct conn_guard_conn *c = g->conns; c; c = c->next)
		if (c->doomed)
			conn_guard_close(c);
	conn_guard_reap(g); /* and finds the new connections */
}

/* evhttp's bufferevent factory: every accepted admin connection passes here. */
static struct bufferevent *conn_guard_bev_cb(struct event_base *base, void *arg)
{
	struct conn_guard *g = arg;
	struct bufferevent *bev = g->o.make_bev ? g->o.make_bev(base, g->o.make_bev_arg) :
				  bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	struct conn_guard_conn *c = calloc(1, sizeof(*c));
	struct timeval now = { 0, 0 };

	if (!bev || !c) {
		/* evhttp makes its own (plain: a TLS one would not speak TLS, and
		 * fails its first request); this connection goes unguarded */
		log_error(g->o.who, "out of memory guarding a connection");
		if (bev)
			bufferevent_free(bev);
		free(c);
		return NULL;
	}
	bufferevent_incref(bev);
	c->g = g;
	c->bev = bev;
	c->deadline_ms = clock_mono_ns() / CLOCK_NS_PER_MS + g->o.deadline_s * 1000;
	c->doomed = g->nconns >= g->o.max_conns;
	c->next = g->conns;
	g->conns = c;
	event_add(g->settle, &now); /* once evhttp has set it up */
	if (!c->doomed) {
		g->nconns++;
		return bev;
	}
	stats_add(g->o.refused, 1);
	log_limited(&conn_guard_limit, LOG_LEVEL_WARN, g->o.who, "%d %s connections are open; "
		    "a new one is closed", g->o.max_conns, g->o.who);
	return bev;
}

struct conn_guard *conn_guard_new(struct event_base *base, struct evhttp *http,
				  const struct conn_guard_opts *opts)
{
	struct conn_guard *g = calloc(1, sizeof(*g));
	struct timeval second = { 1, 0 };

	if (!g)
		return NULL;
	g->o = *opts;
	g->base = base;
	g->sweep = event_new(base, -1, EV_PERSIST, conn_guard_sweep_cb, g);
	g->settle = evtimer_new(base, conn_guard_settle_cb, g);
	if (!g->sweep || !g->settle || event_add(g->sweep, &second) < 0) {
		conn_guard_free(g);
		return NULL;
	}
	evhttp_set_bevcb(http, conn_guard_bev_cb, g);
	return g;
}

void conn_guard_request(struct conn_guard *g, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;

	for (struct conn_guard_conn *c = g->conns; c && bev; c = c->next)
		if (c->bev == bev) {
			c->deadline_ms = clock_mono_ns() / CLOCK_NS_PER_MS + g->o.deadline_s * 1000;
			return;
		}
}

int conn_guard_count(const struct conn_guard *g)
{
	return g ? g->nconns : 0;
}

void conn_guard_free(struct conn_guard *g)
{
	struct conn_guard_conn *c, *next;

	if (!g)
		return;
	for (c = g->conns; c; c = next) {
		next = c->next;
		bufferevent_decref(c->bev);
		free(c);
	}
	if (g->sweep)
		event_free(g->sweep);
	if (g->settle)
		event_free(g->settle);
	free(g);
}

int conn_guard_bind(struct event_base *base, struct evhttp *http, const char *addr,
		    const char *who, const char *key)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	struct evconnlistener *lev;
	unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE;

	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) < 0) {
		log_error(who, "%s \"%s\": not an address:port; not starting", key, addr);
		return -1;
	}
	lev = evconnlistener_new_bind(base, NULL, NULL, flags, -1, (struct sockaddr *)&ss, sslen);
	if (!lev) {
		log_error(who, "cannot listen on %s %s: %s; not starting", key, addr,
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		return -1;
	}
	if (!evhttp_bind_listener(http, lev)) {
		log_error(who, "%s %s: cannot attach the HTTP server", key, addr);
		evconnlistener_free(lev);
		return -1;
	}
	return 0;
}
