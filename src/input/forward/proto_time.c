/*
 * proto_time.c: Forward-protocol event times -> nanoseconds since the epoch
 * (integers, floats, EventTime ext 0, msgpack timestamps, and Fluent Bit
 * 2's [time, metadata]). Used by proto.c; see proto_time.h.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <msgpack.h>
#include <msgpack/timestamp.h>

#include "json.h"
#include "proto_scan.h"
#include "proto_time.h"

#define PROTO_NS 1000000000LL
#define PROTO_MAX_SEC 9223372035LL         /* sec * 1e9 + nsec still fits int64_t */

/* SEC.NSEC -> T->ns; -1 when it does not fit. */
static int proto_time_set(struct proto_time *t, int64_t sec, int64_t nsec)
{
	if (sec > PROTO_MAX_SEC || sec < -PROTO_MAX_SEC || nsec < 0 || nsec >= PROTO_NS)
		return -1;
	t->ns = sec * PROTO_NS + nsec;
	return 0;
}

/* Epoch seconds as a float -> seconds and nanoseconds; -1 when not finite or too far. */
static int proto_time_float(double f, int64_t *sec, int64_t *nsec)
{
	int64_t s;

	if (!isfinite(f) || f > (double)PROTO_MAX_SEC || f < -(double)PROTO_MAX_SEC)
		return -1;
	s = (int64_t)f;
	if ((double)s > f)
		s--;
	*nsec = (int64_t)((f - (double)s) * 1e9 + 0.5);
	if (*nsec >= PROTO_NS) {
		s++;
		*nsec -= PROTO_NS;
	}
	*sec = s;
	return 0;
}

/* EventTime (ext 0) or a msgpack timestamp (ext -1); WHY filled on -1. */
static int proto_time_ext(const msgpack_object *o, int64_t *sec, int64_t *nsec,
			  char *why, size_t len)
{
	const msgpack_object_ext *e = &o->via.ext;
	msgpack_timestamp ts;

	if (e->type == 0 && e->size == 8) {
		uint32_t s = (uint32_t)proto_be((const uint8_t *)e->ptr, 4);

		/* Fluent Bit writes its group markers -1 and -2 into the uint32. */
		*sec = s >= 0xfffffffeu ? (int64_t)(int32_t)s : (int64_t)s;
		*nsec = (int64_t)proto_be((const uint8_t *)e->ptr + 4, 4);
		return 0;
	}
	if (e->type == -1 && msgpack_object_to_timestamp(o, &ts)) {
		*sec = ts.tv_sec;
		*nsec = ts.tv_nsec;
		return 0;
	}
	if (e->type == 0)
		snprintf(why, len, "EventTime (ext 0) must have 8 bytes, got %u", e->size);
	else
		snprintf(why, len, "ext type %d of %u bytes is not a time", e->type, e->size);
	return -1;
}

/* A time value that is not [time, meta] -> seconds and ns; WHY filled on -1. */
static int proto_time_scalar(const msgpack_object *o, int64_t *sec, int64_t *nsec,
			     char *why, size_t len)
{
	*nsec = 0;
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		*sec = o->via.u64 > (uint64_t)PROTO_MAX_SEC ? PROTO_MAX_SEC + 1 : (int64_t)o->via.u64;
		return 0;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		*sec = o->via.i64;
		return 0;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (proto_time_float(o->via.f64, sec, nsec) == 0)
			return 0;
		snprintf(why, len, "float %g is not a usable epoch time", o->via.f64);
		return -1;
	case MSGPACK_OBJECT_EXT:
		return proto_time_ext(o, sec, nsec, why, len);
	default:
		snprintf(why, len, "expected integer, float, EventTime or [time, metadata], got %s",
			 json_type_name(o));
		return -1;
	}
}

/* True when O looks like an event time (not an entry or a record). */
bool proto_time_like(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
	       o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
	       o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64 ||
	       o->type == MSGPACK_OBJECT_EXT;
}

/*
 * Decode an event time O into T. Returns 0, 1 for a Fluent Bit group marker
 * (skip the entry), or -1 with the reason in WHY.
 */
int proto_time_parse(const msgpack_object *o, struct proto_time *t, char *why, size_t len)
{
	int64_t sec, nsec;

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
	if (proto_time_scalar(o, &sec, &nsec, why, len) < 0)
		return -1;
	if ((sec == -1 || sec == -2) && nsec == 0)
		return 1;
	if (proto_time_set(t, sec, nsec) < 0) {
		snprintf(why, len, "%lld.%09lld is out of range", (long long)sec, (long long)nsec);
		return -1;
	}
	return 0;
}
