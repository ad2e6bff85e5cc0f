/*
 * proto_scan.c: the msgpack header scanner proto.c runs ahead of
 * msgpack_unpacker (see proto_scan.h for its guarantee, proto.c for why).
 *
 * Shaped for the loop thread's hot path, where every header of every event
 * passes through here. A 256-entry table, filled before main() from the
 * msgpack format's byte ranges, says what each lead byte announces. While a
 * whole header is in the buffer (nearly always), proto_scan_run applies one
 * header per iteration and jumps over str, bin and ext bodies by their
 * length; only a header cut by the end of a read goes byte by byte through
 * proto_scan_byte. Both apply headers through proto_walk_head, but for the
 * leaves the run applies itself (the unit test holds the two paths, and a
 * plain reference scanner, to the same results on random streams).
 */
#include <stdint.h>
#include <string.h>

#include "proto_scan.h"

#define PROTO_HEAD_MAX 5 /* lead byte and the longest length field (4 bytes) */

/* What a msgpack lead byte announces. */
enum proto_head_kind {
	PROTO_HEAD_LEAF = 0,  /* nothing nested: EXTRA bytes, plus a LENBYTES length of bytes */
	PROTO_HEAD_ARRAY,     /* COUNT (or a LENBYTES count) values */
	PROTO_HEAD_MAP,       /* the same, then twice that many values */
	PROTO_HEAD_BAD,       /* 0xc1: never used */
	PROTO_HEAD_KIND_COUNT /* number of kinds; not a kind */
};

/* One lead byte's header, in the form the hot loop computes with. */
struct proto_head {
	uint8_t kind;         /* enum proto_head_kind */
	uint8_t lenbytes;     /* big-endian length or count bytes after the lead byte: 0, 1, 2, 4 */
	uint8_t shift;        /* 32 - 8 x lenbytes: moves the length field out of 4 bytes read */
	uint8_t extra;        /* LEAF: payload bytes besides the length (fixed payloads, ext type) */
	uint8_t count;        /* fixarray, fixmap: the count held in the lead byte */
	uint8_t pairs;        /* 1 for a map (two values per entry), else 0: a shift */
	uint8_t size;         /* LEAF: bytes of the value besides the length: 1 + lenbytes + extra */
	uint8_t pad;          /* 8 bytes an entry: the table is indexed with a shift */
};

#define PROTO_HEAD(kind, lenbytes, extra) \
	{ kind, lenbytes, 32 - 8 * (lenbytes), extra, 0, (kind) == PROTO_HEAD_MAP, \
	  1 + (lenbytes) + (extra), 0 }

/* Lead bytes 0xc0..0xdf; the rest are fixed-size or carry their size in the byte. */
static const struct proto_head proto_heads_c0[32] = {
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 0), PROTO_HEAD(PROTO_HEAD_BAD, 0, 0),    /* nil, (unused) */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 0), PROTO_HEAD(PROTO_HEAD_LEAF, 0, 0),   /* false, true */
	PROTO_HEAD(PROTO_HEAD_LEAF, 1, 0), PROTO_HEAD(PROTO_HEAD_LEAF, 2, 0),   /* bin 8, bin 16 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 4, 0), PROTO_HEAD(PROTO_HEAD_LEAF, 1, 1),   /* bin 32, ext 8 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 2, 1), PROTO_HEAD(PROTO_HEAD_LEAF, 4, 1),   /* ext 16, ext 32 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 4), PROTO_HEAD(PROTO_HEAD_LEAF, 0, 8),   /* float 32, 64 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 1), PROTO_HEAD(PROTO_HEAD_LEAF, 0, 2),   /* uint 8, 16 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 4), PROTO_HEAD(PROTO_HEAD_LEAF, 0, 8),   /* uint 32, 64 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 1), PROTO_HEAD(PROTO_HEAD_LEAF, 0, 2),   /* int 8, 16 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 4), PROTO_HEAD(PROTO_HEAD_LEAF, 0, 8),   /* int 32, 64 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 2), PROTO_HEAD(PROTO_HEAD_LEAF, 0, 3),   /* fixext 1, 2 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 5), PROTO_HEAD(PROTO_HEAD_LEAF, 0, 9),   /* fixext 4, 8 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 0, 17), PROTO_HEAD(PROTO_HEAD_LEAF, 1, 0),  /* fixext 16, str 8 */
	PROTO_HEAD(PROTO_HEAD_LEAF, 2, 0), PROTO_HEAD(PROTO_HEAD_LEAF, 4, 0),   /* str 16, str 32 */
	PROTO_HEAD(PROTO_HEAD_ARRAY, 2, 0), PROTO_HEAD(PROTO_HEAD_ARRAY, 4, 0), /* array 16, 32 */
	PROTO_HEAD(PROTO_HEAD_MAP, 2, 0), PROTO_HEAD(PROTO_HEAD_MAP, 4, 0),     /* map 16, 32 */
};

/* Every lead byte's header; filled by proto_heads_init. */
static struct proto_head proto_heads[256];

