"""megactl: `stats` once, `stats -f` under load checked against the rows
PostgreSQL holds, `health`, and what it says when the daemon is away."""

import re
import subprocess
import threading
import time

from helpers import SLOW, free_tcp_port
from opshelpers import MEGACTL, admin_daemon, m, metrics


def megactl(*args, timeout=60):
    return subprocess.run([MEGACTL] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def url(d):
    return f"http://127.0.0.1:{d.admin_port}"


def test_stats_once_prints_every_figure(daemon_factory, pg):
    d = admin_daemon(daemon_factory)
    d.send_msgpack(*[{"mg_id": f"o-{i}", "mg_record_type": "session"} for i in range(12)],
                   {"mg_id": "o-bad", "mg_record_type": "session", "mg_latency_ms": "x"})
    d.wait_rows(12)
    r = megactl("stats", "--url", url(d))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith(f"megaingestd 0.1.0 at {url(d)}, up ")
    assert re.search(r"^events_received_total +13 ", out, re.M)
    assert re.search(r"^events_committed_total +12 ", out, re.M)
    assert re.search(r"^events_rejected_total +1 ", out, re.M)
    assert re.search(r"^    bad_type +1$", out, re.M)
    assert re.search(r"^postgres_up +1 ", out, re.M)
    assert re.search(r"^event_commit_latency_seconds +12 ", out, re.M)
    assert re.search(r"mean [0-9.]+ m?s, p50 [0-9.]+ m?s, p99 [0-9.]+ m?s", out)
    # one row per metric of the list (build_info is in the first line)
    for name in ["queue_events", "queue_bytes", "spool_bytes", "connections",
                 "postgres_reconnects_total", "batch_commit_seconds", "uptime_seconds",
                 "events_dead_lettered_total", "batches_committed_total", "acks_sent_total"]:
        assert re.search(rf"^{name} ", out, re.M), name


def parse_follow(out):
    """(header count, [row dicts]) of `megactl stats -f` output."""
    headers, rows, cols = 0, [], None
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "time":
            headers += 1
            cols = fields
            continue
        assert cols and len(fields) == len(cols), f"bad line: {line!r}"
        rows.append(dict(zip(cols, fields)))
    return headers, rows


def test_stats_follow_rates_match_the_table(daemon_factory, pg):
    """Ten one-second lines while a client sends 8,000 events (1 in 40
    invalid) over about three seconds (longer on a loaded machine: the
    lines outlast it): the per-second rates add up to what was sent,
    rejected, and what PostgreSQL holds."""
    d = admin_daemon(daemon_factory)
    chunks, per_chunk = 40, 200
    proc = subprocess.Popen([MEGACTL, "stats", "--url", url(d), "-f", "-i", "1", "-n", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)   # megactl takes its first reading right away

    def load():
        with d.connect(via="tcp") as c:
            for k in range(chunks):
                entries = [[1700000000, {"mg_id": f"f-{k}-{i}", "mg_record_type": "session",
                                         "mg_latency_ms": "bad" if i % 40 == 0 else i}]
                           for i in range(per_chunk)]
                c.forward_chunk("mega.session", entries, f"c{k}")
                time.sleep(0.07)
    t = threading.Thread(target=load)
    t.start()
    out, err = proc.communicate(timeout=30 * SLOW)
    t.join()
    assert proc.returncode == 0, err
    headers, rows = parse_follow(out)
    assert headers == 1 and len(rows) == 10
    total = chunks * per_chunk
    rejected = chunks * (per_chunk // 40)
    committed = pg.count()
    assert committed == total - rejected
    sums = {k: sum(float(r[k]) for r in rows) for k in ("in/s", "commit/s", "rej/s")}
    # Each line is (delta / elapsed) with elapsed a hair over 1 s, rounded.
    assert abs(sums["in/s"] - total) <= total * 0.02 + 6, (sums, out)
    assert abs(sums["commit/s"] - committed) <= committed * 0.02 + 6, (sums, out)
    assert abs(sums["rej/s"] - rejected) <= rejected * 0.02 + 6, (sums, out)
    assert max(float(r["in/s"]) for r in rows) > 1000, out
    assert all(r["pg"] == "up" for r in rows)
    busy = [r for r in rows if float(r["commit/s"]) > 0]
    assert busy and all(re.fullmatch(r"[0-9.]+", r["p99_ms"]) for r in busy), out
    assert rows[-1]["queue"] == "0" and rows[-1]["conns"] == "0"
    assert m(metrics(d.admin_port), "events_committed_total") == committed


def test_stats_follow_header_every_20_lines(daemon_factory):
    d = admin_daemon(daemon_factory)
    r = megactl("stats", "--url", url(d), "-i", "0.1", "-n", "21")
    assert r.returncode == 0, r.stderr
    headers, rows = parse_follow(r.stdout)
    assert headers == 2 and len(rows) == 21
    assert r.stdout.splitlines()[21].split()[0] == "time"


def test_daemon_not_answering():
    port = free_tcp_port()
    for args in (["stats"], ["stats", "-f"], ["health"]):
        r = megactl(*args, "--url", f"http://127.0.0.1:{port}")
        assert r.returncode == 1
        assert f"no answer from http://127.0.0.1:{port}/" in r.stderr
        assert "Connection refused" in r.stderr and "is megaingestd running" in r.stderr
        assert r.stdout == ""


def test_daemon_stops_answering_while_following(daemon_factory):
    d = admin_daemon(daemon_factory)
    proc = subprocess.Popen([MEGACTL, "stats", "--url", url(d), "-f", "-i", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    assert d.sigterm() == 0
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert "no answer from" in err
    assert parse_follow(out)[1], "some lines before the daemon went away"


def test_health(daemon_factory):
    d = admin_daemon(daemon_factory)
    r = megactl("health", "--url", url(d))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "healthz: ok (HTTP 200)\nreadyz: ready (HTTP 200)\n"
    down = admin_daemon(daemon_factory, {"postgres": {"conninfo": "host=/nonexistent-mi"}},
                        ready=False)
    down.wait_ready()
    r = megactl("health", "--url", url(down))
    assert r.returncode == 1
    assert "readyz: not ready: writer 0 spooling: PostgreSQL is away" in r.stdout


def test_usage_errors():
    r = megactl()
    assert r.returncode == 2 and "usage: megactl COMMAND" in r.stderr
    r = megactl("frobnicate")
    assert r.returncode == 2 and 'unknown command "frobnicate"' in r.stderr
    r = megactl("stats", "-i", "0")
    assert r.returncode == 2 and "-i 0: expected seconds" in r.stderr
    r = megactl("stats", "--bogus")
    assert r.returncode == 2 and "usage: megactl stats" in r.stderr
    r = megactl("stats", "--url", "https://x:1")
    assert r.returncode == 1 and "bad URL" in r.stderr
    r = megactl("--help")
    assert r.returncode == 0 and "stats" in r.stdout and "health" in r.stdout
    r = megactl("--version")
    assert r.stdout == "megactl 0.1.0\n"
