/*
 * main.c: megaingestd's command line, start-up order, signals and shutdown.
 *
 * Start-up: config -> spool (and the segments an earlier run left) -> ack
 * channel -> queues -> writer threads -> intake -> listeners -> READY. Signals are
 * libevent evsignal events, so their handlers run inside the loop without
 * async-signal restrictions.
 * SIGTERM/SIGINT: stop accepting and reading, close the queues, let the
 * writers drain them into PostgreSQL (or the spool when it is away, or once
 * writer.drain_timeout_s has passed), deliver the last acks, exit 0.
 * SIGHUP: load a fresh config; apply the live keys, report the others as
 * needing a restart, or keep the running config when the new one is invalid.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "ack.h"
#include "admin.h"
#include "autoconfig.h"
#include "config.h"
#include "http_input.h"
#include "intake.h"
#include "listener.h"
#include "log.h"
#include "proto.h"
#include "queue.h"
#include "sdnotify.h"
#include "spool.h"
#include "stats.h"
#include "table.h"
#include "writer.h"

#define MAIN_DEFAULT_CONFIG SYSCONFDIR "/megaingest/megaingest.yaml"
#define MAIN_SHUTDOWN_TICK_MS 20
#define MAIN_FLUSH_GRACE_TICKS 100 /* 2 s to hand the last acks to the kernel */

struct daemon {
	struct event_base *base;
	struct config *cfg;           /* live config; swapped whole on reload */
	const char *cfg_path;
	struct spool *spool;
	struct ackq *ackq;
	struct queue **queues;        /* one per writer */
	struct writer **writers;
	int nwriters;
	struct intake *intake;        /* every input's door to the queues */
	struct proto_env env;
	struct listener *listener;
	struct admin *admin;          /* NULL when admin.http is "" */
	struct http_input *http;      /* NULL when http.listen is empty */
	struct event *sig_term, *sig_int, *sig_hup, *stats_tick, *stop_tick, *watchdog_tick;
	int flush_ticks;              /* shutdown: ticks spent flushing acks */
	int stats_interval_s;         /* the stats_tick period now armed (0: none) */
	struct stats_snapshot stats_prev; /* figures at the last summary line, for rates */
	uint64_t watchdog_usec;       /* systemd's WatchdogSec, 0 when off */
	bool watchdog_withheld;       /* the last watchdog tick sent no ping (logged) */
};

static void main_usage(FILE *out)
{
	fprintf(out,
		"Usage: megaingestd [-c FILE] [-t|--check-config] [--print-config] [--version]\n"
		"                   [--help]\n"
		"\n"
		"Ingest msgpack / Fluentd Forward events into the MEGA ledger in PostgreSQL.\n"
		"Runs in the foreground and logs to stderr.\n"
		"\n"
		"  -c, --config FILE    configuration file (default %s)\n"
		"  -t, --check-config   validate the configuration, print what is wrong, exit 0 or 1\n"
		"      --print-config   print the effective configuration as YAML (secrets hidden)\n"
		"      --version        print the version and exit\n"
		"  -h, --help           print this help and exit\n",
		MAIN_DEFAULT_CONFIG);
}

enum main_mode {
	MAIN_RUN = 0,
	MAIN_CHECK,       /* -t */
	MAIN_PRINT        /* --print-config */
};

/* Parse argv; returns -1 to exit 0 (help, version), -2 on a usage error. */
static int main_args(int argc, char **argv, const char **path, enum main_mode *mode)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "print-config", no_argument, NULL, 'P' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "c:th", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': *path = optarg; break;
		case 't': *mode = MAIN_CHECK; break;
		case 'P': *mode = MAIN_PRINT; break;
		case 'V': printf("megaingestd %s\n", PACKAGE_VERSION); return -1;
		case 'h': main_usage(stdout); return -1;
		default: main_usage(stderr); return -2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "megaingestd: unexpected argument \"%s\"\n", argv[optind]);
		return -2;
	}
	return 0;
}

/* ---- shutdown --------------------------------------------------------- */

static bool main_writers_done(const struct daemon *d)
{
	for (int i = 0; i < d->nwriters; i++)
		if (!writer_done(d->writers[i]))
			return false;
	return true;
}

/* Runs every tick after SIGTERM: wait for the writers, then for the acks. */
static void main_stop_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	(void)fd;
	(void)what;
	if (!main_writers_done(d))
		return;
	intake_flush(d->intake);
	if (intake_pending(d->intake) + listener_output_pending(d->listener) +
	    http_input_waiting(d->http) == 0 ||
	    ++d->flush_ticks > MAIN_FLUSH_GRACE_TICKS)
		event_base_loopbreak(d->base);
}

