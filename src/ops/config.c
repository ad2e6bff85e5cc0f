/*
 * config.c: megaingest.yaml -> one immutable struct config, from one table.
 *
 * config_keys[] below is the only place a key is described: its dotted path,
 * type, bounds, default, whether SIGHUP may apply it live, where it lives in
 * struct config and a line of help. Defaults, parsing, bounds checks,
 * config_print and the reload diff are loops over that table, so adding a
 * key is one row (PgBouncer's CF_ABS table, Redis's standardConfig), plus
 * CONFIG_NKEYS in config_private.h, which the compiler checks.
 *
 * This file owns the table, the checks a value or a pair of values must
 * pass, defaults, free and config_load: read the file, walk it
 * (config_yaml.c), check across keys, and return the config only if
 * nothing was reported (config_report.c writes and counts the messages).
 * config_print and config_diff are in config_show.c.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/ssl.h>
#include <yaml.h>

#include "config.h"
#include "config_private.h"
#include "log.h"

#define CONFIG_FILE_MAX (1L << 20) /* a config bigger than 1 MiB is a mistake */

static const char *config_check_hostport(const char *s);
static const char *config_check_hostport_or_empty(const char *s);
static const char *config_check_table(const char *s);
static const char *config_check_ciphers(const char *s);

static const char *const config_pass_id_names[] = { "create", "dead_letter", NULL };
static const char *const config_level_names[] = { "debug", "info", "warn", "error", NULL };

_Static_assert(sizeof(config_pass_id_names) / sizeof(char *) == CONFIG_PASS_ID_COUNT + 1,
	       "postgres.unknown_pass_id names must match enum config_unknown_pass_id");
_Static_assert(sizeof(config_level_names) / sizeof(char *) == LOG_LEVEL_COUNT + 1,
	       "log.level names must match enum log_level");
_Static_assert(sizeof(enum config_unknown_pass_id) == sizeof(int), "ENUM fields are int-sized");
_Static_assert(offsetof(struct config, listen_tcp_count) ==
	       offsetof(struct config, listen_tcp) + sizeof(((struct config *)0)->listen_tcp),
	       "a LIST field is followed by its int count");
_Static_assert(offsetof(struct config, http_listen_count) ==
	       offsetof(struct config, http_listen) + sizeof(((struct config *)0)->http_listen),
	       "a LIST field is followed by its int count");

/* offsetof(struct config, F), refusing to compile unless F has type T. */
#define CONFIG_FIELD(f, T) \
	(offsetof(struct config, f) + 0 * sizeof(_Generic(((struct config *)0)->f, T: 1)))
#define CONFIG_ENUM_FIELD(f) \
	(offsetof(struct config, f) + 0 * sizeof(char[sizeof(((struct config *)0)->f) == \
						      sizeof(int) ? 1 : -1]))

#define K_INT(p, f, lo, hi, d, rl, h) { .path = p, .type = CONFIG_T_INT, .min = lo, .max = hi, \
	.def = d, .reloadable = rl, .offset = CONFIG_FIELD(f, int), .help = h }
#define K_LONG(p, f, lo, hi, d, rl, h) { .path = p, .type = CONFIG_T_LONG, .min = lo, \
	.max = hi, .def = d, .reloadable = rl, .offset = CONFIG_FIELD(f, long), .help = h }
#define K_BOOL(p, f, d, rl, h) { .path = p, .type = CONFIG_T_BOOL, .min = 0, .max = 1, \
	.def = d, .reloadable = rl, .offset = CONFIG_FIELD(f, bool), .help = h }
#define K_STR(p, f, lo, hi, d, chk, sec, rl, h) { .path = p, .type = CONFIG_T_STRING, \
	.min = lo, .max = hi, .def_str = d, .check = chk, .secret = sec, .reloadable = rl, \
	.offset = CONFIG_FIELD(f, char *), .help = h }
#define K_STR_HIDE(p, f, lo, hi, d, hd, rl, h) { .path = p, .type = CONFIG_T_STRING, \
	.min = lo, .max = hi, .def_str = d, .secret = true, .hide = hd, .reloadable = rl, \
	.offset = CONFIG_FIELD(f, char *), .help = h }
