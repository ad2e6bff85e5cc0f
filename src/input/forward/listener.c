/*
 * listener.c: TCP and Unix listeners and the client connections they accept.
 *
 * Every connection is a bufferevent whose input is moved into the
 * connection's proto decoder on each read. The read high-water mark bounds
 * what libevent buffers per connection; listen.max_event_bytes bounds what
 * the decoder buffers. While the intake is busy (a writer's queue is full)
 * every connection stops reading (backpressure reaches the clients through
 * TCP); the intake runs listener_room_cb after each flush of its ack
 * channel, whose eventfd the writers poke once there is room, and the same
 * flush delivers acks through conn_ack_cb.
 *
 * Limits that keep one client from hurting the others: a TCP connection in
 * the TLS or shared-key handshake gets listen.handshake_timeout_s, at most
 * listen.max_handshakes of them exist at once (a new one closes the
 * oldest), and the last max_connections/16 slots (at most 8) are kept for
 * the Unix socket. The connections' unfinished values share
 * listen.max_buffered_bytes (struct proto_budget): a connection proto
 * holds (PROTO_HELD) is not read until the total falls below 3/4. Lines a
 * client can cause at will are rate-limited. Descriptors: listener_fd.c.
 *
 * A connection that closes while acks for it are still in flight keeps its
 * small struct conn (without socket or decoder) until the last of them comes
 * back, so an ack never points at freed memory.
 *
 * TCP connections may be wrapped in TLS (listener_tls.c: the bufferevent is
 * an OpenSSL one, everything above it is the same) and, with
 * listen.shared_key, must pass the Forward handshake (proto_auth.c) before
 * the decoder sees a byte. A refused handshake leaves the connection
 * "closing": nothing more is read, and it is closed once the PONG false has
 * been written (or by the idle timer if the client never reads it). Unix
 * socket connections skip both: whoever can open the socket file is trusted
 * by its mode (listen.unix_mode).
 *
 * Under systemd socket activation (megaingestd.socket) the listening
 * sockets come from sd_listen_fds and the config's listen.tcp/listen.unix
 * are not bound; each accepted connection is TCP or Unix by its family.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/crypto.h>

#include "ack.h"
#include "config.h"
#include "intake.h"
#include "listener.h"
#include "listener_private.h"
#include "listener_tls.h"
#include "log.h"
#include "proto.h"
#include "proto_auth.h"
#include "sdnotify.h"
#include "stats.h"

#define LISTENER_READ_HIGH (256 * 1024) /* bytes libevent buffers per connection */
#define LISTENER_WRITE_HIGH (1024 * 1024) /* unread reply bytes that stop reading a client */
#define LISTENER_WRITE_LOW (256 * 1024)   /* ... until its replies drain below this */
#define LISTENER_UNIX_RESERVE 8           /* slots TCP clients cannot take (at most 1/16) */

struct conn {
	struct listener *l;
	struct bufferevent *bev;         /* NULL once closed */
	struct proto_conn *pc;           /* NULL once closed */
	struct proto_auth *auth;         /* shared-key handshake still to pass, else NULL */
	struct event *idle;              /* idle_timeout_s timer */
	uint64_t id;
	uint64_t values_seen;            /* proto_values_done at the last timer reset */
	uint64_t acks_created;           /* copied from proto at close */
	uint64_t acks_done;              /* acks that came back from the writers */
	char peer[80];
	const char *closing;             /* refused: why, once the last reply is out; else NULL */
	bool tls;                        /* bev is an OpenSSL bufferevent */
	bool tls_up;                     /* its handshake completed */
	bool held;                       /* not read: LISTENER_WRITE_HIGH of replies unread */
	bool hs;                         /* in the TLS or shared-key handshake (on hs list) */
	bool mem_held;                   /* not read: listen.max_buffered_bytes passed */
	struct conn *hs_prev, *hs_next;  /* handshake list, oldest first */
	uint64_t holds;                  /* times it was held (the first is logged as a warning) */
	struct conn *prev, *next;        /* open list, or zombie list once closed */
};


static void conn_process(struct conn *c);
static ack_done_cb conn_ack_cb;
static void listener_mem_kick(struct listener *l);

/* Lines a client can cause at will: refused and evicted connections,
 * timeouts, failed TLS handshakes. */
