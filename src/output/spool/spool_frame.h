/*
 * spool_frame: the on-disk encoding of spooled batches (spool_frame.c).
 *
 * A frame is one batch (or part of a large one):
 *
 *   magic "MIF1" | u32 payload length | u32 CRC-32 of length and payload | payload
 *
 * and the payload is a u32 record count followed by each record as
 * u64 recv_ns | u32 id_hash | u64 bit set of present slots | u8 table (its
 * index in table_list) | for each present slot, ascending: varint length,
 * bytes. Slot numbers are the table's column positions, so the segment
 * header records the tables' fingerprint (spool_stream.c). Integers are little-endian. Decoding
 * rebuilds a struct record byte for byte as record_from_map built it (same
 * slot order, offsets, size), with ack NULL: acks are sent once the frame is
 * fsync'ed, so they are never needed again.
 *
 * Pure functions: no I/O, no locks, any thread.
 */
#ifndef MI_SPOOL_FRAME_H
#define MI_SPOOL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct record;

#define SPOOL_FRAME_HEADER 12          /* magic, length, CRC */
#define SPOOL_FRAME_MAX (1u << 30)     /* larger length fields are corruption */

/* Bytes the frame for RECS[0..N) takes, header included. */
size_t spool_frame_size(struct record *const *recs, size_t n);

/* Encode RECS[0..N) as one frame into OUT (spool_frame_size bytes). */
void spool_frame_encode(uint8_t *out, struct record *const *recs, size_t n);

/* Payload length from the header at HDR, or -1 when the magic is wrong or
 * the length is beyond SPOOL_FRAME_MAX. */
int64_t spool_frame_length(const uint8_t *hdr);

/* True when the CRC in FRAME's header matches its LEN payload bytes. */
bool spool_frame_crc_ok(const uint8_t *frame, uint32_t len);

/*
 * Decode the LEN payload bytes at P into new records, stored in
 * (*RECS)[0..count) (the array is grown with realloc; *CAP is its capacity).
 * Returns the count, -1 when the payload is malformed, or
 * SPOOL_FRAME_NOMEM when memory ran out (the frame may be fine: try again
 * later, never skip it). Then no record is left allocated; the array itself
 * stays the caller's.
 */
#define SPOOL_FRAME_NOMEM (-2)
int64_t spool_frame_decode(const uint8_t *p, size_t len, struct record ***recs, size_t *cap);

/* Little-endian helpers shared with the segment code. */
void spool_frame_put32(uint8_t *p, uint32_t v);
void spool_frame_put64(uint8_t *p, uint64_t v);
uint32_t spool_frame_get32(const uint8_t *p);
uint64_t spool_frame_get64(const uint8_t *p);

#endif
