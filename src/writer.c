/*
 * writer.c: a thread that moves batches from its queue into PostgreSQL.
 *
 * DESIGN
 * ------
 * Each writer owns one queue and one libpq connection, and nothing else is
 * shared with the loop but the queue, the ack channel and the atomics
 * documented in struct writer. A batch is one transaction:
 *
 *   BEGIN
 *   COPY mi_staging FROM STDIN          -- the batch, text format
 *   SELECT ... FROM mi_staging ...      -- rows that must not be merged:
 *                                          an mg_id owned by another record
 *                                          type, an unknown pass id (when
 *                                          unknown_pass_id: dead_letter)
 *   INSERT INTO mega_customers ...      -- stub rows for new pass ids, in
 *                                          sorted order (writers never deadlock)
 *   INSERT INTO <table> SELECT ... FROM mi_staging WHERE mi_pass = k
 *        ON CONFLICT (mg_id) DO UPDATE  -- once per pass k
 *   COMMIT
 *
 * "Pass" k holds the k-th occurrence of an mg_id inside the batch, so each
 * INSERT sees every id at most once (PostgreSQL refuses to touch a row twice
 * in one statement) and repeated ids merge in arrival order under exactly the
 * same rules as across batches. Values travel only in COPY data and
 * parameters; the SQL text is built once from record_columns[] (writer_sql.c).
 *
 * Outcomes follow a three-way verdict. WRITE_OK: acks are released.
 * WRITE_REJECT (a data or constraint error caused by a row): bisect the
 * batch until the offending rows stand alone, commit the rest and
 * dead-letter those with the server's message and SQLSTATE. WRITE_RETRY
 * splits in two. A connection-level failure (the socket is gone, SQLSTATE
 * class 08, 57P01..57P03) drops the connection and sends the batch to the
 * spool at once; anything else transient (serialization failure, a missing
 * table) keeps the batch held, unacked, and retries it with backoff.
 *
 * The spool (spool.h) is this writer's own stream of fsync'ed segments.
 * While PostgreSQL is away every batch goes there and is acked once it is
 * durable, so acks keep flowing during an outage; reconnection attempts
 * follow a capped, jittered exponential backoff (writer.retry_initial_ms ..
 * retry_max_ms) and never hold up the spooling. Once connected, the writer
 * replays its stream frame by frame — before any newer batch, a held one
 * included — and the spool deletes each segment once its frames have
 * committed; a start with segments left by an earlier run replays them the
 * same way. Events of one mg_id always reach this writer, so they reach the
 * table in arrival order. When the spool is full (spool.max_bytes) or its
 * write fails (ENOSPC, EIO), the batch stays held and unacked: the queue
 * fills and the loop stops reading (backpressure); the writer keeps
 * retrying and resumes by itself. Each change of what the writer does with
 * batches (enum writer_state) is logged once.
 *
 * Shutdown: with the queue closed the writer drains it the same way; after
 * writer.drain_timeout_s it stops trying PostgreSQL and spools what is left.
 * Only a batch the spool also refuses after the deadline goes unacked (its
 * clients resend); it is logged.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/buffer.h>
#include <libpq-fe.h>

#include "ack.h"
#include "config.h"
#include "log.h"
#include "queue.h"
#include "record.h"
#include "spool.h"
#include "stats.h"
#include "writer.h"
#include "writer_sql.h"

enum write_verdict {
	WRITE_OK = 0,     /* committed */
	WRITE_RETRY,      /* connection-level or transient: same batch again */
	WRITE_REJECT,     /* a row's data was refused: isolate it */
	WRITE_VERDICT_COUNT /* number of verdicts; not a verdict */
};

/* Why a row was set aside instead of merged. */
struct writer_skip {
	int idx;                     /* position in the batch */
	enum record_reason reason;
	const char *message;         /* static text */
	const char *field;
};

/* What the writer does with batches; changes are logged once. */
enum writer_state {
	WRITER_STATE_DIRECT = 0,        /* committing them to PostgreSQL */
	WRITER_STATE_SPOOLING,          /* PostgreSQL is away: into the spool, then acked */
	WRITER_STATE_REPLAYING,         /* PostgreSQL is back: the spool first */
	WRITER_STATE_HOLD_SPOOL_FULL,   /* spool.max_bytes reached: holding one, unacked */
	WRITER_STATE_HOLD_SPOOL_ERROR,  /* the spool write failed: holding one, unacked */
	WRITER_STATE_HOLD_POSTGRES,     /* connected, but refused for a transient reason */
	WRITER_STATE_COUNT /* number of states; not a state */
};

struct writer_err {
	char sqlstate[6];
	char field[64];
	char message[512];
};

