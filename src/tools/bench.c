/*
 * bench.c: megaingest-bench, the load generator of `make bench`.
 *
 * It opens N connections to megaingestd (TCP or Unix), sends Forward-mode
 * messages [tag, [[time, record], ...], {"chunk": id}] of M events each,
 * keeps at most W of them in flight per connection, and times every chunk
 * from send (or, when paced with -r, from the moment the schedule wanted it
 * sent, so a stalled daemon cannot hide behind a client that waited: no
 * coordinated omission) to its {"ack": id}. Latencies are kept per chunk and
 * sorted at the end, so p50/p99/p999 are exact nearest-rank figures, not
 * averages. One thread, one libevent loop: the client must stay cheap, as
 * it shares the machine with the daemon and PostgreSQL.
 *
 * The events are a realistic mix (70% generation, 15% session, 10%
 * feedback, 5% credit_transaction; ~200-character prompts, a small meta map,
 * ~1,000 pass ids) built from a seeded generator, each with a fresh
 * UUIDv7-shaped mg_id so that every event is a new row. The same generator
 * writes COPY text with --dump-copy, so the bench script can load the very
 * same kind of rows straight into PostgreSQL for the ceiling.
 *
 * With --http it POSTs each chunk as a JSON array to /v1/events instead,
 * over keep-alive HTTP/1.1 connections, one request in flight on each, and
 * times the request -> answer (the daemon answers once the events are
 * committed): bench_http.c.
 *
 * This file is the load loop: connections, chunks, acks, timers, the
 * report, the options and main. The mix and its encoders are bench_gen.c,
 * behind bench_private.h; the seam is the generator's state (struct
 * bench_gen), so neither half needs the other's internals.
 *
 * Output: one "name value" line per metric (stable, for scripts), or one
 * JSON object with --json. Exit 0 when every chunk was acked, 1 when a
 * chunk was not acked within --timeout or a connection failed, 2 on usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <msgpack.h>

#include "bench_private.h"
#include "log.h"

#define BENCH_TAG "mega.bench"
#define BENCH_TICK_US 1000           /* pacing timer period */
#define BENCH_WATCH_US 200000        /* timeout / duration check period */

/* ---- small helpers ----------------------------------------------------- */

int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- sending ------------------------------------------------------------- */

void bench_fail(struct bench *b, const char *why)
{
	if (!b->failed)
		log_error("bench", "%s; stopping", why);
	b->failed = true;
	event_base_loopbreak(b->base);
}

/* True while -n and -d both allow more events to be sent. */
static bool bench_more_to_send(const struct bench *b, int64_t now)
{
	if (b->o.total > 0 && b->events_sent >= b->o.total)
		return false;
	if (b->o.duration > 0 && now - b->start_ns >= (int64_t)(b->o.duration * 1e9))
		return false;
	return true;
}

/* Events the next chunk may carry now (0: none, for count, time or pace). */
static uint32_t bench_next_chunk_events(const struct bench *b, int64_t now)
{
	int64_t n = b->o.chunk;

	if (!bench_more_to_send(b, now))
		return 0;
	if (b->o.total > 0 && b->o.total - b->events_sent < n)
		n = b->o.total - b->events_sent;
	if (b->o.rate > 0 &&
	    (double)(now - b->start_ns) < (double)b->events_sent / b->o.rate * 1e9)
		return 0;
	return (uint32_t)n;
}

void bench_chunk_id(const struct bench *b, uint64_t seq, char id[BENCH_CHUNK_ID_LEN + 1])
{
	bench_hex_put(id, b->chunk_salt, 8);
	bench_hex_put(id + 8, seq, 16);
	id[BENCH_CHUNK_ID_LEN] = '\0';
}

/* Encode one chunk of N events into b->sbuf; 0 or -1. */
static int bench_encode_chunk(struct bench *b, uint32_t n, uint64_t seq)
{
	struct bench_event ev;
	char id[BENCH_CHUNK_ID_LEN + 1];
	int rc = 0;

	bench_chunk_id(b, seq, id);
	msgpack_sbuffer_clear(&b->sbuf);
	rc |= msgpack_pack_array(&b->pk, 3);
	rc |= bench_pack_str(&b->pk, BENCH_TAG, strlen(BENCH_TAG));
	rc |= msgpack_pack_array(&b->pk, n);
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		bench_event_next(&b->gen, &ev);
		rc |= bench_pack_event(&b->pk, &ev);
	}
	rc |= msgpack_pack_map(&b->pk, 1);
	rc |= bench_pack_str(&b->pk, "chunk", 5);
	rc |= bench_pack_str(&b->pk, id, BENCH_CHUNK_ID_LEN);
	return rc ? -1 : 0;
}