static void main_shutdown(struct daemon *d, const char *why)
{
	struct timeval tick = { 0, MAIN_SHUTDOWN_TICK_MS * 1000 };
	char summary[256];

	if (d->stop_tick)
		return;
	stats_summary(summary, sizeof(summary));
	log_info("main", "%s: draining (%s)", why, summary);
	sdnotify_send("STOPPING=1\nSTATUS=draining after %s", why);
	admin_set_stopping(d->admin);
	listener_stop_accepting(d->listener);
	listener_stop_reading(d->listener);
	intake_stop(d->intake);
	http_input_stop(d->http);
	for (int i = 0; i < d->nwriters; i++)
		queue_close(d->queues[i]);
	d->stop_tick = event_new(d->base, -1, EV_PERSIST, main_stop_tick_cb, d);
	if (!d->stop_tick || event_add(d->stop_tick, &tick) < 0) {
		log_error("main", "cannot schedule the shutdown; stopping the loop now");
		event_base_loopbreak(d->base);
	}
}

/* ---- reload ----------------------------------------------------------- */

static int main_arm_stats(struct daemon *d, int every_s);

static void main_apply(struct daemon *d, const struct config *cfg)
{
	log_set_level((enum log_level)cfg->log_level);
	if (main_arm_stats(d, cfg->log_stats_interval_s) < 0)
		log_error("main", "cannot re-arm the stats timer; summary lines stop");
	for (int i = 0; i < d->nwriters; i++) {
		queue_set_limits(d->queues[i], (size_t)cfg->queue_max_events,
				 (size_t)cfg->queue_max_bytes);
		writer_reconfigure(d->writers[i], cfg);
	}
	spool_dead_letter_set_max(d->spool, (uint64_t)cfg->spool_dead_letter_max_bytes);
	listener_reconfigure(d->listener, cfg);
	http_input_reconfigure(d->http, cfg);
}

static void main_reload(struct daemon *d)
{
	struct config *fresh;
	int restart;

	sdnotify_send("RELOADING=1");
	log_info("main", "SIGHUP: reloading %s", d->cfg_path);
	fresh = config_load(d->cfg_path, stderr);
	if (!fresh) {
		log_error("main", "reload of %s failed (errors above); keeping the previous "
			  "configuration", d->cfg_path);
		sdnotify_send("READY=1\nSTATUS=reload failed, previous configuration kept");
		return;
	}
	restart = config_diff(d->cfg, fresh);
	main_apply(d, fresh);
	config_free(d->cfg);
	d->cfg = fresh;
	log_info("main", "configuration reloaded%s", restart ? "; some changes need a restart" : "");
	sdnotify_send("READY=1\nSTATUS=configuration reloaded");
}

static void main_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	if (sig == SIGHUP)
		main_reload(arg);
	else
		main_shutdown(arg, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Every log.stats_interval_s: one line of rates since the last one, in the
 * log and as systemd's STATUS= (so `systemctl status` shows it). */
static void main_stats_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct stats_snapshot now;
	struct stats_rates rates;
	char line[256];

	(void)fd;
	(void)what;
	stats_snapshot(&now);
	stats_rates(&d->stats_prev, &now, &rates);
	d->stats_prev = now;
	stats_format_rates(&rates, line, sizeof(line));
	log_info("stats", "%s", line);
	sdnotify_send("STATUS=%s", line);
}

/* (Re)arm the summary timer every EVERY_S seconds; 0 stops it. 0 or -1. */
static int main_arm_stats(struct daemon *d, int every_s)
{
	struct timeval tv = { every_s, 0 };

	if (every_s == d->stats_interval_s)
		return 0;
	d->stats_interval_s = every_s;
	if (every_s == 0)
		return d->stats_tick ? event_del(d->stats_tick) : 0;
	if (!d->stats_tick)
		d->stats_tick = event_new(d->base, -1, EV_PERSIST, main_stats_cb, d);
	if (!d->stats_tick)
		return -1;
	stats_snapshot(&d->stats_prev);
	return event_add(d->stats_tick, &tv);
}

/*
 * Every half WatchdogSec: WATCHDOG=1, but only while each running writer
 * made progress recently. Running on the loop, the timer itself stops when
 * the loop is stuck. "Recently" allows the longest wait a healthy writer
 * makes (its queue wait, flush_interval_ms, a backoff, retry_max_ms, or a
 * statement, statement_timeout_ms) plus WatchdogSec, so a writer blocked for
 * longer (a bug: every libpq wait has a deadline) lets systemd restart the
 * daemon.
 */
