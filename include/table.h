/*
 * table: the output tables, described as data.
 *
 * One struct table per table the daemon writes: its columns in table order,
 * each with a PostgreSQL type, a size limit and a merge rule, the record
 * types routed to it, which of them make immutable rows, and which
 * columns play the roles the pipeline needs (the customer reference, the
 * mg_meta catch-all, the creation time). Everything else is derived from
 * it: the event -> row mapping and its name lookup (record.c), the binary
 * COPY encoding (writer_copy.c), the staging table and the merge SQL
 * (writer_sql.c), the spool encoding and its fingerprint (spool_frame.c),
 * the dead-letter JSON (spool_dead.c). A new table is a new description
 * (src/core/table_<name>.c) and a line in table.c's list.
 *
 * Every table's column 0 is its key mg_id and column 1 its mg_record_type:
 * the writer keys merges and passes on the first and guards them with the
 * second. Immutable after start (postgres.table renames mega_generations
 * before the writers start); any thread reads.
 */
#ifndef MI_TABLE_H
#define MI_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Column storage types; the record holds each value as text in
 * PostgreSQL's input syntax, the COPY encoder sends it in binary. */
enum table_type {
	TABLE_TYPE_TEXT = 0,
	TABLE_TYPE_INT,          /* int4 */
	TABLE_TYPE_TIMESTAMPTZ,
	TABLE_TYPE_JSONB,
	TABLE_TYPE_UUID,
	TABLE_TYPE_COUNT /* number of types; not a type */
};

/* What a later event with the same mg_id does to a stored value. An
 * absent value (key missing or nil) never changes the stored one. */
enum table_merge {
	TABLE_MERGE_KEY = 0,     /* the conflict key: never updated */
	TABLE_MERGE_SET_ONCE,    /* the first value stays (creation time, first seen) */
	TABLE_MERGE_REPLACE,     /* a value present replaces the stored one */
	TABLE_MERGE_RISE,        /* only rises: the later of stored and new */
	TABLE_MERGE_JSON,        /* jsonb merge: stored || new, new keys win */
	TABLE_MERGE_STATUS,      /* replace, but 'pending' never undoes a terminal
				  * 'succeeded' or 'failed' */
	TABLE_MERGE_COUNT /* number of rules; not a rule */
};

struct table_column {
	const char *name;        /* "mg_prompt" */
	enum table_type type;
	uint32_t max_bytes;      /* 0: bounded only by listen.max_event_bytes */
	enum table_merge merge;
	const char *fill;        /* SQL for an absent value on insert, or NULL */
};

#define TABLE_COL_ID 0           /* every table: mg_id, the merge key */
#define TABLE_COL_RECORD_TYPE 1  /* every table: mg_record_type */
#define TABLE_COLS_MAX 40        /* columns of the widest table */

struct table {
	const char *name;                    /* SQL name; postgres.table may rename table 0 */
	const char *label;                   /* metrics label and spool name: "generations" */
	const struct table_column *cols;
	int ncols;
	const char *const *types;            /* mg_record_type values routed here */
	int ntypes;
	const char *const *immutable;        /* of those, the types whose rows never change */
	int nimmutable;
	int col_customer;                    /* references mega_customers.mg_pass_id */
	int col_meta;                        /* where keys that name no column go */
	int col_created;                     /* defaulted to the event's time */
	const char *credits_sql;             /* postgres.apply_credits tail (writer_sql.c), or NULL */
};

/* The tables, in a fixed order: a record's table index and the spool's
 * table numbers are positions in this list. */
#define TABLE_COUNT 2
extern const struct table *const table_list[TABLE_COUNT];

/* Record types that are configuration rows, not events: refused with
 * table_refused_why's reason. */
const char *table_refused_why(const char *type, size_t len);

/* The table whose types include TYPE (LEN bytes), or -1. */
int table_for_type(const char *type, size_t len);

/* Every accepted record type, for messages: "generation, session, ...". */
const char *table_types_text(void);

/* True when TYPE is one of table T's immutable types. */
bool table_type_immutable(const struct table *t, const char *type);

