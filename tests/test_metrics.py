"""Admin HTTP: /metrics read by a real Prometheus parser, /stats, /healthz,
/readyz. Modelled on memcached's t/stats.t: the exact set of metrics, zero
at start, and exact deltas that match what the test sent and what
PostgreSQL holds."""

import json
import re
import threading

from helpers import free_tcp_port, wait_for
from opshelpers import admin_daemon, admin_get, m, metrics, parse_metrics

REASONS = ["not_a_map", "bad_key", "bad_type", "bad_utf8", "nul_byte", "out_of_range",
           "too_long", "bad_timestamp", "bad_meta", "missing_record_type",
           "unknown_record_type", "bad_id", "bad_frame", "unknown_pass_id", "refused",
           "not_an_event"]
TABLES = ["mega_generations", "mega_admin"]
COUNTERS = ["events_received_total", "events_committed_total", "events_dead_lettered_total",
            "batches_committed_total", "postgres_reconnects_total",
            "connections_accepted_total", "connections_refused_total", "acks_sent_total",
            "credit_conflicts_total", "auth_failures_total", "tls_failures_total",
            "dead_letters_refused_total", "dead_letter_bulk_total", "log_lines_suppressed_total",
            "handshake_timeouts_total", "handshakes_evicted_total", "accept_pauses_total",
            "admin_connections_refused_total", "memory_holds_total", "http_bytes_received_total",
            "http_connections_refused_total"]
GAUGES = ["queue_events", "queue_bytes", "spool_bytes", "connections", "postgres_up",
          "uptime_seconds", "dead_letter_full", "buffered_bytes"]
HISTOGRAMS = ["batch_commit_seconds", "event_commit_latency_seconds", "http_request_seconds"]
HTTP_CODES = ["200", "400", "401", "404", "405", "413", "415", "500", "503"]
WRITER_STATES = ["writing", "replaying", "spooling", "holding", "stalled"]
BOUNDS = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
          "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf"]


def expected_samples():
    """Every sample /metrics must carry, as (name, labels) keys."""
    keys = {("megaingest_" + c, ()) for c in COUNTERS}
    keys |= {("megaingest_" + g, ()) for g in GAUGES}
    keys |= {("megaingest_events_rejected_total", (("reason", r),)) for r in REASONS}
    for h in HISTOGRAMS:
        keys |= {(f"megaingest_{h}_bucket", (("le", b),)) for b in BOUNDS}
        keys |= {(f"megaingest_{h}_sum", ()), (f"megaingest_{h}_count", ())}
    keys.add(("megaingest_build_info", (("version", "0.1.0"),)))
    keys |= {("megaingest_writer_state", (("state", st), ("writer", "0")))
             for st in WRITER_STATES}
    keys |= {("megaingest_rows_committed_total", (("table", t),)) for t in TABLES}
    keys |= {("megaingest_http_requests_total", (("code", c),)) for c in HTTP_CODES}
    return keys


def delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


def test_metric_set_types_and_zero_at_start(daemon_factory):
    d = admin_daemon(daemon_factory)
    status, _, text = admin_get(d.admin_port, "/metrics")
    assert status == 200
    samples, types = parse_metrics(text)
    assert set(samples) == expected_samples()
    assert len(samples) == len(COUNTERS) + len(GAUGES) + len(REASONS) + \
        len(HISTOGRAMS) * 19 + 1 + len(WRITER_STATES) + len(TABLES) + len(HTTP_CODES)
    # prometheus_client names counter families without _total
    assert types["megaingest_events_received"] == "counter"
    assert types["megaingest_events_rejected"] == "counter"
    assert types["megaingest_batch_commit_seconds"] == "histogram"
    assert types["megaingest_queue_events"] == "gauge"
    assert text.count("# HELP ") == len(types) == 37
    for c in COUNTERS:
        if c not in ("postgres_reconnects_total", "connections_accepted_total"):
            assert m(samples, c) == 0, c
    assert m(samples, "postgres_reconnects_total") == 1
    for r in REASONS:
        assert m(samples, "events_rejected_total", reason=r) == 0
    for h in HISTOGRAMS:
        assert m(samples, h + "_count") == 0 and m(samples, h + "_sum") == 0
    assert m(samples, "postgres_up") == 1
    for st in WRITER_STATES:
        assert m(samples, "writer_state", writer="0", state=st) == (st == "writing"), st
    assert m(samples, "queue_events") == 0 and m(samples, "queue_bytes") == 0
    assert m(samples, "build_info", version="0.1.0") == 1


