/*
 * proto.c: a connection's byte stream -> events (plain maps and the Fluentd
 * Forward protocol v1), and the {"ack": chunk} replies.
 *
 * Bytes go through two readers. A small scanner (proto_scan.c) walks every
 * header as it arrives, jumping over str, bin and ext bodies, and knows only
 * msgpack's headers: where each value ends, how deep it nests and how many
 * bytes it must at least take. It closes the connection on a byte that is
 * not msgpack, a value over listen.max_event_bytes or announcing more than
 * max_event_bytes / 4 elements, or nesting msgpack-c cannot decode, and it
 * hands the msgpack_unpacker only the bytes in front of such a header.
 * That matters: msgpack-c allocates 24 bytes per element of an array or
 * map as soon as it reads the count, so a 5-byte header announcing 2^32
 * elements would otherwise cost 96 GiB before a byte of them arrived. The
 * same count is what the memory budget (listen.max_buffered_bytes, over
 * every connection's unfinished value) charges; when taking a read could
 * pass it, the read is scanned in place first and the connection may be
 * held (PROTO_HELD) before msgpack-c sees it. The unpacker then decodes
 * the complete values, and each is dispatched by shape: nil (heartbeat),
 * map (one event) or array (Message, Forward, PackedForward or
 * CompressedPackedForward). Packed entries are scanned the same way before
 * msgpack_unpack_next sees them, and gzip output is bounded by
 * max_event_bytes x 16 while it is produced (proto_gzip.c).
 *
 * Each event goes to the intake (intake.c: validation, queueing,
 * dead-lettering, the ack's references); an entry that is not an event
 * (bad framing, bad time) goes there as a rejection. One bad value or entry
 * is dead-lettered with its reason and the stream goes on; only a stream we
 * cannot resynchronise (or cannot take responsibility for) is closed. After
 * PROTO_MSG_REJECT_MAX rejected entries in one message, the rest of it is
 * dead-lettered as one line with a count, so what a message costs on disk
 * is bounded by its size.
 *
 * Acks: a message whose option has "chunk" gets one intake ack whose
 * callback is the listener's, closed when the message is done. When an
 * event of the message could be neither queued nor dead-lettered
 * (INTAKE_FAILED) proto_run returns PROTO_CLOSE: the listener closes the
 * connection at once, before it can deliver the ack, so that ack is freed
 * unsent and the client resends. Every ack created still comes back
 * through the ack channel (proto_acks_created counts them for the
 * listener). Loop thread only.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "clock_ns.h"
#include "ack.h"
#include "intake.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "proto_gzip.h"
#include "proto_scan.h"
#include "proto_time.h"
#include "record.h"

#define PROTO_UNPACKER_INITIAL (4 * 1024)  /* decoder buffer at connect; grows with use */
#define PROTO_FILL_STEP (1024 * 1024)      /* bytes moved into the decoder per evbuffer_remove */
#define PROTO_NS 1000000000LL
#define PROTO_PEEK_VECS 32                 /* chunks of input scanned in place */
/* option.chunk is copied into the ack, which lives until the message's
 * events are durable and counts toward no limit: clients send ids of a few
 * dozen bytes (fluent-logger: 24), so a longer one is refused. */
#define PROTO_CHUNK_MAX 1024
#define PROTO_MSG_REJECT_MAX 16            /* rejected entries of one message written one by one */
#define PROTO_CONN_REJECT_BURST 1000       /* dead-letter lines a connection may cause at once, */
#define PROTO_CONN_REJECT_RATE 100         /* ... and then this many a second */

/* ---- connection --------------------------------------------------------- */

struct proto_conn {
	const struct proto_env *env;
	ack_done_cb *ack_cb;      /* the listener's answer to a finished ack ... */
	void *ack_arg;            /* ... and its connection */
	char *peer;               /* copied: "tcp:127.0.0.1:5000", "unix" */
	uint64_t id;              /* connection id for log lines */
	msgpack_unpacker up;      /* bytes the scanner passed, not yet decoded */
	msgpack_unpacked val;     /* the value being handled */
	struct proto_scan scan;   /* runs ahead of UP over every header received */
	uint64_t decoded;         /* stream bytes of the complete values so far */
	uint64_t values;          /* complete values so far */
	uint64_t acks;            /* acks created so far */
	size_t cost;              /* counted in env->budget: see proto_cost_of */
	double reject_tokens;     /* dead-letter lines it may still cause (may go below 0) */
	int64_t reject_ms;        /* CLOCK_MONOTONIC of the last refill */
	bool closed;              /* PROTO_CLOSE returned: nothing more is decoded */
};

/* Log "conn=ID peer=PEER: message" at LEVEL for module "proto", subject
 * to LIM unless it is NULL. */
