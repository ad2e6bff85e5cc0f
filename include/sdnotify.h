/*
 * sdnotify: systemd's notification protocol, or nothing.
 *
 * The one place that knows whether libsystemd is there: without it every
 * call is a no-op inline, so call sites never carry #ifdef.
 */
#ifndef MI_SDNOTIFY_H
#define MI_SDNOTIFY_H

#include "autoconfig.h" /* HAVE_SYSTEMD, from ./configure */

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#define sdnotify_send(...) ((void)sd_notifyf(0, __VA_ARGS__))
#else
static inline void sdnotify_ignore(const char *fmt, ...) { (void)fmt; }
#define sdnotify_send(...) sdnotify_ignore(__VA_ARGS__)
#endif

#endif
