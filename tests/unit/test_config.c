/*
 * test_config.c: config.c's defaults, parsing, every kind of error message
 * (exact FILE:LINE:COL text), the shipped etc/megaingest.yaml, reload diffs;
 * and log.c's line format, which config_diff writes through.
 *
 * Small cases are written to a temporary directory as t.yaml; the bigger
 * ones are tests/fixtures/config-*.yaml, found through $top_srcdir (make
 * check sets it; "." otherwise). A bad fixture lists the messages it must
 * produce in "# expect: " comment lines, so the file documents itself.
 */
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "unit.h"

static char tmpdir[] = "/tmp/test_config.XXXXXX";
static const char *top_srcdir = ".";

/* A malloc'd copy of TEXT with every "DIR/" removed, so messages name the bare file. */
static char *strip_dir(const char *text, const char *dir)
{
	size_t dl = strlen(dir);
	char *out = malloc(strlen(text) + 1), *o = out;

	if (!out)
		abort();
	while (*text) {
		if (strncmp(text, dir, dl) == 0 && text[dl] == '/')
			text += dl + 1;
		else
			*o++ = *text++;
	}
	*o = '\0';
	return out;
}

/* Load PATH; *ERRS gets the messages with DIR/ removed (caller frees). */
static struct config *load_path(const char *path, const char *dir, char **errs)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct config *cfg;

	if (!f)
		abort();
	cfg = config_load(path, f);
	fclose(f);
	*errs = strip_dir(buf, dir);
	free(buf);
	return cfg;
}

/* Write TEXT to tmpdir/t.yaml and load it; *ERRS as for load_path. */
static struct config *load_text(const char *text, char **errs)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/t.yaml", tmpdir);
	f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		abort();
	return load_path(path, tmpdir, errs);
}

/* TEXT must fail to load with exactly the messages WANT. */
static void expect_errors(const char *text, const char *want)
{
	char *errs;
	struct config *cfg = load_text(text, &errs);

	CHECK(cfg == NULL);
	CHECK_STR(errs, want);
	config_free(cfg);
	free(errs);
}

/* config_print of CFG as a malloc'd string. */
static char *printed(const struct config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		abort();
	config_print(cfg, f);
	fclose(f);
	return buf;
}

static void check_defaults(const struct config *c)
{
	CHECK(c->listen_tcp_count == 1);
	CHECK_STR(c->listen_tcp[0], "127.0.0.1:24224");
	CHECK(c->listen_tcp[1] == NULL);
	CHECK_STR(c->listen_unix, "/run/megaingest/megaingest.sock");
	CHECK(c->listen_unix_mode == 0660);
	CHECK(c->listen_max_connections == 1024);
	CHECK(c->listen_max_event_bytes == 1048576);
	CHECK(c->listen_idle_timeout_s == 300);
	CHECK(!c->listen_reuseport);
	CHECK_STR(c->listen_shared_key, "");
	CHECK_STR(c->listen_tls_cert, "");
	CHECK_STR(c->listen_tls_key, "");
	CHECK_STR(c->listen_tls_ca, "");
	CHECK_STR(c->pg_conninfo, "");
	CHECK_STR(c->pg_table, "mega_generations");
	CHECK(c->pg_unknown_pass_id == CONFIG_PASS_ID_CREATE);
	CHECK(c->pg_apply_credits == false);
	CHECK(c->queue_max_events == 262144);
	CHECK(c->queue_max_bytes == 268435456);
	CHECK(c->writer_connections == 1);
	CHECK(c->writer_batch_max_events == 10000);
	CHECK(c->writer_flush_interval_ms == 0);
	CHECK(c->writer_retry_initial_ms == 100);
	CHECK(c->writer_retry_max_ms == 2000);
	CHECK(c->writer_statement_timeout_ms == 30000);
	CHECK(c->writer_drain_timeout_s == 30);
	CHECK_STR(c->spool_dir, "/var/lib/megaingest");
	CHECK(c->spool_max_bytes == 1073741824);
	CHECK_STR(c->admin_http, "127.0.0.1:24225");
	CHECK(c->log_level == LOG_LEVEL_INFO);
	CHECK(c->log_stats_interval_s == 60);
}

