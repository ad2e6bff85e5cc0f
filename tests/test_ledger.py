"""Ledger semantics: what a mega_generations row ends up holding
however events are retried, repeated, reordered or split across batches,
and what happens to mega_customers. Each test fails without its rule."""

import random
import threading
import time

import pytest

from helpers import wait_for

T0 = 1_760_000_000  # a fixed forward time, so created_at is predictable


def gen(mg_id, **cols):
    return dict({"mg_id": mg_id, "mg_record_type": "generation"}, **cols)


def send(daemon, records, tag="mega.generation", t=T0, chunk=None, via="unix"):
    """Send RECORDS as one Forward message and wait for its ack."""
    chunk = chunk or f"chunk-{time.monotonic_ns()}-{random.random()}"
    with daemon.connect(via=via) as c:
        c.forward_chunk(tag, [[t, r] for r in records], chunk)


def test_lifecycle_merge_union_later_wins(daemon, pg):
    """pending then succeeded: one row holding the union; later values win,
    absent ones keep the stored, meta merged by key, updated_at moves,
    created_at stays."""
    send(daemon, [gen("L1", status="pending", pass_id="p1", prompt="draw a cat",
                      model="m1", meta={"a": 1, "keep": "x"})], t=T0)
    first = pg.row("L1")
    time.sleep(0.05)
    send(daemon, [gen("L1", status="succeeded", output_url="https://r2/cat.png",
                      latency_ms=812, input_tokens=12, output_tokens=345, model="m2",
                      meta={"a": 2, "b": 3})], t=T0 + 60)
    row = pg.row("L1")
    assert row["mg_status"] == "succeeded"
    assert row["mg_prompt"] == "draw a cat"          # absent later: kept
    assert row["mg_model"] == "m2"                   # later wins
    assert row["mg_output_url"] == "https://r2/cat.png"
    assert (row["mg_latency_ms"], row["mg_input_tokens"], row["mg_output_tokens"]) == (812, 12, 345)
    assert row["mg_meta"] == {"a": 2, "b": 3, "keep": "x"}
    assert row["mg_created_at"] == first["mg_created_at"]
    assert row["mg_created_at"].timestamp() == T0
    assert row["mg_updated_at"] > first["mg_updated_at"]
    assert pg.count() == 1


def test_late_pending_never_reopens_a_terminal_status(daemon, pg):
    """A pending that arrives after succeeded/failed (another connection, a
    retry) does not turn the status back, but its other columns still merge."""
    send(daemon, [gen("T1", status="succeeded"), gen("T2", status="failed", error="boom")])
    send(daemon, [gen("T1", status="pending", title="late"), gen("T2", status="pending")],
         via="tcp")
    assert pg.row("T1")["mg_status"] == "succeeded"
    assert pg.row("T1")["mg_title"] == "late"
    assert pg.row("T2")["mg_status"] == "failed"
    assert pg.row("T2")["mg_error"] == "boom"
    # A non-terminal status may still move forward.
    send(daemon, [gen("T3", status="pending")])
    send(daemon, [gen("T3", status="succeeded")])
    assert pg.row("T3")["mg_status"] == "succeeded"


def test_repeats_inside_one_batch_merge_in_arrival_order(daemon_factory, pg):
    """Several events for one mg_id in one message (so one batch) merge in
    arrival order, and PostgreSQL's "cannot affect row a second time" never
    shows."""
    d = daemon_factory({"writer": {"flush_interval_ms": 300}})
    send(d, [gen("B1", status="pending", title="first", meta={"n": 1}),
             gen("B1", title="second", prompt="p", meta={"m": 2}),
             gen("B2", title="other"),
             gen("B1", status="succeeded", title="third"),
             gen("B1", status="pending")])
    row = pg.row("B1")
    assert row["mg_title"] == "third"
    assert row["mg_prompt"] == "p"
    assert row["mg_status"] == "succeeded"
    assert row["mg_meta"] == {"n": 1, "m": 2}
    assert pg.count() == 2
    assert d.log_contains("affect row a second time") is None
    assert pg.value("SELECT count(*) FROM mega_customers") == 0


