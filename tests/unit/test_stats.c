/*
 * test_stats.c: the metric list, histograms, snapshots and both formats.
 *
 * Modelled on memcached's t/stats.t: the exact number of metrics, every
 * figure zero after a reset, exact deltas after known work; plus the
 * Prometheus text read back into the same snapshot, as megactl reads it,
 * and histogram counts that stay exact when threads observe at once.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "autoconfig.h"
#include "stats.h"
#include "unit.h"

#define THREADS 4
#define PER_THREAD 50000

static char *take_text(struct evbuffer *b)
{
	size_t len = evbuffer_get_length(b);
	char *s = malloc(len + 1);

	if (!s)
		abort();
	evbuffer_remove(b, s, len);
	s[len] = '\0';
	return s;
}

static size_t count_lines(const char *s, const char *prefix)
{
	size_t n = 0, plen = strlen(prefix);

	for (const char *p = s; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, prefix, plen) == 0)
			n++;
	return n;
}

static void test_list(void)
{
	size_t kinds[STATS_KIND_COUNT] = { 0 };

	for (size_t i = 0; i < stats_metric_count; i++)
		kinds[stats_metrics[i].kind]++;
	/* Changing the list must be a conscious act: update these numbers. */
	CHECK(stats_metric_count == 37);
	CHECK(kinds[STATS_TABLES] == 1 && kinds[STATS_HTTP_CODES] == 1);
	CHECK(kinds[STATS_COUNTER] == STAT_COUNT && STAT_COUNT == 21);
	CHECK(kinds[STATS_GAUGE] == STAT_GAUGE_COUNT && STAT_GAUGE_COUNT == 8);
	CHECK(kinds[STATS_HISTOGRAM] == STAT_HIST_COUNT && STAT_HIST_COUNT == 3);
	CHECK(kinds[STATS_REJECTS] == 1 && kinds[STATS_INFO] == 1 && kinds[STATS_WRITERS] == 1);
	CHECK_STR(stats_name(STAT_events_committed_total), "events_committed_total");
	CHECK_STR(stats_metrics[0].name, "events_received_total");
	for (size_t i = 0; i < stats_metric_count; i++) {
		CHECK(stats_metrics[i].help[0] != '\0');
		if (stats_metrics[i].kind == STATS_COUNTER || stats_metrics[i].kind == STATS_REJECTS)
			CHECK(strstr(stats_metrics[i].name, "_total") != NULL);
	}
}

static void test_zero_then_deltas(void)
{
	struct stats_snapshot s;

	stats_reset();
	stats_snapshot(&s);
	for (int i = 0; i < STAT_COUNT; i++)
		CHECK(s.counter[i] == 0);
	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		CHECK(s.rejected[i] == 0);
	for (int i = 0; i < STAT_HIST_COUNT; i++)
		CHECK(s.hist[i].count == 0 && s.hist[i].sum == 0);
	CHECK(s.gauge[STAT_connections] == 0 && s.gauge[STAT_uptime_seconds] == 0);

	stats_add(STAT_events_received_total, 7);
	stats_add(STAT_events_committed_total, 5);
	stats_reject(RECORD_REASON_BAD_TYPE);
	stats_reject(RECORD_REASON_BAD_TYPE);
	stats_set_connections(3);
	/* postgres_up needs every writer up: 1 of 2 is still down. A writer
	 * that failed to reconnect any number of times is up again as soon as
	 * it publishes so (no count to go wrong). */
	stats_set_writers(2);
	CHECK(stats_postgres_up() == 0);
	stats_writer_publish(0, STATS_WRITER_WRITING, 1);
	CHECK(stats_postgres_up() == 0);
	stats_writer_publish(1, STATS_WRITER_SPOOLING, 0);
	stats_writer_publish(1, STATS_WRITER_SPOOLING, 0);
	stats_writer_publish(1, STATS_WRITER_REPLAYING, 1);
	CHECK(stats_postgres_up() == 1);
	stats_writer_publish(0, STATS_WRITER_STALLED, 0);
	CHECK(stats_postgres_up() == 0);
	stats_writer_publish(0, STATS_WRITER_WRITING, 1);
	stats_snapshot(&s);
	CHECK(s.writers == 2 && s.writer_state[0] == STATS_WRITER_WRITING &&
	      s.writer_state[1] == STATS_WRITER_REPLAYING);
	CHECK(s.counter[STAT_events_received_total] == 7);
	CHECK(s.counter[STAT_events_committed_total] == 5);
	CHECK(s.counter[STAT_batches_committed_total] == 0);
	CHECK(s.rejected[RECORD_REASON_BAD_TYPE] == 2 && s.rejected[RECORD_REASON_BAD_ID] == 0);
	CHECK(s.gauge[STAT_connections] == 3 && stats_postgres_up() == 1);
}

