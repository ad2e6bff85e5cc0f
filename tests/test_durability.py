"""Durability: an ack is a promise. PostgreSQL stopped under load, the daemon
SIGKILLed under load, the spool's disk full, a corrupt spool tail, rows
PostgreSQL refuses, a shutdown while PostgreSQL is away or stuck.

Every load test prints its figures (tests/loadgen.py): events sent, acked,
committed, duplicates, lost; lost and duplicates must be 0.
"""

import os
import random
import shutil
import subprocess
import time
import urllib.request

import pytest

from helpers import SLOW, TESTS_DIR, free_tcp_port, report, wait_for
from loadgen import Load, format_figures



def segments(d):
    try:
        return sorted(f for f in os.listdir(d.spool_dir) if f.startswith("spool-"))
    except FileNotFoundError:
        return []


def wait_spool_empty(d, timeout=60 * SLOW):
    wait_for(lambda: not segments(d), timeout, what=lambda: f"an empty spool: {segments(d)}")


def entries(prefix, n, first=0):
    return [[1700000000 + i, {"mg_id": f"{prefix}-{i}", "n": f"{prefix}-{i}",
                              "mg_pass_id": "pass-1", "prompt": f"p{i}"}]
            for i in range(first, first + n)]


# Fast reconnection keeps the tests short; the backoff itself is the daemon's.
FAST_RETRY = {"writer": {"retry_initial_ms": 50, "retry_max_ms": 1000}}


def test_postgres_stopped_20s_under_load(stoppable_pg, stoppable_daemon_factory, request):
    """pg_ctl stop -m immediate under load, started again 20 s later: acks
    keep flowing meanwhile (spool), and every acked event is in the table
    exactly once afterwards."""
    d = stoppable_daemon_factory(FAST_RETRY)
    load = Load(d, connections=4, chunk_events=50, window=4, pause=0.05).start()
    wait_for(lambda: load.acked_count() > 2000, what="acks before the outage")
    stoppable_pg.stop_immediate()
    down = time.monotonic()
    time.sleep(20)
    up = time.monotonic()
    assert segments(d), "nothing was spooled during the outage"
    stoppable_pg.start_again()
    time.sleep(3)
    assert load.stop(), "some chunks were never acked"
    wait_spool_empty(d)
    f = load.figures(stoppable_pg)
    during = load.acks_between(down + 1, up)
    report(request, format_figures("postgres stopped 20 s", f,
                                   f" acks_during_outage={during} reconnects={load.reconnects()}"))
    assert during > 100, "acks stopped during the outage"
    assert f["lost"] == 0 and f["duplicates"] == 0
    assert f["acked"] == f["sent"] == f["committed"]
    assert d.log_contains(r"spooling: PostgreSQL connection lost")
    assert d.log_contains(r"replaying the spool -> writing to PostgreSQL: spool replayed")


