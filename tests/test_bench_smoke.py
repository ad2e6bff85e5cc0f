"""The benchmark keeps working: `tests/bench/run --smoke` runs every case of
`make bench` (COPY ceiling, the daemon over TCP and Unix with one and two
writers, paced, the HTTP input when the daemon has one, per-event INSERT
through pgbench, the daemon through PgBouncer's transaction pooling) at tiny counts on its own
throwaway PostgreSQL and must print the full table. Numbers are not judged
here: benchmarks report, tests assert behaviour."""

import os
import subprocess

from helpers import MEGAINGESTD


def test_bench_smoke_prints_every_case():
    top_srcdir = os.environ.get("top_srcdir", os.path.dirname(os.path.dirname(__file__)))
    top_builddir = os.environ.get("top_builddir", os.path.dirname(MEGAINGESTD))
    bench = os.path.join(top_builddir, "megaingest-bench")
    assert os.access(bench, os.X_OK), f"megaingest-bench not built at {bench}"
    env = dict(os.environ, top_srcdir=top_srcdir, top_builddir=top_builddir)
    out = subprocess.run(["bash", os.path.join(top_srcdir, "tests/bench/run"), "--smoke"],
                         env=env, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    for case in ["(a) COPY+merge, 1 session", "(a) plain COPY, 1 session",
                 "(b) megaingestd unix, writers=1", "(b) megaingestd tcp,  writers=1",
                 "(b) megaingestd unix, writers=2", "(c) INSERT per event, 32 clients",
                 "(p) pgbouncer transaction, writers=2", "(p) direct,"]:
        assert case in text, f"bench smoke lacks {case!r}:\n{text}"
    assert "b/c32" in text
    assert "through PgBouncer, transaction pooling, vs the direct connection" in text
    # the HTTP input's cases run when the daemon has it, else say why not
    assert ("(h) megaingestd http, writers=1" in text and "vs Forward over TCP" in text) \
        or "HTTP cases skipped" in text, text
