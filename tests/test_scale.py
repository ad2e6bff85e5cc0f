"""Several daemons: on one host (listen.reuseport), and on one database,
exactly once.

Three real daemons, each with two writer connections and
postgres.apply_credits, share one PostgreSQL. Their clients send overlapping
traffic: the same mg_ids through different daemons, a pending and a
terminal update of one generation racing each other, credit transactions of
shared customers, and resends (the same chunk again through another daemon,
with and without the first ack read). What the ledger ends up holding must
be exactly what one daemon makes of the same traffic: every balance the sum
of the distinct transactions, no terminal status reverted, meta the union,
and no deadlock reaching a client or a dead-letter file.

The traffic is built so that its merge result does not depend on arrival
order (all events of one mg_id share their event time; the columns two
events of an mg_id both set carry the same value; meta keys are disjoint),
so "what one daemon makes of it" is also computed here directly.

The racing updates go out in blocks, the pending events in mg_id order to
one daemon and the terminal ones in reverse order to another at the same
moment: their merges lock the same rows in opposite orders, PostgreSQL
detects deadlocks (a few per run, printed), and the writers' immediate retry
of SQLSTATE class 40 must absorb every one (without it, the batch goes to
the spool, which the test refuses).

SCALE_GENERATIONS, SCALE_CHUNK, SCALE_RACE and SCALE_BENCH_EVENTS resize the
traffic; run with -s to see the figures.
"""

import os
import resource
import random
import subprocess
import threading
import time

import pytest

from helpers import BUILDDIR, MEGAINGESTD, free_tcp_port, packb, wait_for
from opshelpers import admin_daemon, m, metrics

T0 = 1_760_000_000
CUSTOMERS = 24
GENERATIONS = int(os.environ.get("SCALE_GENERATIONS", "2000"))
CREDITS = 2400
CREDIT_REPEATS = 1200
CHUNK = int(os.environ.get("SCALE_CHUNK", "40"))
CLIENT_THREADS = 12
RACE = int(os.environ.get("SCALE_RACE", "200"))

SCALE_CONFIG = {"writer": {"connections": 2}, "postgres": {"apply_credits": True}}


# ---- the traffic ----------------------------------------------------------

def _generation_events(p):
    """Per mg_id: a pending, a terminal (succeeded, or failed for every
    fifth), for some a title-only update and a late pending repeat. Odd
    generations have no pass id: their batches lock no customer row, so
    nothing serialises the writers that merge them. Returns the events to
    shuffle and, for the odd ids, the (pending, terminal) pairs that race."""
    out, races = [], []
    for i in range(GENERATIONS):
        mg_id, t = f"{p}-g-{i}", T0 + i
        base = {"mg_id": mg_id, "mg_record_type": "generation"}
        if i % 2 == 0:
            base["pass_id"] = f"{p}-cust-{i % CUSTOMERS}"
        pending = dict(base, status="pending", prompt=f"prompt {i}", meta={"pending": i})
        if i % 5 == 0:
            final = dict(base, status="failed", error=f"error {i}", meta={"done": i})
        else:
            final = dict(base, status="succeeded", output_url=f"https://cdn/{i}.png",
                         latency_ms=100 + i, meta={"done": i})
        evs = [] if i % 2 else [pending, final]
        if i % 2:
            races.append(([t, pending], [t, final]))
        if i % 3 == 0:
            evs.append(dict(base, title=f"title {i}", meta={"title": i}))
        if i % 4 == 0:
            evs.append(dict(pending))
        out += [("mega.generation", t, e) for e in evs]
    return out, races


def race_pairs(p, races, rng):
    """Chunks of RACE pending events in mg_id order and of their terminal
    updates in the reverse order, to be sent at the same moment to two
    daemons: their merges lock the same rows in opposite orders."""
    pairs = []
    for k in range(0, len(races), RACE):
        block = races[k:k + RACE]
        a = ("mega.generation", f"{p}-race-{k}-a", [r[0] for r in block])
        b = ("mega.generation", f"{p}-race-{k}-b", [r[1] for r in reversed(block)])
        pairs.append((a, b, rng.randrange(3)))
    return pairs