static struct log_limit listener_refuse_limit = LOG_LIMIT_INIT(10, 1000);
static struct log_limit listener_hs_limit = LOG_LIMIT_INIT(10, 1000);
static struct log_limit listener_close_limit = LOG_LIMIT_INIT(10, 1000);
static struct log_limit listener_tls_limit = LOG_LIMIT_INIT(10, 1000);
static struct log_limit listener_idle_limit = LOG_LIMIT_INIT(10, 1000);

/* ---- connection list -------------------------------------------------- */

static void conn_link(struct conn **head, struct conn *c)
{
	c->prev = NULL;
	c->next = *head;
	if (*head)
		(*head)->prev = c;
	*head = c;
}

static void conn_unlink(struct conn **head, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		*head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

/* C enters the handshake: counted against listen.max_handshakes, newest last. */
static void conn_hs_begin(struct listener *l, struct conn *c)
{
	c->hs = true;
	c->hs_next = NULL;
	c->hs_prev = l->hs_tail;
	if (l->hs_tail)
		l->hs_tail->hs_next = c;
	else
		l->hs_head = c;
	l->hs_tail = c;
	l->nhs++;
}

/* C left the handshake (passed it, or closed). */
static void conn_hs_end(struct listener *l, struct conn *c)
{
	if (!c->hs)
		return;
	c->hs = false;
	if (c->hs_prev)
		c->hs_prev->hs_next = c->hs_next;
	else
		l->hs_head = c->hs_next;
	if (c->hs_next)
		c->hs_next->hs_prev = c->hs_prev;
	else
		l->hs_tail = c->hs_prev;
	c->hs_prev = c->hs_next = NULL;
	l->nhs--;
}

static void conn_free(struct conn *c)
{
	if (c->idle)
		event_free(c->idle);
	free(c);
}

/* Close C's socket and decoder; keep the struct while acks are in flight. */
static void conn_close(struct conn *c, const char *why)
{
	struct listener *l = c->l;
	size_t left = proto_pending_bytes(c->pc);

	if (left > 0)
		log_limited(&listener_close_limit, LOG_LEVEL_WARN, "listener", "conn=%llu "
			    "peer=%s: closed (%s) with %zu bytes of an incomplete value, which is "
			    "discarded", (unsigned long long)c->id, c->peer, why, left);
	else
		log_debug("listener", "conn=%llu peer=%s: closed (%s)", (unsigned long long)c->id,
			  c->peer, why);
	conn_hs_end(l, c);
	if (c->mem_held) {
		c->mem_held = false;
		l->nmemheld--;
	}
	c->acks_created = proto_acks_created(c->pc);
	proto_conn_free(c->pc);
	c->pc = NULL;
	stats_set_gauge(STAT_buffered_bytes, (int64_t)l->budget.used);
	proto_auth_free(c->auth);
	c->auth = NULL;
	bufferevent_free(c->bev);
	c->bev = NULL;
	event_del(c->idle);
	conn_unlink(&l->conns, c);
	l->nconns--;
	stats_set_connections(l->nconns);
	if (c->acks_done == c->acks_created)
		conn_free(c);
	else
		conn_link(&l->zombies, c);
	listener_mem_kick(l);
}

/* ---- backpressure ----------------------------------------------------- */

static void listener_pause(struct listener *l)
{
	if (l->paused)
		return;
	l->paused = true;
	log_debug("listener", "queue full: reading paused on %d connections", l->nconns);
	for (struct conn *c = l->conns; c; c = c->next) {
		bufferevent_disable(c->bev, EV_READ);
		event_del(c->idle); /* waiting on us is not the client's idleness */
	}
}

/* Whether C's timer is the handshake's: in it, and that timeout is the shorter. */
static bool conn_hs_timed(const struct conn *c)
{
	return c->hs && c->l->hs_timeout_s < c->l->idle_timeout_s;
}

/* (Re)start C's timer: listen.handshake_timeout_s until it passed the
 * handshake, then listen.idle_timeout_s per complete value. */
static void listener_arm_idle(struct listener *l, struct conn *c)
{
	struct timeval tv = { conn_hs_timed(c) ? l->hs_timeout_s : l->idle_timeout_s, 0 };

	if (tv.tv_sec > 0 && event_add(c->idle, &tv) < 0)
		log_error("listener", "conn=%llu: cannot arm its idle timer",
			  (unsigned long long)c->id);
}

/* C passed its TLS and shared-key handshakes: it is an ordinary connection now. */
static void conn_hs_check(struct conn *c)
{
	if (!c->hs || c->auth || (c->tls && !c->tls_up))
		return;
	conn_hs_end(c->l, c);
	if (!c->l->paused && !c->l->stopped)
		listener_arm_idle(c->l, c);
}

/* Resume reading once the writers made room, decoding what was buffered. */
static void listener_resume(struct listener *l)
{
	struct conn *c, *next;

	if (!l->paused || l->stopped || intake_busy(l->env->intake))
		return;
	l->paused = false;
	log_debug("listener", "queue has room: reading resumed on %d connections", l->nconns);
	for (c = l->conns; c; c = next) {
		next = c->next;
		if (c->closing || c->held || c->mem_held)
			continue;
		bufferevent_enable(c->bev, EV_READ);
		listener_arm_idle(l, c);
	}
	for (c = l->conns; c && !l->paused; c = next) {
		next = c->next;
		conn_process(c);
	}
}

/* ---- connection callbacks --------------------------------------------- */

/* Stop reading C and close it once its output is written (conn_write_cb). */
static void conn_close_after_flush(struct conn *c, const char *why)
{
	c->closing = why;
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_close(c, why);
}

/* Run C's shared-key handshake: 1 passed (events may follow), 0 waiting, -1 refused. */
static int conn_authenticate(struct conn *c)
{
	switch (proto_auth_run(c->auth, bufferevent_get_input(c->bev),
			       bufferevent_get_output(c->bev))) {
	case PROTO_AUTH_WAIT:
		return 0;
	case PROTO_AUTH_DONE:
		proto_auth_free(c->auth);
		c->auth = NULL;
		conn_hs_check(c);
		listener_arm_idle(c->l, c); /* the PING was a complete value */
		return 1;
	default:
		conn_close_after_flush(c, "authentication failed");
		return -1;
	}
}

static struct log_limit listener_mem_limit = LOG_LIMIT_INIT(5, 10000);

/* Stop reading C: the connections' unfinished input is at the budget and C
 * holds at least its share. Its idle timer keeps running. */
static void conn_mem_hold(struct conn *c)
{
	struct listener *l = c->l;

	if (c->mem_held)
		return;
	c->mem_held = true;
	l->nmemheld++;
	bufferevent_disable(c->bev, EV_READ);
	stats_add(STAT_memory_holds_total, 1);
	log_limited(&listener_mem_limit, LOG_LEVEL_WARN, "listener", "conn=%llu peer=%s: not "
		    "reading from it while the connections' unfinished values take %zu bytes "
		    "(listen.max_buffered_bytes=%zu); it would hold at least its share",
		    (unsigned long long)c->id, c->peer, l->budget.used, l->budget.max);
}

/* Once the budget is below 3/4, read the held connections again, from a
 * callback of its own: the caller may be walking the connection list. */
static void listener_mem_kick(struct listener *l)
{
	if (l->nmemheld == 0 || l->stopped || !l->mem_ev ||
	    (l->budget.max > 0 && l->budget.used > l->budget.max / 4 * 3))
		return;
	event_active(l->mem_ev, EV_TIMEOUT, 0);
}

static void listener_mem_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	struct conn *c, *next;

	(void)fd;
	(void)what;
	if (l->nmemheld == 0 || l->stopped)
		return;
	log_debug("listener", "unfinished input down to %zu bytes: reading %d held connections "
		  "again", l->budget.used, l->nmemheld);
	for (c = l->conns; c; c = next) {
		next = c->next;
		if (!c->mem_held)
			continue;
		c->mem_held = false;
		l->nmemheld--;
		if (l->paused || c->held || c->closing)
			continue;
		bufferevent_enable(c->bev, EV_READ);
		conn_process(c); /* may close C, or hold it again */
	}
}