/*
 * Send LEN bytes on C: straight to the socket when nothing is queued before
 * them, so a paced connection costs one send and no pair of epoll_ctl calls
 * a chunk (with thousands of connections the load generator would otherwise
 * take the CPU the daemon is measured on). What the socket does not take now
 * is queued in the bufferevent, which also meets any error. 0 or -1 (out of
 * memory).
 */
static int bench_conn_write(struct bench_conn *c, const char *data, size_t len)
{
	ssize_t n = 0;

	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		n = send(bufferevent_getfd(c->bev), data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0)
			n = 0; /* EAGAIN, or an error the bufferevent will report */
	}
	return (size_t)n == len ? 0 : bufferevent_write(c->bev, data + n, len - (size_t)n);
}

/* Encode chunk CH of N events as a Forward message and queue it on C;
 * 0 or -1 (the run has failed). */
static int bench_forward_send(struct bench_conn *c, struct bench_chunk *ch, uint32_t n)
{
	struct bench *b = c->b;

	if (bench_encode_chunk(b, n, ch->seq) < 0) {
		bench_fail(b, "out of memory encoding a chunk");
		return -1;
	}
	if (bench_conn_write(c, b->sbuf.data, b->sbuf.size) < 0) {
		bench_fail(b, "cannot queue a chunk for sending (out of memory)");
		return -1;
	}
	return 0;
}

/* Send chunks on C while its window and the schedule allow. True when
 * the schedule (or the count) allows nothing more now, for any connection. */
static bool bench_conn_fill(struct bench_conn *c)
{
	struct bench *b = c->b;

	while (!b->failed && c->connected && c->ninflight < b->o.window) {
		int64_t now = bench_now_ns();
		uint32_t n = bench_next_chunk_events(b, now);
		struct bench_chunk *ch = &c->inflight[c->ninflight];

		if (n == 0)
			return true;
		ch->seq = b->chunk_seq++;
		if ((b->o.http ? bench_http_send(c, ch, n) : bench_forward_send(c, ch, n)) < 0)
			return true;
		ch->sent_ns = bench_now_ns();
		ch->t0_ns = b->o.rate > 0 ?
			    b->start_ns + (int64_t)((double)b->events_sent / b->o.rate * 1e9) :
			    ch->sent_ns;
		ch->events = n;
		c->ninflight++;
		b->events_sent += n;
	}
	return b->failed;
}

/* Round robin from next_fill. The schedule is global, so the first
 * connection it refuses ends the pass and is first in line at the next
 * one: with thousands of paced connections each gets its turn, and a
 * timer tick does not walk all of them to send nothing. */
static void bench_fill_all(struct bench *b)
{
	int n = b->o.conns;

	for (int i = 0; i < n; i++) {
		int k = (b->next_fill + i) % n;

		if (bench_conn_fill(&b->conns[k])) {
			b->next_fill = k;
			return;
		}
	}
	b->next_fill = (b->next_fill + 1) % n;
}

/* Nothing left to send and nothing in flight: the run is over. */
static void bench_check_done(struct bench *b)
{
	if (bench_more_to_send(b, bench_now_ns()))
		return;
	for (int i = 0; i < b->o.conns; i++)
		if (b->conns[i].ninflight > 0)
			return;
	event_base_loopbreak(b->base);
}

/* ---- acks ----------------------------------------------------------------- */

static int bench_lat_add(struct bench *b, int64_t ns)
{
	if (b->nlat == b->lat_cap) {
		size_t cap = b->lat_cap ? b->lat_cap * 2 : 4096;
		int64_t *p = realloc(b->lat_ns, cap * sizeof(*p));

		if (!p)
			return -1;
		b->lat_ns = p;
		b->lat_cap = cap;
	}
	b->lat_ns[b->nlat++] = ns;
	return 0;
}

