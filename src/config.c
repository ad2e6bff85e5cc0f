/*
 * config.c: megaingest.yaml -> one immutable struct config, from one table.
 *
 * config_keys[] below is the only place a key is described: its dotted path,
 * type, bounds, default, whether SIGHUP may apply it live, where it lives in
 * struct config and a line of help. Defaults, parsing, bounds checks,
 * --print-config and the reload diff are loops over that table, so adding a
 * key is one row (PgBouncer's CF_ABS table, Redis's standardConfig).
 *
 * The file is read with libyaml's event API. The loader walks mappings by
 * recursion on the dotted path: a key whose path is a row is parsed by the
 * row's type; a key that is a prefix of rows ("listen", "listen.tls") is a
 * section and must hold a mapping; anything else is unknown and gets the
 * nearest sibling as a hint. Nothing stops at the first mistake: every error
 * is written as "FILE:LINE:COL: KEY: what is wrong" followed by the source
 * line, and config_load returns NULL at the end if there was any (HAProxy's
 * err_code accumulation). Only a YAML syntax error ends the walk early,
 * because libyaml cannot go on after one. Anchors and aliases are refused:
 * a config file that shares values by reference is harder to review than
 * one that repeats them, and this file is reviewed far more than written.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "config.h"
#include "log.h"

#define CONFIG_FILE_MAX (1L << 20) /* a config bigger than 1 MiB is a mistake */
#define CONFIG_PATH_MAX 128        /* longest dotted path we look up */
#define CONFIG_NAME_MAX 63         /* longest key name "did you mean" compares */
#define CONFIG_SHOW_MAX 8192       /* longest value text in print and diff */

enum config_type {
	CONFIG_T_INT = 0,  /* int field, decimal, min..max */
	CONFIG_T_LONG,     /* long field, decimal, min..max */
	CONFIG_T_BOOL,     /* bool field: true/false, yes/no, on/off */
	CONFIG_T_STRING,   /* char * field; min..max bound the length; check() refines */
	CONFIG_T_MODE,     /* int field from an octal string such as "0660", min..max */
	CONFIG_T_LIST,     /* char *[CONFIG_MAX_TCP] then its int count; min..max entries */
	CONFIG_T_ENUM,     /* int-sized enum field; names[] indexed by value */
	CONFIG_T_COUNT     /* number of types; not a type */
};

struct config_key {
	const char *path;           /* "section.key" or "section.sub.key" */
	enum config_type type;
	long long min, max;         /* bounds of the value, a string's length, a list's size */
	long long def;              /* default of INT, LONG, BOOL, MODE, ENUM */
	const char *def_str;        /* default of STRING; of LIST: its one entry, "" for none */
	bool reloadable;            /* SIGHUP applies it live; otherwise it needs a restart */
	bool secret;                /* shown as (hidden) by config_print and config_diff */
	size_t offset;              /* offsetof(struct config, field) */
	const char *const *names;   /* ENUM: value names, indexed by value, NULL-terminated */
	const char *(*check)(const char *s); /* STRING, LIST entry: NULL, or "expected ..." */
	const char *help;           /* one sentence: --print-config, README, /stats */
};

static const char *config_check_hostport(const char *s);
static const char *config_check_hostport_or_empty(const char *s);
static const char *config_check_table(const char *s);

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

