/*
 * http_body.c: a request body -> events (see http_body.h): the
 * Content-Type and Content-Encoding checks, gzip (proto_gzip.c, within
 * Forward's bound), and application/msgpack bodies; JSON and NDJSON are in
 * http_body_json.c.
 *
 * A msgpack body is one map or an array of maps. The array's header is
 * read here; its items then go through the same header scanner Forward
 * uses (proto_scan.c) before msgpack-c sees a byte, so an item announcing
 * 2^32 elements in 5 bytes costs nothing, and each item is unpacked on its
 * own into a zone cleared for the next.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <msgpack.h>

#include "http_body_private.h"
#include "json.h"
#include "proto.h"
#include "proto_gzip.h"
#include "proto_scan.h"

enum http_body_type {
	HTTP_BODY_JSON = 0,
	HTTP_BODY_NDJSON,
	HTTP_BODY_MSGPACK,
	HTTP_BODY_TYPE_COUNT /* number of types; not a type */
};

/* Media types we take (the x- and vnd. names are what clients send too). */
static const struct {
	const char *name;
	enum http_body_type type;
} http_body_types[] = {
	{ "application/json", HTTP_BODY_JSON },
	{ "application/x-ndjson", HTTP_BODY_NDJSON },
	{ "application/ndjson", HTTP_BODY_NDJSON },
	{ "application/msgpack", HTTP_BODY_MSGPACK },
	{ "application/x-msgpack", HTTP_BODY_MSGPACK },
	{ "application/vnd.msgpack", HTTP_BODY_MSGPACK },
};

enum http_body_status http_body_fail(struct http_body_error *err, enum http_body_status status,
				     size_t offset, const char *fmt, ...)
{
	va_list ap;

	err->status = status;
	err->offset = offset;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return status;
}

enum http_body_status http_body_bad(struct http_body_error *err, const char *body, size_t len,
				    size_t offset, const char *why)
{
	size_t line = 1;

	if (offset > len)
		offset = len;
	for (const char *p = body; (p = memchr(p, '\n', (size_t)(body + offset - p))); p++)
		line++;
	return http_body_fail(err, HTTP_BODY_BAD, offset, "does not parse at byte %zu (line %zu): %s",
			      offset, line, why);
}