struct writer {
	int id;
	pthread_t thread;
	struct queue *q;             /* shared: see queue.h */
	struct spool *spool;         /* shared: thread-safe */
	struct ackq *ackq;           /* shared: thread-safe */
	char *conninfo;              /* immutable after start */
	bool pass_id_dead_letter;    /* immutable after start */
	bool apply_credits;          /* immutable after start */
	atomic_int batch_max;        /* live: written by the loop on reload */
	atomic_int flush_ms;         /* live: idem */
	atomic_int retry_initial_ms; /* live: idem */
	atomic_int retry_max_ms;     /* live: idem */
	atomic_int drain_timeout_s;  /* live: idem */
	atomic_bool done;            /* set by the writer when it exits */
	atomic_llong progress_ns;    /* CLOCK_MONOTONIC of the last loop turn; writer writes */

	/* Writer thread only. */
	PGconn *pg;
	char *sql_copy;
	char *sql_check;
	const char *sql_customers;
	char *sql_merge;
	struct evbuffer *copybuf;
	int *pass;                   /* per batch position */
	int *slots;                  /* hash set for pass numbering */
	size_t cap;                  /* capacity of pass/slots/batch */
	struct record **batch;
	struct writer_skip *skips;
	size_t nskips;
	int64_t drain_deadline_ns;   /* 0 until the queue is seen closed */
	struct spool_stream *stream; /* this writer's spool segments */
	enum writer_state state;     /* what the writer does with batches now */
	size_t held;                 /* batch[0..held): taken from the queue, not yet durable */
	unsigned connect_failures;   /* consecutive failed connection attempts */
	int64_t next_connect_ns;     /* CLOCK_MONOTONIC: no connection attempt before */
	unsigned hold_attempts;      /* retries of the held batch in this state */
	uint64_t replayed;           /* events replayed from the spool since replay began */
};

static int64_t writer_now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- connection ------------------------------------------------------- */

static void writer_disconnect(struct writer *w)
{
	if (w->pg) {
		PQfinish(w->pg);
		w->pg = NULL;
		stats_set_postgres_up(0);
	}
}

/* Run SQL with no result rows expected; 0 or -1 (logged). */
static int writer_exec(struct writer *w, const char *sql, const char *what)
{
	PGresult *res = PQexec(w->pg, sql);
	int ok = res && (PQresultStatus(res) == PGRES_COMMAND_OK ||
			 PQresultStatus(res) == PGRES_TUPLES_OK);

	if (!ok)
		log_error("writer", "writer=%d: %s failed: %s", w->id, what,
			  PQerrorMessage(w->pg));
	PQclear(res);
	return ok ? 0 : -1;
}

/* libpq notices (a server WARNING such as "terminating connection due to
 * immediate shutdown") go to our log instead of bare stderr. */
static void writer_notice(void *arg, const char *message)
{
	const struct writer *w = arg;
	size_t len = strcspn(message, "\n");

	log_warn("writer", "writer=%d: PostgreSQL says: %.*s", w->id, (int)len, message);
}

/* Connect and prepare the staging table; 0 or -1. A failure is logged at
 * warn when LOUD (the first of a series), else at debug. */
static int writer_connect(struct writer *w, bool loud)
{
	const char *keys[] = { "dbname", "fallback_application_name", NULL };
	const char *vals[] = { w->conninfo, "megaingestd", NULL };
	char *staging;
	int rc;

	w->pg = PQconnectdbParams(keys, vals, 1);
	if (!w->pg || PQstatus(w->pg) != CONNECTION_OK) {
		log_at_(loud ? LOG_LEVEL_WARN : LOG_LEVEL_DEBUG, "writer",
			"writer=%d: cannot connect to PostgreSQL: %s; will retry with backoff",
			w->id, w->pg ? PQerrorMessage(w->pg) : "out of memory");
		writer_disconnect(w);
		return -1;
	}
	PQsetNoticeProcessor(w->pg, writer_notice, w);
	staging = writer_sql_staging();
	rc = staging ? writer_exec(w, staging, "creating the staging table") : -1;
	free(staging);
	if (rc < 0) {
		writer_disconnect(w);
		return -1;
	}
	stats_add(STAT_postgres_reconnects_total, 1);
	stats_set_postgres_up(1);
	log_info("writer", "writer=%d: connected to PostgreSQL (server %d, pid %d)", w->id,
		 PQserverVersion(w->pg), PQbackendPID(w->pg));
	return 0;
}

/* Classify a failed statement: transient/connection vs row data. */
static enum write_verdict writer_classify(struct writer *w, PGresult *res, struct writer_err *e)
{
	const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *col = res ? PQresultErrorField(res, PG_DIAG_COLUMN_NAME) : NULL;
	const char *con = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;

	snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", st ? st : "");
	snprintf(e->message, sizeof(e->message), "%s",
		 msg ? msg : PQerrorMessage(w->pg));
	snprintf(e->field, sizeof(e->field), "%s", col ? col : con ? con : "");
	if (PQstatus(w->pg) != CONNECTION_OK || !st)
		return WRITE_RETRY;
	/* Class 22 (data exception) and 23 (integrity constraint) are caused by
	 * a row; everything else (connection, shutdown, locks, a missing table)
	 * is retried. */
	if (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0)
		return WRITE_REJECT;
	return WRITE_RETRY;
}

