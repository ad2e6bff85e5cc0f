/*
 * clock_ns.h: a clock read in nanoseconds. CLOCK_MONOTONIC for intervals,
 * deadlines and rates (it never steps); CLOCK_REALTIME only for times that
 * are written down (receive times, log lines). One helper for every module.
 */
#ifndef MI_CLOCK_NS_H
#define MI_CLOCK_NS_H

#include <stdint.h>
#include <time.h>

#define CLOCK_NS_PER_MS 1000000LL

/* CLK now, in nanoseconds (0 if the clock cannot be read, which for these
 * two clocks does not happen on Linux). */
static inline int64_t clock_ns(clockid_t clk)
{
	struct timespec ts;

	if (clock_gettime(clk, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* CLOCK_MONOTONIC now, in nanoseconds. */
static inline int64_t clock_mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

#endif
