"""mega_admin, the second output table: admin_audit rows are immutable,
admin_session rows merge (mg_first_seen_at set once, mg_last_seen_at only
rises, the rest replaced when present), mg_actor_pass_id gets customer
stubs, configuration record types are refused. The two tables share one
chunk, one batch, the spool and replay; a spool segment written for other
columns is refused, never misread."""

import glob
import os
import random
import struct
import time
import zlib

from fluent import sender

from helpers import wait_for
from opshelpers import admin_daemon, m, metrics

T0 = 1_760_000_000
USER = "5b3a9f1e-2c4d-4e6f-8a9b-0c1d2e3f4a5b"


def send(daemon, records, tag="mega.admin", t=T0, chunk=None, via="unix"):
    """Send RECORDS as one Forward message (one chunk) and wait for its ack."""
    chunk = chunk or f"chunk-{time.monotonic_ns()}-{random.random()}"
    with daemon.connect(via=via) as c:
        c.forward_chunk(tag, [[t, r] for r in records], chunk)
    return chunk


def audit(mg_id, **cols):
    return dict({"mg_id": mg_id, "mg_record_type": "admin_audit"}, **cols)


def session(mg_id, **cols):
    return dict({"mg_id": mg_id, "mg_record_type": "admin_session"}, **cols)


def admin_row(pg, mg_id):
    rows = pg.rows("SELECT xmin::text AS x, * FROM mega_admin WHERE mg_id = %s", (mg_id,))
    return rows[0] if rows else None


def ts(pg, text):
    return pg.value("SELECT %s::timestamptz", (text,))


def test_fluent_logger_writes_both_admin_types(daemon, pg):
    """A real fluent-logger client, tag mega.admin_audit / mega.admin_session
    (the type from the tag), every column type of the table."""
    s = sender.FluentSender("mega", host="127.0.0.1", port=daemon.tcp_port)
    try:
        assert s.emit("admin_audit", {
            "mg_id": "aud-1", "actor_pass_id": "cust-7", "user_id": USER.upper(),
            "email": "ops@example.com", "ip": "10.0.0.9", "user_agent": "curl/8",
            "action": "refund", "route": "/admin/refund", "method": "POST", "status": 200,
            "detail": {"amount": 5, "why": ["dup", "charge"]}, "ticket": "T-9"}), s.last_error
        assert s.emit("admin_session", {
            "mg_id": "ses-1", "session_hash": "h1", "user_id": USER,
            "first_seen_at": "2026-12-06T10:00:00Z", "last_seen_at": "2026-12-06T10:05:00Z",
            "profile_id": "{0f0e0d0c-0b0a-0908-0706-050403020100}",
            "runtime_flat": {"k": 1}, "value": "a string is JSON too"}), s.last_error
    finally:
        s.close()
    wait_for(lambda: pg.value("SELECT count(*) FROM mega_admin") == 2, what="two admin rows")
    a = admin_row(pg, "aud-1")
    assert a["mg_record_type"] == "admin_audit"
    assert str(a["mg_user_id"]) == USER
    assert (a["mg_action"], a["mg_route"], a["mg_method"], a["mg_status"]) == \
        ("refund", "/admin/refund", "POST", 200)
    assert a["mg_detail"] == {"amount": 5, "why": ["dup", "charge"]}
    assert a["mg_meta"] == {"ticket": "T-9"}          # a key that names no column
    assert a["mg_actor_pass_id"] == "cust-7"
    assert pg.value("SELECT mg_source_system FROM mega_customers WHERE mg_pass_id = 'cust-7'") \
        == "megaingest"                                # the stub the foreign key needs
    s1 = admin_row(pg, "ses-1")
    assert str(s1["mg_profile_id"]) == "0f0e0d0c-0b0a-0908-0706-050403020100"
    assert s1["mg_runtime_flat"] == {"k": 1}
    assert s1["mg_value"] == "a string is JSON too"
    assert s1["mg_first_seen_at"] == ts(pg, "2026-12-06T10:00:00Z")
    assert pg.count() == 0                             # nothing went to mega_generations
    assert daemon.dead_letters() == []


def test_admin_audit_rows_are_immutable(daemon, pg):
    send(daemon, [audit("aud-2", action="login", status=200)])
    before = admin_row(pg, "aud-2")
    send(daemon, [audit("aud-2", action="tampered", status=500)], via="tcp")
    send(daemon, [audit("aud-2", action="login", status=200)])
    after = admin_row(pg, "aud-2")
    assert after == before
    line = daemon.wait_log(r"warn .*mg_id=aud-2: admin_audit rows are immutable")
    assert "ignored" in line