def test_sigkill_five_rounds_under_load(stoppable_pg, stoppable_daemon_factory, request):
    """The daemon SIGKILLed at random moments under load, five rounds, two of
    them while PostgreSQL is down (so it dies with a spool the next run
    replays). Clients resend what was not acked: every acked event is
    present, none twice."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    d = stoppable_daemon_factory(FAST_RETRY)
    load = Load(d, connections=4, chunk_events=40, window=4, pause=0.02, ack_timeout=5).start()
    for rnd in range(5):
        time.sleep(rng.uniform(0.5, 1.5))
        pg_down = rnd in (1, 3)
        if pg_down:
            stoppable_pg.stop_immediate()
            time.sleep(rng.uniform(0.5, 1.0))
        d.kill9()
        time.sleep(rng.uniform(0, 0.3))
        d.start()
        if pg_down:
            time.sleep(rng.uniform(0.2, 0.8))
            stoppable_pg.start_again()
    time.sleep(1)
    assert load.stop(timeout=90), "some chunks were never acked"
    wait_spool_empty(d)
    f = load.figures(stoppable_pg)
    report(request, format_figures("SIGKILL x5", f, f" seed={seed} reconnects={load.reconnects()}"))
    assert f["lost"] == 0 and f["duplicates"] == 0
    assert f["acked"] == f["sent"] == f["committed"]
    assert d.log_contains(r"left by an earlier run"), "no restart found a spool to replay"


# ---- the spool's disk fills up -----------------------------------------------

class TmpfsDisk:
    """A tmpfs of SIZE for the spool; 'full' is a filler file taking its space.
    Where no tmpfs can be mounted the test is skipped: OTHER covers it."""

    def __init__(self, tmp_path, size="4m", other="the shim variant"):
        self.mnt = str(tmp_path / "disk")
        os.mkdir(self.mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", self.mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stdout.strip()}); {other} "
                        "covers a full disk")
        self.spool_dir = os.path.join(self.mnt, "spool")
        self.filler = os.path.join(self.mnt, "filler")
        self.env = None

    def fill(self):
        """Take all but about 256 KiB of what is free."""
        st = os.statvfs(self.mnt)
        free = st.f_bavail * st.f_frsize
        with open(self.filler, "ab") as f:
            f.write(b"\0" * max(0, free - 256 * 1024))

    def free(self, *_):
        os.unlink(self.filler)

    def close(self):
        subprocess.run(["umount", "-l", self.mnt])


class ShimDisk:
    """The LD_PRELOAD shim (tests/enospc_shim.c): 'full' is its flag file."""

    def __init__(self, tmp_path):
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            pytest.skip("no C compiler for the ENOSPC shim")
        lib = str(tmp_path / "enospc_shim.so")
        subprocess.run([cc, "-shared", "-fPIC", "-o", lib,
                        os.path.join(TESTS_DIR, "enospc_shim.c"), "-ldl"], check=True)
        self.spool_dir = str(tmp_path / "spool")
        self.flag = str(tmp_path / "disk-full")
        self.env = dict(os.environ, LD_PRELOAD=lib, MEGAINGEST_ENOSPC_FLAG=self.flag)
        # ASan wants to be the first library; the shim only wraps libc calls.
        self.env["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                                    ":verify_asan_link_order=0").lstrip(":")

    def fill(self):
        open(self.flag, "w").close()

    def free(self):
        os.unlink(self.flag)

    def close(self):
        pass


def acks_stall(load, seconds=2.0):
    """True when no ack arrives for SECONDS."""
    before = load.acked_count()
    time.sleep(seconds)
    return load.acked_count() == before


def wait_acks_stop(load, why, seconds=2.0, timeout=15):
    """Wait for SECONDS without an ack. Acks of batches made durable before
    the daemon began holding may still be on their way when it says so (on
    a loaded machine, for a while): what must not happen is acking on."""
    wait_for(lambda: acks_stall(load, seconds), timeout=timeout, what=f"acks to stop ({why})")


@pytest.mark.parametrize("kind", ["tmpfs", "shim"])
def test_spool_disk_full(kind, stoppable_pg, stoppable_daemon_factory, tmp_path, request):
    """PostgreSQL away and the spool's disk fills: no crash, acks stop (no
    ack without a durable write) and reading stops; space returns: acking
    resumes by itself. Full again, then SIGKILL: everything acked was on
    disk, and replays once PostgreSQL is back."""
    disk = (TmpfsDisk if kind == "tmpfs" else ShimDisk)(tmp_path)
    d = None
    try:
        stoppable_pg.stop_immediate()
        d = stoppable_daemon_factory({**FAST_RETRY, "spool": {"dir": disk.spool_dir},
                                      "queue": {"max_events": 2000}}, env=disk.env)
        load = Load(d, connections=2, chunk_events=50, window=2, pause=0.01,
                    ack_timeout=120).start()
        wait_for(lambda: load.acked_count() > 1000, what="acks while spooling")
        disk.fill()
        d.wait_log(r"holding: spool write failed: cannot write to the spool "
                   r"\(No space left on device\)")
        wait_acks_stop(load, "the spool cannot be written")
        assert d.running()
        stalled_at = load.acked_count()
        disk.free()
        wait_for(lambda: load.acked_count() > stalled_at + 500, what="acks after space returned")
        assert d.log_contains(r"the spool accepts batches again; acking resumes")
        disk.fill()
        wait_acks_stop(load, "the disk full again", seconds=1.0, timeout=30)
        d.kill9()
        disk.free()
        stoppable_pg.start_again()
        d.start()
        assert load.stop(timeout=90), "some chunks were never acked"
        wait_spool_empty(d)
        f = load.figures(stoppable_pg)
        report(request, format_figures(f"spool disk full ({kind})", f,
                                       f" acked_before_full={stalled_at}"))
        assert f["lost"] == 0 and f["duplicates"] == 0
        assert f["acked"] == f["sent"] == f["committed"]
        assert d.sigterm() == 0
    finally:
        if d is not None and d.running():
            d.sigterm()
        disk.close()


def test_spool_max_bytes_holds_then_resumes(stoppable_pg, stoppable_daemon_factory, request):
    """spool.max_bytes reached while PostgreSQL is away: the daemon stops
    acking (and, the queue full, reading) and says so once; once PostgreSQL
    is back the replay frees the spool and everything lands."""
    stoppable_pg.stop_immediate()
    admin = free_tcp_port()
    d = stoppable_daemon_factory({**FAST_RETRY, "spool": {"max_bytes": 1048576},
                                  "queue": {"max_events": 2000},
                                  "admin": {"http": f"127.0.0.1:{admin}"}})
    load = Load(d, connections=2, chunk_events=50, window=2, pause=0.005,
                ack_timeout=120).start()
    d.wait_log(r"spooling -> holding: spool full: \d+ bytes spooled, a batch of \d+ would "
               r"pass spool.max_bytes")
    wait_acks_stop(load, "spool.max_bytes reached")
    held_at = load.acked_count()
    on_disk = sum(os.path.getsize(os.path.join(d.spool_dir, f)) for f in segments(d))
    assert on_disk <= 1048576
    # The spool_bytes gauge is what the segment files hold.
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read()
    assert f"megaingest_spool_bytes {on_disk}\n" in metrics.decode(), metrics.decode()
    assert len([line for line in d.log().splitlines() if "-> holding: spool full" in line]) == 1
    stoppable_pg.start_again()
    assert load.stop(timeout=90), "some chunks were never acked"
    wait_spool_empty(d)
    f = load.figures(stoppable_pg)
    report(request, format_figures("spool.max_bytes", f, f" acked_before_full={held_at}"))
    assert f["lost"] == 0 and f["duplicates"] == 0
    assert f["acked"] == f["sent"] == f["committed"]


def test_sigterm_cuts_a_long_hold_backoff(stoppable_pg, stoppable_daemon_factory):
    """Holding (spool full, PostgreSQL away) with a 30 s backoff between
    tries: SIGTERM does not wait for the backoff to end; the drain deadline
    (2 s) bounds the exit."""
    stoppable_pg.stop_immediate()
    d = stoppable_daemon_factory({"writer": {"retry_initial_ms": 30000, "retry_max_ms": 30000,
                                             "drain_timeout_s": 2},
                                  "spool": {"max_bytes": 1048576},
                                  "queue": {"max_events": 2000}})
    d.expect_failure = True   # what the full spool could not take is not acked
    load = Load(d, connections=2, chunk_events=50, window=2, pause=0.005,
                ack_timeout=120).start()
    try:
        d.wait_log(r"-> holding: spool full")
        time.sleep(0.5)
        t0 = time.monotonic()
        d.signal(15)
        d.wait_exit(timeout=60)
        took = time.monotonic() - t0
    finally:
        load.stop(timeout=1)
    assert took < 10, f"SIGTERM waited {took:.1f} s for the hold's backoff"


def test_an_unreadable_resplit_marker_stops_the_start(stoppable_pg, stoppable_daemon_factory):
    """A re-split marker that exists but does not hold a segment number
    cannot say which segments are old: the daemon refuses to start (it once
    took it as "no marker" and deleted new segments, some of which may have
    been published already, so their frames would be replayed twice)."""
    d = stoppable_daemon_factory()
    assert d.sigterm() == 0
    with open(os.path.join(d.spool_dir, "resplit.commit"), "w", encoding="utf-8") as f:
        f.write("garbage\n")
    d.expect_failure = True
    d.start(wait=False)
    assert d.wait_exit(timeout=30) != 0
    assert d.log_contains(r"resplit\.commit does not hold a segment number")


def test_spool_of_two_writers_resplit_for_three(stoppable_pg, stoppable_daemon_factory):
    """Two writers spool while PostgreSQL is away; the daemon restarts with
    three: the segments are re-split by mg_id and all of them replay, the
    events of each mg_id still in order."""
    stoppable_pg.stop_immediate()
    d = stoppable_daemon_factory({**FAST_RETRY, "writer": {"connections": 2}})
    with d.connect() as c:
        for k in range(10):
            # Each id gets ten versions, one per chunk: the last must win.
            c.forward_chunk("mega.generation",
                            [[1700000000, {"mg_id": f"w-{i}", "prompt": f"v{k}"}]
                             for i in range(40)], f"v{k}")
    assert d.sigterm() == 0
    assert {s.split("-")[1] for s in segments(d)} == {"0", "1"}
    d.config["writer"]["connections"] = 3
    stoppable_pg.start_again()
    d.start()
    d.wait_rows(40)
    wait_spool_empty(d)
    assert d.log_contains(r"re-splitting them for 3 writers")
    assert stoppable_pg.count("mg_prompt = 'v9'") == 40


# ---- a damaged spool --------------------------------------------------------

@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_spool_tail(damage, stoppable_pg, stoppable_daemon_factory, request):
    """Five chunks spooled (one frame each), the last frame damaged while the
    daemon is down: on start the four good frames replay, the bad one is
    reported with file and offset and skipped."""
    stoppable_pg.stop_immediate()
    d = stoppable_daemon_factory(FAST_RETRY)
    with d.connect() as c:
        for k in range(5):
            c.forward_chunk("mega.generation", entries(f"k{k}", 20), f"chunk-{k}")
    assert d.sigterm() == 0
    (seg,) = segments(d)
    path = os.path.join(d.spool_dir, seg)
    size = os.path.getsize(path)
    with open(path, "r+b") as fp:
        if damage == "flip":
            fp.seek(size - 10)
            b = fp.read(1)
            fp.seek(size - 10)
            fp.write(bytes([b[0] ^ 0x20]))
        else:
            fp.truncate(size - 300)
    stoppable_pg.start_again()
    d.start()
    d.wait_rows(80)
    wait_spool_empty(d)
    line = d.log_contains(r"spool: .*offset \d+: (checksum mismatch|torn frame)")
    assert line and seg in line, d.log()
    committed = stoppable_pg.count("mg_id LIKE 'k%%'")
    report(request, f"corrupt spool tail ({damage}): sent=100 acked=100 committed={committed} "
                    f"duplicates=0 lost_to_damage=20 (reported: {line.split('spool: ')[1]})")
    assert committed == 80
    assert stoppable_pg.count("mg_id LIKE 'k4-%%'") == 0


# ---- rows PostgreSQL refuses ------------------------------------------------

def add_poison_check(cluster):
    cluster.sql("ALTER TABLE mega_generations ADD CONSTRAINT mi_test_no_poison "
                "CHECK (mg_prompt IS DISTINCT FROM 'poison')")


def drop_poison_check(cluster):
    cluster.sql("ALTER TABLE mega_generations DROP CONSTRAINT IF EXISTS mi_test_no_poison")


def poisoned(prefix, n, bad):
    out = entries(prefix, n)
    for i in bad:
        out[i][1]["prompt"] = "poison"
    return out


def check_poison_dead_letters(d, prefix, bad):
    dls = [x for x in d.dead_letters() if str(x["event"].get("mg_id", "")).startswith(prefix)]
    assert sorted(x["event"]["mg_id"] for x in dls) == sorted(f"{prefix}-{i}" for i in bad)
    for x in dls:
        assert x["sqlstate"] == "23514", x
        assert x["field"] == "mi_test_no_poison", x
        assert "mi_test_no_poison" in x["reason"], x


def test_poison_rows_isolated(pg, daemon_factory, request):
    """A batch of 200 with three rows that violate a CHECK: the 197 others
    commit, the three are dead-lettered with SQLSTATE 23514 and the
    constraint's name, and the chunk is acked."""
    add_poison_check(pg)
    try:
        d = daemon_factory()
        bad = [0, 77, 199]
        d.forward_chunk("mega.generation", poisoned("pz", 200, bad), "poison-chunk")
        committed = pg.count("mg_id LIKE 'pz-%%'")
        report(request, f"poison rows: sent=200 acked=200 committed={committed} duplicates=0 "
                        f"lost=0 dead_lettered={len(bad)}")
        assert committed == 197
        check_poison_dead_letters(d, "pz", bad)
    finally:
        drop_poison_check(pg)


