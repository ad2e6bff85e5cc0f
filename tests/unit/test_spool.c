/*
 * test_spool: the spool's segment streams on a real directory.
 *
 * Round trip (records come back byte for byte as record_from_map built
 * them), ordering across many segments and a restart, segments deleted as
 * their frames commit, a corrupt tail and a corrupt middle frame (reported
 * with file and offset, the rest kept), a torn write, a failed append (cut
 * off again, RLIMIT_FSIZE makes the write fail), spool.max_bytes, the
 * re-split for another writer count and its crash recovery, and the frame
 * decoder refusing malformed payloads.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record.h"
#include "spool.h"
#include "spool_frame.h"
#include "unit.h"

static char base[64];
static int dir_counter;

/* A fresh empty spool directory path under BASE. */
static const char *fresh_dir(void)
{
	static char dir[128];

	snprintf(dir, sizeof(dir), "%s/s%d", base, dir_counter++);
	return dir;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

/* A record for event number I: its own mg_id, a few columns, an unknown key (mg_meta). */
static struct record *mk(int i)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked up;
	struct record *r = NULL;
	char id[32], prompt[64];
	struct record_ctx ctx = { .tag = "mega.generation", .tag_len = 15, .peer = "unix",
				  .recv_ns = 1700000000000000000ULL + (uint64_t)i };

	snprintf(id, sizeof(id), "ev-%d", i);
	snprintf(prompt, sizeof(prompt), "tab\there, newline\nthere, \xc3\xa9 %d", i);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	pack_str(&pk, "mg_id");
	pack_str(&pk, id);
	pack_str(&pk, "prompt");
	pack_str(&pk, prompt);
	pack_str(&pk, "latency_ms");
	msgpack_pack_int(&pk, i * 7);
	pack_str(&pk, "extra");
	msgpack_pack_int(&pk, i);
	pack_str(&pk, "mg_pass_id");
	pack_str(&pk, i % 2 ? "pass-odd" : "pass-even");
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS &&
	    record_from_map(&up.data, &ctx, &r, NULL) != 0)
		r = NULL;
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&sb);
	return r;
}

/* Same bytes from recv_ns to the end of the allocation (ack excluded). */
static bool same_record(const struct record *a, const struct record *b)
{
	size_t from = offsetof(struct record, recv_ns);

	return a->size == b->size && memcmp((const char *)a + from, (const char *)b + from,
					    a->size - from) == 0;
}

static struct spool *open_spool(const char *dir, int nwriters, uint64_t max_bytes)
{
	struct spool *s = spool_open(dir);

	if (s && spool_stream_recover(s, nwriters, max_bytes) < 0) {
		spool_close(s);
		return NULL;
	}
	return s;
}

/* Append events FIRST..FIRST+N-1 as one batch; the SPOOL_* status. */
static enum spool_status append_range(struct spool_stream *st, int first, int n)
{
	struct record *recs[512] = { 0 };
	enum spool_status rc;

	for (int i = 0; i < n; i++)
		recs[i] = mk(first + i);
	rc = spool_stream_append(st, recs, (size_t)n);
	for (int i = 0; i < n; i++)
		record_free(recs[i]);
	return rc;
}

/* Replay everything: check each event's number follows the last; commit each frame.
 * Returns the events replayed, or -1 when the order broke. */
static int replay_all(struct spool_stream *st, int *next_expected, int *frames)
{
	struct record **recs;
	size_t n;
	int total = 0, ok = 1;

	while (spool_stream_next(st, &recs, &n) > 0) {
		for (size_t i = 0; i < n; i++) {
			char want[32];

			snprintf(want, sizeof(want), "ev-%d", *next_expected);
			if (strcmp(record_get(recs[i], TABLE_GEN_ID), want) != 0) {
				fprintf(stderr, "replay: got %s, want %s\n",
					record_get(recs[i], TABLE_GEN_ID), want);
				ok = 0;
			}
			(*next_expected)++;
			record_free(recs[i]);
		}
		total += (int)n;
		if (frames)
			(*frames)++;
		CHECK(spool_stream_commit(st) == 0);
	}
	return ok ? total : -1;
}

static int count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	size_t sl = strlen(suffix);

	if (!d)
		return -1;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (strncmp(de->d_name, "spool-", 6) == 0 && l > sl &&
		    strcmp(de->d_name + l - sl, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* The path of the only segment in DIR (into BUF). */
static int only_segment(const char *dir, char *buf, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d)))
		if (strncmp(de->d_name, "spool-", 6) == 0 && n++ == 0 &&
		    (size_t)snprintf(buf, len, "%s/%s", dir, de->d_name) >= len)
			n = 2;    /* the path does not fit: fail */
	if (d)
		closedir(d);
	return n == 1 ? 0 : -1;
}

