/*
 * config_pg.c: postgres.conninfo as libpq reads it, and how to say what is
 * wrong with it without ever saying its password.
 *
 * libpq's own parse errors quote the text they trip on ("invalid
 * percent-encoded token: \"s3%cret\""), so they are never shown as they
 * are. Instead the value of every keyword libpq marks secret (dispchar '*'
 * in PQconndefaults: password, sslpassword) is located in the raw text with
 * libpq's grammar, both forms: key=value words and URI userinfo and query
 * parameters. To diagnose, those values are replaced by "x" and the copy is
 * parsed again: if it now parses, the fault is in a secret value and is
 * reported by keyword; if not, libpq's message about the copy holds no
 * secret and is shown. The same spans hide a password in --print-config and
 * redact one from any libpq message that might echo it.
 *
 * A string that is neither a URI nor contains '=' is a bare database name
 * to libpq (PQconnectdbParams with expand_dbname), so it is accepted as is.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "config.h"

#define CONFIG_PG_SPANS 16 /* secret values located in one conninfo, at most */

/* Where one secret value sits in the raw conninfo text. */
struct config_pg_span {
	size_t start, len;
};

struct config_pg_scan {
	struct config_pg_span span[CONFIG_PG_SPANS];
	int n;
	bool stray;             /* a word that is no keyword follows a secret value */
	char keyword[32];       /* the secret keyword last seen, for messages */
};

static const char *const config_pg_uri_prefix[] = { "postgresql://", "postgres://", NULL };

/* Length of S's URI prefix as libpq recognises it, or 0. */
static size_t config_pg_uri_prefix_len(const char *s)
{
	for (int i = 0; config_pg_uri_prefix[i]; i++) {
		size_t n = strlen(config_pg_uri_prefix[i]);

		if (strncmp(s, config_pg_uri_prefix[i], n) == 0)
			return n;
	}
	return 0;
}

/* True when libpq would parse S as a connection string rather than a database name. */
static bool config_pg_is_conninfo(const char *s)
{
	return config_pg_uri_prefix_len(s) > 0 || strchr(s, '=') != NULL;
}

enum config_pg_kind {
	CONFIG_PG_UNKNOWN = 0,  /* not a libpq keyword */
	CONFIG_PG_PLAIN,
	CONFIG_PG_SECRET,       /* dispchar '*': a password */
	CONFIG_PG_KIND_COUNT    /* number of kinds; not a kind */
};

/* What libpq calls keyword KW[0..N). */
static enum config_pg_kind config_pg_keyword(const char *kw, size_t n)
{
	PQconninfoOption *opts = PQconndefaults();
	enum config_pg_kind kind = CONFIG_PG_UNKNOWN;

	if (!opts) /* out of memory: the keywords libpq 15 marks '*', and no others known */
		return (n == 8 && strncmp(kw, "password", 8) == 0) ||
		       (n == 11 && strncmp(kw, "sslpassword", 11) == 0) ?
		       CONFIG_PG_SECRET : CONFIG_PG_PLAIN;
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (strlen(o->keyword) == n && strncmp(o->keyword, kw, n) == 0)
			kind = o->dispchar && o->dispchar[0] == '*' ? CONFIG_PG_SECRET :
			       CONFIG_PG_PLAIN;
	PQconninfoFree(opts);
	return kind;
}

static bool config_pg_secret_keyword(const char *kw, size_t n)
{
	return config_pg_keyword(kw, n) == CONFIG_PG_SECRET;
}

static void config_pg_add(struct config_pg_scan *sc, const char *kw, size_t kwlen,
			  size_t start, size_t len)
{
	if (sc->n < CONFIG_PG_SPANS)
		sc->span[sc->n++] = (struct config_pg_span){ start, len };
	if (kw) /* NULL: a stray word, still the last keyword's */
		snprintf(sc->keyword, sizeof(sc->keyword), "%.*s", (int)kwlen, kw);
}

