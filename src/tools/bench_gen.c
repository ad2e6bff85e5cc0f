/*
 * bench_gen.c: the event mix of megaingest-bench and its three encoders.
 *
 * It owns what the bench sends, not how: the seeded generator (xorshift64*,
 * the word lists, the prompt pool), one event of the mix at a time
 * (bench_event_next), the event as msgpack for the wire (bench_pack_event),
 * as JSON for the HTTP mode (bench_json_event) and as a COPY text row for
 * --dump-copy. bench.c owns the connections, chunks, acks, timers, the
 * report and the options, bench_http.c the HTTP requests. The split is at
 * the generator's state (struct bench_gen): nothing here touches libevent or a
 * connection, so the mix can change without reading the load loop, and
 * --dump-copy writes the very rows the daemon would be sent for one seed.
 *
 * Not thread-safe; the bench has one thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <yajl/yajl_gen.h>

#include "bench_private.h"
#include "log.h"

#define BENCH_PASS_IDS 1000

/* Wire keys, in enum bench_col order; also the --dump-copy header. */
static const char *const bench_col_names[BENCH_COL_COUNT] = {
	"mg_id", "mg_record_type", "mg_pass_id", "mg_session_id", "mg_generation_id",
	"mg_platform", "mg_type", "mg_prompt", "mg_output_url", "mg_provider", "mg_model",
	"mg_latency_ms", "mg_input_chars", "mg_output_chars", "mg_input_tokens",
	"mg_output_tokens", "mg_content_type", "mg_status", "mg_error", "mg_result_type",
	"mg_comment", "mg_image_url", "mg_delta", "mg_reason", "mg_source", "mg_ref_type",
	"mg_ref_id", "mg_client_version", "mg_os", "mg_browser", "mg_device",
};

/* ---- small helpers ----------------------------------------------------- */

/* xorshift64*: fast, seedable, good enough for picking words. */
static uint64_t bench_rand(struct bench_gen *g)
{
	g->rng ^= g->rng >> 12;
	g->rng ^= g->rng << 25;
	g->rng ^= g->rng >> 27;
	return g->rng * 0x2545F4914F6CDD1DULL;
}

/* Uniform-ish in [0, n) for small n. */
static uint32_t bench_pick(struct bench_gen *g, uint32_t n)
{
	return (uint32_t)((bench_rand(g) >> 32) % n);
}

#define BENCH_PICK(g, arr) ((arr)[bench_pick((g), sizeof(arr) / sizeof((arr)[0]))])

/* Point column COL of EV at the static string S. */
static void bench_set(struct bench_event *ev, enum bench_col col, const char *s)
{
	ev->v[col].s = s;
	ev->v[col].len = (uint32_t)strlen(s);
}

static void bench_set_int(struct bench_event *ev, enum bench_col col, int64_t i)
{
	ev->v[col].is_int = true;
	ev->v[col].i = i;
}

/* Format into EV's scratch space and point column COL at the result.
 * The scratch is sized for the longest event; overflow truncates. */
__attribute__((format(printf, 3, 4)))
static void bench_setf(struct bench_event *ev, enum bench_col col, const char *fmt, ...)
{
	size_t room = sizeof(ev->scratch) - ev->used;
	char *dst = ev->scratch + ev->used;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(dst, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= room)
		n = room ? (int)room - 1 : 0;
	ev->v[col].s = dst;
	ev->v[col].len = (uint32_t)n;
	ev->used += (size_t)n + 1;
}

const char bench_hex[] = "0123456789abcdef";

void bench_hex_put(char *dst, uint64_t v, int digits)
{
	for (int i = digits - 1; i >= 0; i--) {
		dst[i] = bench_hex[v & 15];
		v >>= 4;
	}
}

/* A UUIDv7 string for event SEQ at wall-clock MS: 48 bits of milliseconds,
 * version 7, 12 run-salt bits, variant 10, 30 run-salt bits, 32 bits of
 * sequence. Time-ordered, and unique within and across runs. */
