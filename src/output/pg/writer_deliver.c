/*
 * writer_deliver.c: what a writer thread does with each batch, and its
 * main loop.
 *
 * DESIGN
 * ------
 * A batch goes to PostgreSQL when the writer is connected and nothing older
 * waits in its spool; one attempt (writer.c's transaction, bisected around
 * rows PostgreSQL refuses) either commits it, or stops at a failure that is
 * not the rows' fault: the connection is gone, the database refuses writes
 * (read-only, a revoked privilege, a renamed column, a full disk, ...), or
 * a statement ran past writer.statement_timeout_ms (writer_pq.c). Either
 * way what is left of the batch goes to the spool at once and is acked
 * from there: the events are fine, the database is not. A lost connection
 * is dropped and made again; after a refusal the connection is kept and
 * the spool's oldest frame is tried again after the backoff.
 *
 * The spool (spool.h) is this writer's own stream of fsync'ed segments.
 * While PostgreSQL is away every batch goes there and is acked once it is
 * durable, so acks keep flowing during an outage; attempts to reconnect or
 * to write again follow a capped, jittered exponential backoff
 * (writer.retry_initial_ms .. retry_max_ms) and never hold up the spooling
 * (connecting is stepped between batches). Once PostgreSQL takes writes,
 * the writer replays its stream frame by frame — before any newer batch, a
 * held one included — and the spool deletes each segment once its frames have
 * committed; a start with segments left by an earlier run replays them the
 * same way. Events of one mg_id always reach this writer, so they reach the
 * table in arrival order. When the spool is full (spool.max_bytes) or its
 * write fails (ENOSPC, EIO), the batch stays held and unacked: the queue
 * fills and the loop stops reading (backpressure); the writer keeps
 * retrying and resumes by itself. Each change of what the writer does with
 * batches (enum writer_state) is logged once.
 *
 * A replayed frame is deleted only when every record in it is committed or
 * dead-lettered. A record PostgreSQL refuses (or the merge sets aside) when
 * the dead-letter file cannot take it has no client left to resend it, so
 * the frame stays and is replayed again after the backoff (unrecorded_tries)
 * — the rows it committed merge again unchanged — and newer frames wait
 * behind it, in order.
 *
 * Shutdown: with the queue closed the writer drains it the same way; after
 * writer.drain_timeout_s it stops trying PostgreSQL and spools what is left.
 * Only a batch the spool also refuses after the deadline goes unacked (its
 * clients resend); it is logged.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ack.h"
#include "log.h"
#include "queue.h"
#include "record.h"
#include "spool.h"
#include "stats.h"
#include "writer_private.h"

/* How long an idle writer sleeps on its empty queue before it looks at its
 * connection, its spool and the drain deadline again. */
#define WRITER_IDLE_MS 100
/* ... and how long at most while a connection attempt is in progress. */
#define WRITER_CONNECTING_MS 10

/* ---- delivery states -------------------------------------------------- */

static const char *const writer_state_names[WRITER_STATE_COUNT] = {
	[WRITER_STATE_DIRECT] = "writing to PostgreSQL",
	[WRITER_STATE_SPOOLING] = "spooling",
	[WRITER_STATE_REPLAYING] = "replaying the spool",
	[WRITER_STATE_HOLD_SPOOL_FULL] = "holding: spool full",
	[WRITER_STATE_HOLD_SPOOL_ERROR] = "holding: spool write failed",
};

/* What operators see of each state (the writer_state gauge, /readyz). */
static const enum stats_writer_state writer_state_public[WRITER_STATE_COUNT] = {
	[WRITER_STATE_DIRECT] = STATS_WRITER_WRITING,
	[WRITER_STATE_SPOOLING] = STATS_WRITER_SPOOLING,
	[WRITER_STATE_REPLAYING] = STATS_WRITER_REPLAYING,
	[WRITER_STATE_HOLD_SPOOL_FULL] = STATS_WRITER_HOLDING,
	[WRITER_STATE_HOLD_SPOOL_ERROR] = STATS_WRITER_HOLDING,
};

