"""test_attacks: cheap attacks one client makes on every other client.

Each test plays one attack against a real daemon and checks the bound that
defeats it: what a flood of rejected entries costs on disk and in the log,
the dead-letter file's size limit, the warn-line rate limit. The figures
(bytes, lines, /healthz latency) are printed for the record; what is
asserted is the bound, never a speed.
"""

import gzip
import os
import resource
import socket
import threading
import time

import pytest

import helpers

from helpers import WAIT_TIMEOUT, event_time, packb, uuid7, wait_for
from opshelpers import admin_daemon, admin_get, m, metrics
from tlsauth import KEY, authenticate

TAG = "mega.generation"


def bad_gzip_message(entries=200_000, chunk="flood"):
    """One CompressedPackedForward message of ENTRIES nil entries (none is
    [time, record]): 266 bytes on the wire for 200,000 entries."""
    data = gzip.compress(b"\xc0" * entries, 9)
    opt = {"compressed": "gzip"}
    if chunk is not None:
        opt["chunk"] = chunk
    return packb([TAG, data, opt])


def good_event(**extra):
    ev = {"mg_id": uuid7(), "mg_record_type": "generation", "mg_pass_id": uuid7(),
          "mg_model": "m", "mg_status": "ok"}
    ev.update(extra)
    return ev


class HealthProbe:
    """Polls /healthz in a thread; keeps the slowest answer (seconds)."""

    def __init__(self, port):
        self.port = port
        self.worst = 0.0
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                admin_get(self.port, "/healthz", timeout=60)
            except OSError:
                self.failures += 1
            self.worst = max(self.worst, time.monotonic() - t0)
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(70)


def log_lines(d, needle):
    return [line for line in d.log().splitlines() if needle in line]


# ---- dead-letter amplification ------------------------------------------------

def test_gzip_flood_of_bad_entries_is_one_line_per_message(daemon_factory):
    """266 bytes of gzip announcing 200,000 bad entries: 16 lines one by one,
    then one line for the rest with its count; bounded log; still acked."""
    d = admin_daemon(daemon_factory)
    msg = bad_gzip_message()
    assert len(msg) < 280           # 266 bytes without the chunk
    with HealthProbe(d.admin_port) as probe, d.connect("tcp") as c:
        t0 = time.monotonic()
        c.send_raw(msg)
        reply = c.recv_value(timeout=WAIT_TIMEOUT)
        took = time.monotonic() - t0
    assert reply == {"ack": "flood"}
    size = os.path.getsize(d.dead_letter_path())
    lines = d.dead_letters()
    warns = log_lines(d, "dead-lettered")
    print(f"\nFIGURE item 1: 266-byte message -> {size} bytes on disk in {len(lines)} lines, "
          f"{len(warns)} warn lines, ack after {took * 1000:.0f} ms, "
          f"/healthz worst {probe.worst * 1000:.1f} ms")
    assert size < 1_000_000
    assert len(lines) == 17
    bulk = lines[-1]
    assert bulk["count"] == 200_000 - 16
    assert "packed entries 16 to 199999 (199984 entries) not read" in bulk["reason"]
    assert all("count" not in dl for dl in lines[:-1])
    assert len(warns) <= 21
    assert probe.failures == 0
    s = metrics(d.admin_port)
    assert m(s, "events_received_total") == 200_000
    assert m(s, "events_dead_lettered_total") == 200_000
    assert m(s, "events_rejected_total", reason="bad_frame") == 200_000
    assert m(s, "dead_letter_bulk_total") == 1


def test_forward_flood_keeps_valid_entries_before_the_limit(daemon_factory, pg):
    """Forward mode: entries before the 16th rejection are taken one by one
    (valid ones committed); the rest is one line holding those entries."""
    d = daemon_factory()
    good = [good_event() for _ in range(3)]
    entries = [[event_time(1_700_000_000), ev] for ev in good]
    entries += [[event_time(1_700_000_000), {"mg_id": 5}] for _ in range(40)]
    entries += [[event_time(1_700_000_000), good_event()]]
    with d.connect() as c:
        c.forward_chunk(TAG, entries, "fw")
    d.wait_rows(3)
    lines = d.dead_letters()
    assert len(lines) == 17
    assert lines[-1]["count"] == 44 - 3 - 16
    assert len(lines[-1]["event"]) == 25   # the entries themselves, as JSON


