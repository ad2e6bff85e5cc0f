/*
 * spool.c: the daemon's files under spool.dir.
 *
 * The dead-letter file (dead-letter.jsonl) is append-only JSON Lines. Each
 * line is assembled in an evbuffer, written with a single write(2) under a
 * mutex so lines from the loop and the writers never interleave, and
 * fdatasync'ed before returning: the ack that follows a rejection promises
 * the rejected event is on disk with its reason.
 *
 * The segment streams that hold spooled batches live in spool_stream.c; this
 * file owns the directory they share (created here, fsync'ed through
 * dir_fd) and the figure spool_bytes().
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
		if (mkdir(buf, SPOOL_DIR_MODE) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	*created = mkdir(buf, SPOOL_DIR_MODE) == 0;
	if (!*created && errno != EEXIST)
		return -1;
	return 0;
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
	if (pthread_mutex_init(&s->lock, NULL) != 0)
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
	spool_stream_free_all(s);
	close(s->dl_fd);
	close(s->dir_fd);
	pthread_mutex_destroy(&s->lock);
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

/* "key": "value" (string, escaped), or "key": null when V is NULL. */
static int spool_add_field(struct evbuffer *b, const char *key, const char *v, size_t len)
{
	if (evbuffer_add_printf(b, ",\"%s\":", key) < 0)
		return -1;
	if (!v)
		return evbuffer_add(b, "null", 4);
	return json_append_string(b, v, len);
}

/*
 * A record's time ("2026-11-25 03:08:18.123456+00", PostgreSQL's input
 * syntax) as RFC 3339 ("2026-11-25T03:08:18.123456Z"), so a dead-letter line
 * reads back through the daemon's own validation (megactl replay).
 */
static int spool_add_time(struct evbuffer *b, const char *v, size_t len)
{
	char t[48];

	if (len < 20 || len >= sizeof(t) || v[10] != ' ' || strcmp(v + len - 3, "+00") != 0)
		return json_append_string(b, v, len);
	memcpy(t, v, len - 3);
	t[10] = 'T';
	t[len - 3] = 'Z';
	return json_append_string(b, t, len - 2);
}

/* The row as the daemon built it: {"mg_id": "...", "mg_latency_ms": 12, ...}. */
static int spool_add_record(struct evbuffer *b, const struct record *r)
{
	const char *sep = "{";

	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		const char *v = record_get(r, i);

		if (!v)
			continue;
		if (evbuffer_add_printf(b, "%s\"%s\":", sep, record_columns[i].name) < 0)
			return -1;
		sep = ",";
		if (record_columns[i].type == RECORD_TYPE_INT ||
		    record_columns[i].type == RECORD_TYPE_JSONB) {
			if (evbuffer_add(b, v, r->len[i]) < 0)
				return -1;
		} else if (record_columns[i].type == RECORD_TYPE_TIMESTAMPTZ) {
			if (spool_add_time(b, v, r->len[i]) < 0)
				return -1;
		} else if (json_append_string(b, v, r->len[i]) < 0) {
			return -1;
		}
	}
	return evbuffer_add(b, *sep == '{' ? "{}" : "}", *sep == '{' ? 2 : 1);
}

static int spool_add_event(struct evbuffer *b, const struct dead_letter *dl)
{
	char err[16];

	if (evbuffer_add(b, ",\"event\":", 9) < 0)
		return -1;
	if (dl->event)
		return json_append_msgpack(b, dl->event, JSON_LENIENT, "event", err, sizeof(err));
	if (dl->record)
		return spool_add_record(b, dl->record);
	return evbuffer_add(b, "null", 4);
}

/* "event_time": the forward-protocol time of the event, when it had one. */
static int spool_add_event_time(struct evbuffer *b, const struct dead_letter *dl)
{
	char t[48];

	if (!dl->has_event_time)
		return 0;
	record_format_time(dl->event_time_ns, t, sizeof(t));
	if (evbuffer_add(b, ",\"event_time\":", 14) < 0)
		return -1;
	return spool_add_time(b, t, strlen(t));
}

static int spool_format(struct evbuffer *b, const struct dead_letter *dl)
{
	struct timeval tv;
	struct tm tm;
	char ts[40];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	if (evbuffer_add_printf(b, "{\"time\":\"%s.%03ldZ\"", ts, (long)tv.tv_usec / 1000) < 0 ||
	    spool_add_field(b, "reason", dl->reason, dl->reason ? strlen(dl->reason) : 0) < 0 ||
	    spool_add_field(b, "field", dl->field && *dl->field ? dl->field : NULL,
			    dl->field ? strlen(dl->field) : 0) < 0 ||
	    spool_add_field(b, "sqlstate", dl->sqlstate, dl->sqlstate ? strlen(dl->sqlstate) : 0) < 0 ||
	    spool_add_field(b, "tag", dl->tag, dl->tag_len) < 0 ||
	    spool_add_field(b, "peer", dl->peer, dl->peer ? strlen(dl->peer) : 0) < 0 ||
	    spool_add_event_time(b, dl) < 0 ||
	    spool_add_event(b, dl) < 0 || evbuffer_add(b, "}\n", 2) < 0)
		return -1;
	return 0;
}

/* write(2) all of BUF; 0 or -1 with errno. */
static int spool_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * When dead-letter.jsonl was moved or removed (an operator took it away to
 * replay it with megactl replay), start a new one, so lines that fail again
 * never land in the file being replayed. Caller holds s->lock. On failure
 * the old descriptor is kept and the reason logged.
 */
static void spool_dead_letter_reopen(struct spool *s)
{
	struct stat now, open_st;
	int fd;

	if (stat(s->dl_path, &now) == 0 && fstat(s->dl_fd, &open_st) == 0 &&
	    now.st_ino == open_st.st_ino && now.st_dev == open_st.st_dev)
		return;
	fd = spool_open_private(s->dl_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC);
	if (fd < 0) {
		log_error("spool", "%s was moved away and cannot be created again: %s; "
			  "writing on to the moved file", s->dl_path, strerror(errno));
		return;
	}
	if (fsync(s->dir_fd) < 0)
		log_warn("spool", "cannot fsync %s: %s", s->dir, strerror(errno));
	close(s->dl_fd);
	s->dl_fd = fd;
	log_info("spool", "%s was moved away: started a new one", s->dl_path);
}

int spool_dead_letter(struct spool *s, const struct dead_letter *dl)
{
	struct evbuffer *b = evbuffer_new();
	int rc = -1;

	if (!b || spool_format(b, dl) < 0) {
		log_error("spool", "cannot format a dead-letter line: out of memory");
		goto out;
	}
	size_t len = evbuffer_get_length(b);
	const char *line = (const char *)evbuffer_pullup(b, -1);

	pthread_mutex_lock(&s->lock);
	spool_dead_letter_reopen(s);
	if (!line || spool_write_all(s->dl_fd, line, len) < 0 || fdatasync(s->dl_fd) < 0)
		log_error("spool", "cannot write to %s: %s", s->dl_path, strerror(errno));
	else
		rc = 0;
	pthread_mutex_unlock(&s->lock);
out:
	if (b)
		evbuffer_free(b);
	return rc;
}