static void test_defaults(void)
{
	struct config *d = config_defaults();
	struct config *n = config_load(NULL, stderr);

	CHECK(d != NULL && n != NULL);
	if (!d || !n)
		return;
	check_defaults(d);
	check_defaults(n);
	CHECK(d->path == NULL);
	config_free(d);
	config_free(n);
}

/* Empty files, comment-only files, empty documents and empty sections mean defaults. */
static void test_empty(void)
{
	static const char *const texts[] = {
		"", "# nothing here\n\n", "---\n", "---\n...\n", "~\n",
		"listen:\nwriter:\n# log:\n", "listen: {}\nlog: ~\n", "listen:\n  tls:\n",
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		char *errs;
		struct config *c = load_text(texts[i], &errs);

		CHECK(c != NULL);
		CHECK_STR(errs, "");
		if (c) {
			check_defaults(c);
			CHECK_CONTAINS(c->path, "/t.yaml");
		}
		config_free(c);
		free(errs);
	}
}

static void test_full(void)
{
	char path[512], *errs;
	struct config *c;

	snprintf(path, sizeof(path), "%s/tests/fixtures/config-full.yaml", top_srcdir);
	c = load_path(path, top_srcdir, &errs);
	CHECK(c != NULL);
	CHECK_STR(errs, "");
	free(errs);
	if (!c)
		return;
	CHECK(c->listen_tcp_count == 3);
	CHECK_STR(c->listen_tcp[0], "127.0.0.1:24224");
	CHECK_STR(c->listen_tcp[1], "[::1]:24230");
	CHECK_STR(c->listen_tcp[2], "0.0.0.0:5170");
	CHECK_STR(c->listen_unix, "/tmp/megaingest-test.sock");
	CHECK(c->listen_unix_mode == 0600);
	CHECK(c->listen_max_connections == 77);
	CHECK(c->listen_max_event_bytes == 65536);
	CHECK(c->listen_idle_timeout_s == 9);
	CHECK(c->listen_reuseport);
	CHECK_STR(c->listen_shared_key, "s3cret");
	CHECK_STR(c->listen_tls_cert, "/etc/megaingest/cert.pem");
	CHECK_STR(c->listen_tls_key, "/etc/megaingest/key.pem");
	CHECK_STR(c->listen_tls_ca, "/etc/megaingest/ca.pem");
	CHECK_STR(c->pg_conninfo, "host=/tmp dbname=mega user=ingest");
	CHECK_STR(c->pg_table, "public.mega_generations");
	CHECK(c->pg_unknown_pass_id == CONFIG_PASS_ID_DEAD_LETTER);
	CHECK(c->pg_apply_credits == true);
	CHECK(c->queue_max_events == 1000);
	CHECK(c->queue_max_bytes == 2097152);
	CHECK(c->writer_connections == 4);
	CHECK(c->writer_batch_max_events == 500);
	CHECK(c->writer_flush_interval_ms == 25);
	CHECK(c->writer_retry_initial_ms == 50);
	CHECK(c->writer_retry_max_ms == 5000);
	CHECK(c->writer_drain_timeout_s == 0);
	CHECK_STR(c->spool_dir, ".dev/spool");
	CHECK(c->spool_max_bytes == 10485760);
	CHECK_STR(c->admin_http, "[::1]:9999");
	CHECK(c->log_level == LOG_LEVEL_DEBUG);
	CHECK(c->log_stats_interval_s == 0);
	config_free(c);
}

