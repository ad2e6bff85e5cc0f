-- megaingest_role.sql: the least-privilege role megaingestd connects as.
--
-- Run it as the owner of the MEGA tables (on Supabase: the "postgres" role,
-- in the SQL editor or psql), after mega_tables.sql. Running it again
-- changes nothing. Then give the role a password and put it in
-- postgres.conninfo:
--
--   ALTER ROLE megaingest PASSWORD '...';      -- or \password megaingest
--
-- What the daemon does, and what this grants for it:
--   * COPY into a session TEMP table, then INSERT ... ON CONFLICT DO UPDATE
--     into mega_generations and mega_customers (stub customers, last
--     activity, credit balances with postgres.apply_credits), with RETURNING:
--     TEMPORARY on the database, USAGE on schema public, and SELECT, INSERT,
--     UPDATE on exactly those two tables. No DELETE, TRUNCATE, REFERENCES,
--     TRIGGER; nothing at all on mega_admin; no DDL.
--   * Row level security stays enabled on all three tables. A role without
--     BYPASSRLS sees and writes nothing through RLS unless a policy lets it,
--     so each of the two tables gets SELECT, INSERT and UPDATE policies for
--     this role alone (USING/WITH CHECK true: the daemon writes any row it
--     is sent). anon and authenticated still have no policy and see nothing.
--   * Not the tables' owner (the owner could ALTER, DROP, TRUNCATE, or
--     disable RLS) and not Supabase's service_role (BYPASSRLS and full access
--     to every table, also over the REST API): a stolen daemon password must
--     not be worth more than the daemon's own job.
BEGIN;

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

REVOKE ALL ON public.mega_generations, public.mega_customers, public.mega_admin
	FROM megaingest;
GRANT SELECT, INSERT, UPDATE ON public.mega_generations, public.mega_customers
	TO megaingest;

-- One policy per command and table, created when missing (never dropped and
-- recreated, so running this again takes no lock on a live table).
DO $$
DECLARE
	t text;
	op text;
BEGIN
	FOREACH t IN ARRAY ARRAY['mega_generations', 'mega_customers'] LOOP
		FOREACH op IN ARRAY ARRAY['SELECT', 'INSERT', 'UPDATE'] LOOP
			IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'public'
					AND tablename = t AND policyname = 'megaingest_' || lower(op)) THEN
				EXECUTE format('CREATE POLICY %I ON public.%I FOR %s TO megaingest %s',
					'megaingest_' || lower(op), t, op, CASE op
						WHEN 'SELECT' THEN 'USING (true)'
						WHEN 'INSERT' THEN 'WITH CHECK (true)'
						ELSE 'USING (true) WITH CHECK (true)' END);
			END IF;
		END LOOP;
	END LOOP;
END
$$;

COMMIT;
