"""conftest: the fixtures of the integration suite.

pg               one throwaway PostgreSQL cluster for the whole session, with
                 supabase/mega_tables.sql applied
clean_tables     (autouse) empties the ledger and customers before each test
daemon_factory   starts real megaingestd processes for one test, each on its
                 own config, socket, port and spool; stops them afterwards and
                 fails the test if one did not exit 0 (a sanitizer report or a
                 valgrind error shows up as a non-zero exit)
daemon           one daemon with the default test config
stoppable_pg     pg, for a test that stops it (pg_ctl stop -m immediate) and
                 starts it again: running and empty when the test begins,
                 running again after it
stoppable_daemon_factory  daemon_factory for stoppable_pg
pgbouncer        starts real PgBouncers (session or transaction pooling) in
                 front of pg; stops them afterwards and prints their logs
certs            a test PKI (tlsauth.make_pki), made once per worker

The suite runs in parallel under pytest-xdist: session fixtures (pg, certs)
are per worker process, and every port, path and cluster comes from the
fixtures and helpers (see helpers.py), never a fixed value, so a new test
file is parallel-safe by using them. Tests marked `serial` run afterwards in
a pass of their own (tests/run-pytest.sh), alone on the machine.

Environment: MEGAINGESTD (the binary), MEGAINGEST_VALGRIND=1 (run it under
valgrind), top_srcdir / top_builddir (set by `make check`).
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import Daemon, Postgres, stop_daemons  # noqa: E402
from tlsauth import make_pki  # noqa: E402


def _cluster():
    """Start a throwaway cluster, yield it, stop it (also when start fails)."""
    cluster = Postgres()
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "serial: measures or loads the whole machine; run alone, after "
        "the parallel pass (tests/run-pytest.sh)")


def pytest_terminal_summary(terminalreporter):
    """The lines tests gave helpers.report() (figures of load tests), also
    from xdist workers, whose own output pytest does not show."""
    lines = [(r.nodeid, value) for key in ("passed", "failed")
             for r in terminalreporter.stats.get(key, [])
             if r.when == "call"
             for name, value in getattr(r, "user_properties", []) if name == "report"]
    if lines:
        terminalreporter.section("reported figures")
        for nodeid, line in sorted(lines):
            terminalreporter.write_line(f"{nodeid}: {line}")


# ---- order: the longest test files first -------------------------------------
# xdist hands the tests out in collection order, so a long file collected
# late keeps one worker busy after the others ran out of work. Each run
# records how long every test took (in the build directory); the next one
# collects files by their recorded time, longest first, a file without a
# record as one of middling length. Within a file the order stays as written.

DURATIONS = os.path.join(os.environ.get("top_builddir") or os.getcwd(),
                         "tests", "pytest-durations.json")


def _load_durations():
    try:
        with open(DURATIONS, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _file_of(nodeid):
    """test_x.py of a node id (the id's directory part depends on pytest's rootdir)."""
    return os.path.basename(nodeid.split("::")[0])


def pytest_collection_modifyitems(session, config, items):
    known = _load_durations()
    if not known:
        return
    per_file = {}
    for nodeid, secs in known.items():
        per_file[_file_of(nodeid)] = per_file.get(_file_of(nodeid), 0) + secs
    middle = sorted(per_file.values())[len(per_file) // 2]
    items.sort(key=lambda item: -per_file.get(_file_of(item.nodeid), middle))


def pytest_runtest_logreport(report):
    """Sum each test's setup, call and teardown (in the main process, for
    its own tests and the workers')."""
    took = _took.setdefault(report.nodeid, 0.0)
    _took[report.nodeid] = took + report.duration


_took = {}


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput") or not _took:
        return                               # an xdist worker: the main process writes
    known = _load_durations()
    known.update({k: round(v, 2) for k, v in _took.items()})
    try:
        os.makedirs(os.path.dirname(DURATIONS), exist_ok=True)
        with open(DURATIONS + ".tmp", "w", encoding="utf-8") as f:
            json.dump(known, f, indent=0, sort_keys=True)
        os.replace(DURATIONS + ".tmp", DURATIONS)
    except OSError:
        pass                                 # only an ordering hint


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """Paths of the test PKI: ca, otherca, server, client (from ca), rogue
    (from otherca), each (certificate, key)."""
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="session")
def pg():
    """A PostgreSQL 15 cluster on a private Unix socket, fsync off, schema applied."""
    yield from _cluster()


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


def _daemons(cluster, tmp_path):
    """The body of the daemon factories: yields start(), then stops every
    daemon it started and fails the test if one did not exit 0."""
    started = []

    def start(overrides=None, wait=True, name=None, env=None):
        path = tmp_path / (name or f"d{len(started)}")
        path.mkdir()
        d = Daemon(cluster, path, overrides)
        d.env = env
        started.append(d)
        return d.start(wait=wait)

    yield start
    stop_daemons(started)


@pytest.fixture
def daemon_factory(pg, tmp_path):
    """start(overrides=None, wait=True) -> Daemon. Every daemon it started is
    stopped with SIGTERM at teardown and must exit 0."""
    yield from _daemons(pg, tmp_path)


@pytest.fixture
def stoppable_pg(pg):
    """The worker's cluster, which the test may stop and start: running and
    empty when the test begins, whatever the last test left, and started
    again after it. (A worker runs one test at a time, so stopping it
    disturbs no other test; a cluster of its own per module cost an initdb
    per worker and module.)"""
    cluster = pg
    if not cluster.is_running():
        cluster.start_again()
    cluster.sql("TRUNCATE mega_generations, mega_admin, mega_customers")
    yield cluster
    if not cluster.is_running():
        cluster.start_again()


@pytest.fixture
def stoppable_daemon_factory(stoppable_pg, tmp_path):
    """daemon_factory for stoppable_pg."""
    yield from _daemons(stoppable_pg, tmp_path)


@pytest.fixture
def daemon(daemon_factory):
    """One running megaingestd with the default test config."""
    return daemon_factory()


# ---- PgBouncer ------------------------------------------------------------------

from helpers import PgBouncer  # noqa: E402


@pytest.fixture
def pgbouncer(pg):
    """start(pool_mode="transaction", settings=None, cluster=pg) -> PgBouncer
    in front of CLUSTER (helpers.PgBouncer). Every pooler it started is
    stopped at teardown and its log printed (shown when the test fails)."""
    started = []

    def start(pool_mode="transaction", settings=None, cluster=None):
        b = PgBouncer(cluster or pg, pool_mode, settings)
        started.append(b)
        return b.start()

    yield start
    for b in started:
        try:
            code = b.stop()
            print(f"\n---- pgbouncer log ({b.pool_mode} mode, port {b.port}), "
                  f"exit {code} ----\n{b.log()}")
        finally:
            b.remove()