/* ---- COPY data -------------------------------------------------------- */

/* Append V in COPY text format: backslash, tab, newline and CR escaped. */
static void writer_copy_text(struct evbuffer *b, const char *v, size_t len)
{
	size_t start = 0;

	for (size_t i = 0; i < len; i++) {
		char esc;

		switch (v[i]) {
		case '\\': esc = '\\'; break;
		case '\t': esc = 't'; break;
		case '\n': esc = 'n'; break;
		case '\r': esc = 'r'; break;
		default: continue;
		}
		evbuffer_add(b, v + start, i - start);
		evbuffer_add(b, (char[]){ '\\', esc }, 2);
		start = i + 1;
	}
	evbuffer_add(b, v + start, len - start);
}

static void writer_copy_row(struct evbuffer *b, const struct record *r, int idx, int pass)
{
	evbuffer_add_printf(b, "%d\t%d", idx, pass);
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		evbuffer_add(b, "\t", 1);
		if (r->len[i] == RECORD_ABSENT)
			evbuffer_add(b, "\\N", 2);
		else
			writer_copy_text(b, r->data + r->off[i], r->len[i]);
	}
	evbuffer_add(b, "\n", 1);
}

/* Number each record's occurrence of its mg_id within RECS: 1, 2, ...
 * Returns the highest pass. */
static int writer_number_passes(struct writer *w, struct record **recs, size_t n)
{
	size_t mask = 1;
	int maxpass = 1;

	while (mask < n * 2)
		mask <<= 1;
	memset(w->slots, -1, mask * sizeof(*w->slots));
	mask--;
	for (size_t i = 0; i < n; i++) {
		const char *id = record_get(recs[i], RECORD_COL_ID);
		size_t h = recs[i]->id_hash & mask;

		w->pass[i] = 1;
		while (w->slots[h] >= 0) {
			struct record *o = recs[w->slots[h]];

			if (o->id_hash == recs[i]->id_hash && strcmp(record_get(o, RECORD_COL_ID), id) == 0) {
				w->pass[i] = w->pass[w->slots[h]] + 1;
				break;
			}
			h = (h + 1) & mask;
		}
		w->slots[h] = (int)i;
		if (w->pass[i] > maxpass)
			maxpass = w->pass[i];
	}
	return maxpass;
}

static enum write_verdict writer_copy(struct writer *w, struct record **recs, size_t n,
				      struct writer_err *e)
{
	PGresult *res = PQexec(w->pg, w->sql_copy);
	struct evbuffer_iovec vec[16];
	enum write_verdict v;
	int nvec;

	if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
		v = writer_classify(w, res, e);
		PQclear(res);
		return v;
	}
	PQclear(res);
	for (size_t i = 0; i < n; i++)
		writer_copy_row(w->copybuf, recs[i], (int)i, w->pass[i]);
	while ((nvec = evbuffer_peek(w->copybuf, -1, NULL, vec, 16)) > 0) {
		size_t sent = 0;

		if (nvec > 16)
			nvec = 16;
		for (int i = 0; i < nvec; i++) {
			if (PQputCopyData(w->pg, vec[i].iov_base, (int)vec[i].iov_len) != 1)
				break;
			sent += vec[i].iov_len;
		}
		if (sent == 0)
			break;
		evbuffer_drain(w->copybuf, sent);
	}
	evbuffer_drain(w->copybuf, evbuffer_get_length(w->copybuf));
	PQputCopyEnd(w->pg, NULL);
	res = PQgetResult(w->pg);
	v = res && PQresultStatus(res) == PGRES_COMMAND_OK ? WRITE_OK : writer_classify(w, res, e);
	PQclear(res);
	while ((res = PQgetResult(w->pg)))
		PQclear(res);
	return v;
}

/* ---- one transaction -------------------------------------------------- */