/* Flow forms, empty strings, nulls, a lone scalar list and YAML's other booleans. */
static void test_forms(void)
{
	char *errs;
	struct config *c = load_text(
		"listen:\n"
		"  tcp: [\"127.0.0.1:1\", localhost:2]\n"
		"  unix: \"\"\n"
		"  unix_mode: 640\n"
		"  tls: {cert: a.pem, key: b.pem}\n"
		"admin: {http: \"\"}\n"
		"postgres: {conninfo: , apply_credits: yes, unknown_pass_id: DEAD_LETTER}\n"
		"log: {level: Warn}\n", &errs);

	CHECK(c != NULL);
	CHECK_STR(errs, "");
	free(errs);
	if (!c)
		return;
	CHECK(c->listen_tcp_count == 2);
	CHECK_STR(c->listen_tcp[1], "localhost:2");
	CHECK_STR(c->listen_unix, "");
	CHECK(c->listen_unix_mode == 0640);
	CHECK_STR(c->listen_tls_cert, "a.pem");
	CHECK_STR(c->listen_tls_ca, "");
	CHECK_STR(c->admin_http, "");
	CHECK_STR(c->pg_conninfo, "");
	CHECK(c->pg_apply_credits == true);
	CHECK(c->pg_unknown_pass_id == CONFIG_PASS_ID_DEAD_LETTER);
	CHECK(c->log_level == LOG_LEVEL_WARN);
	config_free(c);

	c = load_text("listen:\n  tcp: \"[::1]:7\"\n", &errs);
	CHECK(c && c->listen_tcp_count == 1 && strcmp(c->listen_tcp[0], "[::1]:7") == 0);
	config_free(c);
	free(errs);
	c = load_text("listen:\n  tcp: []\n", &errs);
	CHECK(c && c->listen_tcp_count == 0 && c->listen_tcp[0] == NULL);
	config_free(c);
	free(errs);
	c = load_text("listen:\n  tcp:\n", &errs);
	CHECK(c && c->listen_tcp_count == 0);
	config_free(c);
	free(errs);
}

/* One error per case, exact text: FILE:LINE:COL: KEY: what, then the echoed line. */
static void test_error_values(void)
{
	expect_errors("writer:\n  batch_max_events: ten\n",
		"t.yaml:2:21: writer.batch_max_events: expected integer 1..1000000, got \"ten\"\n"
		"    >>> '  batch_max_events: ten'\n");
	expect_errors("writer:\n  batch_max_events: 1000001\n",
		"t.yaml:2:21: writer.batch_max_events: 1000001 is out of range 1..1000000\n"
		"    >>> '  batch_max_events: 1000001'\n");
	expect_errors("listen:\n  max_event_bytes: 99999999999999999999\n",
		"t.yaml:2:20: listen.max_event_bytes: 99999999999999999999 is out of range "
		"64..1073741824\n"
		"    >>> '  max_event_bytes: 99999999999999999999'\n");
	expect_errors("log:\n  level: loud\n",
		"t.yaml:2:10: log.level: expected one of debug|info|warn|error, got \"loud\"\n"
		"    >>> '  level: loud'\n");
	expect_errors("listen:\n  unix_mode: \"0o660\"\n",
		"t.yaml:2:14: listen.unix_mode: expected an octal mode 0000..0777 such as "
		"\"0660\", got \"0o660\"\n"
		"    >>> '  unix_mode: \"0o660\"'\n");
	expect_errors("listen:\n  unix_mode: 1777\n",
		"t.yaml:2:14: listen.unix_mode: expected an octal mode 0000..0777 such as "
		"\"0660\", got \"1777\"\n"
		"    >>> '  unix_mode: 1777'\n");
	expect_errors("postgres:\n  apply_credits: 1\n",
		"t.yaml:2:18: postgres.apply_credits: expected true or false, got \"1\"\n"
		"    >>> '  apply_credits: 1'\n");
	expect_errors("writer:\n  connections: [1]\n",
		"t.yaml:2:16: writer.connections: expected integer 1..64, got a sequence\n"
		"    >>> '  connections: [1]'\n");
	expect_errors("spool:\n  dir: \"\"\n",
		"t.yaml:2:8: spool.dir: must not be empty\n    >>> '  dir: \"\"'\n");
	expect_errors("postgres:\n  table: \"x; drop\"\n",
		"t.yaml:2:10: postgres.table: expected a table name such as "
		"\"mega_generations\" or \"public.mega_generations\", got \"x; drop\"\n"
		"    >>> '  table: \"x; drop\"'\n");
}

