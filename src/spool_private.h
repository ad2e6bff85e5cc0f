/*
 * spool_private.h: struct spool, shared by the two halves of the spool
 * module (spool.c: directory and dead-letter file; spool_stream.c: segment
 * streams). Not for other modules: they use include/spool.h.
 */
#ifndef MI_SPOOL_PRIVATE_H
#define MI_SPOOL_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct spool_stream;

/* Modes of what the spool creates, set with fchmod/chmod whatever the umask:
 * segments and dead-letter.jsonl hold events (prompts, emails). */
#define SPOOL_FILE_MODE 0600
#define SPOOL_DIR_MODE 0700

struct spool {
	pthread_mutex_t lock;          /* serialises appends to dl_fd */
	int dl_fd;                     /* dead-letter.jsonl, O_APPEND */
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

/* Free every stream (spool_close). */
void spool_stream_free_all(struct spool *s);

#endif