def test_dead_letter_max_bytes_refuses_without_ack(daemon_factory):
    """At spool.dead_letter_max_bytes a rejected event is refused: no ack,
    the connection is closed, one log line and a metric; once the file is
    moved away, events are dead-lettered and acked again."""
    d = admin_daemon(daemon_factory, {"spool": {"dead_letter_max_bytes": 1048576}},
                     ready=False)
    with open(d.dead_letter_path(), "a", encoding="utf-8") as f:
        f.write(("{}" + " " * 1021 + "\n") * 1024)   # 1 MiB: full
    bad = [[event_time(1_700_000_000), {"mg_id": 5}]]
    for i in range(3):
        with d.connect() as c:
            c.forward(TAG, bad, chunk=f"refused{i}")
            assert c.wait_closed(), "the connection must close instead of acking"
    full = log_lines(d, "spool.dead_letter_max_bytes=1048576")
    assert len(full) == 1, full
    s = metrics(d.admin_port)
    assert m(s, "dead_letter_full") == 1
    assert m(s, "dead_letters_refused_total") == 3
    os.rename(d.dead_letter_path(), d.dead_letter_path() + ".1")
    with d.connect() as c:
        assert c.forward_chunk(TAG, bad, "room") == "room"
    assert len(d.dead_letters()) == 1
    d.wait_log("has room again")
    assert m(metrics(d.admin_port), "dead_letter_full") == 0


def test_a_connection_flooding_rejected_events_is_closed(daemon_factory):
    """1,500 bad events on one connection, as fast as it can send them: about
    a burst of 1,000 dead-letter lines, then the connection is closed."""
    d = daemon_factory()
    bad = packb({"mg_id": 5})
    with d.connect("tcp") as c:
        try:
            c.send_raw(bad * 1500)
        except OSError:
            pass
        assert c.wait_closed(10), "the connection was not closed"
    d.wait_log(r"more than 1000 rejected events at once, or 100 a second after that; "
               r"connection closed")
    wait_for(lambda: len(d.dead_letters()) >= 1000, what="the burst's lines on disk")
    time.sleep(0.5)
    n = len(d.dead_letters())
    print(f"\nFIGURE item 1: 1,500 bad events on one connection -> {n} dead-letter lines")
    assert n < 1100


def test_warn_lines_are_rate_limited(daemon_factory):
    """One bad event per message, 300 messages: at most a burst of warn
    lines, then one "N more similar lines suppressed"."""
    d = daemon_factory()
    bad = packb([TAG, [[event_time(1_700_000_000), {"mg_id": 5}]]])
    with d.connect() as c:
        c.send_raw(bad * 300)
        c.forward_chunk(TAG, [[event_time(1_700_000_000), {"mg_id": 6}]], "last")
    wait_for(lambda: len(d.dead_letters()) == 301)
    time.sleep(1.1)                        # the next window
    with d.connect() as c:
        c.forward_chunk(TAG, [[event_time(1_700_000_000), {"mg_id": 7}]], "later")
    line = d.wait_log(r"\d+ more similar lines suppressed")
    warns = log_lines(d, "event dead-lettered")
    print(f"\nFIGURE item 1: 302 rejected events -> {len(warns)} warn lines; {line}")
    assert len(warns) <= 25


# ---- unauthenticated connections ------------------------------------------------