/* Keys and sections that are unknown, repeated or of the wrong shape. */
static void test_error_keys(void)
{
	expect_errors("writer:\n  bach_max_events: 10\n",
		"t.yaml:2:3: writer.bach_max_events: unknown key \"bach_max_events\" in section "
		"\"writer\" (did you mean \"batch_max_events\"?)\n"
		"    >>> '  bach_max_events: 10'\n");
	expect_errors("writer:\n  max_event_bytes: 10\n",
		"t.yaml:2:3: writer.max_event_bytes: unknown key \"max_event_bytes\" in section "
		"\"writer\" (did you mean \"listen.max_event_bytes\"?)\n"
		"    >>> '  max_event_bytes: 10'\n");
	expect_errors("log:\n  level: info\nlsiten:\n  unix: \"\"\n",
		"t.yaml:3:1: lsiten: unknown section \"lsiten\" (did you mean \"listen\"?)\n"
		"    >>> 'lsiten:'\n");
	expect_errors("metrics:\n  port: 1\n",
		"t.yaml:1:1: metrics: unknown section \"metrics\"\n    >>> 'metrics:'\n");
	expect_errors("log:\n  level: info\n  level: debug\n",
		"t.yaml:3:3: log.level: duplicate key (first set at line 2)\n"
		"    >>> '  level: debug'\n");
	expect_errors("log: {}\nlog: {}\n",
		"t.yaml:2:1: log: duplicate section (first opened at line 1)\n    >>> 'log: {}'\n");
	expect_errors("writer: 5\n",
		"t.yaml:1:9: writer: expected a section (a mapping of keys), got \"5\"\n"
		"    >>> 'writer: 5'\n");
	expect_errors("- listen\n",
		"t.yaml:1:1: the top level must be a mapping of sections "
		"(listen:, postgres:, ...), got a sequence\n    >>> '- listen'\n");
	expect_errors("log: {}\n---\nlog: {}\n",
		"t.yaml:2:1: only one YAML document is allowed; remove this \"---\"\n"
		"    >>> '---'\n");
}

