"""SIGHUP reload: live keys change the running daemon, restart-only keys are
logged as such and keep their value, an invalid file is refused with
file:line and changes nothing. (test_delivery.py checks that a plain HUP
and a bad file leave the daemon running; these check what changes.)"""

import copy
import os
import re
import socket
import time

import pytest

from helpers import Client, free_tcp_port, to_yaml, wait_for
from opshelpers import admin_daemon, committed, m, metrics


def rewrite(d, done="configuration reloaded", **sections):
    """Merge SECTIONS into D's config, write the file and SIGHUP; wait for
    the log line DONE, then for the writer's current queue wait (20 ms)
    to end: a wait in progress finishes with the limits it began with."""
    for name, values in sections.items():
        d.config.setdefault(name, {}).update(values)
    d.write_config()
    count = d.log().count(done)
    d.sighup()
    wait_for(lambda: d.log().count(done) > count, what=f"'{done}' in the log")
    time.sleep(0.1)


def batches(d):
    return m(metrics(d.admin_port), "batches_committed_total")


def send_burst(d, prefix, n):
    """N events in one write, so they reach the queue together."""
    d.send_msgpack(*[{"mg_id": f"{prefix}-{i}", "mg_record_type": "session"}
                     for i in range(n)])


def test_reload_log_level(daemon_factory):
    d = admin_daemon(daemon_factory)
    with d.connect():
        pass
    time.sleep(0.2)
    assert not d.log_contains(r" debug "), "no debug lines at level info"
    rewrite(d, log={"level": "debug"})
    assert d.log_contains(r"config: log\.level changed: info -> debug")
    with d.connect():
        pass
    d.wait_log(r"debug listener: conn=\d+ peer=unix: accepted")
    # At warn, "configuration reloaded" is not logged any more.
    rewrite(d, done="log.level changed: debug -> warn", log={"level": "warn"})
    lines = len(d.log().splitlines())
    with d.connect():
        pass
    time.sleep(0.2)
    assert not any(" debug " in line or " info " in line
                   for line in d.log().splitlines()[lines:])


def test_reload_batch_size(daemon_factory, pg):
    """batch_max_events 10000 -> 7: the same burst of 200 events takes one
    or two transactions before and at least 29 after."""
    d = admin_daemon(daemon_factory)
    before = batches(d)
    send_burst(d, "a", 200)
    d.wait_rows(200)
    wait_for(lambda: committed(d) == 200)
    assert batches(d) - before <= 2
    rewrite(d, writer={"batch_max_events": 7})
    assert d.log_contains(r"writer\.batch_max_events changed: 10000 -> 7")
    before = batches(d)
    send_burst(d, "b", 200)
    d.wait_rows(400)
    wait_for(lambda: committed(d) == 400)
    assert batches(d) - before >= 29


def trickle(d, prefix, n, gap):
    with d.connect() as c:
        for i in range(n):
            c.send_msgpack({"mg_id": f"{prefix}-{i}", "mg_record_type": "session"})
            time.sleep(gap)


def test_reload_flush_interval(daemon_factory, pg):
    """One event every 100 ms: with flush_interval_ms 20 nearly every event
    is its own batch; after a reload to 1500 ms they wait and go together."""
    d = admin_daemon(daemon_factory)
    before = batches(d)
    trickle(d, "fast", 15, 0.1)
    d.wait_rows(15)
    assert batches(d) - before >= 10
    rewrite(d, writer={"flush_interval_ms": 1500})
    assert d.log_contains(r"writer\.flush_interval_ms changed: 20 -> 1500")
    before = batches(d)
    trickle(d, "slow", 15, 0.1)
    d.wait_rows(30)
    assert batches(d) - before <= 3


def test_reload_max_connections(daemon_factory):
    d = admin_daemon(daemon_factory)
    rewrite(d, listen={"max_connections": 1})
    with d.connect() as first:
        first.send_msgpack(None)          # a heartbeat: the daemon has it open
        wait_for(lambda: m(metrics(d.admin_port), "connections") == 1)
        with d.connect() as second:
            assert second.wait_closed(timeout=5), "over max_connections: closed at once"
        wait_for(lambda: m(metrics(d.admin_port), "connections_refused_total") == 1)
    d.wait_log(r"refused, listen\.max_connections=1 reached")


