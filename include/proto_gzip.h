/*
 * proto_gzip.h: inflating gzip data within a bound (proto_gzip.c): Forward's
 * CompressedPackedForward entries and HTTP bodies sent with
 * Content-Encoding: gzip.
 */
#ifndef MI_PROTO_GZIP_H
#define MI_PROTO_GZIP_H

#include <stddef.h>

/* Inflated bytes allowed per listen.max_event_bytes, for every gzip input. */
#define PROTO_GZIP_FACTOR 16

enum proto_gz {
	PROTO_GZ_OK = 0,
	PROTO_GZ_CORRUPT,  /* not gzip, or truncated */
	PROTO_GZ_TOO_BIG,  /* inflates past the limit */
	PROTO_GZ_NOMEM,
	PROTO_GZ_COUNT     /* number of outcomes; not an outcome */
};

/*
 * Inflate the gzip data SRC (one or more members) into a new buffer *OUT of
 * *OUTLEN bytes (caller frees), never holding more than LIMIT + 1 bytes.
 * On PROTO_GZ_CORRUPT, WHY says what was wrong.
 */
enum proto_gz proto_gunzip(const char *src, size_t srclen, size_t limit, char **out,
			   size_t *outlen, char *why, size_t whylen);

#endif
