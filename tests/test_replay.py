"""megactl replay: dead-letter lines go back through the daemon's normal path
once their cause is fixed; lines that fail again land in a new dead-letter
file, never in the one being replayed."""

import json
import os
import subprocess

import msgpack
import pytest

from helpers import event_time
from opshelpers import MEGACTL

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
