/*
 * log.c: leveled, thread-safe logging to stderr, one write(2) per line.
 *
 * Each record is formatted on the caller's stack into one bounded buffer,
 * "2026-11-25T03:08:18.123Z warn  module: message\n" (UTC, milliseconds),
 * and handed to the kernel with a single write(2) on fd 2. POSIX makes such
 * a write atomic for pipes up to PIPE_BUF and journald reads whole writes,
 * so lines from several threads never interleave and no mutex is needed.
 * The threshold is an _Atomic int read with relaxed order: a stale level for
 * a moment after log_set_level() is harmless. A message that does not fit is
 * cut and ends in "..."; embedded newlines become spaces and other control
 * bytes '?', so one record is always exactly one line (client-supplied text
 * can never forge a log line).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock_ns.h"
#include "log.h"
#include "log_ring.h"
#include "stats.h"

#define LOG_LINE_MAX 4096 /* bytes per record, newline included */

static _Atomic int log_threshold = LOG_LEVEL_INFO; /* any thread writes and reads; relaxed */

static const char *const log_names[LOG_LEVEL_COUNT] = {
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_ERROR] = "error",
};

/* Set the threshold; out-of-range values are clamped. Any thread. */
void log_set_level(enum log_level level)
{
	int v = (int)level;

	if (v < LOG_LEVEL_DEBUG)
		v = LOG_LEVEL_DEBUG;
	if (v >= LOG_LEVEL_COUNT)
		v = LOG_LEVEL_ERROR;
	atomic_store_explicit(&log_threshold, v, memory_order_relaxed);
}

/* The current threshold. Any thread. */
enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load_explicit(&log_threshold, memory_order_relaxed);
}

/* NAME -> *OUT; 0 on success, -1 (OUT untouched) for an unknown or NULL name. */
int log_level_parse(const char *name, enum log_level *out)
{
	if (!name)
		return -1;
	for (int i = 0; i < LOG_LEVEL_COUNT; i++) {
		if (strcmp(name, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

/* The lower-case name of LEVEL ("?" when out of range); a static string. */
const char *log_level_name(enum log_level level)
{
	if ((int)level < 0 || (int)level >= LOG_LEVEL_COUNT)
		return "?";
	return log_names[level];
}

/* Write "YYYY-MM-DDTHH:MM:SS.mmmZ" into BUF (at least 32 bytes); returns its length. */
static size_t log_timestamp(char *buf, size_t size)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || !gmtime_r(&ts.tv_sec, &tm))
		return (size_t)snprintf(buf, size, "0000-00-00T00:00:00.000Z");
	n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000L);
	return n;
}

/*
 * Copy MSG into DST (room for CAP bytes, no NUL added) with trailing
 * whitespace dropped, newlines turned into spaces and other control bytes
 * into '?'. Returns the number of bytes copied; *CUT tells whether MSG had
 * more than fitted.
 */
static size_t log_copy_clean(char *dst, size_t cap, const char *msg, bool *cut)
{
	size_t len = strlen(msg), n = 0;

	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r' ||
			   msg[len - 1] == ' ' || msg[len - 1] == '\t'))
		len--;
	for (size_t i = 0; i < len && n < cap; i++) {
		unsigned char ch = (unsigned char)msg[i];

		if (ch == '\n' || ch == '\r')
			ch = ' ';
		else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			ch = '?';
		dst[n++] = (char)ch;
	}
	*cut = n < len;
	return n;
}

/* write(2) all of BUF to stderr, retrying on EINTR and short writes; gives up on error. */
static void log_emit(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(STDERR_FILENO, buf, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere left to report it */
		}
		buf += w;
		len -= (size_t)w;
	}
}

/*
 * Format one record and write it with one write(2). Lines below the
 * threshold are dropped. errno is preserved, so callers may log between a
 * failing call and their own use of errno. Any thread.
 */
static void log_vwrite(enum log_level level, const char *module, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

static void log_vwrite(enum log_level level, const char *module, const char *fmt, va_list ap)
{
	char msg[LOG_LINE_MAX];
	char line[LOG_LINE_MAX];
	int saved = errno;
	bool cut = false;
	size_t n;
	int m;

	m = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (m < 0)
		snprintf(msg, sizeof(msg), "(unformattable log message)");
	n = log_timestamp(line, sizeof(line));
	n += (size_t)snprintf(line + n, sizeof(line) - n, " %-5s %.64s: ",
			      log_level_name(level), module ? module : "-");
	n += log_copy_clean(line + n, sizeof(line) - 1 - n, msg, &cut);
	if (cut || m >= (int)sizeof(msg)) {
		if (n > sizeof(line) - 4)
			n = sizeof(line) - 4;
		memcpy(line + n, "...", 3);
		n += 3;
	}
	log_ring_add(level, line, n); /* warn and error: kept for the status page */
	line[n++] = '\n';
	log_emit(line, n);
	errno = saved;
}

void log_write(enum log_level level, const char *module, const char *fmt, ...)
{
	va_list ap;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	log_vwrite(level, module, fmt, ap);
	va_end(ap);
}

/* Whether a line may pass LIM now; *SUPPRESSED gets the lines dropped before it. */
static bool log_limit_pass(struct log_limit *lim, uint64_t *suppressed)
{
	int64_t now = clock_mono_ns() / CLOCK_NS_PER_MS;
	bool pass;

	pthread_mutex_lock(&lim->lock);
	if (now - lim->window_start_ms >= (int64_t)lim->window_ms) {
		lim->window_start_ms = now;
		lim->passed = 0;
	}
	pass = lim->passed < lim->burst;
	*suppressed = 0;
	if (pass) {
		lim->passed++;
		*suppressed = lim->suppressed;
		lim->suppressed = 0;
	} else {
		lim->suppressed++;
	}
	pthread_mutex_unlock(&lim->lock);
	if (!pass)
		stats_add(STAT_log_lines_suppressed_total, 1);
	return pass;
}

void log_write_limited(struct log_limit *lim, enum log_level level, const char *module,
		       const char *fmt, ...)
{
	uint64_t suppressed;
	va_list ap;

	if (!log_enabled(level) || !log_limit_pass(lim, &suppressed))
		return;
	if (suppressed > 0)
		log_write(level, module, "%llu more similar lines suppressed (at most %u every %u ms)",
			  (unsigned long long)suppressed, lim->burst, lim->window_ms);
	va_start(ap, fmt);
	log_vwrite(level, module, fmt, ap);
	va_end(ap);
}
