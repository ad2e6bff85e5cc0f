/*
 * proto_time.c: the Forward framing around an event time: Fluent Bit 2's
 * [time, metadata] pair and its group markers. The time itself is read by
 * the one parser every input shares (include/record_time.h), so a Forward
 * entry time and the same value sent as mg_created_at are the same instant.
 * Used by proto.c; see proto_time.h.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <msgpack.h>

#include "json.h"
#include "proto_time.h"
#include "record_time.h"

/* True when O looks like an event time (not an entry or a record). Text is
 * no Forward time: a str in a message's second place means PackedForward. */
bool proto_time_like(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
	       o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
	       o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64 ||
	       o->type == MSGPACK_OBJECT_EXT;
}

/* Fluent Bit's group start (-1) and end (-2) markers as EventTime, which
 * writes them into its unsigned seconds (0xffffffff, 0xfffffffe). */
static bool proto_time_marker_ext(const msgpack_object *o)
{
	const unsigned char *p = (const unsigned char *)o->via.ext.ptr;

	return o->type == MSGPACK_OBJECT_EXT && o->via.ext.type == 0 && o->via.ext.size == 8 &&
	       p[0] == 0xff && p[1] == 0xff && p[2] == 0xff && p[3] >= 0xfe &&
	       (p[4] | p[5] | p[6] | p[7]) == 0;
}

/* A time value that is not [time, meta] -> T->ns; 1 for a group marker
 * (-1 or -2 as any other form), -1 with WHY filled. */
static int proto_time_scalar(const msgpack_object *o, struct proto_time *t, char *why,
			     size_t len)
{
	struct record_time rt;

	if (!proto_time_like(o)) {
		snprintf(why, len, "expected integer, float, EventTime or [time, metadata], got %s",
			 json_type_name(o));
		return -1;
	}
	if (proto_time_marker_ext(o))
		return 1;
	if (record_time_from_msgpack(o, &rt, why, len) != 0)
		return -1;
	if ((rt.sec == -1 || rt.sec == -2) && rt.nsec == 0)
		return 1;
	if (record_time_to_ns(rt, &t->ns) != 0) {
		snprintf(why, len, "%" PRId64 " epoch seconds is outside the Forward time's range "
			 "(1677-09-21..2262-04-11)", rt.sec);
		return -1;
	}
	return 0;
}
/*
 * Decode an event time O into T. Returns 0, 1 for a Fluent Bit group marker
 * (skip the entry), or -1 with the reason in WHY.
 */
int proto_time_parse(const msgpack_object *o, struct proto_time *t, char *why, size_t len)
{
	t->meta = NULL;
	if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2 &&
	    proto_time_like(&o->via.array.ptr[0])) {
		const msgpack_object *meta = &o->via.array.ptr[1];

		if (meta->type != MSGPACK_OBJECT_MAP && meta->type != MSGPACK_OBJECT_NIL) {
			snprintf(why, len, "expected [time, metadata map], got [time, %s]",
				 json_type_name(meta));
			return -1;
		}
		if (meta->type == MSGPACK_OBJECT_MAP && meta->via.map.size > 0)
			t->meta = meta;
		o = &o->via.array.ptr[0];
	}
	return proto_time_scalar(o, t, why, len);
}