static struct proto_head proto_head_of(unsigned b)
{
	struct proto_head h = PROTO_HEAD(PROTO_HEAD_LEAF, 0, 0); /* positive, negative fixint */

	if (b >= 0x80 && b <= 0x8f) {
		h = (struct proto_head)PROTO_HEAD(PROTO_HEAD_MAP, 0, 0);
		h.count = (uint8_t)(b & 0x0f);
	} else if (b >= 0x90 && b <= 0x9f) {
		h = (struct proto_head)PROTO_HEAD(PROTO_HEAD_ARRAY, 0, 0);
		h.count = (uint8_t)(b & 0x0f);
	} else if (b >= 0xa0 && b <= 0xbf) { /* fixstr */
		h.extra = (uint8_t)(b & 0x1f);
		h.size = (uint8_t)(1 + h.extra);
	} else if (b >= 0xc0 && b <= 0xdf) {
		h = proto_heads_c0[b - 0xc0];
	}
	return h;
}

/* Fill proto_heads[] before main() runs, so the table is derived from the
 * ranges above and the hot path needs no once-check. */
__attribute__((constructor)) static void proto_heads_init(void)
{
	for (unsigned b = 0; b < 256; b++)
		proto_heads[b] = proto_head_of(b);
}

/* The 4 bytes at P, big-endian (compilers make this one load and a swap). */
static inline uint32_t proto_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * The fields a header changes, held in locals for a run of headers and
 * stored back once: kept in *s, every store into s->open[] would make the
 * compiler reload them at each header.
 */
struct proto_walk {
	uint64_t items;          /* as struct proto_scan */
	uint64_t skip;
	uint64_t value_start;
	uint64_t elems;
	size_t depth;            /* unsigned and pointer-wide: no sign extension per index */
};

/* A lead byte at stream offset AT: start a top-level value if none is open. */
static inline void proto_walk_lead(struct proto_walk *w, uint64_t at)
{
	if (w->items == 0) {
		w->items = 1;
		w->value_start = at;
		w->elems = 0;
	}
}

/* The top container has all its values: close it and every parent that
 * thereby has all of its own. */
static inline void proto_walk_pop(const struct proto_scan *s, struct proto_walk *w)
{
	do
		w->depth--;
	while (w->depth > 0 && s->open[w->depth - 1] == 0);
}

/*
 * Apply the header whose lead byte is at H[0], at stream offset AT; H[1..4]
 * are readable (the length field and whatever follows, or padding). A top
 * level value is already open (w->items > 0). Counts it as one value of its
 * parent, then opens it (container) or sets the bytes to jump over (leaf).
 * Returns the header's length, or -1 with s->error and s->head_start set.
 */
static inline __attribute__((always_inline))
int proto_walk_head(struct proto_scan *s, struct proto_walk *w, const uint8_t *h, uint64_t at,
		    uint64_t limit)
{
	struct proto_head e = proto_heads[h[0]];
	/* Shifting the bytes past the length field out gives it without a
	 * branch; a shift by 32 of the 64-bit value leaves 0 when there is none. */
	uint64_t n = ((uint64_t)proto_be32(h + 1) >> e.shift) + e.count;
	uint64_t least;

	if (e.kind == PROTO_HEAD_BAD) {
		s->error = PROTO_SCAN_NOT_MSGPACK;
		goto fail;
	}
	w->items--;
	if (w->depth > 0)
		s->open[w->depth - 1]--;
	if (e.kind == PROTO_HEAD_LEAF) {
		w->skip = n + e.extra; /* n is 0 for fixed-size leaves */
	} else {
		/* Checked before the parent can close, as msgpack-c pushes first. */
		if (w->depth >= PROTO_MAX_DEPTH) {
			s->error = PROTO_SCAN_TOO_DEEP;
			goto fail;
		}
		n <<= e.pairs; /* n < 2^32: cannot overflow */
		w->elems += n;
		w->items += n;
		if (n > 0)
			s->open[w->depth++] = n;
	}
	if (w->depth > 0 && s->open[w->depth - 1] == 0)
		proto_walk_pop(s, w);
	/* Every value still owed takes at least one byte. */
	least = at + 1 + e.lenbytes - w->value_start + w->skip + w->items;
	if (least <= limit && (s->max_elems == 0 || w->elems <= s->max_elems))
		return 1 + e.lenbytes;
	if (least <= limit) {
		s->error = PROTO_SCAN_TOO_MANY;
		s->error_size = w->elems;
		goto fail;
	}
	s->error = PROTO_SCAN_TOO_BIG;
	s->error_size = least;
	s->error_exact = w->items == 0;
fail:
	s->head_start = at;
	return -1;
}

static inline struct proto_walk proto_walk_load(const struct proto_scan *s)
{
	return (struct proto_walk){ s->items, s->skip, s->value_start, s->elems,
				    (size_t)s->depth };
}

static inline void proto_walk_store(struct proto_scan *s, const struct proto_walk *w)
{
	s->items = w->items;
	s->skip = w->skip;
	s->value_start = w->value_start;
	s->elems = w->elems;
	s->depth = (int)w->depth;
}

