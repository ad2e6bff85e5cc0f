"""helpers: the pieces the integration tests share.

Postgres   a throwaway cluster (initdb + pg_ctl) on a private Unix socket
Daemon     one real megaingestd process with its own config, log and spool
Client     a TCP or Unix connection that speaks msgpack to the daemon
PgBouncer  a real pooler (session or transaction pooling) in front of a Postgres

Shaped after PgBouncer's test/utils.py: the tests drive the real binaries,
every wait is bounded, and a failure shows the daemon's log.

The suite runs in parallel (pytest-xdist, tests/run-pytest.sh), so a test
never picks a fixed port, path or database of its own. It gets:
  a port          free_tcp_port(): from a block of ports its process alone
                  hands out (also against a second suite running at once)
  a directory     pytest's tmp_path (per worker); for a Unix socket, whose
                  path must stay under 108 bytes, tempfile.mkdtemp(dir="/tmp")
                  as Daemon does
  a database      the pg fixture: one cluster per worker process, on a socket
                  in its own /tmp directory; a test that stops PostgreSQL
                  uses stoppable_pg (the same cluster, restarted after it)
  a daemon        daemon / daemon_factory (conftest.py): its own port, socket,
                  spool and log
Output meant for the terminal (figures of a load test) goes through
report(request, line), printed in the summary at the end of the run.
"""

import gzip
import json
import os
import re

import pytest
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import msgpack
import psycopg2
import psycopg2.extras

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("top_srcdir") or os.path.dirname(TESTS_DIR)
BUILDDIR = os.environ.get("top_builddir") or SRCDIR
SCHEMA = os.path.join(SRCDIR, "supabase", "mega_tables.sql")
# The README's least-privilege role: every daemon of the suite connects as it
# (MEGAINGEST_PG_ROLE=postgres runs them as the superuser instead).
ROLE_RECIPE = os.path.join(SRCDIR, "supabase", "megaingest_role.sql")
DAEMON_ROLE = os.environ.get("MEGAINGEST_PG_ROLE", "megaingest")
# What the role needs for postgres.apply_credits, which some tests turn on.
CREDITS_RECIPE = os.path.join(SRCDIR, "supabase", "megaingest_credits.sql")
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
MEGAINGESTD = os.environ.get("MEGAINGESTD") or os.path.join(BUILDDIR, "megaingestd")
USE_VALGRIND = os.environ.get("MEGAINGEST_VALGRIND") == "1"
IS_ROOT = os.geteuid() == 0

# Waits are bounded, and longer when the daemon runs under valgrind.
SLOW = 10 if USE_VALGRIND else 1
READY_TIMEOUT = 15 * SLOW
WAIT_TIMEOUT = 20 * SLOW