/* The chunk sequence in ack value V, or -1 if V is not one of our ids. */
static int64_t bench_ack_seq(const struct bench *b, const msgpack_object *v)
{
	char salt[8];
	const char *s;
	uint64_t seq = 0;

	if (v->type != MSGPACK_OBJECT_STR && v->type != MSGPACK_OBJECT_BIN)
		return -1;
	s = v->type == MSGPACK_OBJECT_STR ? v->via.str.ptr : v->via.bin.ptr;
	if ((v->type == MSGPACK_OBJECT_STR ? v->via.str.size : v->via.bin.size) !=
	    BENCH_CHUNK_ID_LEN)
		return -1;
	bench_hex_put(salt, b->chunk_salt, 8);
	if (memcmp(s, salt, 8) != 0)
		return -1;
	for (int i = 8; i < BENCH_CHUNK_ID_LEN; i++) {
		const char *p = strchr(bench_hex, s[i]);

		if (!p || !*p)
			return -1;
		seq = seq << 4 | (uint64_t)(p - bench_hex);
	}
	return seq > INT64_MAX ? -1 : (int64_t)seq;
}

int bench_chunk_answered(struct bench_conn *c, int slot, uint32_t acked, bool ok)
{
	struct bench *b = c->b;
	const struct bench_chunk *ch = &c->inflight[slot];
	int64_t now = bench_now_ns();

	if (ok) {
		if (bench_lat_add(b, now - ch->t0_ns) < 0)
			return -1;
		if (b->lat_log)
			fprintf(b->lat_log, "%.3f %.3f %" PRIu32 " %.3f\n",
				(double)(ch->t0_ns - b->start_ns) / 1e6,
				(double)(now - ch->t0_ns) / 1e6, ch->events,
				(double)(ch->sent_ns - ch->t0_ns) / 1e6);
		b->chunks_acked++;
		b->last_ack_ns = now;
	}
	b->events_acked += acked;
	c->inflight[slot] = c->inflight[--c->ninflight];
	return 0;
}

/* Handle one value from the daemon: must be {"ack": id} for a chunk in flight. */
static int bench_on_value(struct bench_conn *c, const msgpack_object *o)
{
	struct bench *b = c->b;
	int64_t seq = -1;

	if (o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 1) {
		const msgpack_object_kv *kv = &o->via.map.ptr[0];

		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 3 &&
		    memcmp(kv->key.via.str.ptr, "ack", 3) == 0)
			seq = bench_ack_seq(b, &kv->val);
	}
	for (int i = 0; seq >= 0 && i < c->ninflight; i++) {
		if (c->inflight[i].seq != (uint64_t)seq)
			continue;
		return bench_chunk_answered(c, i, c->inflight[i].events, true);
	}
	log_error("bench", "conn=%d: unexpected reply (not an ack for a chunk in flight)",
		  c->idx);
	return -1;
}

static void bench_read_cb(struct bufferevent *bev, void *arg)
{
	struct bench_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	msgpack_unpacked res;
	msgpack_unpack_return ret;
	size_t len = evbuffer_get_length(in);

	if (!msgpack_unpacker_reserve_buffer(&c->unp, len)) {
		bench_fail(c->b, "out of memory reading acks");
		return;
	}
	if (evbuffer_remove(in, msgpack_unpacker_buffer(&c->unp), len) != (int)len) {
		bench_fail(c->b, "cannot read from the connection buffer");
		return;
	}
	msgpack_unpacker_buffer_consumed(&c->unp, len);
	msgpack_unpacked_init(&res);
	while ((ret = msgpack_unpacker_next(&c->unp, &res)) == MSGPACK_UNPACK_SUCCESS) {
		if (bench_on_value(c, &res.data) < 0) {
			ret = MSGPACK_UNPACK_PARSE_ERROR;
			break;
		}
	}
	msgpack_unpacked_destroy(&res);
	if (ret != MSGPACK_UNPACK_CONTINUE) {
		bench_fail(c->b, "the daemon sent something that is not an ack");
		return;
	}
	bench_conn_next(c);
}

void bench_conn_next(struct bench_conn *c)
{
	bench_conn_fill(c);
	bench_check_done(c->b);
}

/* ---- connections ------------------------------------------------------------ */

static void bench_start(struct bench *b)
{
	struct timeval tick = { 0, BENCH_TICK_US };

	b->started = true;
	b->start_ns = bench_now_ns();
	b->last_ack_ns = b->start_ns;
	if (b->o.rate > 0 && event_add(b->pace_ev, &tick) < 0) {
		bench_fail(b, "cannot arm the pacing timer");
		return;
	}
	bench_fill_all(b);
	bench_check_done(b);
}

static void bench_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	bench_start(arg);
}