static off_t file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* ---- tests ------------------------------------------------------------ */

static void test_frame_round_trip(void)
{
	struct record *in[20], **out = NULL;
	size_t cap = 0, size;
	uint8_t *buf;
	int ok = 1;

	for (int i = 0; i < 20; i++)
		in[i] = mk(i);
	size = spool_frame_size(in, 20);
	buf = malloc(size);
	spool_frame_encode(buf, in, 20);
	CHECK(spool_frame_length(buf) == (int64_t)(size - SPOOL_FRAME_HEADER));
	CHECK(spool_frame_crc_ok(buf, (uint32_t)(size - SPOOL_FRAME_HEADER)));
	CHECK(spool_frame_decode(buf + SPOOL_FRAME_HEADER, size - SPOOL_FRAME_HEADER, &out,
				 &cap) == 20);
	for (int i = 0; i < 20; i++) {
		ok &= same_record(in[i], out[i]) && out[i]->ack == NULL;
		record_free(out[i]);
	}
	CHECK(ok);
	/* A flipped payload byte fails the CRC; malformed payloads are refused. */
	buf[size - 1] ^= 0x40;
	CHECK(!spool_frame_crc_ok(buf, (uint32_t)(size - SPOOL_FRAME_HEADER)));
	CHECK(spool_frame_decode(buf + SPOOL_FRAME_HEADER, size - SPOOL_FRAME_HEADER - 1, &out,
				 &cap) == -1);
	spool_frame_put32(buf + SPOOL_FRAME_HEADER, 1000000);   /* count beyond the bytes */
	CHECK(spool_frame_decode(buf + SPOOL_FRAME_HEADER, size - SPOOL_FRAME_HEADER, &out,
				 &cap) == -1);
	buf[0] = 'X';
	CHECK(spool_frame_length(buf) == -1);
	for (int i = 0; i < 20; i++)
		record_free(in[i]);
	free(out);
	free(buf);
}

static void test_round_trip_through_disk(void)
{
	const char *dir = fresh_dir();
	struct spool *s = open_spool(dir, 1, 1 << 20);
	struct spool_stream *st = spool_stream_get(s, 0);
	struct record *in[30], **out;
	size_t n = 0;
	int ok = 1;

	CHECK(st != NULL && !spool_stream_pending(st));
	CHECK(spool_stream_next(st, &out, &n) == 0);
	for (int i = 0; i < 30; i++)
		in[i] = mk(i);
	CHECK(spool_stream_append(st, in, 30) == SPOOL_OK);
	CHECK(spool_stream_pending(st));
	CHECK(spool_bytes(s) > 32);
	CHECK(spool_stream_next(st, &out, &n) == 1 && n == 30);
	for (size_t i = 0; i < n; i++) {
		ok &= same_record(in[i], out[i]);
		record_free(out[i]);
	}
	CHECK(ok);
	/* Without a commit the same frame comes back. */
	CHECK(spool_stream_next(st, &out, &n) == 1 && n == 30);
	CHECK(strcmp(record_get(out[0], TABLE_GEN_ID), "ev-0") == 0);
	for (size_t i = 0; i < n; i++)
		record_free(out[i]);
	CHECK(spool_stream_commit(st) == 0);
	CHECK(!spool_stream_pending(st));
	CHECK(spool_bytes(s) == 0);
	CHECK(count_files(dir, ".seg") == 0);
	for (int i = 0; i < 30; i++)
		record_free(in[i]);
	spool_close(s);
}

static void test_order_rotation_and_restart(void)
{
	const char *dir = fresh_dir();
	struct spool *s = open_spool(dir, 1, 1 << 20);   /* 64 KiB segments */
	struct spool_stream *st = spool_stream_get(s, 0);
	int next = 0, frames = 0, appended = 0, files;
	uint64_t bytes;

	for (int b = 0; b < 300; b++) {
		int n = 1 + b % 13;

		CHECK(append_range(st, appended, n) == SPOOL_OK);
		appended += n;
	}
	files = count_files(dir, ".seg");
	CHECK(files > 3);
	bytes = spool_bytes(s);
	spool_close(s);

	/* A restart finds the same segments and replays them oldest first. */
	s = open_spool(dir, 1, 1 << 20);
	st = spool_stream_get(s, 0);
	CHECK(spool_bytes(s) == bytes);
	CHECK(spool_stream_pending(st));
	/* New appends go after the old segments. */
	CHECK(append_range(st, appended, 5) == SPOOL_OK);
	appended += 5;
	CHECK(replay_all(st, &next, &frames) == appended);
	CHECK(frames == 301);
	CHECK(next == appended);
	CHECK(count_files(dir, ".seg") == 0);
	CHECK(spool_bytes(s) == 0);
	spool_close(s);
}