def _credit_events(p, rng):
    distinct = []
    for j in range(CREDITS):
        reason = rng.choice(["usage", "refund", "bonus", "topup"])
        delta = rng.randrange(1, 300) if reason == "topup" else rng.randrange(-50, 200)
        distinct.append(("mega.credit_transaction", T0 + 10_000 + j,
                         {"mg_id": f"{p}-c-{j}", "mg_record_type": "credit_transaction",
                          "pass_id": f"{p}-cust-{rng.randrange(CUSTOMERS)}",
                          "delta": delta, "reason": reason, "source": f"src-{j}"}))
    return distinct


def traffic(p, seed=17):
    """PREFIX's events as chunks: (tag, chunk id, entries, daemon index,
    resend), where resend is None, "after-ack" or "unread" (the first
    connection is closed before its ack is read); the racing pairs of
    race_pairs(); the distinct credits."""
    rng = random.Random(seed)
    gens, races = _generation_events(p)
    credits = _credit_events(p, rng)
    events = gens + credits + [rng.choice(credits) for _ in range(CREDIT_REPEATS)]
    rng.shuffle(events)
    chunks = []
    for tag, anon in (("mega.generation", True), ("mega.generation", False),
                      ("mega.credit_transaction", False)):
        mine = [e for e in events if e[0] == tag and ("pass_id" not in e[2]) == anon]
        for k in range(0, len(mine), CHUNK):
            entries = [[t, rec] for _, t, rec in mine[k:k + CHUNK]]
            resend = rng.choice([None, None, None, "after-ack", "unread"])
            chunks.append((tag, f"{p}-{tag}-{anon:d}-{k}", entries, rng.randrange(3), resend))
    rng.shuffle(chunks)
    return chunks, race_pairs(p, races, rng), [rec for _, _, rec in credits]


def _send_chunk(daemons, chunk, via):
    tag, cid, entries, target, resend = chunk
    first = daemons[target % len(daemons)]
    other = daemons[(target + 1) % len(daemons)]
    if resend == "unread":
        c = first.connect(via)
        c.forward(tag, entries, chunk=cid)
        c.close()
    else:
        first.forward_chunk(tag, entries, cid, via=via)
    if resend:
        other.forward_chunk(tag, entries, cid, via="tcp" if via == "unix" else "unix")


