/*
 * stats.c: the daemon's counters and gauges.
 *
 * Every figure is a relaxed atomic: the loop and the writers add to them a
 * few times per message or batch, readers (the log summary, tests) load
 * them. Counters only grow; stats_reset exists for tests.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "stats.h"

static const char *const stats_names[STAT_COUNT] = {
#define STATS_NAME_(name, help) #name,
	STATS_COUNTERS(STATS_NAME_)
#undef STATS_NAME_
};

static atomic_uint_least64_t stats_counters[STAT_COUNT];      /* any thread, relaxed */
static atomic_uint_least64_t stats_rejects[RECORD_REASON_COUNT]; /* any thread, relaxed */
static atomic_int_least64_t stats_conns;  /* written by the loop, read by anyone */
static atomic_int stats_pg_up;            /* 1 while every writer is connected */

void stats_add(enum stats_counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&stats_counters[c], n, memory_order_relaxed);
}

void stats_reject(enum record_reason reason)
{
	atomic_fetch_add_explicit(&stats_rejects[reason], 1, memory_order_relaxed);
}

uint64_t stats_get(enum stats_counter c)
{
	return atomic_load_explicit(&stats_counters[c], memory_order_relaxed);
}

uint64_t stats_rejected(enum record_reason reason)
{
	return atomic_load_explicit(&stats_rejects[reason], memory_order_relaxed);
}

const char *stats_name(enum stats_counter c)
{
	return stats_names[c];
}

void stats_set_connections(int64_t n)
{
	atomic_store_explicit(&stats_conns, n, memory_order_relaxed);
}

int64_t stats_connections(void)
{
	return atomic_load_explicit(&stats_conns, memory_order_relaxed);
}

void stats_set_postgres_up(int up)
{
	atomic_store_explicit(&stats_pg_up, up, memory_order_relaxed);
}

int stats_postgres_up(void)
{
	return atomic_load_explicit(&stats_pg_up, memory_order_relaxed);
}

void stats_reset(void)
{
	for (int i = 0; i < STAT_COUNT; i++)
		atomic_store(&stats_counters[i], 0);
	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		atomic_store(&stats_rejects[i], 0);
}

void stats_summary(char *buf, size_t len)
{
	uint64_t rejected = 0;

	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		rejected += stats_rejected(i);
	snprintf(buf, len,
		 "received=%llu committed=%llu rejected=%llu dead_lettered=%llu batches=%llu "
		 "connections=%lld postgres_up=%d",
		 (unsigned long long)stats_get(STAT_events_received_total),
		 (unsigned long long)stats_get(STAT_events_committed_total),
		 (unsigned long long)rejected,
		 (unsigned long long)stats_get(STAT_events_dead_lettered_total),
		 (unsigned long long)stats_get(STAT_batches_committed_total),
		 (long long)stats_connections(), stats_postgres_up());
}