def wait_for(predicate, timeout=WAIT_TIMEOUT, interval=0.02, what=None):
    """Poll PREDICATE until it returns something truthy, and return that.

    Fails the test after TIMEOUT seconds, naming WHAT (a string, or a
    callable returning one, evaluated then), or else the predicate."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            raise AssertionError(
                f"timed out after {timeout}s waiting for {desc or predicate.__name__}")
        time.sleep(interval)


def report(request, line):
    """Show LINE (a test's figures) in the closing summary of the run, also
    when the test passes and when it ran in an xdist worker (conftest.py
    prints them)."""
    request.node.user_properties.append(("report", line))


def read_text(path):
    """The whole of a log file PATH as text ("" while it does not exist)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def run(cmd, as_postgres=False, **kwargs):
    """Run CMD (a list), as the postgres user when asked and we are root."""
    if as_postgres and IS_ROOT:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
        kwargs.setdefault("cwd", "/")   # postgres may not enter ours
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


# ---- ports ------------------------------------------------------------------
# Test processes run side by side (pytest-xdist workers, or the normal and the
# sanitizer build's suites at once), and a port handed out here is bound by a
# daemon only later. A port from bind(0) could meanwhile go to another
# process's bind(0) or to any outgoing connection, both drawn from the kernel's
# ephemeral range. So each process claims a block of ports below that range
# (an flock held until it exits) and hands out the ports of its block in turn,
# skipping any that something holds. (Lock files are per user: the suites of
# two users can meet only at a port both find free at once.)

PORT_FIRST, PORT_BLOCK, PORT_BLOCKS = 20000, 200, 60      # 20000-31999
_port_block = None          # (lock file, first port of the block)
_port_next = 0


def _claim_port_block():
    import fcntl
    lockdir = os.path.join(tempfile.gettempdir(), f"megaingest-test-ports-{os.getuid()}")
    os.makedirs(lockdir, exist_ok=True)
    for i in range(PORT_BLOCKS):
        f = open(os.path.join(lockdir, f"block-{i}.lock"), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return f, PORT_FIRST + i * PORT_BLOCK
    raise RuntimeError(f"all {PORT_BLOCKS} test port blocks are taken (lock files in {lockdir})")


def _port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_tcp_port():
    """A TCP port on 127.0.0.1 that nothing listens on and that no other test
    process hands out (see above): the way every test gets a port."""
    global _port_block, _port_next
    if _port_block is None:
        _port_block = _claim_port_block()
    first = _port_block[1]
    for _ in range(PORT_BLOCK):
        port = first + _port_next
        _port_next = (_port_next + 1) % PORT_BLOCK
        if _port_is_free(port):
            return port
    raise RuntimeError(f"no free port in {first}-{first + PORT_BLOCK - 1}")


def uuid7():
    """A UUIDv7 string: 48-bit millisecond time, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms << 80) | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)           # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)           # variant 10
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_time(sec, nsec=0):
    """Fluentd EventTime: msgpack ext type 0, big-endian seconds and nanoseconds."""
    return msgpack.ExtType(0, struct.pack(">II", sec, nsec))


def packb(obj):
    return msgpack.packb(obj, use_bin_type=True)


def pack_entries(entries):
    """The concatenated [time, record] entries of a PackedForward message."""
    return b"".join(packb(list(e)) for e in entries)


def session_event(mg_id, title="t"):
    """The smallest complete event: a session record."""
    return {"mg_id": mg_id, "mg_record_type": "session", "mg_title": title}


# ---- YAML -------------------------------------------------------------------

def _yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return json.dumps(str(value))   # a JSON string is a YAML double-quoted scalar


def to_yaml(tree, indent=0):
    """Nested dicts of scalars and lists -> YAML text (block maps, flow lists)."""
    lines = []
    for key, value in tree.items():
        pad = "  " * indent
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(to_yaml(value, indent + 1))
        else:
            lines.append(f"{pad}{key}: {_yaml_scalar(value)}")
    return "\n".join(lines)


def deep_merge(base, overrides):
    """BASE updated with OVERRIDES, recursively for nested dicts (new dict)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ---- PostgreSQL -------------------------------------------------------------

class Postgres:
    """A throwaway cluster in its own /tmp directory, reachable only through
    a Unix socket in that directory. As root the server runs as postgres,
    which cannot enter pytest's 0700 temp tree, hence not tmp_path."""

    port = 5432   # the socket lives in a private directory, so no clash

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="megaingest-pg-", dir="/tmp")
        self.data = os.path.join(self.base, "data")
        self.log_path = os.path.join(self.base, "postgres.log")
        self.sockdir = self.base
        # The daemon's conninfo: the least-privilege role of ROLE_RECIPE.
        self.daemon_conninfo = (f"host={self.sockdir} port={self.port} "
                                f"user={DAEMON_ROLE} dbname=postgres")
        self.conninfo = (f"host={self.sockdir} port={self.port} "
                         "user=postgres dbname=postgres")
        self._conn = None
        if IS_ROOT:
            shutil.chown(self.base, "postgres", "postgres")

    def pg_ctl(self, *args):
        return run([os.path.join(PGBIN, "pg_ctl"), "-D", self.data] + list(args),
                   as_postgres=True)

    def start(self):
        run([os.path.join(PGBIN, "initdb"), "-D", self.data, "--auth=trust",
             "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], as_postgres=True)
        self.start_again()
        self.psql_file(SCHEMA)
        self.psql_file(ROLE_RECIPE)
        self.psql_file(CREDITS_RECIPE)

    def start_again(self):
        """Start the (initialised, stopped) cluster and wait until it takes connections."""
        opts = (f"-k {self.sockdir} -p {self.port} -c listen_addresses='' "
                "-c fsync=off -c full_page_writes=off")
        try:
            self.pg_ctl("-l", self.log_path, "-w", "-t", "60", "-o", opts, "start")
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"pg_ctl start failed:\n{e.stdout}\n{self.log_tail()}")

    def stop_immediate(self):
        """pg_ctl stop -m immediate: every backend killed, as in a crash."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.pg_ctl("-m", "immediate", "-w", "stop")

    def pids(self):
        """The postmaster's pid, then those of its children (backends and
        auxiliary processes), as a test that SIGSTOPs the server needs."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            main = int(f.readline())
        kids = subprocess.run(["pgrep", "-P", str(main)], stdout=subprocess.PIPE,
                              text=True).stdout.split()
        return [main] + [int(k) for k in kids]

    def is_running(self):
        try:
            self.pg_ctl("status")
            return True
        except subprocess.CalledProcessError:
            return False

    def stop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            self.pg_ctl("-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def psql_file(self, path):
        """Apply PATH with psql -v ON_ERROR_STOP=1, as an operator would."""
        return run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir,
                    "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-f", path])

    def connect(self):
        """A new autocommit connection (the caller closes it)."""
        conn = psycopg2.connect(self.conninfo)
        conn.autocommit = True
        return conn

    def sql(self, query, params=None):
        """Run QUERY on the shared autocommit connection; rows (list of tuples)
        for statements that return rows, else []."""
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        with self._conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def rows(self, query, params=None):
        """Like sql(), but each row as a dict keyed by column name."""
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        with self._conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, params)
            return [dict(r) for r in cur.fetchall()]

    def value(self, query, params=None):
        return self.sql(query, params)[0][0]

    def row(self, mg_id):
        """The mega_generations row MG_ID as a dict, or None."""
        rows = self.rows("SELECT * FROM mega_generations WHERE mg_id = %s", (mg_id,))
        return rows[0] if rows else None

    def count(self, where="true", params=None):
        return self.value(f"SELECT count(*) FROM mega_generations WHERE {where}", params)


