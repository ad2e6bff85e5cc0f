/*
 * log_ring: the last few warning and error lines, kept in memory for the
 * status page (/stats "log_recent"). log.c hands it each line at warn or
 * above; it keeps the newest LOG_RING_LINES, each cut at LOG_RING_LINE_MAX
 * bytes (ending in "..." when cut). Any thread.
 */
#ifndef MI_LOG_RING_H
#define MI_LOG_RING_H

#include <stddef.h>

#include "log.h"

#define LOG_RING_LINES 10
#define LOG_RING_LINE_MAX 512

struct evbuffer;

/* Keep LINE (LEN bytes, no newline) logged at LEVEL; below warn: ignored. */
void log_ring_add(enum log_level level, const char *line, size_t len);

/* The kept lines, oldest first, as ,"log_recent":[{"level":"warn","line":"..."},...]
 * appended to OUT (the tail of a JSON object). 0, or -1 when out of memory. */
int log_ring_format_json(struct evbuffer *out) __attribute__((warn_unused_result));

/* Forget every kept line (tests). */
void log_ring_clear(void);

#endif