void writer_publish(struct writer *w)
{
	enum stats_writer_state st = writer_state_public[w->state];

	/* Not connected yet at start: batches would go to the spool. */
	if (!w->pg && st == STATS_WRITER_WRITING)
		st = STATS_WRITER_SPOOLING;
	if (w->stalled)
		st = STATS_WRITER_STALLED;
	stats_writer_publish(w->id, st, w->pg && w->up);
}

/* Enter state S; log WHY at LVL only when that is a change. */
static void writer_set_state(struct writer *w, enum writer_state s, enum log_level lvl,
			     const char *why)
{
	if (w->state == s)
		return;
	if (log_enabled(lvl))
		log_write(lvl, "writer", "writer=%d: %s -> %s: %s", w->id,
			  writer_state_names[w->state], writer_state_names[s], why);
	w->state = s;
	w->hold_attempts = 0;
	writer_publish(w);
}

static void writer_publish_spool(struct writer *w)
{
	stats_set_gauge(STAT_spool_bytes, (int64_t)spool_bytes(w->spool));
}

/* ---- timing ----------------------------------------------------------- */

bool writer_draining_expired(struct writer *w)
{
	int64_t now = clock_mono_ns();

	if (!w->drain_deadline_ns && queue_is_closed(w->q))
		w->drain_deadline_ns = now +
			(int64_t)atomic_load(&w->drain_timeout_s) * 1000000000LL;
	return w->drain_deadline_ns && now >= w->drain_deadline_ns;
}

/* Backoff after the ATTEMPT-th consecutive failure (0-based): retry_initial_ms
 * doubled per attempt, capped at retry_max_ms, jittered to 50..100%. */
static long writer_backoff_ms(struct writer *w, unsigned attempt)
{
	long cap = atomic_load(&w->retry_max_ms);
	long ms = atomic_load(&w->retry_initial_ms);
	unsigned short r = 0;

	for (unsigned i = 0; i < attempt && ms < cap; i++)
		ms *= 2;
	if (ms > cap)
		ms = cap;
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = 0x8000;
	return ms / 2 + (ms / 2) * r / 65535;
}

/* Milliseconds until the next attempt to connect or write is due (0: now). */
static long writer_until_try_ms(struct writer *w)
{
	int64_t left = w->next_try_ns - clock_mono_ns();

	return left > 0 ? (long)(left / 1000000) + 1 : 0;
}

/* Another failed attempt: the next one after the backoff. */
static void writer_failed_attempt(struct writer *w)
{
	w->next_try_ns = clock_mono_ns() +
		writer_backoff_ms(w, w->failures++) * 1000000LL;
}

/* Pause before retrying a held batch: the backoff for this hold, cut short
 * by a due reconnection (which may be what frees us), by shutdown (the
 * queue closing) and then by the drain deadline. */