static enum write_verdict writer_run(struct writer *w, const char *sql, int nparams,
				     const char *const *params, struct writer_err *e,
				     PGresult **out)
{
	PGresult *res = PQexecParams(w->pg, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	enum write_verdict v = WRITE_OK;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		v = writer_classify(w, res, e);
	if (out && v == WRITE_OK)
		*out = res;
	else
		PQclear(res);
	return v;
}

static void writer_skip_set(struct writer_skip *sk, char kind)
{
	switch (kind) {
	case 't':
		sk->reason = RECORD_REASON_BAD_TYPE;
		sk->field = "mg_record_type";
		sk->message = "mg_id already belongs to a row of another mg_record_type; not merged";
		break;
	case 'c':
		sk->reason = RECORD_REASON_COUNT; /* not a rejection: reported only */
		sk->field = "mg_id";
		sk->message = "credit_transaction rows are immutable; this repeat carries other "
			      "values and was ignored";
		break;
	default:
		sk->reason = RECORD_REASON_UNKNOWN_PASS_ID;
		sk->field = "mg_pass_id";
		sk->message = "mg_pass_id is not a known customer (postgres.unknown_pass_id: "
			      "dead_letter)";
		break;
	}
}

/* Remember the rows of pass PASS that must not be merged and remove those
 * to be dead-lettered from staging. */
static enum write_verdict writer_check(struct writer *w, const char *pass, struct writer_err *e)
{
	const char *params[1] = { pass };
	PGresult *res = NULL;
	enum write_verdict v = writer_run(w, w->sql_check, 1, params, e, &res);
	struct evbuffer *ids;
	char *list;
	int rows, ndrop = 0;

	if (v != WRITE_OK)
		return v;
	rows = PQntuples(res);
	ids = evbuffer_new();
	if (!ids || evbuffer_add(ids, "{", 1) < 0) {
		PQclear(res);
		if (ids)
			evbuffer_free(ids);
		snprintf(e->message, sizeof(e->message), "out of memory");
		return WRITE_RETRY;
	}
	for (int i = 0; i < rows && w->nskips < w->cap; i++) {
		struct writer_skip *sk = &w->skips[w->nskips++];

		sk->idx = atoi(PQgetvalue(res, i, 0));
		writer_skip_set(sk, PQgetvalue(res, i, 1)[0]);
		if (sk->reason != RECORD_REASON_COUNT)
			evbuffer_add_printf(ids, "%s%d", ndrop++ ? "," : "", sk->idx);
	}
	PQclear(res);
	evbuffer_add(ids, "}", 1);
	list = writer_sql_take(ids);
	if (!list) {
		snprintf(e->message, sizeof(e->message), "out of memory");
		return WRITE_RETRY;
	}
	if (ndrop > 0) {
		params[0] = list;
		v = writer_run(w, "DELETE FROM mi_staging WHERE mi_idx = ANY ($1::int4[])",
			       1, params, e, NULL);
	}
	free(list);
	return v;
}

/* Check and merge each pass in order: the k-th event of an mg_id merges
 * into what the first k-1 made of the row. */
static enum write_verdict writer_merge(struct writer *w, int maxpass, struct writer_err *e)
{
	for (int p = 1; p <= maxpass; p++) {
		char pass[16];
		const char *params[1] = { pass };
		enum write_verdict v;

		snprintf(pass, sizeof(pass), "%d", p);
		v = writer_check(w, pass, e);
		if (v == WRITE_OK)
			v = writer_run(w, w->sql_merge, 1, params, e, NULL);
		if (v != WRITE_OK)
			return v;
	}
	return WRITE_OK;
}

/* Write RECS[0..N) in one transaction. */
static enum write_verdict writer_transaction(struct writer *w, struct record **recs, size_t n,
					     struct writer_err *e)
{
	int maxpass = writer_number_passes(w, recs, n);
	enum write_verdict v;

	w->nskips = 0;
	v = writer_run(w, "BEGIN", 0, NULL, e, NULL);
	if (v == WRITE_OK)
		v = writer_copy(w, recs, n, e);
	if (v == WRITE_OK && !w->pass_id_dead_letter)
		v = writer_run(w, w->sql_customers, 0, NULL, e, NULL);
	if (v == WRITE_OK)
		v = writer_merge(w, maxpass, e);
	if (v == WRITE_OK)
		v = writer_run(w, "COMMIT", 0, NULL, e, NULL);
	if (v != WRITE_OK && PQstatus(w->pg) == CONNECTION_OK) {
		PGresult *res = PQexec(w->pg, "ROLLBACK");

		PQclear(res);
	}
	return v;
}

/* ---- outcomes --------------------------------------------------------- */

static void writer_dead_letter(struct writer *w, const struct record *r, enum record_reason reason,
			       const char *message, const char *field, const char *sqlstate)
{
	struct dead_letter dl = {
		.reason = message,
		.field = field,
		.sqlstate = sqlstate && *sqlstate ? sqlstate : NULL,
		.tag = record_get(r, RECORD_SLOT_TAG),
		.tag_len = r->len[RECORD_SLOT_TAG] == RECORD_ABSENT ? 0 : r->len[RECORD_SLOT_TAG],
		.peer = record_get(r, RECORD_SLOT_PEER),
		.record = r,
	};

	stats_reject(reason);
	stats_add(STAT_events_dead_lettered_total, 1);
	log_warn("writer", "writer=%d: event mg_id=%s dead-lettered: %s%s%s", w->id,
		 record_get(r, RECORD_COL_ID), message, sqlstate && *sqlstate ? " SQLSTATE " : "",
		 sqlstate ? sqlstate : "");
	if (spool_dead_letter(w->spool, &dl) < 0)
		log_error("writer", "writer=%d: mg_id=%s could not be dead-lettered either; "
			  "its ack is still sent because the row cannot ever be written",
			  w->id, record_get(r, RECORD_COL_ID));
}

static int writer_skip_cmp(const void *a, const void *b)
{
	const struct writer_skip *x = a, *y = b;

	return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Receive -> commit latency of every committed event of RECS (the dropped
 * skips, dead-lettered, are left out). Sorts w->skips, which is done with. */
static void writer_observe_latency(struct writer *w, struct record **recs, size_t n,
				   size_t dropped)
{
	int64_t now = writer_now_ns(CLOCK_REALTIME);
	size_t k = 0;

	if (dropped)
		qsort(w->skips, w->nskips, sizeof(*w->skips), writer_skip_cmp);
	for (size_t i = 0; i < n; i++) {
		bool committed = true;

		for (; dropped && k < w->nskips && (size_t)w->skips[k].idx == i; k++)
			if (w->skips[k].reason != RECORD_REASON_COUNT)
				committed = false;
		if (committed)
			stats_observe_ns(STAT_event_commit_latency_seconds,
					 now - (int64_t)recs[i]->recv_ns);
	}
}

static void writer_committed(struct writer *w, struct record **recs, size_t n)
{
	size_t dropped = 0;

	for (size_t i = 0; i < w->nskips; i++) {
		const struct writer_skip *sk = &w->skips[i];

		if (sk->reason == RECORD_REASON_COUNT) {
			stats_add(STAT_credit_conflicts_total, 1);
			log_warn("writer", "writer=%d: mg_id=%s: %s", w->id,
				 record_get(recs[sk->idx], RECORD_COL_ID), sk->message);
			continue;
		}
		dropped++;
		writer_dead_letter(w, recs[sk->idx], sk->reason, sk->message, sk->field, NULL);
	}
	writer_observe_latency(w, recs, n, dropped);
	stats_add(STAT_events_committed_total, n - dropped);
	stats_add(STAT_batches_committed_total, 1);
	w->nskips = 0;
}

/* ---- delivery states -------------------------------------------------- */

static const char *const writer_state_names[WRITER_STATE_COUNT] = {
	[WRITER_STATE_DIRECT] = "writing to PostgreSQL",
	[WRITER_STATE_SPOOLING] = "spooling",
	[WRITER_STATE_REPLAYING] = "replaying the spool",
	[WRITER_STATE_HOLD_SPOOL_FULL] = "holding: spool full",
	[WRITER_STATE_HOLD_SPOOL_ERROR] = "holding: spool write failed",
	[WRITER_STATE_HOLD_POSTGRES] = "holding: PostgreSQL refuses the batch",
};

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
}

static void writer_publish_spool(struct writer *w)
{
	stats_set_gauge(STAT_spool_bytes, (int64_t)spool_bytes(w->spool));
}

/* ---- timing ----------------------------------------------------------- */

static bool writer_draining_expired(struct writer *w)
{
	int64_t now = writer_now_ns(CLOCK_MONOTONIC);

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

/* Milliseconds until the next connection attempt is due (0: now). */
static long writer_until_connect_ms(struct writer *w)
{
	int64_t left = w->next_connect_ns - writer_now_ns(CLOCK_MONOTONIC);

	return left > 0 ? (long)(left / 1000000) + 1 : 0;
}

/* Pause before retrying a held batch: the backoff for this hold, cut short
 * by a due reconnection (which may be what frees us) or the drain deadline. */
static void writer_hold_pause(struct writer *w)
{
	long ms = writer_backoff_ms(w, w->hold_attempts++);
	struct timespec ts;

	if (!w->pg && writer_until_connect_ms(w) < ms)
		ms = writer_until_connect_ms(w);
	if (w->drain_deadline_ns) {
		int64_t left = (w->drain_deadline_ns - writer_now_ns(CLOCK_MONOTONIC)) / 1000000;

		if (left < ms)
			ms = left > 0 ? (long)left : 0;
	}
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	atomic_store(&w->progress_ns, writer_now_ns(CLOCK_MONOTONIC));
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Connect when disconnected and the backoff allows it; never after the
 * drain deadline (from then on everything goes to the spool). */
static void writer_maybe_connect(struct writer *w)
{
	if (w->pg || writer_until_connect_ms(w) > 0 || writer_draining_expired(w))
		return;
	if (writer_connect(w, w->connect_failures == 0) == 0) {
		if (w->connect_failures > 1)
			log_info("writer", "writer=%d: reconnected after %u failed attempts", w->id,
				 w->connect_failures);
		w->connect_failures = 0;
		w->next_connect_ns = 0;
		return;
	}
	w->next_connect_ns = writer_now_ns(CLOCK_MONOTONIC) +
		writer_backoff_ms(w, w->connect_failures++) * 1000000LL;
}

/* A failure that means the connection is gone, not that the batch is bad:
 * the socket is dead, a connection exception (08), or the server is
 * shutting down or cannot take connections now (57P01..57P03). */
static bool writer_connection_lost(struct writer *w, const struct writer_err *e)
{
	return PQstatus(w->pg) != CONNECTION_OK || strncmp(e->sqlstate, "08", 2) == 0 ||
	       strncmp(e->sqlstate, "57P", 3) == 0;
}

/* Drop the connection after E; reconnect after the first backoff step. */
static void writer_lost(struct writer *w, const struct writer_err *e)
{
	char why[700];

	writer_disconnect(w);
	w->connect_failures = 1;
	w->next_connect_ns = writer_now_ns(CLOCK_MONOTONIC) + writer_backoff_ms(w, 0) * 1000000LL;
	snprintf(why, sizeof(why), "PostgreSQL connection lost (%s%s%.400s); batches go to the "
		 "spool and are acked once fsync'ed, reconnecting with backoff", e->sqlstate,
		 e->sqlstate[0] ? " " : "", e->message);
	writer_set_state(w, WRITER_STATE_SPOOLING, LOG_LEVEL_WARN, why);
}

/* ---- writing a batch -------------------------------------------------- */

enum writer_stop {
	WRITER_STOP_NONE = 0,  /* everything done */
	WRITER_STOP_LOST,      /* the connection is gone: spool the rest */
	WRITER_STOP_AGAIN,     /* PostgreSQL refused for a transient reason: hold, retry */
	WRITER_STOP_COUNT /* number of reasons; not a reason */
};

/*
 * One attempt to commit RECS[0..N), isolating rows PostgreSQL refuses
 * (bisection: the halves commit in order, so arrival order holds). Returns
 * how many leading records are done — committed, or dead-lettered with the
 * server's error — and sets *STOP to why it stopped short of N.
 */
static size_t writer_write(struct writer *w, struct record **recs, size_t n,
			   enum writer_stop *stop)
{
	struct writer_err e;
	enum write_verdict v;
	int64_t t0 = writer_now_ns(CLOCK_MONOTONIC);
	size_t half, done;

	*stop = WRITER_STOP_NONE;
	v = writer_transaction(w, recs, n, &e);
	if (v == WRITE_OK) {
		stats_observe_ns(STAT_batch_commit_seconds, writer_now_ns(CLOCK_MONOTONIC) - t0);
		writer_committed(w, recs, n);
		return n;
	}
	if (v == WRITE_REJECT && n == 1) {
		writer_dead_letter(w, recs[0], RECORD_REASON_REFUSED, e.message, e.field, e.sqlstate);
		return 1;
	}
	if (v == WRITE_REJECT) {
		half = n / 2;
		done = writer_write(w, recs, half, stop);
		if (done < half)
			return done;
		return half + writer_write(w, recs + half, n - half, stop);
	}
	if (writer_connection_lost(w, &e)) {
		writer_lost(w, &e);
		*stop = WRITER_STOP_LOST;
	} else {
		char why[700];

		snprintf(why, sizeof(why), "a batch of %zu was not written (SQLSTATE %s: %.400s); "
			 "holding it unacked and retrying with backoff", n,
			 e.sqlstate[0] ? e.sqlstate : "none", e.message);
		writer_set_state(w, WRITER_STATE_HOLD_POSTGRES, LOG_LEVEL_ERROR, why);
		*stop = WRITER_STOP_AGAIN;
	}
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

/* Append RECS[0..N) to the spool; true when they are durable. */
static bool writer_spool(struct writer *w, struct record **recs, size_t n)
{
	enum spool_status st = spool_stream_append(w->stream, recs, n);
	char why[300];

	if (st == SPOOL_OK) {
		bool was_held = w->state == WRITER_STATE_HOLD_SPOOL_FULL ||
				w->state == WRITER_STATE_HOLD_SPOOL_ERROR;

		writer_publish_spool(w);
		writer_set_state(w, WRITER_STATE_SPOOLING, LOG_LEVEL_INFO, was_held ?
				 "the spool accepts batches again; acking resumes" :
				 "drain deadline passed: the rest of the queue goes to the spool");
		return true;
	}
	if (st == SPOOL_FULL) {
		snprintf(why, sizeof(why), "%llu bytes spooled, a batch of %zu would pass "
			 "spool.max_bytes; not acking, reading stops when the queue fills, "
			 "resuming once PostgreSQL is back", (unsigned long long)spool_bytes(w->spool), n);
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

	if (w->pg && !spool_stream_pending(w->stream) && !writer_draining_expired(w)) {
		done = writer_write(w, recs, n, &stop);
		writer_release(w, recs, done);
		if (done == n)
			writer_set_state(w, WRITER_STATE_DIRECT, LOG_LEVEL_INFO,
					 "PostgreSQL takes batches again");
		if (done == n || stop == WRITER_STOP_AGAIN)
			goto keep_rest;
	}
	if (writer_spool(w, recs + done, n - done)) {
		writer_release(w, recs + done, n - done);
		done = n;
	} else if (writer_draining_expired(w)) {
		log_error("writer", "writer=%d: drain timeout: %zu events could be written neither to "
			  "PostgreSQL nor to the spool; they were not acknowledged, so their clients "
			  "resend them", w->id, n - done);
		for (size_t i = done; i < n; i++)
			record_free(recs[i]);
		done = n;
	}
keep_rest:
	if (done > 0 && done < n)
		memmove(recs, recs + done, (n - done) * sizeof(*recs));
	w->held = n - done;
	if (w->held > 0)
		writer_hold_pause(w);
}

/* Make room for batches of MAX (a reload may raise batch_max_events). */
static size_t writer_reserve(struct writer *w, size_t max)
{
	struct record **b;
	int *p, *sl;
	struct writer_skip *sk;

	if (max <= w->cap)
		return max;
	b = realloc(w->batch, max * sizeof(*b));
	if (b)
		w->batch = b;
	p = realloc(w->pass, max * sizeof(*p));
	if (p)
		w->pass = p;
	sl = realloc(w->slots, max * 4 * sizeof(*sl));
	if (sl)
		w->slots = sl;
	sk = realloc(w->skips, max * sizeof(*sk));
	if (sk)
		w->skips = sk;
	if (!b || !p || !sl || !sk) {
		log_warn("writer", "writer=%d: out of memory for batches of %zu; keeping %zu",
			 w->id, max, w->cap);
		return w->cap;
	}
	w->cap = max;
	return max;
}

/* ---- replay ----------------------------------------------------------- */

/* Commit RECS[0..N) of a spool frame in slices the batch arrays can hold;
 * every record is freed. True when all of them are done. */
static bool writer_replay_frame(struct writer *w, struct record **recs, size_t n)
{
	enum writer_stop stop = WRITER_STOP_NONE;
	size_t off = 0;

	while (off < n && stop == WRITER_STOP_NONE) {
		size_t k = writer_reserve(w, n - off), done;

		done = writer_write(w, recs + off, k, &stop);
		writer_release(w, recs + off, done);
		off += done;
	}
	for (size_t i = off; i < n; i++)
		record_free(recs[i]);
	return off == n;
}

/* Replay the oldest spooled frame into PostgreSQL; delete it once committed. */
static void writer_replay_one(struct writer *w)
{
	struct record **recs;
	size_t n;
	int rc = spool_stream_next(w->stream, &recs, &n);

	if (rc < 0) {
		writer_hold_pause(w);
		return;
	}
	if (rc == 0)
		return;
	if (w->state != WRITER_STATE_REPLAYING) {
		char why[160];

		snprintf(why, sizeof(why), "PostgreSQL is reachable: replaying %llu spooled bytes "
			 "before newer events", (unsigned long long)spool_bytes(w->spool));
		writer_set_state(w, WRITER_STATE_REPLAYING, LOG_LEVEL_INFO, why);
		w->replayed = 0;
	}
	if (!writer_replay_frame(w, recs, n)) {
		if (w->pg)
			writer_hold_pause(w);   /* refused for now: the frame is read again */
		return;
	}
	w->replayed += n;
	if (spool_stream_commit(w->stream) < 0)
		writer_hold_pause(w);
	writer_publish_spool(w);
	if (!spool_stream_pending(w->stream)) {
		char why[120];

		snprintf(why, sizeof(why), "spool replayed (%llu events)",
			 (unsigned long long)w->replayed);
		writer_set_state(w, WRITER_STATE_DIRECT, LOG_LEVEL_INFO, why);
	}
}

/* ---- the thread ------------------------------------------------------- */

/* Wait for and take the next batch from the queue into w->batch. */
static void writer_take(struct writer *w)
{
	size_t max = writer_reserve(w, (size_t)atomic_load(&w->batch_max));
	long wait = atomic_load(&w->flush_ms);

	/* While disconnected, wake up in time for the next connection attempt. */
	if (!w->pg && writer_until_connect_ms(w) < wait)
		wait = writer_until_connect_ms(w);
	w->held = queue_pop_batch(w->q, w->batch, max, (int)wait);
}

/*
 * Order of work, every turn: reconnect when due; while connected, replay the
 * spool frame by frame before anything newer (a held batch included); then
 * deliver the held batch, or take a new one from the queue.
 */
static void *writer_main(void *arg)
{
	struct writer *w = arg;

	writer_publish_spool(w);
	/* Connect up front so a bad conninfo shows at start; failures retry later. */
	if (writer_connect(w, true) < 0) {
		w->connect_failures = 1;
		w->next_connect_ns = writer_now_ns(CLOCK_MONOTONIC) + writer_backoff_ms(w, 0) * 1000000LL;
		writer_set_state(w, WRITER_STATE_SPOOLING, LOG_LEVEL_WARN,
				 "PostgreSQL is unreachable at start; batches go to the spool and are "
				 "acked once fsync'ed, reconnecting with backoff");
	}
	for (;;) {
		atomic_store(&w->progress_ns, writer_now_ns(CLOCK_MONOTONIC));
		writer_maybe_connect(w);
		if (w->pg && spool_stream_pending(w->stream) && !writer_draining_expired(w)) {
			writer_replay_one(w);
			continue;
		}
		if (w->held == 0)
			writer_take(w);
		if (w->held > 0)
			writer_deliver(w);
		else if (queue_closed_and_empty(w->q))
			break;
	}
	writer_disconnect(w);
	atomic_store(&w->done, true);
	ackq_wake(w->ackq);
	return NULL;
}

/* ---- lifecycle -------------------------------------------------------- */

static bool writer_table_name_ok(const char *t)
{
	if (!*t)
		return false;
	for (; *t; t++)
		if (!(*t == '_' || *t == '.' || (*t >= 'a' && *t <= 'z') ||
		      (*t >= 'A' && *t <= 'Z') || (*t >= '0' && *t <= '9')))
			return false;
	return true;
}

static void writer_free(struct writer *w)
{
	if (!w)
		return;
	free(w->conninfo);
	free(w->sql_copy);
	free(w->sql_check);
	free(w->sql_merge);
	if (w->copybuf)
		evbuffer_free(w->copybuf);
	free(w->pass);
	free(w->slots);
	free(w->batch);
	free(w->skips);
	free(w);
}

static int writer_alloc(struct writer *w, const struct config *cfg)
{
	w->cap = (size_t)cfg->writer_batch_max_events;
	w->conninfo = strdup(cfg->pg_conninfo);
	w->sql_copy = writer_sql_copy();
	w->sql_check = writer_sql_check(cfg->pg_table, w->pass_id_dead_letter);
	w->sql_merge = writer_sql_merge(cfg->pg_table, w->apply_credits);
	w->sql_customers = writer_sql_stub_customers;
	w->copybuf = evbuffer_new();
	w->batch = calloc(w->cap, sizeof(*w->batch));
	w->pass = calloc(w->cap, sizeof(*w->pass));
	w->slots = calloc(w->cap * 4, sizeof(*w->slots));
	w->skips = calloc(w->cap, sizeof(*w->skips));
	return w->conninfo && w->sql_copy && w->sql_check && w->sql_merge && w->copybuf &&
	       w->batch && w->pass && w->slots && w->skips ? 0 : -1;
}

struct writer *writer_start(int id, const struct config *cfg, struct queue *q,
			    struct spool *spool, struct ackq *ackq)
{
	struct writer *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	if (!writer_table_name_ok(cfg->pg_table)) {
		log_error("writer", "postgres.table \"%s\" is not a plain [schema.]name", cfg->pg_table);
		free(w);
		return NULL;
	}
	w->id = id;
	w->q = q;
	w->spool = spool;
	w->ackq = ackq;
	w->stream = spool_stream_get(spool, id);
	if (!w->stream) {
		log_error("writer", "writer=%d: no spool stream (spool_stream_recover not run)", id);
		free(w);
		return NULL;
	}
	w->pass_id_dead_letter = cfg->pg_unknown_pass_id == CONFIG_PASS_ID_DEAD_LETTER;
	w->apply_credits = cfg->pg_apply_credits;
	writer_reconfigure(w, cfg);
	atomic_store(&w->progress_ns, writer_now_ns(CLOCK_MONOTONIC));
	if (writer_alloc(w, cfg) < 0) {
		log_error("writer", "writer=%d: out of memory", id);
		writer_free(w);
		return NULL;
	}
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		log_error("writer", "writer=%d: cannot start thread: %s", id, strerror(errno));
		writer_free(w);
		return NULL;
	}
	return w;
}

void writer_reconfigure(struct writer *w, const struct config *cfg)
{
	atomic_store(&w->batch_max, cfg->writer_batch_max_events);
	atomic_store(&w->flush_ms, cfg->writer_flush_interval_ms);
	atomic_store(&w->retry_initial_ms, cfg->writer_retry_initial_ms);
	atomic_store(&w->retry_max_ms, cfg->writer_retry_max_ms);
	atomic_store(&w->drain_timeout_s, cfg->writer_drain_timeout_s);
}

void writer_join(struct writer *w)
{
	if (!w)
		return;
	pthread_join(w->thread, NULL);
	writer_free(w);
}

int writer_done(const struct writer *w)
{
	return atomic_load(&w->done);
}

double writer_idle_seconds(const struct writer *w)
{
	return (double)(writer_now_ns(CLOCK_MONOTONIC) - atomic_load(&w->progress_ns)) / 1e9;
}
