/*
 * stats: the daemon's counters, one list for every consumer.
 *
 * STATS_COUNTERS is the single list of monotonically increasing figures
 * (X-macro: name, help). Each counter is a relaxed _Atomic uint64_t that any
 * thread may add to: a handful per batch or per message, never a lock.
 * Rejections are counted per enum record_reason.
 */
#ifndef MI_STATS_H
#define MI_STATS_H

#include <stdint.h>
#include <stdio.h>
#include "record.h"

#define STATS_COUNTERS(X) \
	X(events_received_total, "Events decoded from clients") \
	X(events_committed_total, "Events committed to PostgreSQL") \
	X(events_dead_lettered_total, "Events written to the dead-letter file") \
	X(batches_committed_total, "Transactions committed by the writers") \
	X(postgres_reconnects_total, "PostgreSQL connections (re)established") \
	X(connections_accepted_total, "Client connections accepted") \
	X(connections_refused_total, "Client connections refused (max_connections)") \
	X(acks_sent_total, "Forward-protocol acks sent") \
	X(credit_conflicts_total, "Repeated credit_transaction ids carrying other values (ignored)") \
	X(auth_failures_total, "Connections closed for a failed shared-key handshake") \
	X(tls_failures_total, "Connections closed for a failed TLS handshake")

enum stats_counter {
#define STATS_ENUM_(name, help) STAT_##name,
	STATS_COUNTERS(STATS_ENUM_)
#undef STATS_ENUM_
	STAT_COUNT /* number of counters; not a counter */
};

/* Add N to counter C. Any thread. */
void stats_add(enum stats_counter c, uint64_t n);
/* Count one rejected event for REASON. Any thread. */
void stats_reject(enum record_reason reason);

uint64_t stats_get(enum stats_counter c);
uint64_t stats_rejected(enum record_reason reason);
const char *stats_name(enum stats_counter c);

/* Gauges the loop publishes (connections, postgres_up); any thread. */
void stats_set_connections(int64_t n);
int64_t stats_connections(void);
void stats_set_postgres_up(int up);
int stats_postgres_up(void);

/* Reset every figure to zero (tests). */
void stats_reset(void);

/* One summary line "in=... committed=... rejected=..." into BUF. */
void stats_summary(char *buf, size_t len);

#endif
