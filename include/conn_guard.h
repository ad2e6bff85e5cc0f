/*
 * conn_guard: an evhttp server's listening sockets and the bounds on its
 * connections that evhttp (libevent 2.1) does not have (conn_guard.c): at
 * most MAX_CONNS open at once (one past it is closed as soon as it is set
 * up, and counted), and, with a deadline, a request's headers due within
 * DEADLINE_S of the connection opening or of the previous answer. Used by
 * the admin endpoint and the HTTP input. Loop thread only.
 */
#ifndef MI_CONN_GUARD_H
#define MI_CONN_GUARD_H

#include "stats.h"

struct bufferevent;
struct event_base;
struct evhttp;
struct evhttp_request;
struct conn_guard;

/* Makes the bufferevent of a new connection (NULL: a plain socket one). */
typedef struct bufferevent *conn_guard_bev_fn(struct event_base *base, void *arg);

struct conn_guard_opts {
	const char *who;             /* "admin", "http": log lines */
	int max_conns;               /* connections open at once */
	int deadline_s;              /* 0: no header deadline */
	enum stats_counter refused;  /* counts the connections closed over the cap */
	conn_guard_bev_fn *make_bev; /* or NULL */
	void *make_bev_arg;
};

/* Guard every connection HTTP accepts from now on (it takes evhttp's
 * bufferevent callback). NULL when out of memory. */
struct conn_guard *conn_guard_new(struct event_base *base, struct evhttp *http,
				  const struct conn_guard_opts *opts)
	__attribute__((warn_unused_result));

/* REQ was answered: its connection's next request gets a new deadline. */
void conn_guard_request(struct conn_guard *g, struct evhttp_request *req);

/* Connections open now (over-cap ones not counted). */
int conn_guard_count(const struct conn_guard *g);

/* After evhttp_free. */
void conn_guard_free(struct conn_guard *g);

/* Listen on ADDR ("host:port") for HTTP; KEY names the setting in log
 * lines ("admin.http"), WHO the module. 0, or -1 after logging why. */
int conn_guard_bind(struct event_base *base, struct evhttp *http, const char *addr,
		    const char *who, const char *key) __attribute__((warn_unused_result));

#endif
