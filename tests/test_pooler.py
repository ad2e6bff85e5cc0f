"""The daemon behind a connection pooler: a real PgBouncer (started by the
pgbouncer fixture) in transaction mode, as Supabase's pooler port and most
PgBouncer deployments run, in session mode, and the direct connection.

In transaction mode every transaction may run on a different server
connection, and PgBouncer closes server connections idle for longer than
server_idle_timeout (2 s here): whatever a session set up at connect time is
gone by the next transaction. Each test sends acked Forward chunks, waits
past that timeout, sends more, and then counts the rows: every acked event
exactly once. Every wait is bounded: a stalled writer fails the test."""

import threading
import time

import psycopg2
import pytest

from helpers import DAEMON_ROLE, SLOW, WAIT_TIMEOUT, free_tcp_port
from opshelpers import admin_get, wait_ready

EVENTS = 2000           # per round
CHUNK = 100             # events per Forward message
WINDOW = 4              # chunks in flight per connection
ACK_TIMEOUT = 20 * SLOW  # the longest wait for one ack
IDLE_GAP = 3            # > server_idle_timeout (2 s): the server connections close
MODES = ["transaction", "session", "direct"]


def route(mode, pgbouncer, pg, settings=None, unix=False):
    """The daemon's conninfo for MODE ("direct": the cluster itself), and the
    PgBouncer started for it (None when direct)."""
    if mode == "direct":
        return pg.daemon_conninfo, None
    b = pgbouncer(mode, settings)
    return (b.daemon_conninfo_unix if unix else b.daemon_conninfo), b


def events(prefix, start, n):
    """N events with ids PREFIX-START .. PREFIX-(START+N-1)."""
    return [[1700000000 + i, {"mg_id": f"{prefix}-{i}", "mg_pass_id": f"pass-{i % 7}",
                              "prompt": f"p{i}", "latency_ms": i}]
            for i in range(start, start + n)]


def send_round(d, prefix, start, n=EVENTS, via="unix"):
    """Send N events as acked chunks of CHUNK, up to WINDOW in flight, on one
    connection; return how many events were acked (stops at the first ack
    that does not come within ACK_TIMEOUT)."""
    chunks = [(f"{prefix}-chunk-{first}", first, min(CHUNK, start + n - first))
              for first in range(start, start + n, CHUNK)]
    acked, sent, inflight = 0, 0, []
    with d.connect(via) as c:
        while sent < len(chunks) or inflight:
            while sent < len(chunks) and len(inflight) < WINDOW:
                chunk, first, size = chunks[sent]
                c.forward("mega.generation", events(prefix, first, size), chunk=chunk)
                inflight.append((chunk, size))
                sent += 1
            try:
                reply = c.recv_value(ACK_TIMEOUT)
            except AssertionError:
                break
            chunk, size = inflight.pop(0)
            assert reply == {"ack": chunk}, f"unexpected reply {reply!r} for {chunk}"
            acked += size
    return acked


def assert_round(d, prefix, start, what, n=EVENTS, via="unix"):
    acked = send_round(d, prefix, start, n, via)
    assert acked == n, (f"{what}: {acked} of {n} events acked "
                        f"(no ack within {ACK_TIMEOUT} s)")


def assert_exactly(pg, prefix, n):
    """mega_generations holds exactly ids PREFIX-0 .. PREFIX-(N-1), once each."""
    total, distinct = pg.sql("SELECT count(*), count(DISTINCT mg_id) FROM mega_generations "
                             "WHERE mg_id LIKE %s", (prefix + "-%",))[0]
    ids = {r[0] for r in pg.sql("SELECT mg_id FROM mega_generations WHERE mg_id LIKE %s",
                                (prefix + "-%",))}
    lost = {f"{prefix}-{i}" for i in range(n)} - ids
    assert (total, distinct, len(lost)) == (n, n, 0), \
        f"{total} rows, {distinct} distinct ids, {len(lost)} lost (expected {n}, {n}, 0)"


def daemon_via(daemon_factory, conninfo, writers, extra=None):
    # A short drain: a writer stuck on the pooler spools at teardown quickly.
    cfg = {"postgres": {"conninfo": conninfo},
           "writer": {"connections": writers, "drain_timeout_s": 5}}
    for key, value in (extra or {}).items():
        cfg.setdefault(key, {}).update(value)
    return daemon_factory(cfg)


@pytest.mark.parametrize("writers", [1, 2])
@pytest.mark.parametrize("mode", MODES)
def test_two_rounds_across_server_idle_timeout(pgbouncer, daemon_factory, pg, mode, writers):
    """2,000 acked events, a pause in which PgBouncer closes its idle server
    connections, 2,000 more: all acked, 4,000 rows, none lost or doubled."""
    conninfo, _ = route(mode, pgbouncer, pg)
    d = daemon_via(daemon_factory, conninfo, writers)
    assert_round(d, "r", 0, "first round")
    time.sleep(IDLE_GAP)
    assert_round(d, "r", EVENTS, f"second round, after {IDLE_GAP} s idle")
    assert_exactly(pg, "r", 2 * EVENTS)
    assert d.dead_letters() == []


