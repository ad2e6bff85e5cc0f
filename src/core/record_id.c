/*
 * record_id.c: the mg_id of an event that brings none, and the id hash.
 *
 * Two kinds of generated id (RFC 9562). An entry of a Forward message with
 * a chunk id gets a UUIDv8 derived from (chunk, tag, entry index), so a
 * client's resend of the same chunk yields the same ids and the writer's
 * merge on mg_id makes the resend harmless. Anything else gets a UUIDv7:
 * time-ordered, so generated ids index well. Split from record.c because
 * this is where the process-wide and per-thread crypto and random state
 * lives, which the validation code never needs to see.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>

#include "record.h"
#include "record_private.h"

/* Per-thread pool of random bytes for UUIDv7, refilled by getrandom(2). */
static __thread unsigned char rec_rand_pool[256];
static __thread size_t rec_rand_left;

static pthread_once_t rec_sha_once = PTHREAD_ONCE_INIT;
static const EVP_MD *rec_sha256; /* fetched once, kept for the process's life */
static __thread EVP_MD_CTX *rec_sha_ctx; /* per thread, reused, never freed */

/* 16 bytes as a lowercase hyphenated UUID. */
static void rec_uuid_text(const unsigned char u[16], char out[RECORD_ID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	char *p = out;

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[u[i] >> 4];
		*p++ = hex[u[i] & 15];
	}
	*p = '\0';
}

static void rec_sha_init(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	rec_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); /* no implicit fetch per digest */
#else
	rec_sha256 = EVP_sha256();
#endif
}

static void rec_be32(unsigned char p[4], uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/*
 * The id a chunk's entry gets on every resend: UUIDv8 (RFC 9562) from
 * SHA-256 over "mi1", the entry index (4 bytes), the tag's length (4
 * bytes), the tag, then the chunk id (its length is what remains, so the
 * encoding is unambiguous). Typical tags and chunk ids fit one SHA-256
 * block. The context is kept per thread and re-initialised each call.
 * 0, or -1 when libcrypto fails.
 */
static int rec_id_derived(const struct record_ctx *ctx, char out[RECORD_ID_LEN + 1])
{
	unsigned char head[11] = { 'm', 'i', '1' }, md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *mc = rec_sha_ctx;

	if (pthread_once(&rec_sha_once, rec_sha_init) != 0 || !rec_sha256)
		return -1;
	if (!mc && !(mc = rec_sha_ctx = EVP_MD_CTX_new()))
		return -1;
	rec_be32(head + 3, ctx->index);
	rec_be32(head + 7, (uint32_t)(ctx->tag ? ctx->tag_len : 0));
	if (!EVP_DigestInit_ex(mc, rec_sha256, NULL) ||
	    !EVP_DigestUpdate(mc, head, sizeof(head)) ||
	    (ctx->tag && !EVP_DigestUpdate(mc, ctx->tag, ctx->tag_len)) ||
	    !EVP_DigestUpdate(mc, ctx->chunk, ctx->chunk_len) ||
	    !EVP_DigestFinal_ex(mc, md, &mdlen) || mdlen < 16)
		return -1;
	md[6] = (unsigned char)((md[6] & 0x0f) | 0x80); /* version 8 */
	md[8] = (unsigned char)((md[8] & 0x3f) | 0x80); /* variant 10 */
	rec_uuid_text(md, out);
	return 0;
}

/* N random bytes from the thread's pool, refilled from getrandom(2) (the
 * daemon never forks after start, so a pool is never shared by two
 * processes); RAND_bytes if getrandom is unavailable. */
static int rec_random(unsigned char *dst, size_t n)
{
	size_t size = sizeof(rec_rand_pool);

	if (rec_rand_left < n) {
		size_t got = 0;

		while (got < size) {
			ssize_t r = getrandom(rec_rand_pool + got, size - got, 0);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		if (got < size && RAND_bytes(rec_rand_pool, (int)size) != 1)
			return -1;
		rec_rand_left = size;
	}
	memcpy(dst, rec_rand_pool + size - rec_rand_left, n);
	rec_rand_left -= n;
	return 0;
}

/*
 * UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 12 bits of sub-
 * millisecond time (the RFC's "increased clock precision" method, so ids
 * made in one millisecond still sort by time), then 62 random bits.
 */
static int rec_id_v7(uint64_t now_ns, char out[RECORD_ID_LEN + 1])
{
	unsigned char u[16];
	uint64_t ms = now_ns / 1000000;
	uint32_t sub = (uint32_t)((now_ns % 1000000) * 4096 / 1000000);

	if (rec_random(u + 8, 8) != 0)
		return -1;
	for (int i = 0; i < 6; i++)
		u[i] = (unsigned char)(ms >> (40 - 8 * i));
	u[6] = (unsigned char)(0x70 | (sub >> 8));
	u[7] = (unsigned char)sub;
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	rec_uuid_text(u, out);
	return 0;
}

int record_id_make(const struct record_ctx *ctx, char out[RECORD_ID_LEN + 1])
{
	uint64_t now = ctx->recv_ns;

	if (ctx->chunk)
		return rec_id_derived(ctx, out);
	if (!now) {
		struct timespec ts;

		if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
			now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	}
	return rec_id_v7(now, out);
}

/*
 * 32-bit hash of an mg_id: picks the writer, so it must spread similar ids
 * (UUIDv7s differ mostly in their tail) and be cheap; not a security
 * boundary. Eight bytes per step (multiply and fold), then a final mix.
 */
uint32_t record_id_hash(const char *s, size_t n)
{
	const uint64_t k = UINT64_C(0x9e3779b97f4a7c15);
	uint64_t h = n * k, w;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * k;
		h ^= h >> 29;
	}
	if (n) {
		w = 0;
		memcpy(&w, s, n);
		h = (h ^ w) * k;
	}
	h ^= h >> 32;
	h *= k;
	return (uint32_t)(h >> 32);
}
