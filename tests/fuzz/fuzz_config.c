/*
 * fuzz_config.c: libFuzzer target for the configuration loader.
 *
 * Each input is written to a file (the loader reads files, with libyaml's
 * marks giving file:line:col) and loaded with config_load; its error lines
 * go to /dev/null, a config that loads is also printed (config_print walks
 * every key), compared with the defaults (config_diff, as a reload does)
 * and freed. The file lives under /dev/shm when it exists.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_path[96];
static FILE *fuzz_null;

static void fuzz_die(const char *what)
{
	fprintf(stderr, "fuzz_config: %s\n", what);
	abort();
}

static void fuzz_cleanup(void)
{
	unlink(fuzz_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd;

	(void)argc;
	(void)argv;
	log_set_level(LOG_LEVEL_ERROR);
	snprintf(fuzz_path, sizeof(fuzz_path), "%s/fuzz_config.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	fd = mkstemp(fuzz_path);
	if (fd < 0)
		fuzz_die("mkstemp failed");
	close(fd);
	fuzz_null = fopen("/dev/null", "w");
	if (!fuzz_null)
		fuzz_die("cannot open /dev/null");
	atexit(fuzz_cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(fuzz_path, "w");
	struct config *cfg;

	if (!f)
		fuzz_die("cannot write the config file");
	if (size > 0 && fwrite(data, 1, size, f) != size)
		fuzz_die("short write");
	if (fclose(f) != 0)
		fuzz_die("fclose failed");
	cfg = config_load(fuzz_path, fuzz_null);
	if (cfg) {
		struct config *defaults = config_defaults();

		if (!defaults)
			fuzz_die("config_defaults failed");
		config_print(cfg, fuzz_null);
		(void)config_diff(defaults, cfg);
		config_free(defaults);
		config_free(cfg);
	}
	return 0;
}
