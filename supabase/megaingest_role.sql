-- megaingest_role.sql: the least-privilege role megaingestd connects as.
--
-- Run it as the owner of the MEGA tables (on Supabase: the "postgres" role,
-- in the SQL editor or psql), after mega_tables.sql. With
-- postgres.apply_credits: true, run megaingest_credits.sql after it. Then
-- give the role a password and put it in postgres.conninfo:
--
--   ALTER ROLE megaingest PASSWORD '...';      -- or \password megaingest
--
-- What the daemon does, and what this grants for it (nothing more):
--   * COPY into a TEMP staging table: TEMPORARY on the database, USAGE on
--     schema public.
--   * mega_generations: INSERT ... ON CONFLICT (mg_id) DO UPDATE with
--     RETURNING, and a SELECT that compares staged rows with stored ones:
--     SELECT and INSERT, and UPDATE of the columns a merge sets (all but
--     mg_id, mg_record_type and mg_created_at).
--   * mega_customers, column by column: a stub row for a new pass id
--     (INSERT of mg_pass_id, mg_credits, mg_source_system, mg_last_active)
--     and raising mg_last_active (UPDATE of it; SELECT of mg_pass_id, the
--     ON CONFLICT key, and of mg_last_active, which the update compares).
--     No other column can be read or written: not the email, the names or
--     any other personal data, not the balance. megaingest_credits.sql
--     adds the balance and top-up columns for postgres.apply_credits.
--   * mega_admin: the same merge for admin_audit and admin_session rows:
--     SELECT, INSERT, and UPDATE of all but mg_id, mg_record_type and
--     mg_created_at.
--   * No DELETE, TRUNCATE, REFERENCES, TRIGGER; no DDL.
--   * Row level security stays enabled on all three tables. A role without
--     BYPASSRLS sees and writes nothing through RLS unless a policy lets it,
--     so each table gets SELECT, INSERT and UPDATE policies for this role
--     alone. Four of them hold the role to its job:
--       - mega_generations UPDATE: the new row may not be a
--         credit_transaction, so a credit_transaction row, once written,
--         cannot be changed (the merge never updates one; a replayed one is
--         left as it is). mg_record_type itself is not updatable.
--       - mega_customers INSERT: only a stub (mg_credits 0, mg_source_system
--         'megaingest'), so no customer is created with a balance.
--       - mega_admin INSERT: only admin_audit and admin_session rows; the
--         configuration rows (profile, runtime_config, app_config) are
--         neither written nor changed.
--       - mega_admin UPDATE: only admin_session rows, so an audit row, once
--         written, cannot be changed.
--     anon and authenticated still have no policy and see nothing.
--   * Not the tables' owner (the owner could ALTER, DROP, TRUNCATE, or
--     disable RLS) and not Supabase's service_role (BYPASSRLS and full access
--     to every table, also over the REST API): a stolen daemon password must
--     not be worth more than the daemon's own job.
--
-- Running it again sets exactly these privileges again (keeping the ones
-- megaingest_credits.sql added) and changes a policy only when it differs
-- from the above. GRANT and REVOKE take no lock on the tables; a policy
-- that has to change waits at most lock_timeout for its table's lock.
BEGIN;

SET LOCAL lock_timeout = '1s';

DO $$
DECLARE
	r pg_roles%ROWTYPE;
BEGIN
	SELECT * INTO r FROM pg_roles WHERE rolname = 'megaingest';
	IF NOT FOUND THEN
		CREATE ROLE megaingest LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
			NOREPLICATION NOBYPASSRLS;
	ELSIF r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb
			OR r.rolreplication OR NOT r.rolcanlogin THEN
		RAISE EXCEPTION 'role megaingest exists with other attributes than '
			'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; '
			'fix or drop it first';
	END IF;
	EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO megaingest',
		current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO megaingest;

-- Everything revoked, then granted again: the result is exact whatever an
-- earlier version of this file granted. REVOKE on a table also revokes its
-- column privileges, so the credit columns are noted first and kept.
DO $$
DECLARE
	credits boolean;
	tab text;
