"""megactl replay: dead-letter lines go back through the daemon's normal path
once their cause is fixed; lines that fail again land in a new dead-letter
file, never in the one being replayed. Over TCP, replay speaks the listener's
shared-key handshake and TLS (the PKI and key of tlsauth.py)."""

import json
import os
import socket
import subprocess
import threading
import time

import msgpack
import pytest

from helpers import deep_merge, event_time, packb, to_yaml
from opshelpers import MEGACTL
from tlsauth import KEY, sha512_hex, tls_conf

BAD_BIN = b"\xff\xfe\x00raw"


def poison_check(pg, on):
    if on:
        pg.sql("ALTER TABLE mega_generations ADD CONSTRAINT mi_test_replay "
               "CHECK (mg_prompt IS DISTINCT FROM 'poison')")
    else:
        pg.sql("ALTER TABLE mega_generations DROP CONSTRAINT IF EXISTS mi_test_replay")


def replay(d, path, *args):
    return subprocess.run([MEGACTL, "replay", "-c", d.config_path, *args, path],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def send_mixed(d):
    """Two rows PostgreSQL refuses (CHECK), one event refused on arrival (a
    string latency), one whose mg_meta holds bytes that are not UTF-8, and
    two good ones; Forward times 1700000100 + i."""
    entries = [
        [event_time(1700000100), {"mg_id": "rp-good-0", "prompt": "fine"}],
        [event_time(1700000101, 5000), {"mg_id": "rp-poison-1", "prompt": "poison",
                                        "latency_ms": 11, "extra": {"k": [1, 2]}}],
        [event_time(1700000102), {"mg_id": "rp-bad-2", "latency_ms": "slow"}],
        [event_time(1700000103), {"prompt": "poison", "mg_pass_id": "pass-9"}],
        [event_time(1700000104), {"mg_id": "rp-bytes-4", "blob": BAD_BIN}],
        [event_time(1700000105), {"mg_id": "rp-good-5"}],
    ]
    d.forward_chunk("mega.generation", entries, "mixed")


def test_replay_after_the_cause_is_fixed(pg, daemon, tmp_path):
    poison_check(pg, True)
    try:
        send_mixed(daemon)
        assert pg.count() == 2
        first = daemon.dead_letters()
        assert len(first) == 4
        refused = [x for x in first if x["sqlstate"] == "23514"]
        assert len(refused) == 2
        # A refused row is written as the daemon built it, times in RFC 3339.
        assert refused[0]["event"]["mg_created_at"].endswith("Z")
        moved = str(tmp_path / "to-replay.jsonl")
        os.rename(daemon.dead_letter_path(), moved)
    finally:
        poison_check(pg, False)

    r = replay(daemon, moved)
    assert r.returncode == 0, r.stderr
    assert "6 lines" not in r.stdout and "4 lines, 4 events sent and acknowledged" in r.stdout, r.stdout
    # The refused rows are in now, with the values and creation time they came with.
    row = pg.row("rp-poison-1")
    assert row["mg_prompt"] == "poison" and row["mg_latency_ms"] == 11
    assert row["mg_meta"]["extra"] == {"k": [1, 2]}
    assert row["mg_created_at"].timestamp() == pytest.approx(1700000101.000005)
    derived = pg.rows("SELECT * FROM mega_generations WHERE mg_pass_id = 'pass-9'")
    assert len(derived) == 1 and derived[0]["mg_prompt"] == "poison"
    assert pg.count() == 4
    # The two that fail again are in a new dead-letter file, exactly as before.
    again = daemon.dead_letters()
    assert sorted(x["event"]["mg_id"] for x in again) == ["rp-bad-2", "rp-bytes-4"]
    before = {x["event"]["mg_id"]: x for x in first if x["event"].get("mg_id") in
              ("rp-bad-2", "rp-bytes-4")}
    for x in again:
        old = before[x["event"]["mg_id"]]
        assert x["event"] == old["event"]              # bin survived as {"$base64": ...}
        assert x["event_time"] == old["event_time"]    # sent with its first time
        assert x["reason"] == old["reason"]
    assert {"$base64"} == set(before["rp-bytes-4"]["event"]["blob"])
    assert len(read_lines(moved)) == 4                 # nothing written into the replayed file

    # Replaying the same file again changes nothing: no duplicates.
    r = replay(daemon, moved)
    assert r.returncode == 0, r.stderr
    assert pg.count() == 4


def test_replay_reports_lines_it_cannot_send(daemon, pg, tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = {"time": "2026-01-02T03:04:05.000Z", "reason": "x", "tag": "mega.session",
            "event": {"mg_id": "rp-ok", "title": "t\u00e9\n\"q\""}}
    path.write_text("\n".join([
        json.dumps(good),
        "{not json",
        json.dumps({"reason": "no event here"}),
        json.dumps({"event": None}),
        "",
    ]) + "\n")
    r = replay(daemon, str(path))
    assert r.returncode == 1
    assert f"{path}:2:2: expected a string key; line not sent" in r.stderr, r.stderr
    assert f"{path}:3: no \"event\" to send" in r.stderr, r.stderr
    assert f"{path}:4: no \"event\"" in r.stderr, r.stderr
    assert "1 events sent and acknowledged" in r.stdout
    row = pg.row("rp-ok")
    assert row["mg_record_type"] == "session" and row["mg_title"] == "t\u00e9\n\"q\""
    # Without a forward time in the line, its dead-letter time is the event time.
    assert row["mg_created_at"].isoformat().startswith("2026-01-02T03:04:05")


def test_replay_without_a_daemon(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"event": {"mg_id": "x"}}) + "\n")
    sock = str(tmp_path / "nobody.sock")
    r = subprocess.run([MEGACTL, "replay", "--unix", sock, str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 1
    assert f"cannot connect to {sock}" in r.stderr
    r = subprocess.run([MEGACTL, "replay"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=30)
    assert r.returncode == 2 and "usage: megactl replay" in r.stderr


def test_replay_json_stand_ins_round_trip(daemon, pg, tmp_path):
    """{"$base64"} comes back as bin and {"$ext", "$base64"} as ext: an event
    whose mg_meta held a valid UTF-8 bin and an EventTime ext lands with
    them as the daemon stores such values."""
    payload = {"mg_id": "rp-ext", "note": {"$base64": "aGVsbG8="},
               "when": {"$ext": 0, "$base64": "ZVMVgAAAAAA="}}
    path = tmp_path / "ext.jsonl"
    path.write_text(json.dumps({"tag": "mega.feedback", "event": payload}) + "\n")
    r = replay(daemon, str(path))
    assert r.returncode == 0, r.stderr
    row = pg.row("rp-ext")
    assert row["mg_record_type"] == "feedback"
    assert row["mg_meta"]["note"] == "hello"
    # The same value sent directly gives the same row: the stand-in is exact.
    daemon.forward_chunk("mega.feedback", [[1, {"mg_id": "rp-ext-direct", "note": b"hello",
                                                "when": msgpack.ExtType(0, bytes.fromhex(
                                                    "6553158000000000"))}]], "direct")
    assert pg.row("rp-ext-direct")["mg_meta"] == row["mg_meta"]


# ---- protected TCP listeners: the shared-key handshake and TLS ----------------



def dead_letter_file(tmp_path, ids, name="dl.jsonl"):
    """A dead-letter file holding one session event per id in IDS."""
    path = tmp_path / name
    path.write_text("".join(json.dumps({"time": "2026-01-02T03:04:05.000Z", "reason": "x",
                                        "tag": "mega.session",
                                        "event": {"mg_id": i, "title": "again"}}) + "\n"
                            for i in ids))
    return str(path)


def tcp_only_config(d, tmp_path):
    """D's configuration without its Unix socket: what megactl reads when the
    daemon listens on TCP alone (the daemon itself keeps its socket)."""
    path = tmp_path / "tcp-only.yaml"
    path.write_text(to_yaml(deep_merge(d.config, {"listen": {"unix": ""}})) + "\n")
    return str(path)


def megactl_replay(*args):
    return subprocess.run([MEGACTL, "replay", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def key_file(tmp_path, key, name="key"):
    path = tmp_path / name
    path.write_text(key + "\n")                     # the newline an editor adds
    return str(path)


def test_replay_over_tcp_with_the_shared_key(daemon_factory, pg, tmp_path):
    d = daemon_factory({"listen": {"shared_key": KEY}})
    # From the config alone: no Unix socket there, so its TCP listener and key.
    r = megactl_replay("-c", tcp_only_config(d, tmp_path),
                       dead_letter_file(tmp_path, ["rk-1", "rk-2"]))
    assert r.returncode == 0, r.stderr
    assert "2 events sent and acknowledged" in r.stdout, r.stdout
    assert pg.count("mg_id IN ('rk-1', 'rk-2')") == 2
    # With --tcp and the key from a file.
    r = megactl_replay("--tcp", f"127.0.0.1:{d.tcp_port}", "--shared-key-file",
                       key_file(tmp_path, KEY), dead_letter_file(tmp_path, ["rk-3"], "b.jsonl"))
    assert r.returncode == 0, r.stderr
    assert pg.row("rk-3")["mg_title"] == "again"
    assert d.log_contains(r"authentication failed") is None, d.log()
    assert KEY not in r.stdout + r.stderr + d.log()


def test_replay_with_a_wrong_key_sends_nothing(daemon_factory, pg, tmp_path):
    d = daemon_factory({"listen": {"shared_key": KEY}})
    r = megactl_replay("--tcp", f"127.0.0.1:{d.tcp_port}", "--shared-key-file",
                       key_file(tmp_path, "not-the-key"), dead_letter_file(tmp_path, ["rw-1"]))
    assert r.returncode == 1, r.stdout
    assert "refused the shared-key handshake: shared_key mismatch" in r.stderr, r.stderr
    assert "0 events sent" in r.stdout, r.stdout
    d.wait_log(r"authentication failed: shared_key mismatch")
    assert pg.count() == 0
    assert "not-the-key" not in r.stdout + r.stderr
    # No key at all against a listener that wants one: told so, nothing sent.
    r = megactl_replay("--tcp", f"127.0.0.1:{d.tcp_port}", "--timeout", "2",
                       dead_letter_file(tmp_path, ["rw-2"], "b.jsonl"))
    assert r.returncode == 1 and pg.count() == 0
    assert "the listener wants the shared-key handshake" in r.stderr, r.stderr


def test_replay_over_tls_with_the_ca(daemon_factory, pg, tmp_path, certs):
    d = daemon_factory(tls_conf(certs, shared_key=KEY))
    # TLS and the key come from the config; the server's CA from --ca.
    r = megactl_replay("-c", tcp_only_config(d, tmp_path), "--ca", certs["ca"][0],
                       dead_letter_file(tmp_path, ["rt-1", "rt-2"]))
    assert r.returncode == 0, r.stderr
    assert pg.count("mg_id IN ('rt-1', 'rt-2')") == 2
    d.wait_log(r"TLS established: TLSv1\.[23] ")
    # --tls named on the command line with --tcp, and --insecure skipping the check.
    r = megactl_replay("--tcp", f"127.0.0.1:{d.tcp_port}", "--insecure", "--shared-key-file",
                       key_file(tmp_path, KEY), dead_letter_file(tmp_path, ["rt-3"], "b.jsonl"))
    assert r.returncode == 0, r.stderr
    assert pg.count("mg_id = 'rt-3'") == 1


def test_replay_over_tls_with_an_untrusted_ca(daemon_factory, pg, tmp_path, certs):
    d = daemon_factory(tls_conf(certs))
    dl = dead_letter_file(tmp_path, ["ru-1"])
    r = megactl_replay("--tcp", f"127.0.0.1:{d.tcp_port}", "--ca", certs["otherca"][0], dl)
    assert r.returncode == 1, r.stdout
    assert "TLS handshake failed: the daemon's certificate is not trusted" in r.stderr, r.stderr
    assert "0 events sent" in r.stdout, r.stdout
    # Plain bytes to the TLS port are refused as well, with a hint.
    r = megactl_replay("--tcp", f"127.0.0.1:{d.tcp_port}", "--timeout", "2", dl)
    assert r.returncode == 1
    time.sleep(0.3)
    assert pg.count() == 0


def test_replay_tls_options_need_tcp(tmp_path):
    dl = dead_letter_file(tmp_path, ["x"])
    for extra in (["--tls"], ["--shared-key-file", "k"], ["--ca", "c", "--insecure",
                                                          "--tcp", "127.0.0.1:1"]):
        r = megactl_replay("--unix", "/nonexistent.sock", *extra, dl) if "--tcp" not in extra \
            else megactl_replay(*extra, dl)
        assert r.returncode == 2, (extra, r.stderr)
        assert "usage: megactl replay" in r.stderr


def test_replay_with_a_client_certificate(daemon_factory, pg, tmp_path, certs):
    """A listener with tls.ca wants a client certificate; the config's CA
    also checks the daemon's (both come from the test CA)."""
    d = daemon_factory(tls_conf(certs, ca=True))
    cfg = tcp_only_config(d, tmp_path)
    r = megactl_replay("-c", cfg, "--cert", certs["client"][0], "--key", certs["client"][1],
                       dead_letter_file(tmp_path, ["rc-1"]))
    assert r.returncode == 0, r.stderr
    assert pg.count("mg_id = 'rc-1'") == 1
    d.wait_log(r"TLS established: .*client=.*CN\s*=\s*app-backend-1")
    # Without it the daemon refuses the connection, and nothing lands.
    r = megactl_replay("-c", cfg, dead_letter_file(tmp_path, ["rc-2"], "b.jsonl"))
    assert r.returncode == 1, r.stdout
    # TLS 1.3 tells the client on its first read or write: an alert or a reset.
    assert "certificate required" in r.stderr or "--cert FILE" in r.stderr, r.stderr
    assert pg.count("mg_id = 'rc-2'") == 0


def fake_forward_server(honest):
    """A one-connection TCP server playing a listener with a shared key, written
    from the protocol text: HELO, check the PING, then a PONG whose digest is
    right (HONEST) or made with another key; an honest one acks the chunk.
    Returns (port, thread, seen): seen gets the PING and the bytes after it."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(20)
    seen = {"after": b""}

    def serve():
        conn, _ = srv.accept()
        with srv, conn:
            conn.settimeout(10)
            unp = msgpack.Unpacker(raw=False)

            def value():
                while True:
                    for v in unp:
                        return v
                    data = conn.recv(65536)
                    if not data:
                        return None
                    seen["after"] += data if "ping" in seen else b""
                    unp.feed(data)

            nonce = os.urandom(16)
            conn.sendall(packb(["HELO", {"nonce": nonce, "auth": "", "keepalive": True}]))
            ping = seen["ping"] = value()
            _, host, salt, digest, _, _ = ping
            seen["ping_ok"] = digest == sha512_hex(salt, host, nonce, KEY)
            key = KEY if honest else "another-key"
            conn.sendall(packb(["PONG", True, "", "fake", sha512_hex(salt, "fake", nonce, key)]))
            msg = value()
            if honest and msg is not None:
                conn.sendall(packb({"ack": msg[2]["chunk"]}))
            while value() is not None:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t, seen


@pytest.mark.parametrize("honest", [True, False])
def test_replay_checks_the_pong(tmp_path, honest):
    """replay's PING is what the spec says, and a PONG from someone without
    the key stops it before any event is sent."""
    port, t, seen = fake_forward_server(honest)
    r = megactl_replay("--tcp", f"127.0.0.1:{port}", "--timeout", "5", "--shared-key-file",
                       key_file(tmp_path, KEY), dead_letter_file(tmp_path, ["rf-1"]))
    t.join(15)
    assert seen.get("ping_ok"), seen
    assert len(seen["ping"]) == 6 and seen["ping"][0] == "PING" and seen["ping"][4:] == ["", ""]
    if honest:
        assert r.returncode == 0, r.stderr
        assert "1 events sent and acknowledged" in r.stdout, r.stdout
    else:
        assert r.returncode == 1, r.stdout
        assert "PONG does not prove it knows the shared key" in r.stderr, r.stderr
        assert seen["after"] == b"", "events sent after a PONG that failed its check"


# ---- every JSON value type, through the real daemon and on the wire ----------

# Lines of a dead-letter file, one per value type; written by hand so each
# JSON spelling (escapes, number forms, stand-ins) is exactly as given.
_TYPES_EVENT = (
    r'{"mg_id":"rt-types","mg_latency_ms":7,"mg_delta":-42,'
    r'"mg_title":"smile \ud83d\ude00 caf\u00e9 é \"q\" \\ \/ \t.",'
    r'"big":18446744073709551615,"min":-9223372036854775808,"huge":18446744073709551616,'
    r'"f":0.1,"tiny":1.5e-7,"nz":-0,"one":1.0,'
    r'"nest":{"a":[1,[2,{"b":null}],true,false,{}],"e":[]},'
    r'"hello":{"$base64":"aGVsbG8="},"when":{"$ext":0,"$base64":"ZVMVgAAAAAA="},'
    r'"plain":{"$base64":5},"later":{"$base64":"AA==","$ext":1},'
    r'"more":{"$base64":"AA==","x":1}}')


def _dl_line(event_text, tag="mega.session"):
    return '{"time":"2026-01-02T03:04:05Z","reason":"x","tag":"%s","event":%s}' % (
        tag, event_text)


def test_replay_every_value_type(daemon, pg, tmp_path):
    """Each msgpack type a dead-letter line can carry reaches PostgreSQL (or
    the new dead-letter file, for what the daemon refuses again) as the type
    it was: an int stays an int, 2.0 stays a float, the full uint64 and int64
    ranges are exact, bin and ext come back as bin and ext; bad lines are
    named by number, and the good ones are sent all the same."""
    deep = "[" * 70 + "]" * 70
    lines = [
        _dl_line(_TYPES_EVENT),                                                  # 1
        _dl_line('{"mg_id":"rt-float","mg_latency_ms":2.0}'),                    # 2
        _dl_line('{"mg_id":"rt-uint","mg_latency_ms":18446744073709551615}'),    # 3
        _dl_line('{"mg_id":"rt-neg","mg_delta":-9223372036854775808}'),          # 4
        _dl_line('{"mg_id":"rt-bin","blob":{"$base64":"//4AcmF3"}}'),            # 5
        _dl_line('{"mg_id":"rt-ext","x":{"$ext":5,"$base64":"AQID"},'
                 '"y":[{"$ext":-128,"$base64":""}]}'),                           # 6
        _dl_line('{"mg_id":"rt-nul","s":"a\\u0000b"}'),                          # 7
        _dl_line('{"mg_id":"rt-bad" "x":1}'),                                    # 8
        _dl_line('{"mg_id":"rt-deep","d":%s}' % deep),                           # 9
        _dl_line('{"mg_id":"rt-b64","blob":{"$base64":"a"}}'),                   # 10
        '[1, 2]',                                                                # 11
        '{"event": {"mg_id": "rt-trailing"}} x',                                 # 12
        '{"event": {"mg_id": "rt-eol", "x": ',                                   # 13
    ]
    path = tmp_path / "types.jsonl"
    path.write_text("\n".join(lines) + "\n")
    r = replay(daemon, str(path))
    assert r.returncode == 1, r.stderr
    assert "13 lines, 7 events sent and acknowledged in 1 chunks, 6 lines not sendable" \
        in r.stdout, r.stdout
    err = r.stderr.splitlines()
    assert len(err) == 6, r.stderr
    assert err[0].startswith(f"megactl replay: {path}:8:") and \
        err[0].endswith(": expected ',' or '}'; line not sent"), err
    assert err[1].startswith(f"megactl replay: {path}:9:") and \
        ": nested too deeply" in err[1] and err[1].endswith("; line not sent"), err
    assert err[2].startswith(f"megactl replay: {path}:10:") and \
        err[2].endswith(': bad base64 in a {"$base64"} value; line not sent'), err
    assert err[3] == f"megactl replay: {path}:11: not a JSON object; line not sent", err
    assert err[4].startswith(f"megactl replay: {path}:12:") and \
        err[4].endswith(": text after the JSON value; line not sent"), err
    assert err[5].startswith(f"megactl replay: {path}:13:") and \
        err[5].endswith(": unexpected end of line; line not sent"), err

    row = pg.row("rt-types")
    assert row["mg_latency_ms"] == 7 and row["mg_delta"] == -42
    assert row["mg_title"] == 'smile \U0001F600 caf\u00e9 \u00e9 "q" \\ / \t.'
    meta = row["mg_meta"]
    assert meta["big"] == 18446744073709551615 and meta["min"] == -9223372036854775808
    assert meta["huge"] == 18446744073709552000     # past uint64: a float
    assert meta["f"] == 0.1 and meta["tiny"] == 1.5e-7 and meta["nz"] == 0
    assert meta["nest"] == {"a": [1, [2, {"b": None}], True, False, {}], "e": []}
    assert meta["hello"] == "hello"                  # bin that is UTF-8
    assert meta["when"] == "2023-11-14T06:36:48Z"    # EventTime ext 0x65531580
    assert meta["plain"] == {"$base64": 5}           # not stand-ins: maps
    assert meta["later"] == {"$base64": "AA==", "$ext": 1}
    assert meta["more"] == {"$base64": "AA==", "x": 1}

    again = {x["event"]["mg_id"]: x for x in daemon.dead_letters()}
    assert sorted(again) == ["rt-bin", "rt-ext", "rt-float", "rt-neg", "rt-nul", "rt-uint"]
    assert "expected integer, got float" in json.dumps(again["rt-float"])
    assert "18446744073709551615 is outside the int4 range" in json.dumps(again["rt-uint"])
    assert "-9223372036854775808 is outside the int4 range" in json.dumps(again["rt-neg"])
    # What the daemon refuses again is written as it came: the stand-ins and
    # the NUL exactly as in the replayed file.
    sent = {json.loads(ln)["event"]["mg_id"]: json.loads(ln)["event"] for ln in lines[:7]}
    for k in ("rt-bin", "rt-ext", "rt-nul"):
        assert again[k]["event"] == sent[k], k
        assert again[k]["event_time"].startswith("2026-01-02T03:04:05")


def _ack_server(sock_path):
    """A one-connection Forward listener on a Unix socket that acks every
    chunk and keeps the events it got, as msgpack-python decodes them (int
    and float, str and bytes, ExtType kept apart; maps as lists of pairs)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    srv.settimeout(20)
    got = []

    def serve():
        conn, _ = srv.accept()
        with srv, conn:
            conn.settimeout(10)
            unp = msgpack.Unpacker(raw=False, object_pairs_hook=_Map, strict_map_key=False,
                                   ext_hook=lambda code, data: ("ext", code, data))
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                unp.feed(data)
                for msg in unp:
                    got.extend(ev for _, ev in msg[1])
                    conn.sendall(packb({"ack": dict(msg[2])["chunk"]}))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, got


class _Map(list):
    """A msgpack map as its list of (key, value) pairs, duplicates kept."""


def _typed(v):
    """V with its msgpack type made explicit, for exact comparison."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, float):
        return ("float", repr(v))
    if isinstance(v, bytes):
        return ("bin", v)
    if isinstance(v, _Map):
        return ("map", [(_typed(k), _typed(x)) for k, x in v])
    if isinstance(v, list):
        return [_typed(x) for x in v]
    return v


# (JSON text of a value, what msgpack must carry); each is sent as {"v": value}.
_WIRE_VALUES = [
    ("1", ("int", 1)), ("-1", ("int", -1)), ("-0", ("int", 0)),
    ("1.0", ("float", "1.0")), ("1e2", ("float", "100.0")), ("1E+2", ("float", "100.0")),
    ("-0.0", ("float", "-0.0")), ("0.1", ("float", "0.1")),
    ("18446744073709551615", ("int", 18446744073709551615)),
    ("18446744073709551616", ("float", "1.8446744073709552e+19")),
    ("-9223372036854775808", ("int", -9223372036854775808)),
    ("-9223372036854775809", ("float", "-9.223372036854776e+18")),
    ("true", True), ("false", False), ("null", None),
    (r'"\ud83d\ude00 \u00e9 é \/\b\f\n\r\t\"\\"', "\U0001F600 \u00e9 \u00e9 /\b\f\n\r\t\"\\"),
    (r'"a\u0000b"', "a\x00b"), ('""', ""),
    ('{"$base64":"//4AcmF3"}', ("bin", BAD_BIN)), ('{"$base64":""}', ("bin", b"")),
    ('{ "$base64" : "AA==" }', ("bin", b"\x00")), (r'{"\u0024base64":"AA=="}', ("bin", b"\x00")),
    ('{"$ext":5,"$base64":"AQID"}', ("ext", 5, b"\x01\x02\x03")),
    ('{"$ext":-128,"$base64":""}', ("ext", -128, b"")),
    ('{"$ext":127,"$base64":"AA=="}', ("ext", 127, b"\x00")),
    ('{"$ext":-0,"$base64":"AA=="}', ("ext", 0, b"\x00")),
    ('{"$ext":128,"$base64":"AA=="}',
     ("map", [("$ext", ("int", 128)), ("$base64", "AA==")])),
    ('{"$ext":1.0,"$base64":"AA=="}',
     ("map", [("$ext", ("float", "1.0")), ("$base64", "AA==")])),
    ('{"$ext":1}', ("map", [("$ext", ("int", 1))])),
    ('{"$ext":"1","$base64":"AA=="}', ("map", [("$ext", "1"), ("$base64", "AA==")])),
    ('{"$base64":"AA==","$ext":1}', ("map", [("$base64", "AA=="), ("$ext", ("int", 1))])),
    ('{"$base64":5}', ("map", [("$base64", ("int", 5))])),
    ('{"$base64":"AA==","x":1}', ("map", [("$base64", "AA=="), ("x", ("int", 1))])),
    ('{"$base64":"AA==","$base64":"AA=="}', ("map", [("$base64", "AA=="), ("$base64", "AA==")])),
    ('{"$base64":{"$base64":"AA=="}}', ("map", [("$base64", ("bin", b"\x00"))])),
    ('[{"$base64":"AA=="},[{"$ext":1,"$base64":"AA=="}],{}]',
     [("bin", b"\x00"), [("ext", 1, b"\x00")], ("map", [])]),
    ('{"a":1,"a":2}', ("map", [("a", ("int", 1)), ("a", ("int", 2))])),
    ("[]", []), ("{}", ("map", [])),
]


def test_replay_sends_each_json_value_as_its_msgpack_type(tmp_path):
    """On the wire, megactl sends every JSON value of a line as the msgpack
    type the dead-letter writer made it from: ints and floats apart, the
    full uint64 and int64 ranges, escapes decoded, stand-ins as bin and ext
    and only those (anything else shaped like one stays a map)."""
    sock = str(tmp_path / "fwd.sock")
    t, got = _ack_server(sock)
    lines = [_dl_line('{"v":%s}' % text, "t") for text, _ in _WIRE_VALUES]
    path = tmp_path / "wire.jsonl"
    path.write_text("\n".join(lines) + "\n")
    r = megactl_replay("--unix", sock, "--timeout", "10", str(path))
    t.join(15)
    assert r.returncode == 0, r.stderr
    assert f"{len(lines)} lines, {len(lines)} events sent and acknowledged in 1 chunks, " \
        "0 lines not sendable" in r.stdout, r.stdout
    assert len(got) == len(lines)
    for (text, want), ev in zip(_WIRE_VALUES, got):
        assert _typed(ev) == ("map", [("v", want)]), text


def _nest(n, inner):
    return "[" * n + inner + "]" * n


def _nested(n, v):
    for _ in range(n):
        v = [v]
    return v


DEEP_WHY = "nested too deeply (the daemon takes maps and arrays 29 levels deep in an event)"


def test_replay_refuses_lines_nested_deeper_than_the_daemon_takes(daemon, pg, tmp_path):
    """The daemon's Forward input decodes a message 32 levels deep, three of
    them [tag, [[time, event]], option]: an event may nest maps and arrays
    29 deep, itself included, and a stand-in there is bin or ext, no level.
    A deeper line is refused by megactl, named by its number; the lines
    around it still land (sent, it would make the daemon close the
    connection, failing its whole chunk and ending the replay)."""
    lines = [
        _dl_line('{"mg_id":"rd-29","x":%s}' % _nest(28, "1")),
        _dl_line('{"mg_id":"rd-bin","x":%s}' % _nest(28, '{"$base64":"aGk="}')),
        _dl_line('{"mg_id":"rd-30","x":%s}' % _nest(29, "1")),
        _dl_line('{"mg_id":"rd-empty","x":%s}' % _nest(28, "{}")),
        _dl_line('{"mg_id":"rd-map","x":%s}' % _nest(28, '{"$ext":1}')),
        _dl_line('{"mg_id":"rd-40","x":%s}' % _nest(39, "1")),
        _dl_line('{"mg_id":"rd-after"}'),
    ]
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    r = replay(daemon, str(path))
    assert r.returncode == 1, r.stderr
    assert "7 lines, 3 events sent and acknowledged in 1 chunks, 4 lines not sendable" \
        in r.stdout, (r.stdout, r.stderr)
    err = r.stderr.splitlines()
    assert [e.split(":")[2] for e in err] == ["3", "4", "5", "6"], r.stderr
    for e in err:
        assert e.endswith(f": {DEEP_WHY}; line not sent"), e
    assert pg.count("mg_id IN ('rd-29', 'rd-bin', 'rd-after')") == 3
    assert pg.row("rd-bin")["mg_meta"]["x"] == _nested(28, "hi")
    assert pg.count("mg_id IN ('rd-30', 'rd-empty', 'rd-map', 'rd-40')") == 0


def test_replay_refuses_what_json_does_not_allow(daemon, pg, tmp_path):
    """A line must be JSON (RFC 8259): UTF-8, strings without raw control
    characters, numbers without '+', leading zeros or a bare '.', and \\u
    escapes that pair their UTF-16 surrogates. Anything else is refused with
    the reason and column, not sent as bytes no dead-letter line holds."""
    bad = [
        (r'{"mg_id":"rj-1","s":"a\ud800b"}', r"\ud800 in a string is half of a UTF-16 "
         "surrogate pair"),
        (r'{"mg_id":"rj-2","s":"\udc00"}', r"\udc00 in a string is half"),
        (r'{"mg_id":"rj-3","s":"\ud83d\u0041"}', r"\ud83d in a string is half"),
        ('{"mg_id":"rj-4","s":"a\xffb"}', "invalid bytes in UTF8 string"),
        ('{"mg_id":"rj-5","s":"a\tb"}', "invalid character inside string"),
        ('{"mg_id":"rj-6","n":+1}', "invalid char in json text"),
        ('{"mg_id":"rj-7","n":01}', "expected ',' or '}'"),
        ('{"mg_id":"rj-8","n":.5}', "invalid char in json text"),
    ]
    lines = [_dl_line(text).encode("latin-1") for text, _ in bad]
    lines.append(_dl_line(r'{"mg_id":"rj-ok","mg_title":"\ud83d\ude00"}').encode())
    path = tmp_path / "strict.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    r = replay(daemon, str(path))
    assert r.returncode == 1, r.stderr
    assert "9 lines, 1 events sent and acknowledged in 1 chunks, 8 lines not sendable" \
        in r.stdout, (r.stdout, r.stderr)
    err = r.stderr.splitlines()
    assert len(err) == len(bad), r.stderr
    for i, ((text, why), e) in enumerate(zip(bad, err)):
        assert e.startswith(f"megactl replay: {path}:{i + 1}:") and f": {why}" in e, e
    assert pg.row("rj-ok")["mg_title"] == "\U0001F600"
    assert pg.count("mg_id LIKE 'rj-_'") == 0 and daemon.dead_letters() == []
