/*
 * admin: the operators' HTTP endpoint on admin.http (libevent's evhttp).
 *
 *   GET /         the status page (with /status.js, /status.css; admin_page.h)
 *   GET /metrics  Prometheus text exposition 0.0.4 of every metric
 *   GET /stats    the same figures as one JSON object (plus version and
 *                 log_recent, the last warnings)
 *   GET /healthz  200 while the event loop runs (it answers from the loop)
 *   GET /readyz   200 while PostgreSQL is up and no queue is full, else 503
 *                 with the reason in the body
 *
 * Runs on the loop's event_base, so every handler runs on the loop thread
 * and reads figures through stats_snapshot. Loop thread only.
 */
#ifndef MI_ADMIN_H
#define MI_ADMIN_H

struct event_base;
struct queue;
struct admin;

/*
 * Serve on ADDR ("host:port", "[::1]:port") on BASE. QUEUES (NQUEUES of
 * them, owned by the caller and outliving the admin) are what /readyz
 * checks for room. NULL after logging why (bad address, port in use).
 */
struct admin *admin_start(struct event_base *base, const char *addr, struct queue **queues,
			  int nqueues) __attribute__((warn_unused_result));

/* The daemon is draining: /readyz answers 503 from now on. */
void admin_set_stopping(struct admin *a);

/* Close the listening socket and free A (NULL is fine). */
void admin_free(struct admin *a);

#endif