def test_reload_restart_only_keys_are_logged_and_kept(daemon_factory, pg, tmp_path):
    d = admin_daemon(daemon_factory)
    old_port, new_port = d.tcp_port, free_tcp_port()
    new_spool = str(tmp_path / "other-spool")
    rewrite(d, listen={"tcp": [f"127.0.0.1:{new_port}"]}, spool={"dir": new_spool},
            log={"level": "debug"})
    assert d.log_contains(r"warn  config: listen\.tcp changed, needs restart "
                          rf"\(keeping \[\"127\.0\.0\.1:{old_port}\"\] until then\)")
    assert d.log_contains(r"warn  config: spool\.dir changed, needs restart")
    assert d.log_contains(r"configuration reloaded; some changes need a restart")
    # The live key of the same file applied; the others did not.
    assert d.log_contains(r"log\.level changed: info -> debug")
    with Client(("127.0.0.1", old_port)) as c:
        c.forward_chunk("mega.session", [[1700000000, {"mg_id": "old-port"}],
                                         [1700000000, {"mg_id": "bad", "mg_latency_ms": "x"}]],
                        "k1")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", new_port), timeout=2).close()
    assert pg.count("mg_id = 'old-port'") == 1
    assert len(d.dead_letters()) == 1, "the dead letter went to the running spool.dir"
    assert not os.path.exists(os.path.join(new_spool, "dead-letter.jsonl"))


def test_reload_invalid_file_changes_nothing(daemon_factory, pg):
    """A file with a live change and an error: the error is reported as
    file:line:col, nothing of the file applies (not even the valid live
    key), and a corrected file then applies."""
    d = admin_daemon(daemon_factory)
    good = copy.deepcopy(d.config)
    bad = copy.deepcopy(good)
    bad["writer"].update({"batch_max_events": 7, "flush_interval_ms": "soon"})
    text = to_yaml(bad) + "\n"
    lineno = next(i for i, line in enumerate(text.splitlines(), 1)
                  if "flush_interval_ms" in line)
    with open(d.config_path, "w") as f:
        f.write(text)
    d.sighup()
    d.wait_log(r"keeping the previous configuration")
    assert d.log_contains(rf"{re.escape(d.config_path)}:{lineno}:\d+: "
                          r"writer\.flush_interval_ms: .*soon")
    assert not d.log_contains(r"batch_max_events changed")
    before = batches(d)
    send_burst(d, "c", 100)
    d.wait_rows(100)
    assert batches(d) - before <= 2, "batch_max_events 7 must not have been applied"
    # The same change without the error applies.
    d.config = good
    rewrite(d, writer={"batch_max_events": 7})
    before = batches(d)
    send_burst(d, "e", 100)
    d.wait_rows(200)
    assert batches(d) - before >= 14


def test_reload_raised_batch_size_with_both_tables(daemon_factory, pg):
    """batch_max_events 4 -> 500, then one batch of 61 events that starts
    with a mega_admin row: the batch is reordered by table in arrays sized
    for the new limit (they once kept the start-up size: a heap overflow)."""
    d = admin_daemon(daemon_factory, {"writer": {"batch_max_events": 4,
                                                 "flush_interval_ms": 300}})
    rewrite(d, writer={"batch_max_events": 500})
    before = batches(d)
    records = [{"mg_id": "aud-big", "mg_record_type": "admin_audit", "action": "view"}]
    records += [{"mg_id": f"big-{i}", "mg_record_type": "session"} for i in range(60)]
    with d.connect() as c:
        c.forward_chunk("mega.admin", [[1_760_000_000, r] for r in records], "big-1")
    d.wait_rows(60)
    assert pg.value("SELECT count(*) FROM mega_admin WHERE mg_id = 'aud-big'") == 1
    assert batches(d) - before == 1, "the 61 events went as one batch"
    assert d.sigterm() == 0


def test_reload_of_writer_connections_keeps_the_running_count(daemon_factory, pg):
    """writer.connections needs a restart: after a reload to 4 the daemon
    still runs (and stops) its one writer; shutdown once walked four."""
    d = admin_daemon(daemon_factory)
    rewrite(d, writer={"connections": 4})
    assert d.log_contains(r"writer\.connections changed, needs restart \(keeping 1")
    d.send_msgpack({"mg_id": "after-reload", "mg_record_type": "session"})
    d.wait_rows(1)
    assert d.sigterm() == 0
    assert d.log_contains("AddressSanitizer") is None