static void main_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	int wait_ms = d->cfg->writer_retry_max_ms > d->cfg->writer_flush_interval_ms ?
		      d->cfg->writer_retry_max_ms : d->cfg->writer_flush_interval_ms;

	if (d->cfg->writer_statement_timeout_ms + 1000 > wait_ms)
		wait_ms = d->cfg->writer_statement_timeout_ms + 1000;
	double limit = (double)d->watchdog_usec / 1e6 + wait_ms / 1000.0;

	(void)fd;
	(void)what;
	for (int i = 0; i < d->nwriters; i++) {
		double idle = writer_idle_seconds(d->writers[i]);

		if (writer_done(d->writers[i]) || idle <= limit)
			continue;
		if (!d->watchdog_withheld)
			log_error("main", "writer=%d made no progress for %.1f s (limit %.1f s); "
				  "withholding the systemd watchdog ping", i, idle, limit);
		d->watchdog_withheld = true;
		return;
	}
	if (d->watchdog_withheld)
		log_info("main", "writers progress again; watchdog pings resume");
	d->watchdog_withheld = false;
	sdnotify_send("WATCHDOG=1");
}

/* Start the watchdog timer when systemd asked for pings. 0 or -1. */
static int main_watchdog(struct daemon *d)
{
	struct timeval half;

	if (sdnotify_watchdog_usec(&d->watchdog_usec) <= 0 || d->watchdog_usec == 0) {
		d->watchdog_usec = 0;
		return 0;
	}
	half.tv_sec = (time_t)(d->watchdog_usec / 2 / 1000000);
	half.tv_usec = (suseconds_t)(d->watchdog_usec / 2 % 1000000);
	d->watchdog_tick = event_new(d->base, -1, EV_PERSIST, main_watchdog_cb, d);
	if (!d->watchdog_tick || event_add(d->watchdog_tick, &half) < 0)
		return -1;
	log_info("main", "systemd watchdog: a ping every %.1f s while the loop and the writers "
		 "make progress", (double)d->watchdog_usec / 2e6);
	return 0;
}

/* ---- start-up --------------------------------------------------------- */

static int main_events(struct daemon *d)
{
	d->sig_term = evsignal_new(d->base, SIGTERM, main_signal_cb, d);
	d->sig_int = evsignal_new(d->base, SIGINT, main_signal_cb, d);
	d->sig_hup = evsignal_new(d->base, SIGHUP, main_signal_cb, d);
	if (!d->sig_term || !d->sig_int || !d->sig_hup || evsignal_add(d->sig_term, NULL) < 0 ||
	    evsignal_add(d->sig_int, NULL) < 0 || evsignal_add(d->sig_hup, NULL) < 0)
		return -1;
	if (main_arm_stats(d, d->cfg->log_stats_interval_s) < 0 || main_watchdog(d) < 0)
		return -1;
	return 0;
}

/* Gauge providers: the queues know their depth; the loop reads it. */
static int64_t main_queue_events(void *arg)
{
	const struct daemon *d = arg;
	int64_t n = 0;

	for (int i = 0; i < d->nwriters; i++)
		n += (int64_t)queue_events(d->queues[i]);
	return n;
}

static int64_t main_queue_bytes(void *arg)
{
	const struct daemon *d = arg;
	int64_t n = 0;

	for (int i = 0; i < d->nwriters; i++)
		n += (int64_t)queue_bytes(d->queues[i]);
	return n;
}

static void main_providers(struct daemon *d, bool on)
{
	stats_gauge_provider(STAT_queue_events, on ? main_queue_events : NULL, d);
	stats_gauge_provider(STAT_queue_bytes, on ? main_queue_bytes : NULL, d);
}

static int main_writers(struct daemon *d)
{
	int n = d->cfg->writer_connections;

	d->queues = calloc((size_t)n, sizeof(*d->queues));
	d->writers = calloc((size_t)n, sizeof(*d->writers));
	if (!d->queues || !d->writers)
		return -1;
	stats_set_writers(n);
	table_set_name(0, d->cfg->pg_table); /* before any writer thread reads it */
	for (int i = 0; i < n; i++) {
		d->queues[i] = queue_new((size_t)d->cfg->queue_max_events,
					 (size_t)d->cfg->queue_max_bytes, d->ackq);
		if (!d->queues[i])
			return -1;
		d->writers[i] = writer_start(i, d->cfg, d->queues[i], d->spool, d->ackq);
		if (!d->writers[i]) {
			queue_free(d->queues[i]);
			d->queues[i] = NULL;
			return -1;
		}
		d->nwriters++;
	}
	return 0;
}

