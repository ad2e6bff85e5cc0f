"""The schema stays ready for Citus (README "Scaling out"): mega_customers
a reference table, mega_generations and mega_admin distributed by mg_id.
Citus needs every unique constraint and unique index of a distributed table
to include the distribution column, and a distributed table may reference
only a reference table (or a table co-located on the same column). Read
from the catalog of the schema as supabase/mega_tables.sql makes it."""

import psycopg2

DISTRIBUTED = ("mega_generations", "mega_admin")
REFERENCE = "mega_customers"

# Unique constraints and unique indexes (a primary key is both) whose
# columns leave out mg_id. Expression indexes have a 0 in indkey.
UNIQUE_WITHOUT_KEY = """
SELECT i.indexrelid::regclass::text
FROM pg_index i
WHERE i.indrelid = %(t)s::regclass AND i.indisunique
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = i.indrelid AND a.attname = 'mg_id'
                    AND a.attnum = ANY (i.indkey::int2[]))
UNION ALL
SELECT c.conname::text
FROM pg_constraint c
WHERE c.conrelid = %(t)s::regclass AND c.contype IN ('u', 'p', 'x')
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = c.conrelid AND a.attname = 'mg_id'
                    AND a.attnum = ANY (c.conkey))
"""

# Foreign keys of the table that point anywhere but the reference table.
FOREIGN_ELSEWHERE = """
SELECT c.conname::text || ' -> ' || c.confrelid::regclass::text
FROM pg_constraint c
WHERE c.conrelid = %(t)s::regclass AND c.contype = 'f'
  AND c.confrelid <> %(ref)s::regclass
"""


def citus_violations(cur):
    """What would stop Citus from distributing the ledger tables by mg_id."""
    out = []
    for t in DISTRIBUTED:
        cur.execute(UNIQUE_WITHOUT_KEY, {"t": t})
        out += [f"{t}: unique without mg_id: {r[0]}" for r in cur.fetchall()]
        cur.execute(FOREIGN_ELSEWHERE, {"t": t, "ref": REFERENCE})
        out += [f"{t}: foreign key not to {REFERENCE}: {r[0]}" for r in cur.fetchall()]
    return out


def test_schema_is_citus_compatible(pg):
    conn = pg.connect()
    try:
        cur = conn.cursor()
        assert citus_violations(cur) == []
        # The keys the daemon's ON CONFLICT (mg_id) relies on are there.
        cur.execute("SELECT conrelid::regclass::text FROM pg_constraint "
                    "WHERE contype = 'p' AND conrelid = ANY (%s::regclass[]) ORDER BY 1",
                    (list(DISTRIBUTED),))
        assert [r[0] for r in cur.fetchall()] == ["mega_admin", "mega_generations"]
        cur.execute("SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
                    "AND confrelid = %s::regclass ORDER BY 1", (REFERENCE,))
        assert [r[0] for r in cur.fetchall()] == ["mega_admin", "mega_generations"]
    finally:
        conn.close()


def test_the_check_sees_what_citus_refuses(pg):
    """The check is not vacuous: a unique index without mg_id, a unique
    constraint without it and a foreign key between the distributed tables
    are each named (made and rolled back in one transaction)."""
    conn = psycopg2.connect(pg.conninfo)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE UNIQUE INDEX scale_gen_uq ON mega_generations (mg_generation_id)")
            cur.execute("ALTER TABLE mega_admin ADD CONSTRAINT scale_admin_uq UNIQUE (mg_key)")
            cur.execute("ALTER TABLE mega_admin ADD CONSTRAINT scale_admin_fk "
                        "FOREIGN KEY (mg_key) REFERENCES mega_generations (mg_id)")
            found = citus_violations(cur)
    finally:
        conn.rollback()
        conn.close()
    assert any("scale_gen_uq" in v for v in found), found
    assert any("scale_admin_uq" in v and "mega_admin" in v for v in found), found
    assert any("scale_admin_fk -> mega_generations" in v for v in found), found
