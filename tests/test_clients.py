"""Real clients: python3-fluent-logger (sender and asyncsender) and raw
msgpack in every Forward protocol mode, over TCP and the Unix socket."""

import datetime
import time

import pytest
from fluent import asyncsender, sender

from helpers import event_time, packb

UTC = datetime.timezone.utc
T0 = datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)   # epoch 1700000000


def generation(i, **extra):
    ev = {"mg_id": f"gen-{i}", "mg_pass_id": "pass-fluent", "mg_prompt": f"prompt {i} ✓",
          "latency_ms": 100 + i, "model": "m-1", "status": "succeeded",
          "client": {"name": "fluent-logger", "i": i}}
    ev.update(extra)
    return ev


def check_generation(pg, i, **extra):
    row = pg.row(f"gen-{i}")
    assert row is not None, f"gen-{i} did not land"
    assert row["mg_record_type"] == "generation"
    assert row["mg_pass_id"] == "pass-fluent"
    assert row["mg_prompt"] == f"prompt {i} ✓"
    assert row["mg_latency_ms"] == 100 + i
    assert row["mg_model"] == "m-1"
    assert row["mg_status"] == "succeeded"
    assert row["mg_meta"] == {"client": {"name": "fluent-logger", "i": i}}
    for key, value in extra.items():
        assert row[key] == value, key
    return row


