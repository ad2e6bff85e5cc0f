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
