"""The overdue rule compares instants: a due date with any offset is overdue exactly when its instant
has passed, and the query's text bound never leaves out a due date that has passed."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.changefeed.overdue import is_overdue, overdue_event, query_lower_bound, query_upper_bound

NOW = datetime(2026, 12, 2, 2, 0, 0, tzinfo=UTC)
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timedelta(minutes=m))


def written(instant: datetime, offset: timedelta, sep: str, fraction: bool, zulu: str) -> str:
    """`instant` as a writer might store it: its local time at `offset`, RFC 3339."""
    local = instant.astimezone(timezone(offset))
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (local.strftime(".%f") if fraction else "")
    if offset == timedelta(0) and zulu:
        return text + zulu
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def doc(due: str, **kw: object) -> dict[str, object]:
    return {"id": "a", "tenantId": "acme", "status": "planned", "dueDate": due, **kw}


@settings(max_examples=500, deadline=None)
@given(instants, instants, offsets, st.sampled_from(["T", "t"]), st.booleans(), st.sampled_from(["", "Z", "z"]))
def test_overdue_exactly_when_the_instant_has_passed(due: datetime, now: datetime, offset: timedelta, sep: str,
                                                     fraction: bool, zulu: str) -> None:
    if not fraction:
        due = due.replace(microsecond=0)
    text = written(due, offset, sep, fraction, zulu)
    assert is_overdue(doc(text), now) == (due <= now), text
    if due <= now:  # the query (text order) selects it, whatever its offset
        assert text <= query_upper_bound(now), (text, query_upper_bound(now))
    since = now - timedelta(days=400)  # the dedupe window's start
    assert is_overdue(doc(text), now, since) == (since < due <= now), text
    if due > since:  # the query's lower bound leaves out none the window keeps, a date-only one neither
        assert text >= query_lower_bound(since) and text[:10] >= query_lower_bound(since), text


def test_the_issue_example_and_its_neighbours() -> None:
    # 2026-12-02T07:07:42+05:30 is 01:37:42Z: overdue at 02:00Z (text order said 5.5 h later).
    assert is_overdue(doc("2026-12-02T07:07:42+05:30"), NOW)
    assert not is_overdue(doc("2026-12-02T07:07:42+05:00"), NOW - timedelta(minutes=30))
    assert not is_overdue(doc("2026-12-01T18:30:00-08:00"), NOW)  # 02:30Z: not yet
    assert is_overdue(doc("2026-12-01T17:30:00-08:00"), NOW)  # 01:30Z
    assert is_overdue(doc("2026-12-02T01:59:59Z"), NOW) and not is_overdue(doc("2026-12-02T02:00:01Z"), NOW)
    assert is_overdue(doc("2026-12-01"), NOW) and not is_overdue(doc("2026-12-02"), NOW)  # end of that day, UTC
    assert not is_overdue(doc("2026-12-01T00:00:00Z", status="completed"), NOW)
    assert not is_overdue(doc("2026-12-01T00:00:00Z", isDeleted=True), NOW)
    assert not is_overdue(doc("soon"), NOW)
    # Past the dedupe window (announced when it became overdue): not again. A date-only due date is
    # due at the end of its day, so the window's first day still counts.
    since = NOW - timedelta(days=400)  # 2025-10-28T02:00Z
    assert is_overdue(doc("2025-10-28"), NOW, since) and not is_overdue(doc("2025-10-27"), NOW, since)
    assert "2025-10-27" >= query_lower_bound(since)  # both are read: the bound keeps a margin


def test_the_event_carries_the_due_instant_in_utc() -> None:
    event = overdue_event(doc("2026-12-02T07:07:42+05:30"), "assessments", NOW, "2026-12-02T02:00:00.000Z")
    assert event.timestamp == "2026-12-02T01:37:42.000Z"
    assert event.data["dueDate"] == "2026-12-02T07:07:42+05:30" and event.data["overdueByHours"] == 0.4
