/*
 * proto_time.h: the Forward framing of an event time (proto_time.c; the
 * time itself is read by include/record_time.h's parser), shared by the
 * proto module only.
 */
#ifndef MI_PROTO_TIME_H
#define MI_PROTO_TIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

/* A forward event time, decoded. */
struct proto_time {
	int64_t ns;                   /* ns since the epoch */
	const msgpack_object *meta;   /* Fluent Bit 2 metadata map, or NULL */
};

/* True when O looks like an event time (not an entry or a record). */
bool proto_time_like(const msgpack_object *o);

/*
 * Decode an event time O into T. Returns 0, 1 for a Fluent Bit group marker
 * (skip the entry), or -1 with the reason in WHY.
 */
int proto_time_parse(const msgpack_object *o, struct proto_time *t, char *why, size_t len);

#endif