/* Every connection is up: start, or with --idle hold them idle first.
 * HTTP connections open with their first request, from inside the loop:
 * that start waits for the loop too (a timer of 0). */
static void bench_all_connected(struct bench *b)
{
	struct timeval tv = { (time_t)b->o.idle,
			      (suseconds_t)((b->o.idle - (double)(time_t)b->o.idle) * 1e6) };

	if (b->o.idle <= 0 && !b->o.http) {
		bench_start(b);
		return;
	}
	if (b->o.idle > 0)
		log_info("bench", "%d connections up; idle for %.1f s", b->o.conns, b->o.idle);
	b->idle_ev = evtimer_new(b->base, bench_idle_cb, b);
	if (!b->idle_ev || evtimer_add(b->idle_ev, &tv) < 0)
		bench_fail(b, "cannot arm the idle timer");
}

static void bench_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct bench_conn *c = arg;
	char why[160];

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		c->connected = true;
		if (++c->b->nconnected == c->b->o.conns)
			bench_all_connected(c->b);
		return;
	}
	snprintf(why, sizeof(why), "conn=%d: %s%s%s", c->idx,
		 (what & BEV_EVENT_EOF) ? "closed by the daemon" : "connection error",
		 (what & BEV_EVENT_ERROR) ? ": " : "",
		 (what & BEV_EVENT_ERROR) ?
		 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()) : "");
	c->connected = false;
	bench_fail(c->b, why);
}

/* Resolve -H host:port or -U path into SA; 0 or -1 (logged). */
static int bench_address(const struct bench_opts *o, struct sockaddr_storage *sa,
			 socklen_t *salen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	char host[256];
	const char *colon;
	int rc;

	if (o->unix_path) {
		struct sockaddr_un *un = (struct sockaddr_un *)sa;

		if (strlen(o->unix_path) >= sizeof(un->sun_path)) {
			log_error("bench", "-U %s: path too long for a Unix socket", o->unix_path);
			return -1;
		}
		memset(un, 0, sizeof(*un));
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, o->unix_path, strlen(o->unix_path));
		*salen = sizeof(*un);
		return 0;
	}
	colon = strrchr(o->host, ':');
	if (!colon || (size_t)(colon - o->host) >= sizeof(host) || colon == o->host) {
		log_error("bench", "-H %s: expected host:port", o->host);
		return -1;
	}
	memcpy(host, o->host, (size_t)(colon - o->host));
	host[colon - o->host] = '\0';
	rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0 || !ai) {
		log_error("bench", "-H %s: %s", o->host, gai_strerror(rc));
		return -1;
	}
	memcpy(sa, ai->ai_addr, ai->ai_addrlen);
	*salen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int bench_conn_open(struct bench *b, struct bench_conn *c,
			   const struct sockaddr_storage *sa, socklen_t salen)
{
	int one = 1;

	c->b = b;
	c->inflight = calloc((size_t)b->o.window, sizeof(*c->inflight));
	if (!c->inflight || !msgpack_unpacker_init(&c->unp, 4096))
		return -1;
	c->unp_ready = true;
	c->bev = bufferevent_socket_new(b->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev)
		return -1;
	bufferevent_setcb(c->bev, bench_read_cb, NULL, bench_event_cb, c);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0 ||
	    bufferevent_socket_connect(c->bev, (const struct sockaddr *)sa, (int)salen) < 0) {
		log_error("bench", "conn=%d: cannot connect to %s", c->idx,
			  b->o.unix_path ? b->o.unix_path : b->o.host);
		return -1;
	}
	/* Each chunk's tail must not wait for the previous one's ACK (Nagle). */
	if (sa->ss_family != AF_UNIX &&
	    setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one,
		       sizeof(one)) < 0)
		log_warn("bench", "conn=%d: TCP_NODELAY: %s; going on", c->idx, strerror(errno));
	return 0;
}

/* ---- timers ------------------------------------------------------------------ */

static void bench_pace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;

	(void)fd;
	(void)what;
	bench_fill_all(b);
	bench_check_done(b);
}

