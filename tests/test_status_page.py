"""The status page on admin.http (GET /), read by a real browser.

The page, its script and its style are compiled into the daemon and served
under a strict Content-Security-Policy. The browser tests drive Debian's
chromium headless through the DevTools protocol on a pipe (no extra Python
module): they load the page from the real daemon under load, let it poll
/stats in real time, read the DOM and take a screenshot into the test's
directory. They skip, saying so, only when chromium is not installed.
"""

import base64
import fcntl
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from helpers import wait_for
from loadgen import Load
from opshelpers import admin_daemon, admin_get

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package chromium; "
    "./dev.sh installs it)")

# How long the page polls under load before the screenshot; README's
# doc/status-page.png was taken with 90 (charts need time to fill).
LOAD_SECONDS = float(os.environ.get("MEGAINGEST_STATUS_PAGE_SECONDS", "4"))
FILES = {"/": "text/html", "/status.js": "text/javascript", "/status.css": "text/css"}


def headers(port, path, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Browser:
    """Headless chromium driven over --remote-debugging-pipe (fds 3 and 4:
    NUL-terminated JSON messages), attached to one page."""

    def __init__(self, workdir):
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
        cmd_r, self.cmd_w = os.pipe()
        self.ev_r, ev_w = os.pipe()
        # fds 3 and 4 in the child; park both on free fds above 10 first so
        # dup2 cannot clobber one (a fixed number may be one of ours in use)
        hi_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(ev_w, fcntl.F_DUPFD_CLOEXEC, 10)

        def child_fds():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.stderr = open(os.path.join(workdir, "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-extensions", "--mute-audio",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
            close_fds=False, preexec_fn=child_fds)
        for fd in (cmd_r, ev_w, hi_r, hi_w):
            os.close(fd)
        self.next_id = 0
        self.replies = {}
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read(self):
        buf = b""
        while True:
            data = os.read(self.ev_r, 65536)
            if not data:
                break
            buf += data
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self.cond:
                    if "id" in msg:
                        self.replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self.cond.notify_all()

    def call(self, method, session=False, timeout=30, **params):
        with self.cond:
            self.next_id += 1
            mid = self.next_id
        msg = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.replies, timeout):
                raise AssertionError(f"chromium did not answer {method} in {timeout}s")
            reply = self.replies.pop(mid)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def size(self, width, height):
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)

    def open(self, url):
        """Navigate to URL and wait until its document has loaded."""
        self.call("Page.navigate", session=True, url=url)
        wait_for(lambda: self.js(f"location.href === {json.dumps(url)} && "
                                 "document.readyState === 'complete'"),
                 15, interval=0.1, what=f"{url} loaded in chromium")

    def js(self, expression):
        r = self.call("Runtime.evaluate", session=True, expression=expression,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def text(self, element_id):
        return self.js(f"document.getElementById({json.dumps(element_id)})?.textContent")

    def wait_text(self, element_id, predicate, timeout=15, what=None):
        return wait_for(lambda: (lambda t: t if t is not None and predicate(t) else None)(
                            self.text(element_id)),
                        timeout, interval=0.2, what=what or f"#{element_id}")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def problems(self):
        """Console errors from script or policy, and uncaught exceptions."""
        out = []
        with self.cond:
            for e in self.events:
                p = e.get("params", {})
                if e.get("method") == "Runtime.exceptionThrown":
                    out.append(p["exceptionDetails"].get("text"))
                elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error" \
                        and p["entry"]["source"] != "network":
                    out.append(p["entry"]["text"])
                elif e.get("method") == "Runtime.consoleAPICalled" and p["type"] == "error":
                    out.append(str(p["args"]))
        return out

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package chromium; ./dev.sh installs it)")
    b = Browser(str(tmp_path))
    yield b
    b.close()


def stats(port):
    status, _, body = admin_get(port, "/stats")
    assert status == 200, body
    return json.loads(body)


# ---- served by the daemon ------------------------------------------------------


