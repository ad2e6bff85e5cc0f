"""Shared-key authentication: the Fluentd Forward protocol handshake.

The client side here is written from the protocol text (the README,
Fluentd's Forward Protocol Specification v1, "Handshake
Messages"), not from the daemon's code:

  server: ["HELO", {"nonce": 16 random bytes, "auth": "", "keepalive": true}]
  client: ["PING", client_hostname, shared_key_salt,
           hex(sha512(shared_key_salt + client_hostname + nonce + shared_key)),
           username, password]                       (exactly 6 elements)
  server: ["PONG", true, "", server_hostname,
           hex(sha512(shared_key_salt + server_hostname + nonce + shared_key))]
       or ["PONG", false, reason, "", ""] and the connection is closed.
"""

import os
import re
import socket
import time

import pytest

from helpers import packb, uuid7, wait_for
from helpers import session_event as event
from opshelpers import admin_daemon, m, metrics
from tlsauth import KEY, authenticate, check_pong_ok, ping, read_helo, sha512_hex


@pytest.fixture
def authd(daemon_factory):
    """A daemon that requires the handshake on TCP."""
    return daemon_factory({"listen": {"shared_key": KEY, "idle_timeout_s": 5}})


def expect_refused(d, c, reason_re):
    """C gets PONG false with a reason matching REASON_RE, then EOF; the log says why."""
    pong = c.recv_value(timeout=5)
    assert pong[:2] == ["PONG", False] and len(pong) == 5, pong
    assert re.search(reason_re, pong[2]), pong
    assert pong[3:] == ["", ""], pong
    assert c.wait_closed(5), "connection not closed after PONG false"
    d.wait_log(r"authentication failed: .*" + reason_re + r".*; connection closed")


def test_handshake_then_events_with_ack(authd, pg):
    ids = [uuid7() for _ in range(3)]
    with authd.connect("tcp") as c:
        authenticate(c)
        c.forward_chunk("mega.session", [[int(time.time()), event(i)] for i in ids], "ck-1")
    assert pg.count("mg_id = ANY(%s)", (ids,)) == 3
    assert KEY not in authd.log(), "the shared key must never be logged"


def test_nonce_is_fresh_per_connection(authd):
    nonces = set()
    for _ in range(5):
        with authd.connect("tcp") as c:
            nonces.add(read_helo(c))
    assert len(nonces) == 5


def test_ping_and_events_in_one_write(authd, pg):
    """Bytes after the PING in the same segment belong to the event stream."""
    mg_id = uuid7()
    with authd.connect("tcp") as c:
        nonce = read_helo(c)
        msg, salt = ping(nonce)
        c.send_raw(packb(msg) + packb(["mega.session", [[int(time.time()), event(mg_id)]],
                                       {"chunk": "one-write"}]))
        check_pong_ok(c.recv_value(timeout=5), nonce, salt)
        assert c.recv_value() == {"ack": "one-write"}
    assert pg.count("mg_id = %s", (mg_id,)) == 1


def test_ping_split_byte_by_byte(authd, pg):
    mg_id = uuid7()
    with authd.connect("tcp") as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nonce = read_helo(c)
        msg, salt = ping(nonce)
        for b in packb(msg):
            c.send_raw(bytes([b]))
            time.sleep(0.001)
        check_pong_ok(c.recv_value(timeout=5), nonce, salt)
        c.forward_chunk("mega.session", [[int(time.time()), event(mg_id)]], "split")
    assert pg.count("mg_id = %s", (mg_id,)) == 1


def test_ping_fields_as_bin_and_uppercase_hex(authd, pg):
    """The spec allows str or bin for every element; hex is case-insensitive."""
    with authd.connect("tcp") as c:
        nonce = read_helo(c)
        salt = os.urandom(16)
        digest = sha512_hex(salt, "binhost", nonce, KEY).upper()
        c.send_raw(packb([b"PING", b"binhost", salt, digest.encode(), b"", b""]))
        check_pong_ok(c.recv_value(timeout=5), nonce, salt)


def test_wrong_key_is_refused(authd, pg):
    mg_id = uuid7()
    with authd.connect("tcp") as c:
        nonce = read_helo(c)
        msg, _ = ping(nonce, key="not-the-key")
        # An event right behind the bad PING must never be accepted.
        c.send_raw(packb(msg) + packb(event(mg_id)))
        expect_refused(authd, c, r"shared_key mismatch")
    time.sleep(0.3)
    assert pg.count("mg_id = %s", (mg_id,)) == 0
    assert authd.dead_letters() == []


def test_event_before_ping_is_refused(authd, pg):
    mg_id = uuid7()
    with authd.connect("tcp") as c:
        read_helo(c)
        c.send_msgpack(event(mg_id))
        expect_refused(authd, c, r"event \(a map\) arrived before the PING")
    time.sleep(0.3)
    assert pg.count("mg_id = %s", (mg_id,)) == 0
    assert authd.dead_letters() == []


def test_forward_message_before_ping_is_refused(authd, pg):
    mg_id = uuid7()
    with authd.connect("tcp") as c:
        read_helo(c)
        c.forward("mega.session", [[int(time.time()), event(mg_id)]], chunk="early")
        expect_refused(authd, c, r"message arrived before the PING")
    time.sleep(0.3)
    assert pg.count("mg_id = %s", (mg_id,)) == 0


def test_client_that_ignores_helo_is_refused(authd, pg):
    """A plain fluent-logger client (no handshake support) is refused, not served."""
    from fluent import sender
    mg_id = uuid7()
    s = sender.FluentSender("mega", host="127.0.0.1", port=authd.tcp_port, timeout=3)
    s.emit("session", event(mg_id))
    s.close()
    authd.wait_log(r"authentication failed: a message arrived before the PING")
    time.sleep(0.3)
    assert pg.count("mg_id = %s", (mg_id,)) == 0


