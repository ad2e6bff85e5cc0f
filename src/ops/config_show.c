/*
 * config_show.c: a config's values as text: config_print (every key with
 * its effective value) and config_diff (what a SIGHUP reload changes, logged).
 *
 * Both are loops over config_keys[], so a new key is printed and diffed
 * with no code here. Values are shown as YAML-ish text (strings quoted and
 * escaped, modes in octal, enums by name); a secret row shows "(hidden)"
 * instead of its value (postgres.conninfo only in place of its password),
 * in the log as on the terminal. Split from the
 * loader because it only reads a finished struct config and never YAML.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "config_private.h"
#include "log.h"

#define CONFIG_SHOW_MAX 8192 /* longest value text in print and diff */

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
	char buf[CONFIG_SHOW_MAX];

	if (k->secret && s[0] && k->hide)
		config_text_quoted(t, k->hide(s, buf, sizeof(buf)));
	else if (k->secret && s[0])
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

/* How many leading dot-separated parts PATH shares with PREV (NULL: none). */
static int config_shared_parts(const char *path, const char *prev)
{
	int parts = 0;

	for (size_t i = 0; prev && path[i] && path[i] == prev[i]; i++)
		if (path[i] == '.')
			parts++;
	return parts;
}

/*
 * YAML, nested by section in table order (a section's rows are adjacent),
 * so the output is a config file config_load reads back. A section header
 * is printed for each part of a row's path that the previous row did not share.
 */
void config_print(const struct config *cfg, FILE *out)
{
	struct config_text t;
	const char *prev = NULL;

	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key *k = &config_keys[i];
		const char *p = k->path, *dot;
		int depth = 0, shared = config_shared_parts(p, prev);

		for (; (dot = strchr(p, '.')) != NULL; p = dot + 1, depth++)
			if (depth >= shared)
				fprintf(out, "%s%*s%.*s:\n", depth == 0 && prev ? "\n" : "",
					depth * 2, "", (int)(dot - p), p);
		fprintf(out, "%*s%s: %s\n", depth * 2, "", p, config_show(cfg, k, &t));
		prev = k->path;
	}
}

/* Bytes of row K's field (a LIST's count follows its array). */
static size_t config_field_size(const struct config_key *k)
{
	switch (k->type) {
	case CONFIG_T_LONG:
		return sizeof(long);
	case CONFIG_T_BOOL:
		return sizeof(bool);
	case CONFIG_T_STRING:
		return sizeof(char *);
	case CONFIG_T_LIST:
		return sizeof(char *[CONFIG_MAX_TCP]) + sizeof(int);
	default: /* INT, MODE, ENUM */
		return sizeof(int);
	}
}

/* A and B trade row K's field (pointers included: each config still owns
 * what it frees). */
static void config_swap_field(struct config *a, struct config *b, const struct config_key *k)
{
	unsigned char tmp[sizeof(char *[CONFIG_MAX_TCP]) + sizeof(int)];
	size_t n = config_field_size(k);

	memcpy(tmp, config_field(a, k), n);
	memcpy(config_field(a, k), config_field(b, k), n);
	memcpy(config_field(b, k), tmp, n);
}

int config_diff(struct config *old_cfg, struct config *new_cfg)
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
			config_swap_field(old_cfg, new_cfg, k);
			restart++;
		}
	}
	return restart;
}
