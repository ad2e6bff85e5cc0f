/*
 * table_admin.c: mega_admin described as data (see table.h).
 *
 * Admin activity: an admin_audit row records one action and is never
 * changed (like a credit transaction); an admin_session row is updated
 * as the session goes on: mg_first_seen_at is set once, mg_last_seen_at
 * only rises, the other columns take the newest value present.
 * mg_actor_pass_id, when set, names a customer the admin acted on and
 * gets the same stub treatment as mg_generations.mg_pass_id. The table's
 * other record types (profile, runtime_config, app_config) are
 * configuration, not events: see table.c.
 */
#include "table.h"

#define T TABLE_TYPE_TEXT
#define I TABLE_TYPE_INT
#define TS TABLE_TYPE_TIMESTAMPTZ
#define J TABLE_TYPE_JSONB
#define U TABLE_TYPE_UUID

static const struct table_column table_admin_cols[TABLE_ADMIN_COUNT] = {
	[TABLE_ADMIN_ID]                  = { "mg_id",                  T,  256,  TABLE_MERGE_KEY, NULL },
	[TABLE_ADMIN_RECORD_TYPE]         = { "mg_record_type",         T,  256,  TABLE_MERGE_SET_ONCE, NULL },
	[TABLE_ADMIN_ACTOR_PASS_ID]       = { "mg_actor_pass_id",       T,  256,  TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_SESSION_HASH]        = { "mg_session_hash",        T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_USER_ID]             = { "mg_user_id",             U,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_EMAIL]               = { "mg_email",               T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_IP]                  = { "mg_ip",                  T,  256,  TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_USER_AGENT]          = { "mg_user_agent",          T,  4096, TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_FIRST_SEEN_AT]       = { "mg_first_seen_at",       TS, 0,    TABLE_MERGE_SET_ONCE, NULL },
	[TABLE_ADMIN_LAST_SEEN_AT]        = { "mg_last_seen_at",        TS, 0,    TABLE_MERGE_RISE, NULL },
	[TABLE_ADMIN_PROFILE_ID]          = { "mg_profile_id",          U,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_SHOPIFY_CUSTOMER_ID] = { "mg_shopify_customer_id", T,  256,  TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_ACTION]              = { "mg_action",              T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_ROUTE]               = { "mg_route",               T,  4096, TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_METHOD]              = { "mg_method",              T,  64,   TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_STATUS]              = { "mg_status",              I,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_DETAIL]              = { "mg_detail",              J,  0,    TABLE_MERGE_REPLACE, "'{}'::jsonb" },
	[TABLE_ADMIN_RUNTIME_ID]          = { "mg_runtime_id",          I,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_RUNTIME_FLAT]        = { "mg_runtime_flat",        J,  0,    TABLE_MERGE_REPLACE, "'{}'::jsonb" },
	[TABLE_ADMIN_KEY]                 = { "mg_key",                 T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_VALUE]               = { "mg_value",               J,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_META]                = { "mg_meta",                J,  0,    TABLE_MERGE_JSON, "'{}'::jsonb" },
	[TABLE_ADMIN_SOURCE_SYSTEM]       = { "mg_source_system",       T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_DELETED_AT]          = { "mg_deleted_at",          TS, 0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_ADMIN_CREATED_AT]          = { "mg_created_at",          TS, 0,    TABLE_MERGE_SET_ONCE, "now()" },
};

static const char *const table_admin_types[] = { "admin_audit", "admin_session" };

static const char *const table_admin_immutable[] = { "admin_audit" };

const struct table table_admin = {
	.name = "mega_admin",
	.label = "admin",
	.cols = table_admin_cols,
	.ncols = TABLE_ADMIN_COUNT,
	.types = table_admin_types,
	.ntypes = 2,
	.immutable = table_admin_immutable,
	.nimmutable = 1,
	.col_customer = TABLE_ADMIN_ACTOR_PASS_ID,
	.col_meta = TABLE_ADMIN_META,
	.col_created = TABLE_ADMIN_CREATED_AT,
	.credits_sql = NULL,
};
