"""The dead-letter file when its disk fills: a line that lands only in part
is cut off again, so the file holds whole lines only and the lines written
after it parse (megactl replay reads each line as one JSON object).

Two ways to fill the disk mid-line: a small tmpfs filled up to its last
byte (needs root, as in CI), and RLIMIT_FSIZE set on the running daemon
(prlimit), under which write(2) lands up to the limit and then fails with
EFBIG (the daemon runs under `env --ignore-signal=XFSZ`, so SIGXFSZ does
not kill it).
"""

import errno
import os
import resource
import subprocess

import pytest

from helpers import Daemon
from test_durability import TmpfsDisk as SpoolTmpfsDisk

PAD = "x" * 20000  # a line far longer than what is left of the disk


def bad_event(mg_id, pad=""):
    """An event the daemon dead-letters (mg_prompt must be text)."""
    return [[1700000000, {"mg_id": mg_id, "mg_prompt": 12, "pad": pad}]]


class TmpfsDisk(SpoolTmpfsDisk):
    """A 1 MiB tmpfs for spool.dir; full() fills it to the last byte."""

    def __init__(self, tmp_path, monkeypatch):
        super().__init__(tmp_path, "1m", "the rlimit variant")

    def full(self, d):
        # The dead-letter file's last page must have room left, so the next
        # line lands in part before ENOSPC.
        assert os.path.getsize(d.dead_letter_path()) % 4096 != 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)


class RlimitDisk:
    """RLIMIT_FSIZE on the daemon: full() allows 100 bytes past the file."""

    def __init__(self, tmp_path, monkeypatch):
        self.spool_dir = str(tmp_path / "spool")
        command = Daemon.command
        # A write past the limit raises SIGXFSZ, which would kill the daemon.
        monkeypatch.setattr(Daemon, "command",
                            lambda d: ["env", "--ignore-signal=XFSZ"] + command(d))

    def full(self, d):
        # The limit applies to every file the daemon writes, its log too:
        # keep the log (stdout) writable, so the lines the test waits for land.
        limit = max(os.path.getsize(d.dead_letter_path()), os.path.getsize(d.log_path)) + 100
        # The soft limit only: raising it back needs no privilege.
        resource.prlimit(d.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    def free(self, d):
        inf = resource.RLIM_INFINITY
        resource.prlimit(d.pid, resource.RLIMIT_FSIZE, (inf, inf))

    def close(self):
        pass


@pytest.mark.parametrize("kind", ["tmpfs", "rlimit"])
def test_torn_dead_letter_line_is_cut_off(kind, daemon_factory, pg, tmp_path, monkeypatch):
    """A dead-letter line written in part (disk full mid-line) is cut off:
    its message gets no ack (the connection closes), the file then holds
    whole lines only, and the next line, written once there is room, is
    parseable and follows the last whole line directly."""
    disk = (TmpfsDisk if kind == "tmpfs" else RlimitDisk)(tmp_path, monkeypatch)
    d = None
    try:
        d = daemon_factory({"spool": {"dir": disk.spool_dir}})
        d.spool_dir = disk.spool_dir  # where d.dead_letters() looks
        d.forward_chunk("mega.generation", bad_event("first", PAD), "c1")
        first = os.path.getsize(d.dead_letter_path())
        assert [dl["event"]["mg_id"] for dl in d.dead_letters()] == ["first"]

        disk.full(d)
        with d.connect() as c:
            c.forward("mega.generation", bad_event("torn", PAD), chunk="c2")
            assert c.wait_closed(), "the connection stayed open"
            assert list(c.unpacker) == [], "acked a line that was not written"
        d.wait_log(r"cannot write to .*dead-letter\.jsonl")
        # Only whole lines: the part of "torn" that landed was cut off.
        with open(d.dead_letter_path(), "rb") as f:
            assert f.read().endswith(b"\n")
        assert os.path.getsize(d.dead_letter_path()) == first

        disk.free(d)
        d.forward_chunk("mega.generation", bad_event("after"), "c3")
        with open(d.dead_letter_path(), "rb") as f:
            text = f.read()
        assert text.endswith(b"\n") and text.count(b"\n") == 2, text[-300:]
        assert [dl["event"]["mg_id"] for dl in d.dead_letters()] == ["first", "after"]
        assert d.sigterm() == 0
    finally:
        if d is not None and d.running():
            d.sigterm()
        disk.close()