static void test_buckets(void)
{
	struct stats_snapshot s;

	stats_reset();
	stats_observe_ns(STAT_batch_commit_seconds, 500000);     /* exactly 0.0005: first */
	stats_observe_ns(STAT_batch_commit_seconds, 500001);     /* just above: second */
	stats_observe_ns(STAT_batch_commit_seconds, 100000000000LL); /* 100 s: +Inf */
	stats_observe_ns(STAT_batch_commit_seconds, -5);         /* clock step: 0 */
	stats_snapshot(&s);
	CHECK(s.hist[STAT_batch_commit_seconds].bucket[0] == 2);
	CHECK(s.hist[STAT_batch_commit_seconds].bucket[1] == 1);
	CHECK(s.hist[STAT_batch_commit_seconds].bucket[STATS_BUCKETS] == 1);
	CHECK(s.hist[STAT_batch_commit_seconds].count == 4);
	CHECK(fabs(s.hist[STAT_batch_commit_seconds].sum - 100.001000001) < 1e-9);
	CHECK(s.hist[STAT_event_commit_latency_seconds].count == 0);
}

static void test_quantile(void)
{
	uint64_t b[STATS_BUCKETS + 1] = { 0 };
	double q;

	CHECK(stats_quantile(b, 0.99) == -1);
	b[7] = 100; /* 100 observations in (0.05, 0.1] */
	q = stats_quantile(b, 0.5);
	CHECK(fabs(q - 0.075) < 1e-9);
	q = stats_quantile(b, 0.99);
	CHECK(fabs(q - 0.0995) < 1e-9);
	b[STATS_BUCKETS] = 100; /* half beyond 60 s: p99 is "more than the last bound" */
	CHECK(stats_quantile(b, 0.99) == 60);
	CHECK(fabs(stats_quantile(b, 0.25) - 0.075) < 1e-9);
}

static void fill_some(void)
{
	stats_reset();
	stats_add(STAT_events_received_total, 1000);
	stats_add(STAT_events_committed_total, 990);
	stats_add(STAT_batches_committed_total, 4);
	stats_reject(RECORD_REASON_NUL_BYTE);
	stats_table_rows(1, 7);
	stats_http_request(415);
	stats_http_request(999); /* not one of ours: not counted anywhere */
	stats_set_gauge(STAT_spool_bytes, 4096);
	for (int i = 0; i < 990; i++)
		stats_observe_ns(STAT_event_commit_latency_seconds, 1000000LL * (i % 40));
	for (int i = 0; i < 4; i++)
		stats_observe_ns(STAT_batch_commit_seconds, 3000000);
}

