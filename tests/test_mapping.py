"""Event -> row: every column mapped and typed, mg_meta, ids,
record types, times."""

import datetime
import re

import msgpack
import pytest

from helpers import event_time, uuid7

UTC = datetime.timezone.utc

TEXT_COLUMNS = [
    "mg_pass_id", "mg_session_id", "mg_generation_id", "mg_platform", "mg_title", "mg_type",
    "mg_prompt", "mg_output_url", "mg_output_key", "mg_provider", "mg_model",
    "mg_content_type", "mg_status", "mg_error", "mg_result_type", "mg_comment",
    "mg_image_url", "mg_video_url", "mg_reason", "mg_source", "mg_ref_type", "mg_ref_id",
    "mg_client_version", "mg_os", "mg_browser", "mg_device", "mg_source_system",
]
INT_COLUMNS = ["mg_latency_ms", "mg_input_chars", "mg_output_chars", "mg_input_tokens",
               "mg_output_tokens", "mg_delta"]
RECORD_TYPES = ["generation", "session", "feedback", "credit_transaction"]
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

CREATED = datetime.datetime(2024, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
DELETED = datetime.datetime(2024, 5, 6, 7, 8, 9, 654321, tzinfo=UTC)


def full_event(record_type):
    """An event carrying every column the daemon writes, each with a value
    that is easy to tell apart (and some edge values: int4 bounds,
    multi-byte UTF-8, nested JSON)."""
    ev = {"mg_id": f"full-{record_type}", "mg_record_type": record_type}
    for col in TEXT_COLUMNS:
        ev[col] = f"{col[3:]} of {record_type}"
    ev["mg_pass_id"] = f"pass-{record_type}"
    ev["mg_prompt"] = "a prompt with ünïcødé ✓, 'quotes', \"dq\", tab\tand\nnewline \\ 🚀"
    for i, col in enumerate(INT_COLUMNS):
        ev[col] = 1000 + i
    ev["mg_input_tokens"] = 2147483647
    ev["mg_delta"] = -2147483648
    ev["mg_meta"] = {"app": "mega", "n": 3, "f": 1.5, "ok": True, "none": None,
                     "list": [1, "two", {"three": 3}], "nested": {"deep": {"er": "x"}}}
    ev["mg_created_at"] = msgpack.Timestamp.from_datetime(CREATED)
    ev["mg_deleted_at"] = DELETED.isoformat().replace("+00:00", "Z")
    return ev


def check_full_row(row, ev):
    for col in TEXT_COLUMNS + ["mg_id", "mg_record_type"]:
        assert isinstance(row[col], str), col
        assert row[col] == ev[col], col
    for col in INT_COLUMNS:
        assert isinstance(row[col], int), col
        assert row[col] == ev[col], col
    assert row["mg_meta"] == ev["mg_meta"]
    assert row["mg_created_at"] == CREATED
    assert row["mg_deleted_at"] == DELETED
    assert isinstance(row["mg_updated_at"], datetime.datetime)


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_every_column_lands_typed(daemon, pg, record_type):
    ev = full_event(record_type)
    daemon.send_msgpack(ev)
    daemon.wait_rows(1)
    check_full_row(pg.row(ev["mg_id"]), ev)
    assert daemon.dead_letters() == []


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_mg_prefix_is_optional(daemon, pg, record_type):
    ev = full_event(record_type)
    short = {k[3:]: v for k, v in ev.items()}
    assert "type" in short and "record_type" in short     # mg_type and mg_record_type
    daemon.forward_chunk("mega." + record_type, [[1700000000, short]], "prefixless")
    check_full_row(pg.row(ev["mg_id"]), ev)


def test_full_events_over_forward_modes(daemon, pg):
    """All four record types in one PackedForward chunk, each row checked."""
    events = [full_event(t) for t in RECORD_TYPES]
    daemon.forward_chunk("mega.any", [[1700000000, e] for e in events], "c-full", mode="gzip")
    for ev in events:
        check_full_row(pg.row(ev["mg_id"]), ev)


def test_rows_larger_than_the_copy_buffer(daemon, pg):
    """The writer streams binary COPY data through a 256 KiB buffer; a row
    larger than that is written field by field (its slow path). Such rows
    and the small ones around them in the same batch land intact."""
    big = dict(full_event("generation"), mg_id="big-row")
    big["mg_prompt"] = "ü" * 150_000 + "\t\n\\ end"   # 300 KB of UTF-8
    big["mg_meta"] = {"blob": "x" * 100_000, "n": 1}
    huge_meta = dict(full_event("feedback"), mg_id="big-meta")
    huge_meta["mg_meta"] = {"k%d" % i: "v" * 100 for i in range(3000)}   # ~330 KB of JSON
    small = [dict(full_event("session"), mg_id=f"small-{i}") for i in range(3)]
    events = [small[0], big, small[1], huge_meta, small[2]]
    daemon.forward_chunk("mega.any", [[1700000000, e] for e in events], "c-big")
    for ev in events:
        check_full_row(pg.row(ev["mg_id"]), ev)
    assert daemon.dead_letters() == []


def test_unknown_keys_land_in_meta(daemon, pg):
    ev = {"mg_id": "unknown-keys", "mg_record_type": "generation",
          "mg_meta": {"a": 1, "keep": "me"},
          "experiment": "blue", "ab_bucket": 7, "ratio": 0.25, "flag": False,
          "nested": {"x": [1, 2, {"y": None}]}, "mg_not_a_column": "still kept"}
    daemon.send_msgpack(ev)
    daemon.wait_rows(1)
    row = pg.row("unknown-keys")
    assert row["mg_meta"] == {"a": 1, "keep": "me", "experiment": "blue", "ab_bucket": 7,
                              "ratio": 0.25, "flag": False, "nested": {"x": [1, 2, {"y": None}]},
                              "mg_not_a_column": "still kept"}


def test_unknown_keys_without_meta(daemon, pg):
    daemon.send_msgpack({"mg_id": "only-unknown", "mg_record_type": "session", "k": "v"})
    daemon.wait_rows(1)
    assert pg.row("only-unknown")["mg_meta"] == {"k": "v"}


def test_nil_is_absent(daemon, pg):
    daemon.send_msgpack({"mg_id": "nils", "mg_record_type": "generation", "mg_prompt": None,
                         "mg_latency_ms": None, "mg_deleted_at": None, "mg_meta": None,
                         "mg_status": "pending"})
    daemon.wait_rows(1)
    row = pg.row("nils")
    assert row["mg_prompt"] is None and row["mg_latency_ms"] is None
    assert row["mg_deleted_at"] is None
    assert row["mg_meta"] == {}
    assert row["mg_status"] == "pending"
    assert daemon.dead_letters() == []


def test_bin_utf8_is_text(daemon, pg):
    """Python's msgpack packs bytes as bin: valid UTF-8 bin is text."""
    daemon.send_msgpack({"mg_id": "bin-text", "mg_record_type": "feedback",
                         "mg_comment": "grüße".encode()})
    daemon.wait_rows(1)
    assert pg.row("bin-text")["mg_comment"] == "grüße"


# ---- record type ------------------------------------------------------------

@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_record_type_from_tag(daemon, pg, record_type):
    daemon.forward_chunk(f"app.mega.{record_type}", [[1700000000, {"mg_id": "from-tag"}]], "t1",
                         mode="message")
    assert pg.row("from-tag")["mg_record_type"] == record_type


def test_record_field_beats_tag(daemon, pg):
    daemon.forward_chunk("mega.session", [[1700000000, {"mg_id": "rec-wins",
                                                        "record_type": "feedback"}]], "t2")
    assert pg.row("rec-wins")["mg_record_type"] == "feedback"


# ---- times ------------------------------------------------------------------

T0 = datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)   # epoch 1700000000