def test_poison_row_in_spooled_batch(stoppable_pg, stoppable_daemon_factory):
    """The same when the batch was spooled during an outage: its replay
    commits the good rows and dead-letters the bad one."""
    add_poison_check(stoppable_pg)
    try:
        stoppable_pg.stop_immediate()
        d = stoppable_daemon_factory(FAST_RETRY)
        d.forward_chunk("mega.generation", poisoned("ps", 50, [10]), "spooled-poison")
        assert segments(d)
        stoppable_pg.start_again()
        d.wait_rows(49)
        wait_spool_empty(d)
        check_poison_dead_letters(d, "ps", [10])
    finally:
        drop_poison_check(stoppable_pg)


def test_spooled_poison_row_waits_for_room_in_a_full_dead_letter_file(
        stoppable_pg, stoppable_daemon_factory):
    """The spooled batch's bad row cannot be dead-lettered while the file is
    at spool.dead_letter_max_bytes. It was acked from the spool, so its
    frame stays and is tried again (the good rows merge again, unchanged);
    once the file is moved away the row is dead-lettered. Never dropped."""
    add_poison_check(stoppable_pg)
    try:
        stoppable_pg.stop_immediate()
        d = stoppable_daemon_factory({"writer": {"retry_initial_ms": 50, "retry_max_ms": 300},
                                      "spool": {"dead_letter_max_bytes": 1048576}})
        d.forward_chunk("mega.generation", poisoned("pf", 20, [5]), "spooled-full")
        assert segments(d)
        with open(d.dead_letter_path(), "a", encoding="utf-8") as f:
            f.write(("{}" + " " * 1021 + "\n") * 1024)   # 1 MiB: full
        stoppable_pg.start_again()
        d.wait_log(r"mg_id=pf-5 could not be dead-lettered either .* stays in the spool")
        time.sleep(1)
        assert segments(d), "the frame holding an acked row was deleted"
        # The rows before it committed; it and those after it wait, in order.
        assert stoppable_pg.count() == 5
        tries = d.log().count("mg_id=pf-5 could not be dead-lettered either")
        assert tries <= 8, f"{tries} tries in about a second: no backoff"
        os.rename(d.dead_letter_path(), d.dead_letter_path() + ".1")
        d.wait_rows(19)
        wait_spool_empty(d)
        check_poison_dead_letters(d, "pf", [5])
        assert stoppable_pg.count("mg_id LIKE 'pf-%%'") == 19
    finally:
        drop_poison_check(stoppable_pg)


