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
 * parameters; the SQL text is built once from record_columns[].
 *
 * Outcomes follow a three-way verdict. WRITE_OK: acks are released.
 * WRITE_RETRY (connection loss, server shutdown, serialization failure,
 * missing table...): reconnect with capped, jittered exponential backoff and
 * try the same batch again; meanwhile the queue fills and the loop stops
 * reading, so nothing is dropped. WRITE_REJECT (a data or constraint error
 * caused by a row): bisect the batch until the offending rows stand alone,
 * commit the rest and dead-letter those with the server's message and
 * SQLSTATE.
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
	unsigned retries;            /* consecutive failed attempts */
};

static int64_t writer_now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- SQL text, built once from record_columns[] ----------------------- */

static const char *const writer_pgtype[RECORD_TYPE_COUNT] = {
	"text", "int4", "timestamptz", "jsonb"
};

/* The value a merge assigns to column I of an existing row T from EXCLUDED. */
static int writer_merge_expr(struct evbuffer *b, int i)
{
	const char *c = record_columns[i].name;

	if (i == RECORD_COL_META)
		return evbuffer_add_printf(b, "t.%s || EXCLUDED.%s", c, c);
	if (i == RECORD_COL_STATUS)
		return evbuffer_add_printf(b,
			"CASE WHEN EXCLUDED.%s = 'pending' AND t.%s IN ('succeeded', 'failed') "
			"THEN t.%s ELSE COALESCE(EXCLUDED.%s, t.%s) END", c, c, c, c, c);
	return evbuffer_add_printf(b, "COALESCE(EXCLUDED.%s, t.%s)", c, c);
}

/* Columns a merge may change: all but the key, the type and the creation time. */
static bool writer_mergeable(int i)
{
	return i != RECORD_COL_ID && i != RECORD_COL_RECORD_TYPE && i != RECORD_COL_CREATED_AT;
}

static char *writer_take_sql(struct evbuffer *b)
{
	size_t len = evbuffer_get_length(b);
	char *s = malloc(len + 1);

	if (s) {
		evbuffer_remove(b, s, len);
		s[len] = '\0';
	}
	evbuffer_free(b);
	return s;
}

static char *writer_sql_staging(void)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "CREATE TEMP TABLE IF NOT EXISTS mi_staging "
			    "(mi_idx int4, mi_pass int4");
	for (int i = 0; i < RECORD_COL_COUNT; i++)
		evbuffer_add_printf(b, ", %s %s", record_columns[i].name,
				    writer_pgtype[record_columns[i].type]);
	evbuffer_add_printf(b, ") ON COMMIT DELETE ROWS");
	return writer_take_sql(b);
}

static char *writer_sql_copy(void)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "COPY mi_staging (mi_idx, mi_pass");
	for (int i = 0; i < RECORD_COL_COUNT; i++)
		evbuffer_add_printf(b, ", %s", record_columns[i].name);
	evbuffer_add_printf(b, ") FROM STDIN");
	return writer_take_sql(b);
}

/*
 * postgres.apply_credits: the rows the merge newly inserted (xmax = 0) that
 * are credit_transactions move their customer's balance, once per mg_id
 * however often the event is retried. A top-up (mg_delta > 0 and mg_reason
 * 'topup') also raises mg_last_topup_at and sets mg_topup_source from the
 * newest top-up of the batch.
 */
static const char writer_sql_credits[] =
	" RETURNING mg_pass_id, mg_delta, mg_record_type, mg_reason, mg_source, mg_created_at, "
	"(xmax = 0) AS inserted) "
	"UPDATE mega_customers c SET mg_credits = c.mg_credits + d.delta, "
	"mg_last_topup_at = CASE WHEN d.topup_at > c.mg_last_topup_at OR "
	"(c.mg_last_topup_at IS NULL AND d.topup_at IS NOT NULL) THEN d.topup_at "
	"ELSE c.mg_last_topup_at END, "
	"mg_topup_source = CASE WHEN d.topup_at > c.mg_last_topup_at OR "
	"(c.mg_last_topup_at IS NULL AND d.topup_at IS NOT NULL) THEN d.topup_source "
	"ELSE c.mg_topup_source END "
	"FROM (SELECT mg_pass_id, sum(mg_delta)::int4 AS delta, "
	"max(mg_created_at) FILTER (WHERE mg_delta > 0 AND mg_reason = 'topup') AS topup_at, "
	"(array_agg(mg_source ORDER BY mg_created_at DESC) "
	"FILTER (WHERE mg_delta > 0 AND mg_reason = 'topup'))[1] AS topup_source "
	"FROM ins WHERE inserted AND mg_record_type = 'credit_transaction' "
	"AND mg_delta IS NOT NULL AND mg_pass_id IS NOT NULL GROUP BY 1) d "
	"WHERE c.mg_pass_id = d.mg_pass_id";