static void proto_vlog(const struct proto_conn *pc, struct log_limit *lim, enum log_level level,
		       const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

static void proto_vlog(const struct proto_conn *pc, struct log_limit *lim, enum log_level level,
		       const char *fmt, va_list ap)
{
	char msg[1024];

	if (!log_enabled(level))
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (lim)
		log_write_limited(lim, level, "proto", "conn=%llu peer=%s: %s",
				  (unsigned long long)pc->id, pc->peer, msg);
	else
		log_write(level, "proto", "conn=%llu peer=%s: %s", (unsigned long long)pc->id,
			  pc->peer, msg);
}

static void proto_log(const struct proto_conn *pc, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void proto_log(const struct proto_conn *pc, enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	proto_vlog(pc, NULL, level, fmt, ap);
	va_end(ap);
}

/* proto_log for lines a client can cause at will, subject to LIM. */
static void proto_log_limited(const struct proto_conn *pc, struct log_limit *lim,
			      enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void proto_log_limited(const struct proto_conn *pc, struct log_limit *lim,
			      enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	proto_vlog(pc, lim, level, fmt, ap);
	va_end(ap);
}

/* Warnings for a stream that is closed for what the client sent (not
 * msgpack, too deep, too big, a gzip bomb): one per connection at will. */
static struct log_limit proto_stream_limit = LOG_LIMIT_INIT(10, 1000);

struct proto_conn *proto_conn_new(const struct proto_env *env, ack_done_cb *ack_cb,
				  void *ack_arg, const char *peer, uint64_t conn_id)
{
	struct proto_conn *pc = calloc(1, sizeof(*pc));

	if (!pc)
		return NULL;
	pc->peer = strdup(peer ? peer : "?");
	if (!pc->peer || !msgpack_unpacker_init(&pc->up, PROTO_UNPACKER_INITIAL)) {
		free(pc->peer);
		free(pc);
		return NULL;
	}
	msgpack_unpacked_init(&pc->val);
	pc->reject_tokens = PROTO_CONN_REJECT_BURST;
	pc->env = env;
	pc->ack_cb = ack_cb;
	pc->ack_arg = ack_arg;
	pc->id = conn_id;
	return pc;
}

static void proto_cost_set(struct proto_conn *pc, size_t cost);

void proto_conn_free(struct proto_conn *pc)
{
	if (!pc)
		return;
	proto_cost_set(pc, 0);
	msgpack_unpacked_destroy(&pc->val);
	msgpack_unpacker_destroy(&pc->up);
	free(pc->peer);
	free(pc);
}

size_t proto_pending_bytes(const struct proto_conn *pc)
{
	return pc ? msgpack_unpacker_message_size(&pc->up) : 0;
}

uint64_t proto_acks_created(const struct proto_conn *pc)
{
	return pc ? pc->acks : 0;
}

uint64_t proto_values_done(const struct proto_conn *pc)
{
	return pc ? pc->values : 0;
}

/* ---- one message's events ----------------------------------------------- */

/* What is known while the events of one decoded value are handled. */
struct proto_msg {
	struct proto_conn *pc;
	const char *tag;          /* forward tag (not NUL-terminated), NULL for a plain map */
	size_t tag_len;
	struct ack *ack;          /* NULL unless option.chunk asked for one */
	const char *chunk;        /* option.chunk bytes, or NULL */
	size_t chunk_len;
	uint64_t recv_ns;         /* when the value was decoded */
	const msgpack_object *gzip; /* CompressedPackedForward: the data as received, else NULL */
	uint32_t rejected;        /* entries dead-lettered one by one so far */
	uint32_t reject_max;      /* ... after which the rest goes as one line */
	bool failed;              /* an event was neither queued nor dead-lettered: close */
};

/* Warnings for rejected events: a client can cause one per event at will. */
static struct log_limit proto_reject_limit = LOG_LIMIT_INIT(20, 1000);

/* What the framing knew about entry INDEX of message M, whose time is T (or NULL). */
static struct record_ctx proto_ctx(const struct proto_msg *m, const struct proto_time *t,
				   uint32_t index)
{
	return (struct record_ctx){
		.tag = m->tag,
		.tag_len = m->tag_len,
		.has_time = t != NULL,
		.time_ns = t ? t->ns : 0,
		.fluent_meta = t ? t->meta : NULL,
		.chunk = m->chunk,
		.chunk_len = m->chunk_len,
		.index = index,
		.peer = m->pc->peer,
		.recv_ns = m->recv_ns,
	};
}

/*
 * What the intake did with an event of M (V; WHY unless queued): a
 * rejection costs the connection a dead-letter line of its share; a
 * failure closes the connection, so no ack covers the event.
 */
static void proto_verdict(struct proto_msg *m, enum intake_verdict v,
			  const struct record_error *why)
{
	struct proto_conn *pc = m->pc;

	if (v == INTAKE_QUEUED)
		return;
	m->rejected++;
	pc->reject_tokens -= 1;
	if (v == INTAKE_FAILED) {
		proto_log(pc, LOG_LEVEL_ERROR, "event neither queued nor dead-lettered (%s); "
			  "connection closed, no ack for its message", why->message);
		m->failed = true;
	} else if (log_enabled(LOG_LEVEL_WARN)) {
		log_write_limited(&proto_reject_limit, LOG_LEVEL_WARN, "proto",
				  "conn=%llu peer=%s: event dead-lettered: %s",
				  (unsigned long long)pc->id, pc->peer, why->message);
	}
}

/* Fill WHY with REASON and MESSAGE (no field). */
static void proto_why(struct record_error *why, enum record_reason reason, const char *message)
{
	why->reason = reason;
	why->field[0] = '\0';
	snprintf(why->message, sizeof(why->message), "%s", message);
}

/*
 * Entries FROM on (COUNT of them, KIND as for proto_label) of a message
 * that had PROTO_MSG_REJECT_MAX entries rejected already: one line for all,
 * holding HELD (what "event" keeps), so a flood of bad entries costs one
 * line per message. Valid entries among them are not queued: they are in
 * the line, with the reason.
 */
static void proto_rest(struct proto_msg *m, const msgpack_object *held, const char *kind,
		       uint32_t from, uint64_t count, const char *what)
{
	struct proto_conn *pc = m->pc;
	struct record_ctx ctx = proto_ctx(m, NULL, from);
	struct record_error why;

	why.reason = RECORD_REASON_BAD_FRAME;
	why.field[0] = '\0';
	snprintf(why.message, sizeof(why.message), "%s entries %u to %llu (%llu entries) not "
		 "read: %d entries of this message were rejected already; \"event\" holds %s",
		 kind, from, (unsigned long long)(from + count - 1), (unsigned long long)count,
		 m->reject_max, what);
	pc->reject_tokens -= 1;
	if (intake_reject_bulk(pc->env->intake, held, &ctx, m->ack, &why, count) ==
	    INTAKE_FAILED) {
		proto_log(pc, LOG_LEVEL_ERROR, "%llu events could not be dead-lettered (%s); "
			  "connection closed, no ack for their message", (unsigned long long)count,
			  why.message);
		m->failed = true;
		return;
	}
	proto_log_limited(pc, &proto_reject_limit, LOG_LEVEL_WARN, "%s", why.message);
}

/* An event (or what should have been one, entry INDEX) that no mode can read. */
static void proto_bad_at(struct proto_msg *m, const msgpack_object *event, uint32_t index,
			 enum record_reason reason, const char *message)
{
	struct record_ctx ctx = proto_ctx(m, NULL, index);
	struct record_error why;

	proto_why(&why, reason, message);
	proto_verdict(m, intake_reject(m->pc->env->intake, event, &ctx, m->ack, &why), &why);
}

static void proto_bad(struct proto_msg *m, const msgpack_object *event, enum record_reason reason,
		      const char *message)
{
	proto_bad_at(m, event, 0, reason, message);
}

/* Hand the record MAP (entry INDEX, time T or NULL) to the intake. */
static void proto_take(struct proto_msg *m, const msgpack_object *map,
		       const struct proto_time *t, uint32_t index)
{
	struct record_ctx ctx = proto_ctx(m, t, index);
	struct record_error why; /* filled unless the event was queued */

	proto_verdict(m, intake_event(m->pc->env->intake, map, &ctx, m->ack, &why), &why);
}

/* ---- entries and modes -------------------------------------------------- */

/* The words that name an entry in messages: "forward entry 3" for KIND
 * "forward", "message" for a Message's one event (KIND NULL). Built only
 * on the paths that write a message, never per event. */
static const char *proto_label(char *buf, size_t len, const char *kind, uint32_t index)
{
	if (!kind)
		return "message";
	snprintf(buf, len, "%s entry %u", kind, index);
	return buf;
}

/* One [time, record] pair, entry INDEX of a message (KIND as for proto_label). */
static void proto_event(struct proto_msg *m, const msgpack_object *time,
			const msgpack_object *rec, uint32_t index, const char *kind)
{
	struct proto_time t;
	char why[160], msg[256], label[48];
	int rc = proto_time_parse(time, &t, why, sizeof(why));

	if (rc > 0) {
		proto_log(m->pc, LOG_LEVEL_DEBUG, "%s: Fluent Bit group marker skipped",
			  proto_label(label, sizeof(label), kind, index));
		return;
	}
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "%s: time: %s",
			 proto_label(label, sizeof(label), kind, index), why);
		proto_bad_at(m, rec, index, RECORD_REASON_BAD_TIMESTAMP, msg);
		return;
	}
	proto_take(m, rec, &t, index);
}

/* Entry INDEX of a Forward or PackedForward message (KIND: "forward", "packed"). */
static void proto_entry(struct proto_msg *m, const msgpack_object *e, uint32_t index,
			const char *kind)
{
	char label[48], msg[256];

	if (e->type == MSGPACK_OBJECT_ARRAY && e->via.array.size == 2) {
		proto_event(m, &e->via.array.ptr[0], &e->via.array.ptr[1], index, kind);
		return;
	}
	proto_label(label, sizeof(label), kind, index);
	if (e->type == MSGPACK_OBJECT_ARRAY)
		snprintf(msg, sizeof(msg), "%s: expected [time, record], got array of %u elements",
			 label, e->via.array.size);
	else
		snprintf(msg, sizeof(msg), "%s: expected [time, record], got %s", label,
			 json_type_name(e));
	proto_bad(m, e, RECORD_REASON_BAD_FRAME, msg);
}

/* Forward: [tag, [[time, record], ...], option?]. */
static void proto_forward(struct proto_msg *m, const msgpack_object *entries)
{
	uint32_t n = entries->via.array.size;

	for (uint32_t i = 0; i < n && !m->failed; i++) {
		if (m->rejected >= m->reject_max) {
			msgpack_object rest = { .type = MSGPACK_OBJECT_ARRAY };

			rest.via.array.ptr = entries->via.array.ptr + i;
			rest.via.array.size = n - i;
			proto_rest(m, &rest, "forward", i, n - i, "those entries");
			return;
		}
		proto_entry(m, &entries->via.array.ptr[i], i, "forward");
	}
}

/* The most elements one value may announce. */
static uint64_t proto_max_elems(const struct proto_env *env)
{
	uint64_t n = env->max_event_bytes / PROTO_ELEMS_DIVISOR;

	return n > 0 ? n : 1;
}

/* The bytes from entry INDEX on could not be read: dead-letter them once as bin. */
static void proto_packed_rest(struct proto_msg *m, const char *p, size_t len, size_t cut,
			      uint32_t index, const char *why)
{
	msgpack_object rest = { .type = MSGPACK_OBJECT_BIN };
	char msg[256];

	rest.via.bin.ptr = p + cut;
	rest.via.bin.size = (uint32_t)(len - cut);
	snprintf(msg, sizeof(msg), "packed entry %u: %s at byte %zu of %zu; "
		 "the remaining %zu bytes are dead-lettered as one", index, why, cut, len, len - cut);
	proto_bad(m, &rest, RECORD_REASON_BAD_FRAME, msg);
}

/* Entries in the LEN bytes at P, of which the first CLEAN passed the scanner
 * (only those are decoded); what follows them counts as one. */
static uint64_t proto_count_values(const char *p, size_t len, size_t clean)
{
	msgpack_unpacked up;
	size_t off = 0;
	uint64_t n = 0;

	msgpack_unpacked_init(&up);
	while (off < clean && msgpack_unpack_next(&up, p, clean, &off) == MSGPACK_UNPACK_SUCCESS)
		n++;
	msgpack_unpacked_destroy(&up);
	return n + (off < len);
}

/*
 * The LEN bytes at P (CLEAN of them scanned clean), entry INDEX on, once the
 * message had its share of rejections: one line. For gzip data the line
 * holds the message's compressed data as received (its size bounds the
 * line), else these bytes.
 */
static void proto_packed_bulk(struct proto_msg *m, const char *p, size_t len, size_t clean,
			      uint32_t index)
{
	msgpack_object rest = { .type = MSGPACK_OBJECT_BIN };
	uint64_t count = proto_count_values(p, len, clean);

	if (m->gzip) {
		proto_rest(m, m->gzip, "packed", index, count,
			   "the message's whole gzip data as received (bin)");
		return;
	}
	rest.via.bin.ptr = p;
	rest.via.bin.size = (uint32_t)len;
	proto_rest(m, &rest, "packed", index, count, "their msgpack bytes (bin)");
}

/*
 * PackedForward entries: LEN bytes of concatenated [time, record] arrays.
 * The scanner finds the clean prefix first, so msgpack_unpack_next never
 * reads a header announcing more data than there is.
 */
static void proto_packed_entries(struct proto_msg *m, const char *p, size_t len)
{
	struct proto_scan s;
	msgpack_unpacked up;
	size_t cut = len, off = 0;
	uint32_t index = 0;
	const char *why;

	memset(&s, 0, sizeof(s));
	s.max_elems = proto_max_elems(m->pc->env);
	(void)proto_scan_feed(&s, (const uint8_t *)p, len, len);
	if (s.error != PROTO_SCAN_OK || !proto_scan_idle(&s))
		cut = (size_t)s.value_start;
	why = proto_scan_why(&s);
	msgpack_unpacked_init(&up);
	while (off < cut && !m->failed) {
		size_t start = off;

		if (m->rejected >= m->reject_max) {
			proto_packed_bulk(m, p + off, len - off, cut - off, index);
			off = cut = len; /* the bulk line holds the rest, cut bytes too */
			break;
		}
		if (msgpack_unpack_next(&up, p, cut, &off) != MSGPACK_UNPACK_SUCCESS) {
			cut = start;
			why = "undecodable msgpack value";
			break;
		}
		proto_entry(m, &up.data, index++, "packed");
	}
	msgpack_unpacked_destroy(&up);
	if (cut < len && !m->failed)
		proto_packed_rest(m, p, len, cut, index, why);
}

/* CompressedPackedForward: inflate DATA, then read its entries. */
static enum proto_status proto_packed_gzip(struct proto_msg *m, const msgpack_object *msg,
					   const char *data, size_t len)
{
	size_t max = m->pc->env->max_event_bytes;
	size_t limit = max > SIZE_MAX / PROTO_GZIP_FACTOR - 1 ? SIZE_MAX / PROTO_GZIP_FACTOR - 1 :
		       max * PROTO_GZIP_FACTOR;
	char why[128], text[192], *buf = NULL;
	size_t n = 0;

	switch (proto_gunzip(data, len, limit, &buf, &n, why, sizeof(why))) {
	case PROTO_GZ_OK:
		m->gzip = &msg->via.array.ptr[1];
		proto_packed_entries(m, buf, n);
		free(buf);
		return PROTO_OK;
	case PROTO_GZ_CORRUPT:
		snprintf(text, sizeof(text), "packedforward: option.compressed \"gzip\": %s", why);
		proto_bad(m, msg, RECORD_REASON_BAD_FRAME, text);
		return PROTO_OK;
	case PROTO_GZ_TOO_BIG:
		proto_log_limited(m->pc, &proto_stream_limit, LOG_LEVEL_WARN, "gzip data inflates "
				  "past %zu bytes (listen.max_event_bytes x %d); connection closed",
				  limit, PROTO_GZIP_FACTOR);
		return PROTO_CLOSE;
	default:
		proto_log(m->pc, LOG_LEVEL_ERROR, "out of memory inflating gzip data; "
			  "connection closed");
		return PROTO_CLOSE;
	}
}

/* ---- framing ------------------------------------------------------------ */

enum proto_mode {
	PROTO_MODE_MESSAGE = 0, /* [tag, time, record, option?] */
	PROTO_MODE_FORWARD,     /* [tag, [[time, record], ...], option?] */
	PROTO_MODE_PACKED,      /* [tag, bin|str entries, option?] */
	PROTO_MODE_BAD,
	PROTO_MODE_COUNT        /* number of modes; not a mode */
};

static const char *const proto_mode_names[PROTO_MODE_COUNT] = {
	"message", "forward", "packedforward", "frame",
};

/* The mode of message A (>= 2 elements) from the type of element 1. */
static enum proto_mode proto_mode_of(const msgpack_object *a)
{
	const msgpack_object *o = &a->via.array.ptr[1];

	if (proto_time_like(o))
		return PROTO_MODE_MESSAGE;
	if (o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN)
		return PROTO_MODE_PACKED;
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return PROTO_MODE_BAD;
	/* Message whose time is Fluent Bit 2's [time, metadata]: as Forward entries an int
	 * and a map could never be valid, so this reading is the only useful one. */
	if (a->via.array.size >= 3 && o->via.array.size == 2 &&
	    proto_time_like(&o->via.array.ptr[0]) &&
	    (o->via.array.ptr[1].type == MSGPACK_OBJECT_MAP ||
	     o->via.array.ptr[1].type == MSGPACK_OBJECT_NIL))
		return PROTO_MODE_MESSAGE;
	return PROTO_MODE_FORWARD;
}

/* What a message's option asked for. */
struct proto_option {
	const msgpack_object *chunk;  /* str or bin, or NULL */
	bool gzip;                    /* compressed: "gzip" */
};

static bool proto_str_eq(const msgpack_object *o, const char *s)
{
	size_t n = strlen(s);

	return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
	       memcmp(o->via.str.ptr, s, n) == 0;
}

/* One option key/value; -1 with WHY on a value of the wrong kind. */
static int proto_option_kv(const msgpack_object_kv *kv, struct proto_option *opt,
			   char *why, size_t len)
{
	const msgpack_object *v = &kv->val;

	if (proto_str_eq(&kv->key, "chunk")) {
		uint32_t n = v->type == MSGPACK_OBJECT_STR ? v->via.str.size : v->via.bin.size;

		if ((v->type == MSGPACK_OBJECT_STR || v->type == MSGPACK_OBJECT_BIN) &&
		    n > PROTO_CHUNK_MAX) {
			snprintf(why, len, "option.chunk: %" PRIu32 " bytes, longer than %d", n,
				 PROTO_CHUNK_MAX);
			return -1;
		}
		if (v->type == MSGPACK_OBJECT_STR || v->type == MSGPACK_OBJECT_BIN) {
			opt->chunk = v;
			return 0;
		}
		snprintf(why, len, "option.chunk: expected str or bin, got %s", json_type_name(v));
		return -1;
	}
	if (proto_str_eq(&kv->key, "compressed")) {
		if (proto_str_eq(v, "gzip"))
			opt->gzip = true;
		else if (v->type != MSGPACK_OBJECT_NIL && !proto_str_eq(v, "text")) {
			snprintf(why, len, "option.compressed: expected \"gzip\" or \"text\", got %s%s",
				 v->type == MSGPACK_OBJECT_STR ? "another " : "", json_type_name(v));
			return -1;
		}
	}
	return 0; /* size and unknown keys are ignored */
}

/* Option O (absent: NULL, nil, or a map) -> OPT; -1 with WHY otherwise. */
static int proto_option_parse(const msgpack_object *o, struct proto_option *opt,
			      char *why, size_t len)
{
	memset(opt, 0, sizeof(*opt));
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type != MSGPACK_OBJECT_MAP) {
		snprintf(why, len, "option: expected map or nil, got %s", json_type_name(o));
		return -1;
	}
	for (uint32_t i = 0; i < o->via.map.size; i++)
		if (proto_option_kv(&o->via.map.ptr[i], opt, why, len) < 0)
			return -1;
	return 0;
}