@pytest.mark.parametrize("mode", MODES)
def test_two_overlapping_clients(pgbouncer, daemon_factory, pg, mode):
    """Two clients send at the same time (one over TCP, one over the Unix
    socket) into two writers that reach PgBouncer through its Unix socket;
    again after the idle gap. Every event of both lands once."""
    conninfo, _ = route(mode, pgbouncer, pg, unix=True)
    d = daemon_via(daemon_factory, conninfo, 2)
    acked = {}

    def client(name, via, start):
        acked[(name, start)] = send_round(d, name, start, via=via)

    for start in (0, EVENTS):
        if start:
            time.sleep(IDLE_GAP)
        threads = [threading.Thread(target=client, args=("ta", "tcp", start)),
                   threading.Thread(target=client, args=("ua", "unix", start))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(EVENTS / CHUNK * ACK_TIMEOUT)
        assert not any(t.is_alive() for t in threads), "a client still sending"
        assert acked == {**acked, ("ta", start): EVENTS, ("ua", start): EVENTS}, \
            f"events acked per (client, first id): {acked}"
    assert_exactly(pg, "ta", 2 * EVENTS)
    assert_exactly(pg, "ua", 2 * EVENTS)


class Hog:
    """Another client of the pooler, as the daemon's role (so the same pool):
    short transactions back to back, each noting its server's backend pid,
    so that the daemon's transactions land on whichever server is free."""

    def __init__(self, bouncer):
        self.bouncer = bouncer
        self.pids = set()
        self.transactions = 0
        self.error = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        try:
            conn = self.bouncer.connect(DAEMON_ROLE)
            conn.autocommit = False
            try:
                while not self.stopping.is_set():
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_backend_pid(), pg_sleep(0.01)")
                        self.pids.add(cur.fetchone()[0])
                    conn.commit()
                    self.transactions += 1
            finally:
                conn.close()
        except psycopg2.Error as e:
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the pooler's other client did not stop"


@pytest.mark.parametrize("writers", [1, 2])
def test_server_connections_reassigned_mid_stream(pgbouncer, daemon_factory, pg, writers):
    """Transaction mode with as many server connections for the daemon's
    role as it has writers, a second client running transactions through
    the same pool throughout (so every writer's transactions move between
    server connections), and server_lifetime = 1: PgBouncer replaces each
    server connection a second after it opened, mid-stream. 2 x 2,000
    events stream in; all land once."""
    conninfo, b = route("transaction", pgbouncer, pg,
                        {"default_pool_size": writers, "server_lifetime": 1})
    d = daemon_via(daemon_factory, conninfo, writers)
    with Hog(b) as hog:
        assert_round(d, "m", 0, "first round, pool shared")
        time.sleep(IDLE_GAP)
        assert_round(d, "m", EVENTS, "second round, pool shared")
    assert hog.error is None, f"the pooler's other client failed: {hog.error}"
    assert hog.transactions > 0 and len(hog.pids) >= 2, \
        (f"the other client ran {hog.transactions} transactions on server pids "
         f"{hog.pids}: no server connection was replaced")
    assert_exactly(pg, "m", 2 * EVENTS)


def test_readyz_200_while_committing_through_the_pooler(pgbouncer, daemon_factory, pg):
    """admin.http's /readyz answers 200 throughout, before, during and after
    two rounds of acked events through transaction pooling, and the events
    are committed."""
    conninfo, _ = route("transaction", pgbouncer, pg)
    port = free_tcp_port()
    d = daemon_via(daemon_factory, conninfo, 2, {"admin": {"http": f"127.0.0.1:{port}"}})
    wait_ready(port)
    statuses = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                status, _, body = admin_get(port, "/readyz")
                statuses.append((status, body.strip()))
            except OSError as e:
                statuses.append(("no answer", str(e)))
            stop.wait(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        assert_round(d, "z", 0, "first round")
        time.sleep(IDLE_GAP)
        assert_round(d, "z", EVENTS, "second round")
    finally:
        stop.set()
        poller.join(30)
    bad = [s for s in statuses if s[0] != 200]
    assert statuses and not bad, f"/readyz not 200 in {len(bad)} of {len(statuses)}: {bad[:3]}"
    assert admin_get(port, "/readyz")[0] == 200
    assert_exactly(pg, "z", 2 * EVENTS)


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_pooler_killed_and_started_again(pgbouncer, daemon_factory, pg, mode):
    """PgBouncer SIGKILLed between two rounds: the second round is acked
    from the spool while the pooler is down, and once it listens again
    (same port, new server connections) every event is committed once."""
    conninfo, b = route(mode, pgbouncer, pg)
    d = daemon_via(daemon_factory, conninfo, 2,
                   {"writer": {"retry_initial_ms": 100, "retry_max_ms": 1000}})
    assert_round(d, "k", 0, "first round")
    b.kill()
    assert_round(d, "k", EVENTS, "second round, the pooler down")
    b.start()
    d.wait_rows(2 * EVENTS, "mg_id LIKE 'k-%'", timeout=WAIT_TIMEOUT)
    assert_exactly(pg, "k", 2 * EVENTS)
