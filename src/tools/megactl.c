/*
 * megactl.c: the operators' tool: main(), the command table, and the
 * commands that read megaingestd's admin endpoint (stats, health).
 *
 * `megactl stats` reads /metrics (the Prometheus text, which is the stable
 * machine format) with stats_parse_prometheus, and prints every figure of
 * stats_metrics[] once, or with -f one vmstat-style line per interval with
 * the rates stats_rates computes, the same figures the daemon's own summary
 * line and systemd STATUS= show. The HTTP client is a plain HTTP/1.0 GET
 * over a socket with timeouts: no dependency beyond libc.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "autoconfig.h"
#include "megactl.h"
#include "stats.h"

#define MEGACTL_TIMEOUT_MS 5000
#define MEGACTL_MAX_REPLY (16 * 1024 * 1024)
#define MEGACTL_HEADER_EVERY 20

static int megactl_stats(int argc, char **argv);
static int megactl_health(int argc, char **argv);

/* One row per command; add new commands here (and declare them in megactl.h). */
static const struct megactl_command megactl_commands[] = {
	{ "stats", "[--url URL] [-f] [-i SECONDS] [-n COUNT]",
	  "print the daemon's figures once, or with -f one line of rates per interval",
	  megactl_stats },
	{ "health", "[--url URL]",
	  "ask /healthz and /readyz; exit 0 when the daemon is ready, 1 when not",
	  megactl_health },
	{ "replay", "[-c CONFIG] [--unix PATH | --tcp HOST:PORT] FILE",
	  "send a dead-letter file's events back through the daemon once their cause is fixed",
	  megactl_replay },
};

#define MEGACTL_NCOMMANDS (sizeof(megactl_commands) / sizeof(megactl_commands[0]))

/* ---- HTTP client ---------------------------------------------------------- */

/* Split "http://host:port[/]" (or "host:port") into HOST and PORT. 0 or -1. */
static int megactl_parse_url(const char *url, char *host, size_t hlen, char *port, size_t plen)
{
	const char *p = url, *colon, *end;

	if (strncmp(p, "http://", 7) == 0)
		p += 7;
	else if (strstr(p, "://"))
		return -1;
	if (*p == '[') {
		end = strchr(p, ']');
		if (!end || end[1] != ':')
			return -1;
		colon = end + 1;
		p++;
	} else {
		colon = strrchr(p, ':');
		end = colon;
	}
	if (!colon || end == p || (size_t)(end - p) >= hlen)
		return -1;
	memcpy(host, p, (size_t)(end - p));
	host[end - p] = '\0';
	snprintf(port, plen, "%s", colon + 1);
	port[strcspn(port, "/")] = '\0';
	return port[0] && strspn(port, "0123456789") == strlen(port) ? 0 : -1;
}

/* Wait up to the timeout for FD to become ready for EVENTS. 0 or -1 (errno). */
static int megactl_wait(int fd, short events)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int rc;

	do
		rc = poll(&pfd, 1, MEGACTL_TIMEOUT_MS);
	while (rc < 0 && errno == EINTR);
	if (rc == 0)
		errno = ETIMEDOUT;
	return rc > 0 ? 0 : -1;
}

/* A non-blocking socket connected to one address of AI. -1 with errno. */
static int megactl_connect_one(const struct addrinfo *ai)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
	int soerr = 0;
	socklen_t len = sizeof(soerr);

	if (fd < 0)
		return -1;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno == EINPROGRESS && megactl_wait(fd, POLLOUT) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0) {
		if (soerr == 0)
			return fd;
		errno = soerr;
	}
	soerr = errno;
	close(fd);
	errno = soerr;
	return -1;
}