static void test_segments_deleted_after_commit_only(void)
{
	const char *dir = fresh_dir();
	struct spool *s = open_spool(dir, 1, 1 << 20);
	struct spool_stream *st = spool_stream_get(s, 0);
	struct record **recs;
	size_t n;
	int files, deleted = 0;

	for (int b = 0; b < 200; b++)
		CHECK(append_range(st, b * 10, 10) == SPOOL_OK);
	files = count_files(dir, ".seg");
	/* Reading without committing deletes nothing. */
	CHECK(spool_stream_next(st, &recs, &n) == 1);
	for (size_t i = 0; i < n; i++)
		record_free(recs[i]);
	CHECK(count_files(dir, ".seg") == files);
	CHECK(spool_stream_commit(st) == 0);
	while (spool_stream_next(st, &recs, &n) > 0) {
		int before = count_files(dir, ".seg");

		for (size_t i = 0; i < n; i++)
			record_free(recs[i]);
		CHECK(spool_stream_commit(st) == 0);
		deleted += count_files(dir, ".seg") < before;
	}
	CHECK(deleted == files);
	spool_close(s);
}

struct replay_arg {
	const char *dir;
	int events;
	int next;
	uint64_t corrupt;
};

static void replay_dir(void *p)
{
	struct replay_arg *a = p;
	struct spool *s = open_spool(a->dir, 1, 1 << 20);
	struct spool_stream *st = spool_stream_get(s, 0);

	a->events = replay_all(st, &a->next, NULL);
	a->corrupt = spool_stream_corrupt(st);
	spool_close(s);
}

/* Five batches of 10 in one segment; returns the segment path and frame offsets. */
static void five_batches(const char *dir, char *seg, size_t len, off_t offs[6])
{
	struct spool *s = open_spool(dir, 1, 1 << 20);
	struct spool_stream *st = spool_stream_get(s, 0);

	for (int b = 0; b < 5; b++) {
		CHECK(append_range(st, b * 10, 10) == SPOOL_OK);
		if (b == 0)
			CHECK(only_segment(dir, seg, len) == 0);
		offs[b + 1] = file_size(seg);
	}
	offs[0] = 32;
	spool_close(s);
}

static void flip_byte(const char *path, off_t at)
{
	int fd = open(path, O_RDWR);
	uint8_t c;

	CHECK(pread(fd, &c, 1, at) == 1);
	c ^= 0x01;
	CHECK(pwrite(fd, &c, 1, at) == 1);
	close(fd);
}

static void test_corrupt_tail(void)
{
	const char *dir = fresh_dir();
	char seg[256], want[320];
	off_t offs[6];
	struct replay_arg a = { .dir = dir };
	char *err;

	five_batches(dir, seg, sizeof(seg), offs);
	flip_byte(seg, offs[4] + 40);         /* inside the last frame's payload */
	err = unit_capture_stderr(replay_dir, &a);
	CHECK(a.events == 40);                /* the four frames before it */
	CHECK(a.corrupt == 1);
	snprintf(want, sizeof(want), "%s: offset %lld: checksum mismatch", seg, (long long)offs[4]);
	CHECK_CONTAINS(err, want);
	free(err);
	CHECK(count_files(dir, ".seg") == 0);
}

static void test_corrupt_middle_reads_on(void)
{
	const char *dir = fresh_dir();
	char seg[256], want[320];
	off_t offs[6];
	struct replay_arg a = { .dir = dir };
	char *err;

	five_batches(dir, seg, sizeof(seg), offs);
	flip_byte(seg, offs[1] + 20);         /* the second frame */
	err = unit_capture_stderr(replay_dir, &a);
	/* Frames 1, 3, 4, 5 replay; the order check sees the gap of ten. */
	CHECK(a.events == -1);
	CHECK(a.next == 40);
	CHECK(a.corrupt == 1);
	snprintf(want, sizeof(want), "offset %lld: checksum mismatch; %lld bytes skipped, "
		 "reading on", (long long)offs[1], (long long)(offs[2] - offs[1]));
	CHECK_CONTAINS(err, want);
	free(err);
}