/* Check message A's element count for MODE and find its option; -1 with WHY. */
static int proto_frame_check(const msgpack_object *a, enum proto_mode mode,
			     const msgpack_object **opt, char *why, size_t len)
{
	uint32_t n = a->via.array.size;
	uint32_t need = mode == PROTO_MODE_MESSAGE ? 3 : 2;

	if (mode == PROTO_MODE_BAD) {
		snprintf(why, len, "frame: element 1: expected time, entries array or packed "
			 "entries, got %s", json_type_name(&a->via.array.ptr[1]));
		return -1;
	}
	if (n < need || n > need + 1) {
		snprintf(why, len, "%s: expected %s, got %u elements", proto_mode_names[mode],
			 mode == PROTO_MODE_MESSAGE ? "[tag, time, record, option?]" :
			 "[tag, entries, option?]", n);
		return -1;
	}
	*opt = n == need + 1 ? &a->via.array.ptr[need] : NULL;
	return 0;
}

/* Create the ack for OPT's chunk (if any). -1 on ENOMEM (logged). */
static int proto_ack_open(struct proto_msg *m, const struct proto_option *opt)
{
	const msgpack_object *c = opt->chunk;

	if (!c)
		return 0;
	m->chunk = c->type == MSGPACK_OBJECT_STR ? c->via.str.ptr : c->via.bin.ptr;
	if (!m->chunk)
		m->chunk = ""; /* msgpack-c leaves an empty str's ptr NULL; "" is still a chunk */
	m->chunk_len = c->type == MSGPACK_OBJECT_STR ? c->via.str.size : c->via.bin.size;
	m->ack = intake_ack_open(m->pc->env->intake, m->pc->ack_cb, m->pc->ack_arg, m->chunk,
				 (uint32_t)m->chunk_len, c->type == MSGPACK_OBJECT_BIN);
	if (!m->ack) {
		proto_log(m->pc, LOG_LEVEL_ERROR, "out of memory creating an ack; connection closed");
		return -1;
	}
	m->pc->acks++;
	return 0;
}

