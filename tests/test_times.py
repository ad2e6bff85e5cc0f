"""Event times: one parser reads the Forward entry time and the timestamp
columns, so a value means the same instant either way; and the text
PostgreSQL prints for a stored time is accepted when sent again."""

import datetime
import decimal

import msgpack
import pytest

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


def texts(pg, tz, ids):
    """{mg_id: mg_created_at::text} for IDS, printed in session time zone TZ."""
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE %s", (tz,))
            cur.execute("SELECT mg_id, mg_created_at::text FROM mega_generations "
                        "WHERE mg_id = ANY(%s)", (list(ids),))
            return dict(cur.fetchall())
    finally:
        conn.close()


def intended(f):
    """The instant a client means by float F: its shortest decimal text, to
    the microsecond."""
    us = (decimal.Decimal(repr(f)) * 1000000).to_integral_value(decimal.ROUND_HALF_UP)
    return EPOCH + datetime.timedelta(microseconds=int(us))


@pytest.mark.parametrize("f", [1700000000.000001, 1700000000.123456, 1700000000.9999997,
                               1234567890.000999, 1.000001])
def test_float_time_same_either_way(daemon, pg, f):
    """The float as the Forward entry time and as mg_created_at: same microseconds."""
    entries = [[f, {"mg_id": "as-entry-time", "mg_record_type": "generation"}],
               [1, {"mg_id": "as-column", "mg_record_type": "generation", "mg_created_at": f}]]
    daemon.forward_chunk("mega.generation", entries, "float-both")
    got = texts(pg, "UTC", ["as-entry-time", "as-column"])
    assert got["as-entry-time"] == got["as-column"], got
    assert pg.row("as-entry-time")["mg_created_at"] == intended(f)
    assert pg.row("as-column")["mg_created_at"] == intended(f)
    assert daemon.dead_letters() == []


@pytest.mark.parametrize("tz,stored", [
    ("UTC", msgpack.Timestamp(1796587023, 0)),                 # "...19:57:03+00"
    ("UTC", msgpack.Timestamp(1796587023, 123456000)),         # "...19:57:03.123456+00"
    ("Asia/Kolkata", msgpack.Timestamp(1796587023, 500000000)),  # "+05:30"
    ("America/St_Johns", msgpack.Timestamp(1796587023, 0)),      # "-03:30"
    ("America/New_York", msgpack.Timestamp(1796587023, 1000)),   # "-05"
    ("Asia/Kathmandu", msgpack.Timestamp(0, 0)),                 # "+05:30" in 1970
    ("Europe/Amsterdam", "1900-06-01T12:00:00Z"),                # "+00:19:32", a local mean time
], ids=["utc", "utc-micro", "kolkata", "st-johns", "new-york", "kathmandu", "amsterdam-1900"])
def test_created_at_read_back_is_accepted(daemon, pg, tz, stored):
    """SELECT mg_created_at::text, sent again as mg_created_at, stores the same instant."""
    daemon.forward_chunk("mega.generation", [[1, {"mg_id": "first", "mg_created_at": stored}]],
                         "first")
    printed = texts(pg, tz, ["first"])["first"]
    daemon.forward_chunk("mega.generation", [[1, {"mg_id": "again", "mg_created_at": printed}]],
                         "again")
    assert daemon.dead_letters() == [], f"{printed!r} refused"
    assert texts(pg, tz, ["again"])["again"] == printed
    assert pg.row("again")["mg_created_at"] == pg.row("first")["mg_created_at"]


def test_bad_offset_is_refused_with_its_reason(daemon, pg):
    ev = {"mg_id": "bad-offset", "mg_record_type": "generation",
          "mg_created_at": "2026-12-06 19:57:03+5"}
    daemon.forward_chunk("mega.generation", [[1, ev]], "bad-offset")
    dl = daemon.wait_dead_letter(lambda d: d.get("field") == "mg_created_at")
    assert dl["reason"] == ('mg_created_at: "2026-12-06 19:57:03+5" is not a timestamp: '
                            'offset "+5" is not Z, +HH, +HHMM or +HH:MM')
    assert pg.count() == 0