/* Every BENCH_WATCH_US: fail on a chunk older than --timeout, end -d runs. */
static void bench_watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	int64_t now = bench_now_ns(), limit = (int64_t)(b->o.timeout * 1e9);
	char why[160];

	(void)fd;
	(void)what;
	if (!b->started) {
		if (b->nconnected < b->o.conns && now - b->created_ns > limit) {
			snprintf(why, sizeof(why), "only %d of %d connections up after %.0f s",
				 b->nconnected, b->o.conns, b->o.timeout);
			bench_fail(b, why);
		}
		return;
	}
	for (int i = 0; i < b->o.conns; i++) {
		struct bench_conn *c = &b->conns[i];

		for (int k = 0; k < c->ninflight; k++) {
			if (now - c->inflight[k].sent_ns <= limit)
				continue;
			snprintf(why, sizeof(why), "conn=%d: chunk %" PRIu64 " (%" PRIu32
				 " events) not acked within %.0f s", i, c->inflight[k].seq,
				 c->inflight[k].events, b->o.timeout);
			bench_fail(b, why);
			return;
		}
	}
	bench_fill_all(b);
	bench_check_done(b);
}

/* ---- report ---------------------------------------------------------------- */

static int bench_cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;

	return (a > c) - (a < c);
}

/* Nearest-rank percentile P (0..1] of the sorted sample, in milliseconds. */
static double bench_pct_ms(const struct bench *b, double p)
{
	size_t rank;

	if (b->nlat == 0)
		return 0;
	rank = (size_t)(p * (double)b->nlat + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > b->nlat)
		rank = b->nlat;
	return (double)b->lat_ns[rank - 1] / 1e6;
}

static double bench_cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void bench_report(struct bench *b)
{
	double el = (double)(b->last_ack_ns - b->start_ns) / 1e9;
	double rate = el > 0 ? (double)b->events_acked / el : 0;
	const char *fmt = b->o.json ?
		"{\"transport\": \"%s\", \"connections\": %d, \"chunk_events\": %d, "
		"\"inflight\": %d, \"target_rate\": %.0f, \"events_sent\": %" PRId64 ", "
		"\"events_acked\": %" PRId64 ", \"chunks_acked\": %" PRId64 ", "
		"\"elapsed_s\": %.3f, \"events_per_s\": %.0f, \"ack_p50_ms\": %.2f, "
		"\"ack_p99_ms\": %.2f, \"ack_p999_ms\": %.2f, \"ack_max_ms\": %.2f, "
		"\"client_cpu_s\": %.2f, \"ok\": %s" :
		"transport %s\nconnections %d\nchunk_events %d\ninflight %d\n"
		"target_rate %.0f\nevents_sent %" PRId64 "\nevents_acked %" PRId64 "\n"
		"chunks_acked %" PRId64 "\nelapsed_s %.3f\nevents_per_s %.0f\n"
		"ack_p50_ms %.2f\nack_p99_ms %.2f\nack_p999_ms %.2f\nack_max_ms %.2f\n"
		"client_cpu_s %.2f\nok %s\n";

	if (b->nlat > 0)
		qsort(b->lat_ns, b->nlat, sizeof(*b->lat_ns), bench_cmp_i64);
	printf(fmt, b->o.http ? "http" : b->o.unix_path ? "unix" : "tcp", b->o.conns, b->o.chunk,
	       b->o.window,
	       b->o.rate, b->events_sent, b->events_acked, b->chunks_acked, el, rate,
	       bench_pct_ms(b, 0.50), bench_pct_ms(b, 0.99), bench_pct_ms(b, 0.999),
	       bench_pct_ms(b, 1.0), bench_cpu_s(),
	       b->failed ? "false" : "true");
	if (b->o.http)  /* after the common ones: scripts parse either mode alike */
		printf(b->o.json ?
		       ", \"http_retries\": %" PRId64 ", \"http_errors\": %" PRId64 ", "
		       "\"http_rejected\": %" PRId64 :
		       "http_retries %" PRId64 "\nhttp_errors %" PRId64 "\nhttp_rejected %" PRId64
		       "\n", b->http_retries, b->http_errors, b->http_rejected);
	if (b->o.json)
		printf("}\n");
	fflush(stdout);
}

/* ---- options ------------------------------------------------------------------ */

