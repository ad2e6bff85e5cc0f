/*
 * spool_stream.c: the spool's segment streams — batches kept on disk while
 * PostgreSQL is away, replayed in order once it is back.
 *
 * DESIGN
 * ------
 * Each writer owns one stream: an ordered list of segment files
 * spool.dir/spool-W-SEQ.seg (W the writer, SEQ a number that grows over the
 * life of the directory). A segment starts with a 32-byte header (magic,
 * version, writer, writer count, sequence, CRC) and then holds frames, each
 * one spooled batch with its own length and CRC-32 (spool_frame.h). Appends
 * go to the newest segment with pwrite at the tracked end and are fsync'ed
 * before the call returns; a segment's creation is made durable (file and
 * directory fsync) before any frame is written into it. A failed append is
 * cut off again with ftruncate, so nothing unacknowledged stays in the middle
 * of a stream; should that fail too, the segment is sealed and the next
 * append starts a new one (the reader then reports the torn tail).
 *
 * The same writer thread replays its stream: spool_stream_next reads the
 * oldest frame not yet committed, spool_stream_commit moves past it, and a
 * segment whose frames are all committed is unlinked and the directory
 * fsync'ed before anything newer is written to PostgreSQL. Because events
 * of one mg_id always go to the same writer, and a writer replays its whole
 * stream before taking anything from its queue, each id's events reach the
 * table in arrival order. A crash mid-segment replays that segment's
 * committed prefix again: the merge is idempotent for a prefix replayed in
 * order with nothing newer in between, so the rows end up the same.
 *
 * A frame whose CRC does not match, or whose bytes end early (a crash
 * mid-write), is reported with file and offset; the reader searches on for
 * the next intact frame (magic and CRC), and the frames before the damage
 * are kept.
 *
 * Streams are split by id_hash % writers. When the segments found at start
 * were written for another writer count, spool_stream_recover re-splits them
 * into new segments (named *.seg.tmp until complete), then records the cut
 * in a marker file, renames the new segments, deletes the old ones and the
 * marker. A crash before the marker leaves the old segments (the .tmp files
 * are removed at the next start); after it, the next start finishes the
 * renames and deletions. Either way every frame exists exactly once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "log.h"
#include "record.h"
#include "spool.h"
#include "spool_frame.h"
#include "spool_private.h"
#include "table.h"

#define SPOOL_SEG_HEADER 32
#define SPOOL_SEG_MAGIC "MISPOOL1"
#define SPOOL_SEG_VERSION 2      /* 2: the header carries the tables' fingerprint */
#define SPOOL_FRAME_TARGET (16u << 20)   /* split batches into frames of about this */
#define SPOOL_SEG_TARGET_MIN (64u << 10)
#define SPOOL_SEG_TARGET_MAX (64u << 20)
#define SPOOL_RESPLIT_MARKER "resplit.commit"
#define SPOOL_SCAN_WINDOW 65536

struct spool_seg {
	int writer;                  /* from the file name */
	uint64_t seq;                /* idem */
	uint64_t size;               /* bytes in the file */
	int nwriters;                /* from the header; -1 when the header is bad */
};

struct spool_stream {
	struct spool *s;
	int writer;                  /* -1: the reader of a re-split */
	bool tmp;                    /* re-split output: *.seg.tmp names, no limit */
	bool keep;                   /* re-split input: never unlink */
	bool undeleted;              /* segs[0] is consumed but its unlink (or the
				      * directory fsync after it) failed: retried,
				      * and the stream stays pending meanwhile */
	struct spool_seg *segs;      /* oldest first */
	size_t nsegs, capsegs;
	int wfd;                     /* the newest segment, open for appends, or -1 */
	int rfd;                     /* segs[0] open for reading, or -1 */
	uint64_t roff;               /* next frame to read in segs[0] */
	uint64_t rnext;              /* end of the frame last returned (0: none) */
	uint8_t *buf;                /* read and encode buffer */
	size_t bufcap;
	struct record **recs;        /* the frame last returned */
	size_t reccap;
	uint64_t corrupt;            /* frames skipped as damaged */
	int err;                     /* errno of the last failed append */
};

/* ---- small helpers ---------------------------------------------------- */

static int spool_stream_path(const struct spool *s, int writer, uint64_t seq, bool tmp,
			     char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/spool-%d-%010llu.seg%s", s->dir, writer,
			 (unsigned long long)seq, tmp ? ".tmp" : "");

	return n > 0 && (size_t)n < len ? 0 : -1;
}

static int spool_stream_grow(void **p, size_t *cap, size_t want, size_t elem)
{
	size_t ncap = *cap ? *cap : 16;
	void *np;

	if (want <= *cap)
		return 0;
	while (ncap < want)
		ncap *= 2;
	np = realloc(*p, ncap * elem);
	if (!np)
		return -1;
	*p = np;
	*cap = ncap;
	return 0;
}

