"""Least privilege: the README's role recipe (supabase/megaingest_role.sql)
and its addition for postgres.apply_credits (supabase/megaingest_credits.sql).

The pg fixture applies both to the test cluster and every daemon of the
integration suite connects as that role (helpers.DAEMON_ROLE; set
MEGAINGEST_PG_ROLE=postgres to run the suite as the superuser instead), so
the whole suite is the proof that the role is enough. The tests here check
that it is no more than enough, that row level security stays on, and, in a
database of their own with the role recipe alone, that a daemon without
apply_credits needs nothing else.
"""

import contextlib
import os
import re
import subprocess

import psycopg2
import pytest

import helpers
from helpers import SCHEMA, SRCDIR, uuid7

ROLE = "megaingest"
RECIPE = os.path.join(SRCDIR, "supabase", "megaingest_role.sql")
CREDITS = os.path.join(SRCDIR, "supabase", "megaingest_credits.sql")
TABLES = ["mega_generations", "mega_customers", "mega_admin"]
TABLE_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
BASE_DB = "lp_base"

# Column privileges on mega_customers: what the stub and last-activity
# statements need, and what apply_credits adds.
CUSTOMER_COLUMNS = {
    "mg_pass_id": {"SELECT", "INSERT"},
    "mg_credits": {"INSERT"},
    "mg_source_system": {"INSERT"},
    "mg_last_active": {"SELECT", "INSERT", "UPDATE"},
}
CREDIT_COLUMNS = {
    "mg_credits": {"SELECT", "UPDATE"},
    "mg_last_topup_at": {"SELECT", "UPDATE"},
    "mg_topup_source": {"SELECT", "UPDATE"},
}
PERSONAL = ["mg_email", "mg_first_name", "mg_last_name", "mg_display_name",
            "mg_shopify_customer_id", "mg_user_id", "mg_meta"]


def as_role(pg, role=ROLE, dbname="postgres"):
    conn = psycopg2.connect(f"host={pg.sockdir} port={pg.port} user={role} dbname={dbname}")
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def superuser(pg, dbname):
    conn = psycopg2.connect(f"host={pg.sockdir} port={pg.port} user=postgres dbname={dbname}")
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def psql_file(pg, path, dbname):
    """Apply PATH to DBNAME as the tables' owner would, with psql."""
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.sockdir,
                           "-p", str(pg.port), "-U", "postgres", "-d", dbname, "-f", path],
                          check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def fresh_database(pg, dbname, files):
    pg.sql(f"DROP DATABASE IF EXISTS {dbname}")
    pg.sql(f"CREATE DATABASE {dbname}")
    for path in files:
        psql_file(pg, path, dbname)


def run_as(pg, sql, role=ROLE, dbname="postgres"):
    """Run SQL as ROLE; rows, or the error message."""
    conn = as_role(pg, role, dbname)
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


def column_privileges(pg, table, dbname=None):
    """{column: {privilege, ...}} the role holds column by column on TABLE."""
    query = ("SELECT a.attname, x.privilege_type FROM pg_attribute a "
             "CROSS JOIN LATERAL aclexplode(a.attacl) x "
             "WHERE a.attrelid = %s::regclass AND x.grantee = %s::regrole")
    params = (f"public.{table}", ROLE)
    if dbname is None:
        rows = pg.sql(query, params)
    else:
        with superuser(pg, dbname) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
    out = {}
    for col, priv in rows:
        out.setdefault(col, set()).add(priv)
    return out


def merge(*maps):
    out = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, set()) | v
    return out


def generation_update_columns(pg, table="mega_generations", dbname=None):
    """A merge sets every column but the key, the type and the creation time."""
    q = (f"SELECT attname FROM pg_attribute WHERE attrelid = 'public.{table}'"
         "::regclass AND attnum > 0 AND NOT attisdropped")
    if dbname:
        with superuser(pg, dbname) as conn, conn.cursor() as cur:
            cur.execute(q)
            cols = cur.fetchall()
    else:
        cols = pg.sql(q)
    return {c: {"UPDATE"} for (c,) in cols
            if c not in ("mg_id", "mg_record_type", "mg_created_at")}