static void bench_uuid7(const struct bench_gen *g, uint64_t ms, uint64_t seq, char out[37])
{
	uint64_t hi = (ms << 16) | 0x7000 | (g->salt_a & 0x0fff);
	uint64_t lo = 0x8000000000000000ULL | ((uint64_t)(g->salt_b & 0x3fffffff) << 32) |
		      (seq & 0xffffffffULL);

	bench_hex_put(out, hi >> 32, 8);
	out[8] = '-';
	bench_hex_put(out + 9, (hi >> 16) & 0xffff, 4);
	out[13] = '-';
	bench_hex_put(out + 14, hi & 0xffff, 4);
	out[18] = '-';
	bench_hex_put(out + 19, lo >> 48, 4);
	out[23] = '-';
	bench_hex_put(out + 24, lo & 0xffffffffffffULL, 12);
	out[36] = '\0';
}

/* ---- the event mix ------------------------------------------------------ */

static const char *const bench_words[] = {
	"cinematic", "portrait", "of", "a", "weathered", "lighthouse", "keeper", "standing",
	"on", "wet", "basalt", "rocks", "at", "dusk", "volumetric", "fog", "rim", "light",
	"shot", "35mm", "film", "grain", "muted", "teal", "and", "orange", "palette",
	"highly", "detailed", "texture", "soft", "bokeh", "background", "golden", "hour",
	"neon", "city", "street", "after", "rain", "reflections", "isometric", "cozy",
	"cabin", "interior", "warm", "lamp", "watercolor", "style", "children's", "book",
	"illustration", "fox", "reading", "under", "an", "oak", "tree", "product", "photo",
	"minimalist", "studio", "lighting", "ultra", "sharp", "8k", "wide", "angle",
};
static const char *const bench_platforms[] = { "web", "web", "ios", "android", "api" };
static const char *const bench_gen_types[] = { "image", "image", "image", "video", "upscale" };
static const char *const bench_providers[] = { "openai", "stability", "runway", "fal" };
static const char *const bench_models[] = { "flux-pro-1.1", "sdxl-1.0", "gen-3-alpha",
					   "dall-e-3", "kling-1.6" };
static const char *const bench_versions[] = { "4.12.0", "4.12.1", "4.13.0-beta.2" };
static const char *const bench_oses[] = { "macOS 14.5", "Windows 11", "iOS 17.5",
					 "Android 14", "Ubuntu 24.04" };
static const char *const bench_browsers[] = { "Chrome 126", "Safari 17.5", "Firefox 127",
					     "Edge 126" };
static const char *const bench_devices[] = { "desktop", "desktop", "mobile", "tablet" };
static const char *const bench_results[] = { "thumbs_up", "thumbs_up", "thumbs_down",
					    "report" };
static const char *const bench_comments[] = {
	"love the lighting, exactly what I asked for",
	"hands look wrong again, six fingers on the left one",
	"colors are too saturated compared to the reference",
	"great, but the text in the sign is garbled",
};

/* Fill the prompt pool: word salads of 150..250 characters (mean ~200). */
static int bench_prompts_init(struct bench_gen *g)
{
	for (int i = 0; i < BENCH_PROMPTS; i++) {
		size_t target = 150 + bench_pick(g, 101), len = 0;
		char *p = malloc(target + 32);

		if (!p)
			return -1;
		while (len < target) {
			const char *w = BENCH_PICK(g, bench_words);
			int n = snprintf(p + len, target + 32 - len, "%s%s", len ? " " : "", w);

			if (n < 0 || (size_t)n >= target + 32 - len)
				break;
			len += (size_t)n;
		}
		g->prompts[i] = p;
		g->prompt_len[i] = (uint32_t)len;
	}
	return 0;
}

int bench_gen_init(struct bench_gen *g, uint64_t seed, uint32_t salt_a, uint32_t salt_b)
{
	g->rng = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
	if (g->rng == 0)
		g->rng = 1;
	g->salt_a = salt_a;
	g->salt_b = salt_b;
	return bench_prompts_init(g);
}

void bench_gen_free(struct bench_gen *g)
{
	for (int i = 0; i < BENCH_PROMPTS; i++) {
		free(g->prompts[i]);
		g->prompts[i] = NULL;
	}
}

