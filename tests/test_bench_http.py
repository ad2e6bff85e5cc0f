"""megaingest-bench --http, against a small HTTP/1.1 server in this process
that answers the way megaingestd's POST /v1/events does: the request
shape (a JSON array of the Forward mode's events, its headers, keep-alive
connections), a 503 with Retry-After sent again with the same body, and
answers that are not 200 counted as errors with a failing exit status.
The daemon side has its own tests; this one checks the load generator."""

import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import MEGAINGESTD

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def bench_path():
    top_builddir = os.environ.get("top_builddir", os.path.dirname(MEGAINGESTD))
    path = os.path.join(top_builddir, "megaingest-bench")
    assert os.access(path, os.X_OK), f"megaingest-bench not built at {path}"
    return path


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as the daemon

    def log_message(self, *args):
        pass

    def do_POST(self):
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with srv.lock:
            n = len(srv.requests)
            srv.requests.append({"path": self.path, "headers": dict(self.headers),
                                 "hosts": self.headers.get_all("Host"),
                                 "body": body, "peer": self.client_address})
            status, answer, extra = srv.answer(n, json.loads(body))
        data = json.dumps(answer).encode()
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.requests = []
    srv.answer = lambda n, events: (200, {"accepted": len(events), "rejected": []}, {})
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_bench(srv, *args):
    out = subprocess.run([bench_path(), "--http", f"127.0.0.1:{srv.server_address[1]}",
                          "--timeout", "20", *args],
                         capture_output=True, text=True, timeout=60)
    metrics = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    return out, metrics


def test_http_posts_the_mix_as_json_and_resends_a_503(server):
    def answer(n, events):
        if n == 0:
            return 503, {"error": "queue full"}, {"Retry-After": "1"}
        return 200, {"accepted": len(events), "rejected": []}, {}

    server.answer = answer
    out, m = run_bench(server, "-c", "2", "-m", "50", "-n", "300", "--token", "s3cret")
    assert out.returncode == 0, out.stdout + out.stderr
    assert m["transport"] == "http" and m["inflight"] == "1"
    assert m["events_sent"] == "300" and m["events_acked"] == "300"
    assert m["chunks_acked"] == "6" and m["ok"] == "true"
    assert (m["http_retries"], m["http_errors"], m["http_rejected"]) == ("1", "0", "0")
    # the wait is in the answer time: the retried chunk took about Retry-After
    # (libevent's timers run from the loop's cached clock: a little early)
    assert float(m["ack_max_ms"]) >= 900

    reqs = server.requests
    assert len(reqs) == 7
    resent = [r for r in reqs[1:] if r["body"] == reqs[0]["body"]]
    assert len(resent) == 1, "the body answered 503 was not sent again"
    assert resent[0]["headers"]["Idempotency-Key"] == reqs[0]["headers"]["Idempotency-Key"]
    assert len({r["headers"]["Idempotency-Key"] for r in reqs}) == 6
    # two keep-alive connections carried all seven requests
    assert len({r["peer"] for r in reqs}) == 2

    ids = set()
    for r in reqs:
        h = r["headers"]
        assert r["path"] == "/v1/events"
        assert h["Content-Type"] == "application/json"
        assert h["Authorization"] == "Bearer s3cret"
        assert r["hosts"] == [f"127.0.0.1:{server.server_address[1]}"]
        events = json.loads(r["body"])
        assert isinstance(events, list) and len(events) == 50
        for ev in events:
            assert UUID7.match(ev["mg_id"]), ev
            assert ev["mg_record_type"] in (
                "generation", "session", "feedback", "credit_transaction")
            assert ev["mg_pass_id"].startswith("pass_")
            assert RFC3339_NS.match(ev["mg_created_at"]), ev
            assert ev["mg_meta"]["app"] == "megaingest-bench"
            assert isinstance(ev["mg_meta"]["seq"], int)
            if ev["mg_record_type"] == "generation":
                assert isinstance(ev["mg_latency_ms"], int)
                assert len(ev["mg_prompt"]) >= 150
        if r is not resent[0]:
            ids.update(ev["mg_id"] for ev in events)
    assert len(ids) == 300, "every event must be a new row"


def test_http_errors_and_rejections_fail_the_run(server):
    def answer(n, events):
        if n % 2:
            return 400, {"error": "does not parse at byte 1"}, {}
        return 200, {"accepted": len(events) - 1,
                     "rejected": [{"index": 0, "field": "mg_id", "reason": "bad"}]}, {}

    server.answer = answer
    out, m = run_bench(server, "-c", "1", "-m", "10", "-n", "40")
    assert out.returncode == 1, out.stdout + out.stderr
    assert m["ok"] == "false"
    assert m["events_sent"] == "40" and m["events_acked"] == "18"
    assert (m["http_retries"], m["http_errors"], m["http_rejected"]) == ("0", "2", "2")
    assert "HTTP 400" in out.stderr and "does not parse at byte 1" in out.stderr


def test_http_paced_run_and_refused_connection(server):
    out, m = run_bench(server, "-c", "2", "-m", "20", "-n", "200", "-r", "400")
    assert out.returncode == 0, out.stdout + out.stderr
    assert m["events_acked"] == "200" and m["target_rate"] == "400"
    # paced: 200 events at 400/s cannot finish in much less than half a second
    assert float(m["elapsed_s"]) >= 0.4
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    out = subprocess.run([bench_path(), "--http", f"127.0.0.1:{port}", "-n", "10"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "HTTP request failed" in out.stderr


def test_http_json_report_is_one_object(server):
    out, _ = run_bench(server, "-c", "1", "-m", "10", "-n", "20", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["transport"] == "http" and report["events_acked"] == 20
    assert (report["http_retries"], report["http_errors"], report["http_rejected"]) == (0, 0, 0)


def test_http_option_rules():
    for args, msg in [(["--http", "127.0.0.1:1", "-w", "2"], "-w 1"),
                      (["--http", "127.0.0.1"], "host:port"),
                      (["-H", "127.0.0.1:1", "--token", "x"], "--token needs --http"),
                      (["-H", "127.0.0.1:1", "--http", "127.0.0.1:1"], "exactly one")]:
        out = subprocess.run([bench_path(), *args], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and msg in out.stderr, (args, out.stderr)