static void writer_hold_pause(struct writer *w)
{
	long ms = writer_backoff_ms(w, w->hold_attempts++);
	struct timespec ts;

	if (!w->pg && writer_until_try_ms(w) < ms)
		ms = writer_until_try_ms(w);
	atomic_store(&w->progress_ns, clock_mono_ns());
	(void)writer_draining_expired(w); /* sets the drain deadline once the queue closed */
	if (!w->drain_deadline_ns) {
		/* Never reaches SIZE_MAX events: returns at the timeout or on close. */
		queue_wait(w->q, SIZE_MAX, (int)ms);
		return;
	}
	if (w->drain_deadline_ns) {
		int64_t left = (w->drain_deadline_ns - clock_mono_ns()) / 1000000;

		if (left < ms)
			ms = left > 0 ? (long)left : 0;
	}
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The spool refused a batch: the state says so until it takes one again. */
static bool writer_holding(const struct writer *w)
{
	return w->state == WRITER_STATE_HOLD_SPOOL_FULL ||
	       w->state == WRITER_STATE_HOLD_SPOOL_ERROR;
}

/* Connect when disconnected and the backoff allows it, or advance the
 * attempt in progress by waiting up to WAIT_MS; never after the drain
 * deadline (from then on everything goes to the spool). */
static void writer_maybe_connect(struct writer *w, int wait_ms)
{
	int rc;

	if (w->pg || writer_draining_expired(w) || (!w->connecting && writer_until_try_ms(w) > 0))
		return;
	rc = writer_connect(w, wait_ms, w->failures == 0);
	if (rc == 1 && w->failures > 1)
		log_debug("writer", "writer=%d: reconnected after %u failed attempts", w->id,
			  w->failures);
	if (rc >= 0)
		return;
	writer_failed_attempt(w);
	if (!w->fault_ns)
		w->fault_ns = clock_mono_ns();
	if (!writer_holding(w))
		writer_set_state(w, WRITER_STATE_SPOOLING, LOG_LEVEL_WARN,
				 "PostgreSQL is unreachable; batches go to the spool and are acked "
				 "once fsync'ed, reconnecting with backoff");
}

/* A failure that means the connection is gone, not that the batch is bad:
 * the socket is dead, a connection exception (08), or the server is
 * shutting down or cannot take connections now (57P01..57P03). */
static bool writer_connection_lost(struct writer *w, const struct writer_err *e)
{
	return !w->pg || PQstatus(w->pg) != CONNECTION_OK || strncmp(e->sqlstate, "08", 2) == 0 ||
	       strncmp(e->sqlstate, "57P", 3) == 0;
}

/* PostgreSQL failed us for a reason that is not the rows' (E): spool from
 * now on; drop a lost connection; try again after the backoff. */
static void writer_lost(struct writer *w, const struct writer_err *e)
{
	bool lost = writer_connection_lost(w, e);
	char why[800];

	if (lost)
		writer_disconnect(w);
	writer_failed_attempt(w);
	if (!w->fault_ns)
		w->fault_ns = clock_mono_ns();
	snprintf(why, sizeof(why), "%s (%s%s%s%.400s); batches go to the spool and are acked "
		 "once fsync'ed, %s with backoff", lost ? "PostgreSQL connection lost" :
		 "PostgreSQL refuses writes", e->sqlstate[0] ? "SQLSTATE " : "", e->sqlstate,
		 e->sqlstate[0] ? ": " : "", e->message,
		 lost ? "reconnecting" : "trying again");
	if (!writer_holding(w))
		writer_set_state(w, WRITER_STATE_SPOOLING, LOG_LEVEL_WARN, why);
}

/* PostgreSQL took a write: the outage, if any, is over. */
static void writer_recovered(struct writer *w)
{
	w->failures = 0;
	w->next_try_ns = 0;
	w->fault_ns = 0;
}

/* ---- writing a batch -------------------------------------------------- */

enum writer_stop {
	WRITER_STOP_NONE = 0,  /* everything done */
	WRITER_STOP_LOST,      /* PostgreSQL is away or refuses writes: spool the rest */
	WRITER_STOP_UNRECORDED, /* a row set aside could not be dead-lettered: keep it */
	WRITER_STOP_COUNT /* number of reasons; not a reason */
};

/* A row of the batch was neither merged nor dead-lettered, and no client
 * holds it (writer_dead_letter): stop short, so a replayed spool frame is
 * kept, and try again after the backoff. */
static void writer_unrecorded(struct writer *w, enum writer_stop *stop)
{
	*stop = WRITER_STOP_UNRECORDED;
	w->next_try_ns = clock_mono_ns() +
		writer_backoff_ms(w, w->unrecorded_tries++) * 1000000LL;
}

/*
 * One attempt to commit RECS[0..N), isolating rows PostgreSQL refuses
 * (bisection: the halves commit in order, so arrival order holds). Returns
 * how many leading records are done — committed, or dead-lettered with the
 * server's error — and sets *STOP to why it stopped short of N.
 */
static size_t writer_write(struct writer *w, struct record **recs, size_t n,
			   enum writer_stop *stop)
{
	struct writer_err e = { .sqlstate = "" }; /* some failures set only the message */
	enum write_verdict v;
	int64_t t0 = clock_mono_ns();
	size_t half, done;

	*stop = WRITER_STOP_NONE;
	v = writer_transaction(w, recs, n, &e);
	if (v == WRITE_OK) {
		int64_t took = clock_mono_ns() - t0;

		writer_recovered(w);
		log_debug("writer", "writer=%d: %zu events committed in %.1f ms (%zu queued)", w->id,
			  n, (double)took / 1e6, queue_events(w->q));
		stats_observe_ns(STAT_batch_commit_seconds, took);
		if (writer_committed(w, recs, n) < 0)
			writer_unrecorded(w, stop);
		return n;
	}
	if (v == WRITE_REJECT)
		writer_recovered(w);
	if (v == WRITE_REJECT && n == 1) {
		if (writer_dead_letter(w, recs[0], RECORD_REASON_REFUSED, e.message, e.field,
				       e.sqlstate) == 0)
			return 1;
		writer_unrecorded(w, stop);
		return 0;
	}
	if (v == WRITE_REJECT) {
		half = n / 2;
		done = writer_write(w, recs, half, stop);
		if (done < half || *stop != WRITER_STOP_NONE)
			return done; /* the second half would reset *STOP */
		return half + writer_write(w, recs + half, n - half, stop);
	}
	writer_lost(w, &e);
	*stop = WRITER_STOP_LOST;
	return 0;
}

/* Records RECS[0..N) are durable: release their acks and free them. */
static void writer_release(struct writer *w, struct record **recs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (recs[i]->ack)
			ack_release(w->ackq, recs[i]->ack);
		record_free(recs[i]);
	}
}