def test_spooled_frame_keeps_a_set_aside_row_the_dead_letter_file_cannot_take(
        stoppable_pg, stoppable_daemon_factory):
    """One spooled frame: a poison row (PostgreSQL refuses it: the frame is
    bisected) after a large row the merge sets aside (its mg_id is another
    record type). The dead-letter file has room for the poison row's line
    but not for the large one. The half that commits first leaves the large
    row unrecorded; the frame must stay until it is recorded (the second
    half once made the frame look done, and the row was lost)."""
    add_poison_check(stoppable_pg)
    try:
        d = stoppable_daemon_factory({"writer": {"retry_initial_ms": 50, "retry_max_ms": 300},
                                      "spool": {"dead_letter_max_bytes": 1048576}})
        d.send_msgpack({"mg_id": "ta-3", "mg_record_type": "generation"})
        d.wait_rows(1)
        stoppable_pg.stop_immediate()
        rows = poisoned("ta", 20, [15])
        rows[3][1].update({"mg_id": "ta-3", "mg_record_type": "session", "prompt": "x" * 4000})
        d.forward_chunk("mega.session", rows, "spooled-aside")
        assert segments(d)
        with open(d.dead_letter_path(), "a", encoding="utf-8") as f:
            f.write(("{}" + " " * 1021 + "\n") * 1023)
            f.write("{}" + " " * 21 + "\n")            # 1,000 bytes of room left
        stoppable_pg.start_again()
        d.wait_log(r"mg_id=ta-3 could not be dead-lettered either .* stays in the spool")
        time.sleep(1)
        assert segments(d), "the frame holding the set-aside row was deleted"
        os.rename(d.dead_letter_path(), d.dead_letter_path() + ".1")
        wait_spool_empty(d)
        ids = sorted(x["event"]["mg_id"] for x in d.dead_letters())
        assert "ta-3" in ids, ids
    finally:
        drop_poison_check(stoppable_pg)