def test_exact_replay_writes_no_new_row_version(daemon, pg):
    """The same event again (a client retry, a replay after a crash) leaves
    the row untouched: same xmin, same mg_updated_at."""
    ev = gen("R1", status="succeeded", pass_id="p9", prompt="same", latency_ms=5,
             meta={"k": "v"})
    send(daemon, [ev])
    before = pg.rows("SELECT xmin::text AS x, mg_updated_at FROM mega_generations "
                     "WHERE mg_id = 'R1'")[0]
    send(daemon, [ev], via="tcp")
    send(daemon, [gen("R1", meta={"k": "v"})])  # a subset that changes nothing
    after = pg.rows("SELECT xmin::text AS x, mg_updated_at FROM mega_generations "
                    "WHERE mg_id = 'R1'")[0]
    assert after == before
    # A real change does write.
    send(daemon, [gen("R1", meta={"k": "w"})])
    assert pg.row("R1")["mg_updated_at"] > before["mg_updated_at"]


def credit(mg_id, pass_id, delta, **cols):
    return dict({"mg_id": mg_id, "mg_record_type": "credit_transaction",
                 "pass_id": pass_id, "delta": delta}, **cols)


def test_credit_transactions_are_immutable(daemon, pg):
    """A repeat of a credit_transaction mg_id changes nothing, even with other
    values; the difference is logged at warn and the row keeps its version."""
    send(daemon, [credit("C1", "pc", 5, reason="bonus")], tag="mega.credit_transaction")
    before = pg.rows("SELECT xmin::text AS x, * FROM mega_generations WHERE mg_id = 'C1'")[0]
    send(daemon, [credit("C1", "pc", 7, reason="tampered")], tag="mega.credit_transaction")
    send(daemon, [credit("C1", "pc", 5, reason="bonus")], tag="mega.credit_transaction")
    after = pg.rows("SELECT xmin::text AS x, * FROM mega_generations WHERE mg_id = 'C1'")[0]
    assert after == before
    assert after["mg_delta"] == 5 and after["mg_reason"] == "bonus"
    line = daemon.wait_log(r"warn .*mg_id=C1: credit_transaction rows are immutable")
    assert "ignored" in line
    # The exact repeat is silent: one warning, for the tampered one only.
    assert len([ln for ln in daemon.log().splitlines() if "immutable" in ln]) == 1


def test_type_conflict_is_dead_lettered_rest_commits(daemon, pg):
    """An event whose mg_id belongs to another record type is dead-lettered
    with that reason; the rest of the batch commits; the row is untouched."""
    send(daemon, [gen("X1", title="a generation")])
    send(daemon, [{"mg_id": "X1", "mg_record_type": "session", "title": "a session"},
                  {"mg_id": "X2", "mg_record_type": "session", "title": "fine"}],
         tag="mega.session")
    assert pg.row("X1")["mg_record_type"] == "generation"
    assert pg.row("X1")["mg_title"] == "a generation"
    assert pg.row("X2")["mg_title"] == "fine"
    dl = daemon.wait_dead_letter(lambda d: d["event"].get("mg_id") == "X1")
    assert "another mg_record_type" in dl["reason"]
    assert dl["field"] == "mg_record_type"
    assert dl["tag"] == "mega.session"


def test_type_conflict_inside_one_batch(daemon, pg):
    """The same rule when both events travel in one message."""
    send(daemon, [gen("Y1", title="gen"),
                  {"mg_id": "Y1", "mg_record_type": "feedback", "comment": "no"},
                  gen("Y2")])
    assert pg.row("Y1")["mg_record_type"] == "generation"
    assert pg.row("Y1")["mg_comment"] is None
    assert pg.count() == 2
    dl = daemon.wait_dead_letter(lambda d: d["event"].get("mg_id") == "Y1")
    assert "another mg_record_type" in dl["reason"]


def test_stub_customer_and_last_active_only_rises(daemon, pg):
    """unknown_pass_id: create makes a stub (credits 0, source megaingest) and
    mg_last_active follows the newest event time, never lower; a real
    customer's other columns are never touched."""
    pg.sql("INSERT INTO mega_customers (mg_pass_id, mg_email, mg_credits, mg_source_system, "
           "mg_display_name) VALUES ('real', 'a@b.c', 50, 'shopify', 'Ann')")
    send(daemon, [gen("S1", pass_id="stub"), gen("S2", pass_id="real")], t=T0 + 100)
    stub = pg.rows("SELECT * FROM mega_customers WHERE mg_pass_id = 'stub'")[0]
    assert stub["mg_credits"] == 0 and stub["mg_source_system"] == "megaingest"
    assert stub["mg_last_active"].timestamp() == T0 + 100
    send(daemon, [gen("S3", pass_id="stub")], t=T0)          # older: no change
    assert pg.value("SELECT extract(epoch FROM mg_last_active) FROM mega_customers "
                    "WHERE mg_pass_id = 'stub'") == T0 + 100
    send(daemon, [gen("S4", pass_id="stub")], t=T0 + 500)    # newer: raised
    assert pg.value("SELECT extract(epoch FROM mg_last_active) FROM mega_customers "
                    "WHERE mg_pass_id = 'stub'") == T0 + 500
    real = pg.rows("SELECT * FROM mega_customers WHERE mg_pass_id = 'real'")[0]
    assert (real["mg_email"], real["mg_credits"], real["mg_source_system"],
            real["mg_display_name"]) == ("a@b.c", 50, "shopify", "Ann")
    assert real["mg_last_active"].timestamp() == T0 + 100


