/*
 * writer_sql: the SQL text of the writer's transaction (writer_sql.c),
 * built once per writer from the table descriptions (table.h). Pure
 * functions; each returned string is malloc'ed (the caller frees it) or
 * NULL on ENOMEM.
 */
#ifndef MI_WRITER_SQL_H
#define MI_WRITER_SQL_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct table;

/* "mi_staging_" and a fingerprint of T's columns, into BUF. */
void writer_sql_staging_name(const struct table *t, char *buf, size_t len);
/* BEGIN; SET LOCAL ...; CREATE TEMP TABLE IF NOT EXISTS for every table's
 * staging; SET LOCAL statement_timeout = (the caller appends the ms). */
char *writer_sql_begin(void);
/* COPY T's staging (...) FROM STDIN (FORMAT binary). */
char *writer_sql_copy(const struct table *t);
/* The per-pass merge into T, stored as NAME ($1 = pass); with
 * APPLY_CREDITS and a table that has one, the balance update too. */
char *writer_sql_merge(const struct table *t, const char *name, bool apply_credits);
/* Rows of pass $1 of T that must not be merged, as (mi_idx, kind 't'|'c'|'p'). */
char *writer_sql_check(const struct table *t, const char *name, bool pass_id_dead_letter);
/* Remove T's staged rows $1 (int4[] of mi_idx). */
char *writer_sql_drop(const struct table *t);
/* Stub mega_customers rows for every table's new pass ids, in sorted order. */
char *writer_sql_stubs(void);
/* Raise mega_customers.mg_last_active to the batch's newest event times. */
char *writer_sql_last_active(void);

/* The text in B as a malloc'ed string; frees B. NULL on ENOMEM. */
char *writer_sql_take(struct evbuffer *b);

#endif
