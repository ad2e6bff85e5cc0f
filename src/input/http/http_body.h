/*
 * http_body: the body of a POST /v1/events request -> events.
 *
 * http_body_decode() takes the request's Content-Type and Content-Encoding
 * headers and its body bytes, and hands each element of the body to the
 * caller's callbacks as a msgpack map with its index in the request, or as
 * a rejection of that one element. Accepted types: application/json (one
 * object, or an array of objects), application/x-ndjson (one object a
 * line; blank lines and CRLF ends are fine, and so is any other JSON
 * whitespace between values), application/msgpack (one map,
 * or an array of maps); any of them gzip-compressed. JSON goes through
 * yajl's callbacks into msgpack_packer, one event at a time, so the cost
 * is the body plus one event, never a document tree.
 *
 * A problem with the whole body (it does not parse, nests too deep, uses an
 * unsupported type or encoding, inflates past the limit) is a status with
 * a message, and for a body that does not parse the byte offset of the
 * error. It can come after callbacks for earlier elements: the caller keeps
 * what the callbacks produced aside and submits it only once the decode
 * returned HTTP_BODY_OK. Loop thread (any thread is safe: no globals).
 */
#ifndef MI_HTTP_BODY_H
#define MI_HTTP_BODY_H

#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#include "record.h"

/* For the 415 answer and the README. */
#define HTTP_BODY_ACCEPTED \
	"application/json, application/x-ndjson or application/msgpack " \
	"(Content-Encoding: identity or gzip)"

/* JSON containers nested inside one event, its own map included: msgpack-c
 * decodes no deeper (PROTO_MAX_DEPTH). */
#define HTTP_BODY_MAX_DEPTH 32

enum http_body_status {
	HTTP_BODY_OK = 0,
	HTTP_BODY_BAD,          /* does not parse (400); error.offset says where */
	HTTP_BODY_UNSUPPORTED,  /* Content-Type or Content-Encoding not accepted (415) */
	HTTP_BODY_TOO_LARGE,    /* gzip body inflates past the limit (413) */
	HTTP_BODY_NOMEM,        /* out of memory (500) */
	HTTP_BODY_STOPPED,      /* a callback returned -1; its own reason stands */
	HTTP_BODY_STATUS_COUNT  /* number of statuses; not a status */
};

struct http_body_error {
	enum http_body_status status;
	size_t offset;          /* BAD: byte of the (inflated) body where it went wrong */
	char message[256];      /* "does not parse at byte 17 (line 2): ..." */
};

/* One element that is not an event, for the answer's "rejected" list. */
struct http_body_reject {
	uint32_t index;         /* element position in the request, from 0 */
	enum record_reason reason;
	const char *field;      /* top-level key at fault, or "" */
	const char *message;    /* "expected an object, got number" */
	const msgpack_object *value; /* the element as msgpack when it has one
				      * (a number, an array...), else NULL */
};

struct http_body_cb {
	/* Element INDEX is the map MAP (valid until return). 0 goes on, -1 stops. */
	int (*event)(void *arg, uint32_t index, const msgpack_object *map);
	/* Element R->index is rejected (R valid until return). 0 goes on, -1 stops. */
	int (*reject)(void *arg, const struct http_body_reject *r);
	void *arg;
};

/*
 * Decode BODY (LEN bytes) as CONTENT_TYPE ("application/json;
 * charset=utf-8"; NULL when absent) and CONTENT_ENCODING (NULL, "identity"
 * or "gzip"), calling CB for each element in order. No event may take more
 * than MAX_EVENT_BYTES as msgpack (listen.max_event_bytes; a larger one is
 * rejected on its own), and gzip data may inflate to MAX_EVENT_BYTES x
 * PROTO_GZIP_FACTOR, Forward's bound. Returns HTTP_BODY_OK, or a status
 * that ERR (always filled) explains.
 */
enum http_body_status http_body_decode(const char *content_type, const char *content_encoding,
				       const char *body, size_t len, size_t max_event_bytes,
				       const struct http_body_cb *cb, struct http_body_error *err)
	__attribute__((warn_unused_result));

/* The answer's status code for S: 200, 400, 413, 415 or 500. */
int http_body_http_status(enum http_body_status s);

#endif