/* Decode what C has buffered; pause, close or re-arm the idle timer. */
static void conn_process(struct conn *c)
{
	struct listener *l = c->l;
	enum proto_status st;
	uint64_t seen;

	if (c->closing || (c->auth && conn_authenticate(c) <= 0))
		return;
	st = proto_run(c->pc, bufferevent_get_input(c->bev));
	if (st == PROTO_CLOSE) {
		conn_close(c, "protocol error");
		return;
	}
	stats_set_gauge(STAT_buffered_bytes, (int64_t)l->budget.used);
	if (st == PROTO_HELD) {
		conn_mem_hold(c);
		return;
	}
	seen = proto_values_done(c->pc);
	if (seen != c->values_seen) {
		c->values_seen = seen;
		listener_arm_idle(l, c);
	}
	if (st == PROTO_BLOCKED)
		listener_pause(l);
	listener_mem_kick(l);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_process(arg);
}

/*
 * A client that sends faster than it reads its acks would make its output
 * buffer grow without bound: past LISTENER_WRITE_HIGH unread bytes it is not
 * read any more (TCP pushes back on it alone) until conn_write_cb sees the
 * replies drain. If it never reads them, the idle timer closes it.
 */
static void conn_hold_if_unread(struct conn *c)
{
	size_t out = evbuffer_get_length(bufferevent_get_output(c->bev));

	if (c->held || c->closing || out < LISTENER_WRITE_HIGH)
		return;
	c->held = true;
	bufferevent_disable(c->bev, EV_READ);
	log_at_(++c->holds == 1 ? LOG_LEVEL_WARN : LOG_LEVEL_DEBUG, "listener",
		"conn=%llu peer=%s: %zu bytes of acks unread; not reading from it until it reads "
		"them", (unsigned long long)c->id, c->peer, out);
}

