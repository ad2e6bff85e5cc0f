/*
 * megactl_json.h: one dead-letter line (JSON text) as msgpack, for megactl
 * replay (src/tools/megactl_json.c). Private to megactl.
 *
 * The inverse of the daemon's dead-letter writer (json.c, LENIENT mode):
 * integers come back as msgpack ints (full uint64 and int64 ranges), numbers
 * with a fraction or an exponent as float64, and the writer's stand-ins for
 * what JSON cannot carry as what they stand for: {"$base64": "..."} as bin,
 * {"$ext": N, "$base64": "..."} as ext type N. Maps and arrays may nest as
 * deep as the daemon's Forward input takes them in an event (see
 * MEGACTL_JSON_EVENT_DEPTH); a deeper line is refused here instead of
 * making the daemon close the connection.
 */
#ifndef MI_MEGACTL_JSON_H
#define MI_MEGACTL_JSON_H

#include <stddef.h>

#include <msgpack.h>

#include "proto_scan.h"

/* Maps and arrays an event may nest, itself included: the daemon decodes a
 * Forward message PROTO_MAX_DEPTH deep, and [tag, [[time, event]], option]
 * takes three of those levels. */
#define MEGACTL_JSON_EVENT_DEPTH (PROTO_MAX_DEPTH - 3)

/*
 * Append the JSON value TEXT (LEN bytes, the whole line) to OUT as one
 * msgpack value. Returns 0, or -1 with a message in WHY (WHYLEN bytes) and
 * in *COL the 1-based column where the line went wrong. OUT then holds a
 * partial value: the caller discards it.
 */
int megactl_json_to_msgpack(const char *text, size_t len, msgpack_sbuffer *out,
			    char *why, size_t whylen, size_t *col)
	__attribute__((warn_unused_result));

#endif