static int megactl_connect(const char *host, const char *port, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	int rc = getaddrinfo(host, port, &hints, &res), fd = -1;

	if (rc != 0) {
		snprintf(err, errlen, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai && fd < 0; ai = ai->ai_next)
		fd = megactl_connect_one(ai);
	if (fd < 0)
		snprintf(err, errlen, "connect: %s", strerror(errno));
	freeaddrinfo(res);
	return fd;
}

static int megactl_send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EAGAIN && megactl_wait(fd, POLLOUT) == 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read until EOF into a new NUL-terminated buffer; *LEN its length. */
static char *megactl_read_all(int fd, size_t *len, char *err, size_t errlen)
{
	size_t cap = 65536, used = 0;
	char *buf = malloc(cap), *nb;

	while (buf) {
		ssize_t n;

		if (used + 1 == cap) {
			if (cap >= MEGACTL_MAX_REPLY) {
				snprintf(err, errlen, "reply larger than %d bytes", MEGACTL_MAX_REPLY);
				break;
			}
			nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		n = recv(fd, buf + used, cap - used - 1, 0);
		if (n > 0) {
			used += (size_t)n;
			continue;
		}
		if (n == 0) {
			buf[used] = '\0';
			*len = used;
			return buf;
		}
		if (errno == EINTR || (errno == EAGAIN && megactl_wait(fd, POLLIN) == 0))
			continue;
		snprintf(err, errlen, "reading the reply: %s", strerror(errno));
		break;
	}
	if (!buf)
		snprintf(err, errlen, "out of memory");
	free(buf);
	return NULL;
}

/* Split a raw HTTP reply into status and body (moved to the front of RAW). */
static int megactl_parse_reply(char *raw, size_t len, int *status, char *err, size_t errlen)
{
	char *body = strstr(raw, "\r\n\r\n");

	if (strncmp(raw, "HTTP/1.", 7) != 0 || len < 12 || !body ||
	    sscanf(raw + 9, "%3d", status) != 1) {
		snprintf(err, errlen, "not an HTTP reply (is this the admin.http address?)");
		return -1;
	}
	body += 4;
	memmove(raw, body, len - (size_t)(body - raw) + 1);
	return 0;
}

int megactl_http_get(const char *url, const char *path, int *status, char **body,
		     char *err, size_t errlen)
{
	char host[256], port[16], req[512];
	size_t len = 0;
	int fd;

	*body = NULL;
	if (megactl_parse_url(url, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "bad URL \"%s\": expected http://HOST:PORT", url);
		return -1;
	}
	fd = megactl_connect(host, port, err, errlen);
	if (fd < 0)
		return -1;
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: megactl/%s\r\n"
		 "Accept: */*\r\n\r\n", path, host, PACKAGE_VERSION);
	if (megactl_send_all(fd, req, strlen(req)) < 0) {
		snprintf(err, errlen, "sending the request: %s", strerror(errno));
		close(fd);
		return -1;
	}
	*body = megactl_read_all(fd, &len, err, errlen);
	close(fd);
	if (!*body)
		return -1;
	if (megactl_parse_reply(*body, len, status, err, errlen) < 0) {
		free(*body);
		*body = NULL;
		return -1;
	}
	return 0;
}

/* ---- figures ---------------------------------------------------------------- */

static void megactl_no_answer(const char *url, const char *path, const char *why)
{
	fprintf(stderr, "megactl: no answer from %s%s: %s\n"
		"megactl: is megaingestd running, and is admin.http set to this address "
		"(--url)?\n", url, path, why);
}

/* Fetch /metrics into S (and the daemon's version into VERSION). 0 or -1 (told). */
static int megactl_fetch(const char *url, struct stats_snapshot *s, char *version, size_t vlen)
{
	char err[256], *text, *v;
	int status;

	if (megactl_http_get(url, "/metrics", &status, &text, err, sizeof(err)) < 0) {
		megactl_no_answer(url, "/metrics", err);
		return -1;
	}
	if (status != 200 || stats_parse_prometheus(text, s, err, sizeof(err)) <= 0) {
		megactl_no_answer(url, "/metrics", status != 200 ? "HTTP error status" :
				  "the reply holds no megaingest figures");
		free(text);
		return -1;
	}
	v = strstr(text, STATS_PREFIX "build_info{version=\"");
	snprintf(version, vlen, "%s", v ? v + strlen(STATS_PREFIX "build_info{version=\"") : "?");
	version[strcspn(version, "\"")] = '\0';
	free(text);
	return 0;
}

static void megactl_print_hist(const struct stats_metric *m, const struct stats_hist_snap *h)
{
	char sum[32], p50[32], p99[32];

	stats_format_seconds(h->count ? h->sum / (double)h->count : -1, sum, sizeof(sum));
	stats_format_seconds(stats_quantile(h->bucket, 0.5), p50, sizeof(p50));
	stats_format_seconds(stats_quantile(h->bucket, 0.99), p99, sizeof(p99));
	printf("%-32s %14llu  %s\n", m->name, (unsigned long long)h->count, m->help);
	printf("    %-28s mean %s, p50 %s, p99 %s\n", "", sum, p50, p99);
}

static void megactl_print_rejects(const struct stats_metric *m, const struct stats_snapshot *s)
{
	uint64_t total = 0;

	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		total += s->rejected[i];
	printf("%-32s %14llu  %s\n", m->name, (unsigned long long)total, m->help);
	for (int i = 0; i < RECORD_REASON_COUNT; i++)
		if (s->rejected[i])
			printf("    %-28s %14llu\n", record_reason_label(i),
			       (unsigned long long)s->rejected[i]);
}

/* writer_state: one line per writer. */
static void megactl_print_writers(const struct stats_metric *m, const struct stats_snapshot *s)
{
	printf("%-32s %14d  %s\n", m->name, s->writers, "writers; the state of each:");
	for (int i = 0; i < s->writers; i++)
		printf("    writer %-21d %14s\n", i, stats_writer_state_label(s->writer_state[i]));
}

/* Every figure once, in the order of stats_metrics[]. */
static void megactl_print_once(const char *url, const struct stats_snapshot *s,
			       const char *version)
{
	int64_t up = s->gauge[STAT_uptime_seconds];

	printf("megaingestd %s at %s, up %lldd %02lld:%02lld:%02lld\n\n", version, url,
	       (long long)(up / 86400), (long long)(up / 3600 % 24), (long long)(up / 60 % 60),
	       (long long)(up % 60));
	for (size_t i = 0; i < stats_metric_count; i++) {
		const struct stats_metric *m = &stats_metrics[i];

		switch (m->kind) {
		case STATS_COUNTER:
			printf("%-32s %14llu  %s\n", m->name,
			       (unsigned long long)s->counter[m->index], m->help);
			break;
		case STATS_GAUGE:
			printf("%-32s %14lld  %s\n", m->name, (long long)s->gauge[m->index], m->help);
			break;
		case STATS_REJECTS:
			megactl_print_rejects(m, s);
			break;
		case STATS_HISTOGRAM:
			megactl_print_hist(m, &s->hist[m->index]);
			break;
		case STATS_WRITERS:
			megactl_print_writers(m, s);
			break;
		default:
			break;
		}
	}
}

static int megactl_once(const char *url)
{
	struct stats_snapshot s;
	char version[64];

	if (megactl_fetch(url, &s, version, sizeof(version)) < 0)
		return MEGACTL_FAIL;
	megactl_print_once(url, &s, version);
	return MEGACTL_OK;
}

/* ---- stats -f ----------------------------------------------------------------- */

/* 1536 -> "1.5K": byte counts that fit a column. */
static void megactl_short_bytes(int64_t v, char *buf, size_t len)
{
	static const char units[] = "BKMGT";
	double d = (double)v;
	int u = 0;

	while (d >= 1024 && u < 4) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%lldB", (long long)v);
	else
		snprintf(buf, len, "%.1f%c", d, units[u]);
}

static void megactl_header(void)
{
	printf("%8s %9s %9s %8s %8s %8s %8s %9s %6s %4s %-9s\n", "time", "in/s", "commit/s",
	       "rej/s", "queue", "queue_B", "spool_B", "p99_ms", "conns", "pg", "writers");
}

static void megactl_line(const struct stats_rates *r)
{
	char qb[16], sb[16], p99[16], now[16];
	time_t t = time(NULL);
	struct tm tm;

	megactl_short_bytes(r->queue_bytes, qb, sizeof(qb));
	megactl_short_bytes(r->spool_bytes, sb, sizeof(sb));
	if (r->p99_s < 0)
		snprintf(p99, sizeof(p99), "-");
	else
		snprintf(p99, sizeof(p99), "%.1f", r->p99_s * 1000);
	strftime(now, sizeof(now), "%H:%M:%S", localtime_r(&t, &tm));
	printf("%8s %9.0f %9.0f %8.0f %8lld %8s %8s %9s %6lld %4s %-9s\n", now, r->in_per_s,
	       r->committed_per_s, r->rejected_per_s, (long long)r->queue_events, qb, sb, p99,
	       (long long)r->connections, r->postgres_up ? "up" : "down",
	       r->writer_state < 0 ? "-" : stats_writer_state_label(r->writer_state));
	fflush(stdout);
}

/* Sleep until DEADLINE (CLOCK_MONOTONIC), so the lines do not drift. */
static void megactl_sleep_until(const struct timespec *deadline)
{
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, deadline, NULL) == EINTR)
		;
}

