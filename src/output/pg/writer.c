/*
 * writer.c: a thread that moves batches from its queue into PostgreSQL.
 *
 * DESIGN
 * ------
 * Each writer owns one queue and one libpq connection, and nothing else is
 * shared with the loop but the queue, the ack channel and the atomics
 * documented in struct writer. A batch is one transaction:
 *
 *   BEGIN; SET LOCAL client_min_messages, -- one round trip: no session state
 *     CREATE TEMP TABLE IF NOT EXISTS     is assumed, so a transaction-mode
 *     mi_staging_<hash> ...;              pooler may give every transaction
 *     SET LOCAL statement_timeout         another server session
 *   COPY mi_staging_<hash> FROM STDIN   -- the batch, binary format, streamed
 *                                          while it is encoded (writer_copy.c);
 *                                          one COPY per table the batch holds
 *   INSERT INTO mega_customers ...      -- stub rows for new pass ids, sorted,
 *        ON CONFLICT DO NOTHING            no lock on existing rows; left out
 *                                          when every pass id of the batch is
 *                                          known to exist (writer_known.c)
 *   INSERT INTO <table> SELECT ... FROM mi_staging WHERE mi_pass = k
 *        ON CONFLICT (mg_id) DO UPDATE  -- once per table and pass k; the WHERE
 *                                          of the update skips rows of another
 *                                          type and immutable rows
 *   SELECT ... FROM mi_staging ...      -- only when pass k merged fewer rows
 *                                          than it staged: which rows were
 *                                          not merged, and why
 *   INSERT INTO mega_customers ...      -- raise mg_last_active, sorted; last,
 *        ON CONFLICT DO UPDATE             so a second writer waits for these
 *                                          row locks only until our COMMIT
 *   COMMIT
 *
 * With postgres.apply_credits the mg_last_active upsert comes first instead
 * of the stubs: the merge then moves balances of customer rows this
 * transaction has already locked in sorted order, so two writers cannot
 * deadlock (they take turns on shared customers instead).
 *
 * With unknown_pass_id: dead_letter neither customer statement runs, and the
 * check runs before each merge and removes rows with an unknown pass id
 * from staging.
 *
 * "Pass" k holds the k-th occurrence of an mg_id inside the batch, so each
 * INSERT sees every id at most once (PostgreSQL refuses to touch a row twice
 * in one statement) and repeated ids merge in arrival order under exactly the
 * same rules as across batches. A batch in which an id occurs more than
 * WRITER_MAX_PASSES times goes as several transactions, in order
 * (writer_pass_prefix), so a hot id cannot hold the rest for hundreds of
 * statements. Values travel only in COPY data and
 * parameters; the SQL text is built once from the table descriptions
 * (table.h, writer_sql.c). A batch may hold rows of several tables: it is
 * ordered by table first (writer_group), so each table's rows are one run
 * and mi_idx is the position in the whole batch.
 *
 * Outcomes follow a three-way verdict. WRITE_OK: acks are released.
 * WRITE_REJECT (a data or constraint error caused by a row): bisect the
 * batch until the offending rows stand alone, commit the rest and
 * dead-letter those with the server's message and SQLSTATE. WRITE_RETRY
 * (anything else: the connection, a refusal, a deadline): the batch goes
 * to the spool. Every statement runs under a deadline (writer_pq.c).
 *
 * What the writer does with each batch — PostgreSQL or the spool, replay,
 * backoff, holding — and its main loop are in writer_deliver.c; the types
 * both files share are in writer_private.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
#include "writer_private.h"

/* ---- connection ------------------------------------------------------- */

void writer_disconnect(struct writer *w)
{
	if (w->connecting) {
		PQfinish(w->connecting);
		w->connecting = NULL;
	}
	if (w->pg) {
		PQfinish(w->pg);
		w->pg = NULL;
	}
	w->up = false;
	w->stalled = false;
	writer_publish(w);
}

/* libpq notices (a server WARNING such as "terminating connection due to
 * immediate shutdown") go to our log instead of bare stderr. */
static void writer_notice(void *arg, const char *message)
{
	const struct writer *w = arg;
	size_t len = strcspn(message, "\n");

	log_warn("writer", "writer=%d: PostgreSQL says: %.*s", w->id, (int)len, message);
}

