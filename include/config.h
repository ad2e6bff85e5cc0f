/*
 * config: the YAML configuration file -> one immutable struct config.
 *
 * Every key lives in one table in config.c (path, type, bounds, default,
 * reloadable, offset, help); parsing, defaults, bounds checks and the -t
 * output all come from it. A struct config is never modified after
 * config_load returns; a reload builds a fresh one and the caller swaps the
 * pointer (see main.c).
 */
#ifndef MI_CONFIG_H
#define MI_CONFIG_H

#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>

#define CONFIG_MAX_TCP 16 /* listen.tcp entries */

enum config_unknown_pass_id {
	CONFIG_PASS_ID_CREATE = 0, /* upsert a stub mega_customers row */
	CONFIG_PASS_ID_DEAD_LETTER,
	CONFIG_PASS_ID_COUNT /* number of modes; not a mode */
};

struct config {
	char *path;                    /* file it came from, or NULL for defaults */

	/* listen */
	char *listen_tcp[CONFIG_MAX_TCP]; /* "host:port" strings; IPv6 as "[::1]:port" */
	int listen_tcp_count;
	char *listen_unix;             /* "" disables the Unix listener */
	int listen_unix_mode;          /* parsed from an octal string */
	int listen_max_connections;
	long listen_max_event_bytes;
	int listen_idle_timeout_s;
	char *listen_shared_key;
	char *listen_tls_cert;
	char *listen_tls_key;
	char *listen_tls_ca;

	/* postgres */
	char *pg_conninfo;
	char *pg_table;
	enum config_unknown_pass_id pg_unknown_pass_id;
	bool pg_apply_credits;

	/* queue */
	long queue_max_events;
	long queue_max_bytes;

	/* writer */
	int writer_connections;
	int writer_batch_max_events;
	int writer_flush_interval_ms;
	int writer_retry_initial_ms;
	int writer_retry_max_ms;
	int writer_statement_timeout_ms;
	int writer_drain_timeout_s;

	/* spool */
	char *spool_dir;
	long spool_max_bytes;

	/* admin */
	char *admin_http;              /* "" disables the admin endpoint */

	/* log */
	int log_level;                 /* enum log_level */
	int log_stats_interval_s;
};

/*
 * Load PATH (NULL: defaults only). On success returns a new config. On
 * failure returns NULL after writing every error, one per line, as
 * "file:line:col: key: what is wrong" to ERRS (never stops at the first).
 */
struct config *config_load(const char *path, FILE *errs)
	__attribute__((warn_unused_result));

/* A config holding only the defaults; NULL on allocation failure. */
struct config *config_defaults(void) __attribute__((warn_unused_result));

void config_free(struct config *cfg);

/*
 * Compare OLD and NEW for a reload: logs each changed key, at info when it
 * applies live and at warn ("needs restart") when it does not. Returns the
 * number of changed keys that need a restart.
 */
int config_diff(const struct config *old_cfg, const struct config *new_cfg);

/* Print every key with its effective value, one "key: value" line each. */
void config_print(const struct config *cfg, FILE *out);

#endif