static char *writer_sql_merge(const char *table, bool apply_credits)
{
	struct evbuffer *b = evbuffer_new();
	const char *sep = "";

	if (!b)
		return NULL;
	if (apply_credits)
		evbuffer_add_printf(b, "WITH ins AS (");
	evbuffer_add_printf(b, "INSERT INTO %s AS t (", table);
	for (int i = 0; i < RECORD_COL_COUNT; i++)
		evbuffer_add_printf(b, "%s, ", record_columns[i].name);
	evbuffer_add_printf(b, "mg_updated_at) SELECT ");
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		const char *c = record_columns[i].name;

		if (i == RECORD_COL_META)
			evbuffer_add_printf(b, "COALESCE(%s, '{}'::jsonb), ", c);
		else if (i == RECORD_COL_CREATED_AT)
			evbuffer_add_printf(b, "COALESCE(%s, now()), ", c);
		else
			evbuffer_add_printf(b, "%s, ", c);
	}
	evbuffer_add_printf(b, "now() FROM mi_staging WHERE mi_pass = $1 ORDER BY mi_idx "
			    "ON CONFLICT (mg_id) DO UPDATE SET ");
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		if (!writer_mergeable(i))
			continue;
		evbuffer_add_printf(b, "%s = ", record_columns[i].name);
		writer_merge_expr(b, i);
		evbuffer_add_printf(b, ", ");
	}
	/* Same type, never a credit_transaction, and only when something changes:
	 * an exact replay writes no new row version. */
	evbuffer_add_printf(b, "mg_updated_at = now() WHERE t.mg_record_type = EXCLUDED.mg_record_type "
			    "AND t.mg_record_type <> 'credit_transaction' AND ROW(");
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		if (!writer_mergeable(i))
			continue;
		evbuffer_add_printf(b, "%s", sep);
		writer_merge_expr(b, i);
		sep = ", ";
	}
	evbuffer_add_printf(b, ") IS DISTINCT FROM ROW(");
	sep = "";
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		if (!writer_mergeable(i))
			continue;
		evbuffer_add_printf(b, "%st.%s", sep, record_columns[i].name);
		sep = ", ";
	}
	evbuffer_add_printf(b, ")");
	if (apply_credits)
		evbuffer_add_printf(b, "%s", writer_sql_credits);
	return writer_take_sql(b);
}

/* "A staged value differs from the stored row": used to spot a repeated
 * credit_transaction that tries to change what is immutable. */
static void writer_sql_differs(struct evbuffer *b)
{
	const char *sep = "";

	evbuffer_add_printf(b, "(");
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		const char *c = record_columns[i].name;

		if (!writer_mergeable(i))
			continue;
		if (i == RECORD_COL_META)
			evbuffer_add_printf(b, "%s(s.%s IS NOT NULL AND g.%s || s.%s <> g.%s)",
					    sep, c, c, c, c);
		else
			evbuffer_add_printf(b, "%s(s.%s IS NOT NULL AND s.%s IS DISTINCT FROM g.%s)",
					    sep, c, c, c);
		sep = " OR ";
	}
	evbuffer_add_printf(b, ")");
}

/* Rows of pass $1 that must not be merged: 't' another record type owns the
 * mg_id, 'c' a repeated credit_transaction with other values (kept as a
 * no-op, only reported), 'p' an unknown pass id in dead_letter mode. */
static char *writer_sql_check(const char *table, bool pass_id_dead_letter)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "SELECT s.mi_idx, CASE WHEN g.mg_record_type <> s.mg_record_type "
			    "THEN 't' ELSE 'c' END FROM mi_staging s JOIN %s g ON g.mg_id = s.mg_id "
			    "WHERE s.mi_pass = $1 AND (g.mg_record_type <> s.mg_record_type OR "
			    "(g.mg_record_type = 'credit_transaction' AND ", table);
	writer_sql_differs(b);
	evbuffer_add_printf(b, "))");
	if (pass_id_dead_letter)
		evbuffer_add_printf(b, " UNION ALL SELECT s.mi_idx, 'p' FROM mi_staging s "
				    "WHERE s.mi_pass = $1 AND s.mg_pass_id IS NOT NULL AND NOT EXISTS "
				    "(SELECT 1 FROM mega_customers c WHERE c.mg_pass_id = s.mg_pass_id)");
	evbuffer_add_printf(b, " ORDER BY 1");
	return writer_take_sql(b);
}

static const char writer_sql_stub_customers[] =
	"INSERT INTO mega_customers AS c (mg_pass_id, mg_credits, mg_source_system, mg_last_active) "
	"SELECT mg_pass_id, 0, 'megaingest', max(COALESCE(mg_created_at, now())) "
	"FROM mi_staging WHERE mg_pass_id IS NOT NULL GROUP BY mg_pass_id ORDER BY mg_pass_id "
	"ON CONFLICT (mg_pass_id) DO UPDATE SET mg_last_active = EXCLUDED.mg_last_active "
	"WHERE c.mg_last_active IS NULL OR c.mg_last_active < EXCLUDED.mg_last_active";

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

