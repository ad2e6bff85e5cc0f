/*
 * megactl_json.c: a dead-letter line (JSON) -> msgpack, through yajl's
 * callbacks, as the daemon's HTTP input decodes JSON (http_body_json.c).
 *
 * Values are packed as their callbacks arrive. msgpack wants a container's
 * count before its items, so maps and arrays get a 5-byte map32/array32
 * header whose count is patched when they close (megactl_replay unpacks
 * the line and packs the event again, in the shortest form).
 *
 * A stand-in ({"$base64": ...} or {"$ext": N, "$base64": ...}) is only
 * known to be one at its '}': the innermost open map is a candidate while
 * its keys and values are the ones a stand-in has, in that order; at its
 * '}' its bytes (header, keys, values) are dropped and the bin or ext
 * packed in their place. Anything else in it (another key, a container,
 * an $ext that is not an integer in -128..127) leaves it a map.
 *
 * Maps and arrays nest at most MJ_MAX_LEVELS deep (the line's object, then
 * what the daemon takes in an event); a map one level deeper is let in
 * while it may still be a stand-in, as bin and ext are no level.
 *
 * yajl checks the JSON grammar and UTF-8, but turns an unpaired \u
 * surrogate escape into "?" or into the wrong character; such escapes are
 * refused after the parse. Its error texts say what the lexer or parser
 * met; what was expected instead ("expected ':'") is worked out from the
 * last token we were called for, and the column is that of the token
 * after it. yajl's allocations go through json_yajl_alloc (json_yajl.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <openssl/evp.h>
#include <yajl/yajl_parse.h>

#include "json_yajl.h"
#include "megactl_json.h"

/* Levels of maps and arrays in a line: its own object, then the event's. */
#define MJ_MAX_LEVELS (MEGACTL_JSON_EVENT_DEPTH + 1)
#define MJ_NUMBER_MAX 64 /* longest number text converted, with its NUL */

/* What yajl takes next, after the last token we were called for. */
enum mj_want {
	MJ_VALUE = 0,  /* a value (or ']' after '[') */
	MJ_KEY,        /* a key (or '}' after '{') */
	MJ_COLON,      /* ':' then a value */
	MJ_MAP_NEXT,   /* ',' then a key, or '}' */
	MJ_ARRAY_NEXT, /* ',' then a value, or ']' */
	MJ_END,        /* nothing: the line's value is complete */
	MJ_WANT_COUNT  /* number of states; not a state */
};

/* How far the innermost open map has gone as a stand-in. */
enum mj_cand {
	MJ_CAND_NONE = 0, /* not one (or no map open) */
	MJ_CAND_OPEN,     /* '{' seen */
	MJ_CAND_EXT_KEY,  /* {"$ext" */
	MJ_CAND_EXT,      /* {"$ext": N */
	MJ_CAND_B64_KEY,  /* ... "$base64" */
	MJ_CAND_B64,      /* ... "$base64": "..." : one at its '}' */
	MJ_CAND_COUNT     /* number of states; not a state */
};

struct mj {
	yajl_handle h;
	const char *text;
	size_t len;
	msgpack_sbuffer *sb;
	msgpack_packer pk;
	int depth;                      /* maps and arrays open */
	size_t open[MJ_MAX_LEVELS + 1]; /* offset of each one's header (+1: a deep stand-in) */
	uint32_t count[MJ_MAX_LEVELS + 1];
	bool ismap[MJ_MAX_LEVELS + 1];
	enum mj_cand cand;
	int8_t ext_type;                /* MJ_CAND_EXT and on: the $ext */
	bool ext;
	size_t b64_off, b64_len;        /* the $base64 text, packed as a str in sb */
	enum mj_want want;
	size_t last;                    /* offset just past the last token called for */
	bool finishing;                 /* in yajl_complete_parse: offsets are not the line's */
	const char *why;                /* a refusal of ours; NULL: yajl's error */
	char whybuf[96];
	size_t col;
};

/* ---- bookkeeping ---------------------------------------------------------- */

/* Refuse the line for WHY at the token just read; returns 0 (cancels yajl). */
static int mj_fail(struct mj *j, const char *why)
{
	j->why = why;
	j->col = j->finishing ? j->len : yajl_get_bytes_consumed(j->h);
	return 0;
}

static int mj_oom(struct mj *j)
{
	return mj_fail(j, "out of memory");
}

static int mj_too_deep(struct mj *j)
{
	snprintf(j->whybuf, sizeof(j->whybuf), "nested too deeply (the daemon takes maps and "
		 "arrays %d levels deep in an event)", MEGACTL_JSON_EVENT_DEPTH);
	return mj_fail(j, j->whybuf);
}

