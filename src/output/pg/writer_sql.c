/*
 * writer_sql.c: the SQL text the writer threads run, derived once at start
 * from the table descriptions (table.h; see writer.c for the transaction
 * it makes up). Each table has its own staging table, named by a
 * fingerprint of its columns, so a server session that a pooler kept from
 * a daemon with other columns is never given rows it cannot hold.
 *
 * No column is named here: every name comes from a description, and the
 * merge rule of each column (table_merge) decides the expression that
 * updates it. Values never appear in this text; they travel in COPY data
 * and as parameters.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

#include <event2/buffer.h>

#include "table.h"
#include "writer_sql.h"

/* The customers table every table's customer column references, and the
 * stub rows made for a new pass id. */
#define WRITER_SQL_CUSTOMERS "mega_customers"
#define WRITER_SQL_CUSTOMER_KEY "mg_pass_id"

/* Set when an append to the text being built failed (out of memory), so
 * writer_sql_take fails instead of handing out truncated SQL. Per thread:
 * the main thread builds each writer's text while earlier writers run. */
static _Thread_local bool writer_sql_failed;

#define writer_sql_add(b, ...) \
	((void)(evbuffer_add_printf((b), __VA_ARGS__) < 0 && (writer_sql_failed = true)))

char *writer_sql_take(struct evbuffer *b)
{
	size_t len = evbuffer_get_length(b);
	char *s = writer_sql_failed ? NULL : malloc(len + 1);

	writer_sql_failed = false;
	if (s) {
		evbuffer_remove(b, s, len);
		s[len] = '\0';
	}
	evbuffer_free(b);
	return s;
}

/* The value a merge assigns to column I of an existing row t from EXCLUDED. */
static void writer_merge_expr(struct evbuffer *b, const struct table *t, int i)
{
	const char *c = t->cols[i].name;

	switch (t->cols[i].merge) {
	case TABLE_MERGE_JSON:
		writer_sql_add(b, "t.%s || COALESCE(EXCLUDED.%s, '{}'::jsonb)", c, c);
		break;
	case TABLE_MERGE_STATUS:
		writer_sql_add(b, "CASE WHEN EXCLUDED.%s = 'pending' AND t.%s IN "
				    "('succeeded', 'failed') THEN t.%s ELSE COALESCE(EXCLUDED.%s, "
				    "t.%s) END", c, c, c, c, c);
		break;
	case TABLE_MERGE_SET_ONCE:
		writer_sql_add(b, "COALESCE(t.%s, EXCLUDED.%s)", c, c);
		break;
	case TABLE_MERGE_RISE:
		writer_sql_add(b, "GREATEST(t.%s, EXCLUDED.%s)", c, c);
		break;
	default:
		writer_sql_add(b, "COALESCE(EXCLUDED.%s, t.%s)", c, c);
		break;
	}
}

/* Columns a merge may change: all but the key and the record type (which
 * guards the merge), and the set-once columns that are always set on
 * insert (a fill: the creation time). */
static bool writer_mergeable(const struct table *t, int i)
{
	const struct table_column *c = &t->cols[i];

	return c->merge != TABLE_MERGE_KEY && i != TABLE_COL_RECORD_TYPE &&
	       !(c->merge == TABLE_MERGE_SET_ONCE && c->fill);
}

/* The staging table's columns: "(mi_idx int4, mi_pass int4, mg_id text, ...)". */
static void writer_sql_staging_columns(struct evbuffer *b, const struct table *t)
{
	writer_sql_add(b, "(mi_idx int4, mi_pass int4");
	for (int i = 0; i < t->ncols; i++)
		writer_sql_add(b, ", %s %s", t->cols[i].name, table_type_word(t->cols[i].type));
	writer_sql_add(b, ")");
}

void writer_sql_staging_name(const struct table *t, char *buf, size_t len)
{
	snprintf(buf, len, "mi_staging_%08x", table_columns_fingerprint(t));
}

/*
 * The first round trip of every transaction, in the simple protocol. The
 * staging tables are made inside the transaction when this server session
 * lacks them (a transaction-mode pooler may hand each transaction another
 * session; IF NOT EXISTS costs one catalog lookup otherwise), quietly
 * (client_min_messages: no "already exists" notice), and emptied at each
 * COMMIT. The caller appends the statement timeout in milliseconds.
 */