static void test_torn_write(void)
{
	const char *dir = fresh_dir();
	char seg[256], want[320];
	off_t offs[6];
	struct replay_arg a = { .dir = dir };
	char *err;

	five_batches(dir, seg, sizeof(seg), offs);
	CHECK(truncate(seg, offs[4] + (offs[5] - offs[4]) / 2) == 0);   /* half the last frame */
	err = unit_capture_stderr(replay_dir, &a);
	CHECK(a.events == 40 && a.next == 40);
	CHECK(a.corrupt == 1);
	snprintf(want, sizeof(want), "offset %lld: torn frame", (long long)offs[4]);
	CHECK_CONTAINS(err, want);
	free(err);

	/* Torn inside the frame header: the same. */
	dir = fresh_dir();
	five_batches(dir, seg, sizeof(seg), offs);
	CHECK(truncate(seg, offs[4] + 5) == 0);
	a = (struct replay_arg){ .dir = dir };
	free(unit_capture_stderr(replay_dir, &a));
	CHECK(a.events == 40 && a.corrupt == 1);
}

static void test_failed_append_is_cut_off(void)
{
	const char *dir = fresh_dir();
	struct spool *s = open_spool(dir, 1, 1 << 20);
	struct spool_stream *st = spool_stream_get(s, 0);
	struct rlimit old, lim;
	char seg[256];
	off_t before;
	uint64_t bytes;
	int next = 0;

	CHECK(append_range(st, 0, 10) == SPOOL_OK);
	CHECK(only_segment(dir, seg, sizeof(seg)) == 0);
	before = file_size(seg);
	bytes = spool_bytes(s);
	/* The file may not grow past 100 more bytes: the next write fails part-way. */
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)before + 100;
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	CHECK(append_range(st, 10, 10) == SPOOL_IO_ERROR);
	CHECK(spool_stream_errno(st) == EFBIG);
	CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
	CHECK(file_size(seg) == before);
	CHECK(spool_bytes(s) == bytes);
	/* The stream goes on: the retried batch lands right after the first. */
	CHECK(append_range(st, 10, 10) == SPOOL_OK);
	CHECK(replay_all(st, &next, NULL) == 20);
	CHECK(spool_stream_corrupt(st) == 0);
	spool_close(s);
}

static void test_max_bytes(void)
{
	const char *dir = fresh_dir();
	struct spool *s = open_spool(dir, 1, 1 << 20);
	struct spool_stream *st = spool_stream_get(s, 0);
	struct record **recs;
	int batches = 0, next = 0;
	uint64_t bytes;
	size_t n;

	while (append_range(st, batches * 50, 50) == SPOOL_OK)
		batches++;
	CHECK(batches > 10);
	bytes = spool_bytes(s);
	CHECK(bytes <= 1 << 20);
	CHECK(bytes > (1 << 20) - 3 * 8192);
	/* Full stays full, and writes nothing. */
	CHECK(append_range(st, batches * 50, 50) == SPOOL_FULL);
	CHECK(spool_bytes(s) == bytes);
	/* Replaying frees whole segments; then there is room again. */
	while (spool_bytes(s) == bytes && spool_stream_next(st, &recs, &n) > 0) {
		for (size_t i = 0; i < n; i++)
			record_free(recs[i]);
		next += (int)n;
		CHECK(spool_stream_commit(st) == 0);
	}
	CHECK(spool_bytes(s) < bytes);
	CHECK(append_range(st, batches * 50, 50) == SPOOL_OK);
	batches++;
	CHECK(replay_all(st, &next, NULL) >= 0);
	CHECK(next == batches * 50);
	spool_close(s);
}

/* Replay writer W's stream of S; every record must hash to W, in increasing order. */
static int replay_writer(struct spool *s, int w, int nwriters)
{
	struct spool_stream *st = spool_stream_get(s, w);
	struct record **recs;
	size_t n;
	int total = 0, last = -1, ok = 1;

	while (spool_stream_next(st, &recs, &n) > 0) {
		for (size_t i = 0; i < n; i++) {
			int num = atoi(record_get(recs[i], TABLE_GEN_ID) + 3);

			ok &= recs[i]->id_hash % (uint32_t)nwriters == (uint32_t)w && num > last;
			last = num;
			record_free(recs[i]);
		}
		total += (int)n;
		CHECK(spool_stream_commit(st) == 0);
	}
	return ok ? total : -1;
}