@pytest.mark.parametrize("table", TABLES)
def test_table_privileges_are_exact(pg, table):
    want = {"mega_generations": {"SELECT", "INSERT"},
            "mega_admin": {"SELECT", "INSERT"}}.get(table, set())
    have = {p for p in TABLE_PRIVILEGES
            if pg.value("SELECT has_table_privilege(%s, %s, %s)", (ROLE, f"public.{table}", p))}
    assert have == want


def test_column_privileges_are_exact(pg):
    """The suite's cluster has the credit columns too (some tests turn
    apply_credits on); UPDATE on mega_generations and mega_admin of
    everything a merge sets."""
    assert column_privileges(pg, "mega_customers") == merge(CUSTOMER_COLUMNS, CREDIT_COLUMNS)
    assert column_privileges(pg, "mega_generations") == generation_update_columns(pg)
    assert column_privileges(pg, "mega_admin") == generation_update_columns(pg, "mega_admin")


def test_schema_and_database_privileges(pg):
    assert pg.value("SELECT has_schema_privilege(%s, 'public', 'USAGE')", (ROLE,))
    assert not pg.value("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (ROLE,))
    assert pg.value("SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')",
                    (ROLE,))
    assert pg.value("SELECT has_database_privilege(%s, current_database(), 'CONNECT')", (ROLE,))
    assert not pg.value("SELECT has_database_privilege(%s, current_database(), 'CREATE')",
                        (ROLE,))


@pytest.mark.parametrize("sql,error", [
    ("DELETE FROM mega_admin", r"permission denied for table mega_admin"),
    ("INSERT INTO mega_admin (mg_id, mg_record_type) VALUES ('x', 'profile')",
     r"new row violates row-level security policy for table \"mega_admin\""),
    ("INSERT INTO mega_admin (mg_id, mg_record_type) VALUES ('x', 'app_config')",
     r"new row violates row-level security policy for table \"mega_admin\""),
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
                      "array(SELECT rolname FROM pg_roles WHERE oid = ANY(p.polroles)), "
                      "pg_get_expr(p.polqual, p.polrelid), "
                      "pg_get_expr(p.polwithcheck, p.polrelid) "
                      "FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid ORDER BY 1, 2")
    no_credit_row = "(mg_record_type <> 'credit_transaction'::text)"
    stub_only = "((mg_credits = 0) AND (mg_source_system = 'megaingest'::text))"
    events_only = "(mg_record_type = ANY (ARRAY['admin_audit'::text, 'admin_session'::text]))"
    sessions_only = "(mg_record_type = 'admin_session'::text)"
    want = [
        ("mega_admin", "megaingest_insert", "a", [ROLE], None, events_only),
        ("mega_admin", "megaingest_select", "r", [ROLE], "true", None),
        ("mega_admin", "megaingest_update", "w", [ROLE], "true", sessions_only),
        ("mega_customers", "megaingest_insert", "a", [ROLE], None, stub_only),
        ("mega_customers", "megaingest_select", "r", [ROLE], "true", None),
        ("mega_customers", "megaingest_update", "w", [ROLE], "true", "true"),
        ("mega_generations", "megaingest_insert", "a", [ROLE], None, "true"),
        ("mega_generations", "megaingest_select", "r", [ROLE], "true", None),
        ("mega_generations", "megaingest_update", "w", [ROLE], "true", no_credit_row),
    ]
    assert [tuple(p) for p in policies] == want


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
                pg.sql("SELECT attrelid::regclass::text, attname, attacl::text "
                       "FROM pg_attribute WHERE attacl IS NOT NULL "
                       "AND attrelid = ANY(%s::regclass[]) ORDER BY 1, 2", (TABLES,)),
                pg.sql("SELECT datacl::text FROM pg_database WHERE datname = current_database()"),
                pg.sql("SELECT oid, xmin::text FROM pg_policy ORDER BY 1"))
    before = snapshot()
    pg.psql_file(RECIPE)
    assert snapshot() == before
    pg.psql_file(CREDITS)
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


# ---- what the role must not do ----------------------------------------------

@pytest.fixture(scope="module")
def base_db(pg):
    """A database with mega_tables.sql and the role recipe only: the role as
    it is without apply_credits."""
    fresh_database(pg, BASE_DB, [SCHEMA, RECIPE])
    yield BASE_DB
    pg.sql(f"DROP DATABASE {BASE_DB} WITH (FORCE)")


def test_base_column_privileges_are_exact(pg, base_db):
    assert column_privileges(pg, "mega_customers", base_db) == CUSTOMER_COLUMNS


@pytest.mark.parametrize("column", PERSONAL + ["*"])
def test_the_role_cannot_read_customers(pg, column):
    pg.sql("INSERT INTO mega_customers (mg_pass_id, mg_email, mg_first_name, mg_last_name) "
           "VALUES ('p-pii', 'ann@example.com', 'Ann', 'Example')")
    got = run_as(pg, f"SELECT {column} FROM mega_customers")
    assert got == "permission denied for table mega_customers", got


def test_the_role_can_read_what_it_compares(pg):
    pg.sql("INSERT INTO mega_customers (mg_pass_id, mg_email) VALUES ('p-cmp', 'x@example.com')")
    assert run_as(pg, "SELECT mg_pass_id, mg_last_active IS NULL FROM mega_customers") == \
        [("p-cmp", True)]


@pytest.mark.parametrize("db", ["base", "credits"])
def test_the_role_cannot_create_a_customer_with_a_balance(pg, base_db, db):
    """Only stubs (mg_credits 0, mg_source_system 'megaingest'), with or
    without the apply_credits grants."""
    dbname = base_db if db == "base" else "postgres"
    for values in ("('p-rich', 500, 'megaingest')", "('p-rich', 0, 'shopify')"):
        got = run_as(pg, "INSERT INTO mega_customers (mg_pass_id, mg_credits, mg_source_system) "
                     f"VALUES {values}", dbname=dbname)
        assert "violates row-level security policy" in got, got
    assert run_as(pg, "INSERT INTO mega_customers (mg_pass_id, mg_credits, mg_source_system) "
                  "VALUES ('p-stub', 0, 'megaingest')", dbname=dbname) == []
    got = run_as(pg, "INSERT INTO mega_customers (mg_pass_id, mg_email) VALUES ('p-e', 'x')",
                 dbname=dbname)
    assert got == "permission denied for table mega_customers", got
    with superuser(pg, dbname) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM mega_customers WHERE mg_pass_id = 'p-stub'")


@pytest.mark.parametrize("sql", [
    "UPDATE mega_customers SET mg_credits = 1000000 WHERE mg_pass_id = 'p-bal'",
    "UPDATE mega_customers SET mg_credits = mg_credits + 1 WHERE mg_pass_id = 'p-bal'",
    "UPDATE mega_customers SET mg_topup_source = 'me' WHERE mg_pass_id = 'p-bal'",
    "UPDATE mega_customers SET mg_email = 'me@example.com' WHERE mg_pass_id = 'p-bal'",
    "INSERT INTO mega_customers AS c (mg_pass_id, mg_credits, mg_source_system) "
    "VALUES ('p-bal', 0, 'megaingest') ON CONFLICT (mg_pass_id) "
    "DO UPDATE SET mg_credits = 1000000",
])
def test_without_apply_credits_the_role_cannot_set_a_balance(pg, base_db, sql):
    with superuser(pg, base_db) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO mega_customers (mg_pass_id, mg_credits) VALUES ('p-bal', 7) "
                    "ON CONFLICT (mg_pass_id) DO UPDATE SET mg_credits = 7")
        got = run_as(pg, sql, dbname=base_db)
        assert got == "permission denied for table mega_customers", got
        cur.execute("SELECT mg_credits FROM mega_customers WHERE mg_pass_id = 'p-bal'")
        assert cur.fetchone()[0] == 7