static struct log_limit proto_flood_limit = LOG_LIMIT_INIT(5, 10000);

/*
 * Refill PC's dead-letter lines (PROTO_CONN_REJECT_RATE a second, up to
 * PROTO_CONN_REJECT_BURST) and return how many a message may write one by
 * one: 16, fewer when the connection has used up its share, never 0.
 */
static uint32_t proto_reject_share(struct proto_conn *pc)
{
	int64_t now = clock_mono_ns() / CLOCK_NS_PER_MS;

	pc->reject_tokens += (double)(now - pc->reject_ms) * PROTO_CONN_REJECT_RATE / 1000.0;
	if (pc->reject_tokens > PROTO_CONN_REJECT_BURST)
		pc->reject_tokens = PROTO_CONN_REJECT_BURST;
	pc->reject_ms = now;
	if (pc->reject_tokens >= PROTO_MSG_REJECT_MAX)
		return PROTO_MSG_REJECT_MAX;
	return pc->reject_tokens >= 2 ? (uint32_t)pc->reject_tokens - 1 : 1;
}

/* After value M: a connection that caused more dead-letter lines than its
 * share is closed (its last message is not acked), so what one connection
 * costs on disk is bounded by time, not by what it sends. */
static enum proto_status proto_flood_check(struct proto_msg *m, enum proto_status st)
{
	struct proto_conn *pc = m->pc;