def test_counters_match_what_was_sent_and_postgres(daemon_factory, pg):
    d = admin_daemon(daemon_factory)
    before = metrics(d.admin_port)
    good, bad_type, nul = 1500, 7, 2
    with d.connect(via="tcp") as c:
        for k in range(3):
            entries = [[1700000000, {"mg_id": f"ok-{k}-{i}", "mg_pass_id": "p1",
                                     "prompt": "x"}] for i in range(good // 3)]
            c.forward_chunk("mega.generation", entries, f"chunk-{k}")
    with d.connect() as c:
        c.send_msgpack(*[{"mg_id": f"bt-{i}", "mg_record_type": "session",
                          "mg_latency_ms": "slow"} for i in range(bad_type)])
        c.send_msgpack(*[{"mg_id": f"nul-{i}", "mg_record_type": "session",
                          "mg_title": "a\0b"} for i in range(nul)])
    d.wait_rows(good)
    wait_for(lambda: m(metrics(d.admin_port), "events_received_total") == good + bad_type + nul
             and m(metrics(d.admin_port), "connections") == 0)
    # Counted when handed to the dead-letter thread; the line follows.
    wait_for(lambda: len(d.dead_letters()) == bad_type + nul, what="the dead-letter lines")
    after = metrics(d.admin_port)
    dd = delta(after, before)
    assert m(dd, "events_received_total") == good + bad_type + nul
    assert m(dd, "events_committed_total") == good == pg.count()
    assert m(dd, "events_rejected_total", reason="bad_type") == bad_type
    assert m(dd, "events_rejected_total", reason="nul_byte") == nul
    assert sum(m(dd, "events_rejected_total", reason=r) for r in REASONS) == bad_type + nul
    assert m(dd, "events_dead_lettered_total") == bad_type + nul == len(d.dead_letters())
    assert m(dd, "acks_sent_total") == 3
    assert m(dd, "connections_accepted_total") == 2
    assert m(dd, "event_commit_latency_seconds_count") == good
    assert m(dd, "batch_commit_seconds_count") == m(dd, "batches_committed_total") >= 1
    assert 0 < m(after, "event_commit_latency_seconds_sum") < good * 10
    assert m(after, "batch_commit_seconds_bucket", le="+Inf") == \
        m(after, "batch_commit_seconds_count")
    # Buckets are cumulative: never decreasing.
    values = [m(after, "event_commit_latency_seconds_bucket", le=b) for b in BOUNDS]
    assert values == sorted(values) and values[-1] == good


def test_stats_json_holds_the_same_figures(daemon_factory, pg):
    d = admin_daemon(daemon_factory)
    d.send_msgpack(*[{"mg_id": f"j-{i}", "mg_record_type": "session"} for i in range(20)],
                   {"mg_id": "j-bad", "mg_record_type": "nonsense"})
    d.wait_rows(20)
    wait_for(lambda: m(metrics(d.admin_port), "events_committed_total") == 20
             and m(metrics(d.admin_port), "connections") == 0)
    status, ctype, body = admin_get(d.admin_port, "/stats")
    assert status == 200 and ctype == "application/json"
    js = json.loads(body)
    samples = metrics(d.admin_port)
    assert js["version"] == "0.1.0"
    for c in COUNTERS:
        assert js[c] == m(samples, c), c
    for g in GAUGES:
        if g != "uptime_seconds":
            assert js[g] == m(samples, g), g
    assert js["uptime_seconds"] >= 0
    assert js["events_rejected_total"] == {r: m(samples, "events_rejected_total", reason=r)
                                           for r in REASONS}
    assert js["events_rejected_total"]["unknown_record_type"] == 1
    assert js["rows_committed_total"] == {"mega_generations": 20, "mega_admin": 0}
    for h in HISTOGRAMS:
        assert js[h]["count"] == m(samples, h + "_count")
        assert abs(js[h]["sum"] - m(samples, h + "_sum")) < 1e-6
        assert js[h]["buckets"]["+Inf"] == js[h]["count"]
        assert len(js[h]["buckets"]) == len(BOUNDS)


def test_healthz_404_405(daemon_factory):
    d = admin_daemon(daemon_factory)
    assert admin_get(d.admin_port, "/healthz")[::2] == (200, "ok\n")
    status, _, body = admin_get(d.admin_port, "/nope")
    assert status == 404 and "/metrics /stats /healthz /readyz" in body
    assert admin_get(d.admin_port, "/metrics", method="POST")[0] == 405
    assert admin_get(d.admin_port, "/metrics", method="HEAD")[0] == 200


def test_admin_disabled_with_empty_address(daemon_factory):
    d = daemon_factory()          # the harness default is admin.http: ""
    assert d.log_contains(r"admin: serving") is None


def test_admin_port_in_use_fails_start(daemon_factory):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = daemon_factory({"admin": {"http": f"127.0.0.1:{port}"}}, wait=False)
        d.expect_failure = True
        assert d.wait_exit() == 1
    assert d.log_contains(rf"cannot listen on admin.http 127.0.0.1:{port}")


def test_readyz_postgres_down(daemon_factory):
    d = admin_daemon(daemon_factory, {"postgres": {"conninfo": "host=/nonexistent-mi"}},
                     ready=False)
    d.wait_ready()
    status, _, body = admin_get(d.admin_port, "/readyz")
    assert status == 503 and "writer 0 spooling: PostgreSQL is away" in body
    assert admin_get(d.admin_port, "/healthz")[0] == 200
    assert m(metrics(d.admin_port), "postgres_up") == 0


def lock_ledger(pg):
    """Hold an ACCESS EXCLUSIVE lock on the ledger: writers block on it.
    Returns (connection, release function)."""
    conn = pg.connect()
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("LOCK TABLE mega_generations IN ACCESS EXCLUSIVE MODE")

    def release():
        conn.rollback()
        conn.close()
    return conn, release


def test_readyz_queue_full_then_ready_again(daemon_factory, pg):
    """A writer blocked on a table lock: the queue fills, /readyz says so with
    the queue depth as gauges; once the lock goes, ready again."""
    d = admin_daemon(daemon_factory, {"queue": {"max_events": 50},
                                      "writer": {"batch_max_events": 10}})
    _, release = lock_ledger(pg)
    try:
        sender = threading.Thread(target=lambda: d.send_msgpack(
            *[{"mg_id": f"f-{i}", "mg_record_type": "session"} for i in range(200)]))
        sender.start()

        def full_and_settled():
            """/readyz 503 naming a queue depth that /metrics then shows too
            (the writer may still take its first batch in between)."""
            status, _, body = admin_get(d.admin_port, "/readyz")
            match = re.search(r"queue 0 is full \((\d+) events, (\d+) bytes\)", body)
            if status != 503 or not match:
                return None
            samples = metrics(d.admin_port)
            if (m(samples, "queue_events"), m(samples, "queue_bytes")) != \
                    (int(match.group(1)), int(match.group(2))):
                return None
            return samples
        samples = wait_for(full_and_settled, what="/readyz 503: queue full")
        assert m(samples, "queue_events") > 0 and m(samples, "queue_bytes") > 0
    finally:
        release()
    sender.join(30)
    d.wait_rows(200)
    wait_for(lambda: admin_get(d.admin_port, "/readyz")[0] == 200, what="/readyz 200 again")
    assert m(metrics(d.admin_port), "queue_events") == 0


def test_readyz_503_while_draining(daemon_factory, pg):
    """After SIGTERM the daemon drains; /readyz says so while /metrics still
    answers."""
    d = admin_daemon(daemon_factory)
    _, release = lock_ledger(pg)
    try:
        d.send_msgpack({"mg_id": "drain-1", "mg_record_type": "session"})
        wait_for(lambda: m(metrics(d.admin_port), "events_received_total") == 1)
        d.signal(15)
        status, body = wait_for(lambda: (lambda r: r[::2] if r[0] == 503 else None)(
            admin_get(d.admin_port, "/readyz")), what="/readyz 503")
        assert "shutting down" in body
        assert admin_get(d.admin_port, "/metrics")[0] == 200
    finally:
        release()
    assert d.wait_exit() == 0
    assert pg.count() == 1


def test_admin_on_ipv6_loopback(daemon_factory):
    import socket
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        import pytest
        pytest.skip("no IPv6 loopback here")
    port = free_tcp_port()
    d = daemon_factory({"admin": {"http": f"[::1]:{port}"}})
    d.wait_log(rf"serving .* on http://\[::1\]:{port}")
    import http.client
    conn = http.client.HTTPConnection("::1", port, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()


def test_readme_metric_table_matches(daemon_factory):
    """The README's metric table lists exactly what /metrics serves, with
    the same types."""
    import os
    from helpers import SRCDIR
    d = admin_daemon(daemon_factory)
    text = admin_get(d.admin_port, "/metrics")[2]
    served = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    with open(os.path.join(SRCDIR, "README.md"), encoding="utf-8") as f:
        rows = re.findall(r"^\| `(megaingest_[a-z_]+)(?:\{[a-z,]+\})?` \| ([a-z]+) \|",
                          f.read(), re.M)
    assert dict(rows) == served


def test_postgres_up_needs_every_writer(daemon_factory, pg):
    """With two writers, postgres_up is 1 only while both are connected: one
    writer's connection killed (and not yet back) shows 0, then 1 again."""
    d = admin_daemon(daemon_factory, {"writer": {"connections": 2, "retry_initial_ms": 4000,
                                                 "retry_max_ms": 4000}})
    wait_for(lambda: m(metrics(d.admin_port), "postgres_up") == 1, what="postgres_up 1")
    pids = [r[0] for r in pg.sql("SELECT pid FROM pg_stat_activity "
                                 "WHERE application_name = 'megaingestd'")]
    assert len(pids) == 2
    pg.sql("SELECT pg_terminate_backend(%s)", (pids[0],))
    # The writer notices on its next batch: give it one.
    with d.connect() as c:
        c.forward_chunk("mega.session", [[1700000000, {"mg_id": f"pu-{i}"}] for i in range(40)],
                        "pu-chunk")
    # Acked from the spool; the cut-off writer waits out its backoff (>= 2 s).
    assert m(metrics(d.admin_port), "postgres_up") == 0
    wait_for(lambda: m(metrics(d.admin_port), "postgres_up") == 1, timeout=30,
             what="postgres_up back to 1")
    assert d.log_contains(r"writer=\d: connected to PostgreSQL") is not None
