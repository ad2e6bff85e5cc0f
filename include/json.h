/*
 * json: msgpack values -> JSON text, into a libevent evbuffer.
 *
 * Two modes. JSON_STRICT is for PostgreSQL's jsonb (mg_meta): it refuses what
 * jsonb cannot store (NUL in a string, invalid UTF-8, NaN/Infinity, non-string
 * keys, unknown ext types) with a message naming the path. JSON_LENIENT is for
 * the dead-letter file, which must record any event as received: bin that is
 * not UTF-8 becomes {"$base64": "..."}, NaN becomes null, a non-string key is
 * written as its JSON text (a container key inside such a key as
 * {"$msgpack": "<base64>"}, so the output stays linear in the input). Both
 * bound nesting at JSON_MAX_DEPTH.
 */
#ifndef MI_JSON_H
#define MI_JSON_H

#include <stddef.h>
#include <stdbool.h>
#include <msgpack.h>

struct evbuffer;

#define JSON_MAX_DEPTH 32

enum json_mode {
	JSON_STRICT = 0,
	JSON_LENIENT,
	JSON_MODE_COUNT /* number of modes; not a mode */
};

/*
 * Append O as JSON to OUT. Returns 0, or -1 with a message such as
 * "mg_meta.a.b: string holds a NUL byte" in ERR (STRICT only; LENIENT
 * fails only on allocation failure). PATH names O in that message.
 */
int json_append_msgpack(struct evbuffer *out, const msgpack_object *o,
			enum json_mode mode, const char *path,
			char *err, size_t errlen) __attribute__((warn_unused_result));

/* Append S (LEN bytes, any content) as a JSON string literal, escaped. */
int json_append_string(struct evbuffer *out, const char *s, size_t len);

/* O's msgpack type as a word for messages: "int", "str", "map", ... */
const char *json_type_name(const msgpack_object *o);

/* True when S is valid UTF-8 (no overlongs, no surrogates). */
bool json_utf8_valid(const char *s, size_t len);

/* Append standard base64 of S to OUT (no quotes). */
int json_append_base64(struct evbuffer *out, const unsigned char *s, size_t len);

#endif
