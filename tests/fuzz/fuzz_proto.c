/*
 * fuzz_proto.c: libFuzzer target for the wire protocol as a client reaches
 * it: the shared-key handshake reader (proto_auth), the stream decoder and
 * framing (proto), and the intake with event validation (record) and the
 * dead-letter path (spool), all real, against a real queue.
 *
 * The first input byte is a control byte: bit 7 routes the stream through
 * the PING reader first (as on a TCP connection with listen.shared_key;
 * the nonce is random, so it can only fail or wait, which is the part that
 * faces unauthenticated peers), bits 0-1 pick listen.max_event_bytes and
 * bits 2-4 how the rest is cut into reads. Every iteration drains the
 * queue the way a writer does (ack references released, records freed), so
 * memory use is flat and LeakSanitizer sees every leak at exit. The spool
 * lives in a fresh directory under /dev/shm when it exists (the dead-letter
 * file is fdatasync'ed per line; tmpfs makes that cheap), truncated every
 * few thousand runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "ack.h"
#include "intake.h"
#include "log.h"
#include "proto.h"
#include "proto_auth.h"
#include "queue.h"
#include "record.h"
#include "spool.h"

#define FUZZ_NQUEUES 2
#define FUZZ_QUEUE_EVENTS 64      /* small, so PROTO_BLOCKED and resuming are exercised */
#define FUZZ_TRUNCATE_EVERY 4096  /* runs between dead-letter file truncations */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct proto_env fuzz_env;
static struct queue *fuzz_queues[FUZZ_NQUEUES];
static struct ackq *fuzz_ackq;
static char fuzz_dir[64];
static struct spool *fuzz_spool;
static struct intake *fuzz_intake;
static int fuzz_owner;
static unsigned long fuzz_runs;

static void fuzz_die(const char *what)
{
	fprintf(stderr, "fuzz_proto: %s\n", what);
	abort();
}

/* At exit: remove the dead-letter file and the directory (libFuzzer exits through exit()). */
static void fuzz_cleanup(void)
{
	char path[128];

	snprintf(path, sizeof(path), "%s", spool_dead_letter_path(fuzz_spool));
	spool_close(fuzz_spool);
	unlink(path);
	rmdir(fuzz_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_LEVEL_ERROR); /* warnings are every bad input's normal outcome */
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/fuzz_proto.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(fuzz_dir))
		fuzz_die("mkdtemp failed");
	fuzz_ackq = ackq_new();
	fuzz_spool = spool_open(fuzz_dir);
	if (!fuzz_ackq || !fuzz_spool)
		fuzz_die("cannot open the ack channel or the spool");
	for (int i = 0; i < FUZZ_NQUEUES; i++) {
		fuzz_queues[i] = queue_new(FUZZ_QUEUE_EVENTS, 1 << 30, fuzz_ackq);
		if (!fuzz_queues[i])
			fuzz_die("cannot create a queue");
	}
	fuzz_intake = intake_new(NULL, fuzz_queues, FUZZ_NQUEUES, fuzz_spool, fuzz_ackq);
	if (!fuzz_intake)
		fuzz_die("cannot create the intake");
	fuzz_env.intake = fuzz_intake;
	atexit(fuzz_cleanup);
	return 0;
}

/* Be the writer: pop everything, release the ack references, free. */
static void fuzz_drain(void)
{
	struct record *batch[FUZZ_QUEUE_EVENTS * 4];
	size_t n;

	for (int i = 0; i < FUZZ_NQUEUES; i++) {
		while ((n = queue_pop_batch(fuzz_queues[i], batch, sizeof(batch) / sizeof(batch[0]),
					    0)) > 0) {
			for (size_t k = 0; k < n; k++) {
				if (batch[k]->ack)
					ack_release(fuzz_ackq, batch[k]->ack);
				record_free(batch[k]);
			}
		}
	}
}

/* Be the loop: take every finished ack and free it. */
static void fuzz_free_acks(void)
{
	intake_flush(fuzz_intake);
}

/* Feed IN to the decoder until it wants more bytes or closes; 0, or -1 on close. */
static int fuzz_decode(struct proto_conn *pc, struct evbuffer *in)
{
	for (;;) {
		enum proto_status st = proto_run(pc, in);

		fuzz_drain();
		if (st == PROTO_OK)
			return 0;
		if (st == PROTO_CLOSE)
			return -1;
		in = NULL; /* BLOCKED: the bytes are in the decoder; resume with none */
	}
}

/* The handshake reader over one read; 1 passed, 0 waiting, -1 refused. */
static int fuzz_auth(struct proto_auth *auth, struct evbuffer *in, struct evbuffer *out)
{
	enum proto_auth_status st = proto_auth_run(auth, in, out);

	evbuffer_drain(out, evbuffer_get_length(out));
	return st == PROTO_AUTH_DONE ? 1 : st == PROTO_AUTH_WAIT ? 0 : -1;
}

/* Run the stream P/N cut into reads of STEP bytes (0: one read). */
static void fuzz_stream(struct proto_conn *pc, struct proto_auth *auth, const uint8_t *p,
			size_t n, size_t step)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	size_t off = 0;
	int authed = auth ? 0 : 1;

	if (!in || !out)
		fuzz_die("evbuffer_new failed");
	if (auth && proto_auth_helo(auth, out) < 0)
		fuzz_die("proto_auth_helo failed");
	do {
		size_t take = step == 0 || n - off < step ? n - off : step;

		if (evbuffer_add(in, p + off, take) < 0)
			fuzz_die("evbuffer_add failed");
		off += take;
		if (!authed && (authed = fuzz_auth(auth, in, out)) < 0)
			break;
		if (authed && fuzz_decode(pc, in) < 0)
			break;
	} while (off < n);
	evbuffer_free(in);
	evbuffer_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t max_bytes[4] = { 64, 512, 4096, 1 << 20 };
	static const size_t steps[8] = { 0, 1, 2, 3, 7, 64, 1000, 4096 };
	struct proto_auth *auth = NULL;
	struct proto_conn *pc;
	uint8_t ctl;

	if (size < 1)
		return 0;
	ctl = data[0];
	fuzz_env.max_event_bytes = max_bytes[ctl & 3];
	pc = proto_conn_new(&fuzz_env, NULL, &fuzz_owner, "tcp:fuzz", 1);
	if ((ctl & 0x80) && !(auth = proto_auth_new("fuzz-key", "tcp:fuzz", 1)))
		fuzz_die("proto_auth_new failed");
	if (!pc)
		fuzz_die("proto_conn_new failed");
	fuzz_stream(pc, auth, data + 1, size - 1, steps[(ctl >> 2) & 7]);
	proto_conn_free(pc);
	proto_auth_free(auth);
	spool_dead_letter_drain(fuzz_spool); /* dead-letter lines hold ack references */
	fuzz_drain();
	fuzz_free_acks();
	if (++fuzz_runs % FUZZ_TRUNCATE_EVERY == 0 &&
	    truncate(spool_dead_letter_path(fuzz_spool), 0) < 0)
		fuzz_die("cannot truncate the dead-letter file");
	return 0;
}
