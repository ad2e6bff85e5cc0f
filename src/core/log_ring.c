/*
 * log_ring.c: the last few warning and error lines, for the status page.
 *
 * A fixed array of LOG_RING_LINES slots under one mutex: warnings are rare
 * and a copy of at most LOG_RING_LINE_MAX bytes is all that happens while
 * it is held, so writers that log never wait long; the admin endpoint
 * copies the ring out under the same mutex and formats outside it. Nothing
 * is allocated after start-up, so logging an out-of-memory error works.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "json.h"
#include "log_ring.h"

struct log_ring_line {
	enum log_level level;
	size_t len;
	char text[LOG_RING_LINE_MAX];
};

static pthread_mutex_t log_ring_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_ring_line log_ring_lines[LOG_RING_LINES]; /* under log_ring_lock */
static unsigned long log_ring_next;                         /* under log_ring_lock */

void log_ring_add(enum log_level level, const char *line, size_t len)
{
	struct log_ring_line *slot;
	bool cut = len > LOG_RING_LINE_MAX;

	if (level < LOG_LEVEL_WARN)
		return;
	if (cut)
		len = LOG_RING_LINE_MAX - 3;
	if (pthread_mutex_lock(&log_ring_lock) != 0)
		return; /* cannot happen with a default mutex; the line is on stderr anyway */
	slot = &log_ring_lines[log_ring_next++ % LOG_RING_LINES];
	slot->level = level;
	memcpy(slot->text, line, len);
	if (cut)
		memcpy(slot->text + len, "...", 3);
	slot->len = len + (cut ? 3 : 0);
	pthread_mutex_unlock(&log_ring_lock);
}

void log_ring_clear(void)
{
	if (pthread_mutex_lock(&log_ring_lock) != 0)
		return;
	log_ring_next = 0;
	pthread_mutex_unlock(&log_ring_lock);
}

int log_ring_format_json(struct evbuffer *out)
{
	struct log_ring_line copy[LOG_RING_LINES];
	unsigned long next, n, first;
	int rc = 0;

	if (pthread_mutex_lock(&log_ring_lock) != 0)
		return evbuffer_add_printf(out, ",\"log_recent\":[]") < 0 ? -1 : 0;
	next = log_ring_next;
	memcpy(copy, log_ring_lines, sizeof(copy));
	pthread_mutex_unlock(&log_ring_lock);
	n = next < LOG_RING_LINES ? next : LOG_RING_LINES;
	first = next - n;
	rc |= evbuffer_add_printf(out, ",\"log_recent\":[") < 0;
	for (unsigned long i = first; i < next && !rc; i++) {
		const struct log_ring_line *l = &copy[i % LOG_RING_LINES];

		rc |= evbuffer_add_printf(out, "%s{\"level\":\"%s\",\"line\":", i > first ? "," : "",
					  log_level_name(l->level)) < 0;
		rc |= json_append_string(out, l->text, l->len) < 0;
		rc |= evbuffer_add(out, "}", 1) < 0;
	}
	rc |= evbuffer_add(out, "]", 1) < 0;
	return rc ? -1 : 0;
}
