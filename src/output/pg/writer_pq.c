/*
 * writer_pq.c: every exchange a writer has with PostgreSQL, each bounded
 * by a deadline.
 *
 * DESIGN
 * ------
 * libpq's blocking calls wait as long as the server does: a SIGSTOPped
 * server, a lock held by a migration or a path that drops packets would
 * hold the writer, and every client's acks, for as long as the fault lasts.
 * So the connection runs in nonblocking mode and the writer waits on its
 * socket with poll(2) itself:
 *
 *   - connecting (PQconnectStartParams/PQconnectPoll) is stepped from the
 *     writer's loop between batches, so batches keep going to the spool
 *     while a connection attempt waits for an unresponsive server; the
 *     attempt is given up after connect_timeout (conninfo, default 10 s);
 *   - each statement, COPY data and COMMIT included, must finish within
 *     writer.statement_timeout_ms. Past half of it the writer reports
 *     itself stalled (logged once, /readyz 503); past all of it the
 *     statement is cancelled (PQcancel, on a short-lived thread because
 *     PQcancel itself blocks on a stuck server) and the connection dropped,
 *     which the caller treats like a lost connection.
 *
 * The server also gets SET LOCAL statement_timeout (writer.c) so that it
 * ends a lock wait itself, cleanly, before the client-side deadline.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"
#include "writer_private.h"

/* How long after writer.statement_timeout_ms the writer gives up on a
 * statement itself: PostgreSQL's own statement_timeout (SET LOCAL) ends a
 * lock wait cleanly first; only a server that does not answer at all gets
 * here. */
#define WRITER_PQ_GRACE_MS 1000

/* Longest single poll: how soon a waiting writer sees SIGTERM's drain
 * deadline pass. */
#define WRITER_PQ_TICK_MS 100

/* Cancel requests still waiting for a stuck server; beyond the cap a new
 * one is not sent (the connection is dropped all the same). */
#define WRITER_PQ_MAX_CANCELS 8
static atomic_int writer_pq_cancels; /* any writer thread; relaxed counter */

/* ---- statements --------------------------------------------------------- */

/* Arm the deadline of statement SQL, about to be sent; its first words
 * name it in logs. */
static void writer_pq_arm(struct writer *w, const char *sql)
{
	int64_t now = clock_mono_ns();
	int64_t ms = atomic_load(&w->statement_timeout_ms);
	size_t n = strlen(sql);

	if (n >= sizeof(w->stmt_what)) {
		n = sizeof(w->stmt_what) - 4;
		while (n > 0 && sql[n] != ' ')
			n--;
	}
	snprintf(w->stmt_what, sizeof(w->stmt_what), "%.*s%s", (int)n, sql,
		 sql[n] ? "..." : "");
	w->stmt_start_ns = now;
	w->stmt_half_ns = now + ms * 500000LL;
	w->stmt_deadline_ns = now + (ms + WRITER_PQ_GRACE_MS) * 1000000LL;
}

/* Logged at warn when it starts an episode; repeats while PostgreSQL is
 * already known to be in trouble (a retry meeting the same lock) at debug. */
static void writer_pq_stall_begins(struct writer *w, int64_t now)
{
	w->stalled = true;
	writer_publish(w);
	log_at_(w->fault_ns ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN, "writer",
		"writer=%d: a statement (%s) has been running for %.1f s "
		 "(writer.statement_timeout_ms %d): PostgreSQL is stuck or a lock is held; "
		 "it is cancelled at the deadline", w->id, w->stmt_what,
		 (double)(now - w->stmt_start_ns) / 1e9, atomic_load(&w->statement_timeout_ms));
}

/* The statement finished: end a stall, logging it when the statement
 * succeeded (a failure is logged by what follows it). */
static void writer_pq_stall_ends(struct writer *w, bool completed)
{
	if (!w->stalled)
		return;
	w->stalled = false;
	if (completed && !w->fault_ns)
		log_info("writer", "writer=%d: the statement (%s) completed after %.1f s; stall over",
			 w->id, w->stmt_what,
			 (double)(clock_mono_ns() - w->stmt_start_ns) / 1e9);
	writer_publish(w);
}

/*
 * Wait until the socket is readable (or writable, with WRITE) or the
 * statement's deadline passes, marking the stall at half of it.
 * 1: ready, 0: deadline, -1: poll failed.
 */
