/*
 * spool_private.h: struct spool, shared by the two halves of the spool
 * module (spool.c: directory and dead-letter file; spool_stream.c: segment
 * streams). Not for other modules: they use include/spool.h.
 */
#ifndef MI_SPOOL_PRIVATE_H
#define MI_SPOOL_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool_stream;

struct spool_dl_line;
struct ackq;

/* Modes of what the spool creates, set with fchmod/chmod whatever the umask:
 * segments and dead-letter.jsonl hold events (prompts, emails). */
#define SPOOL_FILE_MODE 0600
#define SPOOL_DIR_MODE 0700

struct spool {
	/* The dead-letter file and its thread (spool_dead.c). */
	pthread_mutex_t lock;          /* guards the dl_ queue fields below */
	pthread_cond_t dl_work;        /* lines queued, or dl_stop */
	pthread_cond_t dl_done;        /* lines made durable (or refused) */
	pthread_t dl_thread;
	bool dl_started;               /* dl_thread runs; immutable after spool_open */
	bool dl_stop;                  /* under lock: finish the queue and exit */
	struct spool_dl_line *dl_head, *dl_tail; /* under lock: oldest first */
	struct ackq *dl_ackq;          /* under lock: woken when the queue drains */
	bool dl_wake;                  /* under lock: the loop waits for room */
	atomic_size_t dl_queued;       /* bytes queued or being written; any thread reads */
	atomic_uint_least64_t dl_max;  /* spool.dead_letter_max_bytes; any thread */
	uint64_t dl_size;              /* bytes in the current file; dead-letter thread only */
	bool dl_full;                  /* refusing lines; dead-letter thread only */
	int dl_fd;                     /* dead-letter.jsonl, O_APPEND; dead-letter thread
					* only once started */
	char *dl_path;
	char *dir;                     /* spool.dir; immutable */
	int dir_fd;                    /* spool.dir, for fsync after create/unlink; immutable */
	atomic_uint_least64_t seg_bytes; /* bytes in segment files; any thread */
	atomic_uint_least64_t next_seq;  /* next segment number; writers take them */
	uint64_t max_bytes;            /* spool.max_bytes; immutable after recover */
	uint64_t seg_target;           /* start a new segment past this size; idem */
	int nstreams;                  /* idem */
	struct spool_stream **streams; /* one per writer; each used by its writer only */
};

/* open(2) PATH with FLAGS (O_CREAT among them) and mode SPOOL_FILE_MODE,
 * then fchmod it to that mode (a failure only logged). The descriptor, or
 * -1 with errno. */
int spool_open_private(const char *path, int flags);

/* Start the dead-letter thread (spool_open). 0, or -1 (logged). */
int spool_dead_start(struct spool *s);
/* Write what is queued, stop the thread (spool_close). */
void spool_dead_stop(struct spool *s);

/* Free every stream (spool_close). */
void spool_stream_free_all(struct spool *s);

#endif
