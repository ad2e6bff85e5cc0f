/*
 * stats.c: the daemon's counters, gauges and histograms, and their formats.
 *
 * Every figure is a relaxed atomic: the loop and the writers add to them a
 * few times per message or batch and never wait; readers take a snapshot
 * (stats_snapshot) and format or compare that. The formats (Prometheus text,
 * JSON, the summary line) and the Prometheus reader megactl uses all walk
 * stats_metrics[], which STATS_METRICS in stats.h generates, so a metric
 * added there shows up everywhere. Counters only grow; stats_reset exists
 * for tests.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "clock_ns.h"
#include "autoconfig.h"
#include "log_ring.h"
#include "stats.h"

const struct stats_metric stats_metrics[] = {
#define STATS_DESC_(name, kind, help) \
	{ #name, STATS_##kind, help, STATS_K_##kind(STAT_##name, 0, STAT_##name, STAT_##name, 0) },
	STATS_METRICS(STATS_DESC_)
#undef STATS_DESC_
};
const size_t stats_metric_count = sizeof(stats_metrics) / sizeof(stats_metrics[0]);

const double stats_bucket_bounds[STATS_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
	0.25, 0.5, 1, 2.5, 5, 10, 30, 60
};

static atomic_uint_least64_t stats_counters[STAT_COUNT];         /* any thread, relaxed */
static atomic_uint_least64_t stats_rejects[RECORD_REASON_COUNT]; /* any thread, relaxed */
static atomic_uint_least64_t stats_tables[TABLE_COUNT];          /* writers add, relaxed */
static atomic_uint_least64_t stats_http[STATS_HTTP_NCODES];      /* loop adds, relaxed */
static const int stats_http_codes[STATS_HTTP_NCODES] = { STATS_HTTP_CODES_LIST };
static atomic_int_least64_t stats_gauges[STAT_GAUGE_COUNT];      /* owner stores, relaxed */
static atomic_uint_least64_t stats_buckets[STAT_HIST_COUNT][STATS_BUCKETS + 1]; /* relaxed */
static atomic_uint_least64_t stats_sums_ns[STAT_HIST_COUNT];     /* relaxed */
static atomic_int_least64_t stats_start_ns;                      /* CLOCK_MONOTONIC at start */

/* Set at start-up by the loop thread, before anyone takes a snapshot. */
static struct {
	int64_t (*fn)(void *arg);
	void *arg;
} stats_providers[STAT_GAUGE_COUNT];

/* ---- writing ------------------------------------------------------------ */

void stats_add(enum stats_counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&stats_counters[c], n, memory_order_relaxed);
}

void stats_reject(enum record_reason reason)
{
	atomic_fetch_add_explicit(&stats_rejects[reason], 1, memory_order_relaxed);
}

void stats_reject_n(enum record_reason reason, uint64_t n)
{
	atomic_fetch_add_explicit(&stats_rejects[reason], n, memory_order_relaxed);
}

void stats_table_rows(int table, uint64_t n)
{
	if (table >= 0 && table < TABLE_COUNT)
		atomic_fetch_add_explicit(&stats_tables[table], n, memory_order_relaxed);
}

void stats_http_request(int code)
{
	for (int i = 0; i < STATS_HTTP_NCODES; i++)
		if (stats_http_codes[i] == code) {
			atomic_fetch_add_explicit(&stats_http[i], 1, memory_order_relaxed);
			return;
		}
}

