"""The inputs of every bug fuzzing found (tests/fuzz/regressions/), replayed
through the real daemon: each must be answered by a dead letter or a closed
connection, never a crash, a sanitizer report or a hang, and the daemon must
serve the next client at once. (tests/fuzz/run also replays them through the
fuzz targets on every run.)

A proto input starts with fuzz_proto.c's control byte: bit 7 means "through
the shared-key handshake first", which the replay reproduces on TCP with a
key configured; the other bits only shape the fuzz harness.
"""

import os
import time

import pytest

from helpers import SRCDIR, uuid7

REGRESSIONS = os.path.join(SRCDIR, "tests", "fuzz", "regressions", "proto")
CASES = sorted(os.listdir(REGRESSIONS)) if os.path.isdir(REGRESSIONS) else []


@pytest.mark.parametrize("name", CASES)
def test_fuzz_finding_is_harmless(daemon_factory, pg, name):
    with open(os.path.join(REGRESSIONS, name), "rb") as f:
        data = f.read()
    ctl, stream = data[0], data[1:]
    overrides = {"listen": {"max_event_bytes": (64, 512, 4096, 1 << 20)[ctl & 3]}}
    if ctl & 0x80:
        overrides["listen"]["shared_key"] = "fuzz-key"
    d = daemon_factory(overrides)
    start = time.monotonic()
    with d.connect("tcp" if ctl & 0x80 else "unix") as c:
        try:
            c.send_raw(stream)
        except OSError:
            pass                              # closed while sending: a fine outcome
        c.sock.shutdown(1)                    # end of stream: the daemon sees EOF
        assert c.wait_closed(20), "the daemon neither answered nor closed"
    assert time.monotonic() - start < 10
    assert d.running()
    mg_id = uuid7()
    d.forward_chunk("mega.session", [[int(time.time()),
                                      {"mg_id": mg_id, "mg_record_type": "session"}]],
                    "after-" + name)
    assert pg.count("mg_id = %s", (mg_id,)) == 1