static void bench_usage(FILE *f)
{
	fprintf(f,
		"usage: megaingest-bench (-H host:port | -U path | --http host:port) [options]\n"
		"       megaingest-bench --dump-copy FILE -n N [--seed S]\n"
		"  -H host:port   daemon TCP address (Forward)\n"
		"  -U path        daemon Unix socket (Forward)\n"
		"  --http host:port  POST each chunk to http://host:port/v1/events as a JSON\n"
		"                 array over keep-alive connections, one request in flight\n"
		"                 per connection; a 503 is sent again after its Retry-After\n"
		"  --token T      with --http: send Authorization: Bearer T\n"
		"  -c N           connections (default 8)\n"
		"  -m N           events per chunk or request (default 500)\n"
		"  -n N           total events (default 100000 unless -d)\n"
		"  -d SECONDS     run for this long instead of (or as well as) -n\n"
		"  -r RATE        target events/s, paced (default: as fast as acks allow)\n"
		"  -w N           chunks in flight per connection (default 2; --http: 1)\n"
		"  --seed S       generator seed (default 1)\n"
		"  --timeout S    fail when a chunk is not acked within S seconds (default 60)\n"
		"  --json         print one JSON object instead of name/value lines\n"
		"  --idle S       once every connection is up, hold them all idle S seconds\n"
		"                 before sending (to measure the daemon's memory per idle\n"
		"                 connection); the clock starts after it\n"
		"  --latency-log F  write one line per ack to F: send time since start (ms),\n"
		"                 ack latency (ms), events of the chunk, and how late it\n"
		"                 was sent against the schedule (ms; 0 unless paced)\n"
		"  --dump-copy F  write N rows of the same mix as COPY text to F, print the\n"
		"                 column list on stdout, and exit (no daemon needed)\n");
}

