"""Database faults: what the daemon does, and what it reports, when
PostgreSQL is away, stuck or refuses writes.

Every fault here is real: a stopped cluster, SIGSTOPped server processes, a
lock held by another session, a read-only database, a revoked privilege, a
renamed column, a terminated backend. In each, clients keep getting acks
(from the spool), /readyz and the writer_state gauge say what is going on,
and once the fault clears commits resume within seconds and every acked
event is in the table exactly once.
"""

import os
import signal
import time

import pytest

from helpers import SLOW, report, wait_for
from loadgen import Load, format_figures
from opshelpers import admin_daemon, admin_get, committed, metrics, m, wait_ready


def readyz(d):
    try:
        status, _, body = admin_get(d.admin_port, "/readyz", timeout=5)
    except OSError as e:
        return 0, str(e)
    return status, body


def writer_states(d):
    """{writer: state} from the one-hot megaingest_writer_state gauge."""
    out = {}
    for (name, labels), value in metrics(d.admin_port).items():
        if name == "megaingest_writer_state" and value == 1:
            lab = dict(labels)
            out[int(lab["writer"])] = lab["state"]
    return out


def wait_commits_resume(d, timeout):
    """Wait until events_committed_total moves; return the seconds it took."""
    t0 = time.monotonic()
    before = committed(d)
    wait_for(lambda: committed(d) > before, timeout, interval=0.05,
             what="commits to resume")
    return time.monotonic() - t0


def finish(load, pg, d, request, name):
    assert load.stop(), "some chunks were never acked"
    wait_for(lambda: not [f for f in os.listdir(d.spool_dir) if f.startswith("spool-")],
             60 * SLOW, what="an empty spool")
    f = load.figures(pg)
    report(request, format_figures(name, f))
    assert f["lost"] == 0 and f["duplicates"] == 0
    assert f["acked"] == f["sent"] == f["committed"]
    return f


# ---- 1: readiness after a failed reconnect ---------------------------------

def test_readyz_recovers_after_postgres_was_down(stoppable_pg, stoppable_daemon_factory,
                                                 request):
    """PostgreSQL stopped for 5 s under load (several failed reconnects),
    started again: /readyz is 200 and postgres_up 1 again within
    retry_max_ms + 2 s of the first commit."""
    d = admin_daemon(stoppable_daemon_factory, {"writer": {"retry_initial_ms": 100}})
    load = Load(d, connections=2, chunk_events=20, window=2, pause=0.02).start()
    wait_for(lambda: load.acked_count() > 200, what="acks before the outage")
    stoppable_pg.stop_immediate()
    wait_for(lambda: readyz(d)[0] == 503, what="/readyz 503 while PostgreSQL is down")
    assert "PostgreSQL" in readyz(d)[1]
    time.sleep(5)
    stoppable_pg.start_again()
    wait_commits_resume(d, 10)
    first_commit = time.monotonic()
    wait_for(lambda: readyz(d)[0] == 200, timeout=2 + 2, interval=0.05,
             what="/readyz 200 after the first commit")
    report(request, f"readyz 200 {time.monotonic() - first_commit:.2f} s after the first commit")
    assert m(metrics(d.admin_port), "postgres_up") == 1
    assert writer_states(d)[0] in ("writing", "replaying")
    finish(load, stoppable_pg, d, request, "postgres down 5 s")


# ---- 3: a stuck server ----------------------------------------------------------