/* key=value form, word by word as libpq's conninfo_parse reads it. */
static void config_pg_scan_words(const char *s, struct config_pg_scan *sc)
{
	const char *p = s;
	bool after_secret = false;

	while (*p) {
		const char *kw, *v;
		size_t kwlen;
		bool secret, quoted;

		if (isspace((unsigned char)*p)) {
			p++;
			continue;
		}
		kw = p;
		while (*p && *p != '=' && !isspace((unsigned char)*p))
			p++;
		kwlen = (size_t)(p - kw);
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '=' || (after_secret && config_pg_keyword(kw, kwlen) == CONFIG_PG_UNKNOWN)) {
			/* libpq stops here ("missing =", "invalid connection option");
			 * a word right after a password that is no keyword is most
			 * likely the rest of an unquoted password. */
			if (after_secret) {
				sc->stray = true;
				config_pg_add(sc, NULL, 0, (size_t)(kw - s), kwlen);
			}
			if (*p == '=')
				p++; /* the rest of that word is its own word now */
			continue;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		secret = config_pg_secret_keyword(kw, kwlen);
		quoted = *p == '\'';
		v = p += quoted;
		while (*p && (quoted ? *p != '\'' : !isspace((unsigned char)*p)))
			p += p[0] == '\\' && p[1] ? 2 : 1;
		if (secret)
			config_pg_add(sc, kw, kwlen, (size_t)(v - s), (size_t)(p - v));
		after_secret = secret;
		p += quoted && *p == '\'';
	}
}

/* URI form: the password of "scheme://user:password@..." and secret query parameters. */
static void config_pg_scan_uri(const char *s, struct config_pg_scan *sc)
{
	const char *p = s + config_pg_uri_prefix_len(s), *at, *colon, *q;

	at = p + strcspn(p, "@/");
	if (*at == '@') {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon)
			config_pg_add(sc, "password", 8, (size_t)(colon + 1 - s),
				      (size_t)(at - colon - 1));
		p = at + 1;
	}
	q = strchr(p, '?');
	while (q && *q) {
		const char *kw = q + 1, *eq, *end;

		end = kw + strcspn(kw, "&");
		eq = memchr(kw, '=', (size_t)(end - kw));
		if (eq && config_pg_secret_keyword(kw, (size_t)(eq - kw)))
			config_pg_add(sc, kw, (size_t)(eq - kw), (size_t)(eq + 1 - s),
				      (size_t)(end - eq - 1));
		q = *end ? end : NULL;
	}
}

static void config_pg_scan(const char *s, struct config_pg_scan *sc)
{
	memset(sc, 0, sizeof(*sc));
	if (config_pg_uri_prefix_len(s))
		config_pg_scan_uri(s, sc);
	else
		config_pg_scan_words(s, sc);
}

/* S with every span replaced by WITH; malloc'd, NULL when out of memory. */
static char *config_pg_replace(const char *s, const struct config_pg_scan *sc, const char *with)
{
	size_t n = strlen(s), wl = strlen(with), pos = 0, o = 0;
	char *out = malloc(n + (size_t)sc->n * wl + 1);

	if (!out)
		return NULL;
	for (int i = 0; i < sc->n; i++) { /* spans are found left to right */
		const struct config_pg_span *sp = &sc->span[i];

		memcpy(out + o, s + pos, sp->start - pos);
		o += sp->start - pos;
		memcpy(out + o, with, wl);
		o += wl;
		pos = sp->start + sp->len;
	}
	memcpy(out + o, s + pos, n - pos + 1);
	return out;
}

