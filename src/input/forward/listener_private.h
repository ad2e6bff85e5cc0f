/*
 * listener_private.h: struct listener, shared by the halves of the
 * listener module (listener.c: connections; listener_fd.c: descriptors).
 * Not for other modules: they use include/listener.h.
 */
#ifndef MI_LISTENER_PRIVATE_H
#define MI_LISTENER_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/util.h>

#include "proto.h"

#define LISTENER_MAX 17                   /* CONFIG_MAX_TCP + the Unix socket */
#define LISTENER_ACCEPT_PAUSE_MS 250      /* out of descriptors: not accepting for this long */
#define LISTENER_FD_MARGIN 64             /* descriptors besides connections: listeners, log,
					   * eventfds, dead-letter file, admin connections */
#define LISTENER_FD_PER_WRITER 4          /* PostgreSQL socket, spool segments */

struct conn;
struct event;
struct evconnlistener;
struct listener_tls;

struct listener {
	struct event_base *base;
	struct proto_env *env;
	struct evconnlistener *lev[LISTENER_MAX];
	int nlev;
	char *unix_path;                 /* unlinked at stop */
	char *shared_key;                /* listen.shared_key (copied, wiped at free); "" for none */
	struct listener_tls *tls;        /* TLS context for TCP connections, or NULL */
	struct evbuffer *ack_scratch;    /* an ack on its way straight to a socket */
	struct conn *conns;              /* open connections */
	struct conn *zombies;            /* closed, waiting for acks */
	int nconns;
	int max_conns;                   /* listen.max_connections (live) */
	int idle_timeout_s;              /* listen.idle_timeout_s (live) */
	struct conn *hs_head, *hs_tail;  /* connections in the handshake, oldest first */
	int nhs;
	int max_hs;                      /* listen.max_handshakes (live) */
	int hs_timeout_s;                /* listen.handshake_timeout_s (live) */
	bool has_unix;                   /* a Unix listener: keep slots for it */
	struct proto_budget budget;      /* listen.max_buffered_bytes; env->budget points here */
	int nmemheld;                    /* connections with mem_held */
	struct event *mem_ev;            /* reads the held connections again (activated) */
	struct event *accept_timer;      /* re-enables accepting after a pause */
	bool accept_paused;              /* out of descriptors: listeners disabled */
	uint64_t accept_pauses;          /* pauses in this episode (0: none going on) */
	int writers;                     /* writer.connections (for the descriptor budget) */
	uint64_t next_id;
	bool paused;                     /* reading stopped for backpressure */
	bool stopped;                    /* shutting down: never read again */
	bool watching;                   /* listener_room_cb is registered with the intake */
};

/* Descriptors MAX_CONNS connections need, with everything else the daemon holds. */
unsigned long long listener_fd_needed(const struct listener *l, int max_conns);

/*
 * Raise the soft RLIMIT_NOFILE to the hard limit, then check MAX_CONNS
 * fits. 0, or -1 after saying what to change.
 */
int listener_fd_budget(struct listener *l, int max_conns);

/* evconnlistener error callback: pause accepting when out of descriptors. */
void listener_fd_error_cb(struct evconnlistener *lev, void *arg);

/* l->accept_timer: accept again after a pause. */
void listener_fd_timer_cb(evutil_socket_t fd, short what, void *arg);

/* A connection was accepted: a pause episode, if any, is over. */
void listener_fd_accepted(struct listener *l);

#endif