/* Output at or below LISTENER_WRITE_LOW (the write watermark). */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct listener *l = c->l;

	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_close(c, c->closing);
		return;
	}
	if (!c->held)
		return;
	c->held = false;
	log_debug("listener", "conn=%llu peer=%s: acks read; reading again",
		  (unsigned long long)c->id, c->peer);
	if (l->paused || l->stopped || c->mem_held)
		return;
	bufferevent_enable(bev, EV_READ);
	conn_process(c); /* what arrived before the hold */
}

static void conn_tls_up(struct conn *c)
{
	char desc[400];

	c->tls_up = true;
	conn_hs_check(c);
	if (!log_enabled(LOG_LEVEL_DEBUG))
		return;
	listener_tls_describe(c->bev, desc, sizeof(desc));
	log_debug("listener", "conn=%llu peer=%s: TLS established: %s", (unsigned long long)c->id,
		  c->peer, desc);
}

/* A read or write failed: say why (OpenSSL's reason on TLS connections) and close. */
static void conn_error(struct conn *c)
{
	int err = EVUTIL_SOCKET_ERROR();
	char why[300];

	if (!c->tls || listener_tls_error(c->bev, why + 5, sizeof(why) - 5) < 0) {
		conn_close(c, evutil_socket_error_to_string(err));
		return;
	}
	if (!c->tls_up) {
		stats_add(STAT_tls_failures_total, 1);
		log_limited(&listener_tls_limit, LOG_LEVEL_WARN, "listener", "conn=%llu peer=%s: "
			    "TLS handshake failed: %s; connection closed", (unsigned long long)c->id,
			    c->peer, why + 5);
	}
	memcpy(why, "TLS: ", 5);
	conn_close(c, why);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		conn_tls_up(c);
	else if (what & BEV_EVENT_EOF)
		conn_close(c, "client closed the connection");
	else if (what & BEV_EVENT_ERROR)
		conn_error(c);
}

static void conn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (conn_hs_timed(c)) {
		stats_add(STAT_handshake_timeouts_total, 1);
		log_limited(&listener_hs_limit, LOG_LEVEL_WARN, "listener", "conn=%llu peer=%s: "
			    "handshake not finished within listen.handshake_timeout_s=%d s; connection "
			    "closed", (unsigned long long)c->id, c->peer, c->l->hs_timeout_s);
		conn_close(c, "handshake timeout");
		return;
	}
	log_limited(&listener_idle_limit, LOG_LEVEL_WARN, "listener", "conn=%llu peer=%s: no "
		    "complete value for listen.idle_timeout_s=%d s; connection closed",
		    (unsigned long long)c->id, c->peer, c->l->idle_timeout_s);
	conn_close(c, "idle timeout");
}

/* ---- accepting -------------------------------------------------------- */

static void listener_peer_name(struct sockaddr *sa, char *buf, size_t len)
{
	char host[64] = "?";

	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)sa;

		evutil_inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "tcp:%s:%u", host, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;

		evutil_inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "tcp:[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "unix");
	}
}

/* The bufferevent for FD: TLS on TCP when configured, else plain. NULL on failure, FD taken. */
static struct bufferevent *conn_bufferevent(struct conn *c, evutil_socket_t fd, bool tcp)
{
	struct bufferevent *bev;

