/*
 * spool_dead.c: the dead-letter file, spool.dir/dead-letter.jsonl, and the
 * thread that writes it.
 *
 * Callers format their line (spool_format) and queue it; one thread takes
 * everything queued, appends it with one write(2) per line and makes the
 * group durable with one fdatasync, so a burst of rejections costs one sync,
 * and the event loop never waits on the disk. A line queued by the loop
 * (spool_dead_letter_post) holds a reference on its message's ack, dropped
 * only once the line is durable; when it cannot be written (I/O error, or
 * the file is at spool.dead_letter_max_bytes) the ack is marked failed
 * before the reference is dropped, and the listener closes the connection
 * instead of acking, so the client resends. A writer thread's line
 * (spool_dead_letter) waits for the same outcome. Lines are never dropped
 * silently: each is either durable, or its caller learns it is not.
 *
 * When the file was moved away (to replay it), the next group starts a new
 * one, and the size limit counts that new file only. Threads: callers of
 * any thread queue under s->lock; dl_fd, dl_size and dl_full belong to the
 * dead-letter thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "ack.h"
#include "json.h"
#include "log.h"
#include "record.h"
#include "spool.h"
#include "spool_private.h"
#include "stats.h"

/* Queued bytes that pause the loop's reading; any later room check that
 * finds fewer resumes it. */
#define SPOOL_DL_QUEUE_HIGH (8u * 1024 * 1024)
/* A paused loop is woken (ackq_wake) to check again once the dead-letter
 * thread drains the queue below this, so it never waits on other traffic. */
#define SPOOL_DL_QUEUE_LOW (2u * 1024 * 1024)

/* What a writer thread waits on in spool_dead_letter. */
struct spool_dl_wait {
	bool done;
	int rc;
};

