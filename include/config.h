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

/* listen.tls.ciphers' default: TLS 1.2 only with ECDHE key exchange and AEAD. */
#define CONFIG_TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"

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
	int listen_handshake_timeout_s;
	int listen_max_handshakes;
	long listen_max_buffered_bytes;
	bool listen_reuseport;         /* SO_REUSEPORT on TCP listeners */
	char *listen_shared_key;
	char *listen_tls_cert;
	char *listen_tls_key;
	char *listen_tls_ca;
	char *listen_tls_ciphers;      /* OpenSSL cipher list for TLS 1.2 */

	/* http: POST /v1/events */
	char *http_listen[CONFIG_MAX_TCP]; /* "host:port"; none: the HTTP input is off */
	int http_listen_count;
	int http_max_connections;
	long http_max_body_bytes;
	int http_timeout_s;
	char *http_tokens_file;        /* "": no bearer token needed */
	char *http_tls_cert;
	char *http_tls_key;
	char *http_tls_ca;

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
	long spool_dead_letter_max_bytes;

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
 * applies live and at warn ("needs restart") when it does not. A key that
 * needs a restart keeps its running value: the two configs trade that field,
 * so NEW (which replaces OLD) says what runs and OLD frees the value read.
 * Returns the number of changed keys that need a restart.
 */
int config_diff(struct config *old_cfg, struct config *new_cfg);

/*
 * Print the effective configuration as YAML that config_load reads back:
 * every key, nested by section, with its value; secrets (shared_key, the
 * password inside postgres.conninfo) shown as (hidden).
 */
void config_print(const struct config *cfg, FILE *out);

/*
 * Log a warning for each way CFG exposes the daemon or its secrets: a TCP
 * listener or admin.http on a non-loopback address without authentication,
 * a TLS private key file that group or others may read. Returns how many.
 * For -t and start-up; reads files and resolves names, so not on the loop.
 */
int config_warn_exposure(const struct config *cfg);

/* ---- postgres.conninfo (config_pg.c); any thread ---- */

/*
 * Parse CONNINFO as libpq will (a URI, key=value words, or a bare database
 * name). 0 when it parses; -1 with the reason in WHY (LEN bytes) naming the
 * keyword at fault and never the value of a keyword libpq calls a password.
 */
int config_conninfo_check(const char *conninfo, char *why, size_t len);

/* CONNINFO with the value of each password keyword replaced by "(hidden)",
 * into BUF (LEN bytes, truncated). Returns BUF. */
const char *config_conninfo_hide(const char *conninfo, char *buf, size_t len);

/*
 * TEXT (a libpq error message, say) into BUF (LEN bytes, truncated) with
 * every password of CONNINFO, as written and as libpq decodes it, replaced
 * by "(hidden)". Returns BUF. For logging PQerrorMessage safely.
 */
const char *config_conninfo_redact(const char *conninfo, const char *text, char *buf,
				   size_t len);

#endif