/* Every key, in file order. The defaults are DESIGN.md's example file. */
static const struct config_key config_keys[] = {
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
	K_STR("listen.shared_key", listen_shared_key, 0, 1024, "", NULL, SECRET, RESTART,
	      "non-empty: TCP clients must complete the forward protocol handshake"),
	K_STR("listen.tls.cert", listen_tls_cert, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM certificate chain; with key, TCP listeners speak TLS"),
	K_STR("listen.tls.key", listen_tls_key, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM private key of cert"),
	K_STR("listen.tls.ca", listen_tls_ca, 0, 4096, "", NULL, PLAIN, RESTART,
	      "PEM CA bundle; non-empty: clients must present a certificate it signed"),
	K_STR("postgres.conninfo", pg_conninfo, 0, 8192, "", NULL, SECRET, RESTART,
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
	K_INT("writer.flush_interval_ms", writer_flush_interval_ms, 1, 60000, 100, RELOAD,
	      "longest wait before a partial batch is written"),
	K_INT("writer.retry_initial_ms", writer_retry_initial_ms, 1, 600000, 100, RELOAD,
	      "first reconnect delay after a PostgreSQL failure; doubles each time"),
	K_INT("writer.retry_max_ms", writer_retry_max_ms, 1, 3600000, 30000, RELOAD,
	      "longest reconnect delay"),
	K_INT("writer.drain_timeout_s", writer_drain_timeout_s, 0, 3600, 30, RELOAD,
	      "on SIGTERM, how long to drain into PostgreSQL before spooling the rest"),
	K_STR("spool.dir", spool_dir, 1, 4096, "/var/lib/megaingest", NULL, PLAIN, RESTART,
	      "directory for spooled batches and dead-letter.jsonl"),
	K_LONG("spool.max_bytes", spool_max_bytes, 1048576, 1125899906842624L, 1073741824L,
	       RESTART, "most bytes the spool may hold on disk"),
	K_STR("admin.http", admin_http, 0, 261, "127.0.0.1:24225",
	      config_check_hostport_or_empty, PLAIN, RESTART,
	      "host:port of /metrics /stats /healthz /readyz; \"\" disables it"),
	K_ENUM("log.level", log_level, config_level_names, LOG_LEVEL_INFO, RELOAD,
	       "lowest level written to stderr"),
	K_INT("log.stats_interval_s", log_stats_interval_s, 0, 86400, 60, RELOAD,
	      "seconds between one-line summaries in the log; 0 turns them off"),
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* What the loader knows about one key of the file being read. */
struct config_seen {
	bool seen;          /* the file sets it (or opens the section) */
	bool bad;           /* its value was rejected; cross-checks skip it */
	size_t line;        /* 1-based line of its first key, for "duplicate" */
	yaml_mark_t mark;   /* start of its value, for cross-check errors */
};

struct config_loader {
	yaml_parser_t yp;
	const char *path;               /* file name as given, for messages */
	const char *text;               /* the whole file, to echo lines */
	size_t len;
	FILE *errs;                     /* NULL: discard messages */
	int nerr;                       /* errors reported so far */
	struct config *cfg;             /* being filled */
	struct config_seen key[CONFIG_NKEYS];     /* by row */
	struct config_seen section[CONFIG_NKEYS]; /* by the section's first row */
};

/* ---- table helpers ------------------------------------------------------ */

static void *config_field(struct config *cfg, const struct config_key *k)
{
	return (char *)cfg + k->offset;
}

static const void *config_cfield(const struct config *cfg, const struct config_key *k)
{
	return (const char *)cfg + k->offset;
}

/* The row whose path is PATH, or -1. */
static int config_key_find(const char *path)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (strcmp(config_keys[i].path, path) == 0)
			return (int)i;
	return -1;
}

/* The first row inside section PATH (a row path starting "PATH."), or -1. */
static int config_section_find(const char *path)
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

/* ---- messages ------------------------------------------------------------ */

/*
 * Copy S into BUF (SIZE bytes) for a message: control bytes become '?' and
 * anything past about 60 characters becomes "...". Returns BUF.
 */
static const char *config_clip(const char *s, char *buf, size_t size)
{
	size_t n = 0, keep = size - 4 < 60 ? size - 4 : 60;

	for (; s[n] && n < keep; n++)
		buf[n] = iscntrl((unsigned char)s[n]) ? '?' : s[n];
	if (s[n]) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

/* Echo 1-based LINE of the file as "    >>> 'LINE'" (control bytes as '?', 200 chars at most). */
static bool config_echo_line(struct config_loader *ld, size_t line)
{
	const char *p = ld->text, *end = ld->text + ld->len, *eol;
	size_t n;

	for (size_t i = 1; i < line && p < end; i++) {
		p = memchr(p, '\n', (size_t)(end - p));
		if (!p)
			return false;
		p++;
	}
	if (p >= end)
		return false;
	eol = memchr(p, '\n', (size_t)(end - p));
	n = (size_t)((eol ? eol : end) - p);
	if (n > 0 && p[n - 1] == '\r')
		n--;
	if (strspn(p, " \t") >= n)
		return false;
	fputs("    >>> '", ld->errs);
	for (size_t i = 0; i < n && i < 200; i++)
		fputc(iscntrl((unsigned char)p[i]) && p[i] != '\t' ? '?' : p[i], ld->errs);
	fputs("'\n", ld->errs);
	return true;
}

/*
 * Report one error: "FILE:LINE:COL: KEY: MESSAGE" (without KEY when NULL,
 * without LINE:COL when MARK is NULL), then the source line. Counts it.
 */
__attribute__((format(printf, 4, 5)))
static void config_report(struct config_loader *ld, const yaml_mark_t *mark, const char *key,
			  const char *fmt, ...)
{
	va_list ap;

	ld->nerr++;
	if (!ld->errs)
		return;
	if (mark)
		fprintf(ld->errs, "%s:%zu:%zu: ", ld->path, mark->line + 1, mark->column + 1);
	else
		fprintf(ld->errs, "%s: ", ld->path);
	if (key)
		fprintf(ld->errs, "%s: ", key);
	va_start(ap, fmt);
	vfprintf(ld->errs, fmt, ap);
	va_end(ap);
	fputc('\n', ld->errs);
	if (mark)
		config_echo_line(ld, mark->line + 1);
}

/* The 0-based mark of byte OFFSET of the file (libyaml's reader errors give only that). */
static yaml_mark_t config_mark_at(const struct config_loader *ld, size_t offset)
{
	yaml_mark_t m = { .index = offset };

	for (size_t i = 0; i < offset && i < ld->len; i++) {
		if (ld->text[i] == '\n') {
			m.line++;
			m.column = 0;
		} else {
			m.column++;
		}
	}
	return m;
}

/* Report libyaml's error, with problem_mark (and context_mark when there is one). */
static void config_report_syntax(struct config_loader *ld)
{
	const yaml_parser_t *p = &ld->yp;
	yaml_mark_t m = p->problem_mark;
	const char *problem = p->problem ? p->problem : "cannot parse";

	if (p->error == YAML_MEMORY_ERROR) {
		config_report(ld, NULL, NULL, "out of memory while parsing");
		return;
	}
	if (p->error == YAML_READER_ERROR)
		m = config_mark_at(ld, p->problem_offset);
	if (!p->context) {
		config_report(ld, &m, "syntax error", "%s", problem);
		return;
	}
	ld->nerr++;
	if (!ld->errs)
		return;
	fprintf(ld->errs, "%s:%zu:%zu: syntax error: %s (%s at line %zu, column %zu)\n",
		ld->path, m.line + 1, m.column + 1, problem, p->context,
		p->context_mark.line + 1, p->context_mark.column + 1);
	if (!config_echo_line(ld, m.line + 1))
		config_echo_line(ld, p->context_mark.line + 1);
}

/* "a mapping", "a sequence", ... for "got ..." in messages about event EV. */
static const char *config_node_kind(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_MAPPING_START_EVENT:
		return "a mapping";
	case YAML_SEQUENCE_START_EVENT:
		return "a sequence";
	case YAML_ALIAS_EVENT:
		return "an alias";
	default:
		return "a scalar";
	}
}

/* ---- "did you mean" ------------------------------------------------------ */

/*
 * Optimal string alignment distance (Levenshtein plus adjacent
 * transpositions), case-blind, over three rolling rows; (size_t)-1 when a
 * word is longer than CONFIG_NAME_MAX.
 */
static size_t config_distance(const char *a, size_t la, const char *b, size_t lb)
{
	size_t rows[3][CONFIG_NAME_MAX + 1];
	size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];

	if (la > CONFIG_NAME_MAX || lb > CONFIG_NAME_MAX)
		return (size_t)-1;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t *t;

		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			int ca = tolower((unsigned char)a[i - 1]);
			int cb = tolower((unsigned char)b[j - 1]);
			size_t v = prev[j - 1] + (ca != cb);

			if (prev[j] + 1 < v)
				v = prev[j] + 1;
			if (cur[j - 1] + 1 < v)
				v = cur[j - 1] + 1;
			if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
			    tolower((unsigned char)a[i - 2]) == cb && prev2[j - 2] + 1 < v)
				v = prev2[j - 2] + 1;
			cur[j] = v;
		}
		t = prev2;
		prev2 = prev;
		prev = cur;
		cur = t;
	}
	return prev[lb];
}