	c->tls = tcp && c->l->tls;
	if (c->tls)
		return listener_tls_bufferevent(c->l->tls, c->l->base, fd);
	bev = bufferevent_socket_new(c->l->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		evutil_closesocket(fd);
	return bev;
}

/* With listen.shared_key, a TCP connection starts with HELO. 0 or -1 (logged). */
static int conn_start_auth(struct conn *c, bool tcp)
{
	if (!tcp || !c->l->shared_key[0])
		return 0;
	c->auth = proto_auth_new(c->l->shared_key, c->peer, c->id);
	if (!c->auth)
		return -1;
	return proto_auth_helo(c->auth, bufferevent_get_output(c->bev));
}

static struct conn *conn_new(struct listener *l, evutil_socket_t fd, struct sockaddr *sa)
{
	struct conn *c = calloc(1, sizeof(*c));
	bool tcp = sa->sa_family == AF_INET || sa->sa_family == AF_INET6;

	if (!c) {
		evutil_closesocket(fd);
		return NULL;
	}
	c->l = l;
	c->id = ++l->next_id;
	listener_peer_name(sa, c->peer, sizeof(c->peer));
	c->bev = conn_bufferevent(c, fd, tcp);
	c->pc = proto_conn_new(l->env, conn_ack_cb, c, c->peer, c->id);
	c->idle = evtimer_new(l->base, conn_idle_cb, c);
	if (!c->bev || !c->pc || !c->idle || conn_start_auth(c, tcp) < 0) {
		if (c->bev)
			bufferevent_free(c->bev);
		proto_conn_free(c->pc);
		proto_auth_free(c->auth);
		conn_free(c);
		return NULL;
	}
	if (c->auth || c->tls)
		conn_hs_begin(l, c);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, LISTENER_READ_HIGH);
	bufferevent_setwatermark(c->bev, EV_WRITE, LISTENER_WRITE_LOW, 0);
	return c;
}

/* Slots of listen.max_connections a TCP connection may take. */
static int listener_tcp_slots(const struct listener *l)
{
	int reserve = l->max_conns / 16 < LISTENER_UNIX_RESERVE ? l->max_conns / 16 :
		      LISTENER_UNIX_RESERVE;

	return l->has_unix ? l->max_conns - reserve : l->max_conns;
}

/* Whether a new connection from SA fits; refuses it (closing FD) when not. */
static bool listener_admit(struct listener *l, evutil_socket_t fd, struct sockaddr *sa)
{
	bool tcp = sa->sa_family == AF_INET || sa->sa_family == AF_INET6;
	int slots = tcp ? listener_tcp_slots(l) : l->max_conns;
	char peer[80];

	if (l->nconns < slots)
		return true;
	listener_peer_name(sa, peer, sizeof(peer));
	log_limited(&listener_refuse_limit, LOG_LEVEL_WARN, "listener", "peer=%s: refused, "
		    "listen.max_connections=%d reached%s", peer, l->max_conns,
		    slots < l->max_conns ? " for TCP (the last slots are kept for the Unix "
		    "socket)" : "");
	stats_add(STAT_connections_refused_total, 1);
	evutil_closesocket(fd);
	return false;
}

/* listen.max_handshakes, but at most half the TCP slots: unauthenticated
 * clients can never hold the slots the others need. */
static int listener_max_handshakes(const struct listener *l)
{
	int half = listener_tcp_slots(l) / 2;

	return l->max_hs < half ? l->max_hs : half > 0 ? half : 1;
}

/* At the handshake cap, close the connection longest in the handshake. */
static void listener_evict_handshake(struct listener *l)
{
	struct conn *old = l->hs_head;

	if (!old || l->nhs < listener_max_handshakes(l))
		return;
	stats_add(STAT_handshakes_evicted_total, 1);
	log_limited(&listener_hs_limit, LOG_LEVEL_WARN, "listener", "conn=%llu peer=%s: closed: "
		    "%d connections are in the handshake (listen.max_handshakes, at most half the TCP "
		    "slots) and a new one came; this was the oldest", (unsigned long long)old->id,
		    old->peer, listener_max_handshakes(l));
	conn_close(old, "evicted from the handshake");
}

static void listener_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
			       struct sockaddr *sa, int salen, void *arg)
{
	struct listener *l = arg;
	struct conn *c;