static int writer_connect(struct writer *w)
{
	const char *keys[] = { "dbname", "fallback_application_name", NULL };
	const char *vals[] = { w->conninfo, "megaingestd", NULL };
	char *staging;
	int rc;

	w->pg = PQconnectdbParams(keys, vals, 1);
	if (!w->pg || PQstatus(w->pg) != CONNECTION_OK) {
		log_warn("writer", "writer=%d: cannot connect to PostgreSQL: %s; will retry",
			 w->id, w->pg ? PQerrorMessage(w->pg) : "out of memory");
		writer_disconnect(w);
		return -1;
	}
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
	list = writer_take_sql(ids);
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

/* ---- retry and isolation ---------------------------------------------- */

static bool writer_draining_expired(struct writer *w)
{
	int64_t now = writer_now_ns(CLOCK_MONOTONIC);

	if (!w->drain_deadline_ns && queue_is_closed(w->q))
		w->drain_deadline_ns = now +
			(int64_t)atomic_load(&w->drain_timeout_s) * 1000000000LL;
	return w->drain_deadline_ns && now >= w->drain_deadline_ns;
}

/* Sleep the backoff for the current retry count, jittered to 50..100%. */
static void writer_backoff(struct writer *w)
{
	long initial = atomic_load(&w->retry_initial_ms);
	long cap = atomic_load(&w->retry_max_ms);
	long ms = initial;
	unsigned short r = 0;
	struct timespec ts;

	for (unsigned i = 0; i < w->retries && ms < cap; i++)
		ms *= 2;
	if (ms > cap)
		ms = cap;
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = 0x8000;
	ms = ms / 2 + (ms / 2) * r / 65535;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	w->retries++;
	atomic_store(&w->progress_ns, writer_now_ns(CLOCK_MONOTONIC));
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Commit RECS or set aside each row PostgreSQL refuses, retrying transient
 * failures. Returns -1 only when a drain deadline expired with rows unwritten. */
static int writer_write(struct writer *w, struct record **recs, size_t n)
{
	struct writer_err e;

	for (;;) {
		enum write_verdict v;
		int64_t t0;

		if (!w->pg && writer_connect(w) < 0) {
			if (writer_draining_expired(w))
				return -1;
			writer_backoff(w);
			continue;
		}
		t0 = writer_now_ns(CLOCK_MONOTONIC);
		v = writer_transaction(w, recs, n, &e);
		if (v == WRITE_OK) {
			stats_observe_ns(STAT_batch_commit_seconds, writer_now_ns(CLOCK_MONOTONIC) - t0);
			w->retries = 0;
			writer_committed(w, recs, n);
			return 0;
		}
		if (v == WRITE_REJECT && n == 1) {
			writer_dead_letter(w, recs[0], RECORD_REASON_REFUSED, e.message, e.field, e.sqlstate);
			return 0;
		}
		if (v == WRITE_REJECT) {
			/* Bisect: the halves commit in order, so arrival order holds. */
			size_t half = n / 2;

			if (writer_write(w, recs, half) < 0)
				return -1;
			return writer_write(w, recs + half, n - half);
		}
		log_warn("writer", "writer=%d: batch of %zu not written (%s%s%s); retrying",
			 w->id, n, e.sqlstate[0] ? "SQLSTATE " : "", e.sqlstate, e.message);
		if (PQstatus(w->pg) != CONNECTION_OK)
			writer_disconnect(w);
		if (writer_draining_expired(w))
			return -1;
		writer_backoff(w);
	}
}

static void writer_finish_batch(struct writer *w, struct record **recs, size_t n, bool written)
{
	for (size_t i = 0; i < n; i++) {
		/* An unwritten event's ack is never sent: the client resends. */
		if (recs[i]->ack && written)
			ack_release(w->ackq, recs[i]->ack);
		record_free(recs[i]);
	}
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

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	/* Connect up front so a bad conninfo shows at start; failures retry later. */
	(void)writer_connect(w);
	for (;;) {
		size_t max = writer_reserve(w, (size_t)atomic_load(&w->batch_max));
		size_t n = queue_pop_batch(w->q, w->batch, max, atomic_load(&w->flush_ms));

		atomic_store(&w->progress_ns, writer_now_ns(CLOCK_MONOTONIC));
		if (n == 0) {
			if (queue_closed_and_empty(w->q))
				break;
			continue;
		}
		if (writer_write(w, w->batch, n) < 0) {
			log_error("writer", "writer=%d: drain timeout: %zu events could not be written "
				  "to PostgreSQL and were not acknowledged", w->id, n);
			writer_finish_batch(w, w->batch, n, false);
			continue;
		}
		writer_finish_batch(w, w->batch, n, true);
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