def test_customer_deleted_behind_the_writers_back(daemon, pg):
    """A writer leaves out the stub statement when every pass id of a batch
    is one it has seen committed. Should such a customer be deleted
    meanwhile, the foreign key refuses the batch and the writer writes it
    again with stubs: the event lands, the customer is back as a stub,
    nothing is dead-lettered."""
    send(daemon, [gen("D1", pass_id="doomed"), gen("D2", pass_id="kept")])
    pg.sql("DELETE FROM mega_generations WHERE mg_pass_id = 'doomed'")
    pg.sql("DELETE FROM mega_customers WHERE mg_pass_id = 'doomed'")
    send(daemon, [gen("D3", pass_id="doomed"), gen("D4", pass_id="kept")])
    assert pg.row("D3")["mg_pass_id"] == "doomed"
    assert pg.row("D4")["mg_pass_id"] == "kept"
    assert pg.value("SELECT mg_source_system FROM mega_customers "
                    "WHERE mg_pass_id = 'doomed'") == "megaingest"
    assert daemon.dead_letters() == []
    assert daemon.log_contains(r"known mg_pass_id is gone from mega_customers")


def test_unknown_pass_id_dead_letter_mode(daemon_factory, pg):
    """unknown_pass_id: dead_letter leaves mega_customers alone and
    dead-letters events of unknown pass ids; known ones and events without a
    pass id land."""
    pg.sql("INSERT INTO mega_customers (mg_pass_id, mg_credits) VALUES ('known', 1)")
    d = daemon_factory({"postgres": {"unknown_pass_id": "dead_letter"}})
    send(d, [gen("U1", pass_id="known"), gen("U2", pass_id="stranger"), gen("U3")])
    assert pg.row("U1") is not None and pg.row("U3") is not None
    assert pg.row("U2") is None
    assert pg.rows("SELECT mg_pass_id, mg_credits, mg_last_active FROM mega_customers") == \
        [{"mg_pass_id": "known", "mg_credits": 1, "mg_last_active": None}]
    dl = d.wait_dead_letter(lambda x: x["event"].get("mg_id") == "U2")
    assert dl["field"] == "mg_pass_id" and "not a known customer" in dl["reason"]


def test_event_without_pass_id_lands_without_customer(daemon, pg):
    send(daemon, [{"mg_id": "N1", "mg_record_type": "session", "title": "anon"}],
         tag="mega.session")
    assert pg.row("N1")["mg_pass_id"] is None
    assert pg.value("SELECT count(*) FROM mega_customers") == 0


def test_soft_delete_marks_and_sticks(daemon, pg):
    send(daemon, [gen("D1", title="t")])
    assert pg.row("D1")["mg_deleted_at"] is None
    send(daemon, [gen("D1", deleted_at="2026-11-25T10:00:00Z")])
    assert pg.row("D1")["mg_deleted_at"].isoformat() == "2026-11-25T10:00:00+00:00"
    send(daemon, [gen("D1", title="edited after delete")])
    assert pg.row("D1")["mg_deleted_at"] is not None


def test_resent_unacked_chunk_without_ids_creates_no_duplicates(daemon, pg):
    """Events without mg_id in a chunked message get ids derived from the
    chunk id and their position: a client that never saw the ack and resends
    the chunk creates no second row."""
    entries = [[T0 + i, {"mg_record_type": "feedback", "comment": f"c{i}"}] for i in range(50)]
    c = daemon.connect(via="tcp")
    c.forward("mega.feedback", entries, chunk="withheld-1")
    wait_for(lambda: pg.count() == 50, what="50 rows")
    c.close()  # the ack is never read: the client will resend
    with daemon.connect(via="unix") as c2:
        c2.forward_chunk("mega.feedback", entries, "withheld-1")
    with daemon.connect(via="tcp") as c3:
        c3.forward_chunk("mega.feedback", entries, "withheld-1", mode="packed")
    assert pg.count() == 50
    # Another chunk id means other events: new rows.
    with daemon.connect() as c4:
        c4.forward_chunk("mega.feedback", entries[:5], "withheld-2")
    assert pg.count() == 55