static void test_prometheus_round_trip(void)
{
	struct evbuffer *b = evbuffer_new();
	struct stats_snapshot s, back;
	char err[128], *text;
	int n;

	fill_some();
	stats_set_writers(2);
	stats_writer_publish(0, STATS_WRITER_WRITING, 1);
	stats_writer_publish(1, STATS_WRITER_STALLED, 0);
	stats_snapshot(&s);
	CHECK(b && stats_format_prometheus(&s, b) == 0);
	text = take_text(b);
	CHECK(count_lines(text, "# HELP ") == stats_metric_count);
	CHECK(count_lines(text, "# TYPE ") == stats_metric_count);
	CHECK_CONTAINS(text, "# TYPE megaingest_batch_commit_seconds histogram\n");
	CHECK_CONTAINS(text, "megaingest_events_received_total 1000\n");
	CHECK_CONTAINS(text, "megaingest_events_rejected_total{reason=\"nul_byte\"} 1\n");
	CHECK_CONTAINS(text, "megaingest_batch_commit_seconds_bucket{le=\"0.0025\"} 0\n");
	CHECK_CONTAINS(text, "megaingest_batch_commit_seconds_bucket{le=\"0.005\"} 4\n");
	CHECK_CONTAINS(text, "megaingest_batch_commit_seconds_bucket{le=\"+Inf\"} 4\n");
	CHECK_CONTAINS(text, "megaingest_batch_commit_seconds_count 4\n");
	CHECK_CONTAINS(text, "megaingest_build_info{version=\"" PACKAGE_VERSION "\"} 1\n");
	CHECK_CONTAINS(text, "megaingest_writer_state{writer=\"1\",state=\"stalled\"} 1\n");
	CHECK_CONTAINS(text, "megaingest_writer_state{writer=\"1\",state=\"writing\"} 0\n");
	CHECK_CONTAINS(text, "megaingest_rows_committed_total{table=\"mega_admin\"} 7\n");
	CHECK_CONTAINS(text, "megaingest_http_requests_total{code=\"415\"} 1\n");
	CHECK_CONTAINS(text, "megaingest_http_requests_total{code=\"200\"} 0\n");
	n = stats_parse_prometheus(text, &back, err, sizeof(err));
	/* counters + gauges + one line per reason + (buckets + Inf + sum + count) + info
	 * + one line per writer and state + one per table */
	CHECK(n == STAT_COUNT + STAT_GAUGE_COUNT + RECORD_REASON_COUNT +
	      STAT_HIST_COUNT * (STATS_BUCKETS + 3) + 1 + 2 * STATS_WRITER_STATE_COUNT +
	      TABLE_COUNT + STATS_HTTP_NCODES);
	CHECK(memcmp(back.http_codes, s.http_codes, sizeof(s.http_codes)) == 0);
	CHECK(memcmp(back.table_rows, s.table_rows, sizeof(s.table_rows)) == 0);
	CHECK(back.writers == 2 && back.writer_state[0] == STATS_WRITER_WRITING &&
	      back.writer_state[1] == STATS_WRITER_STALLED);
	CHECK(memcmp(back.counter, s.counter, sizeof(s.counter)) == 0);
	CHECK(memcmp(back.rejected, s.rejected, sizeof(s.rejected)) == 0);
	CHECK(memcmp(back.gauge, s.gauge, sizeof(s.gauge)) == 0);
	for (int h = 0; h < STAT_HIST_COUNT; h++) {
		CHECK(memcmp(back.hist[h].bucket, s.hist[h].bucket, sizeof(s.hist[h].bucket)) == 0);
		CHECK(back.hist[h].count == s.hist[h].count);
		CHECK(fabs(back.hist[h].sum - s.hist[h].sum) < 1e-6);
	}
	free(text);
	CHECK(stats_parse_prometheus("megaingest_events_received_total\n", &back, err,
				     sizeof(err)) == -1);
	CHECK_CONTAINS(err, "line 1");
	CHECK(stats_parse_prometheus("other_metric 3\n# x\n\nmegaingest_new_thing 1\n", &back,
				     err, sizeof(err)) == 0);
	evbuffer_free(b);
}

static void test_json(void)
{
	struct evbuffer *b = evbuffer_new();
	struct stats_snapshot s;
	char *text;

	fill_some();
	stats_snapshot(&s);
	CHECK(b && stats_format_json(&s, b) == 0);
	text = take_text(b);
	CHECK(strncmp(text, "{\"version\":\"" PACKAGE_VERSION "\",", 13) == 0);
	CHECK_CONTAINS(text, "\"events_received_total\":1000,");
	CHECK_CONTAINS(text, "\"events_rejected_total\":{\"not_a_map\":0,");
	CHECK_CONTAINS(text, "\"nul_byte\":1,");
	CHECK_CONTAINS(text, "\"batch_commit_seconds\":{\"count\":4,\"sum\":0.012,\"buckets\":{");
	CHECK_CONTAINS(text, "\"spool_bytes\":4096,");
	CHECK_CONTAINS(text, "\"uptime_seconds\":");
	CHECK(text[strlen(text) - 2] == '}');
	free(text);
	evbuffer_free(b);
}

