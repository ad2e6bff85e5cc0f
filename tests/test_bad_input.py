"""Bad input: each case is explained in the log (and, for events, in the
dead-letter file with the field at fault) while the good events beside it
land. Stream-level damage closes only the connection it came on."""

import base64
import datetime
import gzip
import re

import pytest

from helpers import packb, wait_for
from opshelpers import admin_daemon, m, metrics

GOOD_BEFORE = {"mg_id": "good-before", "mg_record_type": "session", "mg_title": "before"}
GOOD_AFTER = {"mg_id": "good-after", "mg_record_type": "session", "mg_title": "after"}


def bad(**fields):
    ev = {"mg_id": "bad-one", "mg_record_type": "generation"}
    ev.update(fields)
    return ev


def str_raw(data):
    """msgpack str (str 8) holding DATA as is, even when it is not UTF-8."""
    return b"\xd9" + bytes([len(data)]) + data


def map_raw(pairs):
    """A msgpack map from (key bytes, value bytes) pairs already packed."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


# name, the bad value as msgpack bytes, the field at fault, the reason pattern
CASES = [
    ("wrong-type", packb(bad(mg_latency_ms="fast")), "mg_latency_ms",
     r"^mg_latency_ms: expected integer, got str$"),
    ("wrong-type-text", packb(bad(mg_prompt=12)), "mg_prompt", r"mg_prompt"),
    ("float-for-int", packb(bad(latency_ms=1.5)), "mg_latency_ms", r"mg_latency_ms"),
    ("map-for-text", packb(bad(mg_model={"a": 1})), "mg_model", r"mg_model"),
    ("out-of-range", packb(bad(mg_input_tokens=2 ** 31)), "mg_input_tokens",
     r"mg_input_tokens"),
    ("below-range", packb(bad(mg_delta=-2 ** 31 - 1)), "mg_delta", r"mg_delta"),
    ("unknown-record-type", packb(bad(mg_record_type="purchase")), "mg_record_type",
     r"mg_record_type"),
    ("record-type-not-text", packb(bad(mg_record_type=3)), "mg_record_type", r"mg_record_type"),
    ("missing-record-type", packb({"mg_id": "bad-one", "mg_title": "x"}), "mg_record_type",
     r"mg_record_type"),
    ("non-utf8-bin", packb(bad(mg_prompt=b"\xff\xfe caf\xe9")), "mg_prompt", r"mg_prompt"),
    ("non-utf8-str", map_raw([(packb("mg_id"), packb("bad-one")),
                              (packb("mg_record_type"), packb("generation")),
                              (packb("mg_prompt"), str_raw(b"caf\xe9 \xc3\x28"))]),
     "mg_prompt", r"mg_prompt"),
    ("nul-in-text", packb(bad(mg_comment="a\x00b")), "mg_comment", r"mg_comment"),
    ("bad-timestamp", packb(bad(mg_deleted_at="yesterday")), "mg_deleted_at", r"mg_deleted_at"),
    ("timestamp-wrong-type", packb(bad(created_at=[1, 2])), "mg_created_at", r"mg_created_at"),
    ("meta-not-a-map", packb(bad(mg_meta="flat")), "mg_meta", r"mg_meta"),
    ("nul-in-meta", packb(bad(mg_meta={"k": "a\x00b"})), "mg_meta", r"mg_meta|\\u0000|NUL"),
    ("empty-id", packb(bad(mg_id="")), "mg_id", r"mg_id"),
    ("id-wrong-type", packb(bad(mg_id=17)), "mg_id", r"mg_id"),
    ("non-string-key", map_raw([(packb("mg_id"), packb("bad-one")),
                                (packb("mg_record_type"), packb("generation")),
                                (packb(7), packb("seven"))]), None, r"key"),
]


def check_dead_letter(dl, field, reason_re, peer_re):
    for key in ("time", "reason", "peer", "event"):
        assert key in dl, f"dead-letter line lacks {key}: {dl}"
    assert re.search(reason_re, dl["reason"]), dl
    if field is not None:
        assert dl["field"] == field, dl
    assert re.match(peer_re, dl["peer"]), dl
    when = dl["time"]
    if isinstance(when, str):
        parsed = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
        assert parsed.tzinfo is not None
    else:
        assert isinstance(when, (int, float)) and when > 1.6e9
    assert dl.get("sqlstate") in (None, ""), "not refused by PostgreSQL"


@pytest.mark.parametrize("name,raw,field,reason_re", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_bad_event_is_dead_lettered(daemon, pg, via, name, raw, field, reason_re):
    with daemon.connect(via) as c:
        c.send_raw(packb(GOOD_BEFORE) + raw + packb(GOOD_AFTER))
        daemon.wait_rows(2)
        # The connection goes on: another event on it still lands.
        c.send_msgpack({"mg_id": "good-later", "mg_record_type": "feedback"})
        daemon.wait_rows(3)
    assert pg.count("mg_id = 'bad-one'") == 0
    dl = daemon.wait_dead_letter(lambda d: True)
    assert len(daemon.dead_letters()) == 1
    peer_re = r"^unix" if via == "unix" else r"^tcp:127\.0\.0\.1:\d+$"
    check_dead_letter(dl, field, reason_re, peer_re)
    line = daemon.wait_log(r"dead-lettered")
    assert re.search(reason_re.strip("^$"), line), line
    if field is not None:
        assert field in line, line
    if name == "wrong-type":
        assert "mg_latency_ms: expected integer, got str" in line
        assert dl["event"] == {"mg_id": "bad-one", "mg_record_type": "generation",
                               "mg_latency_ms": "fast"}


def test_dead_letter_keeps_the_event_as_received(daemon, pg):
    """bin that is not UTF-8 is {"$base64": ...} in the dead-letter event (bin
    holding UTF-8 is a string); the forward tag is kept."""
    raw = b"\xff\xfe not text"
    with daemon.connect(via="tcp") as c:
        c.forward_chunk("mega.generation",
                        [[1700000000, {"mg_id": "b64", "mg_prompt": raw, "n": 1,
                                       "mg_comment": "ok ✓".encode()}]], "c")
    dl = daemon.wait_dead_letter(lambda d: True)
    assert dl["tag"] == "mega.generation"
    assert dl["field"] == "mg_prompt"
    assert dl["event"] == {"mg_id": "b64", "n": 1, "mg_comment": "ok ✓",
                           "mg_prompt": {"$base64": base64.b64encode(raw).decode()}}


def test_bad_events_do_not_fail_the_batch(daemon_factory, pg):
    """Good and bad events interleaved in one batch (long flush interval):
    all good ones commit, each bad one is dead-lettered once."""
    d = daemon_factory({"writer": {"flush_interval_ms": 500}})
    values = []
    for i in range(50):
        values.append(packb({"mg_id": f"ok-{i}", "mg_record_type": "generation"}))
        values.append(CASES[i % len(CASES)][1])
    d.send_raw(b"".join(values))
    d.wait_rows(50)
    wait_for(lambda: len(d.dead_letters()) == 50, what="50 dead-letter lines")
    assert pg.count("mg_id LIKE 'ok-%%'") == 50


def test_value_of_wrong_shape(daemon, pg):
    """Valid msgpack that is neither a map, a forward message nor nil."""
    with daemon.connect() as c:
        c.send_raw(packb(GOOD_BEFORE) + packb(42) + packb(["only-a-tag"]) + packb("text")
                   + packb(["mega.generation", 1700000000, "record-not-a-map"])
                   + packb(GOOD_AFTER))
        daemon.wait_rows(2)
    wait_for(lambda: len(daemon.dead_letters()) == 4, what="4 dead-letter lines")
    assert daemon.running()


def test_garbage_closes_only_that_connection(daemon, pg):
    with daemon.connect() as bystander:
        with daemon.connect(via="tcp") as c:
            c.send_raw(packb(GOOD_BEFORE) + b"\xc1 this is not msgpack \xc1\xc1")
            assert c.wait_closed(), "the daemon kept a connection sending garbage"
        daemon.wait_rows(1)
        bystander.send_msgpack(GOOD_AFTER)
        daemon.wait_rows(2)
    # one line that says what was wrong and that the connection is closed
    daemon.wait_log(r"(?i)^(?=.*clos)(?=.*(msgpack|malformed|invalid|parse|garbage))")
    assert daemon.running()


def test_garbage_warnings_are_rate_limited(daemon_factory, pg):
    """A client can send garbage on as many connections as it likes: each
    closes, but the warning is rate-limited and the rest counted."""
    d = admin_daemon(daemon_factory)
    for _ in range(200):
        with d.connect() as c:
            c.send_raw(b"\xc1 not msgpack")
            assert c.wait_closed(), "the daemon kept a connection sending garbage"
    wait_for(lambda: m(metrics(d.admin_port), "connections") == 0, timeout=10)
    logged = len(re.findall(r"stream is not msgpack", d.log()))
    suppressed = m(metrics(d.admin_port), "log_lines_suppressed_total")
    assert 1 <= logged < 200, f"{logged} warning lines for 200 garbage connections"
    assert suppressed >= 200 - logged, (logged, suppressed)
    d.send_msgpack(GOOD_AFTER)
    d.wait_rows(1)


def test_truncated_value_then_disconnect(daemon, pg):
    full = packb(dict(GOOD_AFTER, mg_id="truncated", mg_prompt="x" * 200))
    with daemon.connect() as c:
        c.send_raw(packb(GOOD_BEFORE) + full[:len(full) // 2])
        daemon.wait_rows(1)
    daemon.wait_log(r"(?i)(incomplete|truncat|partial|unfinished)")
    daemon.send_msgpack(GOOD_AFTER)
    daemon.wait_rows(2)
    assert pg.count("mg_id = 'truncated'") == 0
    assert daemon.running()


def test_oversize_value_closes_the_connection(daemon_factory, pg):
    limit = 65536
    d = daemon_factory({"listen": {"max_event_bytes": limit}})
    near = dict(GOOD_AFTER, mg_id="near-limit", mg_prompt="n" * (limit - 200))
    assert len(packb(near)) < limit
    over = dict(GOOD_AFTER, mg_id="oversize", mg_prompt="o" * (limit + 10))
    with d.connect() as bystander:
        with d.connect(via="tcp") as c:
            c.send_raw(packb(GOOD_BEFORE) + packb(near) + packb(over) + packb(GOOD_AFTER))
            assert c.wait_closed(), "the daemon kept a connection sending oversize values"
        d.wait_rows(2)
        d.wait_log(r"(?i)^(?=.*clos)(?=.*(max_event_bytes|too large|oversize|exceeds|limit))")
        bystander.send_msgpack(dict(GOOD_AFTER, mg_id="bystander"))
        d.wait_rows(3)
    assert pg.count("mg_id = 'oversize'") == 0
    assert pg.count("mg_id = 'near-limit'") == 1


def test_gzip_bomb_closes_the_connection(daemon_factory, pg):
    """Decompressed data is bounded by max_event_bytes x 16."""
    limit = 65536
    d = daemon_factory({"listen": {"max_event_bytes": limit}})
    huge = packb([1700000000, {"mg_id": "bomb", "pad": "z" * (limit * 32)}])
    bomb = gzip.compress(huge)
    assert len(bomb) < limit
    with d.connect() as c:
        c.send_msgpack(["mega.generation", bomb, {"compressed": "gzip", "chunk": "bomb"}])
        assert c.wait_closed(timeout=30)
    d.wait_log(r"(?i)^(?=.*clos)(?=.*(gzip|inflat|decompress))")
    assert d.running()
    d.send_msgpack(GOOD_AFTER)
    d.wait_rows(1, "mg_id = 'good-after'")


def test_a_chunk_id_longer_than_1024_bytes_is_refused(daemon, pg):
    """option.chunk is copied into the ack and kept until the events are
    durable, outside every memory limit: a long one is refused as a bad
    frame (dead-lettered, no ack); one of 1,024 bytes is still acked."""
    with daemon.connect() as c:
        assert c.forward_chunk("mega.generation", [[1_760_000_000, {"mg_id": "chunk-ok"}]],
                               "k" * 1024) == "k" * 1024
        c.forward("mega.generation", [[1_760_000_000, {"mg_id": "chunk-long"}]],
                  chunk="x" * 100_000)
        c.send_msgpack({"mg_id": "after-long", "mg_record_type": "feedback"})
        daemon.wait_rows(2)
    assert pg.count("mg_id = 'chunk-long'") == 0
    dl = daemon.wait_dead_letter(lambda d: True)
    assert "option.chunk: 100000 bytes, longer than 1024" in dl["reason"], dl