@pytest.mark.parametrize("sql,error", [
    ("UPDATE mega_generations SET mg_delta = 999 WHERE mg_id = 'ct-1'",
     "new row violates row-level security policy"),
    ("UPDATE mega_generations SET mg_deleted_at = now() WHERE mg_id = 'ct-1'",
     "new row violates row-level security policy"),
    ("INSERT INTO mega_generations AS t (mg_id, mg_record_type, mg_delta) "
     "VALUES ('ct-1', 'credit_transaction', 999) ON CONFLICT (mg_id) "
     "DO UPDATE SET mg_delta = EXCLUDED.mg_delta",
     "new row violates row-level security policy"),
    ("UPDATE mega_generations SET mg_record_type = 'session', mg_delta = 999 "
     "WHERE mg_id = 'ct-1'", "permission denied for table mega_generations"),
    ("UPDATE mega_generations SET mg_id = 'ct-2' WHERE mg_id = 'ct-1'",
     "permission denied for table mega_generations"),
])
def test_the_role_cannot_change_a_credit_transaction(pg, daemon, sql, error):
    """A credit_transaction the daemon wrote cannot be rewritten by its role."""
    daemon.send_msgpack({"mg_id": "ct-1", "mg_record_type": "credit_transaction",
                         "mg_pass_id": "p-ct", "mg_delta": 25, "mg_reason": "topup"})
    daemon.wait_rows(1, "mg_id = 'ct-1'")
    got = run_as(pg, sql)
    assert isinstance(got, str) and error in got, got
    assert pg.rows("SELECT mg_id, mg_record_type, mg_delta, mg_deleted_at "
                   "FROM mega_generations") == [{"mg_id": "ct-1", "mg_record_type":
                                                 "credit_transaction", "mg_delta": 25,
                                                 "mg_deleted_at": None}]


