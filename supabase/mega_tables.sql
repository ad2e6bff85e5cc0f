-- mega_tables.sql: the three MEGA tables (mega_customers, mega_generations,
-- mega_admin) that megaingestd writes into, exactly as the seed document
-- MEGA_TABLES.md describes them: same columns, same types, same order.
--
-- What this adds on top of the column list:
--   * primary keys (mg_pass_id; mg_id for the two ledgers);
--   * foreign keys from mega_generations.mg_pass_id and
--     mega_admin.mg_actor_pass_id to mega_customers(mg_pass_id);
--   * a CHECK on mg_record_type in each ledger table (NOT NULL there);
--   * defaults: now() for mg_created_at / mg_updated_at, '{}' for the JSONB
--     buckets, 0 for mg_credits, 3 for mg_topup_default_packs;
--   * indexes for Pass ID lookups;
--   * row level security on all three tables. Supabase exposes tables in
--     "public" through its REST API; with RLS on and no policy, the anon and
--     authenticated roles see nothing. megaingestd connects as a role that
--     owns the tables or bypasses RLS (the table owner, or a service role).
--
-- Idempotent: every statement is CREATE ... IF NOT EXISTS, and constraints
-- are declared inline in CREATE TABLE, so running the file again changes
-- nothing (the test suite checks that a schema dump is identical before and
-- after a second run). An existing table of the same name is left as it is.
--
-- Plain SQL, no psql meta-commands: it runs unchanged with
--     psql -v ON_ERROR_STOP=1 -f supabase/mega_tables.sql
-- and pasted into Supabase's SQL editor. One transaction: all or nothing.

BEGIN;

-- "relation already exists, skipping" notices on a rerun are expected.
SET LOCAL client_min_messages = warning;

-- One row per customer, keyed by Pass ID. megaingestd creates stub rows
-- (mg_source_system = 'megaingest') for Pass IDs it has not seen yet.
CREATE TABLE IF NOT EXISTS public.mega_customers (
	mg_pass_id                        TEXT NOT NULL,
	mg_shopify_customer_id            TEXT,
	mg_user_id                        UUID,
	mg_email                          TEXT,
	mg_first_name                     TEXT,
	mg_last_name                      TEXT,
	mg_display_name                   TEXT,
	mg_locale                         TEXT,
	mg_timezone                       TEXT,
	mg_marketing_opt_in               BOOL,
	mg_product_updates_opt_in         BOOL,
	mg_credits                        INT NOT NULL DEFAULT 0,
	mg_expires_at                     TIMESTAMPTZ,
	mg_last_active                    TIMESTAMPTZ,
	mg_disabled                       BOOL,
	mg_verified_email                 BOOL,
	mg_verified_google                BOOL,
	mg_verified_apple                 BOOL,
	mg_verified_any                   BOOL,
	mg_verification_method            TEXT,
	mg_verification_at                TIMESTAMPTZ,
	mg_verification_keynumber         TEXT,
	mg_topup_default_packs            INT DEFAULT 3,
	mg_auto_topup_enabled             BOOL,
	mg_auto_topup_monthly_limit_packs INT,
	mg_last_topup_at                  TIMESTAMPTZ,
	mg_topup_source                   TEXT,
	mg_meta                           JSONB NOT NULL DEFAULT '{}'::jsonb,
	mg_source_system                  TEXT,
	mg_deleted_at                     TIMESTAMPTZ,
	mg_created_at                     TIMESTAMPTZ NOT NULL DEFAULT now(),
	mg_updated_at                     TIMESTAMPTZ NOT NULL DEFAULT now(),
	CONSTRAINT mega_customers_pkey PRIMARY KEY (mg_pass_id)
);