static void test_rates(void)
{
	struct stats_snapshot a, b;
	struct stats_rates r;
	char line[256];

	stats_reset();
	stats_snapshot(&a);
	stats_add(STAT_events_received_total, 300);
	stats_add(STAT_events_committed_total, 200);
	stats_reject(RECORD_REASON_BAD_UTF8);
	for (int i = 0; i < 200; i++)
		stats_observe_ns(STAT_event_commit_latency_seconds, 20000000); /* 20 ms */
	stats_set_gauge(STAT_queue_events, 100);
	stats_set_gauge(STAT_queue_bytes, 2048);
	stats_snapshot(&b);
	b.taken_ns = a.taken_ns + 2000000000LL; /* pretend 2 s passed */
	stats_rates(&a, &b, &r);
	CHECK(r.seconds == 2 && r.in_per_s == 150 && r.committed_per_s == 100);
	CHECK(r.rejected_per_s == 0.5);
	CHECK(r.p99_s > 0.01 && r.p99_s <= 0.025);
	CHECK(r.queue_events == 100 && r.queue_bytes == 2048);
	stats_format_rates(&r, line, sizeof(line));
	CHECK_CONTAINS(line, "in=150/s committed=100/s rejected=0/s queue=100 (2.0 KiB)");
	CHECK_CONTAINS(line, "postgres=down");
	/* A counter that went down (restart between snapshots) counts from 0. */
	stats_rates(&b, &a, &r);
	CHECK(r.in_per_s <= 0 && r.p99_s == -1);
}

static int64_t provide(void *arg)
{
	return *(int64_t *)arg;
}

static void test_provider(void)
{
	int64_t v = 42;
	struct stats_snapshot s;

	stats_gauge_provider(STAT_queue_events, provide, &v);
	stats_set_gauge(STAT_queue_events, 7); /* ignored while a provider is set */
	stats_snapshot(&s);
	CHECK(s.gauge[STAT_queue_events] == 42);
	v = 43;
	CHECK(stats_gauge(STAT_queue_events) == 43);
	stats_gauge_provider(STAT_queue_events, NULL, NULL);
	CHECK(stats_gauge(STAT_queue_events) == 7);
	stats_mark_start();
	CHECK(stats_gauge(STAT_uptime_seconds) == 0);
}

static void *observer(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER_THREAD; i++) {
		stats_observe_ns(STAT_event_commit_latency_seconds, (int64_t)(i % 1000) * 1000000);
		stats_add(STAT_events_committed_total, 1);
	}
	return NULL;
}

static void test_threads(void)
{
	pthread_t t[THREADS];
	struct stats_snapshot s;
	uint64_t want_sum_ms = 0;

	stats_reset();
	for (int i = 0; i < THREADS; i++)
		CHECK(pthread_create(&t[i], NULL, observer, NULL) == 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < PER_THREAD; i++)
		want_sum_ms += (uint64_t)(i % 1000);
	stats_snapshot(&s);
	CHECK(s.hist[STAT_event_commit_latency_seconds].count == THREADS * PER_THREAD);
	CHECK(s.counter[STAT_events_committed_total] == THREADS * PER_THREAD);
	CHECK(fabs(s.hist[STAT_event_commit_latency_seconds].sum -
		   (double)(want_sum_ms * THREADS) / 1000) < 1e-6);
}

int main(void)
{
	test_list();
	test_zero_then_deltas();
	test_buckets();
	test_quantile();
	test_prometheus_round_trip();
	test_json();
	test_rates();
	test_provider();
	test_threads();
	return unit_done("test_stats");
}