/* Take one byte of a header that the end of a read cut (or that starts in
 * the last bytes of one); 0, or -1 with s->error set. */
static int proto_scan_byte(struct proto_scan *s, uint8_t b, uint64_t limit)
{
	struct proto_walk w = proto_walk_load(s);
	int rc = 0;

	if (s->head_len == 0) {
		proto_walk_lead(&w, s->offset);
		s->head_start = s->offset;
		s->head_need = (uint8_t)(1 + proto_heads[b].lenbytes);
		memset(s->head, 0, sizeof(s->head)); /* the unused tail is read, then shifted out */
	}
	s->head[s->head_len++] = b;
	s->offset++;
	if (s->head_len == s->head_need) {
		s->head_len = 0;
		rc = proto_walk_head(s, &w, s->head, s->head_start, limit) < 0 ? -1 : 0;
	}
	proto_walk_store(s, &w);
	return rc;
}

/*
 * LIMIT for the value that started at stream offset START, moved into the
 * index space of a buffer starting at stream offset AT: a header ending
 * the value at index END with ITEMS owed is too big exactly when
 * END + ITEMS > the result (at + end - start + items > limit, with one
 * addition a header instead of three). The value's bytes before AT are
 * within LIMIT, or the scan would have stopped; the sum saturates.
 */
static inline uint64_t proto_budget(uint64_t limit, uint64_t start, uint64_t at)
{
	if (start < at)
		return at - start <= limit ? limit - (at - start) : 0;
	return limit + (start - at) >= limit ? limit + (start - at) : UINT64_MAX;
}

/*
 * Whole headers from P[I] on (no header or payload in progress), while one
 * fits in the N - I bytes left, each body jumped over. Returns the new I:
 * with fewer than PROTO_HEAD_MAX bytes left, inside a body that goes on
 * past N, or at an error (s->error set, s->head_start at its lead byte).
 * Leaves, nearly every header, are applied here; containers and bad bytes
 * by proto_walk_head, which must (and the unit test checks it does) agree.
 */
static size_t proto_scan_run(struct proto_scan *s, const uint8_t *p, size_t i, size_t n,
			     uint64_t limit)
{
	uint64_t at = s->offset - i; /* stream offset of P[0] */
	struct proto_walk w = proto_walk_load(s);
	size_t last = n - PROTO_HEAD_MAX; /* the last index a whole header surely fits at */
	uint64_t budget = proto_budget(limit, w.value_start, at);
	uint64_t end;                /* where the current value ends, as an index into P */
	int hl;

	while (i <= last) {
		struct proto_head e = proto_heads[p[i]];

		if (w.items == 0) {
			proto_walk_lead(&w, at + i);
			budget = proto_budget(limit, w.value_start, at);
		}
		if (e.kind != PROTO_HEAD_LEAF) {
			if ((hl = proto_walk_head(s, &w, p + i, at + i, limit)) < 0)
				break;
			end = i + (size_t)hl;
		} else {
			/* As proto_walk_head for a leaf: the length field (when
			 * there is one) shifted out of the 4 bytes after the lead. */
			end = i + e.size + ((uint64_t)proto_be32(p + i + 1) >> e.shift);
			w.items--;
			if (w.depth > 0 && --s->open[w.depth - 1] == 0)
				proto_walk_pop(s, &w);
			if (end + w.items > budget) {
				s->error = PROTO_SCAN_TOO_BIG;
				s->error_size = at + end - w.value_start + w.items;
				s->error_exact = w.items == 0;
				s->head_start = at + i;
				break;
			}
		}
		if (end > n) {
			w.skip = end - n;
			i = n;
			break;
		}
		i = (size_t)end;
	}
	proto_walk_store(s, &w);
	s->offset = at + i;
	return i;
}

size_t proto_scan_feed(struct proto_scan *s, const uint8_t *p, size_t n, uint64_t limit)
{
	uint64_t base = s->offset;
	size_t i = 0;

	while (i < n && s->error == PROTO_SCAN_OK) {
		if (s->skip > 0) {
			size_t take = s->skip < n - i ? (size_t)s->skip : n - i;

			s->skip -= take;
			s->offset += take;
			i += take;
		} else if (s->head_len == 0 && n - i >= PROTO_HEAD_MAX) {
			i = proto_scan_run(s, p, i, n, limit);
		} else if (proto_scan_byte(s, p[i], limit) == 0) {
			i++;
		}
	}
	if (s->error == PROTO_SCAN_OK)
		return n;
	return s->head_start > base ? (size_t)(s->head_start - base) : 0;
}

const char *proto_scan_why(const struct proto_scan *s)
{
	switch (s->error) {
	case PROTO_SCAN_NOT_MSGPACK:
		return "not msgpack";
	case PROTO_SCAN_TOO_DEEP:
		return "nested deeper than 32 levels";
	case PROTO_SCAN_TOO_MANY:
		return "a value announces more elements than listen.max_event_bytes / 4";
	default:
		return "truncated msgpack value";
	}
}
