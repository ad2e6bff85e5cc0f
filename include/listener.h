/*
 * listener: TCP and Unix listeners, and the connections they accept.
 *
 * Each connection is a bufferevent feeding a proto_conn. Owns
 * max_connections, idle_timeout_s, the handshake limits, the memory budget
 * of unfinished values, the descriptor limit and the bounded read buffer;
 * pauses every connection's reading while the intake is busy and resumes
 * it when the intake flushes its ack channel; sends the acks the intake
 * hands back. Loop thread only.
 */
#ifndef MI_LISTENER_H
#define MI_LISTENER_H

#include <stddef.h>

struct event_base;
struct config;
struct proto_env;
struct listener;

/* Bind every listener of CFG on BASE. NULL after logging what failed. */
struct listener *listener_start(struct event_base *base, const struct config *cfg,
				struct proto_env *env)
	__attribute__((warn_unused_result));

/* Stop accepting and close the listening sockets (shutdown). */
void listener_stop_accepting(struct listener *l);

/* Stop reading from every connection for good (shutdown: acks still go out). */
void listener_stop_reading(struct listener *l);

/* Apply live keys (max_connections, idle timeout, max_event_bytes). */
void listener_reconfigure(struct listener *l, const struct config *cfg);

/* Bytes still waiting in connections' output buffers (acks not yet sent). */
size_t listener_output_pending(const struct listener *l);

/* Number of open client connections. */
int listener_connections(const struct listener *l);

/* Close every connection and free L. */
void listener_free(struct listener *l);

#endif
