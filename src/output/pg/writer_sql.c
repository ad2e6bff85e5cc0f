/*
 * writer_sql.c: the SQL text the writer threads run, built once at start
 * from record_columns[] (see writer.c for the transaction it makes up). The
 * staging table is named by a fingerprint of its columns, so a server
 * session that a pooler kept from a daemon with other columns is never
 * given rows it cannot hold.
 *
 * Kept apart from writer.c because it is pure text generation: no
 * connection, no thread, no state. Values never appear in this text; they
 * travel in COPY data and as parameters.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

#include <event2/buffer.h>

#include "record.h"
#include "writer_sql.h"

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

char *writer_sql_take(struct evbuffer *b)
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

/* The staging table's columns: "(mi_idx int4, mi_pass int4, mg_id text, ...)". */
static void writer_sql_staging_columns(struct evbuffer *b)
{
	evbuffer_add_printf(b, "(mi_idx int4, mi_pass int4");
	for (int i = 0; i < RECORD_COL_COUNT; i++)
		evbuffer_add_printf(b, ", %s %s", record_columns[i].name,
				    writer_pgtype[record_columns[i].type]);
	evbuffer_add_printf(b, ")");
}

/* FNV-1a: a fingerprint, not a defence against anyone. */
static uint32_t writer_sql_fnv(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

int writer_sql_staging_name(char *buf, size_t len)
{
	struct evbuffer *b = evbuffer_new();
	char *cols;

	if (!b)
		return -1;
	writer_sql_staging_columns(b);
	cols = writer_sql_take(b);
	if (!cols)
		return -1;
	snprintf(buf, len, "mi_staging_%08x", writer_sql_fnv(cols));
	free(cols);
	return 0;
}

/*
 * The first round trip of every transaction, in the simple protocol. The
 * staging table is made inside the transaction when this server session
 * lacks it (a transaction-mode pooler may hand each transaction another
 * session; IF NOT EXISTS costs one catalog lookup otherwise), quietly
 * (client_min_messages: no "already exists" notice), and emptied at each
 * COMMIT. The caller appends the statement timeout in milliseconds.
 */
char *writer_sql_begin(const char *staging)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "BEGIN; SET LOCAL client_min_messages = warning; "
			    "CREATE TEMP TABLE IF NOT EXISTS %s ", staging);
	writer_sql_staging_columns(b);
	evbuffer_add_printf(b, " ON COMMIT DELETE ROWS; SET LOCAL statement_timeout = ");
	return writer_sql_take(b);
}

char *writer_sql_drop(const char *staging)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "DELETE FROM %s WHERE mi_idx = ANY ($1::int4[])", staging);
	return writer_sql_take(b);
}

char *writer_sql_copy(const char *staging)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "COPY %s (mi_idx, mi_pass", staging);
	for (int i = 0; i < RECORD_COL_COUNT; i++)
		evbuffer_add_printf(b, ", %s", record_columns[i].name);
	evbuffer_add_printf(b, ") FROM STDIN (FORMAT binary)");
	return writer_sql_take(b);
}

/*
 * postgres.apply_credits: the rows the merge newly inserted (xmax = 0) that
 * are credit_transactions move their customer's balance, once per mg_id
 * however often the event is retried. A top-up (mg_delta > 0 and mg_reason
 * 'topup') also raises mg_last_topup_at and sets mg_topup_source from the
 * newest top-up of the batch. The statement returns the number of rows the
 * merge inserted or changed, as the plain INSERT's command tag does.
 */
static const char writer_sql_credits[] =
	" RETURNING mg_pass_id, mg_delta, mg_record_type, mg_reason, mg_source, mg_created_at, "
	"(xmax = 0) AS inserted), "
	"credit AS (UPDATE mega_customers c SET mg_credits = c.mg_credits + d.delta, "
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
	"WHERE c.mg_pass_id = d.mg_pass_id) "
	"SELECT count(*) FROM ins";

char *writer_sql_merge(const char *table, const char *staging, bool apply_credits)
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
	evbuffer_add_printf(b, "now() FROM %s WHERE mi_pass = $1 "
			    "ON CONFLICT (mg_id) DO UPDATE SET ", staging);
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
	return writer_sql_take(b);
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
char *writer_sql_check(const char *table, const char *staging, bool pass_id_dead_letter)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "SELECT s.mi_idx, CASE WHEN g.mg_record_type <> s.mg_record_type "
			    "THEN 't' ELSE 'c' END FROM %s s JOIN %s g ON g.mg_id = s.mg_id "
			    "WHERE s.mi_pass = $1 AND (g.mg_record_type <> s.mg_record_type OR "
			    "(g.mg_record_type = 'credit_transaction' AND ", staging, table);
	writer_sql_differs(b);
	evbuffer_add_printf(b, "))");
	if (pass_id_dead_letter)
		evbuffer_add_printf(b, " UNION ALL SELECT s.mi_idx, 'p' FROM %s s "
				    "WHERE s.mi_pass = $1 AND s.mg_pass_id IS NOT NULL AND NOT EXISTS "
				    "(SELECT 1 FROM mega_customers c WHERE c.mg_pass_id = s.mg_pass_id)",
				    staging);
	evbuffer_add_printf(b, " ORDER BY 1");
	return writer_sql_take(b);
}

/* The batch's pass ids with the newest event time of each, in sorted key
 * order: rows are inserted or locked in that order, so two writers never
 * deadlock on mega_customers. TAIL says what happens to existing rows. */
static char *writer_sql_customers(const char *staging, const char *tail)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "INSERT INTO mega_customers AS c (mg_pass_id, mg_credits, "
			    "mg_source_system, mg_last_active) SELECT mg_pass_id, 0, 'megaingest', "
			    "max(COALESCE(mg_created_at, now())) FROM %s WHERE mg_pass_id IS NOT NULL "
			    "GROUP BY mg_pass_id ORDER BY mg_pass_id %s", staging, tail);
	return writer_sql_take(b);
}

/* Before the merge: a stub for each new pass id (the foreign key needs it).
 * DO NOTHING takes no lock on existing rows. */
char *writer_sql_stubs(const char *staging)
{
	return writer_sql_customers(staging, "ON CONFLICT (mg_pass_id) DO NOTHING");
}

/* Last statement before COMMIT: raise mg_last_active (never lower it). The
 * row locks this takes are what a second writer waits for, so they are
 * taken as late as possible. */
char *writer_sql_last_active(const char *staging)
{
	return writer_sql_customers(staging,
		"ON CONFLICT (mg_pass_id) DO UPDATE SET mg_last_active = EXCLUDED.mg_last_active "
		"WHERE c.mg_last_active IS NULL OR c.mg_last_active < EXCLUDED.mg_last_active");
}
