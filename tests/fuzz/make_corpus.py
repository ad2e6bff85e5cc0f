#!/usr/bin/python3
"""make_corpus.py: write the seed corpora and dictionaries of the libFuzzer targets.

  tests/fuzz/corpus/proto/   real client frames: plain maps, the four Forward
                             modes, fluent-style entries, acks, heartbeats,
                             bad events, and PING handshakes
  tests/fuzz/corpus/config/  the shipped config, the test fixtures, variants
  tests/fuzz/proto.dict      msgpack headers, protocol words, column names
  tests/fuzz/config.dict     config keys and YAML punctuation

Every proto seed starts with the control byte fuzz_proto.c reads (bit 7:
through the PING reader first; bits 0-1: listen.max_event_bytes; bits 2-4:
how the rest is cut into reads). The output is deterministic: running this
again rewrites the same files. Run it after changing the frames below and
commit the result.
"""

import gzip
import hashlib
import os
import shutil
import struct
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(os.path.dirname(HERE))
T = 1700000000


def packb(obj):
    return msgpack.packb(obj, use_bin_type=True)


def event_time(sec, nsec=0):
    return msgpack.ExtType(0, struct.pack(">II", sec & 0xFFFFFFFF, nsec))


def uid(n):
    return f"0190b4c6-2f7e-7a3c-9d52-{n:012x}"


GEN = {"mg_id": uid(1), "mg_record_type": "generation", "mg_pass_id": "pass-1",
       "prompt": "a cat in a hat", "model": "flux-1", "latency_ms": 850,
       "input_tokens": 12, "status": "completed", "experiment": "b"}
SESSION = {"mg_id": uid(2), "mg_record_type": "session", "mg_pass_id": "pass-1",
           "title": "first session", "platform": "web"}
FEEDBACK = {"mg_id": uid(3), "mg_record_type": "feedback", "mg_pass_id": "pass-1",
            "rating": 5, "comment": "great", "mg_meta": {"ui": {"v": [1, 2.5, None, True]}}}
CREDIT = {"mg_id": uid(4), "mg_pass_id": "pass-1", "delta": -1, "reason": "generation"}
AUDIT = {"mg_id": uid(8), "mg_record_type": "admin_audit", "actor_pass_id": "pass-1",
         "user_id": "5b3a9f1e-2c4d-4e6f-8a9b-0c1d2e3f4a5b", "action": "refund", "status": 200,
         "detail": {"amount": 5, "why": ["dup"]}, "value": [1, "x"], "ticket": "T-9"}
ADMIN_SESSION = {"mg_id": uid(9), "mg_record_type": "admin_session",
                 "first_seen_at": "2026-12-06 19:57:03+00", "last_seen_at": T,
                 "profile_id": "{0f0e0d0c-0b0a-0908-0706-050403020100}", "ip": "10.0.0.1"}


def entries(recs, t=T):
    return [[t + i, r] for i, r in enumerate(recs)]


def packed(recs, t=T):
    return b"".join(packb(e) for e in entries(recs, t))


def ping(host="client.example", salt=b"0123456789abcdef"):
    digest = hashlib.sha512(salt + host.encode() + bytes(16) + b"fuzz-key").hexdigest()
    return packb(["PING", host, salt, digest, "", ""])