/* The nearest of CANDIDATES[] to WORD within a typo's distance, or NULL. */
static const char *config_nearest(const char *word, const char *const *candidates, size_t n)
{
	size_t lw = strlen(word), best_d = lw <= 4 ? 1 : lw <= 8 ? 2 : 3;
	const char *best = NULL;

	for (size_t i = 0; i < n; i++) {
		size_t d = config_distance(word, lw, candidates[i], strlen(candidates[i]));

		if (d <= best_d && (!best || d < best_d)) {
			best = candidates[i];
			best_d = d;
		}
	}
	return best;
}

/*
 * Fill HINT (SIZE bytes) with " (did you mean \"x\"?)" for an unknown NAME
 * in section PREFIX ("" at the top), or with where a key of that name
 * belongs, or with "".
 */
static void config_hint(const char *prefix, const char *name, char *hint, size_t size)
{
	char names[CONFIG_NKEYS][CONFIG_NAME_MAX + 1];
	const char *ptrs[CONFIG_NKEYS];
	size_t np = strlen(prefix), n = 0;
	const char *best;

	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const char *p = config_keys[i].path;

		if (np && (strncmp(p, prefix, np) != 0 || p[np] != '.'))
			continue;
		p += np ? np + 1 : 0;
		snprintf(names[n], sizeof(names[n]), "%.*s", (int)strcspn(p, "."), p);
		ptrs[n] = names[n];
		n++;
	}
	best = config_nearest(name, ptrs, n);
	hint[0] = '\0';
	if (best) {
		snprintf(hint, size, " (did you mean \"%s\"?)", best);
		return;
	}
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const char *dot = strrchr(config_keys[i].path, '.');

		if (dot && strcmp(dot + 1, name) == 0) {
			snprintf(hint, size, " (did you mean \"%s\"?)", config_keys[i].path);
			return;
		}
	}
}

/* ---- events -------------------------------------------------------------- */

/*
 * Next event into EV (the caller deletes it). Anchors and aliases are
 * reported here, once, under KEY. Returns 0, or -1 after reporting a syntax
 * error (EV is then not set and the walk must stop).
 */