static int main_start(struct daemon *d)
{
	if (evthread_use_pthreads() < 0 || !(d->base = event_base_new())) {
		log_error("main", "cannot initialise libevent");
		return -1;
	}
	d->spool = spool_open(d->cfg->spool_dir);
	/* Segments an earlier run left are found (and re-split for a changed
	 * writer count) before any writer starts, so each replays its own first. */
	if (d->spool && spool_stream_recover(d->spool, d->cfg->writer_connections,
					     (uint64_t)d->cfg->spool_max_bytes) < 0) {
		log_error("main", "start-up failed (see above)");
		return -1;
	}
	d->ackq = d->spool ? ackq_new() : NULL;
	if (!d->ackq || main_writers(d) < 0) {
		log_error("main", "start-up failed (see above)");
		return -1;
	}
	spool_dead_letter_set_max(d->spool, (uint64_t)d->cfg->spool_dead_letter_max_bytes);
	d->intake = intake_new(d->base, d->queues, d->nwriters, d->spool, d->ackq);
	if (!d->intake) {
		log_error("main", "start-up failed (see above)");
		return -1;
	}
	d->env = (struct proto_env){ .intake = d->intake,
				     .max_event_bytes = (size_t)d->cfg->listen_max_event_bytes };
	main_providers(d, true);
	d->listener = listener_start(d->base, d->cfg, &d->env);
	if (d->listener && d->cfg->http_listen_count > 0 &&
	    !(d->http = http_input_start(d->base, d->cfg, d->intake))) {
		log_error("main", "start-up failed (see above)");
		return -1;
	}
	if (d->listener && d->cfg->admin_http[0])
		d->admin = admin_start(d->base, d->cfg->admin_http, d->queues, d->nwriters);
	if (!d->listener || (d->cfg->admin_http[0] && !d->admin) || main_events(d) < 0) {
		log_error("main", "start-up failed (see above)");
		return -1;
	}
	return 0;
}

/* Stop every thread and free everything, in reverse start-up order. */
static void main_teardown(struct daemon *d)
{
	for (int i = 0; i < d->nwriters; i++)
		queue_close(d->queues[i]);
	for (int i = 0; i < d->nwriters; i++)
		writer_join(d->writers[i]);
	admin_free(d->admin);
	main_providers(d, false);
	http_input_free(d->http);
	listener_free(d->listener);
	intake_free(d->intake);
	for (int i = 0; d->queues && i < d->nwriters; i++)
		queue_free(d->queues[i]);
	free(d->queues);
	free(d->writers);
	ackq_free(d->ackq);
	spool_close(d->spool);
	struct event *evs[] = { d->sig_term, d->sig_int, d->sig_hup, d->stats_tick, d->stop_tick,
				d->watchdog_tick };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i])
			event_free(evs[i]);
	if (d->base)
		event_base_free(d->base);
	config_free(d->cfg);
}

/* -t and --print-config: report on the loaded CFG (NULL: invalid) and exit 0 or 1. */
static int main_check(const struct daemon *d, enum main_mode mode)
{
	if (!d->cfg)
		return 1;
	config_warn_exposure(d->cfg);
	if (mode == MAIN_PRINT) {
		printf("# megaingestd %s: effective configuration of %s; secrets shown as "
		       "(hidden)\n\n", PACKAGE_VERSION, d->cfg_path);
		config_print(d->cfg, stdout);
	} else {
		printf("megaingestd: %s: configuration is valid\n", d->cfg_path);
	}
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct daemon d = { .cfg_path = MAIN_DEFAULT_CONFIG };
	enum main_mode mode = MAIN_RUN;
	char summary[256];
	sigset_t stop_signals;
	int rc;

	/* A SIGTERM that arrives while starting (config read, listeners bound,
	 * handlers not yet added) waits until the loop handles it: blocked
	 * here, inherited blocked by every thread main_start makes, unblocked
	 * once the loop's handlers are in place. */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	rc = main_args(argc, argv, &d.cfg_path, &mode);

	if (rc < 0)
		return rc == -1 ? 0 : 2;
	d.cfg = config_load(d.cfg_path, stderr);
	if (mode != MAIN_RUN) {
		rc = main_check(&d, mode);
		config_free(d.cfg);
		return rc;
	}
	if (!d.cfg) {
		fprintf(stderr, "megaingestd: %s: invalid configuration, not starting\n", d.cfg_path);
		return 1;
	}
	log_set_level((enum log_level)d.cfg->log_level);
	config_warn_exposure(d.cfg);
	stats_mark_start();
	signal(SIGPIPE, SIG_IGN);
	rc = main_start(&d);
	pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
	if (rc == 0) {
		log_info("main", "megaingestd %s ready (%d writer%s, config %s)", PACKAGE_VERSION,
			 d.nwriters, d.nwriters == 1 ? "" : "s", d.cfg_path);
		sdnotify_send("READY=1\nSTATUS=ready");
		if (event_base_dispatch(d.base) < 0)
			rc = -1;
	}
	main_teardown(&d);
	stats_summary(summary, sizeof(summary));
	log_info("main", "stopped (%s)", summary);
	return rc == 0 ? 0 : 1;
}
