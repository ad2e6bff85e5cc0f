/*
 * bench_private.h: what the parts of megaingest-bench share: bench.c
 * (connections, chunks, acks, timers, report, options, main), bench_http.c
 * (the HTTP mode: requests and their answers) and bench_gen.c (the seeded
 * event mix, its msgpack, JSON and COPY text encoders).
 * The bench is a tool, not part of the daemon, so this stays in src/ and
 * nothing else includes it.
 */
#ifndef MI_BENCH_PRIVATE_H
#define MI_BENCH_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <event2/event.h>
#include <msgpack.h>
#include <yajl/yajl_gen.h>

#define BENCH_PROMPTS 512
#define BENCH_CHUNK_ID_LEN 24        /* 8 hex run salt + 16 hex sequence */

/* The columns the generator can fill; also the --dump-copy column order. */
enum bench_col {
	BENCH_COL_ID = 0,
	BENCH_COL_RECORD_TYPE,
	BENCH_COL_PASS_ID,
	BENCH_COL_SESSION_ID,
	BENCH_COL_GENERATION_ID,
	BENCH_COL_PLATFORM,
	BENCH_COL_TYPE,
	BENCH_COL_PROMPT,
	BENCH_COL_OUTPUT_URL,
	BENCH_COL_PROVIDER,
	BENCH_COL_MODEL,
	BENCH_COL_LATENCY_MS,
	BENCH_COL_INPUT_CHARS,
	BENCH_COL_OUTPUT_CHARS,
	BENCH_COL_INPUT_TOKENS,
	BENCH_COL_OUTPUT_TOKENS,
	BENCH_COL_CONTENT_TYPE,
	BENCH_COL_STATUS,
	BENCH_COL_ERROR,
	BENCH_COL_RESULT_TYPE,
	BENCH_COL_COMMENT,
	BENCH_COL_IMAGE_URL,
	BENCH_COL_DELTA,
	BENCH_COL_REASON,
	BENCH_COL_SOURCE,
	BENCH_COL_REF_TYPE,
	BENCH_COL_REF_ID,
	BENCH_COL_CLIENT_VERSION,
	BENCH_COL_OS,
	BENCH_COL_BROWSER,
	BENCH_COL_DEVICE,
	BENCH_COL_COUNT /* number of generated columns; not a column */
};

/* One column value of a generated event; s == NULL and !is_int: absent. */
struct bench_val {
	const char *s;      /* text, not NUL-terminated necessarily; owner: event or static */
	uint32_t len;
	bool is_int;
	int64_t i;
};

/* One generated event. Strings point into scratch, the prompt pool or
 * static tables. */
struct bench_event {
	struct bench_val v[BENCH_COL_COUNT];
	int64_t sec;        /* event time, Unix epoch */
	uint32_t nsec;
	uint64_t seq;       /* global event number: meta.seq */
	char ab;            /* meta.ab */
	size_t used;        /* bytes of scratch in use */
	char scratch[384];
};

/* The generator's state: one seed gives the same events, the salts make
 * the ids of this run differ from any other's. Owned by struct bench. */
struct bench_gen {
	uint64_t rng;           /* xorshift64* state */
	uint32_t salt_a;        /* mg_id bits that tell this run from others */
	uint32_t salt_b;
	uint64_t event_seq;     /* next event's meta.seq */
	char *prompts[BENCH_PROMPTS];   /* owned; bench_gen_free */
	uint32_t prompt_len[BENCH_PROMPTS];
};

/* ---- the load loop (bench.c) -------------------------------------------- */

struct bench_opts {
	const char *host;       /* -H host:port */
	const char *unix_path;  /* -U path */
	int conns;              /* -c */
	int chunk;              /* -m */
	int64_t total;          /* -n, 0: unbounded (then -d bounds) */
	double duration;        /* -d seconds, 0: unbounded (then -n bounds) */
	double rate;            /* -r events/s, 0: as fast as acks allow */
	int window;             /* -w chunks in flight per connection */
	uint64_t seed;          /* --seed */
	double timeout;         /* --timeout seconds for one chunk's ack */
	bool json;              /* --json */
	const char *dump_copy;  /* --dump-copy FILE */
	const char *lat_log;    /* --latency-log FILE */
	double idle;            /* --idle seconds: hold every connection idle first */
	const char *http;       /* --http host:port: POST /v1/events instead of Forward */
	const char *token;      /* --token: Authorization: Bearer TOKEN (HTTP) */
};

/* A chunk waiting for its ack. */
struct bench_chunk {
	uint64_t seq;       /* chunk sequence, encoded in its id */
	int64_t t0_ns;      /* latency origin: send time, or scheduled time with -r */
	int64_t sent_ns;    /* when it was written: timeout origin */
	uint32_t events;
};

struct bench;
struct bench_http_conn;