static int config_next(struct config_loader *ld, yaml_event_t *ev, const char *key)
{
	const yaml_char_t *anchor = NULL;

	if (!yaml_parser_parse(&ld->yp, ev)) {
		config_report_syntax(ld);
		return -1;
	}
	if (ev->type == YAML_SCALAR_EVENT)
		anchor = ev->data.scalar.anchor;
	else if (ev->type == YAML_MAPPING_START_EVENT)
		anchor = ev->data.mapping_start.anchor;
	else if (ev->type == YAML_SEQUENCE_START_EVENT)
		anchor = ev->data.sequence_start.anchor;
	if (anchor)
		config_report(ld, &ev->start_mark, key,
			      "anchors (&%s) are not supported; write the value out",
			      (const char *)anchor);
	if (ev->type == YAML_ALIAS_EVENT)
		config_report(ld, &ev->start_mark, key,
			      "aliases (*%s) are not supported; write the value out",
			      (const char *)ev->data.alias.anchor);
	return 0;
}

/* Consume the rest of the node EV starts (nothing for a scalar or alias). 0 or -1. */
static int config_skip(struct config_loader *ld, const yaml_event_t *ev)
{
	int depth = ev->type == YAML_MAPPING_START_EVENT || ev->type == YAML_SEQUENCE_START_EVENT;

	while (depth > 0) {
		yaml_event_t e;

		if (config_next(ld, &e, NULL) < 0)
			return -1;
		if (e.type == YAML_MAPPING_START_EVENT || e.type == YAML_SEQUENCE_START_EVENT)
			depth++;
		else if (e.type == YAML_MAPPING_END_EVENT || e.type == YAML_SEQUENCE_END_EVENT)
			depth--;
		yaml_event_delete(&e);
	}
	return 0;
}

/* Consume one whole node (a value nobody wants). 0 or -1. */
static int config_skip_value(struct config_loader *ld)
{
	yaml_event_t ev;
	int rc;

	if (config_next(ld, &ev, NULL) < 0)
		return -1;
	rc = config_skip(ld, &ev);
	yaml_event_delete(&ev);
	return rc;
}

static const char *config_scalar(const yaml_event_t *ev)
{
	return (const char *)ev->data.scalar.value;
}

/* A plain "", "~" or "null": YAML's way of writing nothing. */
static bool config_is_null(const yaml_event_t *ev)
{
	const char *s = config_scalar(ev);

	return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (!s[0] || !strcmp(s, "~") || !strcasecmp(s, "null"));
}

/* ---- values -------------------------------------------------------------- */

/* "integer 1..1000000", "true or false", ...: what key K takes, into BUF. */
static const char *config_expected(const struct config_key *k, char *buf, size_t size)
{
	size_t n;

	switch (k->type) {
	case CONFIG_T_INT:
	case CONFIG_T_LONG:
		snprintf(buf, size, "integer %lld..%lld", k->min, k->max);
		break;
	case CONFIG_T_BOOL:
		snprintf(buf, size, "true or false");
		break;
	case CONFIG_T_MODE:
		snprintf(buf, size, "an octal mode 0000..%04llo such as \"0660\"", k->max);
		break;
	case CONFIG_T_ENUM:
		n = (size_t)snprintf(buf, size, "one of ");
		for (int i = 0; k->names[i] && n < size; i++)
			n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? "|" : "", k->names[i]);
		break;
	case CONFIG_T_LIST:
		snprintf(buf, size, "a list of host:port strings");
		break;
	default:
		snprintf(buf, size, "a string");
		break;
	}
	return buf;
}

/* Report a bad value of row IDX at MARK and remember it is bad. */
__attribute__((format(printf, 4, 5)))
static void config_bad(struct config_loader *ld, int idx, const yaml_mark_t *mark,
		       const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld->key[idx].bad = true;
	config_report(ld, mark, config_keys[idx].path, "%s", msg);
}

/* Report "expected X, got \"V\"" for row IDX's scalar EV. */
static void config_bad_value(struct config_loader *ld, int idx, const yaml_event_t *ev)
{
	char want[160], got[80];

	config_bad(ld, idx, &ev->start_mark, "expected %s, got \"%s\"",
		   config_expected(&config_keys[idx], want, sizeof(want)),
		   config_clip(config_scalar(ev), got, sizeof(got)));
}

/*
 * Make sure row IDX's value EV is a scalar. Returns 1 if it is; 0 after
 * reporting (and skipping) anything else; -1 on a syntax error.
 */
static int config_want_scalar(struct config_loader *ld, int idx, const yaml_event_t *ev)
{
	char want[160];

	if (ev->type == YAML_SCALAR_EVENT) {
		if (strlen(config_scalar(ev)) == ev->data.scalar.length)
			return 1;
		config_bad(ld, idx, &ev->start_mark, "contains a NUL character");
		return 0;
	}
	if (ev->type == YAML_ALIAS_EVENT) {
		ld->key[idx].bad = true; /* config_next reported it */
		return 0;
	}
	config_bad(ld, idx, &ev->start_mark, "expected %s, got %s",
		   config_expected(&config_keys[idx], want, sizeof(want)), config_node_kind(ev));
	return config_skip(ld, ev);
}