/* The innermost map is no stand-in after all. 1, or 0 when it is a map
 * nested deeper than a map may be (only a stand-in may sit there). */
static int mj_not_stand_in(struct mj *j)
{
	if (j->cand == MJ_CAND_NONE)
		return 1;
	j->cand = MJ_CAND_NONE;
	return j->depth > MJ_MAX_LEVELS ? mj_too_deep(j) : 1;
}

/* A value begins: one more item of an enclosing array. */
static void mj_item(struct mj *j)
{
	if (j->depth > 0 && !j->ismap[j->depth - 1])
		j->count[j->depth - 1]++;
}

/* A value no stand-in holds begins. 1, or 0 (refused). */
static int mj_other_item(struct mj *j)
{
	mj_item(j);
	return mj_not_stand_in(j);
}

/* A token was taken: note where it ends and what yajl takes next. Returns 1. */
static int mj_next(struct mj *j, enum mj_want want)
{
	j->last = j->finishing ? j->len : yajl_get_bytes_consumed(j->h);
	j->want = want;
	return 1;
}

/* A value ended. Returns 1. */
static int mj_done(struct mj *j)
{
	return mj_next(j, j->depth == 0 ? MJ_END :
			  j->ismap[j->depth - 1] ? MJ_MAP_NEXT : MJ_ARRAY_NEXT);
}

/* ---- scalars ------------------------------------------------------------- */

/* The number TEXT: an integer as int (uint64 or int64), else float64; an
 * integer outside both ranges as the nearest float64. */
static int mj_pack_number(struct mj *j, const char *text, bool integer)
{
	errno = 0;
	if (integer && text[0] == '-') {
		long long v = strtoll(text, NULL, 10);

		if (errno == 0)
			return msgpack_pack_long_long(&j->pk, v);
	} else if (integer) {
		unsigned long long v = strtoull(text, NULL, 10);

		if (errno == 0)
			return msgpack_pack_unsigned_long_long(&j->pk, v);
	}
	return msgpack_pack_double(&j->pk, strtod(text, NULL));
}

static int mj_number(void *ctx, const char *s, size_t n)
{
	struct mj *j = ctx;
	bool integer = !memchr(s, '.', n) && !memchr(s, 'e', n) && !memchr(s, 'E', n);
	char text[MJ_NUMBER_MAX];
	long long type;

	mj_item(j);
	if (n >= sizeof(text))
		return mj_fail(j, "number longer than 63 characters");
	memcpy(text, s, n);
	text[n] = '\0';
	type = integer ? strtoll(text, NULL, 10) : LLONG_MAX;
	if (j->cand == MJ_CAND_EXT_KEY && type >= -128 && type <= 127) {
		j->cand = MJ_CAND_EXT;
		j->ext = true;
		j->ext_type = (int8_t)type;
	} else if (!mj_not_stand_in(j)) {
		return 0;
	}
	return mj_pack_number(j, text, integer) == 0 ? mj_done(j) : mj_oom(j);
}

static int mj_string(void *ctx, const unsigned char *s, size_t n)
{
	struct mj *j = ctx;

	mj_item(j);
	if (j->cand != MJ_CAND_B64_KEY && !mj_not_stand_in(j))
		return 0;
	if (msgpack_pack_str(&j->pk, n) != 0)
		return mj_oom(j);
	if (j->cand == MJ_CAND_B64_KEY) {
		j->cand = MJ_CAND_B64;
		j->b64_off = j->sb->size;
		j->b64_len = n;
	}
	return msgpack_pack_str_body(&j->pk, s, n) == 0 ? mj_done(j) : mj_oom(j);
}

static int mj_null(void *ctx)
{
	struct mj *j = ctx;

	if (!mj_other_item(j))
		return 0;
	return msgpack_pack_nil(&j->pk) == 0 ? mj_done(j) : mj_oom(j);
}

static int mj_boolean(void *ctx, int b)
{
	struct mj *j = ctx;

	if (!mj_other_item(j))
		return 0;
	return (b ? msgpack_pack_true(&j->pk) : msgpack_pack_false(&j->pk)) == 0 ?
	       mj_done(j) : mj_oom(j);
}

/* ---- containers ---------------------------------------------------------- */

static bool mj_key_is(const unsigned char *s, size_t n, const char *key)
{
	return n == strlen(key) && memcmp(s, key, n) == 0;
}

static int mj_key(void *ctx, const unsigned char *s, size_t n)
{
	struct mj *j = ctx;

	j->count[j->depth - 1]++;
	if (j->cand == MJ_CAND_OPEN && mj_key_is(s, n, "$ext"))
		j->cand = MJ_CAND_EXT_KEY;
	else if ((j->cand == MJ_CAND_OPEN || j->cand == MJ_CAND_EXT) && mj_key_is(s, n, "$base64"))
		j->cand = MJ_CAND_B64_KEY;
	else if (!mj_not_stand_in(j))
		return 0;
	if (msgpack_pack_str_with_body(&j->pk, s, n) != 0)
		return mj_oom(j);
	return mj_next(j, MJ_COLON);
}