int http_body_reject(const struct http_body_cb *cb, uint32_t index, enum record_reason reason,
		     const char *field, const msgpack_object *value, const char *fmt, ...)
{
	struct http_body_reject r = { .index = index, .reason = reason, .field = field,
				      .value = value };
	char message[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	r.message = message;
	return cb->reject(cb->arg, &r);
}

int http_body_http_status(enum http_body_status s)
{
	static const int codes[HTTP_BODY_STATUS_COUNT] = {
		[HTTP_BODY_OK] = 200, [HTTP_BODY_BAD] = 400, [HTTP_BODY_UNSUPPORTED] = 415,
		[HTTP_BODY_TOO_LARGE] = 413, [HTTP_BODY_NOMEM] = 500, [HTTP_BODY_STOPPED] = 500,
	};

	return (unsigned)s < HTTP_BODY_STATUS_COUNT ? codes[s] : 500;
}

/* ---- headers ---------------------------------------------------------- */

/* LEN bytes at S without the spaces and tabs around them. */
static const char *http_body_trim(const char *s, size_t *len)
{
	while (*len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		(*len)--;
	}
	while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
		(*len)--;
	return s;
}

/* True unless the parameters PARAMS name a charset other than UTF-8. */
static bool http_body_charset_ok(const char *params)
{
	const char *p = strcasestr(params, "charset=");
	size_t n;

	if (!p)
		return true;
	p += strlen("charset=");
	if (*p == '"')
		p++;
	n = strcspn(p, "\"; \t");
	return (n == 5 && strncasecmp(p, "utf-8", 5) == 0) ||
	       (n == 4 && strncasecmp(p, "utf8", 4) == 0) ||
	       (n == 8 && strncasecmp(p, "us-ascii", 8) == 0);
}

/* CONTENT_TYPE ("application/json; charset=utf-8") -> *TYPE; 0 or -1 (ERR filled). */
static int http_body_type_of(const char *content_type, enum http_body_type *type,
			     struct http_body_error *err)
{
	size_t n = content_type ? strcspn(content_type, ";") : 0;
	const char *name = content_type ? http_body_trim(content_type, &n) : "";

	for (size_t i = 0; i < sizeof(http_body_types) / sizeof(http_body_types[0]); i++) {
		if (strlen(http_body_types[i].name) != n ||
		    strncasecmp(http_body_types[i].name, name, n) != 0)
			continue;
		if (!http_body_charset_ok(content_type + strcspn(content_type, ";"))) {
			http_body_fail(err, HTTP_BODY_UNSUPPORTED, 0, "Content-Type \"%.80s\": only "
				       "UTF-8 is accepted; send %s", content_type, HTTP_BODY_ACCEPTED);
			return -1;
		}
		*type = http_body_types[i].type;
		return 0;
	}
	if (!content_type)
		http_body_fail(err, HTTP_BODY_UNSUPPORTED, 0, "no Content-Type; send %s",
			       HTTP_BODY_ACCEPTED);
	else
		http_body_fail(err, HTTP_BODY_UNSUPPORTED, 0, "Content-Type \"%.80s\" is not "
			       "accepted; send %s", content_type, HTTP_BODY_ACCEPTED);
	return -1;
}

/* CONTENT_ENCODING -> *GZIP; 0 or -1 (ERR filled). */
static int http_body_encoding_of(const char *content_encoding, bool *gzip,
				 struct http_body_error *err)
{
	size_t n = content_encoding ? strlen(content_encoding) : 0;
	const char *name = content_encoding ? http_body_trim(content_encoding, &n) : "";

	*gzip = (n == 4 && strncasecmp(name, "gzip", 4) == 0) ||
		(n == 6 && strncasecmp(name, "x-gzip", 6) == 0);
	if (*gzip || n == 0 || (n == 8 && strncasecmp(name, "identity", 8) == 0))
		return 0;
	http_body_fail(err, HTTP_BODY_UNSUPPORTED, 0, "Content-Encoding \"%.80s\" is not accepted; "
		       "send %s", content_encoding, HTTP_BODY_ACCEPTED);
	return -1;
}

/* ---- msgpack ---------------------------------------------------------- */

/* The array header at P (LEN bytes): its size (1, 3 or 5) and *COUNT; 0 if none. */
static size_t http_body_mp_array(const unsigned char *p, size_t len, uint64_t *count)
{
	if (len >= 1 && (p[0] & 0xf0) == 0x90) {
		*count = p[0] & 0x0f;
		return 1;
	}
	if (len >= 3 && p[0] == 0xdc) {
		*count = proto_be(p + 1, 2);
		return 3;
	}
	if (len >= 5 && p[0] == 0xdd) {
		*count = proto_be(p + 1, 4);
		return 5;
	}
	return 0;
}

static bool http_body_mp_is_map(unsigned char lead)
{
	return (lead & 0xf0) == 0x80 || lead == 0xde || lead == 0xdf;
}

/* Hand out item INDEX, the value O of SIZE bytes. 0, or -1 when a callback stops. */
static int http_body_mp_item(const struct http_body_cb *cb, uint32_t index, const msgpack_object *o,
			     size_t size, size_t max_event_bytes)
{
	if (size > max_event_bytes)
		return http_body_reject(cb, index, RECORD_REASON_TOO_LONG, "", NULL,
					"event over listen.max_event_bytes (%zu bytes)",
					max_event_bytes);
	if (o->type != MSGPACK_OBJECT_MAP)
		return http_body_reject(cb, index, RECORD_REASON_NOT_A_MAP, "", o,
					"expected a map, got %s", json_type_name(o));
	return cb->event(cb->arg, index, o);
}

/*
 * The COUNT values at P + START (to LEN), scanned first, then unpacked one
 * at a time into ZONE and handed out.
 */
static enum http_body_status http_body_mp_items(const char *p, size_t len, size_t start,
						uint64_t count, size_t max_event_bytes,
						const struct http_body_cb *cb, msgpack_zone *zone,
						struct http_body_error *err)
{
	struct proto_scan s;
	size_t off = start, prev;
	msgpack_object o;

	memset(&s, 0, sizeof(s));
	s.max_elems = max_event_bytes / PROTO_ELEMS_DIVISOR > 0 ?
		      max_event_bytes / PROTO_ELEMS_DIVISOR : 1;
	(void)proto_scan_feed(&s, (const uint8_t *)p + start, len - start, len - start);
	if (s.error != PROTO_SCAN_OK || !proto_scan_idle(&s))
		return http_body_bad(err, p, len, start + (size_t)(s.error != PROTO_SCAN_OK ?
					  s.head_start : s.value_start), proto_scan_why(&s));
	for (uint64_t i = 0; i < count; i++) {
		prev = off;
		msgpack_zone_clear(zone);
		switch (msgpack_unpack(p, len, &off, zone, &o)) {
		case MSGPACK_UNPACK_SUCCESS:
		case MSGPACK_UNPACK_EXTRA_BYTES:
			break;
		case MSGPACK_UNPACK_NOMEM_ERROR:
			return http_body_fail(err, HTTP_BODY_NOMEM, prev, "out of memory");
		default:
			return http_body_bad(err, p, len, prev, count > 1 ?
					     "the array holds fewer items than it announces" :
					     "undecodable msgpack value");
		}
		if (http_body_mp_item(cb, (uint32_t)i, &o, off - prev, max_event_bytes) < 0)
			return http_body_fail(err, HTTP_BODY_STOPPED, prev,
					      "stopped by the caller at element %" PRIu64, i);
	}
	if (off != len)
		return http_body_bad(err, p, len, off, "bytes after the last item");
	return HTTP_BODY_OK;
}

/* application/msgpack: one map, or an array of maps. */
static enum http_body_status http_body_msgpack(const char *body, size_t len,
					       size_t max_event_bytes,
					       const struct http_body_cb *cb,
					       struct http_body_error *err)
{
	const unsigned char *p = (const unsigned char *)body;
	msgpack_zone zone;
	enum http_body_status st;
	uint64_t count = 1;
	size_t start = 0;

	if (len == 0)
		return http_body_bad(err, body, len, 0, "empty body: expected a map or an array of maps");
	if (!http_body_mp_is_map(p[0]) && !(start = http_body_mp_array(p, len, &count)))
		return http_body_bad(err, body, len, 0, (p[0] == 0xdc || p[0] == 0xdd) ?
				     "truncated array header" : "expected a map or an array of maps");
	if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE))
		return http_body_fail(err, HTTP_BODY_NOMEM, 0, "out of memory");
	st = http_body_mp_items(body, len, start, count, max_event_bytes, cb, &zone, err);
	msgpack_zone_destroy(&zone);
	return st;
}

