/*
 * proto_scan.h: the msgpack header scanner (proto_scan.c), run ahead of
 * msgpack_unpacker by proto.c (over a connection's stream and over
 * PackedForward entries) and by http_body.c (over application/msgpack
 * bodies).
 *
 * The scanner knows only msgpack's headers: where each value ends, how deep
 * it nests and how many bytes it must at least take. It jumps over str, bin
 * and ext bodies by their length. Its guarantee: no header announcing more
 * than the limit (and no nesting deeper than msgpack-c decodes, and, with
 * max_elems, no value announcing more elements) is among the bytes it lets
 * a decoder see. Elements matter as much as bytes: msgpack-c allocates 24
 * bytes for each announced element (48 a map pair) when it reads the count.
 */
#ifndef MI_PROTO_SCAN_H
#define MI_PROTO_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_MAX_DEPTH 32 /* msgpack-c's MSGPACK_EMBED_STACK_SIZE */

enum proto_scan_error {
	PROTO_SCAN_OK = 0,
	PROTO_SCAN_NOT_MSGPACK,  /* a byte no msgpack value starts with */
	PROTO_SCAN_TOO_BIG,      /* the value takes more than the limit */
	PROTO_SCAN_TOO_DEEP,     /* containers nested deeper than msgpack-c decodes */
	PROTO_SCAN_TOO_MANY,     /* the value announces more than max_elems elements */
	PROTO_SCAN_ERROR_COUNT   /* number of errors; not an error */
};

/* Header-level walk over a byte stream, resumable at any byte. Zeroed
 * (memset or calloc) it is at the start of a stream. */
struct proto_scan {
	uint64_t offset;         /* bytes scanned so far */
	uint64_t value_start;    /* offset of the current top-level value */
	uint64_t head_start;     /* offset of a cut header's lead byte, or of the one in error */
	uint64_t items;          /* values the current top-level value still owes; 0 between */
	uint64_t skip;           /* payload bytes still to pass over */
	uint64_t open[PROTO_MAX_DEPTH]; /* values each open container still owes */
	int depth;               /* open containers */
	uint8_t head[5];         /* lead byte and length field of a cut header, zero-padded */
	uint8_t head_len;
	uint8_t head_need;
	uint64_t elems;          /* elements the current top-level value announced so far
				  * (a map pair counts two) */
	uint64_t max_elems;      /* set by the caller: most elems per value; 0: no limit */
	enum proto_scan_error error;
	uint64_t error_size;     /* TOO_BIG: the value's size, exact or a lower bound;
				  * TOO_MANY: the elements announced */
	bool error_exact;        /* TOO_BIG: error_size is the whole value */
};

/*
 * Scan the next N bytes P of the stream, no value taking more than LIMIT
 * bytes. Returns how many of them a decoder may see: all N, or on an error
 * (s->error set, scanning stops for good) the bytes before the offending
 * header's lead byte. Any thread; touches only S.
 */
size_t proto_scan_feed(struct proto_scan *s, const uint8_t *p, size_t n, uint64_t limit);

/* Why S stopped, in words for a dead-letter reason or an HTTP answer
 * ("not msgpack", "nested deeper than 32 levels", ...). */
const char *proto_scan_why(const struct proto_scan *s);

/* True between top-level values. */
static inline bool proto_scan_idle(const struct proto_scan *s)
{
	return s->items == 0 && s->skip == 0 && s->head_len == 0;
}

/* The N (0..8) bytes at P as a big-endian unsigned number. */
static inline uint64_t proto_be(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

#endif
