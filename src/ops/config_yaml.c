/*
 * config_yaml.c: megaingest.yaml's text -> the fields of a struct config.
 *
 * The file is read with libyaml's event API. The loader walks mappings by
 * recursion on the dotted path: a key whose path is a row of config_keys[]
 * is parsed by the row's type (one small loader per type, picked from a
 * table); a key that is a prefix of rows ("listen", "listen.tls") is a
 * section and must hold a mapping; anything else is unknown and gets the
 * nearest sibling as a hint. Nothing stops at the first mistake: each bad
 * value is reported through config_report.c and the walk goes on (HAProxy's
 * err_code accumulation); only a YAML syntax error ends it early, because
 * libyaml cannot go on after one. Anchors and aliases are refused: a config
 * file that shares values by reference is harder to review than one that
 * repeats them, and this file is reviewed far more than written.
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
#include "config_private.h"

#define CONFIG_PATH_MAX 128 /* longest dotted path we look up */

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
		   config_keys[idx].secret ? "(hidden)" :
		   config_report_clip(config_scalar(ev), got, sizeof(got)));
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
	near = config_report_nearest(s, k->names, n);
	config_bad(ld, idx, &ev->start_mark, "expected %s, got \"%s\"%s%s%s",
		   config_expected(k, want, sizeof(want)), config_report_clip(s, got, sizeof(got)),
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
		config_bad(ld, idx, mark, "%s, got \"%s\"", why, config_report_clip(s, got, sizeof(got)));
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
				   config_report_clip(s, got, sizeof(got)));
			return 0;
		}
	}
	if (config_set_string(ld, &list[*count], s) < 0)
		return -1;
	(*count)++;
	return 0;
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
			      config_report_clip(config_scalar(&val), got, sizeof(got)));
	} else if (val.type == YAML_SEQUENCE_START_EVENT) {
		config_report(ld, &val.start_mark, path,
			      "expected a section (a mapping of keys), got a sequence");
		rc = config_skip(ld, &val);
	}
	yaml_event_delete(&val);
	return rc;
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

int config_yaml_parse(struct config_loader *ld)
{
	int rc;

	if (!yaml_parser_initialize(&ld->yp)) {
		config_report(ld, NULL, NULL, "out of memory");
		return -1;
	}
	yaml_parser_set_input_string(&ld->yp, (const unsigned char *)ld->text, ld->len);
	rc = config_load_stream(ld);
	yaml_parser_delete(&ld->yp);
	return rc;
}
