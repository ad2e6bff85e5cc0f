"""What one HTTP request may cost, and the HTTP input's limits after a
reload: a body of hundreds of thousands of rejected elements makes a
bounded number of dead-letter lines and a short answer while its valid
events are committed; a request of many events stops handing them in
while the queues are full; listen.max_event_bytes lowered by SIGHUP
applies to the next request."""

import gzip
import json
import threading
import time

from helpers import wait_for
from opshelpers import m, metrics
from test_http import gen, http_daemon, post
from test_limits import sanitized


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_flood_of_rejected_elements_costs_one_line(daemon_factory, pg):
    """200,000 rejected elements (100,000 that are no object, 100,000 empty
    objects) around three valid events: the three are committed before the
    200, the dead-letter file gets 16 lines one by one and one for the
    rest with its count, and the answer lists 16 and counts the rest."""
    d = http_daemon(daemon_factory, admin=True)
    n = 100_000
    body = ([gen(0)] + [1] * n + [gen(1)] + [{}] * n + [gen(2)])
    base = rss_mib(d.pid)
    status, _, answer = post(d.http_url, body, timeout=120)
    grown = rss_mib(d.pid) - base
    print(f"\nFIGURE: 200,000 rejected elements in one request: RSS +{grown:.1f} MiB, "
          f"answer {len(json.dumps(answer))} bytes")
    assert status == 200, answer
    assert answer["accepted"] == 3
    assert len(answer["rejected"]) == 16
    assert [r["index"] for r in answer["rejected"]] == list(range(1, 17))
    assert answer["rejected"][0]["reason"] == "not_a_map"
    assert answer["rejected_more"] == 2 * n - 16
    assert len(json.dumps(answer)) < 8192
    assert pg.count("mg_id LIKE 'h-%%'") == 3        # committed before the 200
    lines = wait_for(lambda: len(d.dead_letters()) == 17 and d.dead_letters(),
                     what="17 dead-letter lines")
    bulk = lines[-1]
    assert bulk["count"] == 2 * n - 16
    assert bulk["reason"].startswith("elements 17 to %d: %d rejected elements" % (2 * n + 1,
                                                                                   2 * n - 16))
    s = metrics(d.admin_port)
    assert m(s, "dead_letter_bulk_total") == 1
    assert sum(v for k, v in s.items() if k[0] == "megaingest_events_rejected_total") == 2 * n
    if not sanitized():                          # ASan's quarantine holds what was freed
        assert grown < 64, f"RSS grew by {grown:.0f} MiB"


def test_a_large_request_waits_for_room_in_the_queue(daemon_factory, pg):
    """queue.max_events 100 and the table locked: a request of 5,000
    events hands them in only while the queue has room, so the queue holds
    about its limit, not the request; once the lock goes, all 5,000 are
    committed and then answered."""
    d = http_daemon(daemon_factory, admin=True,
                    queue={"max_events": 100}, writer={"batch_max_events": 50})
    lock = pg.connect()
    cur = lock.cursor()
    cur.execute("BEGIN; LOCK TABLE mega_generations IN ACCESS EXCLUSIVE MODE")
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=post(d.http_url, [gen(i) for i in range(5000)], timeout=120)))
    t.start()
    try:
        wait_for(lambda: m(metrics(d.admin_port), "events_received_total") >= 100,
                 what="events handed in")
        time.sleep(1)                               # the queue is full: nothing more goes in
        s = metrics(d.admin_port)
        got, depth = m(s, "events_received_total"), m(s, "queue_events")
        print(f"\nFIGURE: queue.max_events 100, 5,000 events in one request, table "
              f"locked: {got:.0f} handed in, queue_events {depth:.0f}")
        assert depth <= 100 + 64, depth
        assert got < 1000, got
    finally:
        lock.rollback()
        lock.close()
    t.join(120)
    status, _, answer = result["r"]
    assert status == 200, answer
    assert answer["accepted"] == 5000
    assert pg.count("mg_id LIKE 'h-%%'") == 5000


def test_a_reload_lowers_max_event_bytes_for_http(daemon_factory, pg):
    """listen.max_event_bytes lowered from 1 MiB to 4 KiB by SIGHUP: an
    event over 4 KiB is rejected on its own, gzip data inflating past
    16 x 4 KiB is refused with 413, and a small event still goes in."""
    d = http_daemon(daemon_factory)
    big = gen(1, prompt="x" * 8000)
    status, _, answer = post(d.http_url, [big])
    assert (status, answer["accepted"]) == (200, 1)
    d.config["listen"]["max_event_bytes"] = 4096
    d.write_config()
    d.sighup()
    d.wait_log(r"configuration reloaded")
    status, _, answer = post(d.http_url, [gen(2, prompt="x" * 8000)])
    assert status == 200, answer
    assert answer["accepted"] == 0
    assert answer["rejected"][0]["reason"] == "too_long", answer
    inflating = gzip.compress(json.dumps([gen(i, prompt="y" * 1000)
                                          for i in range(3, 103)]).encode())
    status, _, answer = post(d.http_url, inflating,
                             headers={"Content-Encoding": "gzip"})
    assert status == 413, answer
    status, _, answer = post(d.http_url, [gen(200)])
    assert (status, answer["accepted"]) == (200, 1)
    assert pg.count("mg_id LIKE 'h-%%'") == 2


def test_a_request_waiting_for_room_is_answered_at_shutdown(daemon_factory, pg):
    """SIGTERM while a large request waits for room in the queues: it stops
    waiting, the events it had not handed in are refused, and it is answered
    503 (after the events it did hand in are durable) before the daemon
    exits, instead of losing its connection unanswered."""
    d = http_daemon(daemon_factory, admin=True, queue={"max_events": 100},
                    writer={"batch_max_events": 50, "drain_timeout_s": 2})
    lock = pg.connect()
    lock.cursor().execute("BEGIN; LOCK TABLE mega_generations IN ACCESS EXCLUSIVE MODE")
    result = {}

    def send():
        try:
            result["r"] = post(d.http_url, [gen(i) for i in range(5000)], timeout=60)
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=send)
    t.start()
    try:
        wait_for(lambda: m(metrics(d.admin_port), "events_received_total") >= 100,
                 what="events handed in")
        time.sleep(0.5)
        d.signal(15)
        t.join(30)
        assert d.wait_exit() == 0
    finally:
        lock.rollback()
        lock.close()
    assert "r" in result, f"no answer: {result.get('error')}"
    status, headers, answer = result["r"]
    assert status == 503, answer
    assert "Retry-After" in headers
