/*
 * config_report.c: how the config loader tells the operator what is wrong.
 *
 * Every message is compiler-style, "FILE:LINE:COL: KEY: what is wrong",
 * followed by the offending source line echoed as "    >>> '...'" (Redis),
 * with libyaml's start_mark for values and its problem_mark for syntax
 * errors. An unknown key or enum value gets the nearest known name by edit
 * distance ("did you mean", HAProxy). Split from config_yaml.c so that the
 * walk reads as what is checked, and this file as how it is said; every
 * message goes through config_report, which counts it for config_load.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "config.h"
#include "config_private.h"

#define CONFIG_NAME_MAX 63 /* longest key name "did you mean" compares */

/* ---- messages ------------------------------------------------------------ */

/*
 * Copy S into BUF (SIZE bytes) for a message: control bytes become '?' and
 * anything past about 60 characters becomes "...". Returns BUF.
 */
const char *config_report_clip(const char *s, char *buf, size_t size)
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

/* True when LINE[0..N) names a secret key: its value is never echoed. */
static bool config_line_secret(const char *line, size_t n)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const char *name = strrchr(config_keys[i].path, '.') + 1;
		size_t len = strlen(name);

		if (!config_keys[i].secret)
			continue;
		for (size_t j = 0; j + len <= n; j++)
			if (memcmp(line + j, name, len) == 0)
				return true;
	}
	return false;
}

/* Echo 1-based LINE of the file as "    >>> 'LINE'" (control bytes as '?', 200 chars at
 * most); a line that sets a secret key is left out, as its value may be the secret. */
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
	if (config_line_secret(p, n)) {
		fputs("    >>> (line not shown: it sets a secret)\n", ld->errs);
		return true;
	}
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
void config_report(struct config_loader *ld, const yaml_mark_t *mark, const char *key,
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
void config_report_syntax(struct config_loader *ld)
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
const char *config_report_nearest(const char *word, const char *const *candidates, size_t n)
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
	best = config_report_nearest(name, ptrs, n);
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

/* Report KEY, unknown in section PREFIX ("" at the top), with the nearest known name. */
void config_report_unknown(struct config_loader *ld, const char *prefix,
			   const yaml_event_t *key)
{
	char name[80], path[160], hint[200];

	config_report_clip((const char *)key->data.scalar.value, name, sizeof(name));
	config_hint(prefix, name, hint, sizeof(hint));
	if (!prefix[0]) {
		config_report(ld, &key->start_mark, name, "unknown section \"%s\"%s", name, hint);
		return;
	}
	snprintf(path, sizeof(path), "%s.%s", prefix, name);
	config_report(ld, &key->start_mark, path, "unknown key \"%s\" in section \"%s\"%s",
		      name, prefix, hint);
}
