/*
 * sdnotify: systemd's notification and socket-activation protocols, or nothing.
 *
 * The one place that knows whether libsystemd is there: without it every
 * call is a no-op inline (no sockets passed, no watchdog), so call sites
 * never carry #ifdef.
 */
#ifndef MI_SDNOTIFY_H
#define MI_SDNOTIFY_H

#include <stdint.h>

#include "autoconfig.h" /* HAVE_SYSTEMD, from ./configure */

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#define sdnotify_send(...) ((void)sd_notifyf(0, __VA_ARGS__))
#define SDNOTIFY_LISTEN_FDS_START SD_LISTEN_FDS_START

/* Sockets systemd passed (LISTEN_FDS for this pid), from fd 3 on; 0 if none.
 * Clears LISTEN_* from the environment. */
static inline int sdnotify_listen_fds(void)
{
	return sd_listen_fds(1);
}

/* > 0 with *USEC set when systemd expects WATCHDOG=1 pings within USEC. */
static inline int sdnotify_watchdog_usec(uint64_t *usec)
{
	return sd_watchdog_enabled(0, usec);
}
#else
#define SDNOTIFY_LISTEN_FDS_START 3
static inline void sdnotify_ignore(const char *fmt, ...) { (void)fmt; }
#define sdnotify_send(...) sdnotify_ignore(__VA_ARGS__)
static inline int sdnotify_listen_fds(void) { return 0; }
static inline int sdnotify_watchdog_usec(uint64_t *usec) { (void)usec; return 0; }
#endif

#endif