@pytest.mark.parametrize("via", ["tcp", "unix"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["int-time", "eventtime"])
def test_fluent_sender(daemon, pg, via, nanosecond):
    host = "127.0.0.1" if via == "tcp" else "unix://" + daemon.unix_path
    s = sender.FluentSender("mega", host=host, port=daemon.tcp_port,
                            nanosecond_precision=nanosecond)
    try:
        for i in range(20):
            assert s.emit("generation", generation(i)), s.last_error
        assert s.emit_with_time("generation", 1700000000.25 if nanosecond else 1700000000,
                                generation(99))
    finally:
        s.close()
    daemon.wait_rows(21)
    for i in range(20):
        check_generation(pg, i)
    expect = T0 + datetime.timedelta(microseconds=250000 if nanosecond else 0)
    check_generation(pg, 99, mg_created_at=expect)
    assert daemon.dead_letters() == []


def test_fluent_asyncsender(daemon, pg):
    s = asyncsender.FluentSender("mega", host="127.0.0.1", port=daemon.tcp_port,
                                 nanosecond_precision=True, queue_maxsize=1000)
    try:
        for i in range(200):
            assert s.emit("generation", generation(i)), s.last_error
    finally:
        s.close()   # flushes the queue before returning
    daemon.wait_rows(200)
    for i in range(200):
        check_generation(pg, i)


def test_fluent_sender_record_type_from_tag(daemon, pg):
    s = sender.FluentSender("app.mega", host="127.0.0.1", port=daemon.tcp_port)
    try:
        assert s.emit("feedback", {"mg_id": "fb-1", "generation_id": "gen-1",
                                   "result_type": "thumbs_up", "comment": "nice"})
        assert s.emit("credit_transaction", {"mg_id": "tx-1", "pass_id": "p", "delta": -3,
                                             "reason": "generation", "ref_id": "gen-1"})
    finally:
        s.close()
    daemon.wait_rows(2)
    fb, tx = pg.row("fb-1"), pg.row("tx-1")
    assert (fb["mg_record_type"], fb["mg_generation_id"], fb["mg_result_type"],
            fb["mg_comment"]) == ("feedback", "gen-1", "thumbs_up", "nice")
    assert (tx["mg_record_type"], tx["mg_pass_id"], tx["mg_delta"], tx["mg_reason"],
            tx["mg_ref_id"]) == ("credit_transaction", "p", -3, "generation", "gen-1")


# ---- raw msgpack ------------------------------------------------------------

@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_plain_maps(daemon, pg, via):
    daemon.send_msgpack(*[dict(generation(i), mg_record_type="generation") for i in range(10)],
                        via=via)
    daemon.wait_rows(10)
    for i in range(10):
        check_generation(pg, i)


@pytest.mark.parametrize("via", ["unix", "tcp"])
@pytest.mark.parametrize("mode", ["message", "forward", "packed", "gzip"])
def test_forward_modes_with_ack(daemon, pg, via, mode):
    n = 1 if mode == "message" else 5
    entries = [[event_time(1700000000, i * 1000), generation(i)] for i in range(n)]
    with daemon.connect(via) as c:
        ack = c.forward_chunk("mega.generation", entries, "Y2h1bmstaWQ=\n", mode=mode)
    assert ack == "Y2h1bmstaWQ=\n"
    assert pg.count() == n   # acked: committed
    for i in range(n):
        check_generation(pg, i, mg_created_at=T0 + datetime.timedelta(microseconds=i))


def test_ack_echoes_bin_chunk(daemon, pg):
    chunk = b"\x00\xffbinary-chunk\n"
    with daemon.connect() as c:
        assert c.forward_chunk("mega.generation", [[1700000000, generation(1)]], chunk) == chunk


def test_packed_entries_as_str_and_text_compression(daemon, pg):
    """Fluentd sends packed entries as str; compressed may be "text" (none)."""
    entries = b"".join(packb([1700000000, generation(i)]) for i in range(3))
    # [tag, str entries, option]: fixarray 3, then the entries under a str 32 header
    raw = (b"\x93" + packb("mega.generation")
           + b"\xdb" + len(entries).to_bytes(4, "big") + entries
           + packb({"chunk": "s1", "compressed": "text"}))
    with daemon.connect() as c:
        c.send_raw(raw)
        assert c.recv_value() == {"ack": "s1"}
    for i in range(3):
        check_generation(pg, i)


def test_option_nil_and_absent(daemon, pg):
    with daemon.connect() as c:
        c.send_msgpack(["mega.generation", 1700000000, generation(1), None],
                       ["mega.generation", [[1700000000, generation(2)]]],
                       ["mega.generation", [[1700000000, generation(3)]], None])
    daemon.wait_rows(3)
    for i in (1, 2, 3):
        check_generation(pg, i)


def test_heartbeats_are_ignored(daemon, pg):
    with daemon.connect() as c:
        c.send_msgpack(None, dict(generation(1), mg_record_type="generation"), None, None)
        c.forward("mega.generation", [[1700000000, generation(2)]])
        c.send_msgpack(None)
    daemon.wait_rows(2)
    assert daemon.dead_letters() == []


def test_values_split_across_reads(daemon, pg):
    """A stream fed a few bytes at a time: the decoder completes each value."""
    data = b"".join(packb(dict(generation(i), mg_record_type="generation")) for i in range(5))
    data += packb(["mega.generation", [[1700000000, generation(5)]], {"chunk": "split"}])
    with daemon.connect(via="tcp") as c:
        for off in range(0, len(data), 7):
            c.send_raw(data[off:off + 7])
            time.sleep(0.001)
        assert c.recv_value() == {"ack": "split"}
    daemon.wait_rows(6)
    for i in range(6):
        check_generation(pg, i)


def test_many_values_in_one_write(daemon, pg):
    values = [dict(generation(i), mg_record_type="generation") for i in range(500)]
    with daemon.connect() as c:
        c.send_raw(b"".join(packb(v) for v in values))
    daemon.wait_rows(500)
    check_generation(pg, 499)


def test_connections_are_independent(daemon, pg):
    """Half a value on one connection does not disturb another."""
    half = packb(dict(generation(1), mg_record_type="generation"))
    with daemon.connect() as a, daemon.connect(via="tcp") as b:
        a.send_raw(half[:10])
        b.send_msgpack(dict(generation(2), mg_record_type="generation"))
        daemon.wait_rows(1)
        a.send_raw(half[10:])
        daemon.wait_rows(2)
    check_generation(pg, 1)
    check_generation(pg, 2)