static void test_addresses(void)
{
	static const char *const good[] = {
		"127.0.0.1:24224", "localhost:1", "[::1]:65535", "[fe80::1%eth0]:80",
		"0.0.0.0:24224", "ingest-1.example.com:24224", "[::]:9",
	};
	static const char *const bad[] = {
		"localhost", "127.0.0.1:0", "127.0.0.1:65536", ":24224", "[::1]24224", "[]:1",
		"host:12ab", "a b:1", "[::1]:", "127.0.0.1:-1", "[x]:1",
	};
	char text[256], *errs;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct config *c;

		snprintf(text, sizeof(text), "admin:\n  http: \"%s\"\n", good[i]);
		c = load_text(text, &errs);
		CHECK_STR(errs, "");
		CHECK(c && strcmp(c->admin_http, good[i]) == 0);
		config_free(c);
		free(errs);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct config *c;

		snprintf(text, sizeof(text), "listen:\n  tcp: [\"%s\", \"%s\"]\n", good[i],
			 good[(i + 1) % (sizeof(good) / sizeof(good[0]))]);
		c = load_text(text, &errs);
		CHECK_STR(errs, "");
		CHECK(c && c->listen_tcp_count == 2 && strcmp(c->listen_tcp[0], good[i]) == 0);
		config_free(c);
		free(errs);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct config *c;

		snprintf(text, sizeof(text), "listen:\n  tcp: [\"%s\"]\n", bad[i]);
		c = load_text(text, &errs);
		CHECK(c == NULL);
		CHECK_CONTAINS(errs,
			       "t.yaml:2:9: listen.tcp: expected host:port with port 1..65535");
		config_free(c);
		free(errs);
	}
	expect_errors("listen:\n  tcp:\n    - 127.0.0.1:1\n    - \"::1:24224\"\n",
		"t.yaml:4:7: listen.tcp: expected host:port; an IPv6 address goes in brackets, "
		"as in \"[::1]:24224\", got \"::1:24224\"\n"
		"    >>> '    - \"::1:24224\"'\n");
	expect_errors("listen:\n  tcp: [a:1, b:2, a:1]\n",
		"t.yaml:2:19: listen.tcp: \"a:1\" is listed twice\n"
		"    >>> '  tcp: [a:1, b:2, a:1]'\n");
	expect_errors("listen:\n  tcp: [h:1, h:2, h:3, h:4, h:5, h:6, h:7, h:8, h:9, h:10, h:11, "
		"h:12, h:13, h:14, h:15, h:16, h:17]\n",
		"t.yaml:2:96: listen.tcp: too many entries: at most 16\n"
		"    >>> '  tcp: [h:1, h:2, h:3, h:4, h:5, h:6, h:7, h:8, h:9, h:10, h:11, h:12, "
		"h:13, h:14, h:15, h:16, h:17]'\n");
}

static void test_syntax_errors(void)
{
	expect_errors("writer:\n  batch_max_events: \"10\n",
		"t.yaml:3:1: syntax error: found unexpected end of stream (while scanning a quoted "
		"scalar at line 2, column 21)\n"
		"    >>> '  batch_max_events: \"10'\n");
	expect_errors("writer:\n  batch_max_events: 10\n flush_interval_ms: 5\n",
		"t.yaml:3:2: syntax error: did not find expected key (while parsing a block "
		"mapping at line 1, column 1)\n"
		"    >>> ' flush_interval_ms: 5'\n");
	expect_errors("log:\n\tlevel: info\n",
		"t.yaml:2:1: syntax error: found character that cannot start any token (while "
		"scanning for the next token at line 2, column 1)\n"
		"    >>> '\tlevel: info'\n");
	/* Errors before the syntax error are kept. */
	expect_errors("log:\n  level: loud\nwriter: [1,\n",
		"t.yaml:2:10: log.level: expected one of debug|info|warn|error, got \"loud\"\n"
		"    >>> '  level: loud'\n"
		"t.yaml:3:9: writer: expected a section (a mapping of keys), got a sequence\n"
		"    >>> 'writer: [1,'\n"
		"t.yaml:4:1: syntax error: did not find expected node content (while parsing a "
		"flow node at line 4, column 1)\n");
}

static void test_anchors(void)
{
	expect_errors("listen:\n  shared_key: &k abc\nadmin:\n  http: *k\n",
		"t.yaml:2:15: listen.shared_key: anchors (&k) are not supported; "
		"write the value out\n"
		"    >>> (line not shown: it sets a secret)\n"
		"t.yaml:4:9: admin.http: aliases (*k) are not supported; write the value out\n"
		"    >>> '  http: *k'\n");
}