BEGIN
	SELECT EXISTS (SELECT 1 FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) x
			WHERE a.attrelid = 'public.mega_customers'::regclass
			  AND a.attname = 'mg_credits' AND x.privilege_type = 'UPDATE'
			  AND x.grantee = 'megaingest'::regrole)
		INTO credits;
	REVOKE ALL ON public.mega_generations, public.mega_customers, public.mega_admin
		FROM megaingest;

	-- The two tables the merge writes: every column but the key, the type
	-- and the creation time may be updated.
	FOREACH tab IN ARRAY ARRAY['mega_generations', 'mega_admin'] LOOP
		EXECUTE format('GRANT SELECT, INSERT ON public.%I TO megaingest', tab);
		EXECUTE (SELECT format('GRANT UPDATE (%s) ON public.%I TO megaingest',
				       string_agg(quote_ident(attname), ', ' ORDER BY attnum), tab)
			   FROM pg_attribute
			  WHERE attrelid = format('public.%I', tab)::regclass AND attnum > 0
			    AND NOT attisdropped
			    AND attname NOT IN ('mg_id', 'mg_record_type', 'mg_created_at'));
	END LOOP;

	GRANT SELECT (mg_pass_id, mg_last_active),
		INSERT (mg_pass_id, mg_credits, mg_source_system, mg_last_active),
		UPDATE (mg_last_active)
		ON public.mega_customers TO megaingest;
	IF credits THEN
		GRANT SELECT (mg_credits, mg_last_topup_at, mg_topup_source),
			UPDATE (mg_credits, mg_last_topup_at, mg_topup_source)
			ON public.mega_customers TO megaingest;
	END IF;
END
$$;

-- One policy per command and table, created when missing and altered only
-- when its expressions differ (as PostgreSQL prints them back), so running
-- this again takes no lock on a live table.
DO $$
DECLARE
	p record;
	cur record;
BEGIN
	FOR p IN SELECT * FROM (VALUES
		('mega_generations', 'SELECT', 'true', NULL),
		('mega_generations', 'INSERT', NULL, 'true'),
		('mega_generations', 'UPDATE', 'true',
			'(mg_record_type <> ''credit_transaction''::text)'),
		('mega_customers', 'SELECT', 'true', NULL),
		('mega_customers', 'INSERT', NULL,
			'((mg_credits = 0) AND (mg_source_system = ''megaingest''::text))'),
		('mega_customers', 'UPDATE', 'true', 'true'),
		('mega_admin', 'SELECT', 'true', NULL),
		('mega_admin', 'INSERT', NULL,
			'(mg_record_type = ANY (ARRAY[''admin_audit''::text, ''admin_session''::text]))'),
		('mega_admin', 'UPDATE', 'true', '(mg_record_type = ''admin_session''::text)'))
		AS v(tab, op, qual, chk)
	LOOP
		SELECT pg_get_expr(polqual, polrelid) AS qual,
		       pg_get_expr(polwithcheck, polrelid) AS chk INTO cur
		  FROM pg_policy
		 WHERE polrelid = format('public.%I', p.tab)::regclass
		   AND polname = 'megaingest_' || lower(p.op);
		IF NOT FOUND THEN
			EXECUTE format('CREATE POLICY %I ON public.%I FOR %s TO megaingest%s%s',
				'megaingest_' || lower(p.op), p.tab, p.op,
				' USING (' || p.qual || ')', ' WITH CHECK (' || p.chk || ')');
		ELSIF cur.qual IS DISTINCT FROM p.qual OR cur.chk IS DISTINCT FROM p.chk THEN
			EXECUTE format('ALTER POLICY %I ON public.%I TO megaingest%s%s',
				'megaingest_' || lower(p.op), p.tab,
				' USING (' || p.qual || ')', ' WITH CHECK (' || p.chk || ')');
		END IF;
	END LOOP;
END
$$;

COMMIT;
