/*
 * spool.c: the daemon's files under spool.dir.
 *
 * This file owns the directory (created here, fsync'ed through dir_fd),
 * opening and closing the spool and the figure spool_bytes(). The
 * dead-letter file and its writer thread are in spool_dead.c; the segment
 * streams that hold spooled batches are in spool_stream.c.
 *
 * Both hold users' data, so every file is made 0600 and a new directory
 * 0700 with fchmod/chmod, whatever the umask (outside systemd's UMask=0077
 * a shell's 022 would leave them readable by the group).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "json.h"
#include "log.h"
#include "record.h"
#include "spool.h"
#include "spool_private.h"

/* mkdir -p for DIR (mode 0700); *CREATED tells whether DIR itself is new. 0 or -1 with errno. */
/* fsync the directory that holds PATH (PATH is changed and restored). */
static int spool_sync_parent(char *path)
{
	char *slash = strrchr(path, '/');
	int fd, rc;

	if (!slash)
		return 0;
	*slash = '\0';
	fd = open(slash == path ? "/" : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*slash = '/';
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* mkdir -p DIR; *CREATED when DIR itself was made. Each directory made is
 * fsync'ed into its parent: a power loss must not take a new spool.dir
 * (and the acked events in it) with it. */
static int spool_mkdirs(const char *dir, bool *created)
{
	char buf[4096];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, dir, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, SPOOL_DIR_MODE) == 0) {
			if (spool_sync_parent(buf) < 0)
				return -1;
		} else if (errno != EEXIST) {
			return -1;
		}
		*p = '/';
	}
	*created = mkdir(buf, SPOOL_DIR_MODE) == 0;
	if (!*created && errno != EEXIST)
		return -1;
	return *created ? spool_sync_parent(buf) : 0;
}

/*
 * A new spool.dir gets SPOOL_DIR_MODE whatever the umask. An existing one
 * is left as the operator made it (it may be shared on purpose, or be
 * /tmp), with a warning when its group or others may enter or read it.
 */
static int spool_dir_mode(const char *dir, bool created)
{
	struct stat st;

	if (created && chmod(dir, SPOOL_DIR_MODE) < 0)
		return -1;
	if (created)
		return 0;
	if (stat(dir, &st) < 0)
		return -1;
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		log_warn("spool", "spool.dir %s has mode %04o: its group or others may read "
			 "spooled events and dead letters; chmod 700 it (under systemd, "
			 "StateDirectoryMode=0700)", dir, (unsigned)(st.st_mode & 07777));
	return 0;
}

int spool_open_private(const char *path, int flags)
{
	int fd = open(path, flags, SPOOL_FILE_MODE);

	/* Only a file another user owns (an old dead-letter.jsonl) can refuse. */
	if (fd >= 0 && fchmod(fd, SPOOL_FILE_MODE) < 0)
		log_warn("spool", "cannot chmod %s to %04o: %s; its mode stays as it was", path,
			 SPOOL_FILE_MODE, strerror(errno));
	return fd;
}

struct spool *spool_open(const char *dir)
{
	struct spool *s = calloc(1, sizeof(*s));
	bool created = false;

	if (!s)
		return NULL;
	s->dl_fd = -1;
	s->dir_fd = -1;
	if (spool_mkdirs(dir, &created) < 0 || spool_dir_mode(dir, created) < 0) {
		log_error("spool", "cannot create spool.dir %s: %s", dir, strerror(errno));
		goto fail;
	}
	s->dir = strdup(dir);
	s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!s->dir || s->dir_fd < 0) {
		log_error("spool", "cannot open spool.dir %s: %s", dir,
			  s->dir ? strerror(errno) : "out of memory");
		goto fail;
	}
	if (asprintf(&s->dl_path, "%s/dead-letter.jsonl", dir) < 0) {
		s->dl_path = NULL;
		goto fail;
	}
	s->dl_fd = spool_open_private(s->dl_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC);
	if (s->dl_fd < 0) {
		log_error("spool", "cannot open %s: %s", s->dl_path, strerror(errno));
		goto fail;
	}
	if (spool_dead_start(s) < 0)
		goto fail;
	return s;
fail:
	if (s->dl_fd >= 0)
		close(s->dl_fd);
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	free(s->dir);
	free(s->dl_path);
	free(s);
	return NULL;
}

void spool_close(struct spool *s)
{
	if (!s)
		return;
	spool_dead_stop(s);
	spool_stream_free_all(s);
	close(s->dl_fd);
	close(s->dir_fd);
	free(s->dir);
	free(s->dl_path);
	free(s);
}

uint64_t spool_bytes(const struct spool *s)
{
	return atomic_load_explicit(&s->seg_bytes, memory_order_relaxed);
}

const char *spool_dead_letter_path(const struct spool *s)
{
	return s->dl_path;
}
