"""loadgen: at-least-once senders and the delivery figures, for the
durability tests (tests/test_durability.py) and the soak (tests/soak/run).

Load runs N sender threads. Each sends Forward-mode chunks with
option.chunk, keeps a window of chunks in flight, and behaves like a
fluent-logger client with require_ack: when the connection breaks or an ack
does not come in time, it reconnects (as long as it takes) and resends every
unacked chunk with the same chunk id. Half of the events carry their own
mg_id; the other half rely on the daemon's id derived from the chunk id and
the entry position, so a resend is idempotent either way. Every event holds
a unique "n" (kept in mg_meta), which is what the figures count:

  sent        distinct events handed to the daemon at least once
  acked       events whose chunk was acked
  committed   distinct events found in mega_generations
  duplicates  events found in more than one row
  lost        acked events not found (must be 0)
"""

import os
import socket
import threading
import time

import msgpack

TAG = "mega.generation"


class Sender(threading.Thread):
    """One connection's worth of load. ADDRESS: a Unix path or (host, port)."""

    def __init__(self, load, index, address):
        super().__init__(daemon=True, name=f"sender-{index}")
        self.load = load
        self.index = index
        self.address = address
        self.sock = None
        self.unpacker = None
        self.inflight = {}          # chunk id -> entries, in send order
        self.next_chunk = 0
        self.errors = 0

    # -- connection --------------------------------------------------------

    def _connect(self):
        family = socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(self.address)
        except OSError:
            s.close()
            raise
        self.sock = s
        self.unpacker = msgpack.Unpacker(raw=False)

    def _drop(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def _reconnect(self):
        """Connect again (retrying until stopped) and resend what is unacked."""
        self._drop()
        while not self.load.stopping.is_set() or self.inflight:
            try:
                self._connect()
                for chunk, entries in list(self.inflight.items()):
                    self._send(chunk, entries)
                return True
            except OSError:
                self._drop()
                if self.load.abandon.is_set():
                    return False
                time.sleep(0.1)
        return False

    # -- traffic -----------------------------------------------------------

    def _entries(self, chunk_no):
        out = []
        for i in range(self.load.chunk_events):
            n = f"{self.load.run_id}-{self.index}-{chunk_no}-{i}"
            rec = {"n": n, "mg_pass_id": f"pass-{i % 7}", "prompt": f"p{i}",
                   "latency_ms": i}
            if i % 2 == 0:
                rec["mg_id"] = f"id-{n}"
            out.append([1700000000 + chunk_no, rec])
        return out

    def _send(self, chunk, entries):
        msg = [TAG, entries, {"chunk": chunk}]
        self.sock.sendall(msgpack.packb(msg, use_bin_type=True))

    def _new_chunk(self):
        chunk = f"{self.load.run_id}-c{self.index}-{self.next_chunk}"
        entries = self._entries(self.next_chunk)
        self.next_chunk += 1
        self.inflight[chunk] = entries
        with self.load.lock:
            self.load.sent_events.update(e[1]["n"] for e in entries)
        self._send(chunk, entries)

    def _read_acks(self, deadline):
        """Read acks until one arrives or DEADLINE passes; False on a broken link."""
        while time.monotonic() < deadline:
            for value in self.unpacker:
                chunk = value.get("ack") if isinstance(value, dict) else None
                entries = self.inflight.pop(chunk, None)
                if entries is not None:
                    self.load.record_ack(entries)
                    return True
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return False
            if not data:
                return False
            self.unpacker.feed(data)
        return True

    def _turn(self):
        if not self.load.stopping.is_set() and len(self.inflight) < self.load.window:
            self._new_chunk()
            if self.load.pause > 0:
                time.sleep(self.load.pause)
            return True
        if not self.inflight:
            return False
        oldest = time.monotonic()
        if not self._read_acks(oldest + self.load.ack_timeout):
            raise OSError("connection lost")
        if self.inflight and time.monotonic() - oldest >= self.load.ack_timeout:
            raise OSError("ack timeout")
        return True

    def run(self):
        if not self._reconnect():
            return
        while not self.load.abandon.is_set():
            try:
                if not self._turn():
                    break
            except OSError:
                self.errors += 1
                if not self._reconnect():
                    break
        self._drop()


class Load:
    """N senders against a daemon (Unix socket and TCP alternate)."""

    def __init__(self, daemon, connections=4, chunk_events=50, window=4, pause=0.0,
                 ack_timeout=15.0, run_id=None):
        self.run_id = run_id or f"r{os.getpid()}x{int(time.time() * 1000) % 100000000}"
        self.chunk_events = chunk_events
        self.window = window
        self.pause = pause
        self.ack_timeout = ack_timeout
        self.lock = threading.Lock()
        self.sent_events = set()
        self.acked_events = set()
        self.ack_times = []          # monotonic time of each ack
        self.stopping = threading.Event()
        self.abandon = threading.Event()
        addrs = [daemon.unix_path, ("127.0.0.1", daemon.tcp_port)]
        self.senders = [Sender(self, i, addrs[i % 2]) for i in range(connections)]

    def record_ack(self, entries):
        with self.lock:
            self.acked_events.update(e[1]["n"] for e in entries)
            self.ack_times.append(time.monotonic())

    def start(self):
        for s in self.senders:
            s.start()
        return self

    def acks_between(self, t0, t1):
        with self.lock:
            return sum(1 for t in self.ack_times if t0 <= t < t1)

    def acked_count(self):
        with self.lock:
            return len(self.acked_events)

    def stop(self, timeout=120):
        """Stop sending new chunks and wait until every chunk sent is acked
        (resending through restarts as needed). False if that timed out."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for s in self.senders:
            s.join(max(0.1, deadline - time.monotonic()))
        alive = [s for s in self.senders if s.is_alive()]
        if alive:
            self.abandon.set()
            for s in alive:
                s.join(5)
        return not alive

    def reconnects(self):
        return sum(s.errors for s in self.senders)

    def figures(self, pg):
        """The delivery figures against what PostgreSQL holds now."""
        rows = pg.sql("SELECT mg_meta->>'n', count(*) FROM mega_generations "
                      "WHERE mg_meta->>'n' LIKE %s GROUP BY 1", (self.run_id + "-%",))
        found = {n for n, _ in rows}
        with self.lock:
            sent, acked = set(self.sent_events), set(self.acked_events)
        return {
            "sent": len(sent),
            "acked": len(acked),
            "committed": len(found),
            "duplicates": sum(c - 1 for _, c in rows if c > 1),
            "lost": len(acked - found),
        }


def format_figures(name, f, extra=""):
    return (f"{name}: sent={f['sent']} acked={f['acked']} committed={f['committed']} "
            f"duplicates={f['duplicates']} lost={f['lost']}{extra}")
