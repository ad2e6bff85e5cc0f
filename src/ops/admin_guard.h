/*
 * admin_guard.h: the admin endpoint's connection cap and header deadline
 * (admin_guard.c), used by admin.c only.
 */
#ifndef MI_ADMIN_GUARD_H
#define MI_ADMIN_GUARD_H

#define ADMIN_GUARD_MAX_CONNS 16   /* admin connections open at once */
#define ADMIN_GUARD_DEADLINE_S 10  /* a request's headers must arrive within this */

struct event_base;
struct evhttp;
struct evhttp_request;
struct admin_guard;

/* Guard every connection HTTP accepts from now on. NULL when out of memory. */
struct admin_guard *admin_guard_new(struct event_base *base, struct evhttp *http)
	__attribute__((warn_unused_result));

/* REQ was answered: its connection's next request gets a new deadline. */
void admin_guard_request(struct admin_guard *g, struct evhttp_request *req);

/* After evhttp_free. */
void admin_guard_free(struct admin_guard *g);

#endif