-- The event/artifact ledger: sessions, generations, feedback and credit
-- transactions, one row per mg_id (the idempotency key of megaingestd).
CREATE TABLE IF NOT EXISTS public.mega_generations (
	mg_id             TEXT NOT NULL,
	mg_record_type    TEXT NOT NULL,
	mg_pass_id        TEXT,
	mg_session_id     TEXT,
	mg_generation_id  TEXT,
	mg_platform       TEXT,
	mg_title          TEXT,
	mg_type           TEXT,
	mg_prompt         TEXT,
	mg_output_url     TEXT,
	mg_output_key     TEXT,
	mg_provider       TEXT,
	mg_model          TEXT,
	mg_latency_ms     INT,
	mg_input_chars    INT,
	mg_output_chars   INT,
	mg_input_tokens   INT,
	mg_output_tokens  INT,
	mg_content_type   TEXT,
	mg_status         TEXT,
	mg_error          TEXT,
	mg_result_type    TEXT,
	mg_comment        TEXT,
	mg_image_url      TEXT,
	mg_video_url      TEXT,
	mg_delta          INT,
	mg_reason         TEXT,
	mg_source         TEXT,
	mg_ref_type       TEXT,
	mg_ref_id         TEXT,
	mg_client_version TEXT,
	mg_os             TEXT,
	mg_browser        TEXT,
	mg_device         TEXT,
	mg_meta           JSONB NOT NULL DEFAULT '{}'::jsonb,
	mg_source_system  TEXT,
	mg_deleted_at     TIMESTAMPTZ,
	mg_created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
	mg_updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
	CONSTRAINT mega_generations_pkey PRIMARY KEY (mg_id),
	CONSTRAINT mega_generations_pass_id_fkey FOREIGN KEY (mg_pass_id)
		REFERENCES public.mega_customers (mg_pass_id),
	CONSTRAINT mega_generations_record_type_check CHECK (mg_record_type IN
		('generation', 'session', 'feedback', 'credit_transaction'))
);

-- Admin sessions, audit trail, profile mappings and configuration entries.
-- mg_value holds an app config value of any JSON type, so it has no default.
CREATE TABLE IF NOT EXISTS public.mega_admin (
	mg_id                  TEXT NOT NULL,
	mg_record_type         TEXT NOT NULL,
	mg_actor_pass_id       TEXT,
	mg_session_hash        TEXT,
	mg_user_id             UUID,
	mg_email               TEXT,
	mg_ip                  TEXT,
	mg_user_agent          TEXT,
	mg_first_seen_at       TIMESTAMPTZ,
	mg_last_seen_at        TIMESTAMPTZ,
	mg_profile_id          UUID,
	mg_shopify_customer_id TEXT,
	mg_action              TEXT,
	mg_route               TEXT,
	mg_method              TEXT,
	mg_status              INT,
	mg_detail              JSONB DEFAULT '{}'::jsonb,
	mg_runtime_id          INT,
	mg_runtime_flat        JSONB DEFAULT '{}'::jsonb,
	mg_key                 TEXT,
	mg_value               JSONB,
	mg_meta                JSONB NOT NULL DEFAULT '{}'::jsonb,
	mg_source_system       TEXT,
	mg_deleted_at          TIMESTAMPTZ,
	mg_created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
	mg_updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
	CONSTRAINT mega_admin_pkey PRIMARY KEY (mg_id),
	CONSTRAINT mega_admin_actor_pass_id_fkey FOREIGN KEY (mg_actor_pass_id)
		REFERENCES public.mega_customers (mg_pass_id),
	CONSTRAINT mega_admin_record_type_check CHECK (mg_record_type IN
		('admin_session', 'admin_audit', 'profile', 'runtime_config', 'app_config'))
);

-- Pass ID lookups: find a customer from any of its external ids.
CREATE INDEX IF NOT EXISTS mega_customers_shopify_customer_id_idx
	ON public.mega_customers (mg_shopify_customer_id);
CREATE INDEX IF NOT EXISTS mega_customers_email_idx
	ON public.mega_customers (mg_email);
CREATE INDEX IF NOT EXISTS mega_customers_user_id_idx
	ON public.mega_customers (mg_user_id);

-- A customer's history in time order; a session's and a generation's rows.
-- The first one also serves the foreign key (deleting a customer).
CREATE INDEX IF NOT EXISTS mega_generations_pass_id_created_at_idx
	ON public.mega_generations (mg_pass_id, mg_created_at);
CREATE INDEX IF NOT EXISTS mega_generations_session_id_idx
	ON public.mega_generations (mg_session_id);
CREATE INDEX IF NOT EXISTS mega_generations_generation_id_idx
	ON public.mega_generations (mg_generation_id);

CREATE INDEX IF NOT EXISTS mega_admin_actor_pass_id_idx
	ON public.mega_admin (mg_actor_pass_id);
CREATE INDEX IF NOT EXISTS mega_admin_record_type_idx
	ON public.mega_admin (mg_record_type);

-- Row level security, enabled only where it is off: ALTER TABLE takes an
-- ACCESS EXCLUSIVE lock and rewrites the catalog row even when RLS is already
-- on, which a rerun against a busy ledger should not do.
DO $$
DECLARE
	t regclass;
BEGIN
	FOR t IN SELECT c.oid::regclass FROM pg_class c
		 WHERE c.oid IN ('public.mega_customers'::regclass,
				 'public.mega_generations'::regclass,
				 'public.mega_admin'::regclass)
		   AND NOT c.relrowsecurity
	LOOP
		EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
	END LOOP;
END
$$;

COMMIT;
