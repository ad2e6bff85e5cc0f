/*
 * writer_sql: the SQL text of the writer's transaction (src/writer_sql.c),
 * built once per writer from record_columns[]. Pure functions; each
 * returned string is malloc'ed (the caller frees it) or NULL on ENOMEM.
 */
#ifndef MI_WRITER_SQL_H
#define MI_WRITER_SQL_H

#include <stdbool.h>

struct evbuffer;

/* CREATE TEMP TABLE IF NOT EXISTS mi_staging (mi_idx, mi_pass, every column). */
char *writer_sql_staging(void);
/* COPY mi_staging (...) FROM STDIN (FORMAT binary). */
char *writer_sql_copy(void);
/* The per-pass merge into TABLE ($1 = pass); with APPLY_CREDITS the balance update too. */
char *writer_sql_merge(const char *table, bool apply_credits);
/* Rows of pass $1 that must not be merged, as (mi_idx, kind 't'|'c'|'p'). */
char *writer_sql_check(const char *table, bool pass_id_dead_letter);
/* Stub mega_customers rows for the batch's new pass ids, in sorted order. */
extern const char writer_sql_stub_customers[];
/* Raise mega_customers.mg_last_active to the batch's newest event times. */
extern const char writer_sql_last_active[];

/* The text in B as a malloc'ed string; frees B. NULL on ENOMEM. */
char *writer_sql_take(struct evbuffer *b);

#endif
