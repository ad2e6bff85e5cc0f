/*
 * log: leveled, thread-safe logging to stderr, one write(2) per line.
 *
 * Lines look like "2026-11-25T03:08:18.123Z warn  proto: conn=12 peer=... msg".
 * The level check happens before any formatting, so a disabled debug line
 * costs one atomic load. Safe from any thread.
 */
#ifndef MI_LOG_H
#define MI_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level {
	LOG_LEVEL_DEBUG = 0,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
	LOG_LEVEL_COUNT /* number of levels; not a level */
};

/* Set the threshold; lines below it are dropped. Any thread. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "debug"/"info"/"warn"/"error"; returns -1 for anything else. */
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);

/* Write one line at LEVEL for MODULE (a short fixed word such as "writer"). */
void log_write(enum log_level level, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline bool log_enabled(enum log_level level)
{
	return level >= log_get_level();
}

/*
 * A rate limit for lines that clients can cause at will (one per rejected
 * event, per refused connection): at most BURST lines per WINDOW_MS; the
 * lines past it are counted, and the next line that passes is preceded by
 * "N more similar lines suppressed". Define one per call site with
 * LOG_LIMIT_INIT. Any thread (a mutex inside).
 */
struct log_limit {
	pthread_mutex_t lock;
	int64_t window_start_ms;  /* CLOCK_MONOTONIC; under lock */
	unsigned passed;          /* lines written in this window; under lock */
	uint64_t suppressed;      /* lines dropped since the last one written; under lock */
	unsigned burst;
	unsigned window_ms;
};

#define LOG_LIMIT_INIT(burst_, window_ms_) \
	{ PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, (burst_), (window_ms_) }

/* log_write, subject to LIM. */
void log_write_limited(struct log_limit *lim, enum log_level level, const char *module,
		       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define log_limited(lim, lvl, mod, ...) \
	do { if (log_enabled(lvl)) log_write_limited((lim), (lvl), (mod), __VA_ARGS__); } while (0)

#define log_at_(lvl, mod, ...) \
	do { if (log_enabled(lvl)) log_write((lvl), (mod), __VA_ARGS__); } while (0)
#define log_debug(mod, ...) log_at_(LOG_LEVEL_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_at_(LOG_LEVEL_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_at_(LOG_LEVEL_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_at_(LOG_LEVEL_ERROR, mod, __VA_ARGS__)

#endif
