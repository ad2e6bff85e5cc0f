/*
 * megactl: the operators' command-line tool, one command per table row.
 *
 * megactl.c holds main(), the dispatch table megactl_commands[] and the
 * commands that read the admin endpoint (stats, health). A command that
 * lives in its own file (megactl_replay.c, say) exports one
 * `int megactl_NAME(int argc, char **argv)` declared here and adds one row
 * to the table in megactl.c.
 */
#ifndef MI_MEGACTL_H
#define MI_MEGACTL_H

#include <stddef.h>

#define MEGACTL_DEFAULT_URL "http://127.0.0.1:24225"

/* Exit statuses every command keeps to. */
enum megactl_exit {
	MEGACTL_OK = 0,
	MEGACTL_FAIL = 1,     /* the daemon did not answer, is not ready, or the work failed */
	MEGACTL_USAGE = 2,    /* bad command line */
	MEGACTL_EXIT_COUNT /* number of statuses; not a status */
};

struct megactl_command {
	const char *name;      /* "stats" */
	const char *args;      /* "[--url URL] [-f] [-i SECONDS]", for the usage text */
	const char *summary;   /* one line saying what it does */
	/* Run with ARGV[0] = the command name; returns an enum megactl_exit. */
	int (*run)(int argc, char **argv);
};

/* megactl replay FILE: send dead-letter lines back through the daemon
 * (src/tools/megactl_replay.c). */
int megactl_replay(int argc, char **argv);

/*
 * GET PATH from the admin endpoint at URL ("http://host:port", IPv6 as
 * "http://[::1]:port"). On a reply returns 0 with *STATUS and *BODY (NUL
 * terminated, the caller frees it). When the daemon does not answer (or the
 * URL is bad) returns -1 with the reason in ERR. Plain HTTP/1.0, bounded by
 * a 5 s timeout per step.
 */
int megactl_http_get(const char *url, const char *path, int *status, char **body,
		     char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
