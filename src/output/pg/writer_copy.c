/*
 * writer_copy.c: a batch as binary COPY data, streamed to PostgreSQL while
 * it is being encoded.
 *
 * DESIGN
 * ------
 * Binary COPY rather than text: the server then parses no delimiters,
 * escapes, integers or timestamps (its timestamp input is the costliest part
 * of a text COPY row), and the daemon escapes nothing — a text or JSON value
 * is one length word and one memcpy. PostgreSQL's CPU is the bottleneck of
 * the whole pipeline, so both ends gain.
 *
 * Rows go into one flat buffer of WRITER_COPY_CHUNK bytes that is handed to
 * PQputCopyData whenever it cannot take the next row, so the server parses
 * the first rows of a batch while the writer still encodes the last ones,
 * and libpq sees a few large calls instead of one per field. A row is
 * encoded with a plain pointer once the buffer has room for its worst case;
 * a row larger than the whole buffer takes the slow path, which flushes as
 * it goes.
 *
 * record.c stores values as text in PostgreSQL's input syntax; ints and
 * timestamps are converted here. One that is not in the form record.c
 * writes (never expected) is sent one byte too long, which the server
 * refuses as "incorrect binary data format" (22P03): a row error, so the
 * row is isolated and dead-lettered like any refused row.
 *
 * A failing PQputCopyData (the connection is gone, or the server stopped
 * reading past the statement's deadline) is remembered and the rest of the
 * batch is dropped; writer_copy() then reports the server's or libpq's
 * error like any other failed statement.
 */
#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "record.h"
#include "table.h"
#include "writer_private.h"

/* Binary COPY: signature, flags word, header extension length. */
static const char writer_copy_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";

/* Most bytes a row adds beyond its values: field count, length words,
 * the two int4 of the head, 8-byte timestamps, 16-byte uuids, jsonb
 * version bytes (mi_idx, mi_pass and the widest table's columns). */
#define WRITER_COPY_ROW_OVERHEAD (2 + (2 + TABLE_COLS_MAX) * 21)

static char *writer_copy_be16(char *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, 2);
	return p + 2;
}

static char *writer_copy_be32(char *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
	return p + 4;
}

static char *writer_copy_be64(char *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
	return p + 8;
}

/* Hand the buffered bytes to libpq (which must send them within the
 * statement's deadline); a failure is sticky for the batch. */
static void writer_copy_flush(struct writer *w)
{
	if (w->copy_len > 0 && !w->copy_failed &&
	    writer_pq_put_copy(w, w->copy_buf, w->copy_len) < 0)
		w->copy_failed = true;
	w->copy_len = 0;
}

/* Slow path: append N bytes, flushing whenever the buffer fills. */
static void writer_copy_put(struct writer *w, const char *p, size_t n)
{
	while (n > 0) {
		size_t room = WRITER_COPY_CHUNK - w->copy_len;
		size_t k = n < room ? n : room;

		memcpy(w->copy_buf + w->copy_len, p, k);
		w->copy_len += k;
		p += k;
		n -= k;
		if (w->copy_len == WRITER_COPY_CHUNK)
			writer_copy_flush(w);
	}
}

/* Decimal int4 text (as record.c writes it) -> *OUT; 0 or -1. */
static int writer_copy_int4(const char *s, size_t len, int32_t *out)
{
	bool neg = len > 0 && s[0] == '-';
	int64_t v = 0;
	size_t i = neg;

	if (i == len || len - i > 10)
		return -1;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	v = neg ? -v : v;
	if (v < INT32_MIN || v > INT32_MAX)
		return -1;
	*out = (int32_t)v;
	return 0;
}

/* Canonical UUID text (as record.c writes it) -> 16 bytes; 0 or -1. */
static int writer_copy_uuid(const char *s, size_t len, unsigned char out[16])
{
	size_t k = 0;

	if (len != 36)
		return -1;
	for (size_t i = 0; i < len && k < 32; i++) {
		int c = (unsigned char)s[i], d;

		if (c == '-')
			continue;
		d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return -1;
		out[k / 2] = (unsigned char)(k % 2 ? out[k / 2] | d : d << 4);
		k++;
	}
	return k == 32 ? 0 : -1;
}

/* An int4, timestamptz or uuid field (length word and value) at P;
 * returns the end. A value not in record.c's form is sent one byte too
 * long. */
static char *writer_copy_fixed(char *p, const char *v, size_t len, enum table_type type)
{
	int32_t i4;
	int64_t us;
	unsigned char u[16];

	if (type == TABLE_TYPE_UUID) {
		if (writer_copy_uuid(v, len, u) == 0) {
			p = writer_copy_be32(p, 16);
			memcpy(p, u, 16);
			return p + 16;
		}
		p = writer_copy_be32(p, 17);
		memset(p, 0, 16);
		p += 16;
	} else if (type == TABLE_TYPE_INT) {
		if (writer_copy_int4(v, len, &i4) == 0)
			return writer_copy_be32(writer_copy_be32(p, 4), (uint32_t)i4);
		p = writer_copy_be32(writer_copy_be32(p, 5), 0);
	} else {
		if (record_time_pg_usec(v, len, &us) == 0)
			return writer_copy_be64(writer_copy_be32(p, 8), (uint64_t)us);
		p = writer_copy_be64(writer_copy_be32(p, 9), 0);
	}
	*p++ = 0;
	return p;
}

