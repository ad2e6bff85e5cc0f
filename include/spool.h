/*
 * spool: what the daemon keeps on disk under spool.dir.
 *
 * Today that is the dead-letter file, spool.dir/dead-letter.jsonl: one JSON
 * object per line for every event the daemon could not write, with the
 * reason. Lines are written with one write(2) each under a mutex and
 * fdatasync'ed before the call returns, so an ack sent afterwards never
 * covers an event that is not on disk. Any thread.
 */
#ifndef MI_SPOOL_H
#define MI_SPOOL_H

#include <stddef.h>
#include <msgpack.h>

struct record;
struct spool;

struct dead_letter {
	const char *reason;           /* words: "mg_latency_ms: expected integer, got str" */
	const char *field;            /* column or key at fault, or NULL */
	const char *sqlstate;         /* when PostgreSQL refused the row, else NULL */
	const char *tag;              /* forward tag, or NULL */
	size_t tag_len;
	const char *peer;             /* or NULL */
	const msgpack_object *event;  /* the event as received, or NULL ... */
	const struct record *record;  /* ... else the row as the daemon built it */
};

/* Create spool.dir if needed and open the dead-letter file for appending. */
struct spool *spool_open(const char *dir) __attribute__((warn_unused_result));
void spool_close(struct spool *s);

/* Append one dead-letter line and make it durable. 0, or -1 (logged). */
int spool_dead_letter(struct spool *s, const struct dead_letter *dl)
	__attribute__((warn_unused_result));

/* Path of the dead-letter file (for messages). */
const char *spool_dead_letter_path(const struct spool *s);

#endif