/* Write RECS[0..N) as consecutive transactions of at most
 * WRITER_MAX_PASSES merge passes each, in order, releasing each one's
 * records as it commits. Returns how many leading records are done (and
 * released); *STOP says why it stopped short of N. */
static size_t writer_write_parts(struct writer *w, struct record **recs, size_t n,
				 enum writer_stop *stop)
{
	size_t off = 0;

	*stop = WRITER_STOP_NONE;
	while (off < n && *stop == WRITER_STOP_NONE) {
		size_t k = writer_pass_prefix(w, recs + off, n - off, WRITER_MAX_PASSES);
		size_t done = writer_write(w, recs + off, k, stop);

		writer_release(w, recs + off, done);
		off += done;
		if (done < k)
			break;
	}
	return off;
}

/* Append RECS[0..N) to the spool; true when they are durable. */
static bool writer_spool(struct writer *w, struct record **recs, size_t n)
{
	enum spool_status st = spool_stream_append(w->stream, recs, n);
	char why[300];

	if (st == SPOOL_OK) {
		bool was_held = writer_holding(w);

		writer_publish_spool(w);
		writer_set_state(w, WRITER_STATE_SPOOLING, LOG_LEVEL_INFO, was_held ?
				 "the spool accepts batches again; acking resumes" :
				 writer_draining_expired(w) ?
				 "drain deadline passed: the rest of the queue goes to the spool" :
				 "PostgreSQL is not connected yet; batches go to the spool");
		return true;
	}
	if (st == SPOOL_FULL) {
		snprintf(why, sizeof(why), "%llu bytes spooled, a batch of %zu would pass "
			 "spool.max_bytes; not acking, reading stops when the queue fills, "
			 "resuming once PostgreSQL is back",
			 (unsigned long long)spool_bytes(w->spool), n);
		writer_set_state(w, WRITER_STATE_HOLD_SPOOL_FULL, LOG_LEVEL_ERROR, why);
	} else {
		snprintf(why, sizeof(why), "cannot write to the spool (%s); not acking, reading "
			 "stops when the queue fills, retrying with backoff",
			 strerror(spool_stream_errno(w->stream)));
		writer_set_state(w, WRITER_STATE_HOLD_SPOOL_ERROR, LOG_LEVEL_ERROR, why);
	}
	return false;
}

