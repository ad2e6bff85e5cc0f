/*
 * writer_sql: the SQL text of the writer's transaction (src/writer_sql.c),
 * built once per writer from record_columns[]. Pure functions; each
 * returned string is malloc'ed (the caller frees it) or NULL on ENOMEM.
 */
#ifndef MI_WRITER_SQL_H
#define MI_WRITER_SQL_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

/* "mi_staging_" and a fingerprint of its columns, into BUF; 0 or -1. */
int writer_sql_staging_name(char *buf, size_t len);
/* BEGIN; SET LOCAL ...; CREATE TEMP TABLE IF NOT EXISTS STAGING (...) ...;
 * SET LOCAL statement_timeout = (the caller appends the milliseconds). */
char *writer_sql_begin(const char *staging);
/* COPY STAGING (...) FROM STDIN (FORMAT binary). */
char *writer_sql_copy(const char *staging);
/* The per-pass merge into TABLE ($1 = pass); with APPLY_CREDITS the balance update too. */
char *writer_sql_merge(const char *table, const char *staging, bool apply_credits);
/* Rows of pass $1 that must not be merged, as (mi_idx, kind 't'|'c'|'p'). */
char *writer_sql_check(const char *table, const char *staging, bool pass_id_dead_letter);
/* Remove staged rows $1 (int4[] of mi_idx). */
char *writer_sql_drop(const char *staging);
/* Stub mega_customers rows for the batch's new pass ids, in sorted order. */
char *writer_sql_stubs(const char *staging);
/* Raise mega_customers.mg_last_active to the batch's newest event times. */
char *writer_sql_last_active(const char *staging);

/* The text in B as a malloc'ed string; frees B. NULL on ENOMEM. */
char *writer_sql_take(struct evbuffer *b);

#endif