def open_idle(port, n):
    """N TCP connections that never send a byte."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def commit_one(d, via, chunk):
    """Seconds for one event to be acked (committed) over a new connection VIA."""
    ev = good_event()
    t0 = time.monotonic()
    with d.connect(via) as c:
        if via == "tcp":
            authenticate(c)
        c.forward_chunk(TAG, [[event_time(1_700_000_000), ev]], chunk)
    return time.monotonic() - t0


def test_unauthenticated_connections_leave_room_for_clients(daemon_factory, pg):
    """As many never-authenticating TCP connections as listen.max_connections:
    a Unix client and a key-holding TCP client still get events committed."""
    d = daemon_factory({"listen": {"shared_key": KEY, "max_connections": 64}})
    socks = open_idle(d.tcp_port, 64)
    try:
        time.sleep(0.5)                     # let the daemon take them all
        unix_s = commit_one(d, "unix", "u")
        tcp_s = commit_one(d, "tcp", "t")
        d.wait_rows(2)
    finally:
        for s in socks:
            s.close()
    print(f"\nFIGURE item 3 (64 slots): unix commit {unix_s * 1000:.0f} ms, "
          f"key-holding tcp commit {tcp_s * 1000:.0f} ms")
    assert d.log_contains(r"connections are in the handshake .* this was the oldest")


def test_handshake_timeout_closes_silent_connections(daemon_factory):
    """A TCP connection that never sends its PING is closed after
    listen.handshake_timeout_s, not after idle_timeout_s."""
    d = admin_daemon(daemon_factory, {"listen": {"shared_key": KEY, "idle_timeout_s": 300,
                                                 "handshake_timeout_s": 1}}, ready=False)
    with d.connect("tcp") as c:
        assert c.wait_closed(10)
    d.wait_log(r"handshake not finished within listen.handshake_timeout_s=1 s")
    assert m(metrics(d.admin_port), "handshake_timeouts_total") == 1


# ---- file descriptors -----------------------------------------------------------

@pytest.fixture
def limited_daemon(pg, tmp_path):
    """start(soft, hard, overrides=None, wait=True) -> a Daemon run under
    prlimit with RLIMIT_NOFILE SOFT:HARD; stopped at teardown."""
    started = []

    def start(soft, hard, overrides=None, wait=True):
        d = helpers.Daemon(pg, tmp_path / f"l{len(started)}", overrides)
        os.makedirs(d.tmp_path)
        base = d.command

        def command():
            cmd = base()
            i = cmd.index(helpers.MEGAINGESTD)
            return cmd[:i] + ["prlimit", f"--nofile={soft}:{hard}"] + cmd[i:]
        d.command = command
        started.append(d)
        return d.start(wait=wait)

    yield start
    for d in started:
        d.cleanup()
        print(f"\n---- megaingestd log ({d.log_path}) ----\n{d.log()}")


def soft_nofile(pid):
    with open(f"/proc/{pid}/limits", encoding="utf-8") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no Max open files in /proc/PID/limits")


def test_max_connections_must_fit_the_descriptor_limit(limited_daemon):
    """Hard limit 1024 and the default max_connections 1024: the daemon
    refuses to start and says what to change."""
    d = limited_daemon(1024, 1024, wait=False)
    assert d.wait_exit(30) != 0
    assert d.log_contains(r"listen.max_connections=1024 needs \d+ open files .* "
                          r"RLIMIT_NOFILE is 1024: lower listen.max_connections to \d+")


def test_soft_descriptor_limit_is_raised_to_the_hard_one(limited_daemon):
    d = limited_daemon(256, 4096)
    assert soft_nofile(d.pid) == 4096


def test_out_of_descriptors_pauses_accepting_and_logs_once(daemon_factory, pg):
    """The daemon runs out of descriptors under 100 connections: it pauses
    accepting (one log line per episode) instead of spinning, and serves
    again once connections close."""
    d = daemon_factory()
    soft, hard = resource.prlimit(d.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (64, hard))
    socks = []
    try:
        for _ in range(100):
            socks.append(socket.create_connection(("127.0.0.1", d.tcp_port), timeout=5))
        time.sleep(2)
        cpu0 = proc_cpu(d.pid)
        time.sleep(2)
        cpu = (proc_cpu(d.pid) - cpu0) / 2
        n = len(log_lines(d, "accept failed"))
        print(f"\nFIGURE item 4: 100 connections at RLIMIT_NOFILE 64: {n} "
              f"'accept failed' lines, {len(d.log().splitlines())} log lines in all, "
              f"CPU {cpu * 100:.1f}% while they wait")
        # one per episode: a descriptor freed elsewhere (a writer's) may end one
        assert n <= 5, f"{n} 'accept failed' lines"
    finally:
        for s in socks:
            s.close()
    resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert commit_one(d, "unix", "after") >= 0
    d.wait_log(r"accepting again after \d+ pauses for descriptors")


def proc_cpu(pid):
    """CPU seconds (user + system) process PID has used."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the admin endpoint -----------------------------------------------------------