@pytest.mark.parametrize("value,expected", [
    (1700000000, T0),
    (1700000000.25, T0 + datetime.timedelta(microseconds=250000)),
    (event_time(1700000000, 123456000), T0 + datetime.timedelta(microseconds=123456)),
    (msgpack.Timestamp(1700000000, 999999000), T0 + datetime.timedelta(microseconds=999999)),
    (msgpack.Timestamp(1700000000, 0), T0),                      # 32-bit timestamp form
    (msgpack.Timestamp(2 ** 34 + 5, 1000),                        # 96-bit form
     datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=2 ** 34 + 5,
                                                                    microseconds=1)),
    ("2023-11-14T22:13:20Z", T0),
    ("2023-11-15T00:13:20.5+02:00", T0 + datetime.timedelta(microseconds=500000)),
    ("2023-11-14T22:13:20.000001Z", T0 + datetime.timedelta(microseconds=1)),
], ids=["int", "float", "eventtime", "ts64", "ts32", "ts96", "rfc3339", "offset", "micro"])
def test_timestamp_forms(daemon, pg, value, expected):
    daemon.send_msgpack({"mg_id": "ts", "mg_record_type": "session", "mg_deleted_at": value})
    daemon.wait_rows(1)
    assert pg.row("ts")["mg_deleted_at"] == expected