static int megactl_follow(const char *url, double interval, long count)
{
	struct stats_snapshot prev, cur;
	struct stats_rates r;
	struct timespec next;
	char version[64];

	if (megactl_fetch(url, &prev, version, sizeof(version)) < 0)
		return MEGACTL_FAIL;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (long line = 0; count < 0 || line < count; line++) {
		double whole;
		double frac = modf(interval, &whole);

		next.tv_sec += (time_t)whole;
		next.tv_nsec += (long)(frac * 1e9);
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		megactl_sleep_until(&next);
		if (megactl_fetch(url, &cur, version, sizeof(version)) < 0)
			return MEGACTL_FAIL;
		stats_rates(&prev, &cur, &r);
		if (line % MEGACTL_HEADER_EVERY == 0)
			megactl_header();
		megactl_line(&r);
		prev = cur;
	}
	return MEGACTL_OK;
}

/* ---- commands ------------------------------------------------------------------- */

static void megactl_command_usage(FILE *out, const char *name)
{
	for (size_t i = 0; i < MEGACTL_NCOMMANDS; i++)
		if (strcmp(megactl_commands[i].name, name) == 0)
			fprintf(out, "usage: megactl %s %s\n  %s\n", name, megactl_commands[i].args,
				megactl_commands[i].summary);
}