/* Parse a number in [lo, hi] from S for option NAME; 0 or -1 (logged). */
static int bench_num(const char *name, const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < lo || v > hi) {
		log_error("bench", "%s %s: expected a number in %.0f..%.0f", name, s, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

static const struct option bench_long_opts[] = {
	{ "seed", required_argument, NULL, 'S' },
	{ "timeout", required_argument, NULL, 'T' },
	{ "json", no_argument, NULL, 'J' },
	{ "dump-copy", required_argument, NULL, 'D' },
	{ "latency-log", required_argument, NULL, 'L' },
	{ "idle", required_argument, NULL, 'I' },
	{ "http", required_argument, NULL, 'X' },
	{ "token", required_argument, NULL, 'K' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

enum bench_optkind {
	BENCH_OPT_STR = 0,  /* const char * */
	BENCH_OPT_FLAG,     /* bool, set */
	BENCH_OPT_INT,      /* int in lo..hi */
	BENCH_OPT_I64,      /* int64_t in lo..hi */
	BENCH_OPT_DBL,      /* double in lo..hi */
	BENCH_OPT_U64,      /* uint64_t, any */
	BENCH_OPTKIND_COUNT /* number of kinds; not a kind */
};

/* One command-line option: where it goes in struct bench_opts and its bounds. */
struct bench_optdef {
	int ch;
	const char *name;
	enum bench_optkind kind;
	double lo, hi;
	size_t off;
};

#define BENCH_OFF(f) offsetof(struct bench_opts, f)
static const struct bench_optdef bench_optdefs[] = {
	{ 'H', "-H", BENCH_OPT_STR, 0, 0, BENCH_OFF(host) },
	{ 'U', "-U", BENCH_OPT_STR, 0, 0, BENCH_OFF(unix_path) },
	{ 'c', "-c", BENCH_OPT_INT, 1, 10000, BENCH_OFF(conns) },
	{ 'm', "-m", BENCH_OPT_INT, 1, 1000000, BENCH_OFF(chunk) },
	{ 'n', "-n", BENCH_OPT_I64, 1, 1e15, BENCH_OFF(total) },
	{ 'd', "-d", BENCH_OPT_DBL, 0.001, 1e9, BENCH_OFF(duration) },
	{ 'r', "-r", BENCH_OPT_DBL, 1, 1e12, BENCH_OFF(rate) },
	{ 'w', "-w", BENCH_OPT_INT, 1, 100000, BENCH_OFF(window) },
	{ 'S', "--seed", BENCH_OPT_U64, 0, 0, BENCH_OFF(seed) },
	{ 'T', "--timeout", BENCH_OPT_DBL, 0.001, 1e9, BENCH_OFF(timeout) },
	{ 'J', "--json", BENCH_OPT_FLAG, 0, 0, BENCH_OFF(json) },
	{ 'D', "--dump-copy", BENCH_OPT_STR, 0, 0, BENCH_OFF(dump_copy) },
	{ 'L', "--latency-log", BENCH_OPT_STR, 0, 0, BENCH_OFF(lat_log) },
	{ 'I', "--idle", BENCH_OPT_DBL, 0, 86400, BENCH_OFF(idle) },
	{ 'X', "--http", BENCH_OPT_STR, 0, 0, BENCH_OFF(http) },
	{ 'K', "--token", BENCH_OPT_STR, 0, 0, BENCH_OFF(token) },
};

/* Store ARG for option D into O; 0 or -1 on a bad value (logged). */
static int bench_opt_store(struct bench_opts *o, const struct bench_optdef *d, const char *arg)
{
	char *field = (char *)o + d->off, *end;
	unsigned long long u;
	double v = 0;

	switch (d->kind) {
	case BENCH_OPT_STR:
		memcpy(field, &arg, sizeof(arg));
		return 0;
	case BENCH_OPT_FLAG:
		*(bool *)field = true;
		return 0;
	case BENCH_OPT_U64:
		errno = 0;
		u = strtoull(arg, &end, 0);
		if (errno || end == arg || *end) {
			log_error("bench", "%s %s: expected an unsigned integer", d->name, arg);
			return -1;
		}
		*(uint64_t *)field = u;
		return 0;
	default:
		break;
	}
	if (bench_num(d->name, arg, d->lo, d->hi, &v) < 0)
		return -1;
	if (d->kind == BENCH_OPT_INT)
		*(int *)field = (int)v;
	else if (d->kind == BENCH_OPT_I64)
		*(int64_t *)field = (int64_t)v;
	else
		*(double *)field = v;
	return 0;
}

/* Apply one option; 0, or -1 on a bad value (logged), 1 for --help. */
static int bench_opt(struct bench_opts *o, int ch, const char *arg)
{
	for (size_t i = 0; i < sizeof(bench_optdefs) / sizeof(bench_optdefs[0]); i++)
		if (bench_optdefs[i].ch == ch)
			return bench_opt_store(o, &bench_optdefs[i], arg);
	return ch == 'h' ? 1 : -1;
}

/* The HTTP mode's rules, and -w's default; 0 or -1 (logged). */
static int bench_parse_http(struct bench_opts *o)
{
	if (!o->http) {
		if (o->token) {
			log_error("bench", "--token needs --http");
			return -1;
		}
		o->window = o->window ? o->window : 2;
		return 0;
	}
	/* HTTP/1.1 without pipelining: one request at a time per connection. */
	if (o->window > 1) {
		log_error("bench", "--http sends one request at a time per connection: -w 1 "
			  "(use more connections, -c)");
		return -1;
	}
	if (o->idle > 0) {
		log_error("bench", "--idle holds Forward connections; HTTP ones open with "
			  "their first request");
		return -1;
	}
	o->window = 1;
	return 0;
}

/* Parse argv into O; 0 to run, 1 after --help, -1 on a usage error (logged). */
static int bench_parse(int argc, char **argv, struct bench_opts *o)
{
	int ch, rc;

	*o = (struct bench_opts){ .conns = 8, .chunk = 500, .seed = 1, .timeout = 60 };
	while ((ch = getopt_long(argc, argv, "H:U:c:m:n:d:r:w:h", bench_long_opts, NULL)) != -1)
		if ((rc = bench_opt(o, ch, optarg)) != 0)
			return rc;
	if (optind < argc) {
		log_error("bench", "unexpected argument %s", argv[optind]);
		return -1;
	}
	if (o->total == 0 && o->duration == 0)
		o->total = o->dump_copy ? 0 : 100000;
	if (o->dump_copy && o->total == 0) {
		log_error("bench", "--dump-copy needs -n");
		return -1;
	}
	if (o->dump_copy)
		return 0;
	if (!!o->host + !!o->unix_path + !!o->http != 1) {
		log_error("bench", "give exactly one of -H host:port, -U path and --http host:port");
		return -1;
	}
	return bench_parse_http(o);
}

/* ---- setup and main ------------------------------------------------------------ */

static int bench_init(struct bench *b)
{
	uint32_t salt[3];

	/* Ids must differ across runs whatever the seed; content must not. */
	if (getrandom(salt, sizeof(salt), 0) != (ssize_t)sizeof(salt)) {
		log_error("bench", "getrandom: %s; cannot make unique ids", strerror(errno));
		return -1;
	}
	b->chunk_salt = salt[2];
	msgpack_sbuffer_init(&b->sbuf);
	msgpack_packer_init(&b->pk, &b->sbuf, msgpack_sbuffer_write);
	if (bench_gen_init(&b->gen, b->o.seed, salt[0], salt[1]) < 0) {
		log_error("bench", "out of memory building prompts");
		return -1;
	}
	return 0;
}

/* One descriptor per connection and a few more: raise the soft limit to
 * what that needs (at most the hard limit), or say why it cannot. */
static int bench_raise_nofile(int conns)
{
	rlim_t need = (rlim_t)conns + 64;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_error("bench", "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		log_error("bench", "-c %d needs %llu file descriptors; the hard limit is %llu "
			  "(raise it: ulimit -Hn, or LimitNOFILE=)", conns,
			  (unsigned long long)need, (unsigned long long)rl.rlim_max);
		return -1;
	}
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_error("bench", "setrlimit(RLIMIT_NOFILE, %llu): %s",
			  (unsigned long long)need, strerror(errno));
		return -1;
	}
	return 0;
}

static int bench_net_init(struct bench *b)
{
	struct sockaddr_storage sa;
	socklen_t salen = 0;
	struct timeval watch = { 0, BENCH_WATCH_US };

	if ((!b->o.http && bench_address(&b->o, &sa, &salen) < 0) ||
	    bench_raise_nofile(b->o.conns) < 0)
		return -1;
	b->created_ns = bench_now_ns();
	b->base = event_base_new();
	b->conns = calloc((size_t)b->o.conns, sizeof(*b->conns));
	if (!b->base || !b->conns)
		goto oom;
	b->pace_ev = event_new(b->base, -1, EV_PERSIST, bench_pace_cb, b);
	b->watch_ev = event_new(b->base, -1, EV_PERSIST, bench_watch_cb, b);
	if (!b->pace_ev || !b->watch_ev || event_add(b->watch_ev, &watch) < 0)
		goto oom;
	for (int i = 0; i < b->o.conns; i++) {
		b->conns[i].idx = i;
		b->conns[i].b = b;
		if (b->o.http ? bench_http_open(&b->conns[i]) < 0 :
		    bench_conn_open(b, &b->conns[i], &sa, salen) < 0)
			return -1;
	}
	if (b->o.http) {
		b->nconnected = b->o.conns;
		bench_all_connected(b);
		if (b->failed)  /* a loopbreak before the loop runs is forgotten */
			return -1;
	}
	return 0;
oom:
	log_error("bench", "out of memory setting up the event loop");
	return -1;
}

static void bench_free(struct bench *b)
{
	for (int i = 0; b->conns && i < b->o.conns; i++) {
		bench_http_close(&b->conns[i]);
		if (b->conns[i].bev)
			bufferevent_free(b->conns[i].bev);
		if (b->conns[i].unp_ready)
			msgpack_unpacker_destroy(&b->conns[i].unp);
		free(b->conns[i].inflight);
	}
	free(b->conns);
	if (b->pace_ev)
		event_free(b->pace_ev);
	if (b->watch_ev)
		event_free(b->watch_ev);
	if (b->idle_ev)
		event_free(b->idle_ev);
	if (b->base)
		event_base_free(b->base);
	bench_gen_free(&b->gen);
	free(b->lat_ns);
	msgpack_sbuffer_destroy(&b->sbuf);
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	int rc = bench_parse(argc, argv, &b.o);

	if (rc != 0) {
		bench_usage(rc > 0 ? stdout : stderr);
		return rc > 0 ? 0 : 2;
	}
	/* A daemon that closes mid-write must be a reported failure, not a kill. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR || bench_init(&b) < 0) {
		bench_free(&b);
		return 1;
	}
	if (b.o.dump_copy) {
		rc = bench_dump_copy(&b.gen, b.o.dump_copy, b.o.total);
		bench_free(&b);
		return rc < 0 ? 1 : 0;
	}
	if (b.o.lat_log && !(b.lat_log = fopen(b.o.lat_log, "w"))) {
		log_error("bench", "cannot create %s: %s", b.o.lat_log, strerror(errno));
		bench_free(&b);
		return 1;
	}
	if (bench_net_init(&b) < 0 || event_base_dispatch(b.base) < 0)
		b.failed = true;
	if (b.lat_log && fclose(b.lat_log) != 0) {
		log_error("bench", "writing %s failed: %s", b.o.lat_log, strerror(errno));
		b.failed = true;
	}
	if (b.events_acked != b.events_sent)
		b.failed = true;
	if (b.started)  /* a run that never began has nothing to report */
		bench_report(&b);
	bench_free(&b);
	return b.failed ? 1 : 0;
}
