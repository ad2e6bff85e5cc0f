/*
 * writer_known.c: the pass ids a writer knows to exist in mega_customers.
 *
 * DESIGN
 * ------
 * Every pass id of a committed batch exists: it did before, or the batch
 * created its stub. The daemon never deletes customers, so a later batch
 * whose pass ids are all known needs no stub statement, which saves
 * PostgreSQL a GROUP BY over the batch and an index probe per customer
 * (about 5% of a batch with the bench's 1,000 customers).
 *
 * Should a customer be deleted behind the daemon's back, the merge fails
 * with foreign_key_violation (23503); writer.c then empties this set and
 * writes the batch again with the stub statement. That is also why storing
 * 64-bit hashes instead of the ids is safe: a collision could only skip a
 * stub that was needed, and that path repairs it.
 *
 * Open addressing with linear probing, at most half full; when an insert
 * would pass that, the set is emptied and refills from later batches.
 * Writer thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "writer_private.h"

/* FNV-1a of a NUL-terminated pass id; never 0, which marks a free slot. */
static uint64_t writer_known_hash(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
	return h ? h : 1;
}

int writer_known_init(struct writer_known *k)
{
	k->slots = calloc(WRITER_KNOWN_SLOTS, sizeof(*k->slots));
	k->count = 0;
	return k->slots ? 0 : -1;
}

void writer_known_free(struct writer_known *k)
{
	free(k->slots);
	k->slots = NULL;
}

void writer_known_clear(struct writer_known *k)
{
	memset(k->slots, 0, WRITER_KNOWN_SLOTS * sizeof(*k->slots));
	k->count = 0;
}

/* The slot holding H, or the free slot where it would go. */
static size_t writer_known_slot(const struct writer_known *k, uint64_t h)
{
	size_t i = (size_t)h & (WRITER_KNOWN_SLOTS - 1);

	while (k->slots[i] && k->slots[i] != h)
		i = (i + 1) & (WRITER_KNOWN_SLOTS - 1);
	return i;
}

bool writer_known_all(struct writer *w, struct record **recs, size_t n)
{
	bool all = true;

	for (size_t i = 0; i < n; i++) {
		const char *p = record_get(recs[i], record_table(recs[i])->col_customer);

		w->pass_hash[i] = p ? writer_known_hash(p) : 0;
		if (all && p && !w->known.slots[writer_known_slot(&w->known, w->pass_hash[i])])
			all = false;
	}
	return all;
}

void writer_known_add(struct writer *w, size_t n)
{
	struct writer_known *k = &w->known;

	for (size_t i = 0; i < n; i++) {
		size_t s;

		if (!w->pass_hash[i])
			continue;
		s = writer_known_slot(k, w->pass_hash[i]);
		if (k->slots[s])
			continue;
		if (k->count + 1 > WRITER_KNOWN_SLOTS / 2) {
			writer_known_clear(k);
			s = writer_known_slot(k, w->pass_hash[i]);
		}
		k->slots[s] = w->pass_hash[i];
		k->count++;
	}
}