	(void)lev;
	(void)salen;
	listener_fd_accepted(l);
	if (!listener_admit(l, fd, sa))
		return;
	if ((sa->sa_family == AF_INET || sa->sa_family == AF_INET6) &&
	    (l->tls || l->shared_key[0]))
		listener_evict_handshake(l);
	c = conn_new(l, fd, sa);
	if (!c) {
		log_error("listener", "cannot set up an accepted connection (out of memory); "
			  "closed it");
		return;
	}
	conn_link(&l->conns, c);
	l->nconns++;
	stats_set_connections(l->nconns);
	stats_add(STAT_connections_accepted_total, 1);
	log_debug("listener", "conn=%llu peer=%s: accepted", (unsigned long long)c->id, c->peer);
	if (!l->paused && !l->stopped) {
		bufferevent_enable(c->bev, EV_READ);
		listener_arm_idle(l, c);
	}
}

/* ---- acks ------------------------------------------------------------- */

/*
 * Send ack A on C. With nothing queued before it, it is written straight
 * to the socket (as Redis answers before it would arm a write event): one
 * send and no pair of epoll_ctl calls per ack, which is most of an ack's
 * cost when many connections get one each. What the socket does not take,
 * or cannot take now, is queued in the bufferevent as usual, which also
 * meets any error. TLS goes through its bufferevent. The scratch buffer is
 * shared by every connection, so it is left empty on every path, and -1
 * (the ack not or only partly sent) means C must be closed.
 */
static int listener_send_ack(struct listener *l, struct conn *c, struct ack *a)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int rc = 0;

	if (c->tls || evbuffer_get_length(out) > 0)
		return proto_ack_encode(a, out);
	if (proto_ack_encode(a, l->ack_scratch) < 0)
		rc = -1;
	else
		(void)evbuffer_write(l->ack_scratch, bufferevent_getfd(c->bev));
	if (rc == 0 && evbuffer_get_length(l->ack_scratch) > 0)
		rc = evbuffer_add_buffer(out, l->ack_scratch);
	/* Fails only on a frozen buffer, which the scratch never is. */
	if (evbuffer_drain(l->ack_scratch, evbuffer_get_length(l->ack_scratch)) < 0)
		rc = -1;
	return rc;
}

/* The intake's callback for C's acks: answer, unless an event failed (close),
 * or count it back for a closed connection's struct (freed with the last). */
static void conn_ack_cb(struct ack *a, bool durable, void *arg)
{
	struct conn *c = arg;
	struct listener *l = c->l;

	c->acks_done++;
	if (c->bev && !durable) {
		/* An event of the message is not durable: no ack, and the client
		 * must resend, so the connection goes (its acks are freed unsent). */
		log_error("listener", "conn=%llu peer=%s: an event of an acked message could not be "
			  "dead-lettered (see above); connection closed without its ack",
			  (unsigned long long)c->id, c->peer);
		conn_close(c, "dead-letter write failed"); /* may free C */
	} else if (c->bev) {
		if (listener_send_ack(l, c, a) < 0) {
			/* Part of the reply may be on the wire: the stream is torn. */
			log_error("listener", "conn=%llu peer=%s: out of memory sending an ack; "
				  "connection closed, the client resends", (unsigned long long)c->id,
				  c->peer);
			conn_close(c, "out of memory sending an ack"); /* may free C */
			return;
		}
		stats_add(STAT_acks_sent_total, 1);
		conn_hold_if_unread(c);
	} else if (c->acks_done == c->acks_created) {
		conn_unlink(&l->zombies, c);
		conn_free(c);
	}
}

/* The intake flushed its ack channel: there may be room to read again. */
static void listener_room_cb(void *arg)
{
	listener_resume(arg);
}

/* ---- binding ---------------------------------------------------------- */

static int listener_bind_tcp(struct listener *l, const char *addr, bool reuseport)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
			 (reuseport ? LEV_OPT_REUSEABLE_PORT : 0); /* listen.reuseport */

	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) < 0) {
		log_error("listener", "listen.tcp \"%s\": not an address:port", addr);
		return -1;
	}
	l->lev[l->nlev] = evconnlistener_new_bind(l->base, listener_accept_cb, l, flags, -1,
						  (struct sockaddr *)&ss, sslen);
	if (!l->lev[l->nlev]) {
		log_error("listener", "cannot listen on tcp %s: %s", addr,
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		return -1;
	}
	l->nlev++;
	log_info("listener", "listening on tcp %s", addr);
	return 0;
}