struct bench_conn {
	struct bench *b;
	int idx;
	struct bufferevent *bev;
	bool connected;
	struct bench_chunk *inflight;  /* opts.window slots, ninflight in use */
	int ninflight;
	msgpack_unpacker unp;
	bool unp_ready;
	struct bench_http_conn *http;  /* --http: owned by bench_http.c */
};

struct bench {
	struct bench_opts o;
	struct event_base *base;
	struct event *pace_ev;
	struct event *watch_ev;
	struct event *idle_ev;  /* --idle: starts the run once the wait is over */
	struct bench_conn *conns;
	int nconnected;
	int next_fill;          /* round-robin start for paced sends */
	bool started;
	bool failed;
	struct bench_gen gen;   /* the event mix (bench_gen.c) */
	uint32_t chunk_salt;    /* chunk id bits that tell this run from others */
	uint64_t chunk_seq;
	int64_t created_ns;     /* when the connections were opened */
	int64_t start_ns;       /* when the last of them was up: the clock starts */
	int64_t last_ack_ns;
	int64_t events_sent;
	int64_t events_acked;
	int64_t chunks_acked;
	int64_t http_retries;   /* --http: requests sent again after a 503 */
	int64_t http_errors;    /* --http: answers neither 200 nor 503 */
	int64_t http_rejected;  /* --http: events a 200 did not accept */
	int64_t *lat_ns;        /* one per acked chunk */
	FILE *lat_log;          /* --latency-log: "t_ms latency_ms events" per ack */
	size_t nlat, lat_cap;
	msgpack_sbuffer sbuf;   /* the chunk being encoded */
	msgpack_packer pk;
};

int64_t bench_now_ns(void);
/* Stop the run as failed, logging WHY the first time. */
void bench_fail(struct bench *b, const char *why);
/* C's chunk in SLOT got its answer: ACKED events of it were accepted; with
 * OK its latency counts. Frees the slot; 0 or -1 (out of memory). */
int bench_chunk_answered(struct bench_conn *c, int slot, uint32_t acked, bool ok)
	__attribute__((warn_unused_result));
/* The id of chunk SEQ of this run, NUL-terminated, into ID. */
void bench_chunk_id(const struct bench *b, uint64_t seq, char id[BENCH_CHUNK_ID_LEN + 1]);
/* Send on C what its window and the schedule allow; then end the run if
 * nothing is left. For the HTTP half after an answer. */
void bench_conn_next(struct bench_conn *c);

/* ---- HTTP mode (bench_http.c) -------------------------------------------- */

/* Set C up for POST /v1/events to o.http (the connection opens with its
 * first request); 0 or -1 (logged). */
int bench_http_open(struct bench_conn *c) __attribute__((warn_unused_result));
/* Encode the next N events of the mix as a JSON array and POST them for
 * chunk CH (its seq set); 0 or -1 (logged; the run has failed). */
int bench_http_send(struct bench_conn *c, struct bench_chunk *ch, uint32_t n)
	__attribute__((warn_unused_result));
void bench_http_close(struct bench_conn *c);

/* ---- the mix (bench_gen.c) ---------------------------------------------- */

/* Lower-case hex digits, and V as DIGITS of them at DST (no NUL): the
 * mg_ids of bench_gen.c and the chunk ids of bench.c. */
extern const char bench_hex[];
void bench_hex_put(char *dst, uint64_t v, int digits);

/* Seed G and build its prompt pool; 0, or -1 out of memory (not logged).
 * G must be zeroed; bench_gen_free it either way. */
int bench_gen_init(struct bench_gen *g, uint64_t seed, uint32_t salt_a, uint32_t salt_b)
	__attribute__((warn_unused_result));
void bench_gen_free(struct bench_gen *g);

/* Generate the next event of the mix into EV (overwritten). EV points into
 * G's prompt pool: valid until bench_gen_free. */
void bench_event_next(struct bench_gen *g, struct bench_event *ev);

/* S (LEN bytes) as a msgpack str; 0 or -1 (out of memory). */
int bench_pack_str(msgpack_packer *pk, const char *s, size_t len);
/* [EventTime, {columns..., "mg_meta": {...}}]; 0 or -1 (out of memory). */
int bench_pack_event(msgpack_packer *pk, const struct bench_event *ev);

/* EV as one JSON object: the same columns, mg_created_at for the Forward
 * entry time (RFC 3339, nanoseconds), the same mg_meta; 0 or -1. */
int bench_json_event(yajl_gen g, const struct bench_event *ev);

/* --dump-copy: ROWS events of G as COPY text into PATH, the column list on
 * stdout; 0 or -1 (logged). */
int bench_dump_copy(struct bench_gen *g, const char *path, int64_t rows)
	__attribute__((warn_unused_result));

#endif /* MI_BENCH_PRIVATE_H */
