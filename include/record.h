/*
 * record: one validated event, shaped as a row of its table (table.h).
 *
 * record_from_map() turns a decoded msgpack map (plus what the framing knew:
 * tag, forward time, chunk id, peer) into a struct record, or explains in an
 * error which field is wrong and why. A record is one allocation: a header
 * with per-column offsets and a data area holding each present column as
 * NUL-terminated text in PostgreSQL's input syntax (decimal INT, ISO 8601
 * UTC TIMESTAMPTZ, JSON text for JSONB). It is built by the loop thread,
 * handed through the queue, and owned and freed by the writer.
 */
#ifndef MI_RECORD_H
#define MI_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#include "table.h"

struct ack;

/* Slots of a record: its table's columns (table.h), then where the event
 * came from. */
enum record_slot {
	RECORD_SLOT_TAG = TABLE_COLS_MAX,   /* forward tag, absent for plain maps */
	RECORD_SLOT_PEER,                   /* "tcp:1.2.3.4:5678" or "unix" */
	RECORD_SLOT_COUNT /* columns + slots; not a slot */
};

#define RECORD_ABSENT UINT32_MAX /* len[] of a column the event did not carry */

struct record {
	struct ack *ack;          /* chunk ack this event counts toward, or NULL */
	uint64_t recv_ns;         /* receive time, CLOCK_REALTIME ns */
	uint32_t size;            /* bytes of this allocation (queue accounting) */
	uint32_t id_hash;         /* hash of mg_id: picks the writer */
	uint32_t table;           /* index in table_list: the row's table */
	uint32_t off[RECORD_SLOT_COUNT]; /* offset of each value in data[] */
	uint32_t len[RECORD_SLOT_COUNT]; /* value length, or RECORD_ABSENT */
	char data[];              /* values, each NUL-terminated */
};

/* Bytes of a record before its values (no tail padding counted: the
 * values start right there). */
#define RECORD_HEADER_SIZE offsetof(struct record, data)

/* Why an event was rejected; the label is the metrics' {reason}. */
enum record_reason {
	RECORD_REASON_NOT_A_MAP = 0,   /* record is not a map */
	RECORD_REASON_BAD_KEY,         /* a map key is not a string */
	RECORD_REASON_BAD_TYPE,        /* value of the wrong msgpack type */
	RECORD_REASON_BAD_UTF8,        /* text that is not valid UTF-8 */
	RECORD_REASON_NUL_BYTE,        /* text or JSON string holding NUL */
	RECORD_REASON_OUT_OF_RANGE,    /* integer outside int4 */
	RECORD_REASON_TOO_LONG,        /* value over its column's max_bytes */
	RECORD_REASON_BAD_TIMESTAMP,   /* unparseable or out-of-range time */
	RECORD_REASON_BAD_META,        /* mg_meta not representable as JSON */
	RECORD_REASON_MISSING_TYPE,    /* no mg_record_type and no tag */
	RECORD_REASON_UNKNOWN_TYPE,    /* mg_record_type names no table's type */
	RECORD_REASON_BAD_ID,          /* mg_id empty */
	RECORD_REASON_BAD_FRAME,       /* msgpack value of a shape no mode has */
	RECORD_REASON_UNKNOWN_PASS_ID, /* postgres.unknown_pass_id: dead_letter */
	RECORD_REASON_REFUSED,         /* PostgreSQL refused the row */
	RECORD_REASON_NOT_AN_EVENT,    /* mg_record_type of a configuration row */
	RECORD_REASON_COUNT /* number of reasons; not a reason */
};

/* "bad_type", "bad_utf8", ...: stable labels for metrics and logs. */
const char *record_reason_label(enum record_reason reason);

struct record_error {
	enum record_reason reason;
	char field[64];      /* column or key at fault ("mg_latency_ms"), "" if none */
	char message[256];   /* "mg_latency_ms: expected integer, got str" */
};

/* What the framing knows about an event besides its map. */
struct record_ctx {
	const char *tag;              /* forward tag, or NULL (plain map form) */
	size_t tag_len;
	bool has_time;                /* forward-protocol event time present */
	int64_t time_ns;              /* that time, ns since the epoch */
	const msgpack_object *fluent_meta; /* Fluent Bit 2 entry metadata map, or NULL */
	const char *chunk;            /* option.chunk bytes, or NULL */
	size_t chunk_len;
	uint32_t index;               /* entry position within the message */
	const char *peer;             /* NUL-terminated peer description */
	uint64_t recv_ns;             /* receive time, CLOCK_REALTIME ns */
};

/*
 * Validate MAP and build a record. Returns 0 and sets *OUT (caller owns it,
 * free with record_free) or -1 and fills ERR. Never fails silently: -1
 * always carries a reason. Allocation failure is reported as -1 with reason
 * BAD_FRAME and message "out of memory". Loop thread (any thread is safe).
 */
int record_from_map(const msgpack_object *map, const struct record_ctx *ctx,
		    struct record **out, struct record_error *err)
	__attribute__((warn_unused_result));

void record_free(struct record *r);

/* Value of column or slot I, or NULL when absent. */
static inline const char *record_get(const struct record *r, int i)
{
	return r->len[i] == RECORD_ABSENT ? NULL : r->data + r->off[i];
}

/* Column index of table TABLE (index in table_list) for NAME ("mg_prompt"
 * or "prompt"), or -1. */
int record_column_find(int table, const char *name, size_t len);

/* The table description of R. */
static inline const struct table *record_table(const struct record *r)
{
	return table_list[r->table];
}

/* Parse an RFC 3339 timestamp into ns since the epoch; 0 on success. */
int record_parse_rfc3339(const char *s, size_t len, int64_t *ns_out);

/* Format NS as "YYYY-MM-DD HH:MM:SS.ffffff+00" into BUF (>= 40 bytes). */
void record_format_time(int64_t ns, char *buf, size_t buflen);

/* A TIMESTAMPTZ column's text (the form above) as microseconds since
 * 2000-01-01 UTC, PostgreSQL's binary form; 0, or -1 if not that form. */
int record_time_pg_usec(const char *s, size_t len, int64_t *usec);

#endif
