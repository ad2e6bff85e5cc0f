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
--     authenticated roles see nothing. megaingestd connects as the role of
--     megaingest_role.sql, which gets policies of its own;
--   * where Supabase's anon and authenticated roles exist, the privileges
--     its default privileges hand them on every new table and that RLS does
--     not gate are revoked: TRUNCATE (empties a table whatever the
--     policies say), REFERENCES and TRIGGER. Their SELECT, INSERT, UPDATE
--     and DELETE stay, held back by RLS until a policy of yours opens them.
--     On plain PostgreSQL, without those roles, this step does nothing.
--
-- Idempotent and safe to run again on a live ledger: tables are created
-- IF NOT EXISTS (which takes no lock on an existing one), and every other
-- step looks in the catalog first and runs only when there is something to
-- change. A CREATE INDEX IF NOT EXISTS or an ALTER TABLE would take a lock
-- that queues every writer behind it even when it then does nothing. So a
-- second run changes nothing, not even a catalog row, and no writer waits
-- for it (the test suite checks both, the latter with the daemon writing).
-- A step that does have something to change on a busy ledger (an index
-- dropped by hand) waits at most lock_timeout for its lock and fails rather
-- than queue writers behind it: run the file again at a quieter moment.
-- An existing table of the same name is left as it is.
--
-- Plain SQL, no psql meta-commands: it runs unchanged with
--     psql -v ON_ERROR_STOP=1 -f supabase/mega_tables.sql
-- and pasted into Supabase's SQL editor. One transaction: all or nothing.

BEGIN;

-- "relation already exists, skipping" notices on a rerun are expected.
SET LOCAL client_min_messages = warning;
SET LOCAL lock_timeout = '1s';

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

-- Indexes, each created only when no relation of its name exists: what
-- CREATE INDEX IF NOT EXISTS decides too, but only after it has taken a
-- SHARE lock on the table, which waits for every writer and blocks the next.
--   * Pass ID lookups: find a customer from any of its external ids.
--   * A customer's history in time order (also serves the foreign key when
--     a customer is deleted); a session's and a generation's rows.
--   * An admin actor's rows; admin rows of one type.
DO $$
DECLARE
	ix text[];
BEGIN
	FOREACH ix SLICE 1 IN ARRAY ARRAY[
		['mega_customers_shopify_customer_id_idx', 'mega_customers', 'mg_shopify_customer_id'],
		['mega_customers_email_idx', 'mega_customers', 'mg_email'],
		['mega_customers_user_id_idx', 'mega_customers', 'mg_user_id'],
		['mega_generations_pass_id_created_at_idx', 'mega_generations', 'mg_pass_id, mg_created_at'],
		['mega_generations_session_id_idx', 'mega_generations', 'mg_session_id'],
		['mega_generations_generation_id_idx', 'mega_generations', 'mg_generation_id'],
		['mega_admin_actor_pass_id_idx', 'mega_admin', 'mg_actor_pass_id'],
		['mega_admin_record_type_idx', 'mega_admin', 'mg_record_type']]
	LOOP
		IF to_regclass(format('public.%I', ix[1])) IS NULL THEN
			EXECUTE format('CREATE INDEX %I ON public.%I (%s)', ix[1], ix[2], ix[3]);
		END IF;
	END LOOP;
END
$$;

-- Row level security, enabled only where it is off: ALTER TABLE takes an
-- ACCESS EXCLUSIVE lock and rewrites the catalog row even when RLS is already
-- on, which a rerun against a busy ledger must not do.
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

-- Supabase's anon and authenticated roles: no TRUNCATE, REFERENCES or
-- TRIGGER, revoked only where granted: GRANT and REVOKE take no table lock,
-- but checking first keeps a rerun from touching the catalog at all.
-- A grant this role cannot revoke (made by another grantor) is reported.
DO $$
DECLARE
	g record;
BEGIN
	FOR g IN SELECT DISTINCT c.oid::regclass AS tab, a.grantee::regrole AS who
		   FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
		  WHERE c.oid IN ('public.mega_customers'::regclass,
				  'public.mega_generations'::regclass,
				  'public.mega_admin'::regclass)
		    AND a.grantee IN (SELECT oid FROM pg_roles
				      WHERE rolname IN ('anon', 'authenticated'))
		    AND a.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')
	LOOP
		EXECUTE format('REVOKE TRUNCATE, REFERENCES, TRIGGER ON %s FROM %s',
			g.tab, g.who);
		IF EXISTS (SELECT 1 FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
			    WHERE c.oid = g.tab AND a.grantee = g.who
			      AND a.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')) THEN
			RAISE WARNING '% still holds TRUNCATE, REFERENCES or TRIGGER on %: '
				'granted by another role, which must revoke it', g.who, g.tab;
		END IF;
	END LOOP;
END
$$;

COMMIT;