/* INT and LONG: a decimal integer within the row's bounds. */
static int config_load_int(struct config_loader *ld, int idx, const yaml_event_t *ev)
{
	const struct config_key *k = &config_keys[idx];
	int rc = config_want_scalar(ld, idx, ev);
	const char *s;
	long long v;
	char *end;

	if (rc <= 0)
		return rc;
	s = config_scalar(ev);
	errno = 0;
	v = strtoll(s, &end, 10);
	if (!(isdigit((unsigned char)s[0]) || ((s[0] == '-' || s[0] == '+') &&
	      isdigit((unsigned char)s[1]))) || *end) {
		config_bad_value(ld, idx, ev);
		return 0;
	}
	if (errno == ERANGE || v < k->min || v > k->max) {
		config_bad(ld, idx, &ev->start_mark, "%s is out of range %lld..%lld", s, k->min,
			   k->max);
		return 0;
	}
	if (k->type == CONFIG_T_INT)
		*(int *)config_field(ld->cfg, k) = (int)v;
	else
		*(long *)config_field(ld->cfg, k) = (long)v;
	return 0;
}

static int config_load_bool(struct config_loader *ld, int idx, const yaml_event_t *ev)
{
	static const char *const yes[] = { "true", "yes", "on" };
	static const char *const no[] = { "false", "no", "off" };
	bool *field = config_field(ld->cfg, &config_keys[idx]);
	int rc = config_want_scalar(ld, idx, ev);
	const char *s;

	if (rc <= 0)
		return rc;
	s = config_scalar(ev);
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
			*field = strcasecmp(s, yes[i]) == 0;
			return 0;
		}
	}
	config_bad_value(ld, idx, ev);
	return 0;
}

/* An octal string of 1 to 4 digits ("0660", "660"), quoted or not, within bounds. */
static int config_load_mode(struct config_loader *ld, int idx, const yaml_event_t *ev)
{
	const struct config_key *k = &config_keys[idx];
	int rc = config_want_scalar(ld, idx, ev);
	const char *s;
	size_t n;
	long v;

	if (rc <= 0)
		return rc;
	s = config_scalar(ev);
	n = strspn(s, "01234567");
	v = n ? strtol(s, NULL, 8) : -1;
	if (n == 0 || n > 4 || s[n] || v < k->min || v > k->max) {
		config_bad_value(ld, idx, ev);
		return 0;
	}
	*(int *)config_field(ld->cfg, k) = (int)v;
	return 0;
}

static int config_load_enum(struct config_loader *ld, int idx, const yaml_event_t *ev)
{
	const struct config_key *k = &config_keys[idx];
	int rc = config_want_scalar(ld, idx, ev);
	const char *s, *near;
	char want[160], got[80];
	size_t n = 0;

	if (rc <= 0)
		return rc;
	s = config_scalar(ev);
	for (; k->names[n]; n++) {
		if (strcasecmp(s, k->names[n]) == 0) {
			*(int *)config_field(ld->cfg, k) = (int)n;
			return 0;
		}
	}
	near = config_nearest(s, k->names, n);
	config_bad(ld, idx, &ev->start_mark, "expected %s, got \"%s\"%s%s%s",
		   config_expected(k, want, sizeof(want)), config_clip(s, got, sizeof(got)),
		   near ? " (did you mean \"" : "", near ? near : "", near ? "\"?)" : "");
	return 0;
}

/*
 * Check string S for row IDX: a STRING's length bounds, then the row's
 * check() (which is what bounds a LIST entry; the row's min..max count entries).
 * Returns true if it may be stored; reports at MARK and returns false if not.
 */
static bool config_string_ok(struct config_loader *ld, int idx, const char *s,
			     const yaml_mark_t *mark)
{
	const struct config_key *k = &config_keys[idx];
	const char *why;
	size_t n = strlen(s);
	char got[80];

	if (k->type == CONFIG_T_STRING && n < (size_t)k->min) {
		config_bad(ld, idx, mark, "must not be empty");
		return false;
	}
	if (k->type == CONFIG_T_STRING && n > (size_t)k->max) {
		config_bad(ld, idx, mark, "too long: %zu bytes, at most %lld", n, k->max);
		return false;
	}
	why = k->check ? k->check(s) : NULL;
	if (why) {
		config_bad(ld, idx, mark, "%s, got \"%s\"", why, config_clip(s, got, sizeof(got)));
		return false;
	}
	return true;
}

/* Replace *SLOT by a copy of S. 0, or -1 after reporting out of memory. */
static int config_set_string(struct config_loader *ld, char **slot, const char *s)
{
	char *copy = strdup(s);

	if (!copy) {
		config_report(ld, NULL, NULL, "out of memory");
		return -1;
	}
	free(*slot);
	*slot = copy;
	return 0;
}

/* STRING: any scalar; a YAML null is "". */
static int config_load_string(struct config_loader *ld, int idx, const yaml_event_t *ev)
{
	int rc = config_want_scalar(ld, idx, ev);
	const char *s;

	if (rc <= 0)
		return rc;
	s = config_is_null(ev) ? "" : config_scalar(ev);
	if (!config_string_ok(ld, idx, s, &ev->start_mark))
		return 0;
	return config_set_string(ld, config_field(ld->cfg, &config_keys[idx]), s) < 0 ? -1 : 0;
}

