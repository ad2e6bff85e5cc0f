/*
 * stats: the daemon's figures, one list for every consumer.
 *
 * STATS_METRICS is the single list (X-macro: name, kind, help). From it come
 * the enums below, the descriptor table stats_metrics[], the Prometheus text
 * of /metrics, the JSON of /stats, the rows of `megactl stats` and the
 * README's metric table. Adding a figure is one line here plus the call that
 * moves it.
 *
 * Kinds:
 *   COUNTER    only grows; a relaxed _Atomic uint64_t any thread adds to
 *   REJECTS    a counter per enum record_reason (label reason="bad_type")
 *   GAUGE      a level: stored by its owner (stats_set_gauge) or read at
 *              snapshot time through a provider (stats_gauge_provider)
 *   HISTOGRAM  seconds, in the fixed buckets stats_bucket_bounds[]; each
 *              bucket and the sum are relaxed atomics, so an observation
 *              never takes a lock (count = the sum of the buckets)
 *   INFO       build_info{version="..."} 1
 *   WRITERS    writer_state{writer="0",state="spooling"} 1: one-hot, one
 *              series per writer and state, each writer storing its own
 *
 * Readers take a struct stats_snapshot (stats_snapshot) and work on that:
 * a histogram's buckets, sum and count always agree inside one snapshot.
 */
#ifndef MI_STATS_H
#define MI_STATS_H

#include <stddef.h>
#include <stdint.h>
#include "record.h"
#include "table.h"

struct evbuffer;

#define STATS_METRICS(X) \
	X(events_received_total, COUNTER, "Events decoded from clients") \
	X(events_committed_total, COUNTER, "Events committed to PostgreSQL") \
	X(rows_committed_total, TABLES, "Events committed to PostgreSQL, by output table") \
	X(events_rejected_total, REJECTS, "Events rejected (and dead-lettered), by reason") \
	X(events_dead_lettered_total, COUNTER, "Events written to the dead-letter file") \
	X(batches_committed_total, COUNTER, "Transactions committed by the writers") \
	X(batch_commit_seconds, HISTOGRAM, "Time from BEGIN to COMMIT of each committed batch") \
	X(event_commit_latency_seconds, HISTOGRAM, "Time from receiving an event to its commit") \
	X(queue_events, GAUGE, "Events waiting in the writers' queues") \
	X(queue_bytes, GAUGE, "Bytes waiting in the writers' queues") \
	X(spool_bytes, GAUGE, "Bytes held on disk in the spool directory") \
	X(dead_letter_full, GAUGE, \
	  "1 while the dead-letter file is at spool.dead_letter_max_bytes, else 0") \
	X(dead_letters_refused_total, COUNTER, \
	  "Dead-letter lines refused (file full): their messages were not acked") \
	X(dead_letter_bulk_total, COUNTER, \
	  "Forward messages and HTTP requests whose rejections past the limit went out as one line") \
	X(log_lines_suppressed_total, COUNTER, "Repeated warning lines not written (rate limit)") \
	X(connections, GAUGE, "Open client connections") \
	X(buffered_bytes, GAUGE, \
	  "Memory taken by connections' unfinished values (listen.max_buffered_bytes)") \
	X(memory_holds_total, COUNTER, \
	  "Times a connection was not read because of listen.max_buffered_bytes") \
	X(postgres_up, GAUGE, \
	  "1 while every writer is connected and its last statement succeeded, else 0") \
	X(writer_state, WRITERS, \
	  "1 for each writer's current state: writing, replaying, spooling, holding, stalled") \
	X(postgres_reconnects_total, COUNTER, "PostgreSQL connections (re)established") \
	X(connections_accepted_total, COUNTER, "Client connections accepted") \
	X(connections_refused_total, COUNTER, "Client connections refused (max_connections)") \
	X(accept_pauses_total, COUNTER, \
	  "Pauses in accepting because the daemon ran out of file descriptors") \
	X(admin_connections_refused_total, COUNTER, \
	  "Admin endpoint connections closed at once (16 were open)") \
	X(acks_sent_total, COUNTER, "Forward-protocol acks sent") \
	X(credit_conflicts_total, COUNTER, \
	  "Repeated credit_transaction ids carrying other values (ignored)") \
	X(auth_failures_total, COUNTER, "Connections closed for a failed shared-key handshake") \
	X(tls_failures_total, COUNTER, "Connections closed for a failed TLS handshake") \
	X(handshake_timeouts_total, COUNTER, \
	  "Connections closed for not finishing the handshake in listen.handshake_timeout_s") \
	X(handshakes_evicted_total, COUNTER, \
	  "Connections in the handshake closed to make room (listen.max_handshakes)") \
	X(http_requests_total, HTTP_CODES, "HTTP input requests answered, by status code") \
	X(http_request_seconds, HISTOGRAM, \
	  "HTTP input: time from a request's arrival to its answer (after the commit)") \
	X(http_bytes_received_total, COUNTER, "HTTP input: request body bytes received") \
	X(http_connections_refused_total, COUNTER, \
	  "HTTP input connections closed at once (http.max_connections were open)") \
	X(uptime_seconds, GAUGE, "Seconds since the daemon started") \
	X(build_info, INFO, "The daemon's version, as a label; always 1")

