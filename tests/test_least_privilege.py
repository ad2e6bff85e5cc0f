"""Least privilege: the README's role recipe (supabase/megaingest_role.sql).

The pg fixture applies the recipe to the test cluster and every daemon of
the integration suite connects as that role (helpers.DAEMON_ROLE; set
MEGAINGEST_PG_ROLE=postgres to run the suite as the superuser instead), so
the whole suite is the proof that the role is enough. The tests here check
that it is no more than enough, and that row level security stays on.
"""

import os
import re

import psycopg2
import pytest

import helpers
from helpers import SRCDIR, uuid7

ROLE = "megaingest"
RECIPE = os.path.join(SRCDIR, "supabase", "megaingest_role.sql")
TABLES = ["mega_generations", "mega_customers", "mega_admin"]
TABLE_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]


def as_role(pg, role=ROLE):
    conn = psycopg2.connect(f"host={pg.sockdir} port={pg.port} user={role} dbname=postgres")
    conn.autocommit = True
    return conn


def run_as(pg, sql, role=ROLE):
    """Run SQL as ROLE; rows, or the error message."""
    conn = as_role(pg, role)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []
    except psycopg2.Error as e:
        return str(e).splitlines()[0]
    finally:
        conn.close()


def test_the_suite_runs_the_daemon_as_the_role():
    """Unless overridden on purpose, every daemon of the suite uses the role."""
    if os.environ.get("MEGAINGEST_PG_ROLE", ROLE) != ROLE:
        pytest.skip("MEGAINGEST_PG_ROLE overrides the daemon's role for this run")
    assert helpers.DAEMON_ROLE == ROLE


def test_daemon_connects_as_the_role(daemon, pg):
    mg_id = uuid7()
    daemon.send_msgpack({"mg_id": mg_id, "mg_record_type": "session", "mg_pass_id": "p-lp"})
    daemon.wait_rows(1, "mg_id = %s", (mg_id,))
    users = {r[0] for r in pg.sql("SELECT usename FROM pg_stat_activity "
                                  "WHERE backend_type = 'client backend' AND usename <> 'postgres'")}
    assert users == {helpers.DAEMON_ROLE} or helpers.DAEMON_ROLE == "postgres", users
    assert pg.count("mg_id = %s", (mg_id,)) == 1
    assert pg.value("SELECT count(*) FROM mega_customers WHERE mg_pass_id = 'p-lp'") == 1


