"""The HTTP input: POST /v1/events, answered only once the events are
committed (or fsync'ed in the spool), with real clients: curl, Python's
urllib.request, Node's built-in fetch (the Supabase Edge Function
pattern). Every answer: 200, 400 (with the byte offset), 401, 404, 405,
413, 415, 503; gzip; tokens; TLS; idempotent retries; a 50 MB body refused
unread; a stalled client cut at the deadline."""

import gzip
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import msgpack
import pytest

from helpers import free_tcp_port, wait_for
from opshelpers import admin_daemon, m, metrics

TOKEN = "tok-3f9c1e7a5b"


def http_daemon(factory, http=None, admin=False, **over):
    port = free_tcp_port()
    cfg = {"http": dict({"listen": [f"127.0.0.1:{port}"]}, **(http or {}))}
    cfg.update(over)
    d = admin_daemon(factory, cfg) if admin else factory(cfg)
    d.http_port = port
    d.http_url = f"http://127.0.0.1:{port}/v1/events"
    # The fixture waits for the Forward listener; the HTTP one is bound next.
    d.wait_log(r"http: listening on https?://127\.0\.0\.1:%d/" % port)
    return d


def post(url, body, ctype="application/json", headers=None, timeout=30, context=None):
    """POST with urllib; (status, headers, parsed JSON body or text)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": ctype} if ctype else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method="POST", headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            status, hdrs, text = r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, dict(e.headers), e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


def gen(i, **cols):
    return dict({"mg_id": f"h-{i}", "mg_record_type": "generation", "prompt": f"p {i}"}, **cols)


def test_json_array_committed_before_the_answer(daemon_factory, pg):
    """200 with the count once committed: the rows are there the moment the
    answer arrives (no waiting), and a bad element is listed, not fatal."""
    d = http_daemon(daemon_factory)
    events = [gen(i) for i in range(50)] + [{"mg_id": "h-bad", "latency_ms": "slow"}]
    status, _, body = post(d.http_url, events)
    assert status == 200, body
    assert body["accepted"] == 50
    assert body["rejected"] == [{"index": 50, "field": "mg_latency_ms", "reason": "bad_type",
                                 "message": "mg_latency_ms: expected integer, got str"}]
    assert pg.count("mg_id LIKE 'h-%%'") == 50     # no wait: committed before the 200
    dl = d.wait_dead_letter(lambda x: x.get("event", {}).get("mg_id") == "h-bad")
    assert dl["peer"].startswith("http:127.0.0.1:")


def test_curl_ndjson_gzip_and_the_path_type(daemon_factory, pg):
    d = http_daemon(daemon_factory)
    lines = "\r\n".join(json.dumps({"mg_id": f"c-{i}", "title": "from curl"})
                        for i in range(3)) + "\n\n"
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/x-ndjson",
         "-H", "Content-Encoding: gzip", "--data-binary", "@-", d.http_url + "/session"],
        input=gzip.compress(lines.encode()), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"accepted": 3, "rejected": []}
    assert {r["mg_record_type"] for r in pg.rows("SELECT mg_record_type FROM mega_generations "
                                                  "WHERE mg_id LIKE 'c-%%'")} == {"session"}


def test_msgpack_body_and_admin_table(daemon_factory, pg):
    d = http_daemon(daemon_factory)
    body = msgpack.packb([{"mg_id": "hm-1", "mg_record_type": "admin_audit", "action": "login"},
                          {"mg_id": "hm-2", "mg_record_type": "feedback", "comment": "ok"}])
    status, _, reply = post(d.http_url, body, ctype="application/msgpack")
    assert status == 200 and reply["accepted"] == 2, reply
    assert pg.value("SELECT mg_action FROM mega_admin WHERE mg_id = 'hm-1'") == "login"
    assert pg.row("hm-2")["mg_comment"] == "ok"


def test_node_fetch_edge_function_pattern(daemon_factory, pg, tmp_path):
    """The Supabase Edge Function pattern, with Node's built-in fetch; and a
    request that forgets the content type gets a 415 naming the types."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# app backends\n{TOKEN}\n")
    d = http_daemon(daemon_factory, {"tokens_file": str(tokens)})
    script = tmp_path / "edge.mjs"
    script.write_text("""
const url = process.argv[2], token = process.argv[3];
const events = [{mg_id: "edge-1", mg_record_type: "generation", prompt: "hi"},
                {mg_id: "edge-2", mg_record_type: "session"}];
const ok = await fetch(url, {method: "POST",
  headers: {"content-type": "application/json", authorization: `Bearer ${token}`},
  body: JSON.stringify(events)});
const noType = await fetch(url, {method: "POST",
  headers: {authorization: `Bearer ${token}`}, body: JSON.stringify(events)});
console.log(JSON.stringify({ok: ok.status, okBody: await ok.json(),
                            noType: noType.status, noTypeBody: await noType.json()}));
""")
    out = subprocess.run(["node", str(script), d.http_url, TOKEN], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["ok"] == 200 and r["okBody"] == {"accepted": 2, "rejected": []}
    assert r["noType"] == 415
    assert "application/json, application/x-ndjson or application/msgpack" in \
        r["noTypeBody"]["error"]
    assert pg.count("mg_id LIKE 'edge-%%'") == 2


def test_every_refusal_says_why(daemon_factory, pg, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    d = http_daemon(daemon_factory, {"tokens_file": str(tokens), "max_body_bytes": 4096},
                    admin=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    st, h, body = post(d.http_url, [gen(1)])
    assert st == 401 and "Bearer" in h.get("WWW-Authenticate", ""), body
    st, _, body = post(d.http_url, [gen(1)], headers={"Authorization": "Bearer wrong"})
    assert st == 401
    st, _, body = post(d.http_url, b'[{"mg_id": "x"}, {"mg_id": ', headers=auth)
    assert st == 400 and body["offset"] > 0 and "does not parse" in body["error"], body
    st, _, body = post(d.http_url, b"<xml/>", ctype="text/xml", headers=auth)
    assert st == 415 and "application/json" in body["error"]
    st, _, _ = post(d.http_url, b"x" * 10000, headers=auth)
    assert st == 413
    st, _, _ = post(d.http_url.replace("/v1/events", "/v2/other"), [gen(1)], headers=auth)
    assert st == 404
    req = urllib.request.Request(d.http_url, method="GET", headers=auth)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405 and e.value.headers["Allow"] == "POST"
    assert pg.count() == 0
    s = metrics(d.admin_port)
    for code, n in (("401", 2), ("400", 1), ("415", 1), ("404", 1), ("405", 1)):
        assert m(s, "http_requests_total", code=code) == n, code


def test_idempotency_key_makes_a_retry_harmless(daemon_factory, pg):
    """Events without mg_id get ids from the Idempotency-Key and their
    index: the same request sent twice makes its rows once."""
    d = http_daemon(daemon_factory)
    events = [{"mg_record_type": "session", "title": f"t{i}"} for i in range(5)]
    hdr = {"Idempotency-Key": "req-7d1c"}
    assert post(d.http_url, events, headers=hdr)[0] == 200
    ids = {r[0] for r in pg.sql("SELECT mg_id FROM mega_generations")}
    assert len(ids) == 5
    assert post(d.http_url, events, headers=hdr)[0] == 200
    assert {r[0] for r in pg.sql("SELECT mg_id FROM mega_generations")} == ids
    assert post(d.http_url, events, headers={"Idempotency-Key": "req-other"})[0] == 200
    assert pg.count() == 10


def test_https_with_the_forward_tls_setup(daemon_factory, pg, certs):  # noqa: F811
    d = http_daemon(daemon_factory, {"tls": {"cert": certs["server"][0],
                                             "key": certs["server"][1]}})
    url = d.http_url.replace("http://", "https://")
    ctx = ssl.create_default_context(cafile=certs["ca"][0])
    st, _, body = post(url, [gen(1)], context=ctx)
    assert st == 200 and body["accepted"] == 1
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        post(d.http_url, [gen(2)], timeout=5)         # plain HTTP to an HTTPS port
    assert pg.count() == 1


def test_fifty_megabytes_refused_without_reading_it(daemon_factory, pg):
    """Content-Length over max_body_bytes: 413 at once, the body never read."""
    d = http_daemon(daemon_factory)
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 52428800\r\n\r\n" + b"[" + b" " * 65536)
    reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    s.close()
    assert d.proc.poll() is None


def test_stalled_client_is_cut_at_the_deadline(daemon_factory, pg):
    d = http_daemon(daemon_factory, {"timeout_s": 2})
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")   # ... and nothing more
    t0 = time.monotonic()
    data = s.recv(4096)
    waited = time.monotonic() - t0
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
    assert 1.5 <= waited < 8, waited
    s.close()
    # The daemon still serves others.
    assert post(d.http_url, [gen(1)])[0] == 200


def test_answer_comes_from_the_spool_while_postgres_is_down(stoppable_pg,
                                                           stoppable_daemon_factory):
    """PostgreSQL stopped: the 200 arrives once the events are fsync'ed in
    the spool; they reach the table when it is back."""
    d = http_daemon(stoppable_daemon_factory,
                    writer={"retry_initial_ms": 100, "retry_max_ms": 500})
    stoppable_pg.stop_immediate()
    try:
        st, _, body = post(d.http_url, [gen(i) for i in range(20)])
        assert st == 200 and body["accepted"] == 20
        assert any(n.endswith(".seg") for n in os.listdir(d.spool_dir))
    finally:
        stoppable_pg.start_again()
    wait_for(lambda: stoppable_pg.count() == 20, what="the spooled events committed")


def test_disconnected_client_loses_nothing(daemon_factory, pg):
    """A client that hangs up before its answer: the accepted events are
    committed anyway."""
    d = http_daemon(daemon_factory)
    body = json.dumps([gen(i) for i in range(200)]).encode()
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    s.close()
    wait_for(lambda: pg.count() == 200, what="200 rows")
    assert d.proc.poll() is None


def test_503_with_retry_after_while_the_queues_are_full(stoppable_pg,
                                                       stoppable_daemon_factory):
    """PostgreSQL frozen mid-statement, queue.max_events 1: the first
    request's batch hangs in the writer, the second fills the queue, the
    third is answered 503 with Retry-After at once; after SIGCONT the first
    two are answered 200 and committed."""
    d = http_daemon(stoppable_daemon_factory, queue={"max_events": 1},
                    writer={"statement_timeout_ms": 60000})
    assert post(d.http_url, [gen(0)])[0] == 200          # connected, warm
    pids = stoppable_pg.pids()
    answers = {}

    def send(i):
        answers[i] = post(d.http_url, [gen(i)], timeout=60)

    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        first = threading.Thread(target=send, args=(1,))
        first.start()
        time.sleep(0.5)
        second = threading.Thread(target=send, args=(2,))
        second.start()
        time.sleep(0.5)
        st, h, body = post(d.http_url, [gen(3)], timeout=10)
        assert st == 503 and h.get("Retry-After") == "1", (st, body)
        assert "busy" in body["error"]
        assert 1 not in answers and 2 not in answers     # not before the commit
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    first.join(60)
    second.join(60)
    assert answers[1][0] == 200 and answers[2][0] == 200
    assert stoppable_pg.count() == 3


def test_exposed_listener_without_tokens_is_warned_about(tmp_path):
    """-t says so when http.listen reaches other machines with no tokens
    (valid config all the same); with a tokens file it is quiet."""
    from helpers import MEGAINGESTD
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    for extra, warned in (("", True), (f"  tokens_file: {tokens}\n", False)):
        cfg = tmp_path / "c.yaml"
        cfg.write_text('http:\n  listen: ["0.0.0.0:18080"]\n' + extra)
        out = subprocess.run([MEGAINGESTD, "-t", "-c", str(cfg)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert ("http.listen 0.0.0.0:18080 is reachable" in out.stderr) == warned, out.stderr


def test_connections_over_the_cap_are_closed_at_once(daemon_factory, pg):
    """http.max_connections 3: a fourth connection is closed as soon as it
    opens and counted; the three keep working, and once one closes a new
    one is served."""
    d = http_daemon(daemon_factory, {"max_connections": 3}, admin=True)
    held = [socket.create_connection(("127.0.0.1", d.http_port), timeout=10) for _ in range(3)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
    extra.settimeout(5)
    assert extra.recv(100) == b""                      # closed by the daemon
    extra.close()
    wait_for(lambda: m(metrics(d.admin_port), "http_connections_refused_total") == 1,
             what="the refusal counted")
    body = json.dumps([gen(1)]).encode()
    held[0].sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
    for s in held:
        s.close()
    wait_for(lambda: post(d.http_url, [gen(2)])[0] == 200, what="a new connection served")
    assert pg.count() == 2