enum stats_kind {
	STATS_COUNTER = 0,
	STATS_REJECTS,
	STATS_GAUGE,
	STATS_HISTOGRAM,
	STATS_INFO,
	STATS_WRITERS,
	STATS_TABLES,
	STATS_HTTP_CODES,
	STATS_KIND_COUNT /* number of kinds; not a kind */
};

/* STATS_K_<KIND>(c, r, g, h, i) picks the argument for that kind, so one
 * pass over STATS_METRICS can keep only the metrics of one kind (WRITERS,
 * like INFO, has no array of its own). */
#define STATS_K_COUNTER(c, r, g, h, i) c
#define STATS_K_REJECTS(c, r, g, h, i) r
#define STATS_K_GAUGE(c, r, g, h, i) g
#define STATS_K_HISTOGRAM(c, r, g, h, i) h
#define STATS_K_INFO(c, r, g, h, i) i
#define STATS_K_WRITERS(c, r, g, h, i) i
#define STATS_K_TABLES(c, r, g, h, i) i
#define STATS_K_HTTP_CODES(c, r, g, h, i) i

/* The status codes the HTTP input answers with, counted one by one. */
#define STATS_HTTP_CODES_LIST 200, 400, 401, 404, 405, 413, 415, 500, 503
#define STATS_HTTP_NCODES 9
#define STATS_NONE_(name)
#define STATS_ENUM_(name) STAT_##name,

enum stats_counter {
#define STATS_CENUM_(name, kind, help) \
	STATS_K_##kind(STATS_ENUM_, STATS_NONE_, STATS_NONE_, STATS_NONE_, STATS_NONE_)(name)
	STATS_METRICS(STATS_CENUM_)
#undef STATS_CENUM_
	STAT_COUNT /* number of counters; not a counter */
};

enum stats_gauge {
#define STATS_GENUM_(name, kind, help) \
	STATS_K_##kind(STATS_NONE_, STATS_NONE_, STATS_ENUM_, STATS_NONE_, STATS_NONE_)(name)
	STATS_METRICS(STATS_GENUM_)
#undef STATS_GENUM_
	STAT_GAUGE_COUNT /* number of gauges; not a gauge */
};

enum stats_hist {
#define STATS_HENUM_(name, kind, help) \
	STATS_K_##kind(STATS_NONE_, STATS_NONE_, STATS_NONE_, STATS_ENUM_, STATS_NONE_)(name)
	STATS_METRICS(STATS_HENUM_)
#undef STATS_HENUM_
	STAT_HIST_COUNT /* number of histograms; not a histogram */
};

/* One row of the list, for code that walks every metric. */
struct stats_metric {
	const char *name;          /* without the "megaingest_" prefix */
	enum stats_kind kind;
	const char *help;
	int index;                 /* into the snapshot array of its kind; 0 for REJECTS/INFO */
};

extern const struct stats_metric stats_metrics[];
extern const size_t stats_metric_count;

#define STATS_PREFIX "megaingest_"

/* Upper bounds of the histogram buckets in seconds; a last +Inf bucket follows. */
#define STATS_BUCKETS 16
extern const double stats_bucket_bounds[STATS_BUCKETS];

struct stats_hist_snap {
	uint64_t bucket[STATS_BUCKETS + 1]; /* per bucket, not cumulative; [STATS_BUCKETS] = +Inf */
	uint64_t count;                     /* sum of bucket[] */
	double sum;                         /* seconds */
};

/* What a writer does with batches, as operators see it; in rising order of
 * trouble, so the worst of several writers is the highest. */
enum stats_writer_state {
	STATS_WRITER_WRITING = 0,   /* committing batches to PostgreSQL */
	STATS_WRITER_REPLAYING,     /* PostgreSQL takes writes: the spool first */
	STATS_WRITER_SPOOLING,      /* PostgreSQL is away or refuses writes */
	STATS_WRITER_HOLDING,       /* the spool refuses too: batches held unacked */
	STATS_WRITER_STALLED,       /* a statement past half writer.statement_timeout_ms */
	STATS_WRITER_STATE_COUNT /* number of states; not a state */
};

/* Most writers the figures follow (writer.connections' upper bound). */
#define STATS_MAX_WRITERS 64

struct stats_snapshot {
	uint64_t counter[STAT_COUNT];
	uint64_t rejected[RECORD_REASON_COUNT];
	uint64_t table_rows[TABLE_COUNT];   /* rows_committed_total by table_list index */
	uint64_t http_codes[STATS_HTTP_NCODES]; /* http_requests_total, STATS_HTTP_CODES_LIST order */
	int64_t gauge[STAT_GAUGE_COUNT];
	struct stats_hist_snap hist[STAT_HIST_COUNT];
	int64_t taken_ns;                   /* CLOCK_MONOTONIC when taken */
	int writers;                        /* entries of writer_state[] */
	uint8_t writer_state[STATS_MAX_WRITERS]; /* enum stats_writer_state */
};