/* Columns every record type carries: id, type, pass, session, client. */
static void bench_gen_common(struct bench_gen *g, struct bench_event *ev, const char *type)
{
	uint32_t pass = bench_pick(g, BENCH_PASS_IDS);
	char *id = ev->scratch + ev->used;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ev->sec = ts.tv_sec;
	ev->nsec = (uint32_t)ts.tv_nsec;
	ev->seq = g->event_seq++;
	ev->ab = (ev->seq & 1) ? 'a' : 'b';
	bench_uuid7(g, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, ev->seq, id);
	ev->v[BENCH_COL_ID].s = id;
	ev->v[BENCH_COL_ID].len = 36;
	ev->used += 37;
	bench_set(ev, BENCH_COL_RECORD_TYPE, type);
	bench_setf(ev, BENCH_COL_PASS_ID, "pass_%06" PRIu32, pass);
	bench_setf(ev, BENCH_COL_SESSION_ID, "sess_%06" PRIu32 "_%02" PRIu32, pass,
		   bench_pick(g, 8));
	bench_set(ev, BENCH_COL_PLATFORM, BENCH_PICK(g, bench_platforms));
	bench_set(ev, BENCH_COL_CLIENT_VERSION, BENCH_PICK(g, bench_versions));
}

static void bench_gen_generation(struct bench_gen *g, struct bench_event *ev)
{
	uint32_t pr = bench_pick(g, BENCH_PROMPTS), roll = bench_pick(g, 100);
	uint64_t gen = ev->seq;

	bench_setf(ev, BENCH_COL_GENERATION_ID, "gen_%010" PRIu64, gen);
	bench_set(ev, BENCH_COL_TYPE, BENCH_PICK(g, bench_gen_types));
	ev->v[BENCH_COL_PROMPT].s = g->prompts[pr];
	ev->v[BENCH_COL_PROMPT].len = g->prompt_len[pr];
	bench_set(ev, BENCH_COL_PROVIDER, BENCH_PICK(g, bench_providers));
	bench_set(ev, BENCH_COL_MODEL, BENCH_PICK(g, bench_models));
	bench_set_int(ev, BENCH_COL_LATENCY_MS, 800 + bench_pick(g, 20000));
	bench_set_int(ev, BENCH_COL_INPUT_CHARS, g->prompt_len[pr]);
	bench_set_int(ev, BENCH_COL_INPUT_TOKENS, g->prompt_len[pr] / 4);
	bench_set_int(ev, BENCH_COL_OUTPUT_TOKENS, 1000 + bench_pick(g, 3000));
	if (roll < 5) {
		bench_set(ev, BENCH_COL_STATUS, "failed");
		bench_set(ev, BENCH_COL_ERROR, "provider timeout after 30000 ms");
		return;
	}
	bench_set(ev, BENCH_COL_STATUS, roll < 15 ? "pending" : "succeeded");
	bench_setf(ev, BENCH_COL_OUTPUT_URL, "https://cdn.mega.example/o/gen_%010" PRIu64 ".png",
		   gen);
	bench_set(ev, BENCH_COL_CONTENT_TYPE, "image/png");
	bench_set(ev, BENCH_COL_OS, BENCH_PICK(g, bench_oses));
	bench_set(ev, BENCH_COL_BROWSER, BENCH_PICK(g, bench_browsers));
	bench_set(ev, BENCH_COL_DEVICE, BENCH_PICK(g, bench_devices));
}

static void bench_gen_session(struct bench_gen *g, struct bench_event *ev)
{
	bench_set(ev, BENCH_COL_STATUS, "active");
	bench_set(ev, BENCH_COL_OS, BENCH_PICK(g, bench_oses));
	bench_set(ev, BENCH_COL_BROWSER, BENCH_PICK(g, bench_browsers));
	bench_set(ev, BENCH_COL_DEVICE, BENCH_PICK(g, bench_devices));
}

static void bench_gen_feedback(struct bench_gen *g, struct bench_event *ev)
{
	uint64_t gen = ev->seq > 1000 ? ev->seq - 1 - bench_pick(g, 1000) : ev->seq;

	bench_setf(ev, BENCH_COL_GENERATION_ID, "gen_%010" PRIu64, gen);
	bench_set(ev, BENCH_COL_RESULT_TYPE, BENCH_PICK(g, bench_results));
	bench_set(ev, BENCH_COL_COMMENT, BENCH_PICK(g, bench_comments));
	bench_setf(ev, BENCH_COL_IMAGE_URL, "https://cdn.mega.example/o/gen_%010" PRIu64 ".png",
		   gen);
}

static void bench_gen_credit(struct bench_gen *g, struct bench_event *ev)
{
	bool topup = bench_pick(g, 10) == 0;

	bench_set_int(ev, BENCH_COL_DELTA, topup ? 100 : -1 - (int64_t)bench_pick(g, 5));
	bench_set(ev, BENCH_COL_REASON, topup ? "topup" : "generation");
	bench_set(ev, BENCH_COL_SOURCE, topup ? "shopify" : "app");
	bench_set(ev, BENCH_COL_REF_TYPE, topup ? "order" : "generation");
	bench_setf(ev, BENCH_COL_REF_ID, topup ? "order_%010" PRIu64 : "gen_%010" PRIu64,
		   ev->seq);
}

/* Generate the next event of the mix into EV (overwritten). */
void bench_event_next(struct bench_gen *g, struct bench_event *ev)
{
	uint32_t roll = bench_pick(g, 100);

	memset(ev->v, 0, sizeof(ev->v));
	ev->used = 0;
	if (roll < 70) {
		bench_gen_common(g, ev, "generation");
		bench_gen_generation(g, ev);
	} else if (roll < 85) {
		bench_gen_common(g, ev, "session");
		bench_gen_session(g, ev);
	} else if (roll < 95) {
		bench_gen_common(g, ev, "feedback");
		bench_gen_feedback(g, ev);
	} else {
		bench_gen_common(g, ev, "credit_transaction");
		bench_gen_credit(g, ev);
	}
}

/* ---- encoders: msgpack (Forward), JSON (HTTP), COPY text (--dump-copy) -- */

int bench_pack_str(msgpack_packer *pk, const char *s, size_t len)
{
	return msgpack_pack_str(pk, len) | msgpack_pack_str_body(pk, s, len);
}

/* [EventTime, {columns..., "mg_meta": {...}}]; 0 or -1 (out of memory). */
int bench_pack_event(msgpack_packer *pk, const struct bench_event *ev)
{
	unsigned char t[8];
	uint32_t sec = (uint32_t)ev->sec, n = 1;
	int rc = 0;

	for (int i = 0; i < BENCH_COL_COUNT; i++)
		n += ev->v[i].s || ev->v[i].is_int;
	for (int i = 0; i < 4; i++) {
		t[i] = (unsigned char)(sec >> (24 - 8 * i));
		t[4 + i] = (unsigned char)(ev->nsec >> (24 - 8 * i));
	}
	rc |= msgpack_pack_array(pk, 2);
	rc |= msgpack_pack_ext(pk, 8, 0) | msgpack_pack_ext_body(pk, t, 8);
	rc |= msgpack_pack_map(pk, n);
	for (int i = 0; i < BENCH_COL_COUNT; i++) {
		if (!ev->v[i].s && !ev->v[i].is_int)
			continue;
		rc |= bench_pack_str(pk, bench_col_names[i], strlen(bench_col_names[i]));
		if (ev->v[i].is_int)
			rc |= msgpack_pack_int64(pk, ev->v[i].i);
		else
			rc |= bench_pack_str(pk, ev->v[i].s, ev->v[i].len);
	}
	rc |= bench_pack_str(pk, "mg_meta", 7) | msgpack_pack_map(pk, 3);
	rc |= bench_pack_str(pk, "app", 3) | bench_pack_str(pk, "megaingest-bench", 16);
	rc |= bench_pack_str(pk, "ab", 2) | bench_pack_str(pk, &ev->ab, 1);
	rc |= bench_pack_str(pk, "seq", 3) | msgpack_pack_uint64(pk, ev->seq);
	return rc ? -1 : 0;
}

