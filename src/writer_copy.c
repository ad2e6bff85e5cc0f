/*
 * writer_copy.c: a batch as COPY text, streamed to PostgreSQL while it is
 * being encoded.
 *
 * DESIGN
 * ------
 * Rows are written into one flat buffer of WRITER_COPY_CHUNK bytes that goes
 * to PQputCopyData whenever it cannot take the next row, so the server
 * parses the first rows of a batch while the writer still encodes the last
 * ones, and libpq sees a few large calls instead of one per field.
 *
 * A value needs escaping only where it holds a backslash, tab, newline or
 * carriage return. record.c stores every value NUL-terminated and refuses
 * NUL bytes inside text, so glibc's strcspn (vectorised) finds those bytes
 * and everything between them is one memcpy. A row is encoded with a plain
 * pointer once the buffer is known to have room for its worst case (every
 * byte escaped); a row larger than the whole buffer takes the slow path,
 * which flushes as it goes.
 *
 * A failing PQputCopyData (the connection is gone) is remembered and the
 * rest of the batch is dropped; writer_copy() then reports the server's or
 * libpq's error like any other failed statement.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "record.h"
#include "writer_private.h"

/* The bytes COPY text format must escape, and what follows the backslash. */
static const char writer_copy_special[] = "\\\t\n\r";

static char writer_copy_escape(char c)
{
	switch (c) {
	case '\t': return 't';
	case '\n': return 'n';
	case '\r': return 'r';
	case '\\': return '\\';
	default: return '0'; /* a NUL byte: the server refuses the row (22021) */
	}
}

/* Hand the buffered bytes to libpq; a failure is sticky for the batch. */
static void writer_copy_flush(struct writer *w)
{
	if (w->copy_len > 0 && !w->copy_failed &&
	    PQputCopyData(w->pg, w->copy_buf, (int)w->copy_len) != 1)
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

/* Decimal digits of V at P; returns the end. */
static char *writer_copy_uint(char *p, uint32_t v)
{
	char tmp[10];
	int k = 0;

	do {
		tmp[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (k)
		*p++ = tmp[--k];
	return p;
}

/* Fast path: value V (LEN bytes, NUL-terminated) escaped at P, which has
 * room for 2 * LEN bytes; returns the end. */
static char *writer_copy_text(char *p, const char *v, size_t len)
{
	for (;;) {
		size_t run = strcspn(v, writer_copy_special);

		if (run > len)
			run = len;
		memcpy(p, v, run);
		p += run;
		v += run;
		len -= run;
		if (len == 0)
			return p;
		*p++ = '\\';
		*p++ = writer_copy_escape(*v++);
		len--;
	}
}

/* Slow path of one value: escaped in runs through writer_copy_put. */
static void writer_copy_text_slow(struct writer *w, const char *v, size_t len)
{
	while (len > 0) {
		size_t run = strcspn(v, writer_copy_special);
		char esc[2] = { '\\', 0 };

		if (run > len)
			run = len;
		writer_copy_put(w, v, run);
		v += run;
		len -= run;
		if (len == 0)
			return;
		esc[1] = writer_copy_escape(*v++);
		writer_copy_put(w, esc, 2);
		len--;
	}
}

/* Row head "IDX\tPASS" at P; returns the end. */
static char *writer_copy_head(char *p, uint32_t idx, uint32_t pass)
{
	p = writer_copy_uint(p, idx);
	*p++ = '\t';
	return writer_copy_uint(p, pass);
}

/* A row too large for the buffer: field by field, flushing as it goes. */
static void writer_copy_row_slow(struct writer *w, const struct record *r, uint32_t idx,
				 uint32_t pass)
{
	char head[24];

	writer_copy_put(w, head, (size_t)(writer_copy_head(head, idx, pass) - head));
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		if (r->len[i] == RECORD_ABSENT) {
			writer_copy_put(w, "\t\\N", 3);
			continue;
		}
		writer_copy_put(w, "\t", 1);
		writer_copy_text_slow(w, r->data + r->off[i], r->len[i]);
	}
	writer_copy_put(w, "\n", 1);
}

/* Append one row: mi_idx, mi_pass, then every column (\N when absent). */
static void writer_copy_row(struct writer *w, const struct record *r, uint32_t idx,
			    uint32_t pass)
{
	/* Worst case: the head, a tab and \N per column, every data byte escaped. */
	size_t need = 24 + 3 * RECORD_COL_COUNT + 2 * (size_t)r->size;
	char *p;

	if (need > WRITER_COPY_CHUNK - w->copy_len)
		writer_copy_flush(w);
	if (need > WRITER_COPY_CHUNK) {
		writer_copy_row_slow(w, r, idx, pass);
		return;
	}
	p = writer_copy_head(w->copy_buf + w->copy_len, idx, pass);
	for (int i = 0; i < RECORD_COL_COUNT; i++) {
		*p++ = '\t';
		if (r->len[i] == RECORD_ABSENT) {
			*p++ = '\\';
			*p++ = 'N';
		} else {
			p = writer_copy_text(p, r->data + r->off[i], r->len[i]);
		}
	}
	*p++ = '\n';
	w->copy_len = (size_t)(p - w->copy_buf);
}

enum write_verdict writer_copy(struct writer *w, struct record **recs, size_t n,
			       struct writer_err *e)
{
	PGresult *res = PQexec(w->pg, w->sql_copy);
	enum write_verdict v;

	if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
		v = writer_classify(w, res, e);
		PQclear(res);
		return v;
	}
	PQclear(res);
	w->copy_len = 0;
	w->copy_failed = false;
	for (size_t i = 0; i < n && !w->copy_failed; i++)
		writer_copy_row(w, recs[i], (uint32_t)i, (uint32_t)w->pass[i]);
	writer_copy_flush(w);
	PQputCopyEnd(w->pg, w->copy_failed ? "megaingestd: sending COPY data failed" : NULL);
	res = PQgetResult(w->pg);
	v = res && PQresultStatus(res) == PGRES_COMMAND_OK ? WRITE_OK : writer_classify(w, res, e);
	PQclear(res);
	while ((res = PQgetResult(w->pg)))
		PQclear(res);
	return v;
}
