/*
 * proto_gzip.c: inflating CompressedPackedForward data with zlib, never
 * holding more than the limit the caller gives (see proto_gzip.h).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "proto_gzip.h"

/* Make room in *BUF (capacity *CAP, never past LIMIT + 1). */
static enum proto_gz proto_gz_grow(char **buf, size_t *cap, size_t limit)
{
	size_t ncap = *cap * 2;
	char *nbuf;

	if (*cap > limit)
		return PROTO_GZ_TOO_BIG;
	if (ncap > limit + 1 || ncap < *cap)
		ncap = limit + 1;
	nbuf = realloc(*buf, ncap);
	if (!nbuf)
		return PROTO_GZ_NOMEM;
	*buf = nbuf;
	*cap = ncap;
	return PROTO_GZ_OK;
}

/* Run inflate over all input of ZS into *BUF (capacity *CAP), members one after another. */
static enum proto_gz proto_gz_loop(z_stream *zs, char **buf, size_t *cap, size_t *used,
				   size_t limit, char *why, size_t len)
{
	enum proto_gz rc;
	int zrc;

	for (;;) {
		if (*used == *cap && (rc = proto_gz_grow(buf, cap, limit)) != PROTO_GZ_OK)
			return rc;
		zs->next_out = (Bytef *)*buf + *used;
		zs->avail_out = *cap - *used > UINT_MAX ? UINT_MAX : (uInt)(*cap - *used);
		zrc = inflate(zs, Z_NO_FLUSH);
		*used = (size_t)((char *)zs->next_out - *buf);
		if (zrc == Z_STREAM_END && zs->avail_in == 0)
			return *used > limit ? PROTO_GZ_TOO_BIG : PROTO_GZ_OK;
		if (zrc == Z_STREAM_END && inflateReset(zs) == Z_OK)
			continue; /* another gzip member follows */
		if (zrc == Z_OK)
			continue;
		if (zrc == Z_MEM_ERROR)
			return PROTO_GZ_NOMEM;
		snprintf(why, len, "%s", zrc == Z_BUF_ERROR ? "truncated gzip data" :
			 zs->msg ? zs->msg : "corrupt gzip data");
		return PROTO_GZ_CORRUPT;
	}
}

/*
 * Inflate the gzip data SRC (one or more members) into a new buffer *OUT of
 * *OUTLEN bytes (caller frees), never holding more than LIMIT + 1 bytes.
 */
enum proto_gz proto_gunzip(const char *src, size_t srclen, size_t limit, char **out,
				  size_t *outlen, char *why, size_t whylen)
{
	z_stream zs;
	size_t cap = srclen < 4096 ? 16384 : srclen * 4;
	enum proto_gz rc;

	memset(&zs, 0, sizeof(zs));
	if (cap > limit + 1)
		cap = limit + 1;
	*out = malloc(cap);
	if (!*out || inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
		free(*out);
		*out = NULL;
		return PROTO_GZ_NOMEM;
	}
	zs.next_in = (Bytef *)src;
	zs.avail_in = (uInt)srclen;
	*outlen = 0;
	rc = proto_gz_loop(&zs, out, &cap, outlen, limit, why, whylen);
	inflateEnd(&zs);
	if (rc != PROTO_GZ_OK) {
		free(*out);
		*out = NULL;
	}
	return rc;
}