static void test_cross_checks(void)
{
	expect_errors("listen:\n  tls:\n    key: k.pem\n",
		"t.yaml:3:10: listen.tls.key: is set but listen.tls.cert is empty (TLS needs cert "
		"and key, or neither)\n"
		"    >>> '    key: k.pem'\n");
	expect_errors("listen:\n  tls: {ca: ca.pem}\n",
		"t.yaml:2:13: listen.tls.ca: is set but TLS is off (listen.tls.cert and "
		"listen.tls.key are empty)\n"
		"    >>> '  tls: {ca: ca.pem}'\n");
	expect_errors("writer:\n  retry_max_ms: 50\n",
		"t.yaml:2:17: writer.retry_max_ms: 50 is below writer.retry_initial_ms (100)\n"
		"    >>> '  retry_max_ms: 50'\n");
	expect_errors("queue:\n  max_bytes: 65536\n",
		"t.yaml:2:14: queue.max_bytes: 65536 is below listen.max_event_bytes (1048576), so "
		"one largest event would fill the queue\n"
		"    >>> '  max_bytes: 65536'\n");
	/* A value that is already wrong is not reported a second time by a cross-check. */
	expect_errors("writer:\n  retry_initial_ms: 60000\n  retry_max_ms: 0\n",
		"t.yaml:3:17: writer.retry_max_ms: 0 is out of range 1..3600000\n"
		"    >>> '  retry_max_ms: 0'\n");
}

/* Lines of TEXT that are messages, not ">>>" echoes of the source. */
static int count_messages(const char *text)
{
	int n = 0;

	for (const char *p = text; *p; p = strchr(p, '\n') + 1) {
		if (strncmp(p, "    >>> ", 8) != 0)
			n++;
		if (!strchr(p, '\n'))
			break;
	}
	return n;
}

/*
 * Load fixture NAME; it must fail with exactly the "# expect: " lines it
 * lists (message lines, and echo lines written as ">>> '...'").
 */
static void check_fixture(const char *name)
{
	char dir[512], path[600], line[1024], *errs;
	int want = 0;
	struct config *c;
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/tests/fixtures", top_srcdir);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	CHECK(f != NULL);
	if (!f)
		return;
	c = load_path(path, dir, &errs);
	CHECK(c == NULL);
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "# expect: ", 10) != 0)
			continue;
		want += strncmp(line + 10, ">>> ", 4) != 0;
		CHECK_CONTAINS(errs, line + 10);
	}
	fclose(f);
	CHECK(want > 0);
	CHECK(count_messages(errs) == want);
	config_free(c);
	free(errs);
}

static void test_fixtures(void)
{
	check_fixture("config-bad-many.yaml");
	check_fixture("config-bad-tls.yaml");
	check_fixture("config-bad-syntax.yaml");
}

static void test_missing_file(void)
{
	char *errs;
	struct config *c = load_path("/nonexistent/megaingest.yaml", "/nonexistent", &errs);

	CHECK(c == NULL);
	CHECK_STR(errs, "megaingest.yaml: cannot open: No such file or directory\n");
	free(errs);
	c = load_path(tmpdir, "/tmp", &errs);
	CHECK(c == NULL);
	CHECK_CONTAINS(errs, ": cannot read: Is a directory\n");
	free(errs);
}

/* The shipped file sets every key to its default, and loads cleanly. */
static void test_shipped(void)
{
	char path[512], *errs, *a, *b;
	struct config *c, *d = config_defaults();

	snprintf(path, sizeof(path), "%s/etc/megaingest.yaml", top_srcdir);
	c = load_path(path, top_srcdir, &errs);
	CHECK(c != NULL);
	CHECK_STR(errs, "");
	free(errs);
	if (!c || !d) {
		config_free(c);
		config_free(d);
		return;
	}
	check_defaults(c);
	a = printed(c);
	b = printed(d);
	CHECK_STR(a, b);
	CHECK(config_diff(d, c) == 0);
	free(a);
	free(b);
	config_free(c);
	config_free(d);
}