static int mj_open(struct mj *j, bool map)
{
	static const char head[2][5] = { { (char)0xdd }, { (char)0xdf } };

	if (!mj_other_item(j))
		return 0;
	/* One level more is a map that may yet be a stand-in (not a map). */
	if (j->depth >= MJ_MAX_LEVELS + (map ? 1 : 0))
		return mj_too_deep(j);
	j->open[j->depth] = j->sb->size;
	j->count[j->depth] = 0;
	j->ismap[j->depth] = map;
	j->depth++;
	j->cand = map ? MJ_CAND_OPEN : MJ_CAND_NONE;
	j->ext = false;
	if (msgpack_sbuffer_write(j->sb, head[map], sizeof(head[map])) != 0)
		return mj_oom(j);
	return mj_next(j, map ? MJ_KEY : MJ_VALUE);
}

static int mj_start_map(void *ctx)
{
	return mj_open(ctx, true);
}

static int mj_start_array(void *ctx)
{
	return mj_open(ctx, false);
}

/* Decode base64 TEXT (LEN bytes) into a malloc'ed buffer; its length or -1. */
static long mj_base64(const char *text, size_t len, unsigned char **out)
{
	int pad = 0, n;

	if (len % 4 != 0 || len > (1u << 30))
		return -1;
	*out = malloc(len / 4 * 3 + 1);
	if (!*out)
		return -1;
	n = EVP_DecodeBlock(*out, (const unsigned char *)text, (int)len);
	while (pad < 2 && len > (size_t)pad && text[len - 1 - pad] == '=')
		pad++;
	if (n < 0 || n < pad) {
		free(*out);
		return -1;
	}
	return n - pad;
}

/* The stand-in closing now: its bytes from its header on become the bin or
 * ext it stands for. 0, or -1 (told why). */
static int mj_stand_in(struct mj *j)
{
	unsigned char *bytes;
	long n = mj_base64(j->sb->data + j->b64_off, j->b64_len, &bytes);
	int rc;

	if (n < 0) {
		mj_fail(j, "bad base64 in a {\"$base64\"} value");
		return -1;
	}
	j->sb->size = j->open[j->depth - 1];
	if (j->ext)
		rc = msgpack_pack_ext_with_body(&j->pk, bytes, (size_t)n, j->ext_type);
	else
		rc = msgpack_pack_bin_with_body(&j->pk, bytes, (size_t)n);
	free(bytes);
	if (rc != 0)
		mj_oom(j);
	return rc != 0 ? -1 : 0;
}

static int mj_close(void *ctx)
{
	struct mj *j = ctx;
	int top = j->depth - 1;
	unsigned char *h = (unsigned char *)j->sb->data + j->open[top] + 1;
	uint32_t n = j->count[top];

	if (j->cand == MJ_CAND_B64) {
		if (mj_stand_in(j) < 0)
			return 0;
	} else if (!mj_not_stand_in(j)) {
		return 0;
	} else {
		h[0] = (unsigned char)(n >> 24);
		h[1] = (unsigned char)(n >> 16);
		h[2] = (unsigned char)(n >> 8);
		h[3] = (unsigned char)n;
	}
	j->cand = MJ_CAND_NONE;
	j->depth--;
	return mj_done(j);
}

static const yajl_callbacks mj_callbacks = {
	.yajl_null = mj_null,
	.yajl_boolean = mj_boolean,
	.yajl_number = mj_number,
	.yajl_string = mj_string,
	.yajl_start_map = mj_start_map,
	.yajl_map_key = mj_key,
	.yajl_end_map = mj_close,
	.yajl_start_array = mj_start_array,
	.yajl_end_array = mj_close,
};

/* ---- errors ------------------------------------------------------------------ */

static size_t mj_skip_ws(const struct mj *j, size_t i)
{
	while (i < j->len && strchr(" \t\n\v\f\r", j->text[i]) && j->text[i])
		i++;
	return i;
}

/* yajl's words for the token at P it refused ("invalid char in json
 * text"), the longest of them shortened. */