	if (st != PROTO_OK || pc->reject_tokens >= 0)
		return st;
	log_limited(&proto_flood_limit, LOG_LEVEL_WARN, "proto", "conn=%llu peer=%s: more than "
		    "%d rejected events at once, or %d a second after that; connection closed, "
		    "no ack for its last message", (unsigned long long)pc->id, pc->peer,
		    PROTO_CONN_REJECT_BURST, PROTO_CONN_REJECT_RATE);
	return PROTO_CLOSE;
}

/* Drop the message's guard on its ack; the status the value ends with. */
static enum proto_status proto_msg_end(struct proto_msg *m, enum proto_status st)
{
	intake_ack_close(m->pc->env->intake, m->ack);
	m->ack = NULL;
	return m->failed ? PROTO_CLOSE : proto_flood_check(m, st);
}

/* Run the events of message A in MODE. */
static enum proto_status proto_mode_run(struct proto_msg *m, const msgpack_object *a,
					enum proto_mode mode, const struct proto_option *opt)
{
	const msgpack_object *o = &a->via.array.ptr[1];
	const char *data = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
	size_t len = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;

	switch (mode) {
	case PROTO_MODE_MESSAGE:
		proto_event(m, o, &a->via.array.ptr[2], 0, NULL);
		return PROTO_OK;
	case PROTO_MODE_FORWARD:
		proto_forward(m, o);
		return PROTO_OK;
	default:
		if (opt->gzip)
			return proto_packed_gzip(m, a, data, len);
		proto_packed_entries(m, data, len);
		return PROTO_OK;
	}
}