void stats_observe_ns(enum stats_hist h, int64_t ns)
{
	double s;
	int i = 0;

	if (ns < 0)
		ns = 0;
	s = (double)ns / 1e9;
	while (i < STATS_BUCKETS && s > stats_bucket_bounds[i])
		i++;
	atomic_fetch_add_explicit(&stats_buckets[h][i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&stats_sums_ns[h], (uint64_t)ns, memory_order_relaxed);
}

void stats_set_gauge(enum stats_gauge g, int64_t v)
{
	atomic_store_explicit(&stats_gauges[g], v, memory_order_relaxed);
}

void stats_set_connections(int64_t n)
{
	stats_set_gauge(STAT_connections, n);
}

/*
 * Each writer's state and health, one atomic per writer: the state in the
 * low bits, STATS_WRITER_UP when it is connected and its last statement
 * succeeded. Stored (relaxed) only by that writer, read by any thread;
 * postgres_up and the writer_state gauge are derived from them when read,
 * so two writers publishing at once can never leave a stale aggregate.
 */
#define STATS_WRITER_UP 0x100
static atomic_int stats_writer_word[STATS_MAX_WRITERS];
static atomic_int stats_writer_count; /* set once by main before the writers start */

static const char *const stats_writer_labels[STATS_WRITER_STATE_COUNT] = {
	[STATS_WRITER_WRITING] = "writing",
	[STATS_WRITER_REPLAYING] = "replaying",
	[STATS_WRITER_SPOOLING] = "spooling",
	[STATS_WRITER_HOLDING] = "holding",
	[STATS_WRITER_STALLED] = "stalled",
};

const char *stats_writer_state_label(enum stats_writer_state st)
{
	return st < STATS_WRITER_STATE_COUNT ? stats_writer_labels[st] : "?";
}

int stats_writer_state_parse(const char *label)
{
	for (int i = 0; i < STATS_WRITER_STATE_COUNT; i++)
		if (strcmp(label, stats_writer_labels[i]) == 0)
			return i;
	return -1;
}

void stats_set_writers(int n)
{
	if (n > STATS_MAX_WRITERS)
		n = STATS_MAX_WRITERS;
	for (int i = 0; i < n; i++)
		atomic_store(&stats_writer_word[i], STATS_WRITER_SPOOLING);
	atomic_store(&stats_writer_count, n);
}

void stats_writer_publish(int id, enum stats_writer_state state, int up)
{
	if (id >= 0 && id < STATS_MAX_WRITERS)
		atomic_store_explicit(&stats_writer_word[id],
				      (int)state | (up ? STATS_WRITER_UP : 0),
				      memory_order_relaxed);
}

/* 1 while every writer is up (none started: 0). */
static int64_t stats_writers_up(void)
{
	int n = atomic_load(&stats_writer_count);

	for (int i = 0; i < n; i++)
		if (!(atomic_load_explicit(&stats_writer_word[i], memory_order_relaxed) &
		      STATS_WRITER_UP))
			return 0;
	return n > 0;
}

void stats_gauge_provider(enum stats_gauge g, int64_t (*fn)(void *arg), void *arg)
{
	stats_providers[g].fn = fn;
	stats_providers[g].arg = arg;
}

void stats_mark_start(void)
{
	atomic_store(&stats_start_ns, clock_mono_ns());
}

/* ---- reading ------------------------------------------------------------ */

uint64_t stats_get(enum stats_counter c)
{
	return atomic_load_explicit(&stats_counters[c], memory_order_relaxed);
}

uint64_t stats_rejected(enum record_reason reason)
{
	return atomic_load_explicit(&stats_rejects[reason], memory_order_relaxed);
}

int64_t stats_gauge(enum stats_gauge g)
{
	int64_t start;

	if (stats_providers[g].fn)
		return stats_providers[g].fn(stats_providers[g].arg);
	if (g == STAT_postgres_up)
		return stats_writers_up();
	if (g == STAT_uptime_seconds) {
		start = atomic_load(&stats_start_ns);
		return start ? (clock_mono_ns() - start) / 1000000000LL : 0;
	}
	return atomic_load_explicit(&stats_gauges[g], memory_order_relaxed);
}

int64_t stats_connections(void)
{
	return stats_gauge(STAT_connections);
}

int stats_postgres_up(void)
{
	return (int)stats_gauge(STAT_postgres_up);
}

const char *stats_name(enum stats_counter c)
{
	for (size_t i = 0; i < stats_metric_count; i++)
		if (stats_metrics[i].kind == STATS_COUNTER && stats_metrics[i].index == (int)c)
			return stats_metrics[i].name;
	return "?";
}

static void stats_hist_load(enum stats_hist h, struct stats_hist_snap *out)
{
	out->count = 0;
	for (int i = 0; i <= STATS_BUCKETS; i++) {
		out->bucket[i] = atomic_load_explicit(&stats_buckets[h][i], memory_order_relaxed);
		out->count += out->bucket[i];
	}
	out->sum = (double)atomic_load_explicit(&stats_sums_ns[h], memory_order_relaxed) / 1e9;
}

void stats_snapshot(struct stats_snapshot *out)
{
	memset(out, 0, sizeof(*out));
	out->taken_ns = clock_mono_ns();
	for (int i = 0; i < STAT_COUNT; i++)
		out->counter[i] = stats_get(i);
	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		out->rejected[i] = stats_rejected(i);
	for (int i = 0; i < TABLE_COUNT; i++)
		out->table_rows[i] = atomic_load_explicit(&stats_tables[i], memory_order_relaxed);
	for (int i = 0; i < STATS_HTTP_NCODES; i++)
		out->http_codes[i] = atomic_load_explicit(&stats_http[i], memory_order_relaxed);
	for (int i = 0; i < STAT_GAUGE_COUNT; i++)
		out->gauge[i] = stats_gauge(i);
	for (int i = 0; i < STAT_HIST_COUNT; i++)
		stats_hist_load(i, &out->hist[i]);
	out->writers = atomic_load(&stats_writer_count);
	for (int i = 0; i < out->writers; i++)
		out->writer_state[i] = (uint8_t)(atomic_load_explicit(&stats_writer_word[i],
								      memory_order_relaxed) & 0xff);
}

void stats_reset(void)
{
	for (int i = 0; i < STAT_COUNT; i++)
		atomic_store(&stats_counters[i], 0);
	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		atomic_store(&stats_rejects[i], 0);
	for (int i = 0; i < TABLE_COUNT; i++)
		atomic_store(&stats_tables[i], 0);
	for (int i = 0; i < STATS_HTTP_NCODES; i++)
		atomic_store(&stats_http[i], 0);
	for (int i = 0; i < STAT_GAUGE_COUNT; i++)
		atomic_store(&stats_gauges[i], 0);
	for (int h = 0; h < STAT_HIST_COUNT; h++) {
		for (int i = 0; i <= STATS_BUCKETS; i++)
			atomic_store(&stats_buckets[h][i], 0);
		atomic_store(&stats_sums_ns[h], 0);
	}
}

/* ---- derived figures ------------------------------------------------------ */

double stats_quantile(const uint64_t b[STATS_BUCKETS + 1], double q)
{
	uint64_t total = 0, below = 0;
	double rank;

	for (int i = 0; i <= STATS_BUCKETS; i++)
		total += b[i];
	if (total == 0)
		return -1;
	rank = q * (double)total;
	for (int i = 0; i < STATS_BUCKETS; i++) {
		double lo = i ? stats_bucket_bounds[i - 1] : 0, hi = stats_bucket_bounds[i];

		if (b[i] > 0 && (double)(below + b[i]) >= rank)
			return lo + (hi - lo) * (rank - (double)below) / (double)b[i];
		below += b[i];
	}
	/* In the +Inf bucket: the highest finite bound is all that is known. */
	return stats_bucket_bounds[STATS_BUCKETS - 1];
}

/* CUR - PREV for a counter; a counter that went down (a restarted daemon
 * between two snapshots) counts from zero, as Prometheus' rate() does. */
static uint64_t stats_delta(uint64_t prev, uint64_t cur)
{
	return cur >= prev ? cur - prev : cur;
}

static uint64_t stats_rejected_sum(const struct stats_snapshot *s)
{
	uint64_t n = 0;

	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		n += s->rejected[i];
	return n;
}

void stats_rates(const struct stats_snapshot *prev, const struct stats_snapshot *cur,
		 struct stats_rates *out)
{
	const struct stats_hist_snap *a = &prev->hist[STAT_event_commit_latency_seconds];
	const struct stats_hist_snap *b = &cur->hist[STAT_event_commit_latency_seconds];
	uint64_t lat[STATS_BUCKETS + 1];
	double secs = (double)(cur->taken_ns - prev->taken_ns) / 1e9;
	double per = secs > 0 ? 1 / secs : 0;

	memset(out, 0, sizeof(*out));
	out->seconds = secs;
	out->in_per_s = (double)stats_delta(prev->counter[STAT_events_received_total],
					    cur->counter[STAT_events_received_total]) * per;
	out->committed_per_s = (double)stats_delta(prev->counter[STAT_events_committed_total],
						   cur->counter[STAT_events_committed_total]) * per;
	out->rejected_per_s = (double)stats_delta(stats_rejected_sum(prev),
						  stats_rejected_sum(cur)) * per;
	for (int i = 0; i <= STATS_BUCKETS; i++)
		lat[i] = stats_delta(a->bucket[i], b->bucket[i]);
	out->p99_s = stats_quantile(lat, 0.99);
	out->queue_events = cur->gauge[STAT_queue_events];
	out->queue_bytes = cur->gauge[STAT_queue_bytes];
	out->spool_bytes = cur->gauge[STAT_spool_bytes];
	out->connections = cur->gauge[STAT_connections];
	out->postgres_up = cur->gauge[STAT_postgres_up];
	out->writer_state = -1;
	for (int i = 0; i < cur->writers; i++)
		if (cur->writer_state[i] > out->writer_state)
			out->writer_state = cur->writer_state[i];
}

void stats_format_bytes(double v, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%.0f B", v);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
}

void stats_format_seconds(double s, char *buf, size_t len)
{
	if (s < 0)
		snprintf(buf, len, "-");
	else if (s < 1)
		snprintf(buf, len, "%.1f ms", s * 1000);
	else
		snprintf(buf, len, "%.2f s", s);
}

void stats_format_rates(const struct stats_rates *r, char *buf, size_t len)
{
	char qb[32], sb[32], p99[32];

	stats_format_bytes((double)r->queue_bytes, qb, sizeof(qb));
	stats_format_bytes((double)r->spool_bytes, sb, sizeof(sb));
	stats_format_seconds(r->p99_s, p99, sizeof(p99));
	snprintf(buf, len, "in=%.0f/s committed=%.0f/s rejected=%.0f/s queue=%lld (%s) "
		 "spool=%s p99=%s conns=%lld postgres=%s writers=%s",
		 r->in_per_s, r->committed_per_s, r->rejected_per_s, (long long)r->queue_events, qb,
		 sb, p99, (long long)r->connections, r->postgres_up ? "up" : "down",
		 r->writer_state < 0 ? "-" : stats_writer_state_label(r->writer_state));
}

void stats_summary(char *buf, size_t len)
{
	struct stats_snapshot s;

	stats_snapshot(&s);
	snprintf(buf, len,
		 "received=%llu committed=%llu rejected=%llu dead_lettered=%llu batches=%llu "
		 "connections=%lld postgres_up=%lld",
		 (unsigned long long)s.counter[STAT_events_received_total],
		 (unsigned long long)s.counter[STAT_events_committed_total],
		 (unsigned long long)stats_rejected_sum(&s),
		 (unsigned long long)s.counter[STAT_events_dead_lettered_total],
		 (unsigned long long)s.counter[STAT_batches_committed_total],
		 (long long)s.gauge[STAT_connections], (long long)s.gauge[STAT_postgres_up]);
}

/* ---- Prometheus text ------------------------------------------------------ */

static const char *const stats_prom_type[STATS_KIND_COUNT] = {
	"counter", "counter", "gauge", "histogram", "gauge", "gauge", "counter", "counter"
};

/* writer_state: one series per writer and state, 1 for the current one. */
static int stats_prom_writers(const struct stats_snapshot *s, const char *name,
			      struct evbuffer *o)
{
	int rc = 0;

	for (int w = 0; w < s->writers; w++)
		for (int st = 0; st < STATS_WRITER_STATE_COUNT; st++)
			rc |= evbuffer_add_printf(o, STATS_PREFIX "%s{writer=\"%d\",state=\"%s\"} %d\n",
						  name, w, stats_writer_labels[st],
						  s->writer_state[w] == st) < 0;
	return rc ? -1 : 0;
}

static int stats_prom_hist(const struct stats_hist_snap *h, const char *name, struct evbuffer *o)
{
	uint64_t cum = 0;
	int rc = 0;

	for (int i = 0; i < STATS_BUCKETS; i++) {
		cum += h->bucket[i];
		rc |= evbuffer_add_printf(o, STATS_PREFIX "%s_bucket{le=\"%g\"} %llu\n", name,
					  stats_bucket_bounds[i], (unsigned long long)cum) < 0;
	}
	rc |= evbuffer_add_printf(o, STATS_PREFIX "%s_bucket{le=\"+Inf\"} %llu\n", name,
				  (unsigned long long)h->count) < 0;
	rc |= evbuffer_add_printf(o, STATS_PREFIX "%s_sum %.9g\n", name, h->sum) < 0;
	rc |= evbuffer_add_printf(o, STATS_PREFIX "%s_count %llu\n", name,
				  (unsigned long long)h->count) < 0;
	return rc ? -1 : 0;
}

/* The sample lines of metric M. */
static int stats_prom_samples(const struct stats_snapshot *s, const struct stats_metric *m,
			      struct evbuffer *o)
{
	int rc = 0;

	switch (m->kind) {
	case STATS_COUNTER:
		return evbuffer_add_printf(o, STATS_PREFIX "%s %llu\n", m->name,
					   (unsigned long long)s->counter[m->index]) < 0 ? -1 : 0;
	case STATS_GAUGE:
		return evbuffer_add_printf(o, STATS_PREFIX "%s %lld\n", m->name,
					   (long long)s->gauge[m->index]) < 0 ? -1 : 0;
	case STATS_REJECTS:
		for (int i = 0; i < RECORD_REASON_COUNT; i++)
			rc |= evbuffer_add_printf(o, STATS_PREFIX "%s{reason=\"%s\"} %llu\n",
						  m->name, record_reason_label(i),
						  (unsigned long long)s->rejected[i]) < 0;
		return rc ? -1 : 0;
	case STATS_HISTOGRAM:
		return stats_prom_hist(&s->hist[m->index], m->name, o);
	case STATS_WRITERS:
		return stats_prom_writers(s, m->name, o);
	case STATS_TABLES:
		for (int i = 0; i < TABLE_COUNT; i++)
			rc |= evbuffer_add_printf(o, STATS_PREFIX "%s{table=\"%s\"} %llu\n",
						  m->name, table_name(i),
						  (unsigned long long)s->table_rows[i]) < 0;
		return rc ? -1 : 0;
	case STATS_HTTP_CODES:
		for (int i = 0; i < STATS_HTTP_NCODES; i++)
			rc |= evbuffer_add_printf(o, STATS_PREFIX "%s{code=\"%d\"} %llu\n",
						  m->name, stats_http_codes[i],
						  (unsigned long long)s->http_codes[i]) < 0;
		return rc ? -1 : 0;
	case STATS_INFO:
	case STATS_KIND_COUNT:
		break;
	}
	return evbuffer_add_printf(o, STATS_PREFIX "%s{version=\"%s\"} 1\n", m->name,
				   PACKAGE_VERSION) < 0 ? -1 : 0;
}

int stats_format_prometheus(const struct stats_snapshot *s, struct evbuffer *out)
{
	for (size_t i = 0; i < stats_metric_count; i++) {
		const struct stats_metric *m = &stats_metrics[i];

		if (evbuffer_add_printf(out, "# HELP " STATS_PREFIX "%s %s\n# TYPE " STATS_PREFIX
					"%s %s\n", m->name, m->help, m->name,
					stats_prom_type[m->kind]) < 0 ||
		    stats_prom_samples(s, m, out) < 0)
			return -1;
	}
	return 0;
}

/* ---- JSON ------------------------------------------------------------------ */

static int stats_json_hist(const struct stats_hist_snap *h, struct evbuffer *o)
{
	uint64_t cum = 0;
	int rc = 0;

	rc |= evbuffer_add_printf(o, "{\"count\":%llu,\"sum\":%.9g,\"buckets\":{",
				  (unsigned long long)h->count, h->sum) < 0;
	for (int i = 0; i < STATS_BUCKETS; i++) {
		cum += h->bucket[i];
		rc |= evbuffer_add_printf(o, "\"%g\":%llu,", stats_bucket_bounds[i],
					  (unsigned long long)cum) < 0;
	}
	rc |= evbuffer_add_printf(o, "\"+Inf\":%llu}}", (unsigned long long)h->count) < 0;
	return rc ? -1 : 0;
}

static int stats_json_value(const struct stats_snapshot *s, const struct stats_metric *m,
			    struct evbuffer *o)
{
	int rc = 0;

	switch (m->kind) {
	case STATS_COUNTER:
		return evbuffer_add_printf(o, "%llu", (unsigned long long)s->counter[m->index]) < 0;
	case STATS_GAUGE:
		return evbuffer_add_printf(o, "%lld", (long long)s->gauge[m->index]) < 0;
	case STATS_REJECTS:
		for (int i = 0; i < RECORD_REASON_COUNT; i++)
			rc |= evbuffer_add_printf(o, "%s\"%s\":%llu", i ? "," : "{",
						  record_reason_label(i),
						  (unsigned long long)s->rejected[i]) < 0;
		return rc | (evbuffer_add(o, "}", 1) < 0);
	case STATS_HISTOGRAM:
		return stats_json_hist(&s->hist[m->index], o) < 0;
	case STATS_WRITERS:
		for (int i = 0; i < s->writers; i++)
			rc |= evbuffer_add_printf(o, "%s\"%s\"", i ? "," : "[",
						  stats_writer_state_label(s->writer_state[i])) < 0;
		return rc | (evbuffer_add(o, s->writers ? "]" : "[]", s->writers ? 1 : 2) < 0);
	case STATS_TABLES:
		for (int i = 0; i < TABLE_COUNT; i++)
			rc |= evbuffer_add_printf(o, "%s\"%s\":%llu", i ? "," : "{", table_name(i),
						  (unsigned long long)s->table_rows[i]) < 0;
		return rc | (evbuffer_add(o, "}", 1) < 0);
	case STATS_HTTP_CODES:
		for (int i = 0; i < STATS_HTTP_NCODES; i++)
			rc |= evbuffer_add_printf(o, "%s\"%d\":%llu", i ? "," : "{",
						  stats_http_codes[i],
						  (unsigned long long)s->http_codes[i]) < 0;
		return rc | (evbuffer_add(o, "}", 1) < 0);
	case STATS_INFO:
	case STATS_KIND_COUNT:
		break;
	}
	return evbuffer_add_printf(o, "{\"version\":\"%s\"}", PACKAGE_VERSION) < 0;
}

int stats_format_json(const struct stats_snapshot *s, struct evbuffer *out)
{
	int rc = evbuffer_add_printf(out, "{\"version\":\"%s\"", PACKAGE_VERSION) < 0;

	for (size_t i = 0; i < stats_metric_count && !rc; i++) {
		rc |= evbuffer_add_printf(out, ",\"%s\":", stats_metrics[i].name) < 0;
		rc |= stats_json_value(s, &stats_metrics[i], out);
	}
	rc |= log_ring_format_json(out) < 0; /* the status page's recent warnings */
	rc |= evbuffer_add(out, "}\n", 2) < 0;
	return rc ? -1 : 0;
}

/* ---- reading Prometheus text (megactl) ------------------------------------- */

struct stats_sample {
	char name[96];      /* without the prefix */
	char label[64];     /* the first label's value, or "" */
	char label2[64];    /* the second label's value, or "" */
	double value;
};

/* Copy the next quoted label value at or after *P (before END) into BUF;
 * *P moves past it. 1: copied, 0: none left, -1: malformed or too long. */
static int stats_split_label(const char **p, const char *end, char *buf, size_t len)
{
	const char *v = memchr(*p, '"', (size_t)(end - *p)), *q;
	const char *close = memchr(*p, '}', (size_t)(end - *p));

	if (!v || (close && close < v))
		return 0;
	q = memchr(v + 1, '"', (size_t)(end - v - 1));
	if (!q || (size_t)(q - v - 1) >= len)
		return -1;
	memcpy(buf, v + 1, (size_t)(q - v - 1));
	buf[q - v - 1] = '\0';
	*p = q + 1;
	return 1;
}

/* Split one sample line "megaingest_NAME{k="v",k2="v2"} VALUE". 1: a sample
 * of ours, 0: someone else's line, -1: malformed. */
static int stats_split_line(const char *line, size_t len, struct stats_sample *out)
{
	size_t plen = strlen(STATS_PREFIX), n = 0;
	const char *p = line + plen, *end = line + len;
	char num[64], *stop;

	if (len < plen || strncmp(line, STATS_PREFIX, plen) != 0)
		return 0;
	while (p < end && *p != '{' && *p != ' ' && n + 1 < sizeof(out->name))
		out->name[n++] = *p++;
	out->name[n] = '\0';
	out->label[0] = out->label2[0] = '\0';
	if (p < end && *p == '{') {
		if (stats_split_label(&p, end, out->label, sizeof(out->label)) < 0 ||
		    stats_split_label(&p, end, out->label2, sizeof(out->label2)) < 0)
			return -1;
		p = memchr(p, '}', (size_t)(end - p));
		if (!p)
			return -1;
		p++;
	}
	if (p >= end || *p != ' ' || (size_t)(end - p) >= sizeof(num))
		return -1;
	memcpy(num, p + 1, (size_t)(end - p - 1));
	num[end - p - 1] = '\0';
	errno = 0;
	out->value = strtod(num, &stop);
	return stop == num || *stop || errno ? -1 : 1;
}

/* Histogram H's share of sample S whose name is H's plus SUFFIX. */
static int stats_take_hist(struct stats_hist_snap *h, const char *suffix,
			   const struct stats_sample *s)
{
	double le;

	if (strcmp(suffix, "_sum") == 0) {
		h->sum = s->value;
		return 1;
	}
	if (strcmp(suffix, "_count") == 0) {
		h->count = (uint64_t)s->value;
		return 1;
	}
	if (strcmp(suffix, "_bucket") != 0)
		return 0;
	le = strtod(s->label, NULL);
	for (int i = 0; i < STATS_BUCKETS; i++)
		if (fabs(le - stats_bucket_bounds[i]) <= 1e-9 * stats_bucket_bounds[i]) {
			h->bucket[i] = (uint64_t)s->value; /* cumulative until the end */
			return 1;
		}
	if (isinf(le)) {
		h->bucket[STATS_BUCKETS] = (uint64_t)s->value;
		return 1;
	}
	return 0;
}

static int stats_take_rejected(struct stats_snapshot *out, const struct stats_sample *s)
{
	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		if (strcmp(s->label, record_reason_label(i)) == 0) {
			out->rejected[i] = (uint64_t)s->value;
			return 1;
		}
	return 0; /* a reason this megactl does not know */
}

/* rows_committed_total{table="T"} N. */
static int stats_take_table(struct stats_snapshot *out, const struct stats_sample *s)
{
	for (int i = 0; i < TABLE_COUNT; i++)
		if (strcmp(s->label, table_name(i)) == 0) {
			out->table_rows[i] = (uint64_t)s->value;
			return 1;
		}
	return 0; /* a table this megactl does not know */
}

/* http_requests_total{code="C"} N. */
static int stats_take_http(struct stats_snapshot *out, const struct stats_sample *s)
{
	for (int i = 0; i < STATS_HTTP_NCODES; i++)
		if (atoi(s->label) == stats_http_codes[i]) {
			out->http_codes[i] = (uint64_t)s->value;
			return 1;
		}
	return 0;
}

/* writer_state{writer="N",state="S"} 1: writer N is in state S. */
static int stats_take_writer(struct stats_snapshot *out, const struct stats_sample *s)
{
	char *stop;
	long w = strtol(s->label, &stop, 10);
	int st = stats_writer_state_parse(s->label2);

	if (stop == s->label || *stop || w < 0 || w >= STATS_MAX_WRITERS || st < 0)
		return 0;
	if (w >= out->writers)
		out->writers = (int)w + 1;
	if (s->value == 1)
		out->writer_state[w] = (uint8_t)st;
	return 1;
}

/* Store sample S into OUT. 1 when it is one of ours, else 0. */
static int stats_take(struct stats_snapshot *out, const struct stats_sample *s)
{
	for (size_t i = 0; i < stats_metric_count; i++) {
		const struct stats_metric *m = &stats_metrics[i];
		size_t nl = strlen(m->name);

		if (strncmp(s->name, m->name, nl) != 0)
			continue;
		if (m->kind == STATS_HISTOGRAM && s->name[nl])
			return stats_take_hist(&out->hist[m->index], s->name + nl, s);
		if (s->name[nl])
			continue;
		switch (m->kind) {
		case STATS_COUNTER: out->counter[m->index] = (uint64_t)s->value; return 1;
		case STATS_GAUGE: out->gauge[m->index] = (int64_t)s->value; return 1;
		case STATS_REJECTS: return stats_take_rejected(out, s);
		case STATS_WRITERS: return stats_take_writer(out, s);
		case STATS_TABLES: return stats_take_table(out, s);
		case STATS_HTTP_CODES: return stats_take_http(out, s);
		default: return 1;
		}
	}
	return 0;
}

/* Turn the cumulative bucket counts read from the text into per-bucket ones. */
static void stats_uncumulate(struct stats_snapshot *out)
{
	for (int h = 0; h < STAT_HIST_COUNT; h++) {
		uint64_t prev = 0;

		for (int i = 0; i <= STATS_BUCKETS; i++) {
			uint64_t c = out->hist[h].bucket[i];

			out->hist[h].bucket[i] = c >= prev ? c - prev : 0;
			if (c > prev)
				prev = c;
		}
	}
}

int stats_parse_prometheus(const char *text, struct stats_snapshot *out, char *err, size_t errlen)
{
	int found = 0, lineno = 0;

	memset(out, 0, sizeof(*out));
	out->taken_ns = clock_mono_ns();
	while (*text) {
		const char *nl = strchr(text, '\n');
		size_t len = nl ? (size_t)(nl - text) : strlen(text);
		struct stats_sample s;
		int rc = 0;

		lineno++;
		if (len > 0 && text[0] != '#')
			rc = stats_split_line(text, len, &s);
		if (rc < 0) {
			snprintf(err, errlen, "line %d is not a Prometheus sample: %.*s", lineno,
				 (int)(len > 80 ? 80 : len), text);
			return -1;
		}
		if (rc > 0)
			found += stats_take(out, &s);
		text += len + (nl ? 1 : 0);
	}
	stats_uncumulate(out);
	return found;
}