/*
 * Defaults that bound how long a dead server can stall the writer (a
 * blackholed host, a network that drops packets): connecting, an idle
 * connection (TCP keepalives) and unacknowledged data (tcp_user_timeout).
 * They only apply to TCP, and postgres.conninfo (listed after them) or
 * PGCONNECT_TIMEOUT override them. Statements have their own deadline
 * (writer_pq.c).
 */
static const char *const writer_pg_keys[] = {
	"connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count",
	"tcp_user_timeout", "dbname", "fallback_application_name", NULL
};

static int writer_connect_start(struct writer *w)
{
	const char *vals[] = { getenv("PGCONNECT_TIMEOUT") ? NULL : "10", "10", "5", "3",
			       "30000", w->conninfo, "megaingestd", NULL };
	const char *keys[sizeof(writer_pg_keys) / sizeof(writer_pg_keys[0])];
	size_t k = 0;

	/* Skip a default that is NULL (PGCONNECT_TIMEOUT set): libpq stops at a NULL key. */
	for (size_t i = 0; writer_pg_keys[i]; i++) {
		if (!vals[i])
			continue;
		keys[k] = writer_pg_keys[i];
		vals[k++] = vals[i];
	}
	keys[k] = NULL;
	vals[k] = NULL;
	return writer_pq_connect_start(w, keys, vals);
}

/* The attempt in w->connecting succeeded: it becomes the connection. No
 * session state is set up: every transaction makes what it needs, so a
 * transaction-mode pooler may hand each one another server connection. */
static int writer_connected(struct writer *w)
{
	w->pg = w->connecting;
	w->connecting = NULL;
	if (PQsetnonblocking(w->pg, 1) != 0) {
		log_warn("writer", "writer=%d: cannot make the connection nonblocking: %s", w->id,
			 PQerrorMessage(w->pg));
		writer_disconnect(w);
		return -1;
	}
	PQsetNoticeProcessor(w->pg, writer_notice, w);
	stats_add(STAT_postgres_reconnects_total, 1);
	w->up = true;
	writer_publish(w);
	/* Behind a pooler the backend pid is the pooler's made-up key. */
	log_at_(w->fault_ns ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, "writer",
		"writer=%d: connected to PostgreSQL (server %d, backend key %d)", w->id,
		PQserverVersion(w->pg), PQbackendPID(w->pg));
	return 1;
}

int writer_connect(struct writer *w, int wait_ms, bool loud)
{
	int rc;

	if (w->pg)
		return 1;
	rc = w->connecting ? 0 : writer_connect_start(w);
	if (rc == 0)
		rc = writer_pq_connect_step(w, wait_ms);
	if (rc == 1)
		return writer_connected(w);
	if (rc < 0) {
		char why[2048];

		/* libpq may quote a password from the conninfo: never log it. */
		log_at_(loud ? LOG_LEVEL_WARN : LOG_LEVEL_DEBUG, "writer",
			"writer=%d: cannot connect to PostgreSQL: %s; will retry with backoff",
			w->id, !w->connecting ? "out of memory" :
			PQstatus(w->connecting) == CONNECTION_BAD ?
			config_conninfo_redact(w->conninfo, PQerrorMessage(w->connecting), why,
					       sizeof(why)) : "connect_timeout passed");
		writer_disconnect(w);
	}
	return rc;
}

/*
 * Classify a failed statement. Only SQLSTATE classes 22 (data exception)
 * and 23 (integrity constraint), and 54000 (a value too large for an
 * index), are caused by a row: WRITE_REJECT, the batch is bisected.
 * Everything else — the connection, a read-only database, a revoked
 * privilege, a renamed column, a full disk, too many connections, a
 * cancelled statement — is the database's trouble, not the events':
 * WRITE_RETRY, the batch is spooled and written again later.
 */
enum write_verdict writer_classify(struct writer *w, PGresult *res, struct writer_err *e)
{
	const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *col = res ? PQresultErrorField(res, PG_DIAG_COLUMN_NAME) : NULL;
	const char *con = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
	size_t len;

	snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", st ? st : "");
	snprintf(e->message, sizeof(e->message), "%s", msg ? msg : PQerrorMessage(w->pg));
	len = strlen(e->message);
	while (len > 0 && e->message[len - 1] == '\n')
		e->message[--len] = '\0';
	snprintf(e->field, sizeof(e->field), "%s", col ? col : con ? con : "");
	w->up = false;
	if (PQstatus(w->pg) != CONNECTION_OK || !st)
		return WRITE_RETRY;
	if (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0 || strcmp(st, "54000") == 0) {
		w->up = true; /* the database works; a row is at fault */
		return WRITE_REJECT;
	}
	return WRITE_RETRY;
}

/* Immediate retries of a transaction that failed with SQLSTATE class 40. */
#define WRITER_CLASS40_RETRIES 3

/* ---- passes ---------------------------------------------------------- */

/* Number each record's occurrence of its mg_id within RECS: 1, 2, ...
 * and count the rows of each pass. Returns the highest pass. */
static int writer_number_passes(struct writer *w, struct record **recs, size_t n)
{
	size_t mask = 1;
	int maxpass = 1;

	while (mask < n * 2)
		mask <<= 1;
	memset(w->slots, -1, mask * sizeof(*w->slots));
	mask--;
	for (size_t i = 0; i < n; i++) {
		const char *id = record_get(recs[i], TABLE_COL_ID);
		size_t h = recs[i]->id_hash & mask;

		w->pass[i] = 1;
		while (w->slots[h] >= 0) {
			struct record *o = recs[w->slots[h]];

			if (o->id_hash == recs[i]->id_hash && o->table == recs[i]->table &&
			    strcmp(record_get(o, TABLE_COL_ID), id) == 0) {
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

/* Rows of each pass among RECS[LO..HI) (one table's run). */
static void writer_count_passes(struct writer *w, size_t lo, size_t hi, int maxpass)
{
	memset(w->pass_rows, 0, ((size_t)maxpass + 1) * sizeof(*w->pass_rows));
	for (size_t i = lo; i < hi; i++)
		w->pass_rows[w->pass[i]]++;
}

size_t writer_pass_prefix(struct writer *w, struct record **recs, size_t n, int max)
{
	if (n <= (size_t)max || writer_number_passes(w, recs, n) <= max)
		return n;
	for (size_t i = 1; i < n; i++) /* the first record is always pass 1 */
		if (w->pass[i] > max)
			return i;
	return n;
}

/* Order RECS[0..N) by table, keeping arrival order within each table (the
 * order of an mg_id's events is what merges). Usually one table: a scan. */
static void writer_group(struct writer *w, struct record **recs, size_t n)
{
	size_t k = 0;
	bool mixed = false;

	for (size_t i = 1; i < n && !mixed; i++)
		mixed = recs[i]->table < recs[i - 1]->table;
	if (!mixed)
		return;
	for (int t = 0; t < TABLE_COUNT; t++)
		for (size_t i = 0; i < n; i++)
			if (recs[i]->table == (uint32_t)t)
				w->sorted[k++] = recs[i];
	memcpy(recs, w->sorted, n * sizeof(*recs));
}

/* End of the run of RECS[LO..N) that belongs to LO's table. */
static size_t writer_run_end(struct record **recs, size_t lo, size_t n)
{
	size_t hi = lo + 1;

	while (hi < n && recs[hi]->table == recs[lo]->table)
		hi++;
	return hi;
}

/* ---- one transaction -------------------------------------------------- */

static void writer_skip_set(struct writer_skip *sk, int table, char kind)
{
	/* Static text: one per table with immutable rows. */
	static const char *const immutable[TABLE_COUNT] = {
		"credit_transaction rows are immutable; this repeat carries other values and "
		"was ignored",
		"admin_audit rows are immutable; this repeat carries other values and was ignored",
	};

	switch (kind) {
	case 't':
		sk->reason = RECORD_REASON_BAD_TYPE;
		sk->field = "mg_record_type";
		sk->message = "mg_id already belongs to a row of another mg_record_type; not merged";
		break;
	case 'c':
		sk->reason = RECORD_REASON_COUNT; /* not a rejection: reported only */
		sk->field = "mg_id";
		sk->message = immutable[table];
		break;
	default:
		sk->reason = RECORD_REASON_UNKNOWN_PASS_ID;
		sk->field = table_list[table]->cols[table_list[table]->col_customer].name;
		sk->message = table ? "mg_actor_pass_id is not a known customer "
				      "(postgres.unknown_pass_id: dead_letter)" :
				      "mg_pass_id is not a known customer (postgres.unknown_pass_id: "
				      "dead_letter)";
		break;
	}
}

/* Remove from staging the rows of skips [FIRST, nskips) that are to be
 * dead-lettered (not the credit repeats, which are only reported). */
static enum write_verdict writer_drop_skips(struct writer *w, int table, size_t first,
					    struct writer_err *e)
{
	struct evbuffer *ids = evbuffer_new();
	const char *params[1];
	enum write_verdict v = WRITE_OK;
	char *list = NULL;
	int n = 0, rc = ids ? evbuffer_add(ids, "{", 1) : -1;

	/* A list short of an id would merge a row that is also dead-lettered. */
	for (size_t i = first; rc == 0 && i < w->nskips; i++)
		if (w->skips[i].reason != RECORD_REASON_COUNT &&
		    evbuffer_add_printf(ids, "%s%d", n++ ? "," : "", w->skips[i].idx) < 0)
			rc = -1;
	if (rc == 0 && evbuffer_add(ids, "}", 1) == 0)
		list = writer_sql_take(ids);
	else if (ids)
		evbuffer_free(ids);
	if (!list) {
		snprintf(e->message, sizeof(e->message), "out of memory");
		return WRITE_RETRY;
	}
	params[0] = list;
	if (n > 0)
		v = writer_pq_exec(w, w->sql_drop[table], 1, params, e, NULL);
	free(list);
	return v;
}

/* Remember the rows of pass PASS that must not be merged; with DROP, also
 * remove those to be dead-lettered from staging (before the merge). */
static enum write_verdict writer_check(struct writer *w, int table, const char *pass, bool drop,
				       struct writer_err *e)
{
	const char *params[1] = { pass };
	PGresult *res = NULL;
	enum write_verdict v = writer_pq_exec(w, w->sql_check[table], 1, params, e, &res);
	size_t first = w->nskips;
	int rows;

	if (v != WRITE_OK)
		return v;
	rows = PQntuples(res);
	for (int i = 0; i < rows && w->nskips < w->cap; i++) {
		struct writer_skip *sk = &w->skips[w->nskips++];

		sk->idx = atoi(PQgetvalue(res, i, 0));
		writer_skip_set(sk, table, PQgetvalue(res, i, 1)[0]);
	}
	PQclear(res);
	return drop && w->nskips > first ? writer_drop_skips(w, table, first, e) : WRITE_OK;
}

/* Merge pass PASS; *MERGED is the number of rows it inserted or changed. */
static enum write_verdict writer_merge_pass(struct writer *w, int table, const char *pass,
					    long *merged, struct writer_err *e)
{
	const char *params[1] = { pass };
	PGresult *res = NULL;
	enum write_verdict v = writer_pq_exec(w, w->sql_merge[table], 1, params, e, &res);

	if (v != WRITE_OK)
		return v;
	/* With apply_credits the statement ends in SELECT count(*) FROM ins. */
	*merged = atol(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 ?
		       PQgetvalue(res, 0, 0) : PQcmdTuples(res));
	PQclear(res);
	return WRITE_OK;
}

/*
 * Check and merge each pass in order: the k-th event of an mg_id merges
 * into what the first k-1 made of the row. The merge itself leaves alone a
 * row owned by another record type or a repeated credit_transaction, so the
 * check that names those runs only when a pass merged fewer rows than it
 * staged (an exact replay also does that). With unknown_pass_id:
 * dead_letter the check must run first: the foreign key would refuse the
 * whole statement.
 */
static enum write_verdict writer_merge(struct writer *w, int table, int maxpass,
				       struct writer_err *e)
{
	for (int p = 1; p <= maxpass && w->pass_rows[p] > 0; p++) {
		char pass[16];
		long merged = 0;
		enum write_verdict v = WRITE_OK;

		snprintf(pass, sizeof(pass), "%d", p);
		if (w->pass_id_dead_letter)
			v = writer_check(w, table, pass, true, e);
		if (v == WRITE_OK)
			v = writer_merge_pass(w, table, pass, &merged, e);
		if (v == WRITE_OK && !w->pass_id_dead_letter && merged < w->pass_rows[p])
			v = writer_check(w, table, pass, false, e);
		if (v != WRITE_OK)
			return v;
	}
	return WRITE_OK;
}

/* Each table's run of RECS: COPY into its staging table. */
static enum write_verdict writer_copy_all(struct writer *w, struct record **recs, size_t n,
					  struct writer_err *e)
{
	enum write_verdict v = WRITE_OK;

	for (size_t lo = 0, hi; lo < n && v == WRITE_OK; lo = hi) {
		hi = writer_run_end(recs, lo, n);
		v = writer_copy(w, recs, lo, hi, e);
	}
	return v;
}

/* Each table's run of RECS: its passes merged in order. */
static enum write_verdict writer_merge_all(struct writer *w, struct record **recs, size_t n,
					   int maxpass, struct writer_err *e)
{
	enum write_verdict v = WRITE_OK;

	for (size_t lo = 0, hi; lo < n && v == WRITE_OK; lo = hi) {
		hi = writer_run_end(recs, lo, n);
		writer_count_passes(w, lo, hi, maxpass);
		v = writer_merge(w, recs[lo]->table, maxpass, e);
	}
	return v;
}

/* The first round trip of a transaction: BEGIN, the server-side statement
 * timeout, and the staging table, made here if this server session lacks
 * it (a pooler may give each transaction another one). */
static enum write_verdict writer_begin(struct writer *w, struct writer_err *e)
{
	snprintf(w->sql_begin_buf, w->sql_begin_cap, "%s%d", w->sql_begin,
		 atomic_load(&w->statement_timeout_ms));
	return writer_pq_exec(w, w->sql_begin_buf, -1, NULL, e, NULL);
}

/* One attempt at the transaction; STUBS: run the stub statement. */
static enum write_verdict writer_attempt(struct writer *w, struct record **recs, size_t n,
					 bool stubs, struct writer_err *e)
{
	int maxpass = writer_number_passes(w, recs, n);
	enum write_verdict v;

	w->nskips = 0;
	v = writer_begin(w, e);
	if (v == WRITE_OK)
		v = writer_copy_all(w, recs, n, e);
	if (v == WRITE_OK && !w->pass_id_dead_letter && w->apply_credits)
		v = writer_pq_exec(w, w->sql_last_active, 0, NULL, e, NULL);
	else if (v == WRITE_OK && stubs)
		v = writer_pq_exec(w, w->sql_stubs, 0, NULL, e, NULL);
	if (v == WRITE_OK)
		v = writer_merge_all(w, recs, n, maxpass, e);
	/* Last, so the customer row locks it takes are held only until COMMIT. */
	if (v == WRITE_OK && !w->pass_id_dead_letter && !w->apply_credits)
		v = writer_pq_exec(w, w->sql_last_active, 0, NULL, e, NULL);
	if (v == WRITE_OK)
		v = writer_pq_exec(w, "COMMIT", 0, NULL, e, NULL);
	if (v != WRITE_OK && w->pg && PQstatus(w->pg) == CONNECTION_OK) {
		struct writer_err ignored;
		bool up = w->up;

		if (writer_pq_exec(w, "ROLLBACK", -1, NULL, &ignored, NULL) == WRITE_OK)
			w->up = up;
	}
	if (v == WRITE_OK)
		w->up = true;
	return v;
}

/* Write RECS[0..N) in one transaction. The stub statement is left out
 * when every pass id is known to exist (writer_known.c); if one was
 * deleted meanwhile, the foreign key says so and the batch is written
 * again with it. */
enum write_verdict writer_transaction(struct writer *w, struct record **recs, size_t n,
				     struct writer_err *e)
{
	bool customers = !w->pass_id_dead_letter && !w->apply_credits;
	bool stubs;
	enum write_verdict v;

	writer_group(w, recs, n);
	stubs = customers && !writer_known_all(w, recs, n);
	v = writer_attempt(w, recs, n, stubs, e);

	/* A deadlock or serialization failure (class 40) is another
	 * transaction's timing, not a fault: try again at once, a few times. */
	for (int i = 0; i < WRITER_CLASS40_RETRIES && v == WRITE_RETRY && w->pg &&
	     strncmp(e->sqlstate, "40", 2) == 0; i++) {
		log_debug("writer", "writer=%d: SQLSTATE %s (%s); writing the batch again",
			  w->id, e->sqlstate, e->message);
		v = writer_attempt(w, recs, n, stubs, e);
	}
	if (v == WRITE_REJECT && customers && !stubs && strcmp(e->sqlstate, "23503") == 0) {
		log_info("writer", "writer=%d: a known mg_pass_id is gone from mega_customers "
			 "(%s); writing the batch again with stub customers", w->id, e->message);
		writer_known_clear(&w->known);
		v = writer_attempt(w, recs, n, true, e);
	}
	if (v == WRITE_OK && customers)
		writer_known_add(w, n);
	return v;
}

/* ---- outcomes --------------------------------------------------------- */

int writer_dead_letter(struct writer *w, const struct record *r, enum record_reason reason,
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
		 record_get(r, TABLE_COL_ID), message, sqlstate && *sqlstate ? " SQLSTATE " : "",
		 sqlstate ? sqlstate : "");
	if (spool_dead_letter(w->spool, &dl) == 0)
		return 0;
	if (r->ack) {
		/* No ack, so the client keeps the event (its connection is
		 * closed instead, and it resends). */
		log_error("writer", "writer=%d: mg_id=%s could not be dead-lettered either "
			  "(write failed or spool.dead_letter_max_bytes reached); its message is "
			  "not acked", w->id, record_get(r, TABLE_COL_ID));
		atomic_store(&r->ack->failed, true);
		return 0;
	}
	if (!w->replaying) {
		log_error("writer", "writer=%d: mg_id=%s could not be dead-lettered either "
			  "(write failed or spool.dead_letter_max_bytes reached); its client asked "
			  "for no ack, so it is dropped", w->id, record_get(r, TABLE_COL_ID));
		return 0;
	}
	log_error("writer", "writer=%d: mg_id=%s could not be dead-lettered either (write failed "
		  "or spool.dead_letter_max_bytes reached); it was acked, so it stays in the spool "
		  "and is tried again after the backoff", w->id, record_get(r, TABLE_COL_ID));
	return -1;
}

static int writer_skip_cmp(const void *a, const void *b)
{
	const struct writer_skip *x = a, *y = b;

	return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Receive -> commit latency of every committed event of RECS, and the rows
 * committed per table (the dropped skips, dead-lettered, are left out). Sorts w->skips, which is done with. */
static void writer_observe_latency(struct writer *w, struct record **recs, size_t n,
				   size_t dropped)
{
	int64_t now = clock_ns(CLOCK_REALTIME);
	uint64_t rows[TABLE_COUNT] = { 0 };
	size_t k = 0;

	if (dropped)
		qsort(w->skips, w->nskips, sizeof(*w->skips), writer_skip_cmp);
	for (size_t i = 0; i < n; i++) {
		bool committed = true;

		for (; dropped && k < w->nskips && (size_t)w->skips[k].idx == i; k++)
			if (w->skips[k].reason != RECORD_REASON_COUNT)
				committed = false;
		if (!committed)
			continue;
		stats_observe_ns(STAT_event_commit_latency_seconds, now - (int64_t)recs[i]->recv_ns);
		rows[recs[i]->table]++;
	}
	for (int t = 0; t < TABLE_COUNT; t++)
		if (rows[t])
			stats_table_rows(t, rows[t]);
}

int writer_committed(struct writer *w, struct record **recs, size_t n)
{
	size_t dropped = 0;
	int rc = 0;

	for (size_t i = 0; i < w->nskips; i++) {
		const struct writer_skip *sk = &w->skips[i];

		if (sk->reason == RECORD_REASON_COUNT) {
			stats_add(STAT_credit_conflicts_total, 1);
			log_warn("writer", "writer=%d: mg_id=%s: %s", w->id,
				 record_get(recs[sk->idx], TABLE_COL_ID), sk->message);
			continue;
		}
		dropped++;
		if (writer_dead_letter(w, recs[sk->idx], sk->reason, sk->message, sk->field,
				       NULL) < 0)
			rc = -1;
	}
	writer_observe_latency(w, recs, n, dropped);
	stats_add(STAT_events_committed_total, n - dropped);
	stats_add(STAT_batches_committed_total, 1);
	w->nskips = 0;
	return rc;
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
	free(w->sql_begin);
	free(w->sql_begin_buf);
	for (int t = 0; t < TABLE_COUNT; t++) {
		free(w->sql_copy[t]);
		free(w->sql_check[t]);
		free(w->sql_merge[t]);
		free(w->sql_drop[t]);
	}
	free(w->sorted);
	free(w->sql_stubs);
	free(w->sql_last_active);
	free(w->copy_buf);
	free(w->pass);
	free(w->pass_rows);
	free(w->pass_hash);
	writer_known_free(&w->known);
	free(w->slots);
	free(w->batch);
	free(w->skips);
	free(w);
}

/* The SQL text, built once; NULL members on ENOMEM. */
static int writer_alloc_sql(struct writer *w)
{
	int ok = 1;

	w->sql_begin = writer_sql_begin();
	w->sql_begin_cap = w->sql_begin ? strlen(w->sql_begin) + 16 : 0;
	w->sql_begin_buf = malloc(w->sql_begin_cap);
	for (int t = 0; t < TABLE_COUNT; t++) {
		const struct table *tb = table_list[t];

		w->sql_copy[t] = writer_sql_copy(tb);
		w->sql_check[t] = writer_sql_check(tb, table_name(t), w->pass_id_dead_letter);
		w->sql_merge[t] = writer_sql_merge(tb, table_name(t), w->apply_credits);
		w->sql_drop[t] = writer_sql_drop(tb);
		ok = ok && w->sql_copy[t] && w->sql_check[t] && w->sql_merge[t] && w->sql_drop[t];
	}
	w->sql_stubs = writer_sql_stubs();
	w->sql_last_active = writer_sql_last_active();
	return ok && w->sql_begin && w->sql_begin_buf && w->sql_stubs && w->sql_last_active ?
	       0 : -1;
}

/*
 * Size every per-batch array for batches of MAX records. The one place
 * they are sized, at start and when a reload or a spool frame needs more,
 * so none can lag behind w->cap. On failure the cap is kept (arrays that
 * did grow are only larger than it). 0 or -1.
 */
int writer_grow(struct writer *w, size_t max)
{
	int rc = 0;

/* realloc w->F to N elements; on failure w->F is kept and rc set. */
#define WRITER_GROW(f, n)                                              \
	do {                                                           \
		void *grown_ = realloc(w->f, (n) * sizeof(*w->f));     \
		if (grown_)                                            \
			w->f = grown_;                                 \
		else                                                   \
			rc = -1;                                       \
	} while (0)
	WRITER_GROW(batch, max);
	WRITER_GROW(sorted, max);
	WRITER_GROW(pass, max);
	WRITER_GROW(pass_rows, max + 1);
	WRITER_GROW(pass_hash, max);
	WRITER_GROW(slots, max * 4);
	WRITER_GROW(skips, max);
#undef WRITER_GROW
	if (rc == 0)
		w->cap = max;
	return rc;
}

static int writer_alloc(struct writer *w, const struct config *cfg)
{
	w->conninfo = strdup(cfg->pg_conninfo);
	w->copy_buf = malloc(WRITER_COPY_CHUNK);
	return w->conninfo && writer_alloc_sql(w) == 0 && w->copy_buf &&
	       writer_grow(w, (size_t)cfg->writer_batch_max_events) == 0 &&
	       writer_known_init(&w->known) == 0 ? 0 : -1;
}

struct writer *writer_start(int id, const struct config *cfg, struct queue *q,
			    struct spool *spool, struct ackq *ackq)
{
	struct writer *w = calloc(1, sizeof(*w));
	int rc;

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
	atomic_store(&w->progress_ns, clock_mono_ns());
	if (writer_alloc(w, cfg) < 0) {
		log_error("writer", "writer=%d: out of memory", id);
		writer_free(w);
		return NULL;
	}
	rc = pthread_create(&w->thread, NULL, writer_main, w);
	if (rc != 0) {
		log_error("writer", "writer=%d: cannot start thread: %s", id, strerror(rc));
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
	atomic_store(&w->statement_timeout_ms, cfg->writer_statement_timeout_ms);
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
	return (double)(clock_mono_ns() - atomic_load(&w->progress_ns)) / 1e9;
}
