"""Promises of README 'API' ('Events', 'Limits', 'Stream configuration', 'Results and delivery') and
'Kafka / Event Hubs destination' that no other system test proved, checked from outside the running
app (HTTP, the stack's Redis, a Kafka consumer):

- Events: the documented eventType / source / action values are all taken, others and unknown fields
  are field errors named by pointer; tenantId is 3-64 characters of lowercase letters, digits and `-`,
  starting and ending with a letter or digit; a bulk answers a result per event in request order and
  one bad event fails no other.
- Enrichment: a generated eventId is a UUIDv7, the `Idempotency-Key` is the eventId when the body has
  none; a client timestamp is normalised to UTC, needs an offset and may be at most 300 s ahead; else
  the ingestion time; `ingestedAt`, `schemaVersion` "1.0" and `correlationId` on every stored event.
- Limits: `data`/`metadata` nesting 32 levels, 10,000 keys+items, keys 256 characters, strings 256 KiB;
  an enriched event over 1,000,000 bytes (under the 1 MiB body cap) is 413; `GET /events` limit 1-1000,
  default 100, newest first, `eventType` / `source` filters.
- Stream configuration: the default's fields; `enabled: false` passes nothing; filters' empty lists
  mean any; the operators `ne, in, exists, contains, startsWith`, list indices; the Redis stream key and
  entry fields `{t, s, f, e}`.
- Kafka: record key (tenantId, entityId when configured and present), the native headers and value,
  the delivery ref naming where the broker put the record, the CloudEvents binary mode's `ce_*` headers
  and `data` value, routes (every matching topic; none: delivered `unrouted`), producer lag in
  `/health` and the service section of `/metrics`; a disabled destination gets nothing and its topics
  are not checked.
- API table: `/openapi.json` describes every route of the table and every schema it names; ETags
  compared without `W/`, `If-Match: *` only when a config is stored; a bulk with an event that could
  not be delivered nor parked is 503 + Retry-After with the per-event results; metrics written by one
  instance are read by another; each window's error rate, retries, dead letters, change-feed delay;
  the structured CloudEvents view a Redis destination stores with `format: "cloudevents"`.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from localdev.services import free_port
from tests.system.harness import (App, Stack, app_env, app_running, create_topic, event_body, tenant,
                                  topic_records, wait_for)

PROBLEM = "application/problem+json"
EVENT_TYPES = ("RISK_CREATED RISK_UPDATED RISK_STATUS_CHANGED RISK_DELETED CONTROL_CREATED CONTROL_UPDATED "
               "CONTROL_TESTED CONTROL_FAILED ASSESSMENT_STARTED ASSESSMENT_COMPLETED ASSESSMENT_OVERDUE "
               "COMPLIANCE_GAP_DETECTED COMPLIANCE_STATUS_CHANGED POLICY_VIOLATION SYSTEM_ERROR "
               "SYSTEM_PERFORMANCE DATA_ANOMALY USER_ACTION").split()
SOURCES = ("FRONTEND_APP", "MCP_SERVER", "ARCHER_GRC", "BACKEND_API", "COSMOS_DB", "EVENT_STREAMING")
ACTIONS = ("CREATE", "UPDATE", "DELETE", "STATUS_CHANGE", "TEST", "DETECT", "NOTIFY")
MAX_DEPTH, MAX_FIELDS, MAX_KEY, MAX_STRING = 32, 10_000, 256, 256 * 1024
MAX_EVENT_BYTES, SINGLE_BODY_LIMIT = 1_000_000, 1_048_576


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith(PROBLEM), r.headers.get("content-type")
    return dict(r.json())


def _mine(app: App, t: str, **params: str) -> list[dict[str, Any]]:
    """The tenant's stream entries the client posted (not the service's own SYSTEM_* events)."""
    r = app.get(f"/events/{t}", params={"limit": "1000", **params}, tenants=[t])
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()["events"] if e["event"]["source"] != "EVENT_STREAMING"]


# -- Events ------------------------------------------------------------------------------------------

def test_the_documented_values_are_taken_and_others_are_field_errors_in_request_order(app: App) -> None:
    t = tenant("vals")
    events = [event_body(t, eventType=et, source=SOURCES[i % len(SOURCES)], action=ACTIONS[i % len(ACTIONS)])
              for i, et in enumerate(EVENT_TYPES)]
    r = app.post("/events/bulk", json={"events": events}, tenants=[t])
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["accepted"] * len(EVENT_TYPES), r.text

    shortest, longest = "a1b", "a" + "-0" * 31 + "z"
    assert len(longest) == 64
    bad: list[tuple[dict[str, Any], str]] = [
        (event_body(t, colour="red"), "/events/{i}/colour"),
        (event_body(t, eventType="RISK_EXPLODED"), "/events/{i}/eventType"),
        (event_body(t, source="SOMEWHERE"), "/events/{i}/source"),
        (event_body(t, action="SMASH"), "/events/{i}/action"),
        *((event_body(bad_t), "/events/{i}/tenantId")
          for bad_t in ("ab", longest + "x", "-abc", "abc-", "Abc", "ab_c", "ab c")),
    ]
    mixed: list[dict[str, Any]] = []
    want: list[tuple[str, str | None]] = []
    for body, pointer in bad:  # each refusal between two good events
        mixed.append(event_body(t))
        want.append(("accepted", None))
        mixed.append(body)
        want.append(("rejected", pointer.format(i=len(mixed) - 1)))
    mixed += [event_body(shortest), event_body(longest)]
    want += [("accepted", None), ("accepted", None)]
    r = app.post("/events/bulk", json={"events": mixed})  # as an admin: any tenant id reaches validation
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [s for s, _ in want], results
    for x, (status, pointer) in zip(results, want):
        if pointer is not None:
            pairs = [(e["pointer"], e["field"]) for e in x["errors"]]
            index, name = pointer.split("/")[2:]
            assert (pointer, f"events[{index}].{name}") in pairs, (pointer, x)
    assert [x["eventId"] for x in results if x["status"] == "accepted"] == [
        e["eventId"] for e, (s, _) in zip(mixed, want) if s == "accepted"]
    stored = {e["eventId"] for e in _mine(app, t)}
    assert {e["eventId"] for e in mixed if e["tenantId"] == t} - stored == {
        e["eventId"] for e, (s, _) in zip(mixed, want) if s == "rejected" and e["tenantId"] == t}


def test_enrichment_ids_times_schema_version_and_correlation_id(app: App) -> None:
    t = tenant("enrich")
    plain = {k: v for k, v in event_body(t).items() if k != "eventId"}
    made = app.post("/events", json=plain, tenants=[t])
    assert made.status_code == 201, made.text
    generated = made.json()["eventId"]
    assert uuid.UUID(generated).version == 7, generated
    keyed = app.post("/events", json=plain, tenants=[t], headers={"Idempotency-Key": "idem-key-1"})
    assert keyed.status_code == 201 and keyed.json()["eventId"] == "idem-key-1", keyed.text

    local = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    sent_at = local.astimezone(timezone(timedelta(hours=5))).isoformat()
    assert sent_at.endswith("+05:00")
    timed = app.post("/events", json=event_body(t, eventId="timed", timestamp=sent_at), tenants=[t])
    assert timed.status_code == 201, timed.text
    # Kept to the millisecond: the digits past it are dropped, not rounded (.123987 -> .123).
    fine_at = (local + timedelta(microseconds=123_987)).astimezone(timezone(timedelta(hours=5))).isoformat()
    fine = app.post("/events", json=event_body(t, eventId="fine", timestamp=fine_at), tenants=[t])
    assert fine.status_code == 201, fine.text
    fine_z = (local + timedelta(microseconds=123_987)).isoformat().replace("+00:00", "Z")
    fine_zulu = app.post("/events", json=event_body(t, eventId="fine-z", timestamp=fine_z), tenants=[t])
    assert fine_zulu.status_code == 201, fine_zulu.text
    near = (datetime.now(UTC) + timedelta(seconds=200)).isoformat()
    near_sent = app.post("/events", json=event_body(t, eventId="near", timestamp=near), tenants=[t])
    assert near_sent.status_code == 201, near_sent.text
    for i, ts in enumerate(((datetime.now(UTC) + timedelta(seconds=400)).isoformat(), "2026-01-31T12:00:00")):
        late = app.post("/events", json=event_body(t, eventId=f"late-{i}", timestamp=ts), tenants=[t])
        problem = _problem(late, 400)
        errors = [(e["pointer"], e["field"]) for e in problem["errors"]]
        assert errors == [("/timestamp", "timestamp")], problem
        assert problem["correlationId"] == late.headers["x-correlation-id"], problem

    stored = {e["eventId"]: e for e in _mine(app, t)}
    assert set(stored) == {generated, "idem-key-1", "timed", "fine", "fine-z", "near"}, stored
    got = stored["timed"]["timestamp"]
    assert got.endswith("Z") and datetime.fromisoformat(got) == local, got
    for name in ("fine", "fine-z"):
        got_fine = stored[name]["timestamp"]
        assert got_fine.endswith(".123Z"), (name, got_fine)
        assert datetime.fromisoformat(got_fine) == local + timedelta(milliseconds=123), (name, got_fine)
    for e in stored.values():
        assert e["schemaVersion"] == "1.0" and e["correlationId"] and e["ingestedAt"], e
        datetime.fromisoformat(e["ingestedAt"])
    untimed = stored[generated]
    assert untimed["timestamp"] == untimed["ingestedAt"], untimed  # no client time: the ingestion time


# -- Limits ------------------------------------------------------------------------------------------

def _nested(levels: int) -> dict[str, Any]:
    """`data` whose innermost object is `levels` objects below it."""
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        node = {"n": node}
    return node


@pytest.mark.parametrize(("name", "ok", "too_much"), [
    ("nesting", _nested(MAX_DEPTH), _nested(MAX_DEPTH + 1)),
    ("fields", {"items": list(range(MAX_FIELDS - 1))}, {"items": list(range(MAX_FIELDS))}),
    ("key", {"k" * MAX_KEY: 1}, {"k" * (MAX_KEY + 1): 1}),
    ("string", {"s": "x" * MAX_STRING}, {"s": "x" * (MAX_STRING + 1)}),
])
def test_data_and_metadata_shape_limits(app: App, name: str, ok: dict[str, Any],
                                        too_much: dict[str, Any]) -> None:
    t = tenant("shape")
    for where in ("data", "metadata"):
        fine = app.post("/events", json=event_body(t, **{where: ok}), tenants=[t])
        assert fine.status_code == 201, (name, where, fine.text[:300])
        over = _problem(app.post("/events", json=event_body(t, **{where: too_much}), tenants=[t]), 400)
        assert [e["pointer"] for e in over["errors"]] == [f"/{where}"], (name, where, over)


def test_an_enriched_event_over_1000000_bytes_is_413_though_its_body_is_under_1_mib(app: App) -> None:
    t = tenant("big")
    chunk = 250_100  # four of them: just over the enriched limit, well under the body limit
    body = event_body(t, eventId="big-1", data={f"p{i}": "x" * chunk for i in range(4)})
    size = len(json.dumps(body))
    assert MAX_EVENT_BYTES < size < SINGLE_BODY_LIMIT, size
    problem = _problem(app.post("/events", json=body, tenants=[t]), 413)
    assert str(MAX_EVENT_BYTES) in json.dumps(problem), problem
    fits = event_body(t, eventId="big-2", data={f"p{i}": "x" * chunk for i in range(3)})
    assert app.post("/events", json=fits, tenants=[t]).status_code == 201
    assert [e["eventId"] for e in _mine(app, t)] == ["big-2"]


def test_get_events_limit_default_order_and_filters(app: App) -> None:
    t = tenant("list")
    events = [event_body(t, eventId=f"l-{i:03}", eventType="RISK_UPDATED" if i % 2 else "CONTROL_FAILED",
                         source="ARCHER_GRC" if i % 3 == 0 else "BACKEND_API") for i in range(105)]
    r = app.post("/events/bulk", json={"events": events}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 105, r.text[:300]
    newest_first = [e["eventId"] for e in reversed(events)]
    default = app.get(f"/events/{t}", tenants=[t]).json()
    assert [e["event"]["eventId"] for e in default["events"]] == newest_first[:100], default["count"]
    assert [e["eventId"] for e in _mine(app, t)] == newest_first
    assert [e["eventId"] for e in _mine(app, t, eventType="RISK_UPDATED")] == [
        e["eventId"] for e in reversed(events) if e["eventType"] == "RISK_UPDATED"]
    assert [e["eventId"] for e in _mine(app, t, source="ARCHER_GRC")] == [
        e["eventId"] for e in reversed(events) if e["source"] == "ARCHER_GRC"]
    one = app.get(f"/events/{t}", params={"limit": "1"}, tenants=[t]).json()
    assert [e["event"]["eventId"] for e in one["events"]] == newest_first[:1]
    for value in ("0", "1001", "ten"):
        problem = _problem(app.get(f"/events/{t}", params={"limit": value}, tenants=[t]), 400)
        assert "limit" in json.dumps(problem["errors"]), problem
    for name in ("eventType", "source"):
        problem = _problem(app.get(f"/events/{t}", params={name: "NOPE"}, tenants=[t]), 400)
        assert name in json.dumps(problem["errors"]), problem


# -- Stream configuration -----------------------------------------------------------------------------

def test_the_default_config_and_its_redis_stream_entries(app: App, stack: Stack) -> None:
    t = tenant("dflt")
    got = app.get(f"/stream-config/{t}", tenants=[t])
    assert got.status_code == 200, got.text
    c = got.json()
    assert (c["enabled"], c["filters"], c["retentionDays"], c["batchSize"], c["compressionEnabled"],
            c["isDefault"], c["version"]) == (True, [], 30, 100, False, True, 0), c
    assert [d["type"] for d in c["destinations"]] == ["redis"], c
    redis_dest = c["destinations"][0]
    assert redis_dest.get("enabled", True) is True, redis_dest
    assert (redis_dest["config"]["maxLen"], redis_dest["config"]["retentionHours"]) == (10_000, 6), redis_dest

    sent = event_body(t, eventType="RISK_UPDATED", source="ARCHER_GRC", eventId="dflt-1")
    r = app.post("/events", json=sent, tenants=[t])
    assert r.status_code == 201, r.text
    entries = [fields for _, fields in stack.redis().xrange(f"grc:{{{t}}}:events")
               if json.loads(fields[b"e"])["source"] != "EVENT_STREAMING"]
    assert len(entries) == 1, entries
    fields = entries[0]
    assert set(fields) == {b"t", b"s", b"f", b"e"}, fields
    assert (fields[b"t"], fields[b"s"], fields[b"f"]) == (b"RISK_UPDATED", b"ARCHER_GRC", b"native"), fields
    assert json.loads(fields[b"e"])["eventId"] == "dflt-1"


def test_a_disabled_stream_passes_nothing_and_every_documented_operator_decides(app: App) -> None:
    off = tenant("off")
    app.configure(off, {"enabled": False})
    r = app.post("/events", json=event_body(off), tenants=[off])
    assert r.status_code == 200 and r.json()["status"] == "filtered" and r.json().get("reason"), r.text
    assert _mine(app, off) == []

    t = tenant("ops")
    conds: dict[str, Any] = {
        "data.owner": {"ne": "mallory"}, "data.level": {"in": ["high", "critical"]},
        "data.tags": {"contains": "sox"}, "data.title": {"startsWith": "Access"},
        "data.items.1.id": "b", "metadata.ticket": {"exists": True}, "data.gone": {"exists": False},
        "data.nothere": {"ne": 3}, "data.code": {"gt": "Zebra"},  # code-point order: "a" > "Z"
        "data.at": {"lt": "2026-12-01T00:00:00.000002Z"},  # to the microsecond; no offset = UTC
    }
    app.configure(t, {"filters": [{"eventTypes": [], "sources": [], "conditions": conds}]})
    good = {"owner": "alice", "level": "high", "tags": ["sox", "gdpr"], "title": "Access review",
            "items": [{"id": "a"}, {"id": "b"}], "code": "apple", "at": "2026-12-01T00:00:00.000001"}
    cases = [
        (good, {"ticket": "T-1"}, "accepted"),
        ({**good, "owner": "mallory"}, {"ticket": "T-1"}, "filtered"),  # ne
        ({**good, "level": "low"}, {"ticket": "T-1"}, "filtered"),  # in
        ({**good, "tags": ["gdpr"]}, {"ticket": "T-1"}, "filtered"),  # contains
        ({**good, "title": "Review: Access"}, {"ticket": "T-1"}, "filtered"),  # startsWith, not contains
        ({**good, "items": [{"id": "b"}, {"id": "a"}]}, {"ticket": "T-1"}, "filtered"),  # list index
        (good, {}, "filtered"),  # exists: true
        ({**good, "gone": None}, {"ticket": "T-1"}, "filtered"),  # exists: false
        ({**good, "nothere": 3}, {"ticket": "T-1"}, "filtered"),  # ne on a present path
        ({**good, "code": "Apple"}, {"ticket": "T-1"}, "filtered"),  # "A" < "Z"
        ({**good, "at": "2026-12-01T00:00:00.000002"}, {"ticket": "T-1"}, "filtered"),  # equal: not lt
        ({**good, "at": "2026-12-01T05:00:00.000001+05:00"}, {"ticket": "T-1"}, "accepted"),  # an instant
    ]
    events = [event_body(t, eventType=EVENT_TYPES[i], data=d, metadata=m)
              for i, (d, m, _) in enumerate(cases)]
    r = app.post("/events/bulk", json={"events": events}, tenants=[t])
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == [s for _, _, s in cases], r.text
    assert sorted(e["eventId"] for e in _mine(app, t)) == sorted(
        e["eventId"] for e, (_, _, s) in zip(events, cases) if s == "accepted")


def test_put_ignores_is_default_and_updated_at_and_a_bulk_not_json_is_refused_whole(app: App) -> None:
    t = tenant("ro")
    put = app.put(f"/stream-config/{t}", tenants=[t],
                  json={"batchSize": 40, "isDefault": True, "updatedAt": "2000-01-01T00:00:00Z"})
    assert put.status_code == 201, put.text
    stored = app.get(f"/stream-config/{t}", tenants=[t]).json()
    assert (stored["batchSize"], stored["isDefault"]) == (40, False), stored
    assert not stored["updatedAt"].startswith("2000"), stored

    good = json.dumps(event_body(t, eventId="whole-1"))
    body = '{"events": [' + good + ', {"tenantId": "' + t + '", "eventType": }]}'
    problem = _problem(app.post("/events/bulk", content=body, headers={"content-type": "application/json"},
                                tenants=[t]), 400)
    assert "results" not in problem, problem
    assert _mine(app, t) == [], "a bulk that is not JSON stored its good event"


# -- Kafka / Event Hubs destination ---------------------------------------------------------------------

def _kafka_event(t: str, **over: Any) -> dict[str, Any]:
    return event_body(t, eventType="RISK_UPDATED", source="ARCHER_GRC", action="UPDATE", entityType="risk",
                      entityId="RSK-9", data={"score": 12}, metadata={"region": "westeurope"},
                      correlationId=f"corr-{uuid.uuid4().hex[:8]}", **over)


def test_native_records_carry_the_key_headers_and_the_event(app: App, stack: Stack) -> None:
    t, topic = tenant("knative"), f"kn-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    app.configure(t, {"topics": [topic], "destinations": [{"type": "kafka", "config": {"key": "entityId"}}]})
    with_entity = _kafka_event(t)
    without = {k: v for k, v in _kafka_event(t).items() if k not in ("entityId", "entityType")}
    r = app.post("/events/bulk", json={"events": [with_entity, without]}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    records = {x["eventId"]: x for x in topic_records(stack.broker, topic, expect=2, with_value=True,
                                                      with_place=True) if x["source"] != "EVENT_STREAMING"}
    first, second = records[with_entity["eventId"]], records[without["eventId"]]
    # Delivered only after its delivery report: the ref is where the broker put the record.
    refs = [d["ref"] for x in r.json()["results"] for d in x["destinations"] if d["destination"] == "kafka"]
    assert refs == [f"{topic}/{x['partition']}@{x['offset']}" for x in (first, second)], (refs, first, second)
    assert first["key"] == "RSK-9" and second["key"] == t, (first, second)
    value = json.loads(first.pop("value"))
    assert value["eventId"] == with_entity["eventId"] and value["data"] == {"score": 12}, value
    assert value["schemaVersion"] == "1.0" and value["tenantId"] == t
    headers = {k: v for k, v in first.items() if k not in ("key", "partition", "offset")}
    assert headers == {"eventId": with_entity["eventId"], "eventType": "RISK_UPDATED", "tenantId": t,
                       "correlationId": with_entity["correlationId"], "source": "ARCHER_GRC",
                       "action": "UPDATE", "schemaVersion": "1.0", "content-type": "application/json",
                       "entityType": "risk", "entityId": "RSK-9"}, headers
    assert "entityId" not in second and "entityType" not in second, second


def test_cloudevents_records_are_binary_mode_with_ce_headers_and_the_data_as_value(app: App,
                                                                                   stack: Stack) -> None:
    t, topic = tenant("kce"), f"kce-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    app.configure(t, {"topics": [topic],
                      "destinations": [{"type": "kafka", "config": {"format": "cloudevents"}}]})
    sent = _kafka_event(t, timestamp="2026-01-31T12:00:00+01:00")
    r = app.post("/events", json=sent, tenants=[t])
    assert r.status_code == 201, r.text
    rec = next(x for x in topic_records(stack.broker, topic, expect=1, with_value=True, with_place=True)
               if x["eventId"] == sent["eventId"])
    value = json.loads(rec["value"])  # the CloudEvent's data: the event's data, metadata and ingestedAt
    assert (value["data"], value["metadata"]) == ({"score": 12}, {"region": "westeurope"}), value
    assert "eventId" not in value and "tenantId" not in value, value  # those are ce_* headers
    assert rec["key"] == t
    assert (rec["ce_specversion"], rec["ce_id"], rec["ce_source"], rec["ce_type"], rec["ce_subject"]) == (
        "1.0", sent["eventId"], f"/tenants/{t}/sources/ARCHER_GRC", "com.grc.RISK_UPDATED", "risk/RSK-9"), rec
    assert (rec["ce_tenantid"], rec["ce_correlationid"], rec["ce_action"], rec["ce_schemaversion"]) == (
        t, sent["correlationId"], "UPDATE", "1.0"), rec
    assert datetime.fromisoformat(rec["ce_time"]) == datetime(2026, 1, 31, 11, tzinfo=UTC), rec
    assert rec["content-type"] == "application/json", rec


def test_routes_send_an_event_to_every_matching_topic_and_none_is_delivered_unrouted(
        app: App, stack: Stack) -> None:
    t = tenant("kroute")
    risks, mcp = f"kr-risk-{uuid.uuid4().hex[:6]}", f"kr-mcp-{uuid.uuid4().hex[:6]}"
    for topic in (risks, mcp):
        create_topic(stack.broker, topic)
    app.configure(t, {"destinations": [{"type": "kafka", "config": {"routes": [
        {"topic": risks, "eventTypes": ["RISK_CREATED", "RISK_UPDATED"]},
        {"topic": mcp, "sources": ["MCP_SERVER"]}]}}]})
    both = event_body(t, eventType="RISK_CREATED", source="MCP_SERVER", action="CREATE")
    risk_only = event_body(t, eventType="RISK_UPDATED", source="ARCHER_GRC", action="UPDATE")
    neither = event_body(t, eventType="CONTROL_FAILED", source="BACKEND_API")
    r = app.post("/events/bulk", json={"events": [both, risk_only, neither]}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    refs = [next(d["ref"] for d in x["destinations"] if d["destination"] == "kafka")
            for x in r.json()["results"]]
    assert sorted(ref.split("/")[0] for ref in refs[0].split(",")) == sorted([risks, mcp]), refs
    assert refs[1].startswith(f"{risks}/"), refs
    assert refs[2].startswith("unrouted"), refs
    in_risks = {x["eventId"] for x in topic_records(stack.broker, risks, expect=2)}
    in_mcp = {x["eventId"] for x in topic_records(stack.broker, mcp, expect=1)}
    assert in_risks == {both["eventId"], risk_only["eventId"]}, in_risks
    assert in_mcp == {both["eventId"]}, in_mcp



def test_producer_lag_is_in_health_and_the_service_section_of_metrics(app: App, stack: Stack) -> None:
    t, topic = tenant("klag"), f"klag-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    app.configure(t, {"topics": [topic], "destinations": [{"type": "kafka"}]})
    assert app.post("/events", json=event_body(t), tenants=[t]).status_code == 201  # the producer is built
    service = app.get(f"/metrics/{t}").json()["service"]  # as an admin
    kafka = service["kafka"]
    assert isinstance(kafka["pendingMessages"], int) and isinstance(kafka["pendingBytes"], int), kafka
    health = app.get("/health").json()["dependencies"]["kafka"]
    assert isinstance(health["pendingMessages"], int) and isinstance(health["pendingBytes"], int), health


# -- API table ------------------------------------------------------------------------------------------

README_ROUTES = {
    ("GET", "/health"), ("POST", "/events"), ("POST", "/events/bulk"), ("GET", "/events/{tenantId}"),
    ("GET", "/events/{tenantId}/history"), ("GET", "/deadletters/{tenantId}"),
    ("POST", "/deadletters/{tenantId}/replay"), ("GET", "/search/{tenantId}"),
    ("POST", "/backfills/{tenantId}"),
    ("GET", "/backfills/{tenantId}"), ("GET", "/backfills/{tenantId}/{jobId}"),
    ("DELETE", "/backfills/{tenantId}/{jobId}"), ("GET", "/metrics/{tenantId}"),
    ("GET", "/stream-config/{tenantId}"), ("PUT", "/stream-config/{tenantId}"), ("GET", "/audit/{tenantId}"),
    ("GET", "/openapi.json"),
}


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {v for k, v in node.items() if k == "$ref" and isinstance(v, str)} | {
            r for v in node.values() for r in _refs(v)}
    if isinstance(node, list):
        return {r for v in node for r in _refs(v)}
    return set()


def test_openapi_describes_every_route_of_the_table_and_every_schema_it_names(app: App) -> None:
    r = app.get("/openapi.json", anonymous=True)
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    described = {(method.upper(), path) for path, item in doc["paths"].items() for method in item
                 if method in ("get", "post", "put", "delete", "patch")}
    assert README_ROUTES <= described, sorted(README_ROUTES - described)
    schemas = doc["components"]["schemas"]
    missing = {ref for ref in _refs(doc["paths"]) if ref.removeprefix("#/components/schemas/") not in schemas}
    assert not missing and _refs(doc["paths"]), missing


def test_etags_compare_weakly_and_if_match_star_needs_a_stored_config(app: App) -> None:
    t = tenant("weak")
    path = f"/stream-config/{t}"
    _problem(app.put(path, tenants=[t], json={"batchSize": 11}, headers={"If-Match": "*"}), 412)
    assert app.get(path, tenants=[t]).json()["isDefault"] is True
    created = app.put(path, tenants=[t], json={"batchSize": 12})
    assert created.status_code == 201, created.text
    etag = created.headers["etag"]
    opaque = etag.removeprefix("W/")
    other_form = opaque if etag.startswith("W/") else f"W/{opaque}"
    assert app.get(path, tenants=[t], headers={"If-None-Match": other_form}).status_code == 304
    replaced = app.put(path, tenants=[t], json={"batchSize": 13}, headers={"If-Match": other_form})
    assert replaced.status_code == 200 and replaced.json()["batchSize"] == 13, replaced.text
    _problem(app.put(path, tenants=[t], json={"batchSize": 14}, headers={"If-Match": other_form}), 412)
    _problem(app.put(path, tenants=[t], json={"batchSize": 14},
                     headers={"If-None-Match": replaced.headers["etag"].removeprefix("W/")}), 412)
    assert app.get(path, tenants=[t]).json()["batchSize"] == 13


def test_metrics_counted_by_one_instance_are_read_by_another(app: App, stack: Stack, tmp_path: Path) -> None:
    t = tenant("shared")
    # Only the client's events pass: the session app's monitor, at a minute's turn, publishes a
    # SYSTEM_PERFORMANCE event for each tenant active in that minute, which would count as a fourth.
    app.configure(t, {"filters": [{"sources": ["BACKEND_API"]}]})
    with app_running(app_env(stack, tmp_path, SYSTEM_PERFORMANCE_EVENTS="false"), tmp_path) as other:
        r = app.post("/events/bulk", json={"events": [event_body(t) for _ in range(3)]}, tenants=[t])
        assert r.status_code == 200 and r.json()["accepted"] == 3, r.text

        def seen() -> dict[str, Any] | None:
            body = other.get(f"/metrics/{t}", tenants=[t]).json()
            return body if body["totals"]["accepted"] == 3 else None

        # METRICS_FLUSH_MS (1 s) after the bulk, with room for a loaded machine.
        body = wait_for(seen, 15, 0.2, "the other instance reads the counts")
        assert body["windows"]["1m"]["accepted"] == 3, body["windows"]["1m"]


def test_metrics_windows_give_the_error_rate_retries_dead_letters_and_change_feed_delay(app: App) -> None:
    """README 'Metrics': each window has the error rate (refused or failed over processed), retries,
    dead letters and the change-feed delay beside the counts test_doc_promises_observability.py reads."""
    t = tenant("merr")
    app.configure(t, {"filters": [{"sources": ["BACKEND_API"]}]})  # the service's own events are filtered
    r = app.post("/events/bulk", tenants=[t], json={"events": [
        event_body(t), event_body(t), event_body(t), event_body(t, action="SMASH")]})
    assert r.status_code == 200 and (r.json()["accepted"], r.json()["rejected"]) == (3, 1), r.text

    def counted() -> dict[str, Any] | None:
        w = app.get(f"/metrics/{t}", tenants=[t]).json()["windows"]
        return w if w["1m"]["accepted"] == 3 and w["1m"]["rejected"] == 1 else None

    windows = wait_for(counted, 10, 0.3, "the bulk counted")
    for name in ("1m", "5m", "1h"):
        w = windows[name]
        assert w["errorRate"] == pytest.approx(0.25), (name, w)
        assert (w["retries"], w["deadLettered"], w["failed"]) == (0, 0, 0), (name, w)
        assert set(w["changeFeedDelayMs"]) >= {"p50", "p99", "max"}, (name, w)
        assert w["changeFeedDelayMs"]["max"] is None, (name, w)  # no change-feed event for this tenant


def test_a_redis_destination_in_cloudevents_format_stores_the_documented_view(app: App, stack: Stack) -> None:
    """README 'CloudEvents 1.0 view': specversion, id, source, type, time, subject, datacontenttype and
    the extensions tenantid, correlationid, action, schemaversion; the entry's `f` names the format."""
    t = tenant("rce")
    app.configure(t, {"filters": [{"sources": ["ARCHER_GRC"]}],
                      "destinations": [{"type": "redis", "config": {"format": "cloudevents"}}]})
    full = _kafka_event(t, timestamp="2026-01-31T12:00:00+01:00")
    bare = {k: v for k, v in _kafka_event(t).items() if k not in ("entityId", "entityType")}
    r = app.post("/events/bulk", json={"events": [full, bare]}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    entries = stack.redis().xrange(f"grc:{{{t}}}:events")
    assert [f[b"f"] for _, f in entries] == [b"cloudevents", b"cloudevents"], entries
    ce, ce_bare = (json.loads(f[b"e"]) for _, f in entries)
    named = ("specversion", "id", "source", "type", "subject", "datacontenttype", "tenantid", "correlationid",
             "action", "schemaversion")
    assert {k: ce[k] for k in named} == {
        "specversion": "1.0", "id": full["eventId"], "source": f"/tenants/{t}/sources/ARCHER_GRC",
        "type": "com.grc.RISK_UPDATED", "subject": "risk/RSK-9", "datacontenttype": "application/json",
        "tenantid": t, "correlationid": full["correlationId"], "action": "UPDATE", "schemaversion": "1.0"}, ce
    assert datetime.fromisoformat(ce["time"]) == datetime(2026, 1, 31, 11, tzinfo=UTC), ce
    assert ce["data"]["data"] == {"score": 12}, ce
    assert ce_bare["id"] == bare["eventId"] and "subject" not in ce_bare, ce_bare
    listed = app.get(f"/events/{t}", tenants=[t]).json()["events"]
    assert [e["format"] for e in listed] == ["cloudevents", "cloudevents"], listed


def test_a_bulk_with_an_event_that_could_not_be_parked_is_503_with_retry_after_and_the_same_body(
        stack: Stack, tmp_path: Path) -> None:
    """README 'POST /events/bulk': "503 + Retry-After with the same body when some event could not be
    delivered (resend those whose status is `failed`)"; 'Results and delivery': `failed` = nothing was
    acknowledged. Here the app's queue endpoint answers nothing, so the vector destination (delivered
    through its queue) fails and cannot be parked, while Redis delivers."""
    closed = f"QueueEndpoint=http://127.0.0.1:{free_port()}/"
    env = app_env(stack, tmp_path, SYSTEM_PERFORMANCE_EVENTS="false")
    for name in ("STORAGE_CONNECTION_STRING", "AzureWebJobsStorage"):
        env[name] = re.sub(r"QueueEndpoint=http://[^/;]+/", closed, env[name])
        assert closed in env[name], env[name]
    t, other = tenant("unparked"), tenant("parkfree")
    with app_running(env, tmp_path) as app:
        app.configure(t, {"destinations": [{"type": "redis"}, {"type": "vector"}]})
        events = [event_body(other), event_body(t), event_body(other)]  # `other`: the default, Redis only
        r = app.post("/events/bulk", json={"events": events}, tenants=[t, other])
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, (r.status_code, r.text[:500])
        results = r.json()["results"]
        assert [x["status"] for x in results] == ["accepted", "failed", "accepted"], results
        assert [x["eventId"] for x in results] == [e["eventId"] for e in events]
        outcomes = {d["destination"]: d["status"] for d in results[1]["destinations"]}
        assert outcomes["vector"] == "failed", outcomes


def test_a_disabled_destination_gets_nothing_and_its_topics_are_not_checked(app: App, stack: Stack) -> None:
    """README 'Destinations': each *enabled* destination gets every passing event; 'Topics': only an
    enabled Kafka destination (transport `kafka`) has its topics checked against the broker."""
    t, missing = tenant("dsoff"), f"never-{uuid.uuid4().hex[:8]}"
    put = app.put(f"/stream-config/{t}", tenants=[t], json={"topics": [missing], "destinations": [
        {"type": "redis"}, {"type": "kafka", "enabled": False}]})
    assert put.status_code == 201, put.text
    r = app.post("/events", json=event_body(t), tenants=[t])
    assert r.status_code == 201, r.text
    assert [d["destination"] for d in r.json()["destinations"]] == ["redis"], r.text
    assert [e["eventId"] for e in _mine(app, t)] == [r.json()["eventId"]]
    enabled = app.put(f"/stream-config/{t}", tenants=[t], json={"topics": [missing], "destinations": [
        {"type": "redis"}, {"type": "kafka"}]})
    assert enabled.status_code == 422, enabled.text
    assert [e["pointer"] for e in enabled.json()["errors"]] == ["/topics/0"], enabled.text