static int writer_pq_wait(struct writer *w, bool write)
{
	int64_t half = w->stmt_half_ns;
	struct pollfd pfd = { .fd = PQsocket(w->pg), .events = POLLIN | (write ? POLLOUT : 0) };

	for (;;) {
		int64_t now = clock_mono_ns();
		int64_t until = !w->stalled && now < half ? half : w->stmt_deadline_ns;
		int rc;

		/* SIGTERM's drain deadline also ends a statement: what is left of
		 * the batch goes to the spool. */
		if (now >= w->stmt_deadline_ns || writer_draining_expired(w))
			return 0;
		if (!w->stalled && now >= half) {
			writer_pq_stall_begins(w, now);
			continue;
		}
		if (until - now > WRITER_PQ_TICK_MS * 1000000LL)
			until = now + WRITER_PQ_TICK_MS * 1000000LL;
		rc = poll(&pfd, 1, (int)((until - now) / 1000000) + 1);
		if (rc > 0)
			return 1;
		if (rc < 0 && errno != EINTR)
			return -1;
	}
}

static void *writer_pq_cancel_main(void *arg)
{
	PGcancel *c = arg;
	char err[256];

	/* Blocks until the server answers; the writer does not wait for it. */
	if (!PQcancel(c, err, sizeof(err)))
		log_debug("writer", "cancel request failed: %s", err);
	PQfreeCancel(c);
	atomic_fetch_sub(&writer_pq_cancels, 1);
	return NULL;
}

/* Ask the server to cancel what runs on w->pg, without waiting for it. */
static void writer_pq_cancel(struct writer *w)
{
	PGcancel *c = PQgetCancel(w->pg);
	pthread_attr_t attr;
	pthread_t t;
	int rc = -1;

	if (!c)
		return;
	if (atomic_fetch_add(&writer_pq_cancels, 1) >= WRITER_PQ_MAX_CANCELS) {
		log_warn("writer", "writer=%d: no cancel request sent (too many pending)", w->id);
	} else if ((rc = pthread_attr_init(&attr)) == 0) {
		rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (rc == 0)
			rc = pthread_create(&t, &attr, writer_pq_cancel_main, c);
		pthread_attr_destroy(&attr);
	}
	if (rc > 0)
		log_warn("writer", "writer=%d: no cancel request sent (no thread for it: %s)",
			 w->id, strerror(rc));
	if (rc != 0) {
		atomic_fetch_sub(&writer_pq_cancels, 1);
		PQfreeCancel(c);
	}
}

/* The statement missed its deadline: cancel it and drop the connection. */
static void writer_pq_give_up(struct writer *w, struct writer_err *e)
{
	int64_t now = clock_mono_ns();
	double took = (double)(now - w->stmt_start_ns) / 1e9;
	bool draining = w->drain_deadline_ns && now >= w->drain_deadline_ns;

	snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", "");
	e->field[0] = '\0';
	snprintf(e->message, sizeof(e->message), "the statement (%s) ran %.1f s, past %s; "
		 "cancelled and disconnected", w->stmt_what, took,
		 draining ? "the drain deadline" : "writer.statement_timeout_ms");
	writer_pq_cancel(w);
	w->stalled = false;
	writer_disconnect(w);
}

/* Flush what libpq holds for the server, within the deadline. 0 or -1. */
static int writer_pq_flush(struct writer *w)
{
	int rc;

	while ((rc = PQflush(w->pg)) == 1) {
		if (writer_pq_wait(w, true) <= 0)
			return -1;
		/* The server may be talking (an error) while we write. */
		if (!PQconsumeInput(w->pg))
			return -1;
	}
	return rc;
}

/* Wait for the next result of the statement in flight. NULL: no more
 * results, or the deadline passed (*LATE set) or the connection failed. */
static PGresult *writer_pq_next(struct writer *w, bool *late)
{
	while (PQisBusy(w->pg)) {
		int rc = writer_pq_wait(w, false);

		if (rc == 0)
			*late = true;
		if (rc <= 0 || !PQconsumeInput(w->pg))
			return NULL;
	}
	return PQgetResult(w->pg);
}

static bool writer_pq_failed(const PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	return st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_COPY_IN;
}

/* Collect the results of the statement in flight: the first failed one,
 * else the last (COPY IN stops there: its data comes next). */