static void test_resplit_for_other_writer_count(void)
{
	const char *dir = fresh_dir();
	struct spool *s = open_spool(dir, 1, 1 << 20);
	int total = 0;

	for (int b = 0; b < 100; b++)
		CHECK(append_range(spool_stream_get(s, 0), b * 20, 20) == SPOOL_OK);
	spool_close(s);
	s = open_spool(dir, 3, 1 << 20);
	CHECK(s != NULL);
	CHECK(count_files(dir, ".tmp") == 0);
	for (int w = 0; w < 3; w++) {
		int got = replay_writer(s, w, 3);

		CHECK(got > 0);
		total += got;
	}
	CHECK(total == 2000);
	CHECK(count_files(dir, ".seg") == 0);
	spool_close(s);
}

/* Copy file FROM to TO. */
static void copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	ssize_t n;

	while ((n = read(in, buf, sizeof(buf))) > 0)
		CHECK(write(out, buf, (size_t)n) == n);
	close(in);
	close(out);
}

static void test_interrupted_resplit(void)
{
	const char *dir = fresh_dir();
	char seg[256], tmp[320], marker[320];
	struct spool *s = open_spool(dir, 1, 1 << 20);
	int next = 0;
	FILE *fp;

	CHECK(append_range(spool_stream_get(s, 0), 0, 10) == SPOOL_OK);
	spool_close(s);
	CHECK(only_segment(dir, seg, sizeof(seg)) == 0);

	/* Crash before the marker: a stray .tmp output is removed, the old segment stays. */
	snprintf(tmp, sizeof(tmp), "%s/spool-0-0000000007.seg.tmp", dir);
	copy_file(seg, tmp);
	s = open_spool(dir, 1, 1 << 20);
	CHECK(count_files(dir, ".tmp") == 0);
	CHECK(replay_all(spool_stream_get(s, 0), &next, NULL) == 10);
	spool_close(s);

	/* Crash after the marker: the .tmp output is published, the old one deleted.
	 * (The output is the old segment's bytes with a fixed-up name and header.) */
	dir = fresh_dir();
	s = open_spool(dir, 1, 1 << 20);
	CHECK(append_range(spool_stream_get(s, 0), 0, 10) == SPOOL_OK);
	CHECK(append_range(spool_stream_get(s, 0), 10, 10) == SPOOL_OK);
	spool_close(s);
	CHECK(only_segment(dir, seg, sizeof(seg)) == 0);
	snprintf(tmp, sizeof(tmp), "%s/spool-0-0000000002.seg.tmp", dir);
	copy_file(seg, tmp);
	CHECK(truncate(seg, 100) == 0);        /* the old one is now visibly not the source */
	snprintf(marker, sizeof(marker), "%s/resplit.commit", dir);
	fp = fopen(marker, "w");
	fprintf(fp, "1\n");
	fclose(fp);
	s = open_spool(dir, 1, 1 << 20);
	CHECK(s != NULL);
	CHECK(access(marker, F_OK) != 0);
	CHECK(access(seg, F_OK) != 0);
	CHECK(count_files(dir, ".tmp") == 0);
	/* Its header names sequence 1, so it counts as damaged and is re-split: still 20. */
	next = 0;
	CHECK(s && replay_all(spool_stream_get(s, 0), &next, NULL) == 20);
	spool_close(s);
}

static void test_empty_segment_removed(void)
{
	const char *dir = fresh_dir();
	char path[320];
	struct spool *s = open_spool(dir, 1, 1 << 20);
	int fd;

	spool_close(s);
	snprintf(path, sizeof(path), "%s/spool-0-0000000004.seg", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0640);
	CHECK(write(fd, "MISPOOL1", 8) == 8);   /* torn while being created */
	close(fd);
	s = open_spool(dir, 1, 1 << 20);
	CHECK(s != NULL);
	CHECK(access(path, F_OK) != 0);
	CHECK(!spool_stream_pending(spool_stream_get(s, 0)));
	spool_close(s);
}

int main(void)
{
	char cmd[128];

	snprintf(base, sizeof(base), "/tmp/test_spool.XXXXXX");
	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	test_frame_round_trip();
	test_round_trip_through_disk();
	test_order_rotation_and_restart();
	test_segments_deleted_after_commit_only();
	test_corrupt_tail();
	test_corrupt_middle_reads_on();
	test_torn_write();
	test_failed_append_is_cut_off();
	test_max_bytes();
	test_resplit_for_other_writer_count();
	test_interrupted_resplit();
	test_empty_segment_removed();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", base);
	return unit_done("test_spool");
}