static void test_print(void)
{
	char *out, *errs;
	struct config *c = load_text("listen:\n  shared_key: hunter2\n  tcp: [a:1, \"[::1]:2\"]\n"
				     "postgres:\n  conninfo: \"password=hunter2\"\n", &errs);

	CHECK(c != NULL);
	CHECK_STR(errs, "");
	free(errs);
	if (!c)
		return;
	out = printed(c);
	CHECK_CONTAINS(out, "listen:\n  tcp: [\"a:1\", \"[::1]:2\"]\n");
	CHECK_CONTAINS(out, "\n  unix_mode: \"0660\"\n");
	CHECK_CONTAINS(out, "\n  shared_key: (hidden)\n  tls:\n    cert: \"\"\n");
	CHECK_CONTAINS(out, "\npostgres:\n  conninfo: \"password=(hidden)\"\n");
	CHECK_CONTAINS(out, "\n  unknown_pass_id: create\n");
	CHECK_CONTAINS(out, "\n  apply_credits: false\n");
	CHECK_CONTAINS(out, "\nlog:\n  level: info\n");
	CHECK_CONTAINS(out, "\nspool:\n  dir: \"/var/lib/megaingest\"\n");
	CHECK(strstr(out, "hunter2") == NULL);
	free(out);
	config_free(c);
}

/* postgres.conninfo: parse errors by keyword, passwords hidden and redacted. */
static void test_conninfo(void)
{
	char why[400], buf[400];

	CHECK(config_conninfo_check("", why, sizeof(why)) == 0);
	CHECK(config_conninfo_check("mega", why, sizeof(why)) == 0); /* a bare dbname */
	CHECK(config_conninfo_check("postgresql://u:a%25b@h/db", why, sizeof(why)) == 0);
	CHECK(config_conninfo_check("postgresql://u:a%zzSECRET@h/db", why, sizeof(why)) < 0);
	CHECK_CONTAINS(why, "\"password\"");
	CHECK(strstr(why, "SECRET") == NULL);
	CHECK(config_conninfo_check("host=h password=two SECRET", why, sizeof(why)) < 0);
	CHECK(strstr(why, "SECRET") == NULL);
	CHECK(config_conninfo_check("host=h password=two x=SECRET", why, sizeof(why)) < 0);
	CHECK(strstr(why, "SECRET") == NULL);
	CHECK(config_conninfo_check("postgresql://u:p@SECRET@h/db", why, sizeof(why)) < 0);
	CHECK_CONTAINS(why, "%40");
	CHECK(config_conninfo_check("postgresql://u:p%40SECRET@h/db?host=a@b", why,
				    sizeof(why)) == 0);
	CHECK(config_conninfo_check("postgresql://h/d%zzb", why, sizeof(why)) < 0);
	CHECK_CONTAINS(why, "d%zzb"); /* not a secret: libpq's words are kept */
	CHECK_STR(config_conninfo_hide("host=h password='a b' user=u", buf, sizeof(buf)),
		  "host=h password='(hidden)' user=u");
	CHECK_STR(config_conninfo_hide("postgresql://u:pw@h/db?sslpassword=k&x=1", buf,
				       sizeof(buf)),
		  "postgresql://u:(hidden)@h/db?sslpassword=(hidden)&x=1");
	CHECK_STR(config_conninfo_redact("postgresql://u:p%41SS@h/db",
					 "no: p%41SS, pASS, ok", buf, sizeof(buf)),
		  "no: (hidden), (hidden), ok");
	CHECK_STR(config_conninfo_redact("host=h password=SECRET", "x SECRET y", buf, 8), "x (hidd");
}

struct diff_case {
	const struct config *a, *b;
	int restart;
};

static void run_diff(void *arg)
{
	struct diff_case *dc = arg;

	dc->restart = config_diff(dc->a, dc->b);
}

