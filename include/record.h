/*
 * record: one validated event, shaped as a mega_generations row.
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

struct ack;

/* mega_generations columns the daemon writes, in table order.
 * mg_updated_at is absent on purpose: the writer sets it to now(). */
enum record_col {
	RECORD_COL_ID = 0,
	RECORD_COL_RECORD_TYPE,
	RECORD_COL_PASS_ID,
	RECORD_COL_SESSION_ID,
	RECORD_COL_GENERATION_ID,
	RECORD_COL_PLATFORM,
	RECORD_COL_TITLE,
	RECORD_COL_TYPE,
	RECORD_COL_PROMPT,
	RECORD_COL_OUTPUT_URL,
	RECORD_COL_OUTPUT_KEY,
	RECORD_COL_PROVIDER,
	RECORD_COL_MODEL,
	RECORD_COL_LATENCY_MS,
	RECORD_COL_INPUT_CHARS,
	RECORD_COL_OUTPUT_CHARS,
	RECORD_COL_INPUT_TOKENS,
	RECORD_COL_OUTPUT_TOKENS,
	RECORD_COL_CONTENT_TYPE,
	RECORD_COL_STATUS,
	RECORD_COL_ERROR,
	RECORD_COL_RESULT_TYPE,
	RECORD_COL_COMMENT,
	RECORD_COL_IMAGE_URL,
	RECORD_COL_VIDEO_URL,
	RECORD_COL_DELTA,
	RECORD_COL_REASON,
	RECORD_COL_SOURCE,
	RECORD_COL_REF_TYPE,
	RECORD_COL_REF_ID,
	RECORD_COL_CLIENT_VERSION,
	RECORD_COL_OS,
	RECORD_COL_BROWSER,
	RECORD_COL_DEVICE,
	RECORD_COL_META,
	RECORD_COL_SOURCE_SYSTEM,
	RECORD_COL_DELETED_AT,
	RECORD_COL_CREATED_AT,
	RECORD_COL_COUNT /* number of written columns; not a column */
};

/* Extra text slots after the columns: where the event came from. */
enum record_slot {
	RECORD_SLOT_TAG = RECORD_COL_COUNT, /* forward tag, absent for plain maps */
	RECORD_SLOT_PEER,                   /* "tcp:1.2.3.4:5678" or "unix" */
	RECORD_SLOT_COUNT /* columns + slots; not a slot */
};

enum record_type {
	RECORD_TYPE_TEXT = 0,
	RECORD_TYPE_INT,         /* int4 */
	RECORD_TYPE_TIMESTAMPTZ,
	RECORD_TYPE_JSONB,
	RECORD_TYPE_COUNT /* number of types; not a type */
};

struct record_column {
	const char *name;        /* "mg_prompt" */
	enum record_type type;
	uint32_t max_bytes;      /* 0: bounded only by listen.max_event_bytes */
};

extern const struct record_column record_columns[RECORD_COL_COUNT];

#define RECORD_ABSENT UINT32_MAX /* len[] of a column the event did not carry */

struct record {
	struct ack *ack;          /* chunk ack this event counts toward, or NULL */
	uint64_t recv_ns;         /* receive time, CLOCK_REALTIME ns */
	uint32_t size;            /* bytes of this allocation (queue accounting) */
	uint32_t id_hash;         /* hash of mg_id: picks the writer */
	uint32_t off[RECORD_SLOT_COUNT]; /* offset of each value in data[] */
	uint32_t len[RECORD_SLOT_COUNT]; /* value length, or RECORD_ABSENT */
	char data[];              /* values, each NUL-terminated */
};

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
	RECORD_REASON_UNKNOWN_TYPE,    /* mg_record_type not one of the four */
	RECORD_REASON_BAD_ID,          /* mg_id empty */
	RECORD_REASON_BAD_FRAME,       /* msgpack value of a shape no mode has */
	RECORD_REASON_UNKNOWN_PASS_ID, /* postgres.unknown_pass_id: dead_letter */
	RECORD_REASON_REFUSED,         /* PostgreSQL refused the row */
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

/* Column index for NAME ("mg_prompt" or "prompt"), or -1. */
int record_column_find(const char *name, size_t len);

/* Parse an RFC 3339 timestamp into ns since the epoch; 0 on success. */
int record_parse_rfc3339(const char *s, size_t len, int64_t *ns_out);

/* Format NS as "YYYY-MM-DD HH:MM:SS.ffffff+00" into BUF (>= 40 bytes). */
void record_format_time(int64_t ns, char *buf, size_t buflen);

/* A TIMESTAMPTZ column's text (the form above) as microseconds since
 * 2000-01-01 UTC, PostgreSQL's binary form; 0, or -1 if not that form. */
int record_time_pg_usec(const char *s, size_t len, int64_t *usec);

#endif