/* FNV-1a of every table's name, column names and types, in order: the
 * spool header records it, and a segment written under another column set
 * is refused instead of misread. */
uint32_t table_fingerprint(void);

/* FNV-1a of table T's column list as text (the staging table's name). */
uint32_t table_columns_fingerprint(const struct table *t);

/* TYPE's SQL name: "text", "int4", "timestamptz", "jsonb", "uuid". */
const char *table_type_word(enum table_type type);

/* Rename table 0 (postgres.table) before any writer starts: main thread. */
void table_set_name(int index, const char *name);
const char *table_name(int index);

/* The mega_generations and mega_admin column indices code must name. */
enum table_gen_col {
	TABLE_GEN_ID = 0,
	TABLE_GEN_RECORD_TYPE,
	TABLE_GEN_PASS_ID,
	TABLE_GEN_SESSION_ID,
	TABLE_GEN_GENERATION_ID,
	TABLE_GEN_PLATFORM,
	TABLE_GEN_TITLE,
	TABLE_GEN_TYPE,
	TABLE_GEN_PROMPT,
	TABLE_GEN_OUTPUT_URL,
	TABLE_GEN_OUTPUT_KEY,
	TABLE_GEN_PROVIDER,
	TABLE_GEN_MODEL,
	TABLE_GEN_LATENCY_MS,
	TABLE_GEN_INPUT_CHARS,
	TABLE_GEN_OUTPUT_CHARS,
	TABLE_GEN_INPUT_TOKENS,
	TABLE_GEN_OUTPUT_TOKENS,
	TABLE_GEN_CONTENT_TYPE,
	TABLE_GEN_STATUS,
	TABLE_GEN_ERROR,
	TABLE_GEN_RESULT_TYPE,
	TABLE_GEN_COMMENT,
	TABLE_GEN_IMAGE_URL,
	TABLE_GEN_VIDEO_URL,
	TABLE_GEN_DELTA,
	TABLE_GEN_REASON,
	TABLE_GEN_SOURCE,
	TABLE_GEN_REF_TYPE,
	TABLE_GEN_REF_ID,
	TABLE_GEN_CLIENT_VERSION,
	TABLE_GEN_OS,
	TABLE_GEN_BROWSER,
	TABLE_GEN_DEVICE,
	TABLE_GEN_META,
	TABLE_GEN_SOURCE_SYSTEM,
	TABLE_GEN_DELETED_AT,
	TABLE_GEN_CREATED_AT,
	TABLE_GEN_COUNT /* number of mega_generations columns written; not a column */
};

enum table_admin_col {
	TABLE_ADMIN_ID = 0,
	TABLE_ADMIN_RECORD_TYPE,
	TABLE_ADMIN_ACTOR_PASS_ID,
	TABLE_ADMIN_SESSION_HASH,
	TABLE_ADMIN_USER_ID,
	TABLE_ADMIN_EMAIL,
	TABLE_ADMIN_IP,
	TABLE_ADMIN_USER_AGENT,
	TABLE_ADMIN_FIRST_SEEN_AT,
	TABLE_ADMIN_LAST_SEEN_AT,
	TABLE_ADMIN_PROFILE_ID,
	TABLE_ADMIN_SHOPIFY_CUSTOMER_ID,
	TABLE_ADMIN_ACTION,
	TABLE_ADMIN_ROUTE,
	TABLE_ADMIN_METHOD,
	TABLE_ADMIN_STATUS,
	TABLE_ADMIN_DETAIL,
	TABLE_ADMIN_RUNTIME_ID,
	TABLE_ADMIN_RUNTIME_FLAT,
	TABLE_ADMIN_KEY,
	TABLE_ADMIN_VALUE,
	TABLE_ADMIN_META,
	TABLE_ADMIN_SOURCE_SYSTEM,
	TABLE_ADMIN_DELETED_AT,
	TABLE_ADMIN_CREATED_AT,
	TABLE_ADMIN_COUNT /* number of mega_admin columns written; not a column */
};

extern const struct table table_generations;
extern const struct table table_admin;

#endif