static int spool_stream_pwrite(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Read exactly LEN bytes at OFF: 1, 0 at a short file, -1 with errno. */
static int spool_stream_pread(int fd, uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -1 : 0;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 1;
}

static int spool_stream_sync_dir(const struct spool *s)
{
	if (fsync(s->dir_fd) == 0)
		return 0;
	log_error("spool", "cannot fsync %s: %s", s->dir, strerror(errno));
	return -1;
}

/*
 * Header: magic (8), version (u32), writer (u16), writer count (u16), the
 * fingerprint of every table's columns (u32, table_fingerprint), sequence
 * (u64), CRC-32 of the 28 bytes before it. Frames hold records encoded for
 * exactly those columns, so a segment of another fingerprint is refused,
 * never decoded.
 */
static void spool_stream_header(uint8_t *h, int writer, int nwriters, uint64_t seq)
{
	memcpy(h, SPOOL_SEG_MAGIC, 8);
	spool_frame_put32(h + 8, SPOOL_SEG_VERSION);
	spool_frame_put32(h + 12, (uint32_t)writer | (uint32_t)nwriters << 16);
	spool_frame_put32(h + 16, table_fingerprint());
	spool_frame_put64(h + 20, seq);
	spool_frame_put32(h + 28, (uint32_t)crc32(crc32(0L, Z_NULL, 0), h, 28));
}

/* Writer count a header records for WRITER/SEQ; -1 when it is damaged or
 * not for this place; SPOOL_SEG_FOREIGN when it is intact but written for
 * other columns (or by a format version before the fingerprint). */
#define SPOOL_SEG_FOREIGN (-2)
static int spool_stream_header_check(const uint8_t *h, int writer, uint64_t seq)
{
	uint32_t who = spool_frame_get32(h + 12), nw = who >> 16;

	if (memcmp(h, SPOOL_SEG_MAGIC, 8) != 0 ||
	    spool_frame_get32(h + 28) != (uint32_t)crc32(crc32(0L, Z_NULL, 0), h, 28))
		return -1;
	if (spool_frame_get32(h + 8) != SPOOL_SEG_VERSION ||
	    spool_frame_get32(h + 16) != table_fingerprint())
		return SPOOL_SEG_FOREIGN;
	if ((who & 0xffff) != (uint32_t)writer || spool_frame_get64(h + 20) != seq || nw == 0)
		return -1;
	return (int)nw;
}

/* Link PATH to the first free name of PATH.foreign, PATH.foreign.1, ...
 * (never over an earlier one: segment numbers restart with a new build, so
 * a later segment set aside may have the same name), then unlink PATH.
 * The name is left in ASIDE. 0 or -1. */
static int spool_stream_link_aside(const char *path, char *aside, size_t len)
{
	for (int i = 0; i < 1000; i++) {
		if (i == 0)
			snprintf(aside, len, "%s.foreign", path);
		else
			snprintf(aside, len, "%s.foreign.%d", path, i);
		if (link(path, aside) == 0)
			return unlink(path);
		if (errno != EEXIST)
			return -1;
	}
	errno = EEXIST;
	return -1;
}

/* Segment PATH holds frames of another column set: set aside as
 * PATH.foreign (or .foreign.N), loudly, and never replayed or re-split. */
static int spool_stream_set_aside(const struct spool *s, const char *path, const uint8_t *h)
{
	char aside[4200];

	if (spool_stream_link_aside(path, aside, sizeof(aside)) < 0 ||
	    spool_stream_sync_dir(s) < 0) {
		log_error("spool", "cannot set %s aside: %s", path, strerror(errno));
		return -1;
	}
	log_error("spool", "%s was written for other table columns (format %u, fingerprint "
		  "%08x; this build writes format %d, fingerprint %08x): its frames are NOT "
		  "replayed; set aside as %s. Replay it with the megaingestd version that wrote "
		  "it.", path, spool_frame_get32(h + 8), spool_frame_get32(h + 16),
		  SPOOL_SEG_VERSION, table_fingerprint(), aside);
	return 1;
}

static struct spool_stream *spool_stream_new(struct spool *s, int writer)
{
	struct spool_stream *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	st->s = s;
	st->writer = writer;
	st->wfd = -1;
	st->rfd = -1;
	st->roff = SPOOL_SEG_HEADER;
	return st;
}

static void spool_stream_free(struct spool_stream *st)
{
	if (!st)
		return;
	if (st->wfd >= 0)
		close(st->wfd);
	if (st->rfd >= 0)
		close(st->rfd);
	free(st->segs);
	free(st->buf);
	free(st->recs);
	free(st);
}

void spool_stream_free_all(struct spool *s)
{
	for (int i = 0; s->streams && i < s->nstreams; i++)
		spool_stream_free(s->streams[i]);
	free(s->streams);
	s->streams = NULL;
	s->nstreams = 0;
}

/* ---- appending -------------------------------------------------------- */

/* Start a new segment: header written and fsync'ed, directory fsync'ed. */
static int spool_stream_create(struct spool_stream *st)
{
	struct spool *s = st->s;
	uint64_t seq = atomic_fetch_add(&s->next_seq, 1);
	uint8_t h[SPOOL_SEG_HEADER];
	char path[4096];
	int fd;

	if (spool_stream_grow((void **)&st->segs, &st->capsegs, st->nsegs + 1,
			      sizeof(*st->segs)) < 0 ||
	    spool_stream_path(s, st->writer, seq, st->tmp, path, sizeof(path)) < 0) {
		errno = ENOMEM;
		return -1;
	}
	fd = spool_open_private(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC);
	if (fd < 0)
		return -1;
	spool_stream_header(h, st->writer, s->nstreams, seq);
	if (spool_stream_pwrite(fd, h, sizeof(h), 0) < 0 || fsync(fd) < 0 || fsync(s->dir_fd) < 0) {
		int e = errno;

		close(fd);
		unlink(path);
		errno = e;
		return -1;
	}
	st->wfd = fd;
	st->segs[st->nsegs++] = (struct spool_seg){ .writer = st->writer, .seq = seq,
						    .size = SPOOL_SEG_HEADER,
						    .nwriters = s->nstreams };
	return 0; /* its header's bytes were reserved by the append */
}

/* Encode RECS into frames of about SPOOL_FRAME_TARGET in st->buf; total bytes or 0. */
static size_t spool_stream_encode(struct spool_stream *st, struct record *const *recs, size_t n)
{
	size_t total = 0, i = 0;

	while (i < n) {
		size_t k = 1, size = spool_frame_size(recs + i, 1);

		while (i + k < n) {
			size_t more = spool_frame_size(recs + i + k, 1) - SPOOL_FRAME_HEADER - 4;

			if (size + more > SPOOL_FRAME_TARGET)
				break;
			size += more;
			k++;
		}
		if (size - SPOOL_FRAME_HEADER > SPOOL_FRAME_MAX ||
		    spool_stream_grow((void **)&st->buf, &st->bufcap, total + size, 1) < 0)
			return 0;
		spool_frame_encode(st->buf + total, recs + i, k);
		total += size;
		i += k;
	}
	return total;
}

/* Undo a failed append of the newest segment back to its size before it. */
static void spool_stream_cut(struct spool_stream *st)
{
	struct spool_seg *seg = &st->segs[st->nsegs - 1];

	if (ftruncate(st->wfd, (off_t)seg->size) == 0)
		return;
	log_error("spool", "writer=%d: cannot cut a failed append off spool segment %llu: %s; "
		  "the segment is closed and its torn tail will be skipped on replay",
		  st->writer, (unsigned long long)seg->seq, strerror(errno));
	close(st->wfd);
	st->wfd = -1;
}

/* Count ADD more bytes in the spool, unless that would pass spool.max_bytes
 * (re-split output has no limit). Check and add are one step, so writers
 * appending at once cannot all pass the check. */
static bool spool_stream_reserve(struct spool_stream *st, uint64_t add)
{
	struct spool *s = st->s;
	uint_least64_t cur = atomic_load(&s->seg_bytes);

	do {
		if (!st->tmp && cur + add > s->max_bytes)
			return false;
	} while (!atomic_compare_exchange_weak(&s->seg_bytes, &cur, cur + add));
	return true;
}

enum spool_status spool_stream_append(struct spool_stream *st, struct record *const *recs,
				      size_t n)
{
	bool rotate = st->wfd < 0 || st->segs[st->nsegs - 1].size >= st->s->seg_target;
	size_t len, header = rotate ? SPOOL_SEG_HEADER : 0;
	struct spool_seg *seg;

	if (n == 0)
		return SPOOL_OK;
	len = spool_stream_encode(st, recs, n);
	if (len == 0) {
		st->err = ENOMEM;
		return SPOOL_IO_ERROR;
	}
	if (!spool_stream_reserve(st, len + header))
		return SPOOL_FULL;
	if (rotate) {
		if (st->wfd >= 0)
			close(st->wfd);
		st->wfd = -1;
		if (spool_stream_create(st) < 0) {
			st->err = errno;
			atomic_fetch_sub(&st->s->seg_bytes, len + header);
			return SPOOL_IO_ERROR;
		}
	}
	seg = &st->segs[st->nsegs - 1];
	if (spool_stream_pwrite(st->wfd, st->buf, len, seg->size) < 0 || fdatasync(st->wfd) < 0) {
		st->err = errno;
		spool_stream_cut(st);
		atomic_fetch_sub(&st->s->seg_bytes, len);
		return SPOOL_IO_ERROR;
	}
	seg->size += len;
	return SPOOL_OK;
}

int spool_stream_errno(const struct spool_stream *st)
{
	return st->err;
}

/* ---- replaying -------------------------------------------------------- */

/* Forget segs[0]: unlink it (unless KEEP) and fsync the directory. */
static int spool_stream_drop_head(struct spool_stream *st)
{
	struct spool_seg *seg = &st->segs[0];
	char path[4096];
	int rc = 0;

	if (st->rfd >= 0)
		close(st->rfd);
	st->rfd = -1;
	if (st->nsegs == 1 && st->wfd >= 0) {
		close(st->wfd);
		st->wfd = -1;
	}
	if (!st->keep && spool_stream_path(st->s, seg->writer, seg->seq, st->tmp, path,
					   sizeof(path)) == 0) {
		if (unlink(path) < 0 && errno != ENOENT) {
			log_error("spool", "cannot delete replayed segment %s: %s; keeping it "
				  "first in line (nothing newer goes to PostgreSQL) and retrying",
				  path, strerror(errno));
			rc = -1;
		} else if (spool_stream_sync_dir(st->s) < 0) {
			rc = -1;
		}
		/* A segment still on disk would be replayed at the next start,
		 * over anything newer written meanwhile: it stays until gone. */
		st->undeleted = rc < 0;
		if (rc < 0)
			return -1;
		atomic_fetch_sub(&st->s->seg_bytes, seg->size);
	}
	memmove(st->segs, st->segs + 1, (st->nsegs - 1) * sizeof(*st->segs));
	st->nsegs--;
	st->roff = SPOOL_SEG_HEADER;
	st->rnext = 0;
	return rc;
}

bool spool_stream_pending(const struct spool_stream *st)
{
	if (st->nsegs == 0)
		return false;
	return st->nsegs > 1 || st->roff < st->segs[0].size || st->undeleted;
}

/*
 * Read the frame at OFF of the open segment (size END) into st->buf.
 * 1: intact, *LEN its payload length; 0: damaged, *WHY says how; -1: I/O.
 */
static int spool_stream_read_frame(struct spool_stream *st, uint64_t off, uint64_t end,
				   uint32_t *len, const char **why)
{
	int64_t l;
	int rc;

	if (end - off < SPOOL_FRAME_HEADER) {
		*why = "torn frame: the file ends inside its header";
		return 0;
	}
	if (spool_stream_grow((void **)&st->buf, &st->bufcap, SPOOL_FRAME_HEADER, 1) < 0)
		return -1;
	rc = spool_stream_pread(st->rfd, st->buf, SPOOL_FRAME_HEADER, off);
	if (rc <= 0)
		goto short_read;
	l = spool_frame_length(st->buf);
	if (l < 0) {
		*why = "bad frame header";
		return 0;
	}
	if ((uint64_t)l > end - off - SPOOL_FRAME_HEADER) {
		*why = "torn frame: the file ends inside it";
		return 0;
	}
	if (spool_stream_grow((void **)&st->buf, &st->bufcap,
			      SPOOL_FRAME_HEADER + (size_t)l, 1) < 0)
		return -1;
	rc = spool_stream_pread(st->rfd, st->buf + SPOOL_FRAME_HEADER, (size_t)l,
				off + SPOOL_FRAME_HEADER);
	if (rc <= 0)
		goto short_read;
	if (!spool_frame_crc_ok(st->buf, (uint32_t)l)) {
		*why = "checksum mismatch";
		return 0;
	}
	*len = (uint32_t)l;
	return 1;
short_read:
	*why = "torn frame: the file is shorter than expected";
	return rc < 0 ? -1 : 0;
}

/* Resync could not read (I/O error, out of memory): nothing may be skipped. */
#define SPOOL_RESYNC_FAILED UINT64_MAX

/* The offset of the first intact frame after FROM, END when there is none,
 * or SPOOL_RESYNC_FAILED when the file could not be read to tell. */
static uint64_t spool_stream_resync(struct spool_stream *st, uint64_t from, uint64_t end)
{
	static const uint8_t magic[4] = { 'M', 'I', 'F', '1' };
	uint8_t win[SPOOL_SCAN_WINDOW];

	while (from + SPOOL_FRAME_HEADER <= end) {
		size_t want = end - from < sizeof(win) ? (size_t)(end - from) : sizeof(win);
		const char *why;
		uint32_t len;
		uint8_t *hit;
		int rc;

		rc = spool_stream_pread(st->rfd, win, want, from);
		if (rc < 0)
			return SPOOL_RESYNC_FAILED;
		if (rc == 0)
			return end; /* the file is shorter than we knew: nothing after */
		hit = memmem(win, want, magic, sizeof(magic));
		if (!hit) {
			from += want > 3 ? want - 3 : want;
			continue;
		}
		from += (uint64_t)(hit - win);
		switch (spool_stream_read_frame(st, from, end, &len, &why)) {
		case 1:
			return from;
		case 0:
			from++;
			break;
		default:
			return SPOOL_RESYNC_FAILED;
		}
	}
	return end;
}

static void spool_stream_report(struct spool_stream *st, uint64_t off, uint64_t to,
				const char *why)
{
	const struct spool_seg *seg = &st->segs[0];
	char path[4096];

	if (spool_stream_path(st->s, seg->writer, seg->seq, st->tmp, path, sizeof(path)) < 0)
		path[0] = '\0';
	st->corrupt++;
	log_error("spool", "%s: offset %llu: %s; %llu bytes skipped%s (the frames before it "
		  "are kept)", path, (unsigned long long)off, why,
		  (unsigned long long)(to - off), to < seg->size ? ", reading on" : "");
}

static int spool_stream_open_head(struct spool_stream *st)
{
	const struct spool_seg *seg = &st->segs[0];
	char path[4096];

	if (st->rfd >= 0)
		return 0;
	if (spool_stream_path(st->s, seg->writer, seg->seq, st->tmp, path, sizeof(path)) < 0)
		return -1;
	st->rfd = open(path, O_RDONLY | O_CLOEXEC);
	if (st->rfd >= 0)
		return 0;
	log_error("spool", "cannot open spool segment %s: %s%s", path, strerror(errno),
		  errno == ENOENT ? " (someone removed it; its events are lost)" : "; will retry");
	return errno == ENOENT ? 1 : -1;
}

int spool_stream_next(struct spool_stream *st, struct record ***recs, size_t *n)
{
	while (st->nsegs > 0) {
		const struct spool_seg *seg = &st->segs[0];
		const char *why = "malformed records";
		uint32_t len;
		int64_t count;
		int rc;

		if (st->roff >= seg->size) {
			/* Every frame in it committed, or skipped as damaged (our
			 * own appends too, when it is the open write segment):
			 * delete it before anything newer reaches PostgreSQL. */
			if (spool_stream_drop_head(st) < 0)
				return -1;
			continue;
		}
		rc = spool_stream_open_head(st);
		if (rc != 0) {
			if (rc < 0)
				return -1;
			st->roff = seg->size; /* the file is gone: nothing to read in it */
			continue;
		}
		rc = spool_stream_read_frame(st, st->roff, seg->size, &len, &why);
		if (rc < 0) {
			log_error("spool", "writer=%d: cannot read the spool: %s; will retry",
				  st->writer, strerror(errno));
			return -1;
		}
		count = rc ? spool_frame_decode(st->buf + SPOOL_FRAME_HEADER, len, &st->recs,
						&st->reccap) : -1;
		if (count == SPOOL_FRAME_NOMEM) {
			log_error("spool", "writer=%d: out of memory decoding a spool frame; will "
				  "retry", st->writer);
			return -1;
		}
		if (count < 0) {
			uint64_t to = spool_stream_resync(st, st->roff + 1, seg->size);

			if (to == SPOOL_RESYNC_FAILED) {
				log_error("spool", "writer=%d: cannot read the spool past a damaged "
					  "frame: %s; will retry", st->writer, strerror(errno));
				return -1;
			}
			spool_stream_report(st, st->roff, to, why);
			st->roff = to;
			continue;
		}
		st->rnext = st->roff + SPOOL_FRAME_HEADER + len;
		*recs = st->recs;
		*n = (size_t)count;
		return 1;
	}
	return 0;
}

int spool_stream_commit(struct spool_stream *st)
{
	if (st->nsegs == 0 || st->rnext == 0)
		return 0;
	st->roff = st->rnext;
	st->rnext = 0;
	if (st->roff < st->segs[0].size)
		return 0;
	return spool_stream_drop_head(st);
}

uint64_t spool_stream_corrupt(const struct spool_stream *st)
{
	return st->corrupt;
}

struct spool_stream *spool_stream_get(struct spool *s, int writer)
{
	return writer >= 0 && writer < s->nstreams ? s->streams[writer] : NULL;
}

/* ---- recovery at start ------------------------------------------------ */

struct spool_found {
	struct spool_seg *v;         /* oldest first once sorted */
	size_t n, cap;
};

/* "spool-W-SEQ.seg" or "spool-W-SEQ.seg.tmp" -> 0 (with *TMP), else -1. */
static int spool_stream_parse_name(const char *name, int *writer, uint64_t *seq, bool *tmp)
{
	unsigned w;
	unsigned long long q;
	int end = 0;

	if (strncmp(name, "spool-", 6) != 0 || name[6] < '0' || name[6] > '9' ||
	    sscanf(name, "spool-%u-%llu.seg%n", &w, &q, &end) != 2 || end == 0 || w > 65535)
		return -1;
	if (strcmp(name + end, ".tmp") == 0)
		*tmp = true;
	else if (name[end] == '\0')
		*tmp = false;
	else
		return -1;
	*writer = (int)w;
	*seq = q;
	return 0;
}

static int spool_stream_seg_cmp(const void *a, const void *b)
{
	const struct spool_seg *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Size and header of segment WRITER/SEQ; 0 adds it to F, 1 skips it, -1 fails. */
static int spool_stream_examine(struct spool *s, int writer, uint64_t seq, struct spool_found *f)
{
	uint8_t h[SPOOL_SEG_HEADER];
	char path[4096];
	struct stat sb;
	int fd, nw = -1;

	if (spool_stream_path(s, writer, seq, false, path, sizeof(path)) < 0 ||
	    (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		log_error("spool", "cannot open spool segment %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) < 0) {
		log_error("spool", "cannot stat spool segment %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (sb.st_size >= SPOOL_SEG_HEADER && spool_stream_pread(fd, h, sizeof(h), 0) == 1)
		nw = spool_stream_header_check(h, writer, seq);
	close(fd);
	if (nw == SPOOL_SEG_FOREIGN)
		return spool_stream_set_aside(s, path, h);
	if (sb.st_size <= SPOOL_SEG_HEADER) {
		/* Created but never written to (or torn while being created). */
		log_info("spool", "%s holds no frames: removed", path);
		return unlink(path) == 0 ? 1 : -1;
	}
	if (nw < 0)
		log_warn("spool", "%s: damaged segment header; its frames are read and re-split",
			 path);
	if (spool_stream_grow((void **)&f->v, &f->cap, f->n + 1, sizeof(*f->v)) < 0)
		return -1;
	f->v[f->n++] = (struct spool_seg){ .writer = writer, .seq = seq,
					   .size = (uint64_t)sb.st_size, .nwriters = nw };
	return 0;
}

/* Every segment file in spool.dir into F, oldest first. */
static int spool_stream_scan(struct spool *s, struct spool_found *f)
{
	DIR *d = opendir(s->dir);
	struct dirent *de;
	int rc = 0;

	if (!d) {
		log_error("spool", "cannot read spool.dir %s: %s", s->dir, strerror(errno));
		return -1;
	}
	f->n = 0;
	while (rc >= 0 && (de = readdir(d))) {
		int writer;
		uint64_t seq;
		bool tmp;

		if (spool_stream_parse_name(de->d_name, &writer, &seq, &tmp) == 0 && !tmp)
			rc = spool_stream_examine(s, writer, seq, f);
	}
	closedir(d);
	if (f->n > 1)
		qsort(f->v, f->n, sizeof(*f->v), spool_stream_seg_cmp);
	return rc < 0 ? -1 : 0;
}

static int spool_stream_marker_path(const struct spool *s, char *buf, size_t len, bool tmp)
{
	int n = snprintf(buf, len, "%s/%s%s", s->dir, SPOOL_RESPLIT_MARKER, tmp ? ".tmp" : "");

	return n > 0 && (size_t)n < len ? 0 : -1;
}

/* The cut a re-split recorded in *CUT (segments up to it are the old ones),
 * 0 when there is no marker. -1 when a marker exists but cannot be read:
 * guessing "none" would delete new segments some of which were already
 * published beside the old ones, and replay those frames twice. */
static int spool_stream_marker_read(const struct spool *s, uint64_t *cut)
{
	char path[4096], text[32] = "";
	unsigned long long v = 0;
	FILE *fp;

	*cut = 0;
	if (spool_stream_marker_path(s, path, sizeof(path), false) < 0)
		return -1;
	if (!(fp = fopen(path, "re"))) {
		if (errno == ENOENT)
			return 0;
		log_error("spool", "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	if (!fgets(text, sizeof(text), fp) || sscanf(text, "%llu", &v) != 1 || v == 0) {
		log_error("spool", "%s does not hold a segment number; an interrupted re-split "
			  "cannot be finished safely: look at the spool directory", path);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	*cut = v;
	return 0;
}

/*
 * Complete or undo a re-split a crash interrupted: with a marker, rename the
 * new *.tmp segments and delete the old ones up to its cut; without one,
 * delete the *.tmp segments (the old ones are intact).
 */
static int spool_stream_finish_resplit(struct spool *s)
{
	uint64_t cut;
	char path[4096], final[4096];
	DIR *d;
	struct dirent *de;
	int rc = 0;

	if (spool_stream_marker_read(s, &cut) < 0 || !(d = opendir(s->dir)))
		return -1;
	while ((de = readdir(d))) {
		int writer;
		uint64_t seq;
		bool tmp;

		if (spool_stream_parse_name(de->d_name, &writer, &seq, &tmp) < 0 ||
		    spool_stream_path(s, writer, seq, tmp, path, sizeof(path)) < 0 ||
		    spool_stream_path(s, writer, seq, false, final, sizeof(final)) < 0)
			continue;
		if (tmp && cut && rename(path, final) < 0)
			rc = -1;
		else if ((tmp && !cut) || (!tmp && cut && seq <= cut))
			rc |= unlink(path);
	}
	closedir(d);
	spool_stream_sync_dir(s);
	if (cut && rc == 0 && spool_stream_marker_path(s, path, sizeof(path), false) == 0) {
		log_info("spool", "finished a re-split of the spool that a restart interrupted");
		rc = unlink(path);
		spool_stream_sync_dir(s);
	}
	if (rc < 0)
		log_error("spool", "cannot tidy an interrupted re-split in %s: %s", s->dir,
			  strerror(errno));
	return rc < 0 ? -1 : 0;
}

/* Write the marker saying that segments up to CUT are replaced. */
static int spool_stream_marker_write(struct spool *s, uint64_t cut)
{
	char tmp[4096], path[4096], text[32];
	int fd, len = snprintf(text, sizeof(text), "%llu\n", (unsigned long long)cut);

	if (spool_stream_marker_path(s, tmp, sizeof(tmp), true) < 0 ||
	    spool_stream_marker_path(s, path, sizeof(path), false) < 0)
		return -1;
	fd = spool_open_private(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (spool_stream_pwrite(fd, (const uint8_t *)text, (size_t)len, 0) < 0 || fsync(fd) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	if (rename(tmp, path) < 0)
		return -1;
	return fsync(s->dir_fd);
}

/* Route one frame's records to OUTS by id_hash % nwriters; frees them. */
static int spool_stream_route(struct spool *s, struct spool_stream **outs, struct record **recs,
			      size_t n, struct record **part)
{
	int rc = 0;

	for (int w = 0; w < s->nstreams && rc == 0; w++) {
		size_t k = 0;

		for (size_t i = 0; i < n; i++)
			if (recs[i]->id_hash % (uint32_t)s->nstreams == (uint32_t)w)
				part[k++] = recs[i];
		if (k > 0 && spool_stream_append(outs[w], part, k) != SPOOL_OK) {
			log_error("spool", "cannot write re-split segments into %s: %s", s->dir,
				  strerror(spool_stream_errno(outs[w])));
			rc = -1;
		}
	}
	for (size_t i = 0; i < n; i++)
		record_free(recs[i]);
	return rc;
}

/* Copy every frame of OLD into OUTS, split by writer. 0 or -1. */
static int spool_stream_copy(struct spool *s, struct spool_stream *old, struct spool_stream **outs)
{
	struct record **recs, **part = NULL;
	size_t n, cap = 0;
	int rc;

	while ((rc = spool_stream_next(old, &recs, &n)) > 0) {
		if (spool_stream_grow((void **)&part, &cap, n, sizeof(*part)) < 0) {
			for (size_t i = 0; i < n; i++)
				record_free(recs[i]);
			rc = -1;
			break;
		}
		if (spool_stream_route(s, outs, recs, n, part) < 0 ||
		    spool_stream_commit(old) < 0) {
			rc = -1;
			break;
		}
	}
	free(part);
	return rc;
}

/* Rename the complete re-split output (OUTS) to final names, or unlink it when !OK. */
static int spool_stream_publish(struct spool *s, struct spool_stream **outs, bool ok)
{
	char tmp[4096], final[4096];
	int rc = 0;

	for (int w = 0; w < s->nstreams; w++) {
		for (size_t i = 0; outs[w] && i < outs[w]->nsegs; i++) {
			const struct spool_seg *seg = &outs[w]->segs[i];

			if (spool_stream_path(s, w, seg->seq, true, tmp, sizeof(tmp)) < 0 ||
			    spool_stream_path(s, w, seg->seq, false, final, sizeof(final)) < 0)
				continue;
			if (ok ? rename(tmp, final) : unlink(tmp))
				rc = -1;
		}
	}
	spool_stream_sync_dir(s);
	return rc;
}

/* Delete the old segments F (after the marker is durable). */
static int spool_stream_unlink_all(struct spool *s, const struct spool_found *f)
{
	char path[4096];
	int rc = 0;

	for (size_t i = 0; i < f->n; i++)
		if (spool_stream_path(s, f->v[i].writer, f->v[i].seq, false, path,
				      sizeof(path)) < 0 || unlink(path) < 0)
			rc = -1;
	spool_stream_sync_dir(s);
	return rc;
}

/* Rewrite the segments F (oldest first) as streams for s->nstreams writers. */
static int spool_stream_resplit(struct spool *s, const struct spool_found *f)
{
	struct spool_stream *old = spool_stream_new(s, -1);
	struct spool_stream **outs = calloc((size_t)s->nstreams, sizeof(*outs));
	char marker[4096];
	int rc = old && outs ? 0 : -1;

	log_info("spool", "%zu segment%s from a run with another writer count: re-splitting "
		 "them for %d writer%s", f->n, f->n == 1 ? "" : "s", s->nstreams,
		 s->nstreams == 1 ? "" : "s");
	for (int w = 0; rc == 0 && w < s->nstreams; w++) {
		outs[w] = spool_stream_new(s, w);
		rc = outs[w] ? 0 : -1;
		if (outs[w])
			outs[w]->tmp = true;
	}
	if (rc == 0 && spool_stream_grow((void **)&old->segs, &old->capsegs, f->n,
					 sizeof(*old->segs)) == 0) {
		memcpy(old->segs, f->v, f->n * sizeof(*f->v));
		old->nsegs = f->n;
		old->keep = true;
		rc = spool_stream_copy(s, old, outs);
	} else {
		rc = -1;
	}
	if (rc == 0 && spool_stream_marker_write(s, f->v[f->n - 1].seq) < 0)
		rc = -1;
	rc |= outs ? spool_stream_publish(s, outs, rc == 0) : 0;
	if (rc == 0 && (spool_stream_unlink_all(s, f) < 0 ||
			spool_stream_marker_path(s, marker, sizeof(marker), false) < 0 ||
			unlink(marker) < 0))
		rc = -1;
	spool_stream_sync_dir(s);
	for (int w = 0; outs && w < s->nstreams; w++)
		spool_stream_free(outs[w]);
	free(outs);
	spool_stream_free(old);
	if (rc < 0)
		log_error("spool", "re-splitting the spool in %s failed: %s", s->dir,
			  strerror(errno));
	return rc;
}

static bool spool_stream_needs_resplit(const struct spool *s, const struct spool_found *f)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->v[i].nwriters != s->nstreams || f->v[i].writer >= s->nstreams)
			return true;
	return false;
}

/* Create the streams and hand each its segments from F. */
static int spool_stream_build(struct spool *s, const struct spool_found *f)
{
	uint64_t bytes = 0;

	s->streams = calloc((size_t)s->nstreams, sizeof(*s->streams));
	if (!s->streams)
		return -1;
	for (int w = 0; w < s->nstreams; w++)
		if (!(s->streams[w] = spool_stream_new(s, w)))
			return -1;
	for (size_t i = 0; i < f->n; i++) {
		struct spool_stream *st = s->streams[f->v[i].writer];

		if (spool_stream_grow((void **)&st->segs, &st->capsegs, st->nsegs + 1,
				      sizeof(*st->segs)) < 0)
			return -1;
		st->segs[st->nsegs++] = f->v[i];
		bytes += f->v[i].size;
	}
	atomic_store(&s->seg_bytes, bytes);
	if (f->n > 0)
		log_info("spool", "%zu segment%s (%llu bytes) left by an earlier run in %s: "
			 "they are replayed before new events", f->n, f->n == 1 ? "" : "s",
			 (unsigned long long)bytes, s->dir);
	return 0;
}

int spool_stream_recover(struct spool *s, int nwriters, uint64_t max_bytes)
{
	struct spool_found f = { 0 };
	int rc;

	s->max_bytes = max_bytes;
	s->seg_target = max_bytes / 16;
	if (s->seg_target < SPOOL_SEG_TARGET_MIN)
		s->seg_target = SPOOL_SEG_TARGET_MIN;
	if (s->seg_target > SPOOL_SEG_TARGET_MAX)
		s->seg_target = SPOOL_SEG_TARGET_MAX;
	s->nstreams = nwriters;
	rc = spool_stream_finish_resplit(s) < 0 || spool_stream_scan(s, &f) < 0 ? -1 : 0;
	if (rc == 0)
		atomic_store(&s->next_seq, f.n ? f.v[f.n - 1].seq + 1 : 1);
	if (rc == 0 && spool_stream_needs_resplit(s, &f))
		rc = spool_stream_resplit(s, &f) < 0 || spool_stream_scan(s, &f) < 0 ? -1 : 0;
	if (rc == 0)
		rc = spool_stream_build(s, &f);
	free(f.v);
	if (rc < 0)
		log_error("spool", "cannot recover the spool in %s (see above); not starting",
			  s->dir);
	return rc;
}