/* ---- the whole body --------------------------------------------------- */

static enum http_body_status http_body_plain(enum http_body_type type, const char *body,
					     size_t len, size_t max_event_bytes,
					     const struct http_body_cb *cb,
					     struct http_body_error *err)
{
	if (type == HTTP_BODY_MSGPACK)
		return http_body_msgpack(body, len, max_event_bytes, cb, err);
	return http_body_json(body, len, type == HTTP_BODY_NDJSON, max_event_bytes, cb, err);
}

/* Inflate, then decode; a 400's offsets count inflated bytes, and say so. */
static enum http_body_status http_body_gzip(enum http_body_type type, const char *body,
					    size_t len, size_t max_event_bytes,
					    const struct http_body_cb *cb,
					    struct http_body_error *err)
{
	size_t limit = max_event_bytes > SIZE_MAX / PROTO_GZIP_FACTOR - 1 ?
		       SIZE_MAX / PROTO_GZIP_FACTOR - 1 : max_event_bytes * PROTO_GZIP_FACTOR;
	char why[128], *buf = NULL;
	enum http_body_status st;
	size_t n = 0;

	switch (proto_gunzip(body, len, limit, &buf, &n, why, sizeof(why))) {
	case PROTO_GZ_OK:
		break;
	case PROTO_GZ_CORRUPT:
		return http_body_fail(err, HTTP_BODY_BAD, 0, "Content-Encoding gzip: %s", why);
	case PROTO_GZ_TOO_BIG:
		return http_body_fail(err, HTTP_BODY_TOO_LARGE, 0, "gzip body inflates past %zu "
				      "bytes (listen.max_event_bytes x %d)", limit,
				      PROTO_GZIP_FACTOR);
	default:
		return http_body_fail(err, HTTP_BODY_NOMEM, 0, "out of memory inflating the body");
	}
	st = http_body_plain(type, buf, n, max_event_bytes, cb, err);
	free(buf);
	if (st == HTTP_BODY_BAD) {
		size_t used = strlen(err->message);

		snprintf(err->message + used, sizeof(err->message) - used,
			 " (offsets count inflated bytes)");
	}
	return st;
}

enum http_body_status http_body_decode(const char *content_type, const char *content_encoding,
				       const char *body, size_t len, size_t max_event_bytes,
				       const struct http_body_cb *cb, struct http_body_error *err)
{
	enum http_body_type type;
	bool gzip;

	http_body_fail(err, HTTP_BODY_OK, 0, "ok");
	if (http_body_type_of(content_type, &type, err) < 0 ||
	    http_body_encoding_of(content_encoding, &gzip, err) < 0)
		return err->status;
	if (gzip)
		return http_body_gzip(type, body, len, max_event_bytes, cb, err);
	return http_body_plain(type, body, len, max_event_bytes, cb, err);
}