char *writer_sql_begin(void)
{
	struct evbuffer *b = evbuffer_new();
	char staging[32];

	if (!b)
		return NULL;
	writer_sql_add(b, "BEGIN; SET LOCAL client_min_messages = warning; ");
	for (int t = 0; t < TABLE_COUNT; t++) {
		writer_sql_staging_name(table_list[t], staging, sizeof(staging));
		writer_sql_add(b, "CREATE TEMP TABLE IF NOT EXISTS %s ", staging);
		writer_sql_staging_columns(b, table_list[t]);
		writer_sql_add(b, " ON COMMIT DELETE ROWS; ");
	}
	writer_sql_add(b, "SET LOCAL statement_timeout = ");
	return writer_sql_take(b);
}

char *writer_sql_drop(const struct table *t)
{
	struct evbuffer *b = evbuffer_new();
	char staging[32];

	if (!b)
		return NULL;
	writer_sql_staging_name(t, staging, sizeof(staging));
	writer_sql_add(b, "DELETE FROM %s WHERE mi_idx = ANY ($1::int4[])", staging);
	return writer_sql_take(b);
}

char *writer_sql_copy(const struct table *t)
{
	struct evbuffer *b = evbuffer_new();
	char staging[32];

	if (!b)
		return NULL;
	writer_sql_staging_name(t, staging, sizeof(staging));
	writer_sql_add(b, "COPY %s (mi_idx, mi_pass", staging);
	for (int i = 0; i < t->ncols; i++)
		writer_sql_add(b, ", %s", t->cols[i].name);
	writer_sql_add(b, ") FROM STDIN (FORMAT binary)");
	return writer_sql_take(b);
}

/* "'a', 'b'": T's immutable record types as SQL literals (names from the
 * description, never from an event). */
static void writer_sql_immutable(struct evbuffer *b, const struct table *t)
{
	for (int i = 0; i < t->nimmutable; i++)
		writer_sql_add(b, "%s'%s'", i ? ", " : "", t->immutable[i]);
}

/* The merge's guard and its "only when something changes" test: an exact
 * replay writes no new row version. */
static void writer_sql_merge_where(struct evbuffer *b, const struct table *t)
{
	const char *type = t->cols[TABLE_COL_RECORD_TYPE].name, *sep = "";

	writer_sql_add(b, " WHERE t.%s = EXCLUDED.%s", type, type);
	if (t->nimmutable) {
		writer_sql_add(b, " AND t.%s NOT IN (", type);
		writer_sql_immutable(b, t);
		writer_sql_add(b, ")");
	}
	writer_sql_add(b, " AND ROW(");
	for (int i = 0; i < t->ncols; i++) {
		if (!writer_mergeable(t, i))
			continue;
		writer_sql_add(b, "%s", sep);
		writer_merge_expr(b, t, i);
		sep = ", ";
	}
	writer_sql_add(b, ") IS DISTINCT FROM ROW(");
	sep = "";
	for (int i = 0; i < t->ncols; i++) {
		if (!writer_mergeable(t, i))
			continue;
		writer_sql_add(b, "%st.%s", sep, t->cols[i].name);
		sep = ", ";
	}
	writer_sql_add(b, ")");
}

char *writer_sql_merge(const struct table *t, const char *name, bool apply_credits)
{
	struct evbuffer *b = evbuffer_new();
	bool credits = apply_credits && t->credits_sql;
	char staging[32];

	if (!b)
		return NULL;
	writer_sql_staging_name(t, staging, sizeof(staging));
	if (credits)
		writer_sql_add(b, "WITH ins AS (");
	writer_sql_add(b, "INSERT INTO %s AS t (", name);
	for (int i = 0; i < t->ncols; i++)
		writer_sql_add(b, "%s, ", t->cols[i].name);
	writer_sql_add(b, "mg_updated_at) SELECT ");
	for (int i = 0; i < t->ncols; i++) {
		const struct table_column *c = &t->cols[i];

		if (c->fill)
			writer_sql_add(b, "COALESCE(%s, %s), ", c->name, c->fill);
		else
			writer_sql_add(b, "%s, ", c->name);
	}
	writer_sql_add(b, "now() FROM %s WHERE mi_pass = $1 "
			    "ON CONFLICT (%s) DO UPDATE SET ", staging, t->cols[TABLE_COL_ID].name);
	for (int i = 0; i < t->ncols; i++) {
		if (!writer_mergeable(t, i))
			continue;
		writer_sql_add(b, "%s = ", t->cols[i].name);
		writer_merge_expr(b, t, i);
		writer_sql_add(b, ", ");
	}
	writer_sql_add(b, "mg_updated_at = now()");
	writer_sql_merge_where(b, t);
	if (credits)
		writer_sql_add(b, "%s", t->credits_sql);
	return writer_sql_take(b);
}

/* "A staged value differs from the stored row": used to spot a repeated
 * immutable row that tries to change what it holds. */