def test_replayed_ping_from_another_connection_fails(authd, pg):
    with authd.connect("tcp") as a:
        recorded = authenticate(a)
    with authd.connect("tcp") as b:
        read_helo(b)
        b.send_raw(recorded)
        expect_refused(authd, b, r"shared_key mismatch")


def test_second_ping_on_the_same_connection_is_not_a_handshake(authd, pg):
    """After the handshake the stream is events: a PING again is a bad frame,
    dead-lettered, and the connection still works."""
    mg_id = uuid7()
    with authd.connect("tcp") as c:
        raw = authenticate(c)
        c.send_raw(raw)
        c.forward_chunk("mega.session", [[int(time.time()), event(mg_id)]], "after")
    assert pg.count("mg_id = %s", (mg_id,)) == 1
    authd.wait_dead_letter(lambda dl: "frame" in dl["reason"])


MALFORMED = [
    ("five-elements", lambda n: packb(["PING", "h", b"s", "0" * 128, ""]),
     r"PING: expected 6 elements, got 5"),
    ("seven-elements", lambda n: packb(["PING", "h", b"s", "0" * 128, "", "", ""]),
     r"PING: expected 6 elements, got 7"),
    ("host-is-int", lambda n: packb(["PING", 7, b"s", "0" * 128, "", ""]),
     r"PING element 1 \(client_hostname\): expected str or bin, got int"),
    ("digest-is-map", lambda n: packb(["PING", "h", b"s", {"a": 1}, "", ""]),
     r"PING element 3 \(shared_key_hexdigest\): expected str or bin, got map"),
    ("digest-not-hex", lambda n: packb(["PING", "h", b"s", "z" * 128, "", ""]),
     r"expected 128 hex characters"),
    ("digest-short", lambda n: packb(["PING", "h", b"s", sha512_hex(b"s", "h", n, KEY)[:127],
                                      "", ""]),
     r"expected 128 hex characters"),
    ("not-an-array", lambda n: packb("PING"), r"expected the PING message, got str"),
    ("empty-array", lambda n: packb([]), r"expected the PING message, got an empty array"),
    ("not-msgpack", lambda n: b"\xc1\xc1\xc1", r"not msgpack"),
    ("huge-array-header", lambda n: b"\xdd\xff\xff\xff\xff" + packb("PING"),
     r"PING: expected 6 elements, got 4294967295"),
    ("huge-str-header", lambda n: b"\x96\xa4PING\xdb\xff\xff\xff\xff" + b"x" * 5000,
     r"PING larger than 4096 bytes"),
    ("oversized", lambda n: packb(["PING", "h" * 5000, b"s", "0" * 128, "", ""]),
     r"PING larger than 4096 bytes"),
]


@pytest.mark.parametrize("name,build,reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_ping_is_refused(authd, pg, name, build, reason):
    with authd.connect("tcp") as c:
        nonce = read_helo(c)
        c.send_raw(build(nonce))
        expect_refused(authd, c, reason)
    # The daemon is unharmed and still serves an honest client.
    with authd.connect("tcp") as c:
        authenticate(c)


def test_silent_client_is_cut_at_idle_timeout(daemon_factory):
    d = daemon_factory({"listen": {"shared_key": KEY, "idle_timeout_s": 1}})
    with d.connect("tcp") as c:
        read_helo(c)
        start = time.monotonic()
        assert c.wait_closed(5)
        assert 0.8 <= time.monotonic() - start <= 3
    d.wait_log(r"no complete value for listen.idle_timeout_s=1")


def test_unix_socket_needs_no_handshake(authd, pg):
    """The Unix socket is guarded by its file mode; it gets no HELO."""
    mg_id = uuid7()
    with authd.connect("unix") as c:
        c.sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            c.sock.recv(1)
        c.forward_chunk("mega.session", [[int(time.time()), event(mg_id)]], "unix-ok")
    assert pg.count("mg_id = %s", (mg_id,)) == 1


def test_no_handshake_without_a_key(daemon, pg):
    mg_id = uuid7()
    with daemon.connect("tcp") as c:
        c.forward_chunk("mega.session", [[int(time.time()), event(mg_id)]], "plain")
    assert pg.count("mg_id = %s", (mg_id,)) == 1


def test_many_failed_handshakes_leave_the_daemon_serving(daemon_factory, pg):
    """200 wrong keys in a row: each is counted, but a client that fails at
    will cannot fill the log (the warning is rate-limited, the rest counted
    as suppressed), and the daemon goes on serving."""
    authd = admin_daemon(daemon_factory, {"listen": {"shared_key": KEY}})
    for i in range(200):
        with authd.connect("tcp") as c:
            nonce = read_helo(c)
            c.send_raw(packb(ping(nonce, key=f"guess-{i}")[0]))
            pong = c.recv_value(timeout=5)
            assert pong[:2] == ["PONG", False]
    wait_for(lambda: m(metrics(authd.admin_port), "auth_failures_total") == 200, timeout=10)
    samples = metrics(authd.admin_port)
    logged = len(re.findall(r"authentication failed: shared_key mismatch", authd.log()))
    suppressed = m(samples, "log_lines_suppressed_total")
    assert 1 <= logged < 200, f"{logged} warning lines for 200 failed handshakes"
    assert suppressed >= 200 - logged, (logged, suppressed)
    mg_id = uuid7()
    with authd.connect("tcp") as c:
        authenticate(c)
        c.forward_chunk("mega.session", [[int(time.time()), event(mg_id)]], "still-ok")
    assert pg.count("mg_id = %s", (mg_id,)) == 1