/* True for the types sent as a fixed-size binary value. */
static inline bool writer_copy_is_fixed(enum table_type type)
{
	return type == TABLE_TYPE_INT || type == TABLE_TYPE_TIMESTAMPTZ || type == TABLE_TYPE_UUID;
}

/* Row head: the field count, mi_idx and mi_pass, at P; returns the end. */
static char *writer_copy_head(char *p, const struct table *t, uint32_t idx, uint32_t pass)
{
	p = writer_copy_be16(p, (uint16_t)(2 + t->ncols));
	p = writer_copy_be32(writer_copy_be32(p, 4), idx);
	return writer_copy_be32(writer_copy_be32(p, 4), pass);
}

/* Length word of a text or jsonb value of LEN bytes (jsonb: + version). */
static char *writer_copy_varlen(char *p, size_t len, enum table_type type)
{
	if (type != TABLE_TYPE_JSONB)
		return writer_copy_be32(p, (uint32_t)len);
	p = writer_copy_be32(p, (uint32_t)len + 1);
	*p++ = 1; /* jsonb binary format version: the JSON text follows */
	return p;
}

/* A row too large for the buffer: field by field, flushing as it goes. */
static void writer_copy_row_slow(struct writer *w, const struct record *r, uint32_t idx,
				 uint32_t pass)
{
	const struct table *t = record_table(r);
	char tmp[24];

	writer_copy_put(w, tmp, (size_t)(writer_copy_head(tmp, t, idx, pass) - tmp));
	for (int i = 0; i < t->ncols; i++) {
		enum table_type type = t->cols[i].type;
		const char *v = r->data + r->off[i];
		uint32_t len = r->len[i];

		if (len == RECORD_ABSENT) {
			writer_copy_put(w, tmp, (size_t)(writer_copy_be32(tmp, UINT32_MAX) - tmp));
		} else if (writer_copy_is_fixed(type)) {
			writer_copy_put(w, tmp, (size_t)(writer_copy_fixed(tmp, v, len, type) - tmp));
		} else {
			writer_copy_put(w, tmp, (size_t)(writer_copy_varlen(tmp, len, type) - tmp));
			writer_copy_put(w, v, len);
		}
	}
}

/* Append one row: mi_idx, mi_pass, then every column (NULL when absent). */
static void writer_copy_row(struct writer *w, const struct record *r, uint32_t idx,
			    uint32_t pass)
{
	const struct table *t = record_table(r);
	size_t need = WRITER_COPY_ROW_OVERHEAD + (size_t)r->size;
	char *p;

	if (need > WRITER_COPY_CHUNK - w->copy_len)
		writer_copy_flush(w);
	if (need > WRITER_COPY_CHUNK) {
		writer_copy_row_slow(w, r, idx, pass);
		return;
	}
	p = writer_copy_head(w->copy_buf + w->copy_len, t, idx, pass);
	for (int i = 0; i < t->ncols; i++) {
		enum table_type type = t->cols[i].type;
		uint32_t len = r->len[i];

		if (len == RECORD_ABSENT) {
			p = writer_copy_be32(p, UINT32_MAX); /* -1: NULL */
		} else if (writer_copy_is_fixed(type)) {
			p = writer_copy_fixed(p, r->data + r->off[i], len, type);
		} else {
			p = writer_copy_varlen(p, len, type);
			memcpy(p, r->data + r->off[i], len);
			p += len;
		}
	}
	w->copy_len = (size_t)(p - w->copy_buf);
}

enum write_verdict writer_copy(struct writer *w, struct record **recs, size_t lo, size_t hi,
			       struct writer_err *e)
{
	PGresult *res = NULL;
	enum write_verdict v = writer_pq_exec(w, w->sql_copy[recs[lo]->table], -1, NULL, e, &res);

	if (v != WRITE_OK)
		return v;
	PQclear(res);
	writer_pq_copy_started(w);
	w->copy_failed = false;
	memcpy(w->copy_buf, writer_copy_header, sizeof(writer_copy_header));
	w->copy_len = sizeof(writer_copy_header);
	for (size_t i = lo; i < hi && !w->copy_failed; i++)
		writer_copy_row(w, recs[i], (uint32_t)i, (uint32_t)w->pass[i]);
	writer_copy_put(w, "\377\377", 2); /* trailer: field count -1 */
	writer_copy_flush(w);
	return writer_pq_end_copy(w, w->copy_failed ? "megaingestd: sending COPY data failed" :
				  NULL, e);
}