static void writer_sql_differs(struct evbuffer *b, const struct table *t)
{
	const char *sep = "";

	writer_sql_add(b, "(");
	for (int i = 0; i < t->ncols; i++) {
		const char *c = t->cols[i].name;

		if (!writer_mergeable(t, i))
			continue;
		if (t->cols[i].merge == TABLE_MERGE_JSON)
			writer_sql_add(b, "%s(s.%s IS NOT NULL AND g.%s || s.%s <> g.%s)",
					    sep, c, c, c, c);
		else
			writer_sql_add(b, "%s(s.%s IS NOT NULL AND s.%s IS DISTINCT FROM g.%s)",
					    sep, c, c, c);
		sep = " OR ";
	}
	writer_sql_add(b, ")");
}

/* Rows of pass $1 that must not be merged: 't' another record type owns the
 * mg_id, 'c' a repeated immutable row with other values (kept as a no-op,
 * only reported), 'p' an unknown pass id in dead_letter mode. */
char *writer_sql_check(const struct table *t, const char *name, bool pass_id_dead_letter)
{
	struct evbuffer *b = evbuffer_new();
	const char *type = t->cols[TABLE_COL_RECORD_TYPE].name, *id = t->cols[TABLE_COL_ID].name;
	const char *cust = t->cols[t->col_customer].name;
	char staging[32];

	if (!b)
		return NULL;
	writer_sql_staging_name(t, staging, sizeof(staging));
	writer_sql_add(b, "SELECT s.mi_idx, CASE WHEN g.%s <> s.%s THEN 't' ELSE 'c' END "
			    "FROM %s s JOIN %s g ON g.%s = s.%s WHERE s.mi_pass = $1 AND "
			    "(g.%s <> s.%s", type, type, staging, name, id, id, type, type);
	if (t->nimmutable) {
		writer_sql_add(b, " OR (g.%s IN (", type);
		writer_sql_immutable(b, t);
		writer_sql_add(b, ") AND ");
		writer_sql_differs(b, t);
		writer_sql_add(b, ")");
	}
	writer_sql_add(b, ")");
	if (pass_id_dead_letter)
		writer_sql_add(b, " UNION ALL SELECT s.mi_idx, 'p' FROM %s s "
				    "WHERE s.mi_pass = $1 AND s.%s IS NOT NULL AND NOT EXISTS "
				    "(SELECT 1 FROM " WRITER_SQL_CUSTOMERS " c WHERE c."
				    WRITER_SQL_CUSTOMER_KEY " = s.%s)", staging, cust, cust);
	writer_sql_add(b, " ORDER BY 1");
	return writer_sql_take(b);
}

/* Every table's pass ids with the newest event time of each, in sorted
 * key order, in one statement: rows are inserted or locked in that order,
 * so two writers never deadlock on mega_customers. TAIL says what happens
 * to existing rows. */
static char *writer_sql_customers(const char *tail)
{
	struct evbuffer *b = evbuffer_new();
	char staging[32];

	if (!b)
		return NULL;
	writer_sql_add(b, "INSERT INTO " WRITER_SQL_CUSTOMERS " AS c ("
			    WRITER_SQL_CUSTOMER_KEY ", mg_credits, mg_source_system, mg_last_active) "
			    "SELECT p, 0, 'megaingest', max(COALESCE(at, now())) FROM (");
	for (int i = 0; i < TABLE_COUNT; i++) {
		const struct table *t = table_list[i];

		writer_sql_staging_name(t, staging, sizeof(staging));
		writer_sql_add(b, "%sSELECT %s AS p, %s AS at FROM %s WHERE %s IS NOT NULL",
				    i ? " UNION ALL " : "", t->cols[t->col_customer].name,
				    t->cols[t->col_created].name, staging,
				    t->cols[t->col_customer].name);
	}
	writer_sql_add(b, ") x GROUP BY p ORDER BY p %s", tail);
	return writer_sql_take(b);
}

/* Before the merge: a stub for each new pass id (the foreign key needs it).
 * DO NOTHING takes no lock on existing rows. */
char *writer_sql_stubs(void)
{
	return writer_sql_customers("ON CONFLICT (" WRITER_SQL_CUSTOMER_KEY ") DO NOTHING");
}

/* Last statement before COMMIT: raise mg_last_active (never lower it). The
 * row locks this takes are what a second writer waits for, so they are
 * taken as late as possible. */
char *writer_sql_last_active(void)
{
	return writer_sql_customers(
		"ON CONFLICT (" WRITER_SQL_CUSTOMER_KEY ") DO UPDATE SET mg_last_active = "
		"EXCLUDED.mg_last_active WHERE c.mg_last_active IS NULL OR "
		"c.mg_last_active < EXCLUDED.mg_last_active");
}
