/*
 * bench_private.h: what the two halves of megaingest-bench share: bench.c
 * (connections, chunks, acks, timers, report, options, main) and
 * bench_gen.c (the seeded event mix, its msgpack and COPY text encoders).
 * The bench is a tool, not part of the daemon, so this stays in src/ and
 * nothing else includes it.
 */
#ifndef MI_BENCH_PRIVATE_H
#define MI_BENCH_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define BENCH_PROMPTS 512

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

/* --dump-copy: ROWS events of G as COPY text into PATH, the column list on
 * stdout; 0 or -1 (logged). */
int bench_dump_copy(struct bench_gen *g, const char *path, int64_t rows)
	__attribute__((warn_unused_result));

#endif /* MI_BENCH_PRIVATE_H */