/* Append scalar S (at MARK) to row IDX's list, after the checks. 0 or -1 (memory). */
static int config_list_add(struct config_loader *ld, int idx, const char *s,
			   const yaml_mark_t *mark)
{
	const struct config_key *k = &config_keys[idx];
	char **list = config_field(ld->cfg, k);
	int *count = (int *)(list + CONFIG_MAX_TCP);
	char got[80];

	if (*count >= k->max) {
		config_bad(ld, idx, mark, "too many entries: at most %lld", k->max);
		return 0;
	}
	if (!config_string_ok(ld, idx, s, mark))
		return 0;
	for (int i = 0; i < *count; i++) {
		if (strcmp(list[i], s) == 0) {
			config_bad(ld, idx, mark, "\"%s\" is listed twice",
				   config_clip(s, got, sizeof(got)));
			return 0;
		}
	}
	if (config_set_string(ld, &list[*count], s) < 0)
		return -1;
	(*count)++;
	return 0;
}

/* Empty row IDX's list (the file's value replaces the default, never adds to it). */
static void config_list_clear(struct config *cfg, const struct config_key *k)
{
	char **list = config_field(cfg, k);
	int *count = (int *)(list + CONFIG_MAX_TCP);

	for (int i = 0; i < *count; i++) {
		free(list[i]);
		list[i] = NULL;
	}
	*count = 0;
}

/* LIST: a block or flow sequence of scalars; a lone scalar is a list of one, null is []. */
static int config_load_list(struct config_loader *ld, int idx, const yaml_event_t *ev)
{
	const struct config_key *k = &config_keys[idx];

	config_list_clear(ld->cfg, k);
	if (ev->type == YAML_SCALAR_EVENT && config_is_null(ev))
		return 0;
	if (ev->type != YAML_SEQUENCE_START_EVENT) {
		int rc = config_want_scalar(ld, idx, ev);

		return rc <= 0 ? rc : config_list_add(ld, idx, config_scalar(ev), &ev->start_mark);
	}
	for (;;) {
		yaml_event_t item;
		int rc = 0;

		if (config_next(ld, &item, k->path) < 0)
			return -1;
		if (item.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&item);
			return 0;
		}
		rc = config_want_scalar(ld, idx, &item);
		if (rc > 0)
			rc = config_list_add(ld, idx, config_scalar(&item), &item.start_mark);
		yaml_event_delete(&item);
		if (rc < 0)
			return -1;
	}
}

/* How each type reads its value event. */
static int (*const config_type_loaders[CONFIG_T_COUNT])(struct config_loader *ld, int idx,
							  const yaml_event_t *ev) = {
	[CONFIG_T_INT] = config_load_int,
	[CONFIG_T_LONG] = config_load_int,
	[CONFIG_T_BOOL] = config_load_bool,
	[CONFIG_T_STRING] = config_load_string,
	[CONFIG_T_MODE] = config_load_mode,
	[CONFIG_T_LIST] = config_load_list,
	[CONFIG_T_ENUM] = config_load_enum,
};

/* ---- the walk ------------------------------------------------------------ */

static int config_load_mapping(struct config_loader *ld, const char *prefix);

/* KEY named row IDX: load its value, unless the key is a duplicate. 0 or -1. */
static int config_load_key(struct config_loader *ld, int idx, const yaml_event_t *key)
{
	struct config_seen *st = &ld->key[idx];
	yaml_event_t val;
	int rc;

	if (st->seen) {
		config_report(ld, &key->start_mark, config_keys[idx].path,
			      "duplicate key (first set at line %zu)", st->line);
		return config_skip_value(ld);
	}
	st->seen = true;
	st->line = key->start_mark.line + 1;
	if (config_next(ld, &val, config_keys[idx].path) < 0)
		return -1;
	st->mark = val.start_mark;
	rc = config_type_loaders[config_keys[idx].type](ld, idx, &val);
	yaml_event_delete(&val);
	return rc;
}

/* KEY named section PATH (first row SEC): its value is a mapping, or nothing. 0 or -1. */
static int config_load_section(struct config_loader *ld, int sec, const char *path,
			       const yaml_event_t *key)
{
	struct config_seen *st = &ld->section[sec];
	yaml_event_t val;
	char got[80];
	int rc = 0;

	if (st->seen) {
		config_report(ld, &key->start_mark, path,
			      "duplicate section (first opened at line %zu)", st->line);
		return config_skip_value(ld);
	}
	st->seen = true;
	st->line = key->start_mark.line + 1;
	if (config_next(ld, &val, path) < 0)
		return -1;
	if (val.type == YAML_MAPPING_START_EVENT) {
		rc = config_load_mapping(ld, path);
	} else if (val.type == YAML_SCALAR_EVENT && !config_is_null(&val)) {
		config_report(ld, &val.start_mark, path,
			      "expected a section (a mapping of keys), got \"%s\"",
			      config_clip(config_scalar(&val), got, sizeof(got)));
	} else if (val.type == YAML_SEQUENCE_START_EVENT) {
		config_report(ld, &val.start_mark, path,
			      "expected a section (a mapping of keys), got a sequence");
		rc = config_skip(ld, &val);
	}
	yaml_event_delete(&val);
	return rc;
}

