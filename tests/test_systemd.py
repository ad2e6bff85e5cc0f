"""systemd: the notify protocol through a real NOTIFY_SOCKET datagram socket
(READY, STATUS, RELOADING, STOPPING, WATCHDOG that stops while a writer is
stuck), socket activation through real inherited file descriptors, and the
unit files checked by systemd-analyze."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from helpers import BUILDDIR, MEGAINGESTD, SRCDIR, Client, Daemon, stop_daemons, wait_for


def have_libsystemd():
    try:
        with open(os.path.join(BUILDDIR, "autoconfig.h")) as f:
            return "#define HAVE_SYSTEMD 1" in f.read()
    except OSError:
        return False


needs_libsystemd = pytest.mark.skipif(not have_libsystemd(),
                                      reason="built without libsystemd")

# The wrapper a service manager is: put the sockets at fd 3, 4, ..., set
# LISTEN_PID to the pid that will exec the daemon, then exec it.
ACTIVATE = r"""
import os, sys
fds = [int(a) for a in sys.argv[1].split(",") if a]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i)
for fd in fds:
    if fd >= 3 + len(fds):
        os.close(fd)
if sys.argv[2] != "keep":
    os.environ["LISTEN_PID"] = str(os.getpid()) if sys.argv[2] == "self" else sys.argv[2]
    os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.argv[3], sys.argv[3:])
"""


class SystemdDaemon(Daemon):
    """A daemon started the way systemd starts it: with NOTIFY_SOCKET,
    optionally WATCHDOG_USEC, and optionally inherited listening sockets."""

    def __init__(self, pg, tmp_path, overrides=None, env=None, fds=(), listen_pid="self"):
        super().__init__(pg, tmp_path, overrides)
        self.extra_env = env or {}
        self.fds = list(fds)
        self.listen_pid = listen_pid

    def command(self):
        return ["timeout", "600", sys.executable, "-c", ACTIVATE,
                ",".join(str(fd) for fd in self.fds), self.listen_pid if self.fds else "keep",
                MEGAINGESTD, "-c", self.config_path]

    def start(self, wait=True):
        self.write_config()
        self._log_file = open(self.log_path, "ab")
        env = dict(os.environ, **self.extra_env)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env=env, pass_fds=self.fds)
        if wait:
            self.wait_ready()
        return self


class NotifySocket:
    """The service manager's end of sd_notify: a bound AF_UNIX datagram socket."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mi-notify-", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received = []      # (monotonic time received, {key: value})
        self.pos = 0            # wait() looks at messages from here on

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def poll(self, timeout=0.05):
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                msg = dict(line.split("=", 1) for line in data.split("\n") if line)
                self.received.append((time.monotonic(), msg))
                self.sock.settimeout(0.001)
        except (socket.timeout, BlockingIOError):
            pass

    def wait(self, pred, timeout=20, what="a notification"):
        """The first message after the last one wait() matched for which PRED
        holds, so that waiting for A then B checks that B came after A."""
        start = self.pos

        def find():
            self.poll()
            for i in range(self.pos, len(self.received)):
                if pred(self.received[i][1]):
                    self.pos = i + 1
                    return self.received[i][1]
            return None
        return wait_for(find, timeout, what=lambda: f"{what}; got {self.received[start:]}")


@pytest.fixture
def notify():
    n = NotifySocket()
    yield n
    n.close()


@pytest.fixture
def sd_daemon(pg, tmp_path):
    """start(overrides, env, fds, listen_pid, wait) -> SystemdDaemon; stopped at teardown."""
    started = []

    def start(overrides=None, env=None, fds=(), listen_pid="self", wait=True):
        path = tmp_path / f"d{len(started)}"
        path.mkdir()
        d = SystemdDaemon(pg, path, overrides, env, fds, listen_pid)
        started.append(d)
        return d.start(wait=wait)

    yield start
    stop_daemons(started)


# ---- notify ---------------------------------------------------------------

@needs_libsystemd
def test_notify_ready_status_reload_stopping(sd_daemon, notify, pg):
    d = sd_daemon({"log": {"stats_interval_s": 1}}, env={"NOTIFY_SOCKET": notify.path},
                  wait=False)
    ready = notify.wait(lambda msg: msg.get("READY") == "1", what="READY=1")
    assert ready.get("STATUS") == "ready"
    # READY=1 comes once the listeners are bound: the socket accepts now.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(d.unix_path)
    d.send_msgpack(*[{"mg_id": f"n-{i}", "mg_record_type": "session"} for i in range(30)])
    d.wait_rows(30)
    status = notify.wait(lambda msg: "STATUS" in msg and "in=" in msg["STATUS"],
                         what="a STATUS= summary")["STATUS"]
    assert re.fullmatch(r"in=\d+/s committed=\d+/s rejected=\d+/s queue=\d+ \(.*\) "
                        r"spool=.* p99=.* conns=\d+ postgres=up writers=writing", status), status
    # The same text as the log's summary line.
    wait_for(lambda: d.log_contains(re.escape("stats: " + status)),
             what=f"the log line 'stats: {status}'")
    d.sighup()
    notify.wait(lambda msg: msg.get("RELOADING") == "1", what="RELOADING=1")
    again = notify.wait(lambda msg: msg.get("READY") == "1", what="READY=1 after reload")
    assert again["STATUS"] == "configuration reloaded"
    d.signal(15)
    stopping = notify.wait(lambda msg: msg.get("STOPPING") == "1", what="STOPPING=1")
    assert stopping["STATUS"] == "draining after SIGTERM"
    assert d.wait_exit() == 0
    notify.poll()
    assert not any("WATCHDOG" in msg for _, msg in notify.received), \
        "no WATCHDOG_USEC: no pings"