def proto_seeds():
    """(name, control byte, stream bytes)."""
    one = 0x03          # max_event_bytes 1 MiB, one read
    small = 0x01        # 512 bytes: the limit is hit
    bytewise = 0x07     # 1 MiB, one byte per read
    return [
        ("map-generation", one, packb(GEN)),
        ("map-session", one, packb(SESSION)),
        ("map-feedback", one, packb(FEEDBACK)),
        ("map-credit-no-type", one, packb(dict(CREDIT, mg_record_type="credit_transaction"))),
        ("maps-back-to-back", one, packb(GEN) + packb(SESSION) + packb(None) + packb(FEEDBACK)),
        ("maps-bytewise", bytewise, packb(SESSION) + packb(GEN)),
        ("message-int-time", one, packb(["mega.generation", T, GEN])),
        ("message-float-time", one, packb(["mega.session", T + 0.25, SESSION])),
        ("message-eventtime-option", one,
         packb(["mega.feedback", event_time(T, 5), FEEDBACK, {"chunk": "c-1"}])),
        ("message-time-meta", one,
         packb(["mega.session", [event_time(T), {"trace": "x"}], SESSION])),
        ("forward-chunk", one,
         packb(["mega.credit_transaction", entries([CREDIT, dict(CREDIT, mg_id=uid(5))]),
                {"chunk": "c-2", "size": 2}])),
        ("forward-no-option", one, packb(["mega.generation", entries([GEN])])),
        ("forward-nil-option", one, packb(["mega.generation", entries([GEN]), None])),
        ("packed-bin", one, packb(["mega.session", packed([SESSION]), {"chunk": b"c-3\n"}])),
        ("packed-str", one,
         b"\x93" + packb("mega.session") + b"\xdb" + struct.pack(">I", len(packed([SESSION])))
         + packed([SESSION]) + packb({"compressed": "text"})),
        ("compressed-gzip", one,
         packb(["mega.generation", gzip.compress(packed([GEN, SESSION]), mtime=0),
                {"compressed": "gzip", "chunk": "c-4"}])),
        ("fluent-bit-group-markers", one,
         packb(["mega.session", [[event_time(-1 & 0xFFFFFFFF), {}], [T, SESSION],
                                 [event_time(-2 & 0xFFFFFFFF), {}]]])),
        ("timestamp-ext-forms", one,
         packb(dict(GEN, mg_created_at=msgpack.Timestamp(T, 123),
                    mg_updated_at=msgpack.Timestamp(2 ** 34, 0),
                    mg_deleted_at="2023-11-14T22:13:20.5+01:00"))),
        ("bad-types", one, packb(dict(GEN, latency_ms="fast", prompt=12, mg_meta="flat"))),
        ("admin-both-tables", one,
         packb(["mega.admin", entries([AUDIT, ADMIN_SESSION, GEN, dict(AUDIT, user_id="x")]),
                {"chunk": "admin-1"}])),
        ("admin-config-refused", one, packb(dict(AUDIT, mg_record_type="profile"))),
        ("bad-utf8-bin", one, packb(dict(GEN, prompt=b"\xff\xfe"))),
        ("bad-nul", one, packb(dict(GEN, comment="a\x00b", mg_meta={"k": "a\x00"}))),
        ("bad-key-type", one, b"\x82" + packb("mg_id") + packb(uid(6)) + packb(7) + packb(1)),
        ("bad-frame", one, packb(["mega.x", "not-entries", 3, 4, 5]) + packb(42)),
        ("bad-gzip", one, packb(["mega.x", b"\x1f\x8bnot gzip", {"compressed": "gzip"}])),
        ("too-big-for-limit", small, packb(dict(GEN, prompt="p" * 600))),
        ("deep-nesting", one, b"\x91" * 40 + b"\xc0"),
        ("huge-array-header", one, b"\xdd\xff\xff\xff\xff\xc0"),
        ("truncated-value", one, packb(GEN)[:-7]),
        ("ping-then-events", 0x83, ping() + packb(SESSION)),
        ("ping-bytewise", 0x87, ping()),
        ("ping-bin-fields", 0x83,
         packb([b"PING", b"host", b"salt", b"0" * 128, b"", b""])),
        ("ping-wrong-size", 0x83, packb(["PING", "h", "s", "0" * 128, ""])),
        ("event-before-ping", 0x83, packb(GEN)),
    ]


def config_seeds():
    seeds = [("shipped", open(os.path.join(SRCDIR, "etc", "megaingest.yaml"), "rb").read())]
    fixtures = os.path.join(SRCDIR, "tests", "fixtures")
    for name in sorted(os.listdir(fixtures)):
        if name.endswith(".yaml"):
            with open(os.path.join(fixtures, name), "rb") as f:
                seeds.append(("fixture-" + name[:-5], f.read()))
    seeds += [
        ("empty", b""),
        ("minimal", b"postgres:\n  conninfo: \"host=/tmp dbname=x\"\n"),
        ("listen-all", b"listen:\n  tcp: [\"127.0.0.1:24224\", \"[::1]:24224\"]\n"
                       b"  unix: /tmp/x.sock\n  unix_mode: \"0660\"\n  max_connections: 10\n"
                       b"  max_event_bytes: 65536\n  idle_timeout_s: 5\n"
                       b"  shared_key: \"k\"\n  tls: {cert: /a.crt, key: /a.key, ca: /ca.crt}\n"),
        ("flow-style", b"{writer: {connections: 2, batch_max_events: 100}, log: {level: debug}}\n"),
        ("typo-and-bad-values", b"writer:\n  batch_max_event: 10\n  flush_interval_ms: ten\n"
                                b"queue:\n  max_bytes: -1\nlog:\n  level: loud\n"),
        ("anchors", b"a: &x {level: info}\nlog: *x\n"),
        ("syntax-error", b"listen:\n  tcp: [\"127.0.0.1:1\"\n  unix: x\n"),
    ]
    return seeds