def test_admin_session_merge_rules(daemon, pg):
    """first_seen set once, last_seen only rises, others replaced when
    present and kept when absent, mg_meta merged by key; an exact repeat
    writes no new row version."""
    send(daemon, [session("ses-2", first_seen_at="2026-12-06T10:00:00Z",
                          last_seen_at="2026-12-06T10:10:00Z", ip="1.1.1.1",
                          user_agent="ua-1", extra_a=1)])
    send(daemon, [session("ses-2", first_seen_at="2026-12-06T09:00:00Z",
                          last_seen_at="2026-12-06T10:05:00Z", ip="2.2.2.2", extra_b=2)])
    row = admin_row(pg, "ses-2")
    assert row["mg_first_seen_at"] == ts(pg, "2026-12-06T10:00:00Z")   # set once
    assert row["mg_last_seen_at"] == ts(pg, "2026-12-06T10:10:00Z")    # never lowered
    assert row["mg_ip"] == "2.2.2.2"                                    # replaced
    assert row["mg_user_agent"] == "ua-1"                               # absent: kept
    assert row["mg_meta"] == {"extra_a": 1, "extra_b": 2}
    send(daemon, [session("ses-2", last_seen_at="2026-12-06T11:00:00Z")])
    row = admin_row(pg, "ses-2")
    assert row["mg_last_seen_at"] == ts(pg, "2026-12-06T11:00:00Z")    # rises
    send(daemon, [session("ses-2", last_seen_at="2026-12-06T11:00:00Z", ip="2.2.2.2")])
    assert admin_row(pg, "ses-2")["x"] == row["x"]


def test_configuration_types_and_bad_values_are_refused(daemon_factory, pg):
    daemon = admin_daemon(daemon_factory)
    send(daemon, [{"mg_id": "cfg-1", "mg_record_type": "profile"},
                  {"mg_id": "cfg-2", "mg_record_type": "app_config", "key": "k", "value": 1},
                  {"mg_id": "cfg-3", "mg_record_type": "runtime_config"},
                  audit("bad-uuid", user_id="not-a-uuid"),
                  audit("ok-1", action="kept")])
    wait_for(lambda: len(daemon.dead_letters()) == 4, what="four dead letters")
    by_id = {d["event"]["mg_id"]: d for d in daemon.dead_letters()}
    for mg_id in ("cfg-1", "cfg-2", "cfg-3"):
        assert "is configuration, not an event" in by_id[mg_id]["reason"], by_id[mg_id]
    assert 'mg_user_id: "not-a-uuid" is not a UUID' in by_id["bad-uuid"]["reason"]
    assert admin_row(pg, "ok-1")["mg_action"] == "kept"
    assert pg.value("SELECT count(*) FROM mega_admin") == 1
    s = metrics(daemon.admin_port)
    assert m(s, "events_rejected_total", reason="not_an_event") == 3
    assert m(s, "rows_committed_total", table="mega_admin") == 1
    assert m(s, "rows_committed_total", table="mega_generations") == 0


def test_both_tables_in_one_chunk_one_batch(daemon_factory, pg):
    """One Forward message holding generations and admin events, with an
    mg_id used in both tables and repeats: one batch, each table merged by
    its own rules; the same chunk again changes no row."""
    d = daemon_factory({"writer": {"flush_interval_ms": 300}})
    records = [
        {"mg_id": "mix-1", "mg_record_type": "generation", "status": "pending", "pass_id": "p1"},
        audit("mix-1", action="view", actor_pass_id="p2"),
        session("mix-s", last_seen_at="2026-12-06T10:00:00Z"),
        {"mg_id": "mix-1", "mg_record_type": "generation", "status": "succeeded"},
        session("mix-s", last_seen_at="2026-12-06T09:00:00Z", ip="9.9.9.9"),
    ]
    chunk = send(d, records)
    assert d.log_contains("affect row a second time") is None
    assert pg.row("mix-1")["mg_status"] == "succeeded"
    assert admin_row(pg, "mix-1")["mg_action"] == "view"
    s = admin_row(pg, "mix-s")
    assert s["mg_last_seen_at"] == ts(pg, "2026-12-06T10:00:00Z") and s["mg_ip"] == "9.9.9.9"
    assert sorted(r[0] for r in pg.sql("SELECT mg_pass_id FROM mega_customers")) == ["p1", "p2"]
    versions = pg.sql("SELECT mg_id, xmin::text FROM mega_generations UNION ALL "
                      "SELECT mg_id, xmin::text FROM mega_admin ORDER BY 1, 2")
    send(d, records, chunk=chunk, via="tcp")            # a client resend
    assert pg.sql("SELECT mg_id, xmin::text FROM mega_generations UNION ALL "
                  "SELECT mg_id, xmin::text FROM mega_admin ORDER BY 1, 2") == versions
    assert d.dead_letters() == []


def segments(d):
    return sorted(glob.glob(os.path.join(d.spool_dir, "spool-*.seg")))