/* ---- writing: any thread, never a lock -------------------------------- */

/* Add N to counter C. */
void stats_add(enum stats_counter c, uint64_t n);
/* Count one rejected event for REASON. */
void stats_reject(enum record_reason reason);
/* Count N rejected events for REASON. */
void stats_reject_n(enum record_reason reason, uint64_t n);
/* Add N to the events committed into table TABLE (an index in table_list). */
void stats_table_rows(int table, uint64_t n);
/* Count one HTTP answer with status CODE (one of STATS_HTTP_CODES_LIST). */
void stats_http_request(int code);
/* Record one observation of NS nanoseconds into histogram H (negative: 0). */
void stats_observe_ns(enum stats_hist h, int64_t ns);
/* Store gauge G (for gauges without a provider). */
void stats_set_gauge(enum stats_gauge g, int64_t v);

/* An older name for the connections gauge, kept for its callers. */
void stats_set_connections(int64_t n);
/* How many writers there are (postgres_up needs all of them up); each
 * starts spooling and down until it publishes. */
void stats_set_writers(int n);
/* Writer ID's state, and UP: connected with its last statement a success.
 * Only that writer calls it. */
void stats_writer_publish(int id, enum stats_writer_state state, int up);

/*
 * Make gauge G read FN(ARG) at snapshot time instead of its stored value
 * (queue depth: the queues know it). FN runs on the thread that takes the
 * snapshot. Set before other threads take snapshots; NULL FN clears it.
 */
void stats_gauge_provider(enum stats_gauge g, int64_t (*fn)(void *arg), void *arg);

/* Remember now as the start time (uptime_seconds counts from it). */
void stats_mark_start(void);

/* ---- reading ----------------------------------------------------------- */

uint64_t stats_get(enum stats_counter c);
uint64_t stats_rejected(enum record_reason reason);
int64_t stats_gauge(enum stats_gauge g);
int64_t stats_connections(void);
int stats_postgres_up(void);
/* "writing", "spooling", ... (the label of the writer_state gauge). */
const char *stats_writer_state_label(enum stats_writer_state s);
/* The label's state, or -1. */
int stats_writer_state_parse(const char *label);
const char *stats_name(enum stats_counter c);

/* Every figure at once into OUT. Any thread (providers run on it). */
void stats_snapshot(struct stats_snapshot *out);

/* Reset every counter, histogram and stored gauge to zero (tests). */
void stats_reset(void);

/*
 * Quantile Q (0..1) of the observations in bucket counts B (per bucket, as
 * in struct stats_hist_snap), interpolated inside the bucket that holds it
 * as Prometheus' histogram_quantile does. -1 when B holds no observation.
 */
double stats_quantile(const uint64_t b[STATS_BUCKETS + 1], double q);

/* What changed between two snapshots: the figures of one summary line. */
struct stats_rates {
	double seconds;            /* between the snapshots */
	double in_per_s;           /* events received */
	double committed_per_s;
	double rejected_per_s;
	double p99_s;              /* receive -> commit, -1 when nothing committed */
	int64_t queue_events, queue_bytes, spool_bytes, connections, postgres_up;
	int writer_state;          /* the worst writer's enum stats_writer_state, -1: none */
};

/* Rates from PREV to CUR (CUR taken later). */
void stats_rates(const struct stats_snapshot *prev, const struct stats_snapshot *cur,
		 struct stats_rates *out);

/* "in=1200/s committed=1200/s rejected=0/s queue=12 (3.1 KiB) spool=0 B
 * p99=4.2 ms conns=3 postgres=up": the log line and systemd STATUS=. */
void stats_format_rates(const struct stats_rates *r, char *buf, size_t len);

/* 1536 -> "1.5 KiB"; below 1 KiB "512 B". */
void stats_format_bytes(double v, char *buf, size_t len);
/* 0.0042 -> "4.2 ms", 2.5 -> "2.50 s", negative -> "-". */
void stats_format_seconds(double s, char *buf, size_t len);

/* One summary line of totals "received=... committed=..." into BUF. */
void stats_summary(char *buf, size_t len);

/* ---- formats ------------------------------------------------------------ */

/* Prometheus text exposition 0.0.4 of S into OUT. 0, or -1 when out of memory. */
int stats_format_prometheus(const struct stats_snapshot *s, struct evbuffer *out)
	__attribute__((warn_unused_result));
/* S as one JSON object (plus "version") into OUT. 0, or -1 when out of memory. */
int stats_format_json(const struct stats_snapshot *s, struct evbuffer *out)
	__attribute__((warn_unused_result));

/*
 * Read Prometheus text as stats_format_prometheus writes it (the megaingest_
 * lines; others are skipped) back into OUT, zeroed first. Returns the number
 * of samples recognised, or -1 with a message in ERR for a malformed line.
 */
int stats_parse_prometheus(const char *text, struct stats_snapshot *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif
