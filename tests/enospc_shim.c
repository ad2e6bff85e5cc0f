/*
 * enospc_shim.c: an LD_PRELOAD library for tests/test_durability.py that
 * makes the spool's disk "full" on demand, for machines where the test
 * cannot mount a small tmpfs.
 *
 * While the file named by $MEGAINGEST_ENOSPC_FLAG exists, writes to spool
 * segment files (spool-*.seg*) behave like a filling disk: a write first
 * lands partly (64 bytes), the next one fails with ENOSPC, and
 * fsync/fdatasync fail with ENOSPC too (so does writing a new segment's
 * header). Every other file is untouched.
 *
 * While the file named by $MEGAINGEST_HANG_FLAG exists, fsync/fdatasync of
 * a spool segment block until it is removed: a disk that stopped answering
 * (tests/test_systemd.py: the watchdog must notice the stuck writer).
 * Built by the test with `cc -shared -fPIC`; not part of the daemon.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off);
ssize_t write(int fd, const void *buf, size_t len);
int fsync(int fd);
int fdatasync(int fd);

static __thread int shim_partial_done;

/* True when the file named by $VAR exists. */
static int shim_flag(const char *var)
{
	const char *flag = getenv(var);

	return flag && access(flag, F_OK) == 0;
}

/* True when FD is a spool segment (spool-*.seg*). */
static int shim_segment(int fd)
{
	char link[64], path[PATH_MAX];
	const char *base;
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return 0;
	path[n] = '\0';
	base = strrchr(path, '/');
	base = base ? base + 1 : path;
	return strncmp(base, "spool-", 6) == 0 && strstr(base, ".seg") != NULL;
}

/* True while the disk is "full" and FD is a spool segment. */
static int shim_full(int fd)
{
	return shim_flag("MEGAINGEST_ENOSPC_FLAG") && shim_segment(fd);
}

/* Block while $MEGAINGEST_HANG_FLAG exists and FD is a spool segment. */
static void shim_hang(int fd)
{
	if (shim_flag("MEGAINGEST_HANG_FLAG") && shim_segment(fd))
		while (shim_flag("MEGAINGEST_HANG_FLAG"))
			usleep(20000);
}

/* Partly write, then fail: what a filling disk does to a long write. */
static ssize_t shim_short(int fd, size_t len)
{
	(void)fd;
	if (!shim_partial_done && len > 64) {
		shim_partial_done = 1;
		return 64;
	}
	shim_partial_done = 0;
	errno = ENOSPC;
	return -1;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);
	ssize_t n;

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
	if (!shim_full(fd))
		return real(fd, buf, len, off);
	n = shim_short(fd, len);
	return n > 0 ? real(fd, buf, (size_t)n, off) : n;
}

ssize_t write(int fd, const void *buf, size_t len)
{
	static ssize_t (*real)(int, const void *, size_t);
	ssize_t n;

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
	if (!shim_full(fd))
		return real(fd, buf, len);
	n = shim_short(fd, len);
	return n > 0 ? real(fd, buf, (size_t)n) : n;
}

int fsync(int fd)
{
	static int (*real)(int);

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	shim_hang(fd);
	if (shim_full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return real(fd);
}

int fdatasync(int fd)
{
	static int (*real)(int);

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	shim_hang(fd);
	if (shim_full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return real(fd);
}
