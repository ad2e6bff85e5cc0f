/*
 * json_yajl.c: yajl's allocation functions (see json_yajl.h).
 */
#include <stdlib.h>

#include "json_yajl.h"
#include "log.h"

static void *json_yajl_checked(void *p)
{
	if (!p) {
		log_error("json", "out of memory inside the JSON parser (yajl cannot recover); "
			  "exiting");
		abort();
	}
	return p;
}

static void *json_yajl_malloc(void *ctx, size_t n)
{
	(void)ctx;
	return json_yajl_checked(malloc(n));
}

static void *json_yajl_realloc(void *ctx, void *p, size_t n)
{
	(void)ctx;
	return json_yajl_checked(realloc(p, n));
}

static void json_yajl_free(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}

yajl_alloc_funcs *json_yajl_alloc(void)
{
	static yajl_alloc_funcs funcs = { json_yajl_malloc, json_yajl_realloc, json_yajl_free,
					  NULL };

	return &funcs;
}