/*
 * Make the held batch (w->batch[0..w->held)) durable: into PostgreSQL when
 * connected and nothing older waits in the spool, else into the spool. What
 * becomes durable is acked and freed; the rest stays held (then pause).
 * After the drain deadline a batch the spool refuses is given up: no ack,
 * so its clients resend.
 */
static void writer_deliver(struct writer *w)
{
	struct record **recs = w->batch;
	size_t n = w->held, done = 0;
	enum writer_stop stop = WRITER_STOP_LOST;

	if (w->pg && !spool_stream_pending(w->stream) && !writer_draining_expired(w) &&
	    (w->state == WRITER_STATE_DIRECT || writer_until_try_ms(w) == 0)) {
		done = writer_write_parts(w, recs, n, &stop);
		if (done == n) {
			writer_set_state(w, WRITER_STATE_DIRECT, LOG_LEVEL_INFO,
					 "PostgreSQL takes batches again");
			goto keep_rest;
		}
	}
	if (writer_spool(w, recs + done, n - done)) {
		writer_release(w, recs + done, n - done);
		done = n;
	} else if (writer_draining_expired(w)) {
		log_error("writer", "writer=%d: drain timeout: %zu events could be written "
			  "neither to PostgreSQL nor to the spool; they were not acknowledged, "
			  "so their clients resend them", w->id, n - done);
		for (size_t i = done; i < n; i++)
			if (recs[i]->ack) /* completes it as failed: no ack, the client resends */
				atomic_store(&recs[i]->ack->failed, true);
		writer_release(w, recs + done, n - done);
		done = n;
	}
keep_rest:
	if (done > 0 && done < n)
		memmove(recs, recs + done, (n - done) * sizeof(*recs));
	w->held = n - done;
	if (w->held > 0)
		writer_hold_pause(w);
}

/* Make room for batches of MAX (a reload may raise batch_max_events);
 * the capacity there is after it. */
static size_t writer_reserve(struct writer *w, size_t max)
{
	if (max <= w->cap)
		return max;
	if (writer_grow(w, max) < 0) {
		log_warn("writer", "writer=%d: out of memory for batches of %zu; keeping %zu",
			 w->id, max, w->cap);
		return w->cap;
	}
	return max;
}

/* ---- replay ----------------------------------------------------------- */

/* Commit RECS[0..N) of a spool frame in slices the batch arrays can hold;
 * every record is freed. True when all of them are done (committed or
 * dead-lettered); false keeps the frame for another try. */
static bool writer_replay_frame(struct writer *w, struct record **recs, size_t n)
{
	enum writer_stop stop = WRITER_STOP_NONE;
	size_t off = 0;

	w->replaying = true;
	while (off < n && stop == WRITER_STOP_NONE) {
		size_t k = writer_reserve(w, n - off), done;

		done = writer_write_parts(w, recs + off, k, &stop);
		off += done;
	}
	w->replaying = false;
	for (size_t i = off; i < n; i++)
		record_free(recs[i]);
	return off == n && stop == WRITER_STOP_NONE;
}

