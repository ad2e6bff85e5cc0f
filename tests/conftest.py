"""conftest: the fixtures of the integration suite.

pg               one throwaway PostgreSQL cluster for the whole session, with
                 supabase/mega_tables.sql applied
clean_tables     (autouse) empties the ledger and customers before each test
daemon_factory   starts real megaingestd processes for one test, each on its
                 own config, socket, port and spool; stops them afterwards and
                 fails the test if one did not exit 0 (a sanitizer report or a
                 valgrind error shows up as a non-zero exit)
daemon           one daemon with the default test config

Environment: MEGAINGESTD (the binary), MEGAINGEST_VALGRIND=1 (run it under
valgrind), top_srcdir / top_builddir (set by `make check`).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import Daemon, Postgres  # noqa: E402


@pytest.fixture(scope="session")
def pg():
    """A PostgreSQL 15 cluster on a private Unix socket, fsync off, schema applied."""
    cluster = Postgres()
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def clean_tables(request):
    """Each test starts with empty tables. Only tests that use pg pay for it."""
    if "pg" not in request.fixturenames and "daemon" not in request.fixturenames \
            and "daemon_factory" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("pg")
    cluster.sql("TRUNCATE mega_generations, mega_admin, mega_customers")
    pos = os.path.getsize(cluster.log_path) if os.path.exists(cluster.log_path) else 0
    yield
    # Shown by pytest only when the test fails: what PostgreSQL said meanwhile.
    try:
        with open(cluster.log_path, encoding="utf-8", errors="replace") as f:
            f.seek(pos)
            text = f.read()
        if text:
            print("\n---- postgres log ----\n" + text)
    except OSError:
        pass


@pytest.fixture
def daemon_factory(pg, tmp_path):
    """start(overrides=None, wait=True) -> Daemon. Every daemon it started is
    stopped with SIGTERM at teardown and must exit 0."""
    started = []

    def start(overrides=None, wait=True, name=None):
        path = tmp_path / (name or f"d{len(started)}")
        path.mkdir()
        d = Daemon(pg, path, overrides)
        started.append(d)
        return d.start(wait=wait)

    yield start

    failures = []
    for d in started:
        code = d.cleanup()
        print(f"\n---- megaingestd log ({d.log_path}), exit {code} ----\n{d.log()}")
        if code not in (0, None) and not getattr(d, "expect_failure", False):
            failures.append(f"megaingestd exited with status {code} (log above)")
    if failures:
        pytest.fail("; ".join(failures))


@pytest.fixture
def daemon(daemon_factory):
    """One running megaingestd with the default test config."""
    return daemon_factory()