def test_role_attributes(pg):
    row = pg.rows("SELECT * FROM pg_roles WHERE rolname = %s", (ROLE,))[0]
    assert row["rolcanlogin"]
    for attr in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls",
                 "rolinherit"):
        assert row[attr] is False, attr
    assert pg.value("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                    "WHERE r.rolname = %s", (ROLE,)) == 0, "the role is a member of another"


@pytest.mark.parametrize("table", TABLES)
def test_table_privileges_are_exact(pg, table):
    want = {"SELECT", "INSERT", "UPDATE"} if table != "mega_admin" else set()
    have = {p for p in TABLE_PRIVILEGES
            if pg.value("SELECT has_table_privilege(%s, %s, %s)", (ROLE, f"public.{table}", p))}
    assert have == want
    cols = pg.value("SELECT count(*) FROM information_schema.column_privileges "
                    "WHERE grantee = %s AND table_name = %s AND privilege_type NOT IN "
                    "('SELECT', 'INSERT', 'UPDATE')", (ROLE, table))
    assert cols == 0


def test_schema_and_database_privileges(pg):
    assert pg.value("SELECT has_schema_privilege(%s, 'public', 'USAGE')", (ROLE,))
    assert not pg.value("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (ROLE,))
    assert pg.value("SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')",
                    (ROLE,))
    assert pg.value("SELECT has_database_privilege(%s, current_database(), 'CONNECT')", (ROLE,))
    assert not pg.value("SELECT has_database_privilege(%s, current_database(), 'CREATE')",
                        (ROLE,))


@pytest.mark.parametrize("sql,error", [
    ("SELECT * FROM mega_admin", r"permission denied for table mega_admin"),
    ("INSERT INTO mega_admin (mg_id) VALUES ('x')", r"permission denied for table mega_admin"),
    ("DELETE FROM mega_generations", r"permission denied for table mega_generations"),
    ("TRUNCATE mega_customers", r"permission denied for table mega_customers"),
    ("ALTER TABLE mega_generations DISABLE ROW LEVEL SECURITY", r"must be owner"),
    ("DROP TABLE mega_generations", r"must be owner"),
    ("DROP POLICY megaingest_select ON mega_generations", r"must be owner"),
    ("CREATE TABLE public.side_channel (a int)", r"permission denied for schema public"),
    ("SET ROLE postgres", r"permission denied to set role"),
    ("CREATE ROLE other", r"permission denied to create role"),
])
def test_the_role_can_do_nothing_else(pg, sql, error):
    got = run_as(pg, sql)
    assert isinstance(got, str) and re.search(error, got), got


def test_row_level_security_stays_on(pg):
    rows = pg.sql("SELECT relname, relrowsecurity FROM pg_class WHERE relname = ANY(%s)",
                  (TABLES,))
    assert dict(rows) == {t: True for t in TABLES}
    policies = pg.sql("SELECT c.relname, p.polname, p.polcmd, "
                      "array(SELECT rolname FROM pg_roles WHERE oid = ANY(p.polroles)) "
                      "FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid ORDER BY 1, 2")
    want = sorted((t, f"megaingest_{op}", code, [ROLE])
                  for t in ("mega_customers", "mega_generations")
                  for op, code in (("insert", "a"), ("select", "r"), ("update", "w")))
    assert sorted(tuple(p) for p in policies) == want


def test_other_roles_still_see_nothing(pg, daemon):
    """With table grants like Supabase's anon role has, but no policy, RLS
    hides every row and refuses every write."""
    mg_id = uuid7()
    daemon.send_msgpack({"mg_id": mg_id, "mg_record_type": "session", "mg_pass_id": "p-anon"})
    daemon.wait_rows(1, "mg_id = %s", (mg_id,))
    pg.sql("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon_probe') "
           "THEN CREATE ROLE anon_probe LOGIN; END IF; END $$")
    pg.sql("GRANT SELECT, INSERT, UPDATE, DELETE ON mega_generations, mega_customers "
           "TO anon_probe")
    try:
        assert run_as(pg, "SELECT count(*) FROM mega_generations", "anon_probe") == [(0,)]
        assert run_as(pg, "SELECT count(*) FROM mega_customers", "anon_probe") == [(0,)]
        got = run_as(pg, "INSERT INTO mega_customers (mg_pass_id) VALUES ('x')", "anon_probe")
        assert "row-level security" in got, got
        assert run_as(pg, f"DELETE FROM mega_generations WHERE mg_id = '{mg_id}'",
                      "anon_probe") == []
        assert pg.count("mg_id = %s", (mg_id,)) == 1
    finally:
        pg.sql("REVOKE ALL ON mega_generations, mega_customers FROM anon_probe")


def test_the_role_itself_sees_its_rows(pg, daemon):
    mg_id = uuid7()
    daemon.send_msgpack({"mg_id": mg_id, "mg_record_type": "session", "mg_pass_id": "p-own"})
    daemon.wait_rows(1, "mg_id = %s", (mg_id,))
    assert run_as(pg, f"SELECT count(*) FROM mega_generations WHERE mg_id = '{mg_id}'") == [(1,)]


def test_recipe_is_idempotent(pg):
    def snapshot():
        return (pg.sql("SELECT relname, relacl::text FROM pg_class WHERE relname = ANY(%s) "
                       "ORDER BY 1", (TABLES,)),
                pg.sql("SELECT polname, polrelid::regclass::text, polcmd, "
                       "pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) "
                       "FROM pg_policy ORDER BY 1, 2"),
                pg.sql("SELECT datacl::text FROM pg_database WHERE datname = current_database()"),
                pg.sql("SELECT oid FROM pg_policy ORDER BY 1"))
    before = snapshot()
    pg.psql_file(RECIPE)
    assert snapshot() == before


def test_recipe_is_plain_sql_in_one_transaction():
    """Pasteable into Supabase's SQL editor, all or nothing."""
    with open(RECIPE, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert not any(line.lstrip().startswith("\\") for line in lines)
    code = [line for line in lines if line.strip() and not line.startswith("--")]
    assert code[0] == "BEGIN;" and code[-1] == "COMMIT;"


def test_recipe_refuses_a_role_with_more_power(pg):
    pg.sql("ALTER ROLE megaingest BYPASSRLS")
    try:
        with pytest.raises(Exception) as e:
            pg.psql_file(RECIPE)
        assert "role megaingest exists with other attributes" in str(e.value.stdout)
    finally:
        pg.sql("ALTER ROLE megaingest NOBYPASSRLS")


def test_readme_shows_the_recipe():
    """The README quotes the recipe file verbatim (so they cannot drift)."""
    with open(os.path.join(SRCDIR, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(RECIPE, encoding="utf-8") as f:
        recipe = f.read()
    assert recipe.strip() in readme