/* A top-level array: one of the Forward protocol's messages. */
static enum proto_status proto_array(struct proto_msg *m, const msgpack_object *a)
{
	const msgpack_object *el = a->via.array.ptr, *opt_obj = NULL;
	struct proto_option opt;
	enum proto_mode mode;
	char why[256];

	if (a->via.array.size < 2 || a->via.array.size > 4) {
		snprintf(why, sizeof(why), "frame: expected [tag, ...] of 2 to 4 elements, "
			 "got %u elements", a->via.array.size);
		goto bad;
	}
	if (el[0].type != MSGPACK_OBJECT_STR) {
		snprintf(why, sizeof(why), "frame: tag (element 0): expected str, got %s",
			 json_type_name(&el[0]));
		goto bad;
	}
	m->tag = el[0].via.str.ptr ? el[0].via.str.ptr : "";
	m->tag_len = el[0].via.str.size;
	mode = proto_mode_of(a);
	if (proto_frame_check(a, mode, &opt_obj, why, sizeof(why)) < 0 ||
	    proto_option_parse(opt_obj, &opt, why, sizeof(why)) < 0)
		goto bad;
	if (proto_ack_open(m, &opt) < 0)
		return PROTO_CLOSE;
	return proto_msg_end(m, proto_mode_run(m, a, mode, &opt));
bad:
	proto_bad(m, a, RECORD_REASON_BAD_FRAME, why);
	return proto_msg_end(m, PROTO_OK);
}