def deliver(daemons, chunks, pairs):
    """Send each of PAIRS from two threads at once (a barrier before each
    pair), then CHUNKS from CLIENT_THREADS threads; every chunk must be
    acked. Returns (events sent including resends, seconds)."""
    errors, sent = [], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(2, timeout=120)

    def racer(side):
        try:
            for j, pair in enumerate(pairs):
                tag, cid, entries = pair[side]
                d = daemons[(pair[2] + side) % len(daemons)]
                data = packb([tag, entries, {"chunk": cid}])
                with d.connect(["unix", "tcp"][(side + j) % 2]) as c:
                    barrier.wait()
                    c.send_raw(data)
                    reply = c.recv_value()
                assert reply == {"ack": cid}, reply
                with lock:
                    sent[0] += len(entries)
        except Exception as e:  # noqa: BLE001 - reported below
            barrier.abort()
            errors.append(f"{type(e).__name__}: {e}")

    def worker(k):
        try:
            for j, ch in enumerate(chunks[k::CLIENT_THREADS]):
                _send_chunk(daemons, ch, ["unix", "tcp"][(k + j) % 2])
                with lock:
                    sent[0] += len(ch[2]) * (2 if ch[4] else 1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{type(e).__name__}: {e}")

    t0 = time.monotonic()
    # The pairs first, alone: a batch that holds a customer of the other
    # traffic would lock that customer first (apply_credits) and so queue
    # behind the other writers instead of racing them.
    for group in ([threading.Thread(target=racer, args=(side,)) for side in (0, 1)],
                  [threading.Thread(target=worker, args=(k,)) for k in range(CLIENT_THREADS)]):
        for t in group:
            t.start()
        for t in group:
            t.join(600)
    assert not errors, f"a client saw an error: {errors[:5]}"
    return sent[0], time.monotonic() - t0


# ---- what the ledger holds --------------------------------------------------

def ledger(pg, p):
    """PREFIX's rows, with the prefix taken off ids and pass ids, without
    mg_updated_at (the commit time): {mg_id: row}, {pass_id: customer}."""
    def strip(v):
        return v[len(p) + 1:] if isinstance(v, str) and v.startswith(p + "-") else v

    gens = {}
    for r in pg.rows("SELECT * FROM mega_generations WHERE mg_id LIKE %s", (p + "-%",)):
        r.pop("mg_updated_at")
        gens[strip(r["mg_id"])] = {k: strip(v) for k, v in r.items()}
    custs = {}
    for r in pg.rows("SELECT mg_pass_id, mg_credits, mg_last_active, mg_last_topup_at, "
                     "mg_topup_source, mg_source_system FROM mega_customers "
                     "WHERE mg_pass_id LIKE %s", (p + "-%",)):
        custs[strip(r["mg_pass_id"])] = {k: strip(v) for k, v in r.items()}
    return gens, custs


def expected_balances(credits):
    want = {}
    for c in credits:
        want[c["pass_id"]] = want.get(c["pass_id"], 0) + c["delta"]
    return want


def deadlocks(pg):
    """Deadlocks PostgreSQL has reported in its log so far (the statistics
    view would lag: a backend reports its counters when it goes idle)."""
    with open(pg.log_path, encoding="utf-8", errors="replace") as f:
        return f.read().count("ERROR:  deadlock detected")


def check_exact(pg, p, credits):
    """The rules, computed from the traffic rather than observed."""
    gens, custs = ledger(pg, p)
    assert len(gens) == GENERATIONS + CREDITS
    for i in range(GENERATIONS):
        r = gens[f"g-{i}"]
        assert r["mg_status"] == ("failed" if i % 5 == 0 else "succeeded"), (i, r)
        meta = {"pending": i, "done": i}
        if i % 3 == 0:
            meta["title"] = i
            assert r["mg_title"] == f"title {i}"
        assert r["mg_meta"] == meta, (i, r)
        assert r["mg_prompt"] == f"prompt {i}"
        assert r["mg_created_at"].timestamp() == T0 + i
    balances = {k: v["mg_credits"] for k, v in custs.items()}
    want = expected_balances(credits)
    want = {k[len(p) + 1:]: v for k, v in want.items()}
    for k in custs:
        want.setdefault(k, 0)
    assert balances == want
    return gens, custs


def test_three_daemons_one_database_exactly_once(daemon_factory, pg):
    daemons = [daemon_factory(SCALE_CONFIG) for _ in range(3)]
    before = deadlocks(pg)

    chunks, pairs, credits = traffic("many")
    sent, secs = deliver(daemons, chunks, pairs)
    many_gens, many_custs = check_exact(pg, "many", credits)
    seen = deadlocks(pg) - before
    print(f"\nthree daemons: {sent} events (resends included) in {secs:.2f} s "
          f"= {sent / secs:.0f} events/s from {CLIENT_THREADS} Python clients; "
          f"{len(many_custs)} balances exact; deadlocks detected by PostgreSQL "
          f"(each retried inside the writer): {seen}")

    # The same traffic through one daemon: the same ledger.
    ref, ref_pairs, _ = traffic("one")
    deliver(daemons[:1], ref, ref_pairs)
    one_gens, one_custs = check_exact(pg, "one", [
        dict(c, pass_id="one" + c["pass_id"][4:]) for c in credits])
    assert many_gens == one_gens
    assert many_custs == one_custs

    for d in daemons:
        assert d.dead_letters() == [], d.dead_letters()[:3]
        assert d.log_contains(r"40P01|40001|deadlock") is None, d.log_contains("40P01|deadlock")
        assert d.log_contains(r"batches go to the spool") is None
        assert d.log_contains(r"immutable") is None     # every repeat was exact


def _bench(d, n, via):
    bench = os.path.join(os.path.dirname(MEGAINGESTD) or BUILDDIR, "megaingest-bench")
    addr = ["-U", d.unix_path] if via == "unix" else ["-H", f"127.0.0.1:{d.tcp_port}"]
    return subprocess.Popen([bench] + addr + ["-c", "4", "-n", str(n), "-w", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _bench_round(daemons, n):
    """One megaingest-bench per daemon of DAEMONS (cycled to three), all at
    once; returns (events, seconds, deadlocks) after checking every acked
    event is a row."""
    before, rows = deadlocks(daemons[0].pg), daemons[0].pg.count()
    t0 = time.monotonic()
    procs = [_bench(daemons[i % len(daemons)], n, ["unix", "tcp", "unix"][i]) for i in range(3)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    secs = time.monotonic() - t0
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    assert daemons[0].pg.count() == rows + 3 * n
    return 3 * n, secs, deadlocks(daemons[0].pg) - before


def test_three_daemons_combined_rate(daemon_factory, pg):
    """Three megaingest-bench processes (4 connections each) against one
    daemon, then one against each of three daemons, apply_credits on and two
    writers per daemon throughout: every acked event is one row; the rates
    are printed, not judged."""
    daemons = [daemon_factory(SCALE_CONFIG) for _ in range(3)]
    n = int(os.environ.get("SCALE_BENCH_EVENTS", "30000"))
    one = _bench_round(daemons[:1], n)
    three = _bench_round(daemons, n)
    for name, (events, secs, dl) in (("one daemon", one), ("three daemons", three)):
        print(f"\n{name}, 3 x megaingest-bench -c 4 -w 2: {events} events in {secs:.2f} s "
              f"= {events / secs:.0f} events/s; deadlocks {dl}")
    print(f"three / one: {(three[0] / three[1]) / (one[0] / one[1]):.2f}")
    for d in daemons:
        assert d.dead_letters() == []
        assert d.log_contains(r"batches go to the spool") is None


# ---- several daemons on one host ------------------------------------------

def test_two_daemons_share_a_port_with_reuseport(daemon_factory, pg):
    """listen.reuseport: two daemons, each with its own spool and Unix
    socket, listen on one TCP port; the kernel spreads 60 connections over
    both, and both commit what they were sent."""
    port = free_tcp_port()
    cfg = {"listen": {"tcp": [f"127.0.0.1:{port}"], "reuseport": True}}
    daemons = [admin_daemon(daemon_factory, cfg) for _ in range(2)]
    assert daemons[0].spool_dir != daemons[1].spool_dir
    assert daemons[0].unix_path != daemons[1].unix_path
    for d in daemons:
        d.tcp_port = port
    for k in range(60):
        with daemons[0].connect("tcp") as c:
            c.forward_chunk("mega.generation",
                            [[T0, {"mg_id": f"rp-{k}-{i}", "mg_record_type": "generation"}]
                             for i in range(5)], f"rp-{k}")
    assert pg.count("mg_id LIKE 'rp-%%'") == 300
    accepted = [m(metrics(d.admin_port), "connections_accepted_total") for d in daemons]
    committed = [m(metrics(d.admin_port), "events_committed_total") for d in daemons]
    print(f"\nconnections accepted {accepted}, events committed {committed}")
    assert sum(committed) == 300
    assert all(a > 0 for a in accepted) and all(c > 0 for c in committed), (accepted, committed)


def test_without_reuseport_a_second_daemon_cannot_take_the_port(daemon_factory):
    port = free_tcp_port()
    cfg = {"listen": {"tcp": [f"127.0.0.1:{port}"]}}
    daemon_factory(cfg)
    d = daemon_factory(cfg, wait=False)
    d.expect_failure = True
    wait_for(lambda: not d.running(), what="the second daemon to exit")
    assert d.exit_code != 0 or d.proc.returncode != 0
    assert d.log_contains(rf"cannot listen on tcp 127.0.0.1:{port}: Address already in use")


# ---- many clients ----------------------------------------------------------

def test_bench_holds_more_connections_than_its_soft_fd_limit(daemon_factory, pg):
    """megaingest-bench raises its own RLIMIT_NOFILE: 1,500 paced connections
    (held idle first) from a process started with a soft limit of 256 all
    connect, and every event is acked and committed."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1600:
        pytest.skip(f"hard descriptor limit {hard} < 1600")
    d = daemon_factory({"listen": {"max_connections": 2000}})
    bench = os.path.join(os.path.dirname(MEGAINGESTD) or BUILDDIR, "megaingest-bench")
    r = subprocess.run(
        [bench, "-H", f"127.0.0.1:{d.tcp_port}", "-c", "1500", "-m", "1", "-w", "1",
         "-r", "3000", "-n", "3000", "--idle", "0.5", "--timeout", "60"],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert r.returncode == 0, r.stdout
    assert "events_acked 3000" in r.stdout and "connections 1500" in r.stdout, r.stdout
    assert pg.count() == 3000