def test_sigstopped_server_spools_and_recovers(stoppable_pg, stoppable_daemon_factory,
                                               request):
    """Every PostgreSQL process SIGSTOPped (no RST, no error) for 8 s under
    load with statement_timeout_ms 2000: the stall is logged once when it
    starts and once when it ends, /readyz says so, the batches go to the
    spool and are acked meanwhile, and everything is committed once after
    SIGCONT."""
    d = admin_daemon(stoppable_daemon_factory, {"writer": {"statement_timeout_ms": 2000}})
    load = Load(d, connections=2, chunk_events=20, window=2, pause=0.02).start()
    wait_for(lambda: load.acked_count() > 200, what="acks before the stop")
    pids = stoppable_pg.pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_for(lambda: readyz(d)[0] == 503, timeout=5, interval=0.05,
                 what="/readyz 503 while a statement is stuck")
        became = time.monotonic() - stopped
        wait_for(lambda: d.log_contains(r"statement .* running for"), timeout=5,
                 what="the stall logged")
        wait_for(lambda: d.log_contains(r"-> spooling"), timeout=10,
                 what="the statement given up at the deadline")
        time.sleep(8 - (time.monotonic() - stopped))
        during = load.acks_between(stopped + 3, time.monotonic())
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    resumed = wait_commits_resume(d, 15)
    report(request, f"SIGSTOP 8 s: readyz 503 after {became:.2f} s, acks during the stop "
           f"(from the spool) {during}, commits resumed {resumed:.2f} s after SIGCONT")
    assert during > 0, "acks stopped while the server was stuck"
    assert len([l for l in d.log().splitlines() if "running for" in l]) == 1
    finish(load, stoppable_pg, d, request, "SIGSTOP 8 s")
    wait_ready(d.admin_port)


def test_lock_wait_past_half_timeout_is_stalled_then_over(pg, daemon_factory, request):
    """An EXCLUSIVE lock (a migration) held for longer than half the statement
    timeout but less than all of it: the writer reports stalled (gauge and
    /readyz), then the statement completes, the stall is logged as over and
    nothing was spooled."""
    d = admin_daemon(daemon_factory, {"writer": {"statement_timeout_ms": 6000}})
    locker = pg.connect()
    locker.autocommit = False
    try:
        locker.cursor().execute("LOCK TABLE mega_generations IN EXCLUSIVE MODE")
        with d.connect() as c:
            c.forward("mega.generation", [[1700000000, {"mg_id": "lk-1"}]], chunk="c1")
            wait_for(lambda: writer_states(d) == {0: "stalled"}, timeout=5, interval=0.05,
                     what="writer_state stalled")
            status, body = readyz(d)
            assert status == 503 and "running for" in body, body
            locker.rollback()
            assert c.recv_value(timeout=10) == {"ack": "c1"}
    finally:
        locker.rollback()
        locker.close()
    assert pg.count("mg_id = 'lk-1'") == 1
    d.wait_log(r"stall over")
    wait_ready(d.admin_port, timeout=5)
    assert writer_states(d) == {0: "writing"}
    assert m(metrics(d.admin_port), "spool_bytes") == 0
    assert not d.log_contains(r"-> spooling")


def test_lock_held_past_the_timeout_spools(pg, daemon_factory, request):
    """A lock held for longer than statement_timeout_ms: the statement is
    cancelled, the batch goes to the spool and is acked from there; once the
    lock is gone the spool is replayed."""
    d = admin_daemon(daemon_factory, {"writer": {"statement_timeout_ms": 3000}})
    locker = pg.connect()
    locker.autocommit = False
    try:
        locker.cursor().execute("LOCK TABLE mega_generations IN EXCLUSIVE MODE")
        with d.connect() as c:
            c.forward("mega.generation", [[1700000000, {"mg_id": "lk-2"}]], chunk="c2")
            wait_for(lambda: writer_states(d) == {0: "stalled"}, timeout=5, interval=0.05,
                     what="writer_state stalled")
            t0 = time.monotonic()
            assert c.recv_value(timeout=10) == {"ack": "c2"}
            acked_after = time.monotonic() - t0
        assert pg.count("mg_id = 'lk-2'") == 0
        assert writer_states(d) == {0: "spooling"}
        assert readyz(d)[0] == 503
    finally:
        locker.rollback()
        locker.close()
    d.wait_rows(1, "mg_id = 'lk-2'", timeout=10)
    wait_ready(d.admin_port, timeout=5)
    report(request, f"lock past the timeout: acked from the spool {acked_after:.2f} s after "
           "the stall was seen")
    assert d.log_contains(r"SQLSTATE 57014")
    assert len([l for l in d.log().splitlines() if "running for" in l]) == 1