/* libpq's message MSG (PQconninfoParse's errmsg) into WHY, newlines dropped. */
static void config_pg_message(const char *msg, char *why, size_t len)
{
	size_t n = msg ? strlen(msg) : 0;

	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		n--;
	snprintf(why, len, "%.*s", (int)n, msg ? msg : "libpq cannot parse it");
	for (char *p = why; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

/*
 * True when URI S has an '@' in its host part: libpq ends the userinfo at
 * the first '@', so a password with a bare '@' puts its tail into the host
 * name, which connection errors quote.
 */
static bool config_pg_uri_split_password(const char *s)
{
	const char *p = s + config_pg_uri_prefix_len(s), *at = p + strcspn(p, "@/");

	return *at == '@' && memchr(at + 1, '@', strcspn(at + 1, "/?")) != NULL;
}

int config_conninfo_check(const char *conninfo, char *why, size_t len)
{
	struct config_pg_scan sc;
	PQconninfoOption *opts;
	char *err = NULL, *masked;

	if (!config_pg_is_conninfo(conninfo))
		return 0;
	if (config_pg_uri_prefix_len(conninfo) && config_pg_uri_split_password(conninfo)) {
		snprintf(why, len, "more than one \"@\" before the host: write an \"@\" in the "
			 "user name or password as %%40");
		return -1;
	}
	opts = PQconninfoParse(conninfo, &err);
	if (opts) {
		PQconninfoFree(opts);
		return 0;
	}
	PQfreemem(err); /* it may quote a password: never shown */
	config_pg_scan(conninfo, &sc);
	if (sc.stray) {
		snprintf(why, len, "a word that is no keyword follows the value of \"%s\" (quote "
			 "a value with spaces in it: %s='...')", sc.keyword, sc.keyword);
		return -1;
	}
	masked = config_pg_replace(conninfo, &sc, "x");
	if (!masked) {
		snprintf(why, len, "out of memory checking it");
		return -1;
	}
	err = NULL;
	opts = PQconninfoParse(masked, &err);
	free(masked);
	if (opts && config_pg_uri_prefix_len(conninfo))
		snprintf(why, len, "the value of \"%s\" is not valid percent-encoding: in a URI "
			 "a \"%%\" must be followed by two hex digits (write %%25 for \"%%\", %%40 "
			 "for \"@\", %%2F for \"/\") and %%00 is not allowed", sc.keyword);
	else if (opts)
		snprintf(why, len, "the value of \"%s\" is not valid", sc.keyword);
	else
		config_pg_message(err, why, len);
	PQconninfoFree(opts);
	PQfreemem(err);
	return -1;
}

const char *config_conninfo_hide(const char *conninfo, char *buf, size_t len)
{
	struct config_pg_scan sc;
	char *hidden;

	config_pg_scan(conninfo, &sc);
	hidden = sc.n ? config_pg_replace(conninfo, &sc, "(hidden)") : NULL;
	snprintf(buf, len, "%s", sc.n == 0 ? conninfo : hidden ? hidden : "(hidden)");
	free(hidden);
	return buf;
}

/* Append TEXT[0..N) to BUF (LEN bytes, *O used), truncating. */
static void config_pg_put(char *buf, size_t len, size_t *o, const char *text, size_t n)
{
	if (*o + 1 >= len)
		return;
	if (n > len - 1 - *o)
		n = len - 1 - *o;
	memcpy(buf + *o, text, n);
	*o += n;
	buf[*o] = '\0';
}

/* Collect the secret values of CONNINFO, raw and as libpq decodes them, into VALS (at most MAX). */
static int config_pg_secrets(const char *conninfo, char **vals, int max)
{
	struct config_pg_scan sc;
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	int n = 0;

	config_pg_scan(conninfo, &sc);
	for (int i = 0; i < sc.n && n < max; i++)
		if (sc.span[i].len > 0 &&
		    (vals[n] = strndup(conninfo + sc.span[i].start, sc.span[i].len)))
			n++;
	for (PQconninfoOption *o = opts; o && o->keyword && n < max; o++)
		if (o->val && o->val[0] && o->dispchar && o->dispchar[0] == '*' &&
		    (vals[n] = strdup(o->val)))
			n++;
	PQconninfoFree(opts);
	return n;
}

const char *config_conninfo_redact(const char *conninfo, const char *text, char *buf,
				   size_t len)
{
	char *vals[2 * CONFIG_PG_SPANS];
	int n = conninfo && config_pg_is_conninfo(conninfo) ?
		config_pg_secrets(conninfo, vals, 2 * CONFIG_PG_SPANS) : 0;
	size_t o = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	for (const char *p = text ? text : ""; *p;) {
		size_t best = 0;

		for (int i = 0; i < n; i++) { /* the longest secret that starts here */
			size_t l = strlen(vals[i]);

			if (l > best && strncmp(p, vals[i], l) == 0)
				best = l;
		}
		if (best) {
			config_pg_put(buf, len, &o, "(hidden)", 8);
			p += best;
		} else {
			config_pg_put(buf, len, &o, p, 1);
			p++;
		}
	}
	for (int i = 0; i < n; i++)
		free(vals[i]);
	return buf;
}
