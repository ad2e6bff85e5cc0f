/*
 * spool: what the daemon keeps on disk under spool.dir.
 *
 * The dead-letter file, spool.dir/dead-letter.jsonl: one JSON object per
 * line for every event the daemon could not write, with the reason. One
 * thread (src/output/spool/spool_dead.c) writes the lines callers queue and fdatasyncs
 * them in groups; a line counts as written only once durable, so an ack
 * sent afterwards never covers an event that is not on disk. The file may
 * grow to spool.dead_letter_max_bytes; a line that would pass it is
 * refused (its caller learns it is not written). Times are RFC 3339 and
 * "event_time" keeps the forward time, so `megactl replay` can send a line
 * back as it came. When the file is moved away (to replay it), the next
 * line starts a new one. Any thread.
 *
 * Spool segments (src/output/spool/spool_stream.c): when PostgreSQL is away, each writer
 * appends its batches to its own stream of segment files
 * (spool.dir/spool-W-SEQ.seg), as framed, CRC-checked records, fsync'ed
 * before the append returns; once PostgreSQL is back the writer replays its
 * stream in order and deletes each segment after the last frame in it has
 * committed. A stream is used by its writer thread only; spool_bytes() is
 * for anyone.
 */
#ifndef MI_SPOOL_H
#define MI_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

struct ack;
struct ackq;
struct record;
struct spool;

struct dead_letter {
	const char *reason;           /* words: "mg_latency_ms: expected integer, got str" */
	const char *field;            /* column or key at fault, or NULL */
	const char *sqlstate;         /* when PostgreSQL refused the row, else NULL */
	const char *tag;              /* forward tag, or NULL */
	size_t tag_len;
	const char *peer;             /* or NULL */
	bool has_event_time;          /* the framing carried a time for the event: */
	int64_t event_time_ns;        /* ... this one, ns since the epoch */
	const msgpack_object *event;  /* the event as received, or NULL ... */
	const struct record *record;  /* ... else the row as the daemon built it */
	uint64_t count;               /* events this one line stands for, when more than 1 */
};

#define SPOOL_DEAD_LETTER_MAX_DEFAULT 1073741824ULL /* spool.dead_letter_max_bytes */

/* Create spool.dir if needed and open the dead-letter file for appending. */
struct spool *spool_open(const char *dir) __attribute__((warn_unused_result));
void spool_close(struct spool *s);

/*
 * Append one dead-letter line and wait until it is durable: 0, or -1 when it
 * is not written (out of memory, I/O error, or the file is at
 * spool.dead_letter_max_bytes; logged). Blocks on the disk: for the writer
 * threads, never the loop.
 */
int spool_dead_letter(struct spool *s, const struct dead_letter *dl)
	__attribute__((warn_unused_result));

/*
 * Queue one dead-letter line without waiting (the loop). With ACK, the line
 * holds a reference on it (pending + 1), dropped through Q once the line is
 * durable; when it cannot be written, ack->failed is set first. -1 (logged)
 * when out of memory: nothing queued, no reference taken.
 */
int spool_dead_letter_post(struct spool *s, const struct dead_letter *dl, struct ackq *q,
			   struct ack *ack) __attribute__((warn_unused_result));

/* True while so many bytes wait for the disk that the loop should stop reading;
 * once they drain, the ackq last given to spool_dead_letter_post is woken. */
bool spool_dead_letter_busy(struct spool *s);

/* Bytes queued and not yet written (shutdown waits for 0). Any thread. */
size_t spool_dead_letter_pending(const struct spool *s);

/* Wait until every queued line is written or refused. Not on the loop while
 * it runs (tests, shutdown). */
void spool_dead_letter_drain(struct spool *s);

/* Set spool.dead_letter_max_bytes (applies to the next line). Any thread. */
void spool_dead_letter_set_max(struct spool *s, uint64_t max_bytes);

/* Path of the dead-letter file (for messages). */
const char *spool_dead_letter_path(const struct spool *s);

/* ---- segment streams (src/output/spool/spool_stream.c) ------------------------------ */

struct spool_stream;

enum spool_status {
	SPOOL_OK = 0,     /* written and fsync'ed: the batch may be acked */
	SPOOL_FULL,       /* spool.max_bytes would be exceeded: nothing written */
	SPOOL_IO_ERROR,   /* a write or fsync failed (ENOSPC, EIO...): nothing durable */
	SPOOL_STATUS_COUNT /* number of statuses; not a status */
};

/*
 * Main thread, once, before any writer starts: find the segments an earlier
 * run left, finish or undo an interrupted re-split, and re-split them when
 * they were written for another writer count, so that writer I's stream
 * holds exactly the events with id_hash % NWRITERS == I, oldest first.
 * Creates the NWRITERS streams. 0, or -1 (logged: the daemon must not start).
 */
int spool_stream_recover(struct spool *s, int nwriters, uint64_t max_bytes)
	__attribute__((warn_unused_result));

/* Writer I's stream (after spool_stream_recover), or NULL. */
struct spool_stream *spool_stream_get(struct spool *s, int writer);

/*
 * Append RECS[0..N) as the newest frames of ST and fsync them (and the
 * directory when a segment is created). Only SPOOL_OK makes them durable;
 * on any other status nothing of this call remains on disk or counts, and
 * the caller keeps its records. Writer thread of ST. The records are not
 * modified or freed.
 */
enum spool_status spool_stream_append(struct spool_stream *st, struct record *const *recs,
				      size_t n) __attribute__((warn_unused_result));

/* errno of the last SPOOL_IO_ERROR (for messages). */
int spool_stream_errno(const struct spool_stream *st);

/* True while ST holds frames not yet replayed. Writer thread of ST. */
bool spool_stream_pending(const struct spool_stream *st);

/*
 * The oldest frame not yet committed: returns 1 and sets *RECS (an array
 * owned by ST, valid until the next call) and *N; the records themselves
 * belong to the caller (record_free each; their ack is NULL). Returns 0
 * when nothing is pending, -1 on a read error (logged; try again later).
 * A torn or corrupt frame is reported with its file and offset and skipped;
 * the frames before it are kept. Calling it again without
 * spool_stream_commit returns the same frame again.
 */
int spool_stream_next(struct spool_stream *st, struct record ***recs, size_t *n)
	__attribute__((warn_unused_result));

/*
 * The frame last returned by spool_stream_next is committed: move past it
 * and delete the segment (durably) once every frame in it is committed.
 * 0, or -1 (logged) when a finished segment could not be deleted.
 */
int spool_stream_commit(struct spool_stream *st) __attribute__((warn_unused_result));

/* Frames found corrupt and skipped in ST since start (tests, messages). */
uint64_t spool_stream_corrupt(const struct spool_stream *st);

/* Bytes the segment files of every stream hold on disk. Any thread. */
uint64_t spool_bytes(const struct spool *s);

#endif
