"""supabase/mega_tables.sql on a database set up the way Supabase sets one up.

Supabase has three NOLOGIN roles behind its REST API (anon, authenticated,
service_role) and default privileges that grant ALL on every new table in
"public" to each of them. Row level security holds back their SELECT,
INSERT, UPDATE and DELETE, but not TRUNCATE, REFERENCES or TRIGGER: the file
revokes those from anon and authenticated. Each test gets a fresh database
in the suite's cluster, with the roles and default privileges made first;
the roles are dropped again at the end of the module.
"""

import subprocess

import psycopg2
import pytest

from helpers import ROLE_RECIPE, SCHEMA

DB = "supabase_like"
API_ROLES = ["anon", "authenticated"]
TABLES = ["mega_generations", "mega_customers", "mega_admin"]
NEVER = ["TRUNCATE", "REFERENCES", "TRIGGER"]
GATED = ["SELECT", "INSERT", "UPDATE", "DELETE"]


@pytest.fixture(scope="module")
def supabase_roles(pg):
    for role, attrs in (("anon", ""), ("authenticated", ""), ("service_role", " BYPASSRLS")):
        pg.sql(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') "
               f"THEN CREATE ROLE {role} NOLOGIN NOINHERIT{attrs}; END IF; END $$")
    yield
    pg.sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.sql("DROP ROLE anon, authenticated, service_role")


@pytest.fixture
def db(pg, supabase_roles):
    """A connection (as the owner, postgres) to a fresh database with
    Supabase's default privileges, before the file is applied."""
    pg.sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.sql(f"CREATE DATABASE {DB}")
    conn = psycopg2.connect(f"host={pg.sockdir} port={pg.port} user=postgres dbname={DB}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                    "GRANT ALL ON TABLES TO anon, authenticated, service_role")
    yield conn
    conn.close()


def apply(pg):
    """psql -f mega_tables.sql, as an operator runs it; its output."""
    return subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", pg.sockdir, "-p", str(pg.port),
         "-U", "postgres", "-d", DB, "-f", SCHEMA],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout


def sql(conn, query, role=None):
    """QUERY's rows, run as ROLE (SET ROLE: the API roles cannot log in), or
    the first line of the error."""
    with conn.cursor() as cur:
        try:
            if role:
                cur.execute(f"SET ROLE {role}")
            cur.execute(query)
            return cur.fetchall() if cur.description else []
        except psycopg2.Error as e:
            return str(e).splitlines()[0]
        finally:
            cur.execute("RESET ROLE")


def privileges(conn, role, table):
    return {p for p in NEVER + GATED
            if sql(conn, f"SELECT has_table_privilege('{role}', 'public.{table}', '{p}')")
            == [(True,)]}


def seed(conn):
    sql(conn, "INSERT INTO mega_customers (mg_pass_id) VALUES ('p1')")
    sql(conn, "INSERT INTO mega_generations (mg_id, mg_record_type, mg_pass_id) "
              "VALUES ('g1', 'session', 'p1')")
    sql(conn, "INSERT INTO mega_admin (mg_id, mg_record_type, mg_actor_pass_id) "
              "VALUES ('a1', 'admin_audit', 'p1')")


def counts(conn):
    return [sql(conn, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES]


@pytest.mark.parametrize("role", API_ROLES)
@pytest.mark.parametrize("table", TABLES)
def test_api_roles_cannot_truncate(pg, db, role, table):
    """As anon (or authenticated), TRUNCATE ... CASCADE is refused and every
    row is still there."""
    out = apply(pg)
    assert "ERROR" not in out and "WARNING" not in out, out
    seed(db)
    got = sql(db, f"TRUNCATE {table} CASCADE", role)
    assert got == f"permission denied for table {table}", got
    assert counts(db) == [1, 1, 1]


@pytest.mark.parametrize("role", API_ROLES)
def test_api_roles_keep_only_what_rls_gates(pg, db, role):
    """What RLS holds back stays granted (a policy of the project's own may
    open it); the rest is gone. service_role keeps everything."""
    apply(pg)
    for table in TABLES:
        assert privileges(db, role, table) == set(GATED), table
        assert privileges(db, "service_role", table) == set(NEVER + GATED), table
    seed(db)
    assert sql(db, "SELECT count(*) FROM mega_customers", role) == [(0,)]
    got = sql(db, "INSERT INTO mega_customers (mg_pass_id) VALUES ('x')", role)
    assert "row-level security" in got, got


def test_rerun_revokes_what_was_granted_since_and_otherwise_changes_nothing(pg, db):
    """Tables made before this file revoked anything (or a grant made by hand)
    lose those privileges on the next run; a run with nothing to revoke does
    not touch the tables' catalog rows."""
    apply(pg)
    sql(db, "GRANT ALL ON mega_generations, mega_customers, mega_admin TO anon, authenticated")
    apply(pg)
    for table in TABLES:
        for role in API_ROLES:
            assert privileges(db, role, table) == set(GATED), (role, table)
    before = sql(db, "SELECT relname, xmin::text, relacl::text FROM pg_class "
                     "WHERE relname LIKE 'mega%' ORDER BY 1")
    apply(pg)
    assert sql(db, "SELECT relname, xmin::text, relacl::text FROM pg_class "
                   "WHERE relname LIKE 'mega%' ORDER BY 1") == before


def test_the_daemon_role_on_a_supabase_database(pg, db):
    """The role recipe on top: the daemon's role is none of the API roles and
    they get nothing of its policies."""
    apply(pg)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.sockdir,
                    "-p", str(pg.port), "-U", "postgres", "-d", DB, "-f", ROLE_RECIPE],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seed(db)
    for role in API_ROLES:
        assert sql(db, "SELECT count(*) FROM mega_generations", role) == [(0,)]
        assert sql(db, "TRUNCATE mega_customers CASCADE", role) == \
            "permission denied for table mega_customers"
    assert counts(db) == [1, 1, 1]