# ---- clients ----------------------------------------------------------------

class Client:
    """One connection to the daemon: send msgpack, read msgpack replies.
    With TLS (an ssl.SSLContext) the connection is wrapped in TLS for the
    server name "localhost" (tlsauth.TlsClient)."""

    def __init__(self, address, tls=None, timeout=WAIT_TIMEOUT):
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address)
            if tls is not None:
                self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        except OSError:
            self.sock.close()
            raise
        self.unpacker = msgpack.Unpacker(raw=False)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_msgpack(self, *objs):
        self.sock.sendall(b"".join(packb(o) for o in objs))

    def recv_value(self, timeout=WAIT_TIMEOUT):
        """The next msgpack value the daemon sends; AssertionError on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for value in self.unpacker:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply from the daemon within {timeout}s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise AssertionError("the daemon closed the connection instead of replying")
            self.unpacker.feed(data)

    def wait_closed(self, timeout=WAIT_TIMEOUT):
        """True once the daemon closes the connection (EOF or reset) within TIMEOUT."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.unpacker.feed(data)
        return False

    def forward(self, tag, entries, chunk=None, mode="forward", option=None):
        """Send one Forward-protocol message holding ENTRIES ([time, record]
        pairs) in MODE: "message" (one entry), "forward", "packed" or "gzip".
        With CHUNK, option.chunk asks for an ack (not read here)."""
        opt = dict(option or {})
        if chunk is not None:
            opt["chunk"] = chunk
        if mode == "message":
            assert len(entries) == 1
            t, rec = entries[0]
            msg = [tag, t, rec] + ([opt] if opt else [])
        elif mode == "forward":
            msg = [tag, [list(e) for e in entries]] + ([opt] if opt else [])
        elif mode == "packed":
            msg = [tag, pack_entries(entries)] + ([opt] if opt else [])
        elif mode == "gzip":
            opt["compressed"] = "gzip"
            msg = [tag, gzip.compress(pack_entries(entries)), opt]
        else:
            raise ValueError(mode)
        self.send_msgpack(msg)

    def forward_chunk(self, tag, entries, chunk, mode="forward", timeout=WAIT_TIMEOUT):
        """Send a message asking for an ack and return the ack's chunk value
        (after checking it echoes CHUNK)."""
        self.forward(tag, entries, chunk=chunk, mode=mode)
        reply = self.recv_value(timeout)
        assert isinstance(reply, dict) and "ack" in reply, f"not an ack: {reply!r}"
        assert reply["ack"] == chunk, f"ack {reply['ack']!r} for chunk {chunk!r}"
        return reply["ack"]