def watchdog_pings(notify, since):
    notify.poll()
    return [t for t, msg in notify.received if msg.get("WATCHDOG") == "1" and t >= since]


@needs_libsystemd
def hang_shim(tmp_path):
    """tests/enospc_shim.c built for LD_PRELOAD: while the returned flag file
    exists, fsync of a spool segment blocks (a disk that stopped answering)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler for the LD_PRELOAD shim")
    lib = str(tmp_path / "shim.so")
    subprocess.run([cc, "-shared", "-fPIC", "-o", lib,
                    os.path.join(SRCDIR, "tests", "enospc_shim.c"), "-ldl"], check=True)
    flag = str(tmp_path / "hang")
    env = {"LD_PRELOAD": lib, "MEGAINGEST_HANG_FLAG": flag,
           "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                            ":verify_asan_link_order=0").lstrip(":")}
    return env, flag


def test_watchdog_pings_stop_while_a_writer_is_stuck(sd_daemon, notify, pg, tmp_path):
    """WATCHDOG_USEC=1 s: a ping every 0.5 s. A writer blocked where no
    deadline of its own can free it (an fsync on a disk that stopped
    answering: PostgreSQL is unreachable, so batches go to the spool) stops
    the pings, so systemd would restart the daemon; once it returns they
    resume."""
    env, flag = hang_shim(tmp_path)
    env["NOTIFY_SOCKET"] = notify.path
    env["WATCHDOG_USEC"] = "1000000"
    d = sd_daemon({"writer": {"retry_initial_ms": 50, "retry_max_ms": 100,
                              "statement_timeout_ms": 500},
                   "postgres": {"conninfo": f"host={tmp_path} port=1 dbname=none"}},
                  env=env)
    d.wait_log(r"systemd watchdog: a ping every 0\.5 s")
    notify.poll()
    t0 = time.monotonic()
    time.sleep(2)
    healthy = watchdog_pings(notify, t0)
    assert 3 <= len(healthy) <= 5, healthy
    open(flag, "w").close()
    try:
        d.send_msgpack({"mg_id": "stuck-1", "mg_record_type": "session"})
        d.wait_log(r"writer=0 made no progress for .*withholding the systemd watchdog ping")
        notify.poll()           # what was sent before this point is stamped before t1
        t1 = time.monotonic()
        time.sleep(1.5)
        assert watchdog_pings(notify, t1) == [], "pinged while the writer was stuck"
    finally:
        os.unlink(flag)
    d.wait_log(r"watchdog pings resume")
    t2 = time.monotonic()
    wait_for(lambda: len(watchdog_pings(notify, t2)) >= 2, timeout=5,
             what="watchdog pings after the writer recovered")


def test_watchdog_pings_go_on_while_a_statement_waits_within_its_deadline(sd_daemon, notify,
                                                                          pg):
    """A writer waiting on a table lock is not stuck: its statement has a
    deadline (writer.statement_timeout_ms), so the pings go on and the wait
    shows on /readyz and the writer_state gauge instead."""
    d = sd_daemon({"writer": {"statement_timeout_ms": 4000}},
                  env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    d.wait_log(r"systemd watchdog: a ping every 0\.5 s")
    conn = pg.connect()
    conn.autocommit = False
    try:
        conn.cursor().execute("LOCK TABLE mega_generations IN EXCLUSIVE MODE")
        d.send_msgpack({"mg_id": "waits-1", "mg_record_type": "session"})
        d.wait_log(r"has been running for")
        notify.poll()
        t1 = time.monotonic()
        time.sleep(1.5)
        assert len(watchdog_pings(notify, t1)) >= 2, "pings stopped during a bounded wait"
    finally:
        conn.rollback()
        conn.close()
    d.wait_rows(1)
    assert not d.log_contains(r"withholding the systemd watchdog ping")


# ---- socket activation ------------------------------------------------------

def listening_tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def listening_unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    return s


@needs_libsystemd
def test_socket_activation_tcp_and_unix(sd_daemon, pg, tmp_path):
    sockdir = tempfile.mkdtemp(prefix="mi-act-", dir="/tmp")
    upath = os.path.join(sockdir, "activated.sock")
    tcp, unix = listening_tcp(), listening_unix(upath)
    try:
        d = sd_daemon(fds=[tcp.fileno(), unix.fileno()], wait=False)
        d.wait_log(r"socket activation: listen\.tcp and listen\.unix of .* are ignored")
        port = tcp.getsockname()[1]
        assert d.log_contains(rf"listening on tcp 127\.0\.0\.1:{port} \(socket from systemd\)")
        assert d.log_contains(rf"listening on unix {re.escape(upath)} \(socket from systemd\)")
        assert not d.log_contains(rf"listening on tcp 127\.0\.0\.1:{d.tcp_port}\b")
        with Client(("127.0.0.1", port)) as c:
            c.forward_chunk("mega.session", [[1700000000, {"mg_id": "act-tcp"}]], "t1")
        with Client(upath) as c:
            c.forward_chunk("mega.session", [[1700000000, {"mg_id": "act-unix"}]], "u1")
        assert pg.count("mg_id LIKE 'act-%%'") == 2
        # The configured addresses were not bound.
        with pytest.raises(OSError):
            Client(("127.0.0.1", d.tcp_port))
        assert not os.path.exists(d.unix_path)
        assert d.sigterm() == 0
        # systemd's socket file is systemd's: the daemon leaves it.
        assert os.path.exists(upath)
    finally:
        tcp.close()
        unix.close()
        shutil.rmtree(sockdir, ignore_errors=True)


@needs_libsystemd
def test_socket_activation_for_another_pid_is_ignored(sd_daemon, pg):
    """LISTEN_PID names another process: the fds are not ours, the config's
    listeners are bound."""
    tcp = listening_tcp()
    try:
        d = sd_daemon(fds=[tcp.fileno()], listen_pid="1")
        assert d.log_contains(rf"listening on tcp 127\.0\.0\.1:{d.tcp_port}$")
        assert not d.log_contains(r"socket from systemd")
        d.send_msgpack({"mg_id": "cfg-1", "mg_record_type": "session"})
        d.wait_rows(1)
    finally:
        tcp.close()


@needs_libsystemd
def test_socket_activation_rejects_a_datagram_socket(sd_daemon):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        d = sd_daemon(fds=[udp.fileno()], wait=False)
        d.expect_failure = True
        assert d.wait_exit() == 1
        assert d.log_contains(r"socket activation: fd 3 is not a listening TCP or Unix "
                              r"stream socket")
    finally:
        udp.close()


# ---- unit files ---------------------------------------------------------------

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def filled_units(tmp_path):
    """The unit templates filled with this build's paths, plus the man pages
    on a MANPATH, as `make install` would lay them out."""
    etc = tmp_path / "etc" / "megaingest"
    etc.mkdir(parents=True)
    shutil.copy(os.path.join(SRCDIR, "etc", "megaingest.yaml"), etc / "megaingest.yaml")
    shutil.copy(os.path.join(SRCDIR, "etc", "megaingest.yaml"), etc / "megaingest@a.yaml")
    for name in ("megaingestd.service", "megaingestd@.service"):
        with open(os.path.join(SRCDIR, "systemd", name + ".in")) as f:
            unit = f.read().replace("@sbindir@", os.path.dirname(os.path.abspath(MEGAINGESTD)))
        unit = unit.replace("@sysconfdir@", str(tmp_path / "etc"))
        assert not re.search(r"@[a-z]+@", unit), "a placeholder is left"
        (tmp_path / name).write_text(unit)
    shutil.copy(os.path.join(SRCDIR, "systemd", "megaingestd.socket"), tmp_path)
    for page, section in (("megaingestd", 8), ("megaingest.yaml", 5), ("megactl", 1)):
        dest = tmp_path / "man" / f"man{section}"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(SRCDIR, "man", f"{page}.{section}"), dest)
    return tmp_path


@needs_analyze
def test_units_verify_clean(tmp_path):
    d = filled_units(tmp_path)
    args = ["systemd-analyze", "verify"]
    env = dict(os.environ, MANPATH=str(d / "man"))
    if shutil.which("man") is None:
        args.append("--man=no")     # nothing to look the pages up with
    # megaingestd@a.service: the template, loaded for instance "a".
    r = subprocess.run(args + [str(d / "megaingestd.service"), str(d / "megaingestd.socket"),
                               str(d / "megaingestd@a.service")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert r.returncode == 0 and r.stdout == "", r.stdout


@needs_analyze
def test_unit_security_exposure_at_most_2(tmp_path):
    d = filled_units(tmp_path)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                        str(d / "megaingestd.service")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = re.search(r"Overall exposure level for megaingestd\.service: ([0-9.]+)", r.stdout)
    assert found, r.stdout
    assert float(found.group(1)) <= 2.0, r.stdout


def test_built_unit_has_install_paths():
    """`make` filled the template: no placeholder left, the daemon's path set."""
    built = os.path.join(BUILDDIR, "systemd", "megaingestd.service")
    if not os.path.exists(built):
        pytest.skip("systemd/megaingestd.service not built here")
    with open(built) as f:
        unit = f.read()
    assert "@sbindir@" not in unit and "@sysconfdir@" not in unit
    assert re.search(r"^ExecStart=/\S+/megaingestd -c /\S+/megaingest/megaingest\.yaml$",
                     unit, re.M)