COLUMNS = """mg_id mg_record_type mg_pass_id mg_session_id mg_generation_id mg_created_at
    mg_updated_at mg_deleted_at mg_status mg_type mg_prompt mg_model mg_provider mg_latency_ms
    mg_input_tokens mg_output_tokens mg_input_chars mg_output_chars mg_output_url mg_output_key
    mg_image_url mg_video_url mg_content_type mg_result_type mg_error mg_title mg_platform
    mg_device mg_browser mg_os mg_client_version mg_source mg_source_system mg_comment mg_delta
    mg_reason mg_ref_id mg_ref_type mg_meta mg_actor_pass_id mg_session_hash mg_user_id
    mg_email mg_ip mg_user_agent mg_first_seen_at mg_last_seen_at mg_profile_id
    mg_shopify_customer_id mg_action mg_route mg_method mg_detail mg_runtime_id
    mg_runtime_flat mg_key mg_value""".split()

CONFIG_KEYS = """listen tcp unix unix_mode max_connections max_event_bytes idle_timeout_s reuseport
    shared_key tls cert key ca postgres conninfo table unknown_pass_id apply_credits queue
    max_events max_bytes writer connections batch_max_events flush_interval_ms
    retry_initial_ms retry_max_ms drain_timeout_s spool dir admin http log level
    stats_interval_s""".split()


def dict_escape(b):
    """A libFuzzer dictionary string for bytes B."""
    return "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else "\\x%02x" % c for c in b)


def msgpack_str(s):
    return packb(s)


def proto_dict():
    tokens = [b"\x92", b"\x93", b"\x94", b"\x96", b"\x81", b"\x82", b"\xc0", b"\xc2", b"\xc3",
              b"\xdc\x00\x10", b"\xdd\x00\x00\x01\x00", b"\xde\x00\x10", b"\xdf\xff\xff\xff\xff",
              b"\xc4\x10", b"\xd9\x20", b"\xdb\x00\x01\x00\x00", b"\xd7\x00", b"\xd6\xff",
              b"\xd7\xff", b"\xc7\x0c\xff", packb(T), packb(T + 0.5), packb(-1),
              b"\x1f\x8b\x08\x00"]
    words = ["PING", "HELO", "PONG", "chunk", "compressed", "gzip", "text", "size", "ack",
             "generation", "session", "feedback", "credit_transaction", "mega.generation",
             "admin_audit", "admin_session", "profile", "app_config", "runtime_config",
             "2023-11-14T22:13:20Z", uid(7)]
    tokens += [msgpack_str(w) for w in words]
    for c in COLUMNS:
        tokens += [msgpack_str(c), msgpack_str(c[3:])]
    lines = ["# fuzz_proto dictionary (written by make_corpus.py)"]
    return "\n".join(lines + [f'"{dict_escape(t)}"' for t in tokens]) + "\n"


def config_dict():
    tokens = [k + ":" for k in CONFIG_KEYS]
    tokens += ["\n  ", ": ", "- ", "[", "]", "{", "}", '"', "'", "&a", "*a", "!!str", "---",
               "...", "true", "false", "null", "0660", "127.0.0.1:24224", "[::1]:1", "create",
               "dead_letter", "debug", "1048576", "-1", "0x10", "1e9", "~", "#"]
    lines = ["# fuzz_config dictionary (written by make_corpus.py)"]
    return "\n".join(lines + [f'"{dict_escape(t.encode())}"' for t in tokens]) + "\n"


def write_dir(path, files):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for name, data in files:
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    write_dir(os.path.join(out, "proto"),
              [(name + ".bin", bytes([ctl]) + data) for name, ctl, data in proto_seeds()])
    write_dir(os.path.join(out, "config"), [(name + ".yaml", data) for name, data in config_seeds()])
    if len(sys.argv) <= 1:
        with open(os.path.join(HERE, "proto.dict"), "w") as f:
            f.write(proto_dict())
        with open(os.path.join(HERE, "config.dict"), "w") as f:
            f.write(config_dict())
    print(f"make_corpus.py: wrote {len(proto_seeds())} proto and {len(config_seeds())} config "
          f"seeds under {out}")


if __name__ == "__main__":
    main()