static enum write_verdict writer_pq_collect(struct writer *w, struct writer_err *e,
					    PGresult **out)
{
	PGresult *keep = NULL, *res;
	bool late = false;

	if (writer_pq_flush(w) < 0) {
		late = PQstatus(w->pg) == CONNECTION_OK;
	} else {
		while ((res = writer_pq_next(w, &late))) {
			bool copy = PQresultStatus(res) == PGRES_COPY_IN;

			if (keep && !writer_pq_failed(keep)) {
				PQclear(keep);
				keep = NULL;
			}
			if (!keep)
				keep = res;
			else
				PQclear(res);
			if (copy)
				break;
		}
	}
	if (late) {
		PQclear(keep);
		writer_pq_give_up(w, e);
		return WRITE_RETRY;
	}
	writer_pq_stall_ends(w, keep && !writer_pq_failed(keep));
	if (!keep || writer_pq_failed(keep)) {
		enum write_verdict v = writer_classify(w, keep, e);

		PQclear(keep);
		return v;
	}
	if (out)
		*out = keep;
	else
		PQclear(keep);
	return WRITE_OK;
}

enum write_verdict writer_pq_exec(struct writer *w, const char *sql, int nparams,
				  const char *const *params, struct writer_err *e,
				  PGresult **out)
{
	int sent;

	if (!w->pg) {
		snprintf(e->message, sizeof(e->message), "not connected");
		e->sqlstate[0] = e->field[0] = '\0';
		return WRITE_RETRY;
	}
	writer_pq_arm(w, sql);
	sent = nparams < 0 ? PQsendQuery(w->pg, sql) :
	       PQsendQueryParams(w->pg, sql, nparams, NULL, params, NULL, NULL, 0);
	if (!sent)
		return writer_classify(w, NULL, e);
	return writer_pq_collect(w, e, out);
}

/* ---- COPY data ------------------------------------------------------------ */

int writer_pq_put_copy(struct writer *w, const char *buf, size_t len)
{
	int rc;

	while ((rc = PQputCopyData(w->pg, buf, (int)len)) == 0)
		if (writer_pq_wait(w, true) <= 0 || !PQconsumeInput(w->pg))
			return -1;
	/* Bound what libpq buffers: the server must keep up, within the deadline. */
	return rc == 1 && writer_pq_flush(w) == 0 ? 0 : -1;
}

enum write_verdict writer_pq_end_copy(struct writer *w, const char *errmsg,
				      struct writer_err *e)
{
	int rc;

	while ((rc = PQputCopyEnd(w->pg, errmsg)) == 0)
		if (writer_pq_wait(w, true) <= 0 || !PQconsumeInput(w->pg))
			break;
	/* Still connected but the end could not be sent: a deadline passed. */
	if (rc != 1 && PQstatus(w->pg) == CONNECTION_OK) {
		writer_pq_give_up(w, e);
		return WRITE_RETRY;
	}
	return writer_pq_collect(w, e, NULL);
}

void writer_pq_copy_started(struct writer *w)
{
	writer_pq_arm(w, "COPY data");
}

/* ---- connecting ------------------------------------------------------------ */

/* Seconds the pending attempt may take: connect_timeout as libpq parsed it. */
static int writer_pq_connect_timeout(PGconn *c)
{
	PQconninfoOption *opts = PQconninfo(c);
	int s = 10;

	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && atoi(o->val) > 0)
			s = atoi(o->val) < 2 ? 2 : atoi(o->val);
	PQconninfoFree(opts);
	return s;
}

int writer_pq_connect_start(struct writer *w, const char *const *keys,
			    const char *const *vals)
{
	w->connecting = PQconnectStartParams(keys, vals, 1);
	if (!w->connecting || PQstatus(w->connecting) == CONNECTION_BAD)
		return -1;
	w->connect_poll = PGRES_POLLING_WRITING;
	w->connect_deadline_ns = clock_mono_ns() +
		(int64_t)writer_pq_connect_timeout(w->connecting) * 1000000000LL;
	return 0;
}

int writer_pq_connect_step(struct writer *w, int wait_ms)
{
	struct pollfd pfd = { .fd = PQsocket(w->connecting) };
	int64_t left = (w->connect_deadline_ns - clock_mono_ns()) / 1000000;

	if (w->connect_poll == PGRES_POLLING_OK)
		return 1;
	if (w->connect_poll == PGRES_POLLING_FAILED || left <= 0 || pfd.fd < 0)
		return -1;
	pfd.events = w->connect_poll == PGRES_POLLING_READING ? POLLIN : POLLOUT;
	if (poll(&pfd, 1, wait_ms < left ? wait_ms : (int)left) == 0)
		return 0;
	w->connect_poll = PQconnectPoll(w->connecting);
	return w->connect_poll == PGRES_POLLING_OK ? 1 :
	       w->connect_poll == PGRES_POLLING_FAILED ? -1 : 0;
}