@pytest.mark.parametrize("t,expected", [
    (1700000000, T0),
    (1700000000.5, T0 + datetime.timedelta(microseconds=500000)),
    (event_time(1700000000, 42000), T0 + datetime.timedelta(microseconds=42)),
])
def test_created_at_defaults_to_forward_time(daemon, pg, t, expected):
    daemon.forward_chunk("mega.generation", [[t, {"mg_id": "fwd-time"}]], "c", mode="message")
    assert pg.row("fwd-time")["mg_created_at"] == expected


def test_created_at_in_record_beats_forward_time(daemon, pg):
    rec = {"mg_id": "explicit", "created_at": "2020-01-02T03:04:05Z"}
    daemon.forward_chunk("mega.generation", [[1700000000, rec]], "c")
    assert pg.row("explicit")["mg_created_at"] == datetime.datetime(2020, 1, 2, 3, 4, 5,
                                                                    tzinfo=UTC)


def test_created_at_defaults_to_receive_time(daemon, pg):
    before = pg.value("SELECT now()")
    daemon.send_msgpack({"mg_id": "recv-time", "mg_record_type": "session"})
    daemon.wait_rows(1)
    after = pg.value("SELECT clock_timestamp()")
    row = pg.row("recv-time")
    slack = datetime.timedelta(seconds=1)
    assert before - slack <= row["mg_created_at"] <= after
    assert before - slack <= row["mg_updated_at"] <= after


def test_created_at_is_set_once(daemon, pg):
    daemon.forward_chunk("mega.generation", [[1700000000, {"mg_id": "once",
                                                           "status": "pending"}]], "a")
    first = pg.row("once")
    daemon.forward_chunk("mega.generation", [[1800000000, {"mg_id": "once",
                                                           "status": "succeeded"}]], "b")
    second = pg.row("once")
    assert second["mg_created_at"] == first["mg_created_at"] == T0
    assert second["mg_status"] == "succeeded"
    assert second["mg_updated_at"] > first["mg_updated_at"]
    assert pg.count() == 1


# ---- ids --------------------------------------------------------------------

def test_same_id_twice_leaves_one_row(daemon, pg):
    ev = {"mg_id": "dup", "mg_record_type": "generation", "mg_prompt": "p", "mg_pass_id": "pp"}
    daemon.send_msgpack(ev, ev)
    daemon.send_msgpack(ev, via="tcp")
    daemon.forward_chunk("mega.generation", [[1700000000, ev], [1700000001, ev]], "dup-chunk")
    daemon.wait_rows(1, "mg_id = 'dup'")
    assert pg.count() == 1
    assert pg.row("dup")["mg_prompt"] == "p"


def test_same_id_across_batches(daemon, pg):
    """The second copy arrives after the first committed: still one row."""
    for i in range(3):
        daemon.forward_chunk("mega.generation", [[1700000000, {"mg_id": "dup2"}]], f"k{i}")
        assert pg.count() == 1


def test_missing_id_gets_uuid7(daemon, pg):
    daemon.send_msgpack({"mg_record_type": "session", "mg_title": "a"},
                        {"mg_record_type": "session", "mg_title": "b"})
    daemon.wait_rows(2)
    ids = [r for (r,) in pg.sql("SELECT mg_id FROM mega_generations ORDER BY mg_title")]
    assert all(UUID7.match(i) for i in ids), ids
    assert ids[0] != ids[1]


