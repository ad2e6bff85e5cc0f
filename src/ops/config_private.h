/*
 * config_private.h: what the four files of the config module share. Not for
 * other modules: they use include/config.h.
 *
 *   config.c         the key table, defaults, free, checks across keys, config_load
 *   config_yaml.c    the libyaml event walk: each key's value read by its row's type
 *   config_report.c  "FILE:LINE:COL: KEY: ..." messages, source echo, "did you mean"
 *   config_show.c    config_print and config_diff
 *
 * A struct config_loader lives for one config_load call on one thread;
 * nothing here is shared between threads.
 */
#ifndef MI_CONFIG_INT_H
#define MI_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <yaml.h>

#include "config.h"

/* Rows in config_keys[]; config.c refuses to compile when they differ, so
 * adding a key is a row there and this number. */
#define CONFIG_NKEYS 42

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
	/* secret STRING: the value with only its secret parts hidden, into BUF;
	 * NULL: the whole value is shown as (hidden) */
	const char *(*hide)(const char *s, char *buf, size_t len);
	const char *help;           /* one sentence: --print-config, README, /stats */
};

/* Every key, in file order (config.c). */
extern const struct config_key config_keys[];

/* What the loader knows about one key of the file being read. */
struct config_seen {
	bool seen;          /* the file sets it (or opens the section) */
	bool bad;           /* its value was rejected; cross-checks skip it */
	size_t line;        /* 1-based line of its first key, for "duplicate" */
	yaml_mark_t mark;   /* start of its value, for cross-check errors */
};

/* One config_load call's state; written by config_yaml.c (walk), read by
 * config.c (cross-checks) and config_report.c (messages). */
struct config_loader {
	yaml_parser_t yp;               /* set up and torn down by config_yaml_parse */
	const char *path;               /* file name as given, for messages */
	const char *text;               /* the whole file, to echo lines */
	size_t len;
	FILE *errs;                     /* NULL: discard messages */
	int nerr;                       /* errors reported so far */
	struct config *cfg;             /* being filled; config_load frees it on errors */
	struct config_seen key[CONFIG_NKEYS];     /* by row */
	struct config_seen section[CONFIG_NKEYS]; /* by the section's first row */
};

/* Field of row K in CFG. */
static inline void *config_field(struct config *cfg, const struct config_key *k)
{
	return (char *)cfg + k->offset;
}

static inline const void *config_cfield(const struct config *cfg, const struct config_key *k)
{
	return (const char *)cfg + k->offset;
}

/* ---- config.c ---- */

/* The row whose path is PATH, or -1. */
int config_key_find(const char *path);

/* The first row inside section PATH (a row path starting "PATH."), or -1. */
int config_section_find(const char *path);

/* Empty list row K of CFG, freeing its entries. */
void config_list_clear(struct config *cfg, const struct config_key *k);

/* ---- config_yaml.c ---- */

/*
 * Walk LD->text (LD->len bytes) with libyaml into LD->cfg, reporting every
 * bad value and recording in LD->key and LD->section what the file set.
 * 0 when the whole stream was read (LD->nerr may still count errors); -1
 * when a syntax error or out of memory stopped the walk.
 */
int config_yaml_parse(struct config_loader *ld) __attribute__((warn_unused_result));

/* ---- config_report.c ---- */

/*
 * Report one error: "FILE:LINE:COL: KEY: MESSAGE" (without KEY when NULL,
 * without LINE:COL when MARK is NULL), then the source line. Counts it in
 * LD->nerr; writes only when LD->errs is set.
 */
void config_report(struct config_loader *ld, const yaml_mark_t *mark, const char *key,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Report libyaml's error in LD->yp, with its problem and context marks. */
void config_report_syntax(struct config_loader *ld);

/* Report KEY (a scalar event), unknown in section PREFIX ("" at the top),
 * with the nearest known name as a hint. */
void config_report_unknown(struct config_loader *ld, const char *prefix,
			   const yaml_event_t *key);

/* S clipped for a message into BUF (SIZE >= 4 bytes): control bytes as
 * '?', "..." past about 60 characters. Returns BUF. */
const char *config_report_clip(const char *s, char *buf, size_t size);

/* The nearest of CANDIDATES[0..N) to WORD within a typo's distance, or NULL. */
const char *config_report_nearest(const char *word, const char *const *candidates, size_t n);

#endif