def test_the_role_still_updates_other_rows(pg, daemon):
    daemon.send_msgpack({"mg_id": "s-1", "mg_record_type": "session", "mg_pass_id": "p-s"})
    daemon.wait_rows(1, "mg_id = 's-1'")
    assert run_as(pg, "UPDATE mega_generations SET mg_title = 't' WHERE mg_id = 's-1'") == []
    assert pg.row("s-1")["mg_title"] == "t"


def test_the_base_role_is_enough_without_apply_credits(pg, base_db, daemon_factory):
    """A daemon connected to the recipe-only database: new customers (stubs),
    last activity, merges of changed rows, credit_transactions and their exact
    and altered replays, and in dead_letter mode the check of known pass ids."""
    conninfo = pg.daemon_conninfo.replace("dbname=postgres", f"dbname={base_db}")
    d = daemon_factory({"postgres": {"conninfo": conninfo}})
    credit = {"mg_id": "b-ct", "mg_record_type": "credit_transaction", "mg_pass_id": "b-p2",
              "mg_delta": 30, "mg_reason": "topup"}
    batches = [
        [{"mg_id": "b-s", "mg_record_type": "session", "mg_pass_id": "b-p1", "title": "one"},
         credit],
        [{"mg_id": "b-s", "mg_record_type": "session", "mg_pass_id": "b-p1", "title": "two"},
         credit, dict(credit, mg_delta=99)],
    ]
    for n, batch in enumerate(batches):
        with d.connect() as c:
            c.forward_chunk("mega.session", [[1700000000 + n, r] for r in batch], f"b{n}")
    d2 = daemon_factory({"postgres": {"conninfo": conninfo, "unknown_pass_id": "dead_letter"}})
    with d2.connect() as c:
        c.forward_chunk("mega.session", [
            [1700000100, {"mg_id": "b-k", "mg_record_type": "session", "mg_pass_id": "b-p1"}],
            [1700000100, {"mg_id": "b-u", "mg_record_type": "session", "mg_pass_id": "b-x"}],
        ], "b-dl")
    d2.wait_dead_letter(lambda x: x["event"].get("mg_id") == "b-u")
    with superuser(pg, base_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT mg_id, mg_title, mg_delta FROM mega_generations ORDER BY 1")
        assert cur.fetchall() == [("b-ct", None, 30), ("b-k", None, None), ("b-s", "two", None)]
        cur.execute("SELECT mg_pass_id, mg_credits, mg_source_system, "
                    "extract(epoch FROM mg_last_active)::int FROM mega_customers "
                    "WHERE mg_pass_id LIKE 'b-%' ORDER BY 1")
        assert cur.fetchall() == [("b-p1", 0, "megaingest", 1700000001),
                                  ("b-p2", 0, "megaingest", 1700000001)]
    assert d.dead_letters() == [] and not d.log_contains(r"permission denied|42501")
    assert not d2.log_contains(r"permission denied|42501")


def test_credits_recipe_adds_the_balance_columns_and_rerun_keeps_them(pg):
    """megaingest_credits.sql grants the three columns; the role recipe run
    again keeps them; the REVOKE its header shows takes them back."""
    db = "lp_credits"
    fresh_database(pg, db, [SCHEMA, RECIPE, CREDITS])
    try:
        assert column_privileges(pg, "mega_customers", db) == \
            merge(CUSTOMER_COLUMNS, CREDIT_COLUMNS)
        psql_file(pg, RECIPE, db)
        assert column_privileges(pg, "mega_customers", db) == \
            merge(CUSTOMER_COLUMNS, CREDIT_COLUMNS)
        with open(CREDITS, encoding="utf-8") as f:
            header = f.read().split("BEGIN;")[0]
        revoke = " ".join(line.lstrip("- ").strip() for line in header.splitlines()
                          if re.match(r"--\s{2,}\S", line))
        assert revoke.startswith("REVOKE") and revoke.endswith(";"), revoke
        with superuser(pg, db) as conn, conn.cursor() as cur:
            cur.execute(revoke)
        assert column_privileges(pg, "mega_customers", db) == CUSTOMER_COLUMNS
    finally:
        pg.sql(f"DROP DATABASE {db} WITH (FORCE)")


def test_recipe_narrows_what_an_earlier_version_granted(pg):
    """Run over the grants and policies of an older recipe (whole tables,
    policies that allow any row), it leaves exactly its own."""
    db = "lp_upgrade"
    fresh_database(pg, db, [SCHEMA])
    try:
        with superuser(pg, db) as conn, conn.cursor() as cur:
            cur.execute(
                f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO megaingest; "
                "GRANT USAGE ON SCHEMA public TO megaingest; "
                "GRANT SELECT, INSERT, UPDATE ON mega_generations, mega_customers TO megaingest; "
                "GRANT SELECT (mg_email) ON mega_admin TO megaingest; "
                "CREATE POLICY megaingest_insert ON mega_customers FOR INSERT TO megaingest "
                "WITH CHECK (true); "
                "CREATE POLICY megaingest_update ON mega_generations FOR UPDATE TO megaingest "
                "USING (true) WITH CHECK (true)")
        psql_file(pg, RECIPE, db)
        assert column_privileges(pg, "mega_customers", db) == CUSTOMER_COLUMNS
        assert column_privileges(pg, "mega_admin", db) == \
            generation_update_columns(pg, "mega_admin", db)
        got = run_as(pg, "SELECT mg_email FROM mega_customers", dbname=db)
        assert got == "permission denied for table mega_customers", got
        with superuser(pg, db) as conn, conn.cursor() as cur:
            cur.execute("SELECT polname, polrelid::regclass::text, "
                        "pg_get_expr(polwithcheck, polrelid) FROM pg_policy "
                        "WHERE polname IN ('megaingest_insert', 'megaingest_update') ORDER BY 2, 1")
            assert cur.fetchall() == [
                ("megaingest_insert", "mega_admin",
                 "(mg_record_type = ANY (ARRAY['admin_audit'::text, 'admin_session'::text]))"),
                ("megaingest_update", "mega_admin", "(mg_record_type = 'admin_session'::text)"),
                ("megaingest_insert", "mega_customers",
                 "((mg_credits = 0) AND (mg_source_system = 'megaingest'::text))"),
                ("megaingest_update", "mega_customers", "true"),
                ("megaingest_insert", "mega_generations", "true"),
                ("megaingest_update", "mega_generations",
                 "(mg_record_type <> 'credit_transaction'::text)"),
            ]
    finally:
        pg.sql(f"DROP DATABASE {db} WITH (FORCE)")


def test_credits_recipe_is_plain_sql_in_one_transaction():
    with open(CREDITS, encoding="utf-8") as f:
        lines = f.read().splitlines()
    code = [line for line in lines if line.strip() and not line.startswith("--")]
    assert code[0] == "BEGIN;" and code[-1] == "COMMIT;"
    assert not any(line.lstrip().startswith("\\") for line in lines)