static void mj_yajl_why(struct mj *j, size_t p)
{
	static const char *const shorter[][2] = {
		{ "premature EOF", "unexpected end of line" },
		{ "unallowed token at this point in JSON text", "expected a value" },
		{ "invalid string in json text", "expected true, false or null" },
		{ "inside a string, '\\' occurs before a character which it may not",
		  "bad escape in a string" },
		{ "invalid (non-hex) character occurs after '\\u' inside string", "bad \\u escape" },
	};
	unsigned char *e = yajl_get_error(j->h, 0, (const unsigned char *)j->text, j->len);
	const char *s = e ? (const char *)e : "invalid JSON", *colon = strstr(s, "error: ");
	size_t n;

	s = colon ? colon + 7 : s;
	n = strcspn(s, "\n");
	while (n > 0 && s[n - 1] == '.')
		n--;
	snprintf(j->whybuf, sizeof(j->whybuf), "%.*s", (int)n, s);
	if (e)
		yajl_free_error(j->h, e);
	j->why = j->whybuf;
	/* In the bad token, yajl stops at (or just past) the byte that broke it. */
	if (!j->finishing && yajl_get_bytes_consumed(j->h) > j->col)
		j->col = yajl_get_bytes_consumed(j->h);
	for (size_t i = 0; i < sizeof(shorter) / sizeof(shorter[0]); i++)
		if (strcmp(j->whybuf, shorter[i][0]) == 0)
			j->why = i == 0 && j->text[p] == '"' ? "unterminated string" : shorter[i][1];
}

/* yajl refused the line: say what was expected after the last good token,
 * else what yajl met, at the column where the bad token starts. */
static void mj_syntax(struct mj *j)
{
	static const char *const expected[MJ_WANT_COUNT] = {
		[MJ_COLON] = "expected ':'",
		[MJ_MAP_NEXT] = "expected ',' or '}'",
		[MJ_ARRAY_NEXT] = "expected ',' or ']'",
	};
	size_t p = mj_skip_ws(j, j->last);
	enum mj_want want = j->want;

	if (want == MJ_COLON || want == MJ_MAP_NEXT || want == MJ_ARRAY_NEXT) {
		if (p >= j->len || j->text[p] != (want == MJ_COLON ? ':' : ',')) {
			j->why = expected[want];
			j->col = p + 1;
			return;
		}
		p = mj_skip_ws(j, p + 1);
		want = want == MJ_MAP_NEXT ? MJ_KEY : MJ_VALUE;
	}
	j->col = p + 1;
	if (want == MJ_END)
		j->why = "text after the JSON value";
	else if (want == MJ_KEY && (p >= j->len || j->text[p] != '"'))
		j->why = "expected a string key";
	else if (p >= j->len)
		j->why = "unexpected end of line";
	else
		mj_yajl_why(j, p);
}

/* 0, or -1 with the column of the first \u escape of a UTF-16 surrogate
 * that has no partner. After a good parse every '\' is in a string. */
static int mj_surrogates(struct mj *j)
{
	const char *t = j->text;
	unsigned hi, lo;

	for (size_t i = 0; i + 1 < j->len; i++) {
		if (t[i] != '\\')
			continue;
		if (t[++i] != 'u' || sscanf(t + i + 1, "%4x", &hi) != 1)
			continue;
		if (hi >= 0xd800 && hi < 0xdc00 && i + 10 < j->len && t[i + 5] == '\\' &&
		    t[i + 6] == 'u' && sscanf(t + i + 7, "%4x", &lo) == 1 && lo >= 0xdc00 &&
		    lo < 0xe000) {
			i += 10;
			continue;
		}
		if (hi >= 0xd800 && hi < 0xe000) {
			snprintf(j->whybuf, sizeof(j->whybuf), "\\u%.4s in a string is half of a "
				 "UTF-16 surrogate pair", t + i + 1);
			j->why = j->whybuf;
			j->col = i;
			return -1;
		}
		i += 4;
	}
	return 0;
}

int megactl_json_to_msgpack(const char *text, size_t len, msgpack_sbuffer *out,
			    char *why, size_t whylen, size_t *col)
{
	struct mj j = { .text = text, .len = len, .sb = out };
	yajl_status st;

	msgpack_packer_init(&j.pk, out, msgpack_sbuffer_write);
	j.h = yajl_alloc(&mj_callbacks, json_yajl_alloc(), &j);
	if (!j.h) {
		snprintf(why, whylen, "out of memory");
		*col = 0;
		return -1;
	}
	st = yajl_parse(j.h, (const unsigned char *)text, len);
	if (st == yajl_status_ok) {
		j.finishing = true;
		st = yajl_complete_parse(j.h);
	}
	if (st != yajl_status_ok && !j.why)
		mj_syntax(&j);
	else if (st == yajl_status_ok && memchr(text, '\\', len))
		st = mj_surrogates(&j) == 0 ? yajl_status_ok : yajl_status_error;
	yajl_free(j.h);
	if (st == yajl_status_ok)
		return 0;
	snprintf(why, whylen, "%s", j.why);
	*col = j.col;
	return -1;
}