# ---- 4 and 5: refusals that are not the row's fault --------------------------

def set_read_only(pg, on):
    pg.sql(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}")
    pg.sql("SELECT pg_reload_conf()")


def set_revoked(pg, on):
    pg.sql(f"{'REVOKE' if on else 'GRANT'} INSERT ON mega_generations "
           f"{'FROM' if on else 'TO'} megaingest")


def set_renamed(pg, on):
    a, b = ("mg_prompt", "mg_prompt_renamed") if on else ("mg_prompt_renamed", "mg_prompt")
    pg.sql(f"ALTER TABLE mega_generations RENAME COLUMN {a} TO {b}")


FAULTS = {
    "read_only_25006": (set_read_only, "25006"),
    "revoked_42501": (set_revoked, "42501"),
    "renamed_column_42703": (set_renamed, "42703"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_refusal_spools_acks_and_resumes(fault, stoppable_pg, stoppable_daemon_factory,
                                         request):
    """PostgreSQL refuses writes for 6 s for a reason that is not the rows'
    (default configuration): the batches go to the spool and are acked,
    /readyz is 503 with the SQLSTATE, the refusal is logged once; after the
    fault is cleared commits resume within 5 s and nothing is lost or
    doubled."""
    toggle, sqlstate = FAULTS[fault]
    d = admin_daemon(stoppable_daemon_factory)
    load = Load(d, connections=2, chunk_events=20, window=2, pause=0.02).start()
    wait_for(lambda: load.acked_count() > 200, what="acks before the fault")
    toggle(stoppable_pg, True)
    began = time.monotonic()
    try:
        wait_for(lambda: readyz(d)[0] == 503, timeout=5, interval=0.05,
                 what="/readyz 503 while PostgreSQL refuses writes")
        body = readyz(d)[1]
        assert writer_states(d) == {0: "spooling"}
        time.sleep(max(0, 6 - (time.monotonic() - began)))
        during = load.acks_between(began + 1, time.monotonic())
    finally:
        toggle(stoppable_pg, False)
    resumed = wait_commits_resume(d, 5)
    wait_ready(d.admin_port, timeout=5)
    report(request, f"{fault}: acks during the fault {during}, commits resumed {resumed:.2f} s "
           f"after it cleared; readyz said: {body.strip()}")
    assert during > 0, "acks stopped while PostgreSQL refused writes"
    assert sqlstate in d.log_contains(r"-> spooling"), d.log()
    assert len([l for l in d.log().splitlines() if "-> spooling" in l]) == 1
    finish(load, stoppable_pg, d, request, fault)


def test_terminated_backends_spool_and_resume(stoppable_pg, stoppable_daemon_factory,
                                               request):
    """The writer's backend terminated again and again for 5 s (57P01, as an
    admin shutdown does): acks continue from the spool and commits resume
    within 5 s once it stops."""
    d = admin_daemon(stoppable_daemon_factory)
    load = Load(d, connections=2, chunk_events=20, window=2, pause=0.02).start()
    wait_for(lambda: load.acked_count() > 200, what="acks before the fault")
    began = time.monotonic()
    while time.monotonic() - began < 5:
        stoppable_pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'megaingestd'")
        time.sleep(0.1)
    during = load.acks_between(began + 1, time.monotonic())
    resumed = wait_commits_resume(d, 5)
    report(request, f"57P01 for 5 s: acks during {during}, commits resumed {resumed:.2f} s after")
    assert during > 0
    finish(load, stoppable_pg, d, request, "terminated backends")