/* Handle one complete top-level value V. */
static enum proto_status proto_value(struct proto_conn *pc, const msgpack_object *v)
{
	struct proto_msg m = { .pc = pc, .recv_ns = (uint64_t)clock_ns(CLOCK_REALTIME) };
	char why[128];

	m.reject_max = proto_reject_share(pc);

	switch (v->type) {
	case MSGPACK_OBJECT_NIL:
		proto_log(pc, LOG_LEVEL_DEBUG, "heartbeat");
		return PROTO_OK;
	case MSGPACK_OBJECT_MAP:
		proto_take(&m, v, NULL, 0);
		return proto_msg_end(&m, PROTO_OK);
	case MSGPACK_OBJECT_ARRAY:
		return proto_array(&m, v);
	default:
		snprintf(why, sizeof(why), "frame: expected map, array or nil at top level, got %s",
			 json_type_name(v));
		proto_bad(&m, v, RECORD_REASON_BAD_FRAME, why);
		return proto_msg_end(&m, PROTO_OK);
	}
}

/* ---- the stream --------------------------------------------------------- */

/* Log why the scanner stopped the stream. */
static void proto_log_scan_error(const struct proto_conn *pc)
{
	const struct proto_scan *s = &pc->scan;

	switch (s->error) {
	case PROTO_SCAN_NOT_MSGPACK:
		proto_log_limited(pc, &proto_stream_limit, LOG_LEVEL_WARN, "stream is not msgpack "
				  "(byte offset %llu); connection closed",
				  (unsigned long long)s->head_start);
		break;
	case PROTO_SCAN_TOO_DEEP:
		proto_log_limited(pc, &proto_stream_limit, LOG_LEVEL_WARN, "value at byte offset "
				  "%llu nests deeper than %d levels; connection closed",
				  (unsigned long long)s->value_start, PROTO_MAX_DEPTH);
		break;
	case PROTO_SCAN_TOO_MANY:
		proto_log_limited(pc, &proto_stream_limit, LOG_LEVEL_WARN, "value at byte offset "
				  "%llu announces %llu or more elements, more than "
				  "listen.max_event_bytes / %d = %llu; connection closed",
				  (unsigned long long)s->value_start,
				  (unsigned long long)s->error_size, PROTO_ELEMS_DIVISOR,
				  (unsigned long long)s->max_elems);
		break;
	default:
		proto_log_limited(pc, &proto_stream_limit, LOG_LEVEL_WARN, "value of %s%llu bytes "
				  "exceeds listen.max_event_bytes %zu; connection closed",
				  s->error_exact ? "" : "at least ",
				  (unsigned long long)s->error_size, pc->env->max_event_bytes);
		break;
	}
}

/* Move LEN bytes of IN into the decoder, behind the scanner. -1 on ENOMEM (logged). */
static int proto_fill_step(struct proto_conn *pc, struct evbuffer *in, size_t len)
{
	char *dst;
	size_t ok;

	if (!msgpack_unpacker_reserve_buffer(&pc->up, len)) {
		proto_log(pc, LOG_LEVEL_ERROR, "out of memory buffering %zu bytes; "
			  "connection closed", len);
		return -1;
	}
	dst = msgpack_unpacker_buffer(&pc->up);
	if (evbuffer_remove(in, dst, len) != (int)len) {
		proto_log(pc, LOG_LEVEL_ERROR, "cannot read %zu buffered bytes; connection closed",
			  len);
		return -1;
	}
	pc->scan.max_elems = proto_max_elems(pc->env);
	ok = proto_scan_feed(&pc->scan, (const uint8_t *)dst, len, pc->env->max_event_bytes);
	msgpack_unpacker_buffer_consumed(&pc->up, ok);
	return 0;
}

/* Move all of IN into the decoder (dropping what follows a scan error). */
static int proto_fill(struct proto_conn *pc, struct evbuffer *in)
{
	size_t len;

	while (in && (len = evbuffer_get_length(in)) > 0) {
		if (pc->scan.error != PROTO_SCAN_OK)
			return evbuffer_drain(in, len) < 0 ? -1 : 0;
		if (proto_fill_step(pc, in, len < PROTO_FILL_STEP ? len : PROTO_FILL_STEP) < 0)
			return -1;
	}
	return 0;
}

/* Decode and handle the next value: 1 handled, 0 needs more bytes, -1 close. */
static int proto_next(struct proto_conn *pc)
{
	size_t size = 0;
	enum proto_status st;

	switch (msgpack_unpacker_next_with_size(&pc->up, &pc->val, &size)) {
	case MSGPACK_UNPACK_SUCCESS:
		pc->decoded += size;
		pc->values++;
		st = proto_value(pc, &pc->val.data);
		msgpack_unpacked_destroy(&pc->val);
		return st == PROTO_OK ? 1 : -1;
	case MSGPACK_UNPACK_CONTINUE:
		if (pc->scan.error == PROTO_SCAN_OK)
			return 0;
		proto_log_scan_error(pc);
		return -1;
	case MSGPACK_UNPACK_PARSE_ERROR:
		proto_log_limited(pc, &proto_stream_limit, LOG_LEVEL_WARN, "stream is not msgpack "
				  "(byte offset %llu); connection closed",
				  (unsigned long long)(pc->decoded +
						       msgpack_unpacker_parsed_size(&pc->up)));
		return -1;
	default:
		proto_log(pc, LOG_LEVEL_ERROR, "out of memory decoding a value at byte offset %llu; "
			  "connection closed", (unsigned long long)pc->decoded);
		return -1;
	}
}