/* One formatted line in the queue. */
struct spool_dl_line {
	struct spool_dl_line *next;
	struct ack *ack;              /* loop's line: a reference dropped once durable, or NULL */
	struct ackq *ackq;            /* where ACK goes */
	struct spool_dl_wait *wait;   /* writer's line: told the outcome, or NULL */
	size_t len;
	char text[];
};

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
	const struct table *t = record_table(r);
	const char *sep = "{";

	for (int i = 0; i < t->ncols; i++) {
		const char *v = record_get(r, i);

		if (!v)
			continue;
		if (evbuffer_add_printf(b, "%s\"%s\":", sep, t->cols[i].name) < 0)
			return -1;
		sep = ",";
		if (t->cols[i].type == TABLE_TYPE_INT || t->cols[i].type == TABLE_TYPE_JSONB) {
			if (evbuffer_add(b, v, r->len[i]) < 0)
				return -1;
		} else if (t->cols[i].type == TABLE_TYPE_TIMESTAMPTZ) {
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
	    (dl->count > 1 && evbuffer_add_printf(b, ",\"count\":%llu",
						   (unsigned long long)dl->count) < 0) ||
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
 * never land in the file being replayed. On failure the old descriptor is
 * kept and the reason logged. Dead-letter thread.
 */
static void spool_dead_reopen(struct spool *s)
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
	s->dl_size = fstat(fd, &now) == 0 ? (uint64_t)now.st_size : 0;
	log_info("spool", "%s was moved away: started a new one", s->dl_path);
}

/* Log (once per change) that the file reached its limit or has room again. */
static void spool_dead_set_full(struct spool *s, bool full, size_t len)
{
	if (full == s->dl_full)
		return;
	s->dl_full = full;
	stats_set_gauge(STAT_dead_letter_full, full);
	if (full)
		log_error("spool", "%s holds %llu bytes: a %zu-byte line would pass "
			  "spool.dead_letter_max_bytes=%llu; rejected events are refused until it is "
			  "moved away (megactl replay) or the limit raised: their messages get no ack "
			  "and the connection is closed, so clients resend", s->dl_path,
			  (unsigned long long)s->dl_size, len,
			  (unsigned long long)atomic_load(&s->dl_max));
	else
		log_info("spool", "%s has room again: rejected events are dead-lettered",
			 s->dl_path);
}

/*
 * A group's write failed: cut the file back to START, its size before the
 * group (KNOWN: fstat told it), so no torn line stays for the next one to
 * be appended onto, and no line of a group whose callers hear "not
 * written" stays to be written twice when they resend. When the file
 * cannot be cut, a newline ends the torn line, so the lines after it still
 * parse. Dead-letter thread.
 */
static void spool_dead_cut(struct spool *s, bool known, uint64_t start)
{
	if (known && ftruncate(s->dl_fd, (off_t)start) == 0) {
		s->dl_size = start;
		return;
	}
	log_error("spool", "cannot cut the failed write off %s: %s; its last line may be "
		  "torn: megactl replay reports it and reads on", s->dl_path,
		  known ? strerror(errno) : "its size is unknown");
	if (spool_write_all(s->dl_fd, "\n", 1) < 0)
		log_error("spool", "cannot end the torn line of %s: %s; the next line "
			  "written joins it", s->dl_path, strerror(errno));
	s->dl_size = start; /* the next group learns the real size from fstat */
}

/*
 * Write the lines of LIST that fit under the size limit and fdatasync them.
 * Each line's outcome goes into its rc: 0 durable, -1 not; on an error the
 * group is cut off the file again. Dead-letter thread.
 */
static void spool_dead_write(struct spool *s, struct spool_dl_line *list, int *rcs)
{
	bool wrote = false, ioerr = false;
	uint64_t max = atomic_load(&s->dl_max), start;
	int i = 0, err = 0;

	struct stat st;
	bool known;

	spool_dead_reopen(s);
	known = fstat(s->dl_fd, &st) == 0;
	if (known)
		s->dl_size = (uint64_t)st.st_size; /* whoever else wrote to it */
	start = s->dl_size;
	for (struct spool_dl_line *l = list; l; l = l->next, i++) {
		rcs[i] = -1;
		if (ioerr)
			continue;
		if (s->dl_size + l->len > max) {
			spool_dead_set_full(s, true, l->len);
			stats_add(STAT_dead_letters_refused_total, 1);
			continue;
		}
		spool_dead_set_full(s, false, 0);
		if (spool_write_all(s->dl_fd, l->text, l->len) < 0) {
			ioerr = true;
			err = errno;
			continue;
		}
		s->dl_size += l->len;
		rcs[i] = 0;
		wrote = true;
	}
	if (wrote && !ioerr && fdatasync(s->dl_fd) < 0) {
		ioerr = true;
		err = errno;
	}
	if (!ioerr)
		return;
	log_error("spool", "cannot write to %s: %s; the events of this write are not "
		  "dead-lettered (no ack covers them)", s->dl_path, strerror(err));
	spool_dead_cut(s, known, start);
	for (int k = 0; k < i; k++)
		rcs[k] = -1;
}

/* Tell each line's caller its outcome and free it. Dead-letter thread. */
static void spool_dead_finish(struct spool *s, struct spool_dl_line *list, const int *rcs)
{
	struct spool_dl_line *next;
	int i = 0;

	pthread_mutex_lock(&s->lock);
	for (struct spool_dl_line *l = list; l; l = l->next, i++)
		if (l->wait) {
			l->wait->rc = rcs[i];
			l->wait->done = true;
		}
	pthread_mutex_unlock(&s->lock);
	i = 0;
	for (struct spool_dl_line *l = list; l; l = next, i++) {
		next = l->next;
		if (l->ack) {
			if (rcs[i] < 0)
				atomic_store(&l->ack->failed, true);
			ack_release(l->ackq, l->ack);
		}
		atomic_fetch_sub(&s->dl_queued, l->len);
		free(l);
	}
	pthread_mutex_lock(&s->lock);
	pthread_cond_broadcast(&s->dl_done);
	if (s->dl_wake && s->dl_ackq && atomic_load(&s->dl_queued) < SPOOL_DL_QUEUE_LOW) {
		s->dl_wake = false;
		ackq_wake(s->dl_ackq);
	}
	pthread_mutex_unlock(&s->lock);
}

static void *spool_dead_main(void *arg)
{
	struct spool *s = arg;
	struct spool_dl_line *list;
	int *rcs = NULL;
	size_t cap = 0, n;

	for (;;) {
		pthread_mutex_lock(&s->lock);
		while (!s->dl_head && !s->dl_stop)
			pthread_cond_wait(&s->dl_work, &s->lock);
		list = s->dl_head;
		s->dl_head = s->dl_tail = NULL;
		pthread_mutex_unlock(&s->lock);
		if (!list)
			break; /* stopping, and nothing left */
		n = 0;
		for (struct spool_dl_line *l = list; l; l = l->next)
			n++;
		if (n > cap) {
			int *nr = realloc(rcs, n * sizeof(*rcs));

			if (!nr) {
				log_error("spool", "out of memory writing %zu dead-letter lines; retrying",
					  n);
				pthread_mutex_lock(&s->lock); /* put them back, oldest first */
				struct spool_dl_line *last = list;

				while (last->next)
					last = last->next;
				last->next = s->dl_head;
				s->dl_head = list;
				if (!s->dl_tail)
					s->dl_tail = last;
				pthread_mutex_unlock(&s->lock);
				sleep(1);
				continue;
			}
			rcs = nr;
			cap = n;
		}
		spool_dead_write(s, list, rcs);
		spool_dead_finish(s, list, rcs);
	}
	free(rcs);
	return NULL;
}

int spool_dead_start(struct spool *s)
{
	struct stat st;
	const char *step;
	int err; /* pthread_* return the error; they do not set errno */

	s->dl_size = fstat(s->dl_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	atomic_init(&s->dl_queued, 0);
	atomic_init(&s->dl_max, SPOOL_DEAD_LETTER_MAX_DEFAULT);
	step = "create its lock";
	if ((err = pthread_mutex_init(&s->lock, NULL)) != 0)
		goto fail;
	step = "create its condition variables";
	if ((err = pthread_cond_init(&s->dl_work, NULL)) != 0)
		goto fail_lock;
	if ((err = pthread_cond_init(&s->dl_done, NULL)) != 0)
		goto fail_work;
	step = "start it";
	if ((err = pthread_create(&s->dl_thread, NULL, spool_dead_main, s)) != 0)
		goto fail_done;
	s->dl_started = true;
	return 0;
fail_done:
	pthread_cond_destroy(&s->dl_done);
fail_work:
	pthread_cond_destroy(&s->dl_work);
fail_lock:
	pthread_mutex_destroy(&s->lock);
fail:
	log_error("spool", "dead-letter thread: cannot %s: %s", step, strerror(err));
	return -1;
}

void spool_dead_stop(struct spool *s)
{
	if (!s->dl_started)
		return;
	pthread_mutex_lock(&s->lock);
	s->dl_stop = true;
	pthread_cond_signal(&s->dl_work);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->dl_thread, NULL);
	s->dl_started = false;
	pthread_cond_destroy(&s->dl_done);
	pthread_cond_destroy(&s->dl_work);
	pthread_mutex_destroy(&s->lock);
}

/* DL as one formatted line, or NULL (logged) when out of memory. */
static struct spool_dl_line *spool_dead_line(const struct dead_letter *dl)
{
	struct evbuffer *b = evbuffer_new();
	struct spool_dl_line *l = NULL;
	size_t len;

	if (!b || spool_format(b, dl) < 0)
		goto out;
	len = evbuffer_get_length(b);
	l = malloc(sizeof(*l) + len);
	if (!l)
		goto out;
	memset(l, 0, sizeof(*l));
	l->len = len;
	if (evbuffer_remove(b, l->text, len) != (int)len) {
		free(l);
		l = NULL;
	}
out:
	if (!l)
		log_error("spool", "cannot format a dead-letter line: out of memory");
	if (b)
		evbuffer_free(b);
	return l;
}

/* Append L to the queue and wake the thread. Caller holds s->lock. */
static void spool_dead_queue(struct spool *s, struct spool_dl_line *l)
{
	atomic_fetch_add(&s->dl_queued, l->len);
	if (s->dl_tail)
		s->dl_tail->next = l;
	else
		s->dl_head = l;
	s->dl_tail = l;
	pthread_cond_signal(&s->dl_work);
}

int spool_dead_letter(struct spool *s, const struct dead_letter *dl)
{
	struct spool_dl_wait wait = { false, -1 };
	struct spool_dl_line *l = spool_dead_line(dl);

	if (!l)
		return -1;
	l->wait = &wait;
	pthread_mutex_lock(&s->lock);
	spool_dead_queue(s, l);
	while (!wait.done)
		pthread_cond_wait(&s->dl_done, &s->lock);
	pthread_mutex_unlock(&s->lock);
	return wait.rc;
}

int spool_dead_letter_post(struct spool *s, const struct dead_letter *dl, struct ackq *q,
			   struct ack *ack)
{
	struct spool_dl_line *l = spool_dead_line(dl);

	if (!l)
		return -1;
	if (ack) {
		atomic_fetch_add(&ack->pending, 1);
		l->ack = ack;
		l->ackq = q;
	}
	pthread_mutex_lock(&s->lock);
	s->dl_ackq = q;
	spool_dead_queue(s, l);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

bool spool_dead_letter_busy(struct spool *s)
{
	bool busy;

	if (atomic_load(&s->dl_queued) < SPOOL_DL_QUEUE_HIGH)
		return false;
	pthread_mutex_lock(&s->lock);
	busy = atomic_load(&s->dl_queued) >= SPOOL_DL_QUEUE_LOW;
	s->dl_wake = busy;
	pthread_mutex_unlock(&s->lock);
	return busy;
}

size_t spool_dead_letter_pending(const struct spool *s)
{
	return atomic_load(&((struct spool *)s)->dl_queued);
}

void spool_dead_letter_drain(struct spool *s)
{
	pthread_mutex_lock(&s->lock);
	while (atomic_load(&s->dl_queued) > 0)
		pthread_cond_wait(&s->dl_done, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

void spool_dead_letter_set_max(struct spool *s, uint64_t max_bytes)
{
	atomic_store(&s->dl_max, max_bytes);
}