#define K_MODE(p, f, d, rl, h) { .path = p, .type = CONFIG_T_MODE, .min = 0, .max = 0777, \
	.def = d, .reloadable = rl, .offset = CONFIG_FIELD(f, int), .help = h }
#define K_LIST(p, f, hi, d, chk, rl, h) { .path = p, .type = CONFIG_T_LIST, .min = 0, \
	.max = hi, .def_str = d, .check = chk, .reloadable = rl, \
	.offset = CONFIG_FIELD(f, char **), .help = h }
#define K_ENUM(p, f, nm, d, rl, h) { .path = p, .type = CONFIG_T_ENUM, .min = 0, \
	.max = sizeof(nm) / sizeof(char *) - 2, .names = nm, .def = d, .reloadable = rl, \
	.offset = CONFIG_ENUM_FIELD(f), .help = h }

#define RELOAD true
#define RESTART false
#define SECRET true
#define PLAIN false

/* Every key, in file order, with its default (etc/megaingest.yaml shows them). */
const struct config_key config_keys[] = {
	K_LIST("listen.tcp", listen_tcp, CONFIG_MAX_TCP, "127.0.0.1:24224",
	       config_check_hostport, RESTART,
	       "TCP listeners for the forward protocol, \"host:port\" ([::1]:port for IPv6)"),
	K_STR("listen.unix", listen_unix, 0, 107, "/run/megaingest/megaingest.sock", NULL,
	      PLAIN, RESTART, "Unix socket path; \"\" disables the Unix listener"),
	K_MODE("listen.unix_mode", listen_unix_mode, 0660, RESTART,
	       "permissions of the Unix socket, octal"),
	K_INT("listen.max_connections", listen_max_connections, 1, 1000000, 1024, RELOAD,
	      "client connections open at once; more are refused"),
	K_LONG("listen.max_event_bytes", listen_max_event_bytes, 64, 1073741824L, 1048576,
	       RELOAD, "largest msgpack value a client may send; more closes the connection"),
	K_INT("listen.idle_timeout_s", listen_idle_timeout_s, 1, 86400, 300, RELOAD,
	      "a connection that completes no value for this long is closed"),
	K_INT("listen.handshake_timeout_s", listen_handshake_timeout_s, 1, 3600, 10, RELOAD,
	      "a TCP connection still in the TLS or shared-key handshake after this long is closed"),
	K_INT("listen.max_handshakes", listen_max_handshakes, 1, 1000000, 256, RELOAD,
	      "TCP connections in the handshake at once; a new one closes the oldest"),
	K_LONG("listen.max_buffered_bytes", listen_max_buffered_bytes, 1048576, 68719476736L,
	       268435456L, RELOAD,
	       "memory all connections' unfinished values may take; past it the largest wait"),
	K_BOOL("listen.reuseport", listen_reuseport, false, RESTART,
	       "true: SO_REUSEPORT on TCP listeners, so several daemons share a port"),
	K_STR("listen.shared_key", listen_shared_key, 0, 1024, "", NULL, SECRET, RESTART,
	      "non-empty: TCP clients must complete the forward protocol handshake"),
	K_STR("listen.tls.cert", listen_tls_cert, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM certificate chain; with key, TCP listeners speak TLS"),
	K_STR("listen.tls.key", listen_tls_key, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM private key of cert"),
	K_STR("listen.tls.ca", listen_tls_ca, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM CA bundle; non-empty: clients must present a certificate it signed"),
	K_STR("listen.tls.ciphers", listen_tls_ciphers, 1, 1024, CONFIG_TLS12_CIPHERS,
	      config_check_ciphers, PLAIN, RESTART,
	      "OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are all forward-secret AEAD)"),
	K_LIST("http.listen", http_listen, CONFIG_MAX_TCP, "", config_check_hostport, RESTART,
	       "HTTP listeners for POST /v1/events, \"host:port\"; none (the default): off"),
	K_INT("http.max_connections", http_max_connections, 1, 1000000, 1024, RESTART,
	      "HTTP connections open at once; one more is closed as soon as it opens"),
	K_LONG("http.max_body_bytes", http_max_body_bytes, 1024, 1073741824L, 8388608L, RESTART,
	       "largest request body; a larger one is answered 413 without being read"),
	K_INT("http.timeout_s", http_timeout_s, 1, 3600, 30, RESTART,
	      "a connection that sends nothing for this long (headers or body) is closed"),
	K_STR("http.tokens_file", http_tokens_file, 0, 4096, "", NULL, PLAIN, RESTART,
	      "file of bearer tokens, one a line; non-empty: every request needs one"),
	K_STR("http.tls.cert", http_tls_cert, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM certificate chain; with key, the HTTP listeners speak HTTPS"),
	K_STR("http.tls.key", http_tls_key, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM private key of http.tls.cert"),
	K_STR("http.tls.ca", http_tls_ca, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM CA bundle; non-empty: HTTPS clients must present a certificate it signed"),
	K_STR_HIDE("postgres.conninfo", pg_conninfo, 0, 8192, "", config_conninfo_hide, RESTART,
		   "libpq connection string or URI; PG* environment variables apply"),
	K_STR("postgres.table", pg_table, 1, 127, "mega_generations", config_check_table,
	      PLAIN, RESTART, "the ledger table, optionally schema-qualified"),
	K_ENUM("postgres.unknown_pass_id", pg_unknown_pass_id, config_pass_id_names,
	       CONFIG_PASS_ID_CREATE, RESTART,
	       "an event for an unknown mg_pass_id: create a stub customer, or dead_letter it"),
	K_BOOL("postgres.apply_credits", pg_apply_credits, false, RESTART,
	       "true: a new credit_transaction adds its mg_delta to mega_customers.mg_credits"),
	K_LONG("queue.max_events", queue_max_events, 1, 100000000L, 262144, RELOAD,
	       "events buffered in memory before clients are paused"),
	K_LONG("queue.max_bytes", queue_max_bytes, 65536, 68719476736L, 268435456L, RELOAD,
	       "bytes buffered in memory before clients are paused"),
	K_INT("writer.connections", writer_connections, 1, 64, 1, RESTART,
	      "writer threads, one PostgreSQL connection each; events split by mg_id hash"),
	K_INT("writer.batch_max_events", writer_batch_max_events, 1, 1000000, 10000, RELOAD,
	      "most events in one transaction"),
	K_INT("writer.flush_interval_ms", writer_flush_interval_ms, 0, 60000, 0, RELOAD,
	      "linger for a fuller batch; 0: a free writer takes what is queued at once"),
	K_INT("writer.retry_initial_ms", writer_retry_initial_ms, 1, 600000, 100, RELOAD,
	      "first delay after a PostgreSQL failure before trying again; doubles each time"),
	K_INT("writer.retry_max_ms", writer_retry_max_ms, 1, 3600000, 2000, RELOAD,
	      "longest delay between attempts to reconnect or write again while spooling"),
	K_INT("writer.statement_timeout_ms", writer_statement_timeout_ms, 100, 86400000, 30000,
	      RELOAD, "most time one statement (COPY and COMMIT included) may take; past it "
	      "the statement is cancelled and the batch spooled"),
	K_INT("writer.drain_timeout_s", writer_drain_timeout_s, 0, 3600, 30, RELOAD,
	      "on SIGTERM, how long to drain into PostgreSQL before spooling the rest"),
	K_STR("spool.dir", spool_dir, 1, 4096, "/var/lib/megaingest", NULL, PLAIN, RESTART,
	      "directory for spooled batches and dead-letter.jsonl"),
	K_LONG("spool.max_bytes", spool_max_bytes, 1048576, 1125899906842624L, 1073741824L,
	       RESTART, "most bytes the spool may hold on disk"),
	K_LONG("spool.dead_letter_max_bytes", spool_dead_letter_max_bytes, 1048576,
	       1125899906842624L, 1073741824L, RELOAD,
	       "most bytes dead-letter.jsonl may hold; past it rejected events get no ack"),
	K_STR("admin.http", admin_http, 0, 261, "127.0.0.1:24225",
	      config_check_hostport_or_empty, PLAIN, RESTART,
	      "host:port of /metrics /stats /healthz /readyz; \"\" disables it"),
	K_ENUM("log.level", log_level, config_level_names, LOG_LEVEL_INFO, RELOAD,
	       "lowest level written to stderr"),
	K_INT("log.stats_interval_s", log_stats_interval_s, 0, 86400, 60, RELOAD,
	      "seconds between one-line summaries in the log; 0 turns them off"),
};

_Static_assert(sizeof(config_keys) / sizeof(config_keys[0]) == CONFIG_NKEYS,
	       "CONFIG_NKEYS in config_private.h must count the rows of config_keys[]");

/* ---- table lookups ------------------------------------------------------- */

/* The row whose path is PATH, or -1. */
int config_key_find(const char *path)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (strcmp(config_keys[i].path, path) == 0)
			return (int)i;
	return -1;
}

/* The first row inside section PATH (a row path starting "PATH."), or -1. */
int config_section_find(const char *path)
{
	size_t n = strlen(path);

	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (strncmp(config_keys[i].path, path, n) == 0 && config_keys[i].path[n] == '.')
			return (int)i;
	return -1;
}

/* ---- value checks used by the table -------------------------------------- */

/* True when S[0..N) is a DNS name or IPv4 literal: letters, digits, '.', '-', '_'. */
static bool config_host_ok(const char *s, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr(".-_", s[i]))
			return false;
	return true;
}

/* True when S[0..N) is a bracketed IPv6 literal's inside (hex, ':', '.', '%zone'). */
static bool config_host6_ok(const char *s, size_t n)
{
	if (n < 2 || n > 64 || !memchr(s, ':', n))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) && !strchr(":.%", s[i]) &&
		    !(memchr(s, '%', i) && isalnum((unsigned char)s[i])))
			return false;
	return true;
}

/* "host:port" or "[v6]:port" with port 1..65535; NULL, or what was expected. */
static const char *config_check_hostport(const char *s)
{
	static const char want[] =
		"expected host:port with port 1..65535 (IPv6 as \"[::1]:24224\")";
	const char *colon = strrchr(s, ':');
	bool host_ok;
	char *end;
	long port;

	if (!colon)
		return want;
	if (s[0] == '[')
		host_ok = colon > s + 1 && colon[-1] == ']' &&
			  config_host6_ok(s + 1, (size_t)(colon - s - 2));
	else if (memchr(s, ':', (size_t)(colon - s)))
		return "expected host:port; an IPv6 address goes in brackets, "
		       "as in \"[::1]:24224\"";
	else
		host_ok = config_host_ok(s, (size_t)(colon - s));
	if (!host_ok || !isdigit((unsigned char)colon[1]))
		return want;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (*end || errno || port < 1 || port > 65535)
		return want;
	return NULL;
}

static const char *config_check_hostport_or_empty(const char *s)
{
	return s[0] ? config_check_hostport(s) : NULL;
}

/* An SQL identifier, or schema.identifier, that needs no quoting. */
static const char *config_check_table(const char *s)
{
	const char *p = s;

	for (int part = 0; part < 2; part++) {
		const char *start = p;

		if (!isalpha((unsigned char)*p) && *p != '_')
			break;
		while (isalnum((unsigned char)*p) || *p == '_')
			p++;
		if (p - start > 63)
			break;
		if (*p == '\0')
			return NULL;
		if (*p != '.' || part == 1)
			break;
		p++;
	}
	return "expected a table name such as \"mega_generations\" or \"public.mega_generations\"";
}

/* An OpenSSL cipher list that selects at least one TLS 1.2 cipher. */
static const char *config_check_ciphers(const char *s)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int ok = ctx && SSL_CTX_set_cipher_list(ctx, s) == 1;

	SSL_CTX_free(ctx);
	return ok ? NULL : "expected an OpenSSL cipher list that selects at least one TLS 1.2 "
			   "cipher, such as \"" CONFIG_TLS12_CIPHERS "\"";
}

/* ---- checks across keys -------------------------------------------------- */

/* The loader's state for row PATH; NULL only if the table lacks it (a bug). */
static const struct config_seen *config_seen_of(const struct config_loader *ld,
						const char *path)
{
	int idx = config_key_find(path);

	return idx < 0 ? NULL : &ld->key[idx];
}

/*
 * Report a conflict between rows A and B at A's value when the file sets A
 * (saying MSG_A), else at B's (saying MSG_B); silent when either value was
 * already rejected, so one mistake is not reported twice.
 */
static void config_conflict(struct config_loader *ld, const char *a, const char *b,
			    const char *msg_a, const char *msg_b)
{
	const struct config_seen *sa = config_seen_of(ld, a), *sb = config_seen_of(ld, b);

	if (!sa || !sb || sa->bad || sb->bad)
		return;
	if (sa->seen || !sb->seen)
		config_report(ld, sa->seen ? &sa->mark : NULL, a, "%s", msg_a);
	else
		config_report(ld, &sb->mark, b, "%s", msg_b);
}

/* TLS settings under PFX ("listen.tls", "http.tls"): cert and key go
 * together, and ca needs them. */
static void config_check_tls(struct config_loader *ld, const char *pfx, const char *cert,
			     const char *key, const char *ca)
{
	static const char half[] = "is set but %s.%s is empty (TLS needs cert and key, or neither)";
	char ma[200], ka[64], kb[64], kc[64];

	snprintf(ka, sizeof(ka), "%s.cert", pfx);
	snprintf(kb, sizeof(kb), "%s.key", pfx);
	snprintf(kc, sizeof(kc), "%s.ca", pfx);
	if (cert[0] && !key[0]) {
		snprintf(ma, sizeof(ma), half, pfx, "key");
		config_conflict(ld, ka, kb, ma, ma);
	} else if (!cert[0] && key[0]) {
		snprintf(ma, sizeof(ma), half, pfx, "cert");
		config_conflict(ld, kb, ka, ma, ma);
	} else if (ca[0] && !cert[0]) {
		snprintf(ma, sizeof(ma), "is set but TLS is off (%s.cert and %s.key are empty)",
			 pfx, pfx);
		config_conflict(ld, kc, ka, ma, "");
	}
}

/* postgres.conninfo must parse as libpq will parse it; the reason never holds a password. */
static void config_check_conninfo(struct config_loader *ld, const struct config *c)
{
	const struct config_seen *seen = config_seen_of(ld, "postgres.conninfo");
	char why[300];

	if (!seen || seen->bad || config_conninfo_check(c->pg_conninfo, why, sizeof(why)) == 0)
		return;
	config_report(ld, seen->seen ? &seen->mark : NULL, "postgres.conninfo",
		      "libpq cannot parse it: %s", why);
}

/* Rules that involve more than one key; run once every key is read. */
static void config_cross_check(struct config_loader *ld)
{
	const struct config *c = ld->cfg;
	char ma[200], mb[200];

	if (c->writer_retry_initial_ms > c->writer_retry_max_ms) {
		snprintf(ma, sizeof(ma), "%d is above writer.retry_max_ms (%d)",
			 c->writer_retry_initial_ms, c->writer_retry_max_ms);
		snprintf(mb, sizeof(mb), "%d is below writer.retry_initial_ms (%d)",
			 c->writer_retry_max_ms, c->writer_retry_initial_ms);
		config_conflict(ld, "writer.retry_initial_ms", "writer.retry_max_ms", ma, mb);
	}
	if (c->queue_max_bytes < c->listen_max_event_bytes) {
		snprintf(ma, sizeof(ma), "%ld is below listen.max_event_bytes (%ld), "
			 "so one largest event would fill the queue", c->queue_max_bytes,
			 c->listen_max_event_bytes);
		snprintf(mb, sizeof(mb), "%ld is above queue.max_bytes (%ld), "
			 "so one largest event would fill the queue", c->listen_max_event_bytes,
			 c->queue_max_bytes);
		config_conflict(ld, "queue.max_bytes", "listen.max_event_bytes", ma, mb);
	}
	config_check_tls(ld, "listen.tls", c->listen_tls_cert, c->listen_tls_key, c->listen_tls_ca);
	config_check_tls(ld, "http.tls", c->http_tls_cert, c->http_tls_key, c->http_tls_ca);
	config_check_conninfo(ld, c);
}

/* ---- load ---------------------------------------------------------------- */

/* Read the whole file into *TEXT (NUL-terminated, caller frees). 0, or -1 after reporting. */
static int config_read_file(struct config_loader *ld, char **text, size_t *len)
{
	FILE *f = fopen(ld->path, "rb");
	char *buf;
	size_t n;

	if (!f) {
		config_report(ld, NULL, NULL, "cannot open: %s", strerror(errno));
		return -1;
	}
	buf = malloc(CONFIG_FILE_MAX + 2);
	n = buf ? fread(buf, 1, CONFIG_FILE_MAX + 1, f) : 0;
	if (!buf)
		config_report(ld, NULL, NULL, "out of memory");
	else if (ferror(f))
		config_report(ld, NULL, NULL, "cannot read: %s", strerror(errno));
	else if (n > CONFIG_FILE_MAX)
		config_report(ld, NULL, NULL, "larger than %ld bytes; is it the right file?",
			      CONFIG_FILE_MAX);
	fclose(f);
	if (ld->nerr) {
		free(buf);
		return -1;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return 0;
}

struct config *config_load(const char *path, FILE *errs)
{
	struct config_loader *ld;
	struct config *cfg;
	char *text = NULL;

	if (!path)
		return config_defaults();
	ld = calloc(1, sizeof(*ld));
	if (!ld) {
		if (errs)
			fprintf(errs, "%s: out of memory\n", path);
		return NULL;
	}
	ld->path = path;
	ld->errs = errs;
	ld->cfg = config_defaults();
	if (!ld->cfg || !(ld->cfg->path = strdup(path)))
		config_report(ld, NULL, NULL, "out of memory");
	else if (config_read_file(ld, &text, &ld->len) == 0) {
		ld->text = text;
		if (config_yaml_parse(ld) == 0)
			config_cross_check(ld);
	}
	cfg = ld->cfg;
	if (ld->nerr) {
		config_free(cfg);
		cfg = NULL;
	}
	free(text);
	free(ld);
	return cfg;
}

/* ---- defaults, free ------------------------------------------------------ */

/* Store row K's default in CFG. 0, or -1 when out of memory. */
static int config_set_default(struct config *cfg, const struct config_key *k)
{
	void *f = config_field(cfg, k);
	char **list = f;

	switch (k->type) {
	case CONFIG_T_LONG:
		*(long *)f = (long)k->def;
		return 0;
	case CONFIG_T_BOOL:
		*(bool *)f = k->def != 0;
		return 0;
	case CONFIG_T_STRING:
		*(char **)f = strdup(k->def_str);
		return *(char **)f ? 0 : -1;
	case CONFIG_T_LIST:
		if (!k->def_str[0])
			return 0;
		list[0] = strdup(k->def_str);
		*(int *)(list + CONFIG_MAX_TCP) = list[0] ? 1 : 0;
		return list[0] ? 0 : -1;
	default: /* INT, MODE, ENUM */
		*(int *)f = (int)k->def;
		return 0;
	}
}

struct config *config_defaults(void)
{
	struct config *cfg = calloc(1, sizeof(*cfg));

	if (!cfg)
		return NULL;
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		if (config_set_default(cfg, &config_keys[i]) < 0) {
			config_free(cfg);
			return NULL;
		}
	}
	return cfg;
}

/* Free CFG and every string it owns; NULL is fine. */
void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key *k = &config_keys[i];

		if (k->type == CONFIG_T_STRING)
			free(*(char **)config_field(cfg, k));
		else if (k->type == CONFIG_T_LIST)
			config_list_clear(cfg, k);
	}
	free(cfg->path);
	free(cfg);
}

/* Empty row K's list (the file's value replaces the default, never adds to it). */
void config_list_clear(struct config *cfg, const struct config_key *k)
{
	char **list = config_field(cfg, k);
	int *count = (int *)(list + CONFIG_MAX_TCP);

	for (int i = 0; i < *count; i++) {
		free(list[i]);
		list[i] = NULL;
	}
	*count = 0;
}