/* Report KEY, unknown in section PREFIX ("" at the top), with the nearest known name. */
static void config_report_unknown(struct config_loader *ld, const char *prefix,
				  const yaml_event_t *key)
{
	char name[80], path[160], hint[200];

	config_clip(config_scalar(key), name, sizeof(name));
	config_hint(prefix, name, hint, sizeof(hint));
	if (!prefix[0]) {
		config_report(ld, &key->start_mark, name, "unknown section \"%s\"%s", name, hint);
		return;
	}
	snprintf(path, sizeof(path), "%s.%s", prefix, name);
	config_report(ld, &key->start_mark, path, "unknown key \"%s\" in section \"%s\"%s",
		      name, prefix, hint);
}

/* One "key: value" pair of section PREFIX, KEY already read. 0 or -1. */
static int config_load_pair(struct config_loader *ld, const char *prefix,
			    const yaml_event_t *key)
{
	char path[CONFIG_PATH_MAX];
	const char *name;
	int n, idx;

	if (key->type != YAML_SCALAR_EVENT) {
		if (key->type != YAML_ALIAS_EVENT)
			config_report(ld, &key->start_mark, prefix[0] ? prefix : NULL,
				      "expected a key name, got %s", config_node_kind(key));
		if (config_skip(ld, key) < 0)
			return -1;
		return config_skip_value(ld);
	}
	name = config_scalar(key);
	n = snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", name);
	if (n > 0 && (size_t)n < sizeof(path) && !strchr(name, '.') &&
	    strlen(name) == key->data.scalar.length) {
		idx = config_key_find(path);
		if (idx >= 0)
			return config_load_key(ld, idx, key);
		idx = config_section_find(path);
		if (idx >= 0)
			return config_load_section(ld, idx, path, key);
	}
	config_report_unknown(ld, prefix, key);
	return config_skip_value(ld);
}

/* The pairs of a mapping of section PREFIX, up to and including its end. 0 or -1. */
static int config_load_mapping(struct config_loader *ld, const char *prefix)
{
	for (;;) {
		yaml_event_t key;
		int rc;

		if (config_next(ld, &key, prefix[0] ? prefix : NULL) < 0)
			return -1;
		if (key.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&key);
			return 0;
		}
		rc = config_load_pair(ld, prefix, &key);
		yaml_event_delete(&key);
		if (rc < 0)
			return -1;
	}
}

/* A document's root: a mapping of sections, or nothing at all (all defaults). 0 or -1. */
static int config_load_root(struct config_loader *ld)
{
	yaml_event_t ev;
	int rc = 0;

	if (config_next(ld, &ev, NULL) < 0)
		return -1;
	if (ev.type == YAML_MAPPING_START_EVENT) {
		rc = config_load_mapping(ld, "");
	} else if (ev.type != YAML_ALIAS_EVENT &&
		   !(ev.type == YAML_SCALAR_EVENT && config_is_null(&ev))) {
		config_report(ld, &ev.start_mark, NULL,
			      "the top level must be a mapping of sections "
			      "(listen:, postgres:, ...), got %s", config_node_kind(&ev));
		rc = config_skip(ld, &ev);
	}
	yaml_event_delete(&ev);
	return rc;
}