/* Parse a positive number of seconds (0.1 .. 86400). */
static int megactl_interval(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return end != s && !*end && !errno && *out >= 0.1 && *out <= 86400 ? 0 : -1;
}

static int megactl_stats(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "follow", no_argument, NULL, 'f' },
		{ "interval", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *url = MEGACTL_DEFAULT_URL;
	double interval = 1;
	long count = -1;
	int follow = 0, ch;
	char *end;

	while ((ch = getopt_long(argc, argv, "u:fi:n:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'u': url = optarg; break;
		case 'f': follow = 1; break;
		case 'i':
			if (megactl_interval(optarg, &interval) < 0) {
				fprintf(stderr, "megactl stats: -i %s: expected seconds, 0.1 to 86400\n",
					optarg);
				return MEGACTL_USAGE;
			}
			follow = 1;
			break;
		case 'n':
			count = strtol(optarg, &end, 10);
			if (end == optarg || *end || count < 1) {
				fprintf(stderr, "megactl stats: -n %s: expected a count >= 1\n", optarg);
				return MEGACTL_USAGE;
			}
			follow = 1;
			break;
		case 'h': megactl_command_usage(stdout, "stats"); return MEGACTL_OK;
		default: megactl_command_usage(stderr, "stats"); return MEGACTL_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "megactl stats: unexpected argument \"%s\"\n", argv[optind]);
		return MEGACTL_USAGE;
	}
	return follow ? megactl_follow(url, interval, count) : megactl_once(url);
}

/* GET PATH and print "NAME: body"; returns the HTTP status, or -1 (told). */
static int megactl_probe(const char *url, const char *path, const char *name)
{
	char err[256], *body;
	int status;

	if (megactl_http_get(url, path, &status, &body, err, sizeof(err)) < 0) {
		megactl_no_answer(url, path, err);
		return -1;
	}
	body[strcspn(body, "\n")] = '\0';
	printf("%s: %s (HTTP %d)\n", name, body, status);
	free(body);
	return status;
}

static int megactl_health(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *url = MEGACTL_DEFAULT_URL;
	int ch;

	while ((ch = getopt_long(argc, argv, "u:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'u': url = optarg; break;
		case 'h': megactl_command_usage(stdout, "health"); return MEGACTL_OK;
		default: megactl_command_usage(stderr, "health"); return MEGACTL_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "megactl health: unexpected argument \"%s\"\n", argv[optind]);
		return MEGACTL_USAGE;
	}
	if (megactl_probe(url, "/healthz", "healthz") != 200)
		return MEGACTL_FAIL;
	return megactl_probe(url, "/readyz", "readyz") == 200 ? MEGACTL_OK : MEGACTL_FAIL;
}

/* ---- main -------------------------------------------------------------------------- */

static void megactl_usage(FILE *out)
{
	fprintf(out, "usage: megactl COMMAND [OPTIONS]\n\n"
		"Look at and operate a running megaingestd.\n\ncommands:\n");
	for (size_t i = 0; i < MEGACTL_NCOMMANDS; i++)
		fprintf(out, "  %-7s %s\n          %s\n", megactl_commands[i].name,
			megactl_commands[i].args, megactl_commands[i].summary);
	fprintf(out, "\nURL is the daemon's admin.http address (default %s).\n"
		"See megactl(1).\n", MEGACTL_DEFAULT_URL);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		megactl_usage(stderr);
		return MEGACTL_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		megactl_usage(stdout);
		return MEGACTL_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("megactl %s\n", PACKAGE_VERSION);
		return MEGACTL_OK;
	}
	for (size_t i = 0; i < MEGACTL_NCOMMANDS; i++)
		if (strcmp(argv[1], megactl_commands[i].name) == 0)
			return megactl_commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "megactl: unknown command \"%s\"\n", argv[1]);
	megactl_usage(stderr);
	return MEGACTL_USAGE;
}