/* Replay the oldest spooled frame into PostgreSQL; delete it once committed. */
static void writer_replay_one(struct writer *w)
{
	struct record **recs;
	size_t n;
	int rc = spool_stream_next(w->stream, &recs, &n);

	/* The spool cannot be read or a replayed segment deleted now: try
	 * again after the backoff; meanwhile new batches go to the spool. */
	if (rc < 0) {
		writer_failed_attempt(w);
		return;
	}
	if (rc == 0)
		return;
	if (w->state != WRITER_STATE_REPLAYING)
		w->replayed = 0;
	if (!writer_replay_frame(w, recs, n))
		return; /* refused for now: the frame is read again after the backoff */
	w->unrecorded_tries = 0;
	if (w->state != WRITER_STATE_REPLAYING) {
		char why[160];

		snprintf(why, sizeof(why), "PostgreSQL takes writes: replaying %llu spooled bytes "
			 "before newer events", (unsigned long long)spool_bytes(w->spool));
		writer_set_state(w, WRITER_STATE_REPLAYING, LOG_LEVEL_INFO, why);
	}
	w->replayed += n;
	if (spool_stream_commit(w->stream) < 0)
		writer_failed_attempt(w);
	writer_publish_spool(w);
	if (!spool_stream_pending(w->stream)) {
		char why[120];

		snprintf(why, sizeof(why), "spool replayed (%llu events)",
			 (unsigned long long)w->replayed);
		writer_set_state(w, WRITER_STATE_DIRECT, LOG_LEVEL_INFO, why);
	}
}

/* ---- the thread ------------------------------------------------------- */

/* Wait for and take the next batch from the queue into w->batch: at once
 * when events are queued (group commit, see queue.c), after lingering up to
 * writer.flush_interval_ms for a full batch when that is set. */
static void writer_take(struct writer *w)
{
	size_t max = writer_reserve(w, (size_t)atomic_load(&w->batch_max));
	long wait = WRITER_IDLE_MS;
	int linger = atomic_load(&w->flush_ms);

	/* Wake up in time for the next attempt to connect or replay, and
	 * often while a connection attempt is in progress. */
	if ((!w->pg || spool_stream_pending(w->stream)) && writer_until_try_ms(w) < wait)
		wait = writer_until_try_ms(w);
	if (w->connecting && wait > WRITER_CONNECTING_MS)
		wait = WRITER_CONNECTING_MS;
	if (linger > 0) {
		if (queue_wait(w->q, 1, (int)wait) == 0) {
			w->held = 0;
			return;
		}
		queue_wait(w->q, max, linger);
		wait = 0;
	}
	w->held = queue_pop_batch(w->q, w->batch, max, (int)wait);
}

/* The first connection attempt (no outage known) is still in progress:
 * batches wait for it rather than take a detour through the spool. */
static bool writer_first_connect_pending(struct writer *w)
{
	return !w->pg && w->connecting && w->state == WRITER_STATE_DIRECT &&
	       !writer_draining_expired(w);
}

/*
 * Order of work, every turn: reconnect when due; while connected, replay the
 * spool frame by frame before anything newer (a held batch included); then
 * deliver the held batch, or take a new one from the queue.
 */
void *writer_main(void *arg)
{
	struct writer *w = arg;

	writer_publish_spool(w);
	writer_publish(w);
	/* Connect up front so a bad conninfo shows at start; failures retry later. */
	while (writer_connect(w, WRITER_IDLE_MS, true) == 0 && !queue_events(w->q))
		atomic_store(&w->progress_ns, clock_mono_ns());
	if (!w->pg && !w->connecting) {
		writer_failed_attempt(w);
		w->fault_ns = clock_mono_ns();
		writer_set_state(w, WRITER_STATE_SPOOLING, LOG_LEVEL_WARN,
				 "PostgreSQL is unreachable at start; batches go to the spool "
				 "and are acked once fsync'ed, reconnecting with backoff");
	}
	for (;;) {
		atomic_store(&w->progress_ns, clock_mono_ns());
		writer_maybe_connect(w, 0);
		if (w->pg && spool_stream_pending(w->stream) && !writer_draining_expired(w) &&
		    writer_until_try_ms(w) == 0) {
			writer_replay_one(w);
			continue;
		}
		if (w->held == 0)
			writer_take(w);
		if (w->held > 0 && writer_first_connect_pending(w))
			writer_maybe_connect(w, WRITER_CONNECTING_MS);
		else if (w->held > 0)
			writer_deliver(w);
		else if (queue_closed_and_empty(w->q))
			break;
	}
	writer_disconnect(w);
	atomic_store(&w->done, true);
	ackq_wake(w->ackq);
	return NULL;
}