/* The whole stream: no document (an empty file) or exactly one. 0 or -1. */
static int config_load_stream(struct config_loader *ld)
{
	int docs = 0;

	for (;;) {
		yaml_event_t ev;
		int rc = 0;

		if (config_next(ld, &ev, NULL) < 0)
			return -1;
		if (ev.type == YAML_STREAM_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (ev.type == YAML_DOCUMENT_START_EVENT && docs++ == 0) {
			rc = config_load_root(ld);
		} else if (ev.type == YAML_DOCUMENT_START_EVENT) {
			config_report(ld, &ev.start_mark, NULL,
				      "only one YAML document is allowed; remove this \"---\"");
			rc = config_skip_value(ld);
		}
		yaml_event_delete(&ev);
		if (rc < 0)
			return -1;
	}
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

static void config_check_tls(struct config_loader *ld, const struct config *c)
{
	static const char half[] = "is set but %s is empty (TLS needs cert and key, or neither)";
	char ma[160], mb[160];

	if (c->listen_tls_cert[0] && !c->listen_tls_key[0]) {
		snprintf(ma, sizeof(ma), half, "listen.tls.key");
		config_conflict(ld, "listen.tls.cert", "listen.tls.key", ma, ma);
	} else if (!c->listen_tls_cert[0] && c->listen_tls_key[0]) {
		snprintf(mb, sizeof(mb), half, "listen.tls.cert");
		config_conflict(ld, "listen.tls.key", "listen.tls.cert", mb, mb);
	} else if (c->listen_tls_ca[0] && !c->listen_tls_cert[0]) {
		config_conflict(ld, "listen.tls.ca", "listen.tls.cert",
				"is set but TLS is off "
				"(listen.tls.cert and listen.tls.key are empty)", "");
	}
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
	config_check_tls(ld, c);
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

/* Parse the text in LD into LD->cfg, then run the cross-key checks. */
static void config_parse(struct config_loader *ld)
{
	if (!yaml_parser_initialize(&ld->yp)) {
		config_report(ld, NULL, NULL, "out of memory");
		return;
	}
	yaml_parser_set_input_string(&ld->yp, (const unsigned char *)ld->text, ld->len);
	if (config_load_stream(ld) == 0)
		config_cross_check(ld);
	yaml_parser_delete(&ld->yp);
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
		config_parse(ld);
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

/* ---- print, diff --------------------------------------------------------- */

/* A value as text: bounded, truncated with "..." if it ever gets that long. */
struct config_text {
	char buf[CONFIG_SHOW_MAX];
	size_t len;
};

__attribute__((format(printf, 2, 3)))
static void config_text_add(struct config_text *t, const char *fmt, ...)
{
	size_t room = sizeof(t->buf) - t->len;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < room) {
		t->len += (size_t)n;
		return;
	}
	t->len = sizeof(t->buf) - 1;
	memcpy(t->buf + t->len - 3, "...", 3);
}

/* S in double quotes, with '"', '\\' and control bytes escaped. */
static void config_text_quoted(struct config_text *t, const char *s)
{
	config_text_add(t, "\"");
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			config_text_add(t, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			config_text_add(t, "\\x%02x", ch);
		else
			config_text_add(t, "%c", ch);
	}
	config_text_add(t, "\"");
}

/* The list of row K in CFG and its entry count. */
static char *const *config_clist(const struct config *cfg, const struct config_key *k, int *n)
{
	char *const *list = config_cfield(cfg, k);

	*n = *(const int *)(list + CONFIG_MAX_TCP);
	return list;
}

/* The value of string row K in T, or "(hidden)" for a non-empty secret. */
static void config_show_string(const char *s, const struct config_key *k,
			       struct config_text *t)
{
	if (k->secret && s[0])
		config_text_add(t, "(hidden)");
	else
		config_text_quoted(t, s);
}

/* Row K's value in CFG as YAML-ish text into T (reset first); returns T's text. */
static const char *config_show(const struct config *cfg, const struct config_key *k,
			       struct config_text *t)
{
	const void *f = config_cfield(cfg, k);
	char *const *list;
	int v, n;

	t->len = 0;
	t->buf[0] = '\0';
	switch (k->type) {
	case CONFIG_T_LONG:
		config_text_add(t, "%ld", *(const long *)f);
		break;
	case CONFIG_T_BOOL:
		config_text_add(t, "%s", *(const bool *)f ? "true" : "false");
		break;
	case CONFIG_T_STRING:
		config_show_string(*(char *const *)f, k, t);
		break;
	case CONFIG_T_LIST:
		list = config_clist(cfg, k, &n);
		config_text_add(t, "[");
		for (int i = 0; i < n; i++) {
			config_text_add(t, "%s", i ? ", " : "");
			config_show_string(list[i], k, t);
		}
		config_text_add(t, "]");
		break;
	case CONFIG_T_MODE:
		config_text_add(t, "\"%04o\"", (unsigned)*(const int *)f);
		break;
	case CONFIG_T_ENUM:
		v = *(const int *)f;
		config_text_add(t, "%s", v >= 0 && v <= k->max ? k->names[v] : "?");
		break;
	default: /* INT */
		config_text_add(t, "%d", *(const int *)f);
		break;
	}
	return t->buf;
}

/* True when row K holds the same value in A and B. */
static bool config_same(const struct config *a, const struct config *b,
			const struct config_key *k)
{
	const void *fa = config_cfield(a, k), *fb = config_cfield(b, k);
	char *const *la, *const *lb;
	int na, nb;

	switch (k->type) {
	case CONFIG_T_LONG:
		return *(const long *)fa == *(const long *)fb;
	case CONFIG_T_BOOL:
		return *(const bool *)fa == *(const bool *)fb;
	case CONFIG_T_STRING:
		return strcmp(*(char *const *)fa, *(char *const *)fb) == 0;
	case CONFIG_T_LIST:
		la = config_clist(a, k, &na);
		lb = config_clist(b, k, &nb);
		for (int i = 0; na == nb && i < na; i++)
			if (strcmp(la[i], lb[i]) != 0)
				return false;
		return na == nb;
	default: /* INT, MODE, ENUM */
		return *(const int *)fa == *(const int *)fb;
	}
}

void config_print(const struct config *cfg, FILE *out)
{
	struct config_text t;

	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key *k = &config_keys[i];

		fprintf(out, "%s: %s\n", k->path, config_show(cfg, k, &t));
	}
}

int config_diff(const struct config *old_cfg, const struct config *new_cfg)
{
	struct config_text was, now;
	int restart = 0;

	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key *k = &config_keys[i];

		if (config_same(old_cfg, new_cfg, k))
			continue;
		config_show(old_cfg, k, &was);
		if (k->reloadable) {
			log_info("config", "%s changed: %s -> %s", k->path, was.buf,
				 config_show(new_cfg, k, &now));
		} else {
			log_warn("config", "%s changed, needs restart (keeping %s until then)",
				 k->path, was.buf);
			restart++;
		}
	}
	return restart;
}
