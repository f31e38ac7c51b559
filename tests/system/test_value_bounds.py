"""Values at the edges of what JSON and RFC 3339 allow, sent as a client or the platform would, judged
from outside: a clear 400 naming the field, never a 500, never data changed on the way, and one
document or query never failing the others.

- Integers outside 64 bits: the body parser would have read them as floats (losing digits) and
  stored that.
- Date-times valid in RFC 3339 that have no UTC date-time (`0001-01-01T00:00:00+01:00`,
  `9999-12-31T23:59:59-01:00`): converting them raised OverflowError, a 500 for an event or a history
  query, a failed change-feed batch for a document, a failed overdue run for an assessment.
- History `from` before 1970: matched no event (the store's row keys begin at 1970).
- Date-times of RFC 3339's shape naming no time (hour 24, a leap second): the parser's error named
  no part of them.
- Errors in a replay's ids or in a member's name pointed at the whole list or at no JSON Pointer step.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.system.cosmos import Platform, events, wait_events
from tests.system.harness import App, tenant, wait_for

BIG = "123456789012345678901234567890"
BEFORE_YEAR_1_UTC = "0001-01-01T00:00:00+01:00"
AFTER_YEAR_9999_UTC = "9999-12-31T23:59:59-01:00"


def _event(t: str, **over: Any) -> dict[str, Any]:
    return {"tenantId": t, "eventType": "RISK_CREATED", "source": "ARCHER_GRC", "action": "CREATE",
            "entityId": "r-1", "entityType": "risk", "data": {"score": 7}, **over}


def _raw(app: App, method: str, path: str, body: str, t: str) -> Any:
    return app.request(method, path, tenants=[t], content=body.encode(),
                       headers={"Content-Type": "application/json"})


def _problem(r: Any, status: int) -> list[dict[str, Any]]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json().get("errors", [])


def test_an_integer_that_would_lose_digits_is_refused_not_stored_as_a_float(app: App) -> None:
    t = tenant("bigint")
    # As the client wrote it (a JSON integer of 30 digits): the test client must not re-encode it.
    single = ('{"tenantId": "%s", "eventType": "RISK_CREATED", "source": "ARCHER_GRC", "action": "CREATE",'
              ' "data": {"archerId": %s, "ok": 18446744073709551615}}' % (t, BIG))
    errors = _problem(_raw(app, "POST", "/events", single, t), 400)
    assert [(e["pointer"], e["field"], e["type"]) for e in errors] == [("/data/archerId", "data.archerId",
                                                                        "int_out_of_range")]
    # In a bulk: the body is refused whole (as malformed JSON is), naming the event and the member.
    bulk = ('{"events": [{"tenantId": "%s", "eventType": "RISK_CREATED", "source": "ARCHER_GRC",'
            ' "action": "CREATE", "data": {}}, {"tenantId": "%s", "eventType": "RISK_CREATED",'
            ' "source": "ARCHER_GRC", "action": "CREATE", "data": {"ids": [1, -%s]}}]}' % (t, t, BIG))
    errors = _problem(_raw(app, "POST", "/events/bulk", bulk, t), 400)
    assert [e["pointer"] for e in errors] == ["/events/1/data/ids/1"]
    # A stream config's filter value, too (it would have been stored as a float and compared as one).
    config = ('{"tenantId": "%s", "filters": [{"conditions": {"data.archerId": %s}}]}' % (t, BIG))
    errors = _problem(_raw(app, "PUT", f"/stream-config/{t}", config, t), 400)
    assert [e["pointer"] for e in errors] == ["/filters/0/conditions/data.archerId"]
    assert app.get(f"/stream-config/{t}", tenants=[t]).json()["isDefault"] is True
    assert events(app, t, source="ARCHER_GRC") == []  # nothing of the refused bodies was stored
    # The largest integers orjson holds exactly go through unchanged; so do long digit strings.
    body = ('{"tenantId": "%s", "eventType": "RISK_CREATED", "source": "ARCHER_GRC", "action": "CREATE",'
            ' "data": {"max": 18446744073709551615, "min": -9223372036854775808, "id": "%s"}}' % (t, BIG))
    r = _raw(app, "POST", "/events", body, t)
    assert r.status_code == 201, r.text
    [stored] = events(app, t, source="ARCHER_GRC")  # not the monitor's SYSTEM_PERFORMANCE at a minute's turn
    assert stored["data"] == {"max": 2**64 - 1, "min": -(2**63), "id": BIG}


def test_a_time_with_no_utc_date_time_is_a_field_error_and_fails_no_other_event(app: App) -> None:
    t = tenant("ts")
    for value in (BEFORE_YEAR_1_UTC, AFTER_YEAR_9999_UTC):
        errors = _problem(app.post("/events", json=_event(t, timestamp=value), tenants=[t]), 400)
        assert [e["pointer"] for e in errors] == ["/timestamp"], errors
        assert "out of range" in errors[0]["detail"]
    r = app.post("/events/bulk", tenants=[t], json={"events": [
        _event(t, timestamp=BEFORE_YEAR_1_UTC), _event(t, timestamp="2026-01-31t12:00:00+05:30"),
        _event(t)]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["rejected", "accepted", "accepted"]
    assert [e["pointer"] for e in results[0]["errors"]] == ["/events/0/timestamp"]
    stored = events(app, t, source="ARCHER_GRC")
    assert len(stored) == 2 and stored[0]["timestamp"] == "2026-01-31T06:30:00.000Z"  # lowercase t: RFC 3339


def test_a_date_time_of_the_right_shape_but_no_such_time_says_which_part_is_wrong(app: App) -> None:
    """Hour 24, minute 61, 30 February, an offset of +25:00 and a leap second have RFC 3339's shape
    (the leap second is even valid RFC 3339, but no datetime holds it): each is a 400 naming the field
    and the part that is wrong, in an event, a backfill and a history query alike. The parser's own
    words ("unexpected extra characters at the end of the input") named none of them."""
    t = tenant("badtime")
    cases = {"2026-12-07T24:00:00Z": "hour 24", "2026-12-07T18:61:00Z": "minute 61",
             "2026-02-30T10:00:00Z": "2026-02-30 is not a date",
             "2026-12-07T18:00:00+25:00": "offset +25:00", "2016-12-31T23:59:60Z": "leap second"}
    r = app.post("/events/bulk", tenants=[t], json={"events": [_event(t, timestamp=v) for v in cases]})
    assert r.status_code == 200, r.text
    for i, (result, words) in enumerate(zip(r.json()["results"], cases.values())):
        assert result["status"] == "rejected", result
        [error] = result["errors"]
        assert error["pointer"] == f"/events/{i}/timestamp" and words in error["detail"], error
        assert error["detail"].startswith("timestamp is not a valid date-time: "), error
    for value, words in cases.items():
        [error] = _problem(app.get(f"/events/{t}/history", tenants=[t], params={"from": value}), 400)
        assert error["field"] == "from" and words in error["detail"], error
    [error] = _problem(app.post(f"/backfills/{t}", tenants=[t], json={
        "from": "2026-12-01T00:00:00Z", "to": "2026-12-01T24:00:00Z", "destination": "redis"}), 400)
    assert error["pointer"] == "/to" and "hour 24" in error["detail"], error
    assert events(app, t) == []


def test_history_takes_every_valid_range_and_finds_events_from_before_1970_on(app: App) -> None:
    t = tenant("hist")
    r = app.put(f"/stream-config/{t}", tenants=[t], json={"tenantId": t, "destinations": [
        {"type": "redis", "enabled": True}, {"type": "analytics", "enabled": True}]})
    assert r.status_code == 201, r.text
    r = app.post("/events", tenants=[t], json=_event(t))
    assert r.status_code == 201, r.text
    event_id = r.json()["eventId"]

    def history(**params: str) -> Any:
        return app.get(f"/events/{t}/history", tenants=[t], params=params)

    for params in ({"from": BEFORE_YEAR_1_UTC}, {"to": AFTER_YEAR_9999_UTC}):
        errors = _problem(history(**params), 400)
        [name] = params
        assert errors[0]["field"] == name and "out of range" in errors[0]["detail"], errors
    for start in ("1960-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z"):
        r = history(**{"from": start})
        assert r.status_code == 200, r.text
        assert [e["eventId"] for e in r.json()["events"]] == [event_id], (start, r.json())
    r = history(**{"from": "1960-01-01T00:00:00z", "to": "9999-12-31T23:59:59Z"})  # lowercase z: RFC 3339
    assert r.status_code == 200 and [e["eventId"] for e in r.json()["events"]] == [event_id], r.text


def test_a_change_with_an_unrepresentable_time_is_published_with_the_others_of_its_batch(app: App) -> None:
    t = tenant("cfts")
    p = Platform(app.env)
    now = datetime.now(UTC)
    # One batch: a document whose createdAt/updatedAt have no UTC date-time, beside ordinary ones.
    p.container("risks").create_item({"id": "r-odd", "tenantId": t, "title": "Odd dates", "status": "open",
                                      "createdAt": BEFORE_YEAR_1_UTC, "updatedAt": AFTER_YEAR_9999_UTC})
    for i in range(3):
        p.create("risks", {"id": f"r-{i}", "tenantId": t, "title": f"Risk {i}", "status": "open"})
    evs = wait_events(app, t, 4, source="COSMOS_DB")
    assert sorted(e["entityId"] for e in evs) == ["r-0", "r-1", "r-2", "r-odd"], evs
    odd = next(e for e in evs if e["entityId"] == "r-odd")
    # Its time is unreadable, so the change is dated as any change without one: when it was written.
    written = datetime.fromisoformat(odd["timestamp"])
    assert abs(written - now) < timedelta(minutes=5), odd["timestamp"]
    assert "OverflowError" not in app.log()


def test_the_overdue_check_survives_due_dates_with_no_utc_date_time(app: App) -> None:
    t = tenant("odue")
    platform = Platform(app.env)
    past = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # `9999-12-31` is the usual "no due date"; the other one sorts before now as text, so the check's
    # query returns it.
    for aid, due in (("a-none", "9999-12-31"), ("a-odd", BEFORE_YEAR_1_UTC), ("a-late", past)):
        platform.create("assessments", {"id": aid, "tenantId": t, "title": aid, "dueDate": due,
                                        "status": "planned"})
    runs = app.log().count("overdue check:")
    app.run_function("assessments_overdue")
    wait_for(lambda: app.log().count("overdue check:") > runs, 60, what="the overdue run finished")
    overdue = [e["entityId"] for e in events(app, t) if e["eventType"] == "ASSESSMENT_OVERDUE"]
    assert overdue == ["a-late"], overdue
    assert "OverflowError" not in app.log()


def test_bad_members_are_named_by_a_json_pointer_to_them(app: App) -> None:
    t = tenant("ptr")
    # A replay body: the list, its size, each item that is no record id.
    for ids, pointers in (("abc", ["/ids"]), (["x"] * 501, ["/ids"]), (["ok", 7, "", "ok"], ["/ids/1", "/ids/2"])):
        errors = _problem(app.post(f"/deadletters/{t}/replay", json={"ids": ids}, tenants=[t]), 400)
        assert [e["pointer"] for e in errors] == pointers, errors
    # A filter condition on a path that is not under data. or metadata.: the member itself, named as such.
    r = app.put(f"/stream-config/{t}", tenants=[t],
                json={"tenantId": t, "filters": [{"conditions": {"riskScore": {"gte": 5}}}]})
    [error] = _problem(r, 400)
    assert error["pointer"] == "/filters/0/conditions/riskScore" and error["detail"].startswith("member name: ")