/* A stale socket file from a dead daemon is removed; a live one is an error. */
static int listener_unix_fd(const char *path, int mode)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_error("listener", "listen.unix \"%s\": path too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		log_error("listener", "listen.unix %s: another process is listening there", path);
		close(fd);
		return -1;
	}
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || chmod(path, (mode_t)mode) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		log_error("listener", "cannot listen on unix %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int listener_bind_unix(struct listener *l, const char *path, int mode)
{
	int fd = listener_unix_fd(path, mode);

	if (fd < 0)
		return -1;
	l->lev[l->nlev] = evconnlistener_new(l->base, listener_accept_cb, l,
					     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!l->lev[l->nlev]) {
		close(fd);
		return -1;
	}
	l->unix_path = strdup(path);
	l->has_unix = true;
	l->nlev++;
	log_info("listener", "listening on unix %s (mode %04o)", path, mode);
	return 0;
}

/* Describe listening socket FD as "tcp ADDR:PORT" or "unix PATH" into BUF.
 * -1 when FD is not a listening stream socket of those families. */
static int listener_socket_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss), ilen = sizeof(int);
	int type = 0, listening = 0;
	char peer[96];

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ilen) < 0 || type != SOCK_STREAM ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) < 0 || !listening ||
	    getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0)
		return -1;
	if (ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;

		snprintf(buf, len, "unix %s", sun->sun_path[0] ? sun->sun_path : "(abstract)");
		return 0;
	}
	if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
		return -1;
	listener_peer_name((struct sockaddr *)&ss, peer, sizeof(peer));
	snprintf(buf, len, "tcp %s", peer + 4); /* "tcp:" -> "tcp " */
	return 0;
}

/*
 * Socket activation: listen on the sockets systemd passed (LISTEN_FDS), TCP
 * and Unix alike; each connection is then treated by the family it arrived
 * on (TLS and the handshake apply to TCP). Returns how many, 0 when none
 * were passed, -1 after logging what was wrong.
 */
static int listener_bind_inherited(struct listener *l)
{
	int n = sdnotify_listen_fds();

	if (n <= 0)
		return 0;
	if (n > LISTENER_MAX) {
		log_error("listener", "socket activation: %d sockets passed, at most %d are served",
			  n, LISTENER_MAX);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		int fd = SDNOTIFY_LISTEN_FDS_START + i;
		char name[160];

		if (listener_socket_name(fd, name, sizeof(name)) < 0) {
			log_error("listener", "socket activation: fd %d is not a listening TCP or Unix "
				  "stream socket; check ListenStream= in the .socket unit", fd);
			return -1;
		}
		evutil_make_socket_nonblocking(fd);
		evutil_make_socket_closeonexec(fd);
		/* backlog 0: the socket already listens; libevent leaves it be. */
		l->lev[l->nlev] = evconnlistener_new(l->base, listener_accept_cb, l,
						     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
						     0, fd);
		if (!l->lev[l->nlev]) {
			log_error("listener", "socket activation: cannot listen on %s", name);
			return -1;
		}
		l->nlev++;
		if (strncmp(name, "unix", 4) == 0)
			l->has_unix = true;
		log_info("listener", "listening on %s (socket from systemd)", name);
	}
	return n;
}

static int listener_bind_config(struct listener *l, const struct config *cfg)
{
	for (int i = 0; i < cfg->listen_tcp_count; i++)
		if (listener_bind_tcp(l, cfg->listen_tcp[i], cfg->listen_reuseport) < 0)
			return -1;
	if (cfg->listen_unix[0] && listener_bind_unix(l, cfg->listen_unix, cfg->listen_unix_mode) < 0)
		return -1;
	return 0;
}

static int listener_bind_all(struct listener *l, const struct config *cfg)
{
	int inherited = listener_bind_inherited(l);

	if (inherited < 0)
		return -1;
	if (inherited > 0 && (cfg->listen_tcp_count > 0 || cfg->listen_unix[0]))
		log_info("listener", "socket activation: listen.tcp and listen.unix of %s are "
			 "ignored; systemd's sockets are used instead",
			 cfg->path ? cfg->path : "the configuration");
	if (inherited == 0 && listener_bind_config(l, cfg) < 0)
		return -1;
	for (int i = 0; i < l->nlev; i++)
		evconnlistener_set_error_cb(l->lev[i], listener_fd_error_cb);
	if (l->nlev == 0 && cfg->http_listen_count == 0) {
		log_error("listener", "no listener configured (listen.tcp, listen.unix and "
			  "http.listen are empty)");
		return -1;
	}
	return 0;
}