def test_chunk_ids_are_deterministic(daemon, pg):
    """Id-less entries of a chunk get ids derived from the chunk id and the
    position: a retried chunk lands once, another chunk lands again."""
    entries = [[1700000000 + i, {"mg_title": f"e{i}"}] for i in range(3)]
    daemon.forward_chunk("mega.session", entries, "chunk-A")
    first = sorted(r for (r,) in pg.sql("SELECT mg_id FROM mega_generations"))
    assert len(first) == 3
    daemon.forward_chunk("mega.session", entries, "chunk-A", mode="packed")   # a retry
    assert sorted(r for (r,) in pg.sql("SELECT mg_id FROM mega_generations")) == first
    daemon.forward_chunk("mega.session", entries, "chunk-B")
    assert pg.count() == 6


def test_client_ids_are_kept(daemon, pg):
    ids = [uuid7() for _ in range(5)]
    daemon.forward_chunk("mega.generation", [[1700000000, {"mg_id": i}] for i in ids], "ids")
    assert sorted(r for (r,) in pg.sql("SELECT mg_id FROM mega_generations")) == sorted(ids)


# ---- Fluent Bit metadata, customers -------------------------------------------

def test_fluent_bit_metadata_goes_to_meta(daemon, pg):
    entries = [[[event_time(1700000000, 0), {"otlp": {"trace_id": "abc"}}],
                {"mg_id": "fb-meta", "mg_meta": {"mine": 1}}]]
    daemon.forward_chunk("mega.generation", entries, "fb", mode="packed")
    row = pg.row("fb-meta")
    assert row["mg_meta"] == {"mine": 1, "fluent_metadata": {"otlp": {"trace_id": "abc"}}}
    assert row["mg_created_at"] == T0


def test_stub_customers_are_created(daemon, pg):
    pg.sql("INSERT INTO mega_customers (mg_pass_id, mg_email, mg_credits, mg_source_system) "
           "VALUES ('known', 'k@example.com', 7, 'shopify')")
    daemon.forward_chunk("mega.session", [
        [1700000000, {"mg_id": "s1", "mg_pass_id": "new-1"}],
        [1700000000, {"mg_id": "s2", "mg_pass_id": "new-2"}],
        [1700000000, {"mg_id": "s3", "mg_pass_id": "new-1"}],
        [1700000000, {"mg_id": "s4", "mg_pass_id": "known"}],
        [1700000000, {"mg_id": "s5"}],
    ], "cust")
    assert pg.count() == 5
    stubs = pg.sql("SELECT mg_pass_id, mg_credits, mg_source_system FROM mega_customers "
                   "WHERE mg_pass_id LIKE 'new-%%' ORDER BY 1")
    assert stubs == [("new-1", 0, "megaingest"), ("new-2", 0, "megaingest")]
    known = pg.rows("SELECT * FROM mega_customers WHERE mg_pass_id = 'known'")[0]
    assert (known["mg_email"], known["mg_credits"], known["mg_source_system"]) == \
        ("k@example.com", 7, "shopify")
    assert pg.value("SELECT count(*) FROM mega_customers") == 3


def test_later_event_merges_into_the_row(daemon, pg):
    """A column the new event carries replaces the stored one, a column it
    lacks keeps its value, and mg_meta is merged."""
    daemon.forward_chunk("mega.generation", [[1700000000, {
        "mg_id": "merge", "status": "pending", "prompt": "p", "mg_meta": {"a": 1, "b": 1}}]], "m1")
    daemon.forward_chunk("mega.generation", [[1700000005, {
        "mg_id": "merge", "status": "succeeded", "latency_ms": 5, "mg_meta": {"b": 2},
        "extra": "x"}]], "m2")
    row = pg.row("merge")
    assert (row["mg_status"], row["mg_prompt"], row["mg_latency_ms"]) == ("succeeded", "p", 5)
    assert row["mg_meta"] == {"a": 1, "b": 2, "extra": "x"}
    assert pg.count() == 1
