/*
 * writer_private.h: the state of a writer thread, shared by the two halves
 * of the writer module: writer.c (connection, the transaction, lifecycle)
 * and writer_deliver.c (what happens to each batch, the main loop). Not for
 * other modules: they use include/writer.h.
 */
#ifndef MI_WRITER_PRIVATE_H
#define MI_WRITER_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <libpq-fe.h>

#include "clock_ns.h"
#include "record.h"

struct evbuffer;
struct queue;
struct spool;
struct spool_stream;
struct ackq;

enum write_verdict {
	WRITE_OK = 0,     /* committed */
	WRITE_RETRY,      /* not the rows' fault (connection, refusal, deadline): spool, retry */
	WRITE_REJECT,     /* a row's data was refused: isolate it */
	WRITE_VERDICT_COUNT /* number of verdicts; not a verdict */
};

/* Why a row was set aside instead of merged. */
struct writer_skip {
	int idx;                     /* position in the batch */
	enum record_reason reason;
	const char *message;         /* static text */
	const char *field;
};

/* What the writer does with batches; changes are logged once. */
enum writer_state {
	WRITER_STATE_DIRECT = 0,        /* committing them to PostgreSQL */
	WRITER_STATE_SPOOLING,          /* PostgreSQL is away or refuses writes: into the
					   spool, then acked */
	WRITER_STATE_REPLAYING,         /* PostgreSQL takes writes again: the spool first */
	WRITER_STATE_HOLD_SPOOL_FULL,   /* spool.max_bytes reached: holding one, unacked */
	WRITER_STATE_HOLD_SPOOL_ERROR,  /* the spool write failed: holding one, unacked */
	WRITER_STATE_COUNT /* number of states; not a state */
};

/* Pass ids known to exist in mega_customers, as hashes (writer_known.c). */
struct writer_known {
	uint64_t *slots;             /* WRITER_KNOWN_SLOTS; 0: free */
	size_t count;
};

/* Slots of the known set: up to half of them used, 1 MiB. */
#define WRITER_KNOWN_SLOTS ((size_t)1 << 17)

struct writer_err {
	char sqlstate[6];
	char field[64];
	char message[512];
};

struct writer {
	int id;
	pthread_t thread;
	struct queue *q;             /* shared: see queue.h */
	struct spool *spool;         /* shared: thread-safe */
	struct ackq *ackq;           /* shared: thread-safe */
	char *conninfo;              /* immutable after start */
	bool pass_id_dead_letter;    /* immutable after start */
	bool apply_credits;          /* immutable after start */
	atomic_int batch_max;        /* live: written by the loop on reload */
	atomic_int flush_ms;         /* live: idem */
	atomic_int retry_initial_ms; /* live: idem */
	atomic_int retry_max_ms;     /* live: idem */
	atomic_int drain_timeout_s;  /* live: idem */
	atomic_int statement_timeout_ms; /* live: idem */
	atomic_bool done;            /* set by the writer when it exits */
	atomic_llong progress_ns;    /* CLOCK_MONOTONIC of the last loop turn; writer writes */

	/* Writer thread only. */
	PGconn *pg;                  /* connected, or NULL */
	PGconn *connecting;          /* an attempt in progress (writer_pq.c), or NULL */
	PostgresPollingStatusType connect_poll; /* what that attempt waits for */
	int64_t connect_deadline_ns; /* CLOCK_MONOTONIC: the attempt is given up */
	char stmt_what[48];          /* the statement in flight, its first words */
	int64_t stmt_start_ns;       /* CLOCK_MONOTONIC: when it was sent */
	int64_t stmt_half_ns;        /* ... when it counts as stalled */
	int64_t stmt_deadline_ns;    /* ... and when it is given up */
	bool stalled;                /* it runs past half of its timeout */
	bool up;                     /* connected and the last statement succeeded */
	char *sql_begin;             /* BEGIN, SET LOCAL ..., the staging table */
	char *sql_begin_buf;         /* sql_begin with the statement timeout appended */
	size_t sql_begin_cap;
	char *sql_copy[TABLE_COUNT]; /* per table (table.h), built once */
	char *sql_check[TABLE_COUNT];
	char *sql_merge[TABLE_COUNT];
	char *sql_drop[TABLE_COUNT];
	char *sql_stubs;
	char *sql_last_active;
	char *copy_buf;              /* WRITER_COPY_CHUNK bytes of COPY data (writer_copy.c) */
	size_t copy_len;             /* bytes in copy_buf */
	bool copy_failed;            /* PQputCopyData failed during this batch */
	int *pass;                   /* per batch position */
	long *pass_rows;             /* rows per pass, [1..maxpass] */
	uint64_t *pass_hash;         /* per batch position: hash of mg_pass_id, 0 if none */
	struct writer_known known;   /* pass ids that need no stub */
	int *slots;                  /* hash set for pass numbering */
	size_t cap;                  /* capacity of pass/slots/batch */
	struct record **batch;
	struct record **sorted;      /* scratch of writer_group: a batch ordered by table */
	struct writer_skip *skips;
	size_t nskips;
	int64_t drain_deadline_ns;   /* 0 until the queue is seen closed */
	struct spool_stream *stream; /* this writer's spool segments */
	enum writer_state state;     /* what the writer does with batches now */
	size_t held;                 /* batch[0..held): taken from the queue, not yet durable */
	unsigned failures;           /* consecutive failed attempts: connecting or writing */
	int64_t next_try_ns;         /* CLOCK_MONOTONIC: no attempt (connect, replay) before */
	int64_t fault_ns;            /* CLOCK_MONOTONIC: when the current outage began */
	unsigned hold_attempts;      /* retries of the held batch in this state */
	unsigned unrecorded_tries;   /* replays of a frame whose refused row found no
				      * room in the dead-letter file */
	bool replaying;              /* the records written now come from the spool */
	uint64_t replayed;           /* events replayed from the spool since replay began */
};

