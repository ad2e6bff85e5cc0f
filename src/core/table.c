/*
 * table.c: the list of output tables and what is derived from it once:
 * record type -> table, the fingerprints, the configured names.
 *
 * The descriptions themselves are data in table_<name>.c. Record types of
 * mega_admin that are configuration rather than events are refused here
 * with a reason: they are edited by people, not streamed by apps, and an
 * event stream must not overwrite them.
 */
#include <stdio.h>
#include <string.h>

#include "table.h"

const struct table *const table_list[TABLE_COUNT] = { &table_generations, &table_admin };

/* postgres.table renames mega_generations; set before the writers start
 * (config keeps such a name under 128 bytes). */
static char table_names[TABLE_COUNT][128];

static const char *const table_refused[] = { "profile", "runtime_config", "app_config" };

static const char *const table_type_words[TABLE_TYPE_COUNT] = {
	"text", "int4", "timestamptz", "jsonb", "uuid"
};

const char *table_refused_why(const char *type, size_t len)
{
	for (size_t i = 0; i < sizeof(table_refused) / sizeof(table_refused[0]); i++)
		if (strlen(table_refused[i]) == len && memcmp(table_refused[i], type, len) == 0)
			return "is configuration, not an event: megaingestd does not write "
			       "profile, runtime_config or app_config rows of mega_admin "
			       "(change them with SQL)";
	return NULL;
}

int table_for_type(const char *type, size_t len)
{
	for (int t = 0; t < TABLE_COUNT; t++)
		for (int i = 0; i < table_list[t]->ntypes; i++)
			if (strlen(table_list[t]->types[i]) == len &&
			    memcmp(table_list[t]->types[i], type, len) == 0)
				return t;
	return -1;
}

const char *table_types_text(void)
{
	return "generation, session, feedback, credit_transaction, admin_audit or admin_session";
}

bool table_type_immutable(const struct table *t, const char *type)
{
	for (int i = 0; i < t->nimmutable; i++)
		if (strcmp(t->immutable[i], type) == 0)
			return true;
	return false;
}

static uint32_t table_fnv(uint32_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return (h ^ ' ') * 16777619u;
}

uint32_t table_columns_fingerprint(const struct table *t)
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < t->ncols; i++) {
		h = table_fnv(h, t->cols[i].name);
		h = table_fnv(h, table_type_words[t->cols[i].type]);
	}
	return h;
}

uint32_t table_fingerprint(void)
{
	uint32_t h = 2166136261u;

	for (int t = 0; t < TABLE_COUNT; t++) {
		h = table_fnv(h, table_list[t]->label);
		h ^= table_columns_fingerprint(table_list[t]);
		h *= 16777619u;
	}
	return h;
}

void table_set_name(int index, const char *name)
{
	if (index >= 0 && index < TABLE_COUNT)
		snprintf(table_names[index], sizeof(table_names[index]), "%s", name ? name : "");
}

const char *table_name(int index)
{
	return table_names[index][0] ? table_names[index] : table_list[index]->name;
}

const char *table_type_word(enum table_type type)
{
	return (unsigned)type < TABLE_TYPE_COUNT ? table_type_words[type] : "text";
}
