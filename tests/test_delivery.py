"""Delivery: acks mean committed, nothing lost or doubled under load, and a
SIGTERM drains what is queued."""

import signal
import threading
import time

import pytest

from helpers import SLOW, report, uuid7, wait_for



def chunk_events(prefix, n):
    return [[1700000000 + i, {"mg_id": f"{prefix}-{i}", "mg_pass_id": f"pass-{i % 5}",
                              "prompt": f"p{i}"}] for i in range(n)]


def test_ack_means_visible_to_another_connection(daemon_factory, pg):
    """Right after each ack, a fresh connection sees every row of the chunk.
    The long flush interval makes an early ack (before COMMIT) show."""
    d = daemon_factory({"writer": {"flush_interval_ms": 200}})
    with d.connect(via="tcp") as c:
        for k, n in enumerate([1, 7, 100, 1000, 3, 250]):
            c.forward_chunk("mega.generation", chunk_events(f"c{k}", n), f"chunk-{k}",
                            mode=["forward", "packed", "gzip"][k % 3])
            other = pg.connect()
            try:
                with other.cursor() as cur:
                    cur.execute("SELECT count(*) FROM mega_generations WHERE mg_id LIKE %s",
                                (f"c{k}-%",))
                    assert cur.fetchone()[0] == n, f"chunk {k} acked before its rows committed"
            finally:
                other.close()


def test_ack_covers_dead_letters(daemon, pg):
    """A chunk with an invalid event is still acked, and by then the invalid
    event is in the dead-letter file and the valid ones are committed."""
    entries = chunk_events("dl", 3)
    entries[1][1]["latency_ms"] = "slow"
    daemon.forward_chunk("mega.generation", entries, "with-bad")
    assert pg.count() == 2
    dls = daemon.dead_letters()
    assert len(dls) == 1 and dls[0]["field"] == "mg_latency_ms"
    assert dls[0]["event"]["mg_id"] == "dl-1"


def test_100k_events_over_8_connections_exactly_once(daemon_factory, pg, request):
    """100,000 events over 8 connections (4 TCP, 4 Unix), Forward chunks of
    1,000 with acks and up to 4 chunks in flight per connection. Half the
    events carry a client UUIDv7, half get the daemon's chunk-derived id.
    Every event lands exactly once."""
    total, conns, per_chunk, window = 100_000, 8, 1000, 4
    d = daemon_factory({"log": {"level": "warn"}})
    per_conn = total // conns
    errors = []

    def sender(ci):
        try:
            with d.connect("tcp" if ci % 2 else "unix") as c:
                inflight = set()
                for start in range(0, per_conn, per_chunk):
                    entries = []
                    for i in range(start, min(start + per_chunk, per_conn)):
                        rec = {"mg_pass_id": f"pass-{i % 16}", "prompt": "x" * (i % 50),
                               "latency_ms": i, "n": f"{ci}-{i}"}
                        if ci < conns // 2:
                            rec["mg_id"] = uuid7()
                        entries.append([1700000000 + i, rec])
                    chunk = f"conn{ci}-chunk{start}"
                    c.forward("mega.generation", entries, chunk=chunk,
                              mode=["forward", "packed", "gzip"][start // per_chunk % 3])
                    inflight.add(chunk)
                    while len(inflight) >= window:
                        inflight.remove(c.recv_value(timeout=120)["ack"])
                while inflight:
                    inflight.remove(c.recv_value(timeout=120)["ack"])
        except BaseException as e:     # reported by the main thread
            errors.append(f"connection {ci}: {e!r}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=sender, args=(ci,)) for ci in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=280)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "senders still running"
    assert errors == []
    # Every chunk was acked, so every row is committed: no waiting here.
    assert pg.count() == total
    assert pg.value("SELECT count(DISTINCT mg_meta->>'n') FROM mega_generations") == total
    assert pg.value("SELECT count(*) FROM mega_generations WHERE mg_meta->>'n' IS NULL") == 0
    assert pg.value("SELECT count(*) FROM mega_customers") == 16
    assert d.dead_letters() == []
    report(request, f"100k test: {total} events over {conns} connections, all acked in "
                    f"{elapsed:.2f} s = {total / elapsed:,.0f} events/s "
                    "(end to end, throwaway cluster with fsync=off)")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_drains_queue_and_exits_0(daemon_factory, pg, sig):
    """Events read but not yet written (a flush interval far away) are
    committed on SIGTERM/SIGINT; a pending ack still goes out; exit 0."""
    d = daemon_factory({"writer": {"flush_interval_ms": 60000, "batch_max_events": 100000}})
    d.send_msgpack(*[{"mg_id": f"q-{i}", "mg_record_type": "session", "mg_title": f"t{i}"}
                     for i in range(500)], via="tcp")
    idle = d.connect()        # an idle client must not hold up the exit
    waiting = d.connect()
    waiting.forward("mega.generation", chunk_events("acked", 10), chunk="last-words")
    time.sleep(0.5 * SLOW)    # let the daemon read it all
    assert pg.count() == 0, "the flush interval should have kept the events queued"
    d.signal(sig)
    assert waiting.recv_value(timeout=30) == {"ack": "last-words"}
    assert d.wait_exit() == 0
    assert pg.count("mg_id LIKE 'q-%%'") == 500
    assert pg.count("mg_id LIKE 'acked-%%'") == 10
    idle.close()
    waiting.close()


def test_sighup_keeps_running(daemon, pg):
    """A reload with an unchanged config is harmless: the daemon goes on."""
    daemon.sighup()
    time.sleep(0.2)
    assert daemon.running()
    daemon.send_msgpack({"mg_id": "after-hup", "mg_record_type": "session"})
    daemon.wait_rows(1)


def test_bad_config_on_reload_keeps_running(daemon, pg):
    with open(daemon.config_path, "w") as f:
        f.write("writer:\n  batch_max_events: lots\n")
    daemon.sighup()
    daemon.wait_log(r"writer\.batch_max_events")
    assert daemon.running()
    daemon.send_msgpack({"mg_id": "after-bad-hup", "mg_record_type": "session"})
    daemon.wait_rows(1)


def test_queue_full_applies_backpressure(daemon_factory, pg):
    """A tiny queue: the daemon stops reading instead of dropping; every event
    still lands once."""
    d = daemon_factory({"queue": {"max_events": 16}, "writer": {"batch_max_events": 8}})
    n = 5000
    with d.connect() as c:
        c.forward("mega.generation", chunk_events("bp", n), chunk="bp")
        assert c.recv_value(timeout=120) == {"ack": "bp"}
    assert pg.count() == n
    wait_for(lambda: d.running())
