/*
 * writer: a thread that moves batches from a queue into PostgreSQL.
 *
 * Each writer owns one libpq connection and one queue. A batch is written in
 * one transaction: COPY into a temporary staging table, stub mega_customers
 * rows for new pass ids, then INSERT ... SELECT ... ON CONFLICT (mg_id) DO
 * UPDATE into the ledger table. After COMMIT it releases the batch's acks.
 * While PostgreSQL is unreachable, batches go to the writer's spool stream
 * and are acked once fsync'ed; they are replayed in order once it is back.
 * When the spool cannot take more, the batch is held unacked (the queue
 * fills, the loop stops reading: nothing is dropped); rows that PostgreSQL
 * refuses are isolated and dead-lettered. See writer.c.
 */
#ifndef MI_WRITER_H
#define MI_WRITER_H

struct config;
struct queue;
struct spool;
struct ackq;
struct writer;

/* Start a writer thread on Q. CFG is copied for what the writer needs. */
struct writer *writer_start(int id, const struct config *cfg, struct queue *q,
			    struct spool *spool, struct ackq *ackq)
	__attribute__((warn_unused_result));

/* Apply the live keys of CFG (batch size, flush interval, retry timings). */
void writer_reconfigure(struct writer *w, const struct config *cfg);

/* Wait for the thread to drain its (closed) queue and exit, then free W.
 * Caller closes the queue first (queue_close). */
void writer_join(struct writer *w);

/* True once the thread has drained its closed queue and exited. Any thread. */
int writer_done(const struct writer *w);

/* Seconds since the thread last made progress (for the watchdog). */
double writer_idle_seconds(const struct writer *w);

#endif