def test_page_files_headers_and_no_external_url(daemon_factory):
    d = admin_daemon(daemon_factory)
    total = 0
    for path, ctype in FILES.items():
        status, h, body = headers(d.admin_port, path)
        assert status == 200, path
        assert h["content-type"] == ctype + "; charset=utf-8", path
        assert h["x-content-type-options"] == "nosniff"
        assert h["cache-control"] == "no-store"
        csp = h["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
        text = body.decode("utf-8")
        # Nothing is fetched from elsewhere: no scheme, no protocol-relative URL.
        assert not re.search(r"(https?:|wss?:)?//[a-z0-9]", text, re.I), path
        assert not re.search(r"@import|url\(", text), path
        total += len(body)
        head = headers(d.admin_port, path, "HEAD")
        assert head[0] == 200 and head[2] == b""
    status, _, html = headers(d.admin_port, "/")
    html = html.decode()
    assert "<script>" not in html and " style=" not in html  # no inline code for the CSP
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert ref.startswith("/") and not ref.startswith("//"), ref
    assert total < 32 * 1024, f"the page grew to {total} bytes"
    print(f"status page: {total} bytes (html + js + css)")


def test_stats_keeps_the_last_warnings(daemon_factory):
    d = admin_daemon(daemon_factory)
    assert stats(d.admin_port)["log_recent"] == []
    with d.connect() as c:
        c.send_msgpack(*[{"mg_id": f"bt-{i}", "mg_record_type": "session",
                          "mg_latency_ms": "slow\n<b>"} for i in range(15)])
        wait_for(lambda: len(d.dead_letters()) >= 15, what="15 dead letters")
    recent = wait_for(lambda: (lambda r: r if any("dead-lettered" in x["line"] for x in r)
                               else None)(stats(d.admin_port)["log_recent"]),
                      what="a dead-letter warning in /stats log_recent")
    assert 1 <= len(recent) <= 10          # a bounded ring, the newest kept
    assert all(r["level"] in ("warn", "error") for r in recent)
    assert all("\n" not in r["line"] and len(r["line"]) <= 512 for r in recent)


# ---- in a browser -----------------------------------------------------------


@needs_chromium
def test_browser_shows_live_figures_under_load(daemon_factory, browser, tmp_path):
    d = admin_daemon(daemon_factory)
    load = Load(d, connections=4, chunk_events=50, window=2, pause=0.005).start()
    try:
        browser.size(1100, 900)
        browser.open(f"http://127.0.0.1:{d.admin_port}/")
        browser.wait_text("conn-status", lambda t: t == "live", what="the page polling /stats")
        assert browser.wait_text("pg-status", lambda t: t == "PostgreSQL up")
        # Rates need two readings; under load committed/s is above zero.
        browser.wait_text("committed-rate", lambda t: t not in ("-", "0.0"),
                          what="a committed rate above zero")
        time.sleep(LOAD_SECONDS)
        states = browser.js("[...document.querySelectorAll('#writers li')]"
                            ".map(li => li.dataset.state)")
        assert states and all(s in ("writing", "replaying") for s in states), states
        assert browser.js("series.ok.some(p => p[1] > 0) && series.p99.some(p => p[1] > 0)")
        shot = os.path.join(str(tmp_path), "status-page.png")
        browser.screenshot(shot)
        assert os.path.getsize(shot) > 10000
        with open(shot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        assert load.stop(), "the load did not finish"
    # Quiet now: the page shows exactly the committed count /stats reports.
    want = wait_for(lambda: (lambda s: s["events_committed_total"]
                             if s["queue_events"] == 0 else None)(stats(d.admin_port)),
                    20, what="the queue drained")
    assert want >= load.acked_count() > 0
    shown = wait_for(lambda: (lambda v: v if v == str(want) else None)(
        browser.js("document.getElementById('committed-total').dataset.value")),
        10, interval=0.2, what=f"the page showing committed={want}")
    assert browser.text("committed-total").replace(",", "") == shown
    # A phone-width window: no sideways scrolling.
    browser.size(390, 800)
    time.sleep(1.5)
    assert browser.js("document.documentElement.scrollWidth") <= 390
    browser.screenshot(os.path.join(str(tmp_path), "status-page-phone.png"))
    assert browser.problems() == []


@needs_chromium
def test_browser_reconnects_when_the_daemon_restarts(daemon_factory, browser):
    d = admin_daemon(daemon_factory)
    browser.open(f"http://127.0.0.1:{d.admin_port}/")
    browser.wait_text("conn-status", lambda t: t == "live")
    assert d.sigterm() == 0
    browser.wait_text("conn-status", lambda t: t.startswith("reconnecting"),
                      what="the page saying it reconnects")
    assert "stale" in browser.js("document.getElementById('main').className")
    time.sleep(2)   # it keeps polling meanwhile
    d.start()
    browser.wait_text("conn-status", lambda t: t == "live", what="the page back to live")
    assert "stale" not in browser.js("document.getElementById('main').className")
    assert browser.problems() == []


@needs_chromium
def test_browser_readable_while_postgres_is_down(stoppable_daemon_factory, stoppable_pg,
                                                 browser, tmp_path):
    d = admin_daemon(stoppable_daemon_factory)
    browser.open(f"http://127.0.0.1:{d.admin_port}/")
    browser.wait_text("pg-status", lambda t: t == "PostgreSQL up")
    stoppable_pg.stop_immediate()
    with d.connect() as c:      # a batch makes the writer find out and spool
        c.send_msgpack({"mg_id": "down-1", "mg_record_type": "generation",
                        "mg_pass_id": "p1", "prompt": "x"})
        browser.wait_text("pg-status", lambda t: t == "PostgreSQL down", timeout=30)
    assert browser.text("conn-status") == "live"
    states = browser.js("[...document.querySelectorAll('#writers li')]"
                        ".map(li => li.dataset.state)")
    assert "spooling" in states or "holding" in states, states
    # The warning that says why is on the page (the log ring in /stats).
    logs = browser.wait_text("logs", lambda t: "warn" in t or "error" in t,
                             what="a recent warning on the page")
    assert logs != "none"
    browser.screenshot(os.path.join(str(tmp_path), "status-page-pg-down.png"))
    assert browser.problems() == []