/* Merge passes (occurrences of one mg_id) one transaction may hold: each is
 * its own merge statement, so an id repeated hundreds of times in a batch
 * would hold the other events' acks for as many statements. */
#define WRITER_MAX_PASSES 8

/* writer.c: the longest prefix of RECS[0..N) (at least one record) in
 * which no mg_id occurs more than MAX times. */
size_t writer_pass_prefix(struct writer *w, struct record **recs, size_t n, int max);

/* Size the per-batch arrays for batches of MAX records (writer.c). 0 or -1. */
int writer_grow(struct writer *w, size_t max);

/* writer.c: start a connection attempt, or advance the one in progress
 * by waiting up to WAIT_MS for its socket. 1: connected, 0: in progress,
 * -1: failed (logged at warn when LOUD, the first of a series, else debug). */
int writer_connect(struct writer *w, int wait_ms, bool loud);
/* writer.c: close the connection (if any); the writer is down. */
void writer_disconnect(struct writer *w);
/* writer_deliver.c: true once the queue is closed (SIGTERM) and
 * writer.drain_timeout_s has passed since the writer first saw it. */
bool writer_draining_expired(struct writer *w);
/* writer_deliver.c: publish the writer's state and health (stats.h). */
void writer_publish(struct writer *w);

/* writer_pq.c: run SQL (NPARAMS < 0: the simple protocol, several
 * statements allowed) within writer.statement_timeout_ms; the result into
 * *OUT when asked and OK (the caller clears it). Past the deadline the
 * statement is cancelled, the connection dropped, and WRITE_RETRY
 * returned with E saying so. */
enum write_verdict writer_pq_exec(struct writer *w, const char *sql, int nparams,
				  const char *const *params, struct writer_err *e,
				  PGresult **out);
/* writer_pq.c: COPY data, after COPY ... FROM STDIN answered COPY IN;
 * each piece within the deadline armed by writer_pq_copy_started. */
void writer_pq_copy_started(struct writer *w);
int writer_pq_put_copy(struct writer *w, const char *buf, size_t len);
enum write_verdict writer_pq_end_copy(struct writer *w, const char *errmsg,
				      struct writer_err *e);
/* writer_pq.c: a nonblocking connection attempt into w->connecting. */
int writer_pq_connect_start(struct writer *w, const char *const *keys,
			    const char *const *vals);
/* 1 connected, 0 in progress, -1 failed or past connect_timeout. */
int writer_pq_connect_step(struct writer *w, int wait_ms);
/* Bytes of COPY data handed to libpq at a time: large enough that libpq
 * sees few calls, small enough that PostgreSQL starts parsing early. */
#define WRITER_COPY_CHUNK (256 * 1024)

/* writer.c: the verdict on a failed statement (RES may be NULL); fills E. */
enum write_verdict writer_classify(struct writer *w, PGresult *res, struct writer_err *e);
/* writer_copy.c: COPY RECS[LO..HI) (one table's run, numbered by their
 * batch position and w->pass) into that table's staging table. */
enum write_verdict writer_copy(struct writer *w, struct record **recs, size_t lo, size_t hi,
			       struct writer_err *e);
/* writer_known.c: the set of pass ids known to exist. */
int writer_known_init(struct writer_known *k);
void writer_known_free(struct writer_known *k);
void writer_known_clear(struct writer_known *k);
/* Hash the pass ids of RECS[0..N) into w->pass_hash; true when all are known. */
bool writer_known_all(struct writer *w, struct record **recs, size_t n);
/* The pass ids hashed by the last writer_known_all() of N records exist now. */
void writer_known_add(struct writer *w, size_t n);
/* writer.c: write RECS[0..N) in one transaction; E says why when not OK. */
enum write_verdict writer_transaction(struct writer *w, struct record **recs, size_t n,
				      struct writer_err *e);
/* writer.c: the transaction of RECS[0..N) committed: dead-letter the rows
 * it set aside, count the rest. -1 when one of them is held nowhere else
 * and could not be dead-lettered (see writer_dead_letter), else 0. */
int writer_committed(struct writer *w, struct record **recs, size_t n);
/* writer.c: write R to the dead-letter file with MESSAGE (and SQLSTATE).
 * 0 when it is recorded, when its message's ack is failed instead (the
 * client keeps the event and resends it), or when its client asked for no
 * ack (nothing was promised); -1 when R was replayed from the spool (so
 * acked long ago): the caller must keep the spool's copy. */
int writer_dead_letter(struct writer *w, const struct record *r, enum record_reason reason,
		       const char *message, const char *field, const char *sqlstate);
/* writer_deliver.c: the thread (ARG is the struct writer). */
void *writer_main(void *arg);

#endif