/* EV as one JSON object; 0 or -1 (out of memory). */
int bench_json_event(yajl_gen g, const struct bench_event *ev)
{
	time_t sec = (time_t)ev->sec;
	char ts[48], ab[2] = { ev->ab, '\0' };
	struct tm tm;
	int bad = 0, n;

#define BENCH_JSTR(s, len) \
	(yajl_gen_string(g, (const unsigned char *)(s), (len)) != yajl_gen_status_ok)
	bad |= yajl_gen_map_open(g) != yajl_gen_status_ok;
	for (int i = 0; i < BENCH_COL_COUNT; i++) {
		if (!ev->v[i].s && !ev->v[i].is_int)
			continue;
		bad |= BENCH_JSTR(bench_col_names[i], strlen(bench_col_names[i]));
		if (ev->v[i].is_int)
			bad |= yajl_gen_integer(g, ev->v[i].i) != yajl_gen_status_ok;
		else
			bad |= BENCH_JSTR(ev->v[i].s, ev->v[i].len);
	}
	/* The Forward entry time, to the nanosecond, as RFC 3339. */
	gmtime_r(&sec, &tm);
	n = snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%09" PRIu32 "Z",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ev->nsec);
	bad |= n < 0 || (size_t)n >= sizeof(ts);
	bad |= BENCH_JSTR("mg_created_at", 13) || BENCH_JSTR(ts, n > 0 ? (size_t)n : 0);
	bad |= BENCH_JSTR("mg_meta", 7) || yajl_gen_map_open(g) != yajl_gen_status_ok;
	bad |= BENCH_JSTR("app", 3) || BENCH_JSTR("megaingest-bench", 16);
	bad |= BENCH_JSTR("ab", 2) || BENCH_JSTR(ab, 1);
	bad |= BENCH_JSTR("seq", 3) ||
	       yajl_gen_integer(g, (long long)ev->seq) != yajl_gen_status_ok;
	bad |= yajl_gen_map_close(g) != yajl_gen_status_ok;
	bad |= yajl_gen_map_close(g) != yajl_gen_status_ok;
#undef BENCH_JSTR
	return bad ? -1 : 0;
}

/* Write S in COPY text format (backslash, tab, newline, CR escaped). */
static void bench_copy_text(FILE *f, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
			putc('\\', f);
			c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
		}
		putc(c, f);
	}
}

/* One COPY text row: the BENCH_COL_* columns, then mg_meta, mg_created_at. */
static void bench_copy_event(FILE *f, const struct bench_event *ev)
{
	struct tm tm;
	time_t sec = (time_t)ev->sec;

	for (int i = 0; i < BENCH_COL_COUNT; i++) {
		if (ev->v[i].is_int)
			fprintf(f, "%" PRId64, ev->v[i].i);
		else if (ev->v[i].s)
			bench_copy_text(f, ev->v[i].s, ev->v[i].len);
		else
			fputs("\\N", f);
		putc('\t', f);
	}
	gmtime_r(&sec, &tm);
	fprintf(f, "{\"app\": \"megaingest-bench\", \"ab\": \"%c\", \"seq\": %" PRIu64 "}\t"
		"%04d-%02d-%02d %02d:%02d:%02d.%06u+00\n", ev->ab, ev->seq,
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		tm.tm_sec, ev->nsec / 1000);
}

/* --dump-copy: write ROWS rows to PATH and the column list to stdout. */
int bench_dump_copy(struct bench_gen *g, const char *path, int64_t rows)
{
	struct bench_event ev;
	FILE *f = fopen(path, "w");

	if (!f) {
		log_error("bench", "cannot create %s: %s; nothing written", path, strerror(errno));
		return -1;
	}
	for (int64_t i = 0; i < rows; i++) {
		bench_event_next(g, &ev);
		bench_copy_event(f, &ev);
	}
	if (ferror(f) | (fclose(f) != 0)) {
		log_error("bench", "writing %s failed: %s; the file is incomplete", path,
			  strerror(errno));
		return -1;
	}
	for (int i = 0; i < BENCH_COL_COUNT; i++)
		printf("%s, ", bench_col_names[i]);
	printf("mg_meta, mg_created_at\n");
	return fflush(stdout) == 0 ? 0 : -1;
}

