/*
 * table_generations.c: mega_generations described as data (see table.h).
 *
 * The ledger of app activity: generations, sessions, feedback and credit
 * transactions, one row per mg_id. Lifecycle updates of a generation merge
 * into its row (mg_status never goes back to 'pending'); a credit
 * transaction is written once and never changed.
 */
#include "table.h"

#define T TABLE_TYPE_TEXT
#define I TABLE_TYPE_INT
#define TS TABLE_TYPE_TIMESTAMPTZ
#define J TABLE_TYPE_JSONB

static const struct table_column table_gen_cols[TABLE_GEN_COUNT] = {
	[TABLE_GEN_ID]             = { "mg_id",             T,  256,  TABLE_MERGE_KEY, NULL },
	[TABLE_GEN_RECORD_TYPE]    = { "mg_record_type",    T,  256,  TABLE_MERGE_SET_ONCE, NULL },
	[TABLE_GEN_PASS_ID]        = { "mg_pass_id",        T,  256,  TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_SESSION_ID]     = { "mg_session_id",     T,  256,  TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_GENERATION_ID]  = { "mg_generation_id",  T,  256,  TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_PLATFORM]       = { "mg_platform",       T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_TITLE]          = { "mg_title",          T,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_TYPE]           = { "mg_type",           T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_PROMPT]         = { "mg_prompt",         T,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_OUTPUT_URL]     = { "mg_output_url",     T,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_OUTPUT_KEY]     = { "mg_output_key",     T,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_PROVIDER]       = { "mg_provider",       T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_MODEL]          = { "mg_model",          T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_LATENCY_MS]     = { "mg_latency_ms",     I,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_INPUT_CHARS]    = { "mg_input_chars",    I,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_OUTPUT_CHARS]   = { "mg_output_chars",   I,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_INPUT_TOKENS]   = { "mg_input_tokens",   I,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_OUTPUT_TOKENS]  = { "mg_output_tokens",  I,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_CONTENT_TYPE]   = { "mg_content_type",   T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_STATUS]         = { "mg_status",         T,  1024, TABLE_MERGE_STATUS, NULL },
	[TABLE_GEN_ERROR]          = { "mg_error",          T,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_RESULT_TYPE]    = { "mg_result_type",    T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_COMMENT]        = { "mg_comment",        T,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_IMAGE_URL]      = { "mg_image_url",      T,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_VIDEO_URL]      = { "mg_video_url",      T,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_DELTA]          = { "mg_delta",          I,  0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_REASON]         = { "mg_reason",         T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_SOURCE]         = { "mg_source",         T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_REF_TYPE]       = { "mg_ref_type",       T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_REF_ID]         = { "mg_ref_id",         T,  256,  TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_CLIENT_VERSION] = { "mg_client_version", T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_OS]             = { "mg_os",             T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_BROWSER]        = { "mg_browser",        T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_DEVICE]         = { "mg_device",         T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_META]           = { "mg_meta",           J,  0,    TABLE_MERGE_JSON, "'{}'::jsonb" },
	[TABLE_GEN_SOURCE_SYSTEM]  = { "mg_source_system",  T,  1024, TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_DELETED_AT]     = { "mg_deleted_at",     TS, 0,    TABLE_MERGE_REPLACE, NULL },
	[TABLE_GEN_CREATED_AT]     = { "mg_created_at",     TS, 0,    TABLE_MERGE_SET_ONCE, "now()" },
};

static const char *const table_gen_types[] = {
	"generation", "session", "feedback", "credit_transaction",
};

static const char *const table_gen_immutable[] = { "credit_transaction" };

/*
 * postgres.apply_credits: appended to the merge, which then returns the
 * rows it inserted (xmax = 0). Those that are credit_transactions move
 * their customer's balance, once per mg_id however often the event is
 * retried. A top-up (mg_delta > 0 and mg_reason 'topup') also raises
 * mg_last_topup_at and sets mg_topup_source from the newest top-up of the
 * batch. The statement returns the number of rows the merge inserted or
 * changed, as the plain INSERT's command tag does.
 */
static const char table_gen_credits[] =
	" RETURNING mg_pass_id, mg_delta, mg_record_type, mg_reason, mg_source, mg_created_at, "
	"(xmax = 0) AS inserted), "
	"credit AS (UPDATE mega_customers c SET mg_credits = c.mg_credits + d.delta, "
	"mg_last_topup_at = CASE WHEN d.topup_at > c.mg_last_topup_at OR "
	"(c.mg_last_topup_at IS NULL AND d.topup_at IS NOT NULL) THEN d.topup_at "
	"ELSE c.mg_last_topup_at END, "
	"mg_topup_source = CASE WHEN d.topup_at > c.mg_last_topup_at OR "
	"(c.mg_last_topup_at IS NULL AND d.topup_at IS NOT NULL) THEN d.topup_source "
	"ELSE c.mg_topup_source END "
	"FROM (SELECT mg_pass_id, sum(mg_delta)::int4 AS delta, "
	"max(mg_created_at) FILTER (WHERE mg_delta > 0 AND mg_reason = 'topup') AS topup_at, "
	"(array_agg(mg_source ORDER BY mg_created_at DESC) "
	"FILTER (WHERE mg_delta > 0 AND mg_reason = 'topup'))[1] AS topup_source "
	"FROM ins WHERE inserted AND mg_record_type = 'credit_transaction' "
	"AND mg_delta IS NOT NULL AND mg_pass_id IS NOT NULL GROUP BY 1) d "
	"WHERE c.mg_pass_id = d.mg_pass_id) "
	"SELECT count(*) FROM ins";

const struct table table_generations = {
	.name = "mega_generations",
	.label = "generations",
	.cols = table_gen_cols,
	.ncols = TABLE_GEN_COUNT,
	.types = table_gen_types,
	.ntypes = sizeof(table_gen_types) / sizeof(table_gen_types[0]),
	.immutable = table_gen_immutable,
	.nimmutable = 1,
	.col_customer = TABLE_GEN_PASS_ID,
	.col_meta = TABLE_GEN_META,
	.col_created = TABLE_GEN_CREATED_AT,
	.credits_sql = table_gen_credits,
};