def test_a_replayed_segment_that_cannot_be_deleted_holds_newer_events(
        stoppable_pg, stoppable_daemon_factory):
    """A replayed segment whose unlink fails (here: made immutable) would be
    replayed again at the next start, over anything newer: until it is gone
    the writer keeps spooling instead of writing newer events to PostgreSQL,
    and once it can be deleted they follow in order."""
    stoppable_pg.stop_immediate()
    d = stoppable_daemon_factory(FAST_RETRY)
    d.forward_chunk("mega.generation", entries("old", 5), "spooled-old")
    segs = segments(d)
    assert segs
    path = os.path.join(d.spool_dir, segs[0])
    if not shutil.which("chattr") or \
            subprocess.run(["chattr", "+i", path], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        stoppable_pg.start_again()
        d.wait_rows(5)
        d.wait_log(r"cannot delete replayed segment")
        d.forward_chunk("mega.generation", entries("new", 3), "after-undeletable")  # acked
        time.sleep(1)
        assert stoppable_pg.count("mg_id LIKE 'new-%%'") == 0, \
            "newer events reached PostgreSQL while a replayed segment was still on disk"
    finally:
        subprocess.run(["chattr", "-i", path], check=False)
    d.wait_rows(8)
    wait_spool_empty(d)


# ---- shutdown ---------------------------------------------------------------

def test_sigterm_drains_into_spool_when_postgres_is_away(stoppable_pg, stoppable_daemon_factory):
    """Queued events and a pending ack at SIGTERM with PostgreSQL down: they
    go to the spool, the ack is sent, exit 0; the next start replays them."""
    stoppable_pg.stop_immediate()
    d = stoppable_daemon_factory({"writer": {"flush_interval_ms": 60000,
                                             "batch_max_events": 100000}})
    d.send_msgpack(*[{"mg_id": f"q-{i}", "mg_record_type": "session"} for i in range(300)])
    waiting = d.connect()
    waiting.forward("mega.generation", entries("last", 10), chunk="last-words")
    time.sleep(0.5 * SLOW)
    t0 = time.monotonic()
    d.signal(15)
    assert waiting.recv_value(timeout=30) == {"ack": "last-words"}
    assert d.wait_exit() == 0
    assert time.monotonic() - t0 < 10
    waiting.close()
    assert segments(d)
    stoppable_pg.start_again()
    d.start()
    d.wait_rows(310)
    wait_spool_empty(d)


def test_sigterm_spools_at_drain_deadline(stoppable_pg, stoppable_daemon_factory):
    """A statement waiting behind a lock (well within its own timeout) when
    SIGTERM comes: with writer.drain_timeout_s: 2 the statement is given up
    at the drain deadline and the batch spooled and acked instead of
    holding the exit; it lands once the lock is gone and the daemon runs
    again."""
    locker = stoppable_pg.connect()
    locker.autocommit = False
    try:
        locker.cursor().execute("LOCK TABLE mega_generations IN EXCLUSIVE MODE")
        d = stoppable_daemon_factory({**FAST_RETRY, "writer": {
            "drain_timeout_s": 2, "statement_timeout_ms": 120000}})
        c = d.connect()
        c.forward("mega.generation", entries("held", 25), chunk="held-chunk")
        with pytest.raises(AssertionError):
            c.recv_value(timeout=1)          # waiting on the lock: no ack yet
        t0 = time.monotonic()
        d.signal(15)
        assert c.recv_value(timeout=30) == {"ack": "held-chunk"}
        assert d.wait_exit() == 0
        assert 1.5 < time.monotonic() - t0 < 15
        c.close()
        assert d.log_contains(r"past the drain deadline")
        assert segments(d)
    finally:
        locker.rollback()
        locker.close()
    d.start()
    d.wait_rows(25)
    wait_spool_empty(d)