# ---- the daemon -------------------------------------------------------------

class Daemon:
    """One megaingestd process. CONFIG is the YAML tree it runs with."""

    def __init__(self, pg, tmp_path, overrides=None):
        self.pg = pg
        self.tmp_path = str(tmp_path)
        # Unix socket paths are limited to 107 bytes; pytest's tmp_path for a
        # long test name is not, so the socket gets a short directory.
        self.sockdir = tempfile.mkdtemp(prefix="mi-", dir="/tmp")
        self.unix_path = os.path.join(self.sockdir, "megaingest.sock")
        self.tcp_port = free_tcp_port()
        self.spool_dir = os.path.join(self.tmp_path, "spool")
        self.config_path = os.path.join(self.tmp_path, "megaingest.yaml")
        self.log_path = os.path.join(self.tmp_path, "megaingestd.log")
        self.config = deep_merge({
            "listen": {
                "tcp": [f"127.0.0.1:{self.tcp_port}"],
                "unix": self.unix_path,
            },
            "postgres": {"conninfo": pg.daemon_conninfo},
            "writer": {"flush_interval_ms": 20},
            "spool": {"dir": self.spool_dir},
            "admin": {"http": ""},
            "log": {"level": "info"},
        }, overrides or {})
        self.proc = None
        self.exit_code = None
        self._log_file = None
        self.env = None             # environment for the process (None: ours)

    # -- process -------------------------------------------------------------

    def write_config(self):
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(to_yaml(self.config) + "\n")

    def command(self):
        if not os.access(MEGAINGESTD, os.X_OK):
            raise AssertionError(f"megaingestd not found at {MEGAINGESTD} (set MEGAINGESTD)")
        cmd = ["timeout", "600"]
        if USE_VALGRIND:
            cmd += ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                    "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite"]
        return cmd + [MEGAINGESTD, "-c", self.config_path]

    def start(self, wait=True):
        self.write_config()
        if self._log_file:
            self._log_file.close()
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env=self.env)
        if wait:
            self.wait_ready()
        return self

    def kill9(self):
        """SIGKILL the daemon (no drain, no cleanup) and reap it. Start it
        again with start(): same config, spool and sockets."""
        self.signal(signal.SIGKILL)
        self.proc.wait(30)
        self.exit_code = None

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Wait until the Unix listener accepts a connection (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"megaingestd exited with {self.proc.returncode} while starting:\n"
                    + self.log())
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(self.unix_path)
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"megaingestd not ready after {timeout}s:\n" + self.log())

    @property
    def pid(self):
        """The daemon's own pid (the child of the timeout(1) wrapper)."""
        wrapper = self.proc.pid
        path = f"/proc/{wrapper}/task/{wrapper}/children"

        def children():
            with open(path) as f:
                return f.read().split()

        found = wait_for(children, timeout=5, what="the daemon process under timeout(1)")
        return int(found[0])

    def signal(self, sig):
        os.kill(self.pid, sig)

    def sighup(self):
        self.signal(signal.SIGHUP)

    def sigterm(self, timeout=60 * SLOW):
        """SIGTERM the daemon, wait for it and return its exit code."""
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout=60 * SLOW):
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"megaingestd did not exit within {timeout}s:\n" + self.log())
        return self.exit_code

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self):
        """Stop the daemon if it still runs; return its exit code."""
        try:
            if self.running():
                self.sigterm()
            elif self.proc is not None:
                self.exit_code = self.proc.wait()
        finally:
            if self._log_file:
                self._log_file.close()
            shutil.rmtree(self.sockdir, ignore_errors=True)
        return self.exit_code

    # -- what it said ---------------------------------------------------------

    def log(self):
        return read_text(self.log_path)

    def log_contains(self, pattern, flags=0):
        """The first log line matching regex PATTERN, or None."""
        rx = re.compile(pattern, flags)
        for line in self.log().splitlines():
            if rx.search(line):
                return line
        return None

    def wait_log(self, pattern, timeout=WAIT_TIMEOUT, flags=0):
        """Wait for a log line matching PATTERN and return it."""
        return wait_for(lambda: self.log_contains(pattern, flags), timeout,
                        what=f"log line /{pattern}/")

    def dead_letter_path(self):
        return os.path.join(self.spool_dir, "dead-letter.jsonl")

    def dead_letters(self):
        """Every complete dead-letter line, parsed (each must be one JSON
        object). A last line without its newline is still being written by
        the daemon's dead-letter thread: left for the next read."""
        try:
            with open(self.dead_letter_path(), encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        lines = text[:text.rfind("\n") + 1].splitlines()
        out = []
        for line in lines:
            obj = json.loads(line)
            assert isinstance(obj, dict), f"dead-letter line is not an object: {line}"
            out.append(obj)
        return out

    def wait_dead_letter(self, predicate, timeout=WAIT_TIMEOUT):
        """Wait for a dead-letter entry for which PREDICATE is true; return it."""
        def find():
            for dl in self.dead_letters():
                if predicate(dl):
                    return dl
            return None
        return wait_for(find, timeout, what="a matching dead-letter line")

    # -- talking to it -------------------------------------------------------

    def connect(self, via="unix"):
        return Client(self.unix_path if via == "unix" else ("127.0.0.1", self.tcp_port))

    def send_raw(self, data, via="unix"):
        """Send DATA on a fresh connection and close it."""
        with self.connect(via) as c:
            c.send_raw(data)

    def send_msgpack(self, *objs, via="unix"):
        """Send each of OBJS as a msgpack value on one fresh connection."""
        with self.connect(via) as c:
            c.send_msgpack(*objs)

    def forward_chunk(self, tag, entries, chunk, mode="forward", via="unix"):
        """Send a Forward message on a fresh connection, wait for its ack,
        return it."""
        with self.connect(via) as c:
            return c.forward_chunk(tag, entries, chunk, mode=mode)

    def wait_rows(self, n, where="true", params=None, timeout=WAIT_TIMEOUT):
        """Wait until mega_generations holds N rows matching WHERE."""
        wait_for(lambda: self.pg.count(where, params) == n, timeout,
                 what=lambda: f"{n} rows where {where} (have {self.pg.count(where, params)})")


def stop_daemons(started):
    """Teardown of a daemon factory: stop every daemon in STARTED, print its
    log, and fail the test if one exited non-zero without expecting to."""
    failures = []
    for d in started:
        code = d.cleanup()
        print(f"\n---- megaingestd log ({d.log_path}), exit {code} ----\n{d.log()}")
        if code not in (0, None) and not getattr(d, "expect_failure", False):
            failures.append(f"megaingestd exited with status {code} (log above)")
    if failures:
        pytest.fail("; ".join(failures))


# ---- PgBouncer ----------------------------------------------------------------
# A real pooler in front of a Postgres cluster: the paths that deployments
# behind PgBouncer or Supabase's Supavisor take.

PGBOUNCER = os.environ.get("PGBOUNCER", "/usr/sbin/pgbouncer")


class PgBouncer:
    """One pgbouncer process in front of cluster PG, reached on a TCP port of
    127.0.0.1 and on a Unix socket in its own /tmp directory. POOL_MODE is
    "session" or "transaction"; SETTINGS adds or overrides lines of the
    [pgbouncer] section. Idle server connections close after 2 s
    (server_idle_timeout), so a later transaction gets a new server session.

    Authentication is trust against an auth_file that lists the daemon's
    role and postgres: the cluster behind it trusts its socket too. As root
    pgbouncer runs as postgres (it refuses to run as root)."""

    def __init__(self, pg, pool_mode="transaction", settings=None):
        self.pg = pg
        self.pool_mode = pool_mode
        self.base = tempfile.mkdtemp(prefix="megaingest-pgb-", dir="/tmp")
        self.sockdir = self.base
        self.port = free_tcp_port()
        self.config_path = os.path.join(self.base, "pgbouncer.ini")
        self.log_path = os.path.join(self.base, "pgbouncer.log")
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": self.sockdir,
            "auth_type": "trust",
            "auth_file": os.path.join(self.base, "userlist.txt"),
            "admin_users": "postgres",
            "pool_mode": pool_mode,
            "server_idle_timeout": 2,
            "default_pool_size": 20,
            "max_client_conn": 200,
            "pidfile": os.path.join(self.base, "pgbouncer.pid"),
            "logfile": "",          # stderr, into log_path
            "ignore_startup_parameters": "extra_float_digits",
        }
        self.settings.update(settings or {})
        # The daemon's conninfo through the pooler (TCP; daemon_conninfo_unix
        # for its socket), as the least-privilege role.
        self.daemon_conninfo = (f"host=127.0.0.1 port={self.port} "
                                f"user={DAEMON_ROLE} dbname=postgres")
        self.daemon_conninfo_unix = (f"host={self.sockdir} port={self.port} "
                                     f"user={DAEMON_ROLE} dbname=postgres")
        self.conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        self.proc = None
        self._log_file = None
        if IS_ROOT:
            shutil.chown(self.base, "postgres", "postgres")

    def write_config(self):
        users = sorted({DAEMON_ROLE, "postgres"})
        with open(self.settings["auth_file"], "w", encoding="utf-8") as f:
            f.write("".join(f'"{u}" ""\n' for u in users))
        lines = ["[databases]",
                 f"postgres = host={self.pg.sockdir} port={self.pg.port} dbname=postgres",
                 "", "[pgbouncer]"]
        lines += [f"{k} = {v}" for k, v in self.settings.items()]
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=READY_TIMEOUT):
        if not os.access(PGBOUNCER, os.X_OK):
            raise AssertionError(f"pgbouncer not found at {PGBOUNCER} "
                                 "(apt-get install pgbouncer, or set PGBOUNCER)")
        self.write_config()
        self._log_file = open(self.log_path, "ab")
        as_user = {"user": "postgres", "group": "postgres", "extra_groups": [],
                   "cwd": "/"} if IS_ROOT else {}
        self.proc = subprocess.Popen([PGBOUNCER, self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     **as_user)
        deadline = time.monotonic() + timeout
        sock = os.path.join(self.sockdir, f".s.PGSQL.{self.port}")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pgbouncer exited with {self.proc.returncode} "
                                     f"while starting:\n{self.log()}")
            if os.path.exists(sock):
                try:
                    socket.create_connection(("127.0.0.1", self.port), 1).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.02)
        raise AssertionError(f"pgbouncer not listening after {timeout}s:\n{self.log()}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: every client and server connection drops at once."""
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self, timeout=10):
        """SIGTERM (immediate shutdown), SIGKILL after TIMEOUT; the exit status."""
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode if self.proc else None

    def remove(self):
        """Remove the directory (config, socket, log) of a stopped pgbouncer."""
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self):
        return read_text(self.log_path)

    def connect(self, user="postgres"):
        """A new autocommit connection through the pooler (the caller closes it)."""
        conn = psycopg2.connect(f"host=127.0.0.1 port={self.port} user={user} "
                                "dbname=postgres")
        conn.autocommit = True
        return conn

    def show(self, what):
        """SHOW WHAT on pgbouncer's admin console, as a list of dicts."""
        conn = psycopg2.connect(f"host=127.0.0.1 port={self.port} user=postgres "
                                "dbname=pgbouncer")
        conn.autocommit = True
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(f"SHOW {what}")
                return [dict(r) for r in cur.fetchall()]
        finally:
            conn.close()
