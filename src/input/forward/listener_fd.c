/*
 * listener_fd.c: the listener's file descriptors. At start the soft
 * RLIMIT_NOFILE is raised to the hard limit and a listen.max_connections
 * that cannot fit is refused with what to change; when accept still runs
 * out of descriptors, accepting pauses instead of spinning (the pending
 * connection stays in the backlog, so the listening socket stays readable
 * and an immediate retry would fail again at once). Loop thread only.
 */
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "listener_private.h"
#include "log.h"
#include "stats.h"

/* Descriptors MAX_CONNS connections need, with everything else the daemon holds. */
unsigned long long listener_fd_needed(const struct listener *l, int max_conns)
{
	return (unsigned long long)max_conns + LISTENER_FD_MARGIN +
	       (unsigned long long)l->writers * LISTENER_FD_PER_WRITER;
}

/*
 * Raise the soft RLIMIT_NOFILE to the hard limit (the default soft 1024 is
 * too few for the default max_connections 1024), then check MAX_CONNS
 * fits. 0, or -1 after saying what to change.
 */
int listener_fd_budget(struct listener *l, int max_conns)
{
	struct rlimit rl;
	unsigned long long need = listener_fd_needed(l, max_conns);

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_error("listener", "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			log_warn("listener", "cannot raise RLIMIT_NOFILE from %llu to %llu: %s",
				 (unsigned long long)was, (unsigned long long)rl.rlim_max,
				 strerror(errno));
			rl.rlim_cur = was;
		} else {
			log_info("listener", "RLIMIT_NOFILE raised from %llu to %llu",
				 (unsigned long long)was, (unsigned long long)rl.rlim_cur);
		}
	}
	if (rl.rlim_cur == RLIM_INFINITY || need <= (unsigned long long)rl.rlim_cur)
		return 0;
	log_error("listener", "listen.max_connections=%d needs %llu open files (%d more for "
		  "listeners, writers, spool and admin), but RLIMIT_NOFILE is %llu: lower "
		  "listen.max_connections to %lld or raise the limit (LimitNOFILE= in the systemd "
		  "unit, ulimit -n)", max_conns, need, (int)(need - (unsigned long long)max_conns),
		  (unsigned long long)rl.rlim_cur,
		  (long long)rl.rlim_cur - (long long)(need - (unsigned long long)max_conns));
	return -1;
}

static struct log_limit listener_fd_limit = LOG_LIMIT_INIT(5, 10000);

/* Re-enable accepting after a pause for descriptors. */
void listener_fd_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	l->accept_paused = false;
	for (int i = 0; i < l->nlev; i++)
		evconnlistener_enable(l->lev[i]);
}

/*
 * Out of descriptors (EMFILE, ENFILE) or kernel memory: the pending
 * connection stays in the backlog and the listening socket stays readable,
 * so retrying at once would spin the loop. Stop accepting for
 * LISTENER_ACCEPT_PAUSE_MS instead, and say so once per episode (it ends
 * with the next accepted connection).
 */
static void listener_fd_pause(struct listener *l, int err)
{
	struct timeval tv = { 0, LISTENER_ACCEPT_PAUSE_MS * 1000 };
	struct rlimit rl = { 0, 0 };

	stats_add(STAT_accept_pauses_total, 1);
	if (l->accept_pauses++ == 0) {
		getrlimit(RLIMIT_NOFILE, &rl);
		log_error("listener", "accept failed: %s, with %d connections open and "
			  "RLIMIT_NOFILE %llu; not accepting for %d ms at a time until descriptors "
			  "free up (clients wait in the backlog)", strerror(err), l->nconns,
			  (unsigned long long)rl.rlim_cur, LISTENER_ACCEPT_PAUSE_MS);
	}
	if (l->accept_paused)
		return;
	for (int i = 0; i < l->nlev; i++)
		evconnlistener_disable(l->lev[i]);
	l->accept_paused = true;
	if (event_add(l->accept_timer, &tv) < 0)
		listener_fd_timer_cb(-1, 0, l); /* cannot wait: better spin than stop */
}

void listener_fd_error_cb(struct evconnlistener *lev, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();

	(void)lev;
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		listener_fd_pause(arg, err);
		return;
	}
	log_limited(&listener_fd_limit, LOG_LEVEL_WARN, "listener", "accept failed: %s",
		    evutil_socket_error_to_string(err));
}

void listener_fd_accepted(struct listener *l)
{
	if (l->accept_pauses == 0)
		return;
	log_info("listener", "accepting again after %llu pauses for descriptors",
		 (unsigned long long)l->accept_pauses);
	l->accept_pauses = 0;
}