def closed_within(sock, seconds):
    """True once the peer closes SOCK (EOF or reset) within SECONDS."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_admin_connections_are_capped(daemon_factory):
    """16 admin connections at once; the 17th is closed at once, and a
    request is served again once one of them goes."""
    d = admin_daemon(daemon_factory, ready=False)
    idle = [socket.create_connection(("127.0.0.1", d.admin_port), timeout=5)
            for _ in range(16)]
    try:
        extra = socket.create_connection(("127.0.0.1", d.admin_port), timeout=5)
        assert closed_within(extra, 3), "the 17th admin connection was not closed"
        extra.close()
        assert m(metrics_after_closing(idle), "admin_connections_refused_total") >= 1
    finally:
        for s in idle:
            s.close()


def metrics_after_closing(idle):
    """Close one of IDLE (a slot frees) and read /metrics through it."""
    port = idle[0].getpeername()[1]
    idle.pop(0).close()
    return wait_for(lambda: _try_metrics(port), timeout=5, what="/metrics after a slot freed")


def _try_metrics(port):
    try:
        return metrics(port)
    except (OSError, AssertionError):
        return None


def test_admin_headers_have_an_absolute_deadline(daemon_factory):
    """One header byte every 2 s keeps evhttp's 10 s timeout from firing; the
    deadline closes the connection 10 s after it opened regardless."""
    d = admin_daemon(daemon_factory, ready=False)
    s = socket.create_connection(("127.0.0.1", d.admin_port), timeout=5)
    try:
        t0 = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        closed = False
        while time.monotonic() - t0 < 16:
            try:
                s.sendall(b"a")
            except OSError:
                closed = True
                break
            if closed_within(s, 2):
                closed = True
                break
        took = time.monotonic() - t0
    finally:
        s.close()
    print(f"\nFIGURE item 4: slow admin client closed after {took:.1f} s")
    assert closed and took < 13
    d.wait_log("did not arrive within 10 s")


# ---- memory -----------------------------------------------------------------------

def announcing(elements, nils):
    """An array32 header announcing ELEMENTS, then NILS nils (never finished)."""
    return b"\xdd" + elements.to_bytes(4, "big") + b"\xc0" * nils


def rss_mib(pid):
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_value_announcing_too_many_elements_is_refused_from_its_header(daemon_factory):
    """1,040,000 elements fit in 1 MiB by bytes, but msgpack-c would take
    25 MB for them: refused as soon as the header arrives."""
    d = daemon_factory()
    with d.connect("tcp") as c:
        c.send_raw(announcing(1_040_000, 1000))
        assert c.wait_closed(5), "the connection was not closed"
    d.wait_log(r"announces 1040000 or more elements, more than listen.max_event_bytes / 4 "
               r"= 262144; connection closed")


def test_unfinished_values_stay_within_max_buffered_bytes(daemon_factory, pg):
    """40 connections each leave a value of 262,000 announced elements
    unfinished (6 MB each in msgpack-c, 250 MB in all): with
    listen.max_buffered_bytes 16 MiB the largest stop being read, memory
    stays bounded, and a small client is still served."""
    d = admin_daemon(daemon_factory, {"listen": {"max_buffered_bytes": 16 * 1048576}})
    base = rss_mib(d.pid)
    socks = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", d.tcp_port), timeout=5)
            s.sendall(announcing(262_000, 200_000))
            socks.append(s)
        wait_for(lambda: d.log_contains("not reading from it while"), timeout=10,
                 what="a connection held for memory")
        time.sleep(1)
        grown = rss_mib(d.pid) - base
        served = commit_one(d, "unix", "small")
        s = metrics(d.admin_port)
        print(f"\nFIGURE item 2: 40 x 262,000 announced elements: RSS +{grown:.0f} MiB "
              f"(buffered_bytes {s[('megaingest_buffered_bytes', ())] / 1048576:.1f} MiB, "
              f"{m(s, 'memory_holds_total'):.0f} holds); small client served in "
              f"{served * 1000:.0f} ms")
        assert m(s, "memory_holds_total") >= 1
        assert m(s, "buffered_bytes") <= 16 * 1048576 + 8 * 1048576
        assert grown < 100
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: m(metrics(d.admin_port), "buffered_bytes") == 0,
             what="the budget back to 0 once they closed")


def test_held_connections_are_read_again_when_memory_frees(daemon_factory):
    """With listen.max_buffered_bytes at 1 MiB, 20 connections each start a
    value announcing 50,000 elements (1.2 MB in msgpack-c): all but one are
    held. Once each sends the rest, every value is read in turn (as the
    budget frees, the held ones are read again): 20 frame errors."""
    d = daemon_factory({"listen": {"max_buffered_bytes": 1048576}})
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", d.tcp_port), timeout=5)
            s.sendall(announcing(50_000, 10))
            socks.append(s)
        d.wait_log("not reading from it while")
        for s in socks:
            s.sendall(b"\xc0" * (50_000 - 10))
        wait_for(lambda: len(d.dead_letters()) == 20, timeout=30,
                 what="20 values read, one after the other")
    finally:
        for s in socks:
            s.close()
    assert all("got 50000 elements" in dl["reason"] for dl in d.dead_letters())
