/*
 * http_body_private.h: what http_body.c (types, gzip, msgpack bodies) and
 * http_body_json.c (JSON and NDJSON through yajl) share. Not for other
 * modules: they use http_body.h.
 */
#ifndef MI_HTTP_BODY_PRIVATE_H
#define MI_HTTP_BODY_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>

#include "http_body.h"

/* Fill ERR with STATUS, OFFSET and a message; returns STATUS. */
enum http_body_status http_body_fail(struct http_body_error *err, enum http_body_status status,
				     size_t offset, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* "does not parse at byte N (line L): WHY" for BODY, into ERR; returns HTTP_BODY_BAD. */
enum http_body_status http_body_bad(struct http_body_error *err, const char *body, size_t len,
				    size_t offset, const char *why);

/* Report element INDEX as rejected through CB; 0, or -1 when the callback stops. */
int http_body_reject(const struct http_body_cb *cb, uint32_t index, enum record_reason reason,
		     const char *field, const msgpack_object *value, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

/* JSON (NDJSON when NDJSON: a stream of values, one element each). */
enum http_body_status http_body_json(const char *body, size_t len, bool ndjson,
				     size_t max_event_bytes, const struct http_body_cb *cb,
				     struct http_body_error *err);

#endif
