"""Pure rules for values at the edges of JSON and RFC 3339 (tests/system/test_value_bounds.py drives
them through the app)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from pydantic import ValidationError

from shared.changefeed.overdue import due_at, is_overdue
from shared.changefeed.rules import parse_time
from shared.core.backfill import BackfillRequest
from shared.core.events import EventIn, parse_rfc3339, to_utc
from shared.http.big_ints import INT_MAX, INT_MIN, out_of_range_ints

BIG = 123456789012345678901234567890


def test_orjson_still_reads_an_integer_beyond_64_bits_as_a_float() -> None:
    # The reason for big_ints: if orjson ever raises instead, the scan can go.
    assert orjson.loads(str(BIG)) == float(BIG)
    assert orjson.loads(str(INT_MAX)) == INT_MAX and orjson.loads(str(INT_MIN)) == INT_MIN


@pytest.mark.parametrize(("body", "where"), [
    (b'{"a": 1, "b": "x"}', []),
    (b'{"a": %d, "b": %d}' % (INT_MAX, INT_MIN), []),  # the edges are held exactly
    (b'{"a": %d}' % (INT_MAX + 1), [["a"]]),
    (b'{"a": %d}' % (INT_MIN - 1), [["a"]]),
    (b'{"s": "%d", "f": 0.1234567890123456789012, "e": 1e300}' % BIG, []),  # digits, but no such integer
    (b'{"events": [{}, {"data": {"ids": [1, %d]}}], "n": -%d}' % (BIG, BIG),
     [["events", 1, "data", "ids", 1], ["n"]]),
    (b"[" + b"9" * 5000 + b"]", [[0]]),  # more digits than int() converts
])
def test_out_of_range_ints_names_each_integer_that_would_lose_digits(body: bytes,
                                                                     where: list[list[object]]) -> None:
    assert out_of_range_ints(body) == where


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_with_no_utc_date_time_is_out_of_range(value: str) -> None:
    parsed = parse_rfc3339(value)
    assert parsed is not None
    with pytest.raises(ValueError, match="out of range"):
        to_utc(parsed)
    with pytest.raises(ValidationError, match="timestamp is out of range"):
        EventIn.model_validate({"tenantId": "t-one", "eventType": "RISK_CREATED", "source": "ARCHER_GRC",
                                "action": "CREATE", "data": {}, "timestamp": value})
    assert parse_time(value) is None  # a change-feed document's time: unreadable, not an error


def test_event_timestamps_are_utc_once_validated_and_lowercase_rfc3339_is_read() -> None:
    ev = EventIn.model_validate({"tenantId": "t-one", "eventType": "RISK_CREATED", "source": "ARCHER_GRC",
                                 "action": "CREATE", "data": {}, "timestamp": "2026-01-31T12:00:00+05:30"})
    assert ev.timestamp == datetime(2026, 1, 31, 6, 30, tzinfo=UTC)
    assert ev.timestamp.utcoffset() == timedelta(0)
    assert parse_rfc3339("2026-01-31t12:00:00z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_rfc3339("2026-13-01T00:00:00Z") is None and parse_rfc3339("20260131T000000Z") is None
    assert parse_time("2026-01-31T12:00:00+05:30") == datetime(2026, 1, 31, 6, 30, tzinfo=UTC)


def test_a_backfill_range_reads_lowercase_rfc3339_and_refuses_an_unrepresentable_one() -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(hours=2)).strftime("%Y-%m-%dt%H:%M:%Sz")
    req = BackfillRequest.model_validate({"from": start, "to": now.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                                          "destination": "redis"})
    assert req.from_.tzinfo is not None and req.from_ < req.to
    with pytest.raises(ValidationError, match="out of range"):
        BackfillRequest.model_validate({"from": "0001-01-01T00:00:00+01:00", "to": now.isoformat(),
                                        "destination": "redis"})


def test_due_dates_beyond_year_9999_are_never_due() -> None:
    now = datetime.now(timezone.utc)
    assert due_at("9999-12-31") is None and not is_overdue({"dueDate": "9999-12-31"}, now)
    assert due_at("0001-01-01T00:00:00+01:00") is None
    assert due_at("2026-01-31") == datetime(2026, 2, 1, tzinfo=UTC)