static void test_diff(void)
{
	struct config *d = config_defaults();
	char *errs, *log;
	struct config *n = load_text(
		"listen:\n  tcp: [\"0.0.0.0:24224\"]\n  shared_key: topsecret\n"
		"writer:\n  batch_max_events: 500\n  connections: 2\n"
		"log:\n  level: debug\n", &errs);
	struct diff_case dc = { d, n, -1 };

	CHECK(d && n);
	free(errs);
	if (!d || !n)
		return;
	log_set_level(LOG_LEVEL_INFO);
	log = unit_capture_stderr(run_diff, &dc);
	CHECK(dc.restart == 3);
	CHECK_CONTAINS(log, " info  config: writer.batch_max_events changed: 10000 -> 500\n");
	CHECK_CONTAINS(log, " info  config: log.level changed: info -> debug\n");
	CHECK_CONTAINS(log, " warn  config: listen.tcp changed, needs restart (keeping "
		       "[\"127.0.0.1:24224\"] until then)\n");
	CHECK_CONTAINS(log, " warn  config: writer.connections changed, needs restart (keeping 1 "
		       "until then)\n");
	CHECK_CONTAINS(log, " warn  config: listen.shared_key changed, needs restart (keeping \"\" "
		       "until then)\n");
	CHECK(strstr(log, "topsecret") == NULL);
	CHECK(strstr(log, "flush_interval_ms") == NULL);
	free(log);

	dc = (struct diff_case){ n, n, -1 };
	log = unit_capture_stderr(run_diff, &dc);
	CHECK(dc.restart == 0);
	CHECK_STR(log, "");
	free(log);
	config_free(d);
	config_free(n);
}

static void run_log_lines(void *arg)
{
	(void)arg;
	log_set_level(LOG_LEVEL_INFO);
	log_debug("test", "hidden %d", 1);
	log_warn("test", "hello %d", 5);
	log_error("writer", "two\nlines\r\n\n");
}

static void run_log_long(void *arg)
{
	log_info("test", "%s", (const char *)arg);
}

static void test_log(void)
{
	enum log_level lv = LOG_LEVEL_COUNT;
	regex_t re;
	char *out, *big;

	CHECK(log_level_parse("warn", &lv) == 0 && lv == LOG_LEVEL_WARN);
	CHECK(log_level_parse("debug", &lv) == 0 && lv == LOG_LEVEL_DEBUG);
	CHECK(log_level_parse("WARNING", &lv) == -1 && lv == LOG_LEVEL_DEBUG);
	CHECK(log_level_parse(NULL, &lv) == -1);
	CHECK_STR(log_level_name(LOG_LEVEL_ERROR), "error");
	CHECK_STR(log_level_name(LOG_LEVEL_INFO), "info");
	CHECK_STR(log_level_name(LOG_LEVEL_COUNT), "?");
	log_set_level(LOG_LEVEL_ERROR);
	CHECK(log_get_level() == LOG_LEVEL_ERROR && !log_enabled(LOG_LEVEL_WARN));

	out = unit_capture_stderr(run_log_lines, NULL);
	CHECK(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
		      "warn  test: hello 5\n[0-9T:.Z-]{24} error writer: two lines\n$",
		      REG_EXTENDED) == 0);
	CHECK(regexec(&re, out, 0, NULL, 0) == 0);
	if (regexec(&re, out, 0, NULL, 0) != 0)
		fprintf(stderr, "log output was: %s", out);
	regfree(&re);
	free(out);

	big = malloc(10000);
	if (!big)
		abort();
	memset(big, 'x', 9999);
	big[9999] = '\0';
	out = unit_capture_stderr(run_log_long, big);
	CHECK(strlen(out) == 4096);
	CHECK(strlen(out) >= 4 && strcmp(out + strlen(out) - 4, "...\n") == 0);
	CHECK(strchr(out, '\n') == out + strlen(out) - 1);
	free(out);
	free(big);
}

int main(void)
{
	const char *top = getenv("top_srcdir");

	if (top && *top)
		top_srcdir = top;
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_log();
	test_defaults();
	test_empty();
	test_full();
	test_forms();
	test_error_values();
	test_error_keys();
	test_addresses();
	test_syntax_errors();
	test_anchors();
	test_cross_checks();
	test_fixtures();
	test_missing_file();
	test_shipped();
	test_print();
	test_conninfo();
	test_diff();
	{
		char path[300];

		snprintf(path, sizeof(path), "%s/t.yaml", tmpdir);
		unlink(path);
		rmdir(tmpdir);
	}
	return unit_done("test_config");
}
