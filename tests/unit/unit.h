/*
 * unit.h: what the C unit tests share. A failed CHECK prints file:line and
 * the expression and counts; unit_done() prints "N passed, N failed" and
 * returns the exit status automake expects. unit_capture_*() collect what
 * the code under test logs to stderr, for tests that check its messages.
 */
#ifndef MI_UNIT_H
#define MI_UNIT_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int unit_passed, unit_failed;

#define CHECK(expr) do { \
	if (expr) { unit_passed++; } else { unit_failed++; \
		fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); } \
} while (0)

#define CHECK_STR(got, want) do { \
	const char *g_ = (got), *w_ = (want); \
	if (g_ && w_ && strcmp(g_, w_) == 0) { unit_passed++; } else { unit_failed++; \
		fprintf(stderr, "%s:%d: CHECK_STR failed: %s\n  got:  %s\n  want: %s\n", \
			__FILE__, __LINE__, #got, g_ ? g_ : "(null)", w_ ? w_ : "(null)"); } \
} while (0)

/* Substring check: the message must mention NEEDLE. */
#define CHECK_CONTAINS(hay, needle) do { \
	const char *h_ = (hay), *n_ = (needle); \
	if (h_ && strstr(h_, n_)) { unit_passed++; } else { unit_failed++; \
		fprintf(stderr, "%s:%d: CHECK_CONTAINS failed: %s\n  in:   %s\n  want: %s\n", \
			__FILE__, __LINE__, #hay, h_ ? h_ : "(null)", n_); } \
} while (0)

/* stderr (fd 2) redirected to a temporary file between begin and end. */
struct unit_capture {
	FILE *tmp;
	int saved;
};

/* Harness failures (no temp file, dup2 failing) abort: no test can run on. */
static inline void unit_capture_begin(struct unit_capture *c)
{
	fflush(stderr);
	c->tmp = tmpfile();
	c->saved = dup(2);
	if (!c->tmp || c->saved < 0 || dup2(fileno(c->tmp), 2) < 0)
		abort();
}

/* Restore stderr; returns what was written meanwhile (caller frees). */
static inline char *unit_capture_end(struct unit_capture *c)
{
	char *buf;
	long n;

	fflush(stderr);
	if (dup2(c->saved, 2) < 0 || close(c->saved) < 0)
		abort();
	if (fseek(c->tmp, 0, SEEK_END) < 0 || (n = ftell(c->tmp)) < 0)
		abort();
	buf = calloc(1, (size_t)n + 1);
	rewind(c->tmp);
	if (!buf || fread(buf, 1, (size_t)n, c->tmp) != (size_t)n)
		abort();
	fclose(c->tmp);
	return buf;
}

/* Run FN(ARG) with stderr captured; returns what it wrote (caller frees). */
static inline char *unit_capture_stderr(void (*fn)(void *), void *arg)
{
	struct unit_capture c;

	unit_capture_begin(&c);
	fn(arg);
	return unit_capture_end(&c);
}

/* A fresh spool directory /tmp/NAME.XXXXXX in DIR (SIZE bytes); with
 * DEV_FULL its dead-letter file is /dev/full, so no dead letter can be
 * written. Exits on failure: no test can run without it. */
static inline void unit_spool_dir(char *dir, size_t size, const char *name, bool dev_full)
{
	char path[256];

	snprintf(dir, size, "/tmp/%s.XXXXXX", name);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(path, sizeof(path), "%s/dead-letter.jsonl", dir);
	if (dev_full && symlink("/dev/full", path) < 0) {
		perror("symlink");
		exit(2);
	}
}

static inline int unit_done(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, unit_passed, unit_failed);
	return unit_failed ? 1 : 0;
}

#endif