/* ---- the memory budget ------------------------------------------------- */

/* What PC's unfinished input costs: the bytes its decoder holds, and what
 * msgpack-c allocates for the elements the open value announced (scan S). */
static size_t proto_cost_of(const struct proto_conn *pc, const struct proto_scan *s,
			    size_t more)
{
	size_t elems = proto_scan_idle(s) ? 0 : (size_t)s->elems;

	return msgpack_unpacker_message_size(&pc->up) + more + elems * sizeof(msgpack_object);
}

/* Account COST for PC in the budget. */
static void proto_cost_set(struct proto_conn *pc, size_t cost)
{
	struct proto_budget *b = pc->env->budget;

	if (b) {
		b->used = b->used - pc->cost + cost;
		b->holders += (cost > 0) - (pc->cost > 0);
	}
	pc->cost = cost;
}

/*
 * Whether IN may go into the decoder. Only when taking it could pass the
 * budget is it scanned ahead (a copy of the scanner over IN's chunks, which
 * stay put), so the cost counts the elements its headers announce before
 * msgpack-c allocates them. A connection is held when the total would pass
 * the budget and it would hold at least its share: the largest ones stop,
 * small values keep flowing.
 */
static bool proto_admit(const struct proto_conn *pc, struct evbuffer *in)
{
	const struct proto_budget *b = pc->env->budget;
	size_t len = in ? evbuffer_get_length(in) : 0, cost, share, others;
	uint64_t worst;
	struct proto_scan trial;
	struct evbuffer_iovec vec[PROTO_PEEK_VECS];
	const unsigned char *flat;
	int n;

	if (!b || b->max == 0 || len == 0)
		return true;
	others = b->used - pc->cost;
	worst = (uint64_t)len + proto_max_elems(pc->env) * sizeof(msgpack_object);
	if (others + msgpack_unpacker_message_size(&pc->up) + worst <= b->max)
		return true; /* fits whatever the bytes announce */
	trial = pc->scan;
	trial.max_elems = proto_max_elems(pc->env);
	n = evbuffer_peek(in, -1, NULL, vec, PROTO_PEEK_VECS);
	if (n > PROTO_PEEK_VECS) { /* rare: many small chunks; make them one */
		flat = evbuffer_pullup(in, -1);
		if (!flat)
			return true; /* out of memory: the fill will say so */
		(void)proto_scan_feed(&trial, flat, len, pc->env->max_event_bytes);
	}
	for (int i = 0; i < n && n <= PROTO_PEEK_VECS && trial.error == PROTO_SCAN_OK; i++)
		(void)proto_scan_feed(&trial, vec[i].iov_base, vec[i].iov_len,
				      pc->env->max_event_bytes);
	if (trial.error != PROTO_SCAN_OK)
		return true; /* the real fill closes the connection */
	cost = proto_cost_of(pc, &trial, len);
	share = b->max / (size_t)(b->holders + (pc->cost == 0));
	/* Alone, a connection always reads: the budget must not stop a value
	 * larger than itself, and some connection must always progress. */
	return others == 0 || others + cost <= b->max || cost < share;
}

enum proto_status proto_run(struct proto_conn *pc, struct evbuffer *in)
{
	int rc;

	if (pc->closed)
		return PROTO_CLOSE;
	if (!proto_admit(pc, in))
		return PROTO_HELD;
	if (proto_fill(pc, in) < 0) {
		pc->closed = true;
		return PROTO_CLOSE;
	}
	for (;;) {
		if (intake_busy(pc->env->intake)) {
			proto_cost_set(pc, proto_cost_of(pc, &pc->scan, 0));
			return PROTO_BLOCKED;
		}
		rc = proto_next(pc);
		if (rc == 0) {
			proto_cost_set(pc, proto_cost_of(pc, &pc->scan, 0));
			return PROTO_OK;
		}
		if (rc < 0) {
			pc->closed = true;
			proto_cost_set(pc, 0);
			return PROTO_CLOSE;
		}
	}
}

/* ---- acks --------------------------------------------------------------- */

static int proto_evbuffer_write(void *data, const char *buf, size_t len)
{
	return evbuffer_add(data, buf, len);
}

int proto_ack_encode(const struct ack *ack, struct evbuffer *out)
{
	struct evbuffer *tmp = evbuffer_new();
	msgpack_packer pk;
	int rc;

	if (!tmp)
		return -1;
	/* Packed aside first, so OUT never holds half a reply. */
	msgpack_packer_init(&pk, tmp, proto_evbuffer_write);
	rc = msgpack_pack_map(&pk, 1);
	if (rc == 0)
		rc = msgpack_pack_str_with_body(&pk, "ack", 3);
	if (rc == 0 && ack->chunk_is_bin)
		rc = msgpack_pack_bin_with_body(&pk, ack->chunk, ack->chunk_len);
	else if (rc == 0)
		rc = msgpack_pack_str_with_body(&pk, ack->chunk, ack->chunk_len);
	if (rc == 0)
		rc = evbuffer_add_buffer(out, tmp);
	evbuffer_free(tmp);
	return rc == 0 ? 0 : -1;
}