@pytest.mark.parametrize("writers", [1, 2])
def test_apply_credits_balance_moves_once_per_transaction(daemon_factory, pg, writers):
    """10,000 random credit events with duplicates, over 4 connections, with
    forced retries (chunks resent, in other chunks, on other connections):
    every balance equals the sum of the distinct transactions. With two
    writers sharing the 40 customers, neither ever waits in a deadlock."""
    d = daemon_factory({"postgres": {"apply_credits": True},
                        "writer": {"connections": writers}})
    rng = random.Random(4)
    distinct = [credit(f"tx-{i}", f"cust-{rng.randrange(40)}", rng.randrange(-50, 200),
                       reason=rng.choice(["usage", "refund", "bonus"]))
                for i in range(6000)]
    events = distinct + [rng.choice(distinct) for _ in range(4000)]
    rng.shuffle(events)
    chunks = [events[i:i + 250] for i in range(0, len(events), 250)]
    errors = []

    def worker(k):
        try:
            for j, ch in enumerate(chunks[k::4]):
                send(d, ch, tag="mega.credit_transaction", chunk=f"w{k}-{j}",
                     via=["unix", "tcp"][k % 2])
                if j % 5 == 0:  # a forced retry of the same chunk, acked again
                    send(d, ch, tag="mega.credit_transaction", chunk=f"w{k}-{j}",
                         via=["tcp", "unix"][k % 2])
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    want = {}
    for ev in distinct:
        want[ev["pass_id"]] = want.get(ev["pass_id"], 0) + ev["delta"]
    got = {r["mg_pass_id"]: r["mg_credits"]
           for r in pg.rows("SELECT mg_pass_id, mg_credits FROM mega_customers")}
    assert pg.count() == len(distinct)
    assert got == want
    assert not d.log_contains("deadlock|40P01|holding"), "a writer was held"


def test_topup_sets_last_topup(daemon_factory, pg):
    """A top-up (positive mg_delta, mg_reason 'topup') moves mg_last_topup_at
    and mg_topup_source; other credit events move only the balance."""
    d = daemon_factory({"postgres": {"apply_credits": True}})
    send(d, [credit("TU1", "tp", 300, reason="topup", source="shopify")],
         tag="mega.credit_transaction", t=T0 + 10)
    send(d, [credit("TU2", "tp", -20, reason="usage", source="app")],
         tag="mega.credit_transaction", t=T0 + 20)
    send(d, [credit("TU3", "tp", 100, reason="topup", source="manual")],
         tag="mega.credit_transaction", t=T0 + 5)  # an older top-up arriving late
    c = pg.rows("SELECT mg_credits, extract(epoch FROM mg_last_topup_at) AS at, "
                "mg_topup_source FROM mega_customers WHERE mg_pass_id = 'tp'")[0]
    assert c["mg_credits"] == 380
    assert c["at"] == T0 + 10 and c["mg_topup_source"] == "shopify"


def test_credits_untouched_without_apply_credits(daemon, pg):
    send(daemon, [credit("NC1", "np", 100, reason="topup")], tag="mega.credit_transaction")
    assert pg.value("SELECT mg_credits FROM mega_customers WHERE mg_pass_id = 'np'") == 0


def test_an_id_repeated_in_one_batch_is_written_in_bounded_transactions(daemon_factory, pg):
    """One batch holding 60 updates of one session and 40 other events: each
    repeat of an mg_id is its own merge statement, so the batch goes as
    several transactions of at most 8 occurrences of any id, in order (the
    last update wins), instead of one transaction of 60 passes holding every
    other event's ack."""
    from opshelpers import admin_daemon, m, metrics
    d = admin_daemon(daemon_factory, {"writer": {"flush_interval_ms": 300}})
    before = m(metrics(d.admin_port), "batches_committed_total")
    entries = []
    for i in range(100):
        if i % 5 < 3:
            entries.append([1_760_000_000 + i, {"mg_id": "hot", "mg_record_type": "session",
                                                "title": f"t{i}"}])
        else:
            entries.append([1_760_000_000 + i, {"mg_id": f"cold-{i}",
                                                "mg_record_type": "session"}])
    d.forward_chunk("mega.session", entries, "hot-1")
    assert pg.count("mg_id = 'hot' OR mg_id LIKE 'cold-%%'") == 41
    assert pg.row("hot")["mg_title"] == "t97"
    batches = m(metrics(d.admin_port), "batches_committed_total") - before
    assert batches >= 60 // 8, f"{batches} transactions for 60 repeats of one id"