/* ---- lifecycle -------------------------------------------------------- */

struct listener *listener_start(struct event_base *base, const struct config *cfg,
				struct proto_env *env)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->base = base;
	l->env = env;
	env->budget = &l->budget;
	l->writers = cfg->writer_connections;
	if (listener_fd_budget(l, cfg->listen_max_connections) < 0) {
		free(l);
		return NULL;
	}
	listener_reconfigure(l, cfg);
	l->shared_key = strdup(cfg->listen_shared_key);
	if (!l->shared_key) {
		listener_free(l);
		return NULL;
	}
	if (cfg->listen_tls_cert[0]) {
		l->tls = listener_tls_new(cfg->listen_tls_cert, cfg->listen_tls_key,
					  cfg->listen_tls_ca, cfg->listen_tls_ciphers);
		if (!l->tls) {
			listener_free(l);
			return NULL;
		}
	}
	l->ack_scratch = evbuffer_new();
	l->accept_timer = evtimer_new(base, listener_fd_timer_cb, l);
	l->mem_ev = evtimer_new(base, listener_mem_resume_cb, l);
	if (!l->ack_scratch || !l->accept_timer || !l->mem_ev ||
	    listener_bind_all(l, cfg) < 0) {
		listener_free(l);
		return NULL;
	}
	if (intake_watch(env->intake, listener_room_cb, l) < 0) {
		log_error("listener", "the intake has no room for another input");
		listener_free(l);
		return NULL;
	}
	l->watching = true;
	return l;
}

void listener_reconfigure(struct listener *l, const struct config *cfg)
{
	struct rlimit rl;

	if (l->max_conns > 0 && cfg->listen_max_connections > l->max_conns &&
	    getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    listener_fd_needed(l, cfg->listen_max_connections) > (unsigned long long)rl.rlim_cur)
		log_error("listener", "listen.max_connections=%d does not fit RLIMIT_NOFILE %llu; "
			  "keeping %d", cfg->listen_max_connections,
			  (unsigned long long)rl.rlim_cur, l->max_conns);
	else
		l->max_conns = cfg->listen_max_connections;
	l->idle_timeout_s = cfg->listen_idle_timeout_s;
	l->hs_timeout_s = cfg->listen_handshake_timeout_s;
	l->budget.max = (size_t)cfg->listen_max_buffered_bytes;
	l->max_hs = cfg->listen_max_handshakes;
	l->env->max_event_bytes = (size_t)cfg->listen_max_event_bytes;
}

void listener_stop_accepting(struct listener *l)
{
	if (l->accept_timer)
		event_del(l->accept_timer);
	for (int i = 0; i < l->nlev; i++)
		evconnlistener_free(l->lev[i]);
	l->nlev = 0;
	if (l->unix_path) {
		unlink(l->unix_path);
		free(l->unix_path);
		l->unix_path = NULL;
	}
}

void listener_stop_reading(struct listener *l)
{
	l->stopped = true;
	for (struct conn *c = l->conns; c; c = c->next) {
		bufferevent_disable(c->bev, EV_READ);
		event_del(c->idle);
	}
}

size_t listener_output_pending(const struct listener *l)
{
	size_t n = 0;

	for (const struct conn *c = l->conns; c; c = c->next)
		n += evbuffer_get_length(bufferevent_get_output(c->bev));
	return n;
}

int listener_connections(const struct listener *l)
{
	return l->nconns;
}

void listener_free(struct listener *l)
{
	if (!l)
		return;
	if (l->watching)
		intake_unwatch(l->env->intake, l);
	listener_stop_accepting(l);
	l->stopped = true; /* no resuming while closing */
	while (l->conns)
		conn_close(l->conns, "daemon stopping");
	l->env->budget = NULL;
	while (l->zombies) {
		struct conn *c = l->zombies;

		conn_unlink(&l->zombies, c);
		conn_free(c);
	}
	if (l->ack_scratch)
		evbuffer_free(l->ack_scratch);
	if (l->accept_timer)
		event_free(l->accept_timer);
	if (l->mem_ev)
		event_free(l->mem_ev);
	if (l->shared_key)
		OPENSSL_cleanse(l->shared_key, strlen(l->shared_key));
	free(l->shared_key);
	listener_tls_free(l->tls);
	free(l);
}
