/*
 * spool_frame.c: spooled batches <-> bytes (the format is in spool_frame.h).
 *
 * The encoding stores a record's present slots as length-prefixed bytes, so
 * decoding can rebuild the single allocation record_from_map made: header,
 * then every present value NUL-terminated in ascending slot order. Lengths
 * are varints because most values are short (ids, names, numbers). The
 * decoder trusts nothing: every length is checked against what is left, so a
 * frame that passed its CRC but was written by a buggy or foreign program is
 * refused rather than read out of bounds.
 */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "record.h"
#include "spool_frame.h"
#include "table.h"

#define SPOOL_FRAME_MAGIC 0x3146494dU     /* "MIF1" read as a little-endian u32 */
#define SPOOL_FRAME_REC_FIXED (8 + 4 + 8 + 1) /* recv_ns, id_hash, present bits, table */

_Static_assert(RECORD_SLOT_COUNT <= 64, "one bit per slot in a u64");

void spool_frame_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void spool_frame_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t spool_frame_get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

uint64_t spool_frame_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static size_t spool_frame_varint_size(uint32_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *spool_frame_put_varint(uint8_t *p, uint32_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Read a varint of at most 32 bits from [*P, END); -1 when truncated or too long. */
static int spool_frame_get_varint(const uint8_t **p, const uint8_t *end, uint32_t *out)
{
	uint64_t v = 0;

	for (int shift = 0; shift < 35; shift += 7) {
		if (*p >= end)
			return -1;
		v |= (uint64_t)(**p & 0x7f) << shift;
		if (!(*(*p)++ & 0x80)) {
			if (v > UINT32_MAX)
				return -1;
			*out = (uint32_t)v;
			return 0;
		}
	}
	return -1;
}

static size_t spool_frame_record_size(const struct record *r)
{
	size_t n = SPOOL_FRAME_REC_FIXED;

	for (int i = 0; i < RECORD_SLOT_COUNT; i++)
		if (r->len[i] != RECORD_ABSENT)
			n += spool_frame_varint_size(r->len[i]) + r->len[i];
	return n;
}

size_t spool_frame_size(struct record *const *recs, size_t n)
{
	size_t total = SPOOL_FRAME_HEADER + 4;

	for (size_t i = 0; i < n; i++)
		total += spool_frame_record_size(recs[i]);
	return total;
}

static uint8_t *spool_frame_put_record(uint8_t *p, const struct record *r)
{
	uint64_t present = 0;

	for (int i = 0; i < RECORD_SLOT_COUNT; i++)
		if (r->len[i] != RECORD_ABSENT)
			present |= UINT64_C(1) << i;
	spool_frame_put64(p, r->recv_ns);
	spool_frame_put32(p + 8, r->id_hash);
	spool_frame_put64(p + 12, present);
	p[20] = (uint8_t)r->table;
	p += SPOOL_FRAME_REC_FIXED;
	for (int i = 0; i < RECORD_SLOT_COUNT; i++) {
		if (r->len[i] == RECORD_ABSENT)
			continue;
		p = spool_frame_put_varint(p, r->len[i]);
		memcpy(p, r->data + r->off[i], r->len[i]);
		p += r->len[i];
	}
	return p;
}

static uint32_t spool_frame_crc(const uint8_t *frame, uint32_t len)
{
	uLong crc = crc32(0L, Z_NULL, 0);

	crc = crc32(crc, frame + 4, 4);
	return (uint32_t)crc32(crc, frame + SPOOL_FRAME_HEADER, len);
}

void spool_frame_encode(uint8_t *out, struct record *const *recs, size_t n)
{
	uint8_t *p = out + SPOOL_FRAME_HEADER;
	uint32_t len;

	spool_frame_put32(p, (uint32_t)n);
	p += 4;
	for (size_t i = 0; i < n; i++)
		p = spool_frame_put_record(p, recs[i]);
	len = (uint32_t)(p - out - SPOOL_FRAME_HEADER);
	spool_frame_put32(out, SPOOL_FRAME_MAGIC);
	spool_frame_put32(out + 4, len);
	spool_frame_put32(out + 8, spool_frame_crc(out, len));
}

int64_t spool_frame_length(const uint8_t *hdr)
{
	uint32_t len = spool_frame_get32(hdr + 4);

	if (spool_frame_get32(hdr) != SPOOL_FRAME_MAGIC || len > SPOOL_FRAME_MAX || len < 4)
		return -1;
	return len;
}

bool spool_frame_crc_ok(const uint8_t *frame, uint32_t len)
{
	return spool_frame_get32(frame + 8) == spool_frame_crc(frame, len);
}

/* Check the slot lengths of one record in [P, END) and total its data size. */
static int spool_frame_scan_record(const uint8_t *p, const uint8_t *end, uint64_t present,
				   size_t *data)
{
	*data = 0;
	for (uint64_t m = present; m; m &= m - 1) {
		uint32_t len;

		if (spool_frame_get_varint(&p, end, &len) < 0 || (size_t)(end - p) < len)
			return -1;
		p += len;
		*data += (size_t)len + 1;
	}
	return 0;
}

/* The slots no record of table T has: past its columns, before the tag. */
static uint64_t spool_frame_foreign_slots(const struct table *t)
{
	uint64_t ours = (UINT64_C(1) << t->ncols) - 1;

	ours |= UINT64_C(1) << RECORD_SLOT_TAG | UINT64_C(1) << RECORD_SLOT_PEER;
	return ~ours;
}

/* Decode one record at *P; advances *P. NULL when malformed, or out of
 * memory (then *NOMEM is set). */
static struct record *spool_frame_get_record(const uint8_t **p, const uint8_t *end, bool *nomem)
{
	uint64_t present;
	size_t data, pos = 0, total;
	struct record *r;
	uint8_t table;

	if ((size_t)(end - *p) < SPOOL_FRAME_REC_FIXED)
		return NULL;
	present = spool_frame_get64(*p + 12);
	table = (*p)[20];
	if (table >= TABLE_COUNT || (present & spool_frame_foreign_slots(table_list[table])) ||
	    spool_frame_scan_record(*p + SPOOL_FRAME_REC_FIXED, end, present, &data) < 0)
		return NULL;
	total = RECORD_HEADER_SIZE + data;
	if (total > UINT32_MAX)
		return NULL;
	if (!(r = malloc(total))) {
		*nomem = true;
		return NULL;
	}
	r->ack = NULL;
	r->recv_ns = spool_frame_get64(*p);
	r->id_hash = spool_frame_get32(*p + 8);
	r->size = (uint32_t)total;
	r->table = table;
	memset(r->off, 0, sizeof(r->off));
	memset(r->len, 0xff, sizeof(r->len)); /* RECORD_ABSENT */
	*p += SPOOL_FRAME_REC_FIXED;
	for (uint64_t m = present; m; m &= m - 1) {
		int i = __builtin_ctzll(m);
		uint32_t len = 0;

		(void)spool_frame_get_varint(p, end, &len); /* checked by the scan */
		r->off[i] = (uint32_t)pos;
		r->len[i] = len;
		memcpy(r->data + pos, *p, len);
		r->data[pos + len] = '\0';
		pos += (size_t)len + 1;
		*p += len;
	}
	return r;
}

/* Make room for WANT record pointers in *RECS. */
static int spool_frame_reserve(struct record ***recs, size_t *cap, size_t want)
{
	struct record **grown;
	size_t ncap = *cap ? *cap : 64;

	if (want <= *cap)
		return 0;
	while (ncap < want)
		ncap *= 2;
	grown = realloc(*recs, ncap * sizeof(*grown));
	if (!grown)
		return -1;
	*recs = grown;
	*cap = ncap;
	return 0;
}

int64_t spool_frame_decode(const uint8_t *p, size_t len, struct record ***recs, size_t *cap)
{
	const uint8_t *end = p + len;
	bool nomem = false;
	uint32_t count;
	size_t i;

	if (len < 4)
		return -1;
	count = spool_frame_get32(p);
	p += 4;
	/* Every record takes at least its fixed part: a bigger count is a lie. */
	if (count > (len - 4) / SPOOL_FRAME_REC_FIXED)
		return -1;
	if (spool_frame_reserve(recs, cap, count) < 0)
		return SPOOL_FRAME_NOMEM;
	for (i = 0; i < count; i++) {
		(*recs)[i] = spool_frame_get_record(&p, end, &nomem);
		if (!(*recs)[i])
			break;
	}
	if (i == count && p == end)
		return count;
	while (i > 0)
		record_free((*recs)[--i]);
	return nomem ? SPOOL_FRAME_NOMEM : -1;
}