def test_admin_events_spooled_while_postgres_is_down(stoppable_pg, stoppable_daemon_factory):
    """Acked from the spool while PostgreSQL is stopped; replayed into both
    tables once it is back, exactly once."""
    d = stoppable_daemon_factory({"writer": {"retry_initial_ms": 100, "retry_max_ms": 500}})
    stoppable_pg.stop_immediate()
    try:
        send(d, [audit("sp-a"), session("sp-s", ip="3.3.3.3"),
                 {"mg_id": "sp-g", "mg_record_type": "generation"}])
        assert segments(d), "nothing was spooled"
    finally:
        stoppable_pg.start_again()
    wait_for(lambda: stoppable_pg.value("SELECT count(*) FROM mega_admin") == 2 and
             stoppable_pg.count() == 1, what="the spool replayed into both tables")
    wait_for(lambda: not segments(d), what="the spool emptied")
    assert stoppable_pg.value("SELECT mg_ip FROM mega_admin WHERE mg_id = 'sp-s'") == "3.3.3.3"


def rewrite_header(path, fingerprint=None, version=None):
    """Change a segment header's fingerprint or version, with a valid CRC."""
    with open(path, "r+b") as f:
        h = bytearray(f.read(32))
        if version is not None:
            h[8:12] = struct.pack("<I", version)
        if fingerprint is not None:
            h[16:20] = struct.pack("<I", fingerprint)
        h[28:32] = struct.pack("<I", zlib.crc32(bytes(h[:28])))
        f.seek(0)
        f.write(h)


def test_segment_of_another_column_set_is_refused(stoppable_pg, stoppable_daemon_factory):
    """A segment whose header names other table columns (or the format
    before the fingerprint) is set aside with an error, never replayed."""
    d = stoppable_daemon_factory({"writer": {"retry_initial_ms": 100, "retry_max_ms": 500}})
    stoppable_pg.stop_immediate()
    try:
        send(d, [audit("fp-1")])
        send(d, [audit("fp-2")], via="tcp")
        segs = segments(d)
        assert segs
        assert d.sigterm() == 0
        rewrite_header(segs[0], fingerprint=0x12345678)
        for other in segs[1:]:
            rewrite_header(other, version=1)
    finally:
        stoppable_pg.start_again()
    d.start()
    line = d.wait_log(r"error .*was written for other table columns")
    assert "NOT replayed" in line and ".foreign" in line
    for p in segs:
        assert os.path.exists(p + ".foreign") and not os.path.exists(p)
    d.send_msgpack(audit("fp-3"))
    wait_for(lambda: stoppable_pg.value("SELECT count(*) FROM mega_admin") == 1,
             what="a new event still written")
    assert stoppable_pg.value("SELECT mg_id FROM mega_admin") == "fp-3"


def test_a_second_segment_set_aside_keeps_the_first(stoppable_pg, stoppable_daemon_factory):
    """Segment numbers start again once every segment was set aside, so a
    later foreign segment can have an earlier one's name: it is set aside
    as NAME.foreign.1, and the first one's events are kept."""
    d = stoppable_daemon_factory({"writer": {"retry_initial_ms": 100, "retry_max_ms": 500}})
    first = {}
    for round_ in (1, 2):
        stoppable_pg.stop_immediate()
        try:
            send(d, [audit(f"fa-{round_}")])
            segs = segments(d)
            assert len(segs) == 1
            assert d.sigterm() == 0
            rewrite_header(segs[0], fingerprint=0x12345678 + round_)
        finally:
            stoppable_pg.start_again()
        d.start()
        d.wait_log(r"error .*was written for other table columns")
        if round_ == 1:
            with open(segs[0] + ".foreign", "rb") as f:
                first = {"path": segs[0], "bytes": f.read()}
    assert segs[0] == first["path"], "the second segment took the first one's name"
    with open(first["path"] + ".foreign", "rb") as f:
        assert f.read() == first["bytes"], "the first segment set aside was overwritten"
    assert os.path.exists(first["path"] + ".foreign.1")


def test_a_json_column_sent_under_both_names_keeps_the_last(daemon, pg):
    """mg_detail and detail (and the other JSONB columns) in one event: the
    last value of each column wins, as for any other column (the repeats
    once used up the per-event JSON slots and refused the event)."""
    send(daemon, [session("js-1", mg_detail={"a": 1}, detail={"a": 2},
                          mg_value=[1], value=[2], mg_runtime_flat={"x": 1},
                          runtime_flat={"x": 2})])
    row = admin_row(pg, "js-1")
    assert row is not None, daemon.dead_letters()
    assert (row["mg_detail"], row["mg_value"], row["mg_runtime_flat"]) == ({"a": 2}, [2], {"x": 2})
