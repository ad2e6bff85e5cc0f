/*
 * fuzz_http_body.c: libFuzzer target for HTTP request bodies as a client
 * sends them: http_body_decode (content types, gzip, yajl and the msgpack
 * scanner) and, for every event it hands out, record_from_map, all real.
 *
 * The first input byte is a control byte: bits 0-1 pick the Content-Type
 * (JSON, NDJSON, msgpack, JSON), bit 2 gzips the rest before decoding it
 * (so the inflate path sees real gzip; bit 3 sends the rest as gzip
 * unchanged instead), bits 4-5 pick listen.max_event_bytes, bits 6-7 make
 * the event callback stop at that many events (0: never). Every event
 * must be a map with a rising index, and every call must fill the error;
 * anything else aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zlib.h>

#include "../../src/input/http/http_body.h"
#include "log.h"
#include "record.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_seen {
	int64_t last;   /* index of the last element seen, -1 before */
	int events;     /* events seen */
	int stop_at;    /* the event callback returns -1 at this many; 0: never */
};

static void fuzz_die(const char *what)
{
	fprintf(stderr, "fuzz_http_body: %s\n", what);
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_LEVEL_ERROR);
	return 0;
}

static void fuzz_next(struct fuzz_seen *s, uint32_t index)
{
	if ((int64_t)index <= s->last)
		fuzz_die("element index did not rise");
	s->last = index;
}

static int fuzz_event(void *arg, uint32_t index, const msgpack_object *map)
{
	struct record_ctx ctx = { .peer = "tcp:fuzz", .recv_ns = 1 };
	struct record_error err;
	struct record *rec = NULL;
	struct fuzz_seen *s = arg;

	fuzz_next(s, index);
	if (map->type != MSGPACK_OBJECT_MAP)
		fuzz_die("an event that is not a map");
	if (record_from_map(map, &ctx, &rec, &err) == 0)
		record_free(rec);
	s->events++;
	return s->stop_at && s->events >= s->stop_at ? -1 : 0;
}

static int fuzz_reject(void *arg, const struct http_body_reject *r)
{
	fuzz_next(arg, r->index);
	if (!r->message[0] || !r->field)
		fuzz_die("a rejection without a message");
	return 0;
}

/* gzip of P/N into a new buffer, or NULL. */
static char *fuzz_gzip(const uint8_t *p, size_t n, size_t *outlen)
{
	z_stream zs;
	size_t cap = n + n / 100 + 1024;
	char *out = malloc(cap);

	memset(&zs, 0, sizeof(zs));
	if (!out || deflateInit2(&zs, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		fuzz_die("deflateInit2 failed");
	zs.next_in = (Bytef *)p;
	zs.avail_in = (uInt)n;
	zs.next_out = (Bytef *)out;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		fuzz_die("deflate failed");
	*outlen = zs.total_out;
	deflateEnd(&zs);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *types[4] = { "application/json", "application/x-ndjson",
					"application/msgpack", "application/json; charset=utf-8" };
	static const size_t max_bytes[4] = { 64, 512, 4096, 1 << 20 };
	struct fuzz_seen seen = { .last = -1 };
	struct http_body_cb cb = { fuzz_event, fuzz_reject, &seen };
	struct http_body_error err = { .status = HTTP_BODY_STATUS_COUNT };
	const char *body = (const char *)data + 1, *encoding = NULL;
	char *zipped = NULL;
	size_t len = size - 1;
	enum http_body_status st;
	uint8_t ctl;

	if (size < 1)
		return 0;
	ctl = data[0];
	seen.stop_at = ctl >> 6;
	if (ctl & 4) {
		zipped = fuzz_gzip(data + 1, size - 1, &len);
		body = zipped;
	}
	if (ctl & 0xc)
		encoding = "gzip";
	st = http_body_decode(types[ctl & 3], encoding, body, len, max_bytes[(ctl >> 4) & 3], &cb,
			      &err);
	if (err.status != st || !err.message[0] || http_body_http_status(st) < 200)
		fuzz_die("the error does not match the status");
	if ((st == HTTP_BODY_STOPPED) != (seen.stop_at && seen.events == seen.stop_at))
		fuzz_die("a stop that the callback did not ask for, or one not reported");
	if (st == HTTP_BODY_BAD && err.offset > (encoding ? SIZE_MAX : len))
		fuzz_die("an offset past the body");
	free(zipped);
	return 0;
}
