"""Promises of docs/delivery.md, docs/change-capture.md and README ("Delivery guarantees", "Change
capture from Cosmos DB") that no other system test proved, checked from outside the running app:

- a document created before its container's change-feed processor started is a backfill: UPDATED with
  `metadata.firstSeen: true`, never CREATED (and without `createdAt` the last write decides);
- the mapping rules' finer points: a soft delete is announced the first time only, a hard delete not at
  all; control test results in other words (passed, effective, anything else is a test, not a failure);
  gaps and violations by `gapId`/`violationId`, closed ones not open, a reopened gap detected again;
  an assessment's phase from `active`, from `startedAt` alone, and STARTED again when reopened;
- the shape of one change's events: one correlationId, UUIDv8 ids whose first 48 bits are the
  document's `_ts`, `metadata.changeFeed` (lsn, etag, ts, version), `data` without Cosmos' system
  fields, `timestamp` from the document; the change-feed delay in `GET /metrics/{tenantId}`;
- a dead letter is announced by one SYSTEM_ERROR naming it (deadLetterId, attempts, lastError,
  sampleEventIds), a system event is never parked nor announced in turn, the metrics count the dead
  letter, and a replay naming an id twice replays it once;
- a parked delivery whose destination was removed from the config meanwhile is dead-lettered with the
  reason `destination not configured`.
"""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tests.system.cosmos import FEED_TIMEOUT, Platform, events, iso, settled, types_by_entity, wait_events
from tests.system.harness import App, Stack, create_topic, event_body, tenant, topic_records, wait_for


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# -- Created or updated: the processor's start (docs/change-capture.md) ----------------------------------

def test_a_document_created_before_the_processor_started_is_updated_first_seen_not_created(app: App) -> None:
    """'a document created before it is a backfill: RISK_UPDATED / CONTROL_UPDATED with
    `metadata.firstSeen: true`, even untouched since, so a first deployment ... never announces old
    entities as new. `createdAt` is compared with the start; without `createdAt`, the last write (`_ts`).'
    A backfilled risk edited past `open` before it was seen gets no inferred RISK_STATUS_CHANGED either:
    that comes only with RISK_CREATED."""
    t = tenant("bfill")
    p = Platform(app.env)
    old, later = "2020-03-01T09:00:00Z", "2021-06-30T12:00:00+02:00"
    p.container("risks").create_item({"id": "r-old", "tenantId": t, "title": "Legacy", "status": "open",
                                      "createdAt": old, "updatedAt": old})
    p.container("risks").create_item({"id": "r-old-edited", "tenantId": t, "title": "Legacy 2",
                                      "status": "closed", "createdAt": old, "updatedAt": later})
    p.container("controls").create_item({"id": "c-old", "tenantId": t, "name": "Backups",
                                         "status": "effective",
                                         "createdAt": old, "updatedAt": old,
                                         "lastTest": {"result": "fail", "testedAt": old}})
    # No createdAt: written now, after the processor's start, so a creation.
    p.container("risks").create_item({"id": "r-no-created", "tenantId": t, "title": "New", "status": "open",
                                      "updatedAt": iso()})
    evs = settled(app, p, t, ("risks", "controls"))
    assert types_by_entity(evs) == {
        "r-old": ["RISK_UPDATED"], "r-old-edited": ["RISK_UPDATED"],
        "c-old": ["CONTROL_UPDATED", "CONTROL_TESTED", "CONTROL_FAILED"], "r-no-created": ["RISK_CREATED"],
    }, evs
    for e in evs:
        backfill = e["entityId"] != "r-no-created"
        assert (e["metadata"].get("firstSeen") is True) is backfill, e
        assert e["action"] == ("UPDATE" if e["eventType"].endswith("_UPDATED") else
                               "CREATE" if e["eventType"].endswith("_CREATED") else "TEST"), e
    assert {e["data"]["status"] for e in evs if e["entityId"] == "r-old-edited"} == {"closed"}


# -- Mapping rules: the finer points -----------------------------------------------------------------

def test_mapping_rules_deletes_test_results_gaps_violations_and_assessment_phases(app: App) -> None:
    """docs/change-capture.md "Document conventions" and "Mapping rules": RISK_DELETED 'first time seen
    so'; 'Hard deletes are not in the change feed and produce no event'; a test result 'passed' /
    'effective' is a pass, 'other values count as a test, not a failure'; 'A gap or violation is
    identified by its `id` (else `gapId`/`violationId`...); one whose `status` is closed, resolved,
    remediated or dismissed is not open'; COMPLIANCE_GAP_DETECTED and POLICY_VIOLATION 'one per open
    gap/violation not open at the last sighting' (reopened: detected again); an assessment's phase
    from `active` or, without `status`, from `startedAt`; ASSESSMENT_STARTED 'also on first sighting,
    and when reopened'."""
    t = tenant("rules")
    p = Platform(app.env)
    kinds = ("risks", "controls", "assessments", "compliance", "policies")
    docs: dict[str, dict[str, Any]] = {
        "r-del": p.create("risks", {"id": "r-del", "tenantId": t, "title": "Fraud", "status": "open"}),
        "r-hard": p.create("risks", {"id": "r-hard", "tenantId": t, "title": "Typo", "status": "open"}),
        "c-passed": p.create("controls", {"id": "c-passed", "tenantId": t, "name": "MFA",
                                          "lastTest": {"result": "Passed", "testedAt": iso()}}),
        "c-effective": p.create("controls", {"id": "c-effective", "tenantId": t, "name": "SoD",
                                             "lastTest": {"result": "EFFECTIVE", "testedAt": iso()}}),
        "c-odd": p.create("controls", {"id": "c-odd", "tenantId": t, "name": "DLP",
                                       "lastTest": {"result": "Inconclusive", "testedAt": iso()}}),
        "asm-active": p.create("assessments", {"id": "asm-active", "tenantId": t, "title": "SOX",
                                               "status": "Active"}),
        "asm-implicit": p.create("assessments", {"id": "asm-implicit", "tenantId": t, "title": "DORA",
                                                 "startedAt": iso()}),
        "cmp": p.create("compliance", {"id": "cmp", "tenantId": t, "status": "non_compliant", "gaps": [
            {"gapId": "G-7", "requirement": "A.5.1", "severity": "high",
             "detectedAt": "2026-02-03T10:00:00+05:30"},
            {"id": "g-resolved", "requirement": "A.6.1", "severity": "low", "status": "Resolved"}]}),
        "pol": p.create("policies", {"id": "pol", "tenantId": t, "name": "Access", "violations": [
            {"id": "v-dismissed", "severity": "low", "status": "dismissed"},
            {"violationId": "V-9", "severity": "high"}]}),
    }
    first = settled(app, p, t, kinds)
    assert types_by_entity(first) == {
        "r-del": ["RISK_CREATED"], "r-hard": ["RISK_CREATED"],
        "c-passed": ["CONTROL_CREATED", "CONTROL_TESTED"],
        "c-effective": ["CONTROL_CREATED", "CONTROL_TESTED"],
        "c-odd": ["CONTROL_CREATED", "CONTROL_TESTED"],
        "asm-active": ["ASSESSMENT_STARTED"], "asm-implicit": ["ASSESSMENT_STARTED"],
        "cmp": ["COMPLIANCE_STATUS_CHANGED", "COMPLIANCE_GAP_DETECTED"], "pol": ["POLICY_VIOLATION"],
    }, first
    results = {e["entityId"]: e["data"]["result"] for e in first if e["eventType"] == "CONTROL_TESTED"}
    assert results == {"c-passed": "pass", "c-effective": "pass", "c-odd": "inconclusive"}, results
    [gap] = [e["data"] for e in first if e["eventType"] == "COMPLIANCE_GAP_DETECTED"]
    assert gap["gapId"] == "G-7" and gap["gap"]["requirement"] == "A.5.1", gap
    # `timestamp` is when it happened in the document: the gap's detectedAt, the phase's startedAt.
    detected = next(e for e in first if e["eventType"] == "COMPLIANCE_GAP_DETECTED")["timestamp"]
    assert instant(detected) == instant("2026-02-03T04:30:00Z"), detected
    started = next(e for e in first if e["entityId"] == "asm-implicit")["timestamp"]
    assert instant(started) == instant(docs["asm-implicit"]["startedAt"]), started
    [violation] = [e["data"] for e in first if e["eventType"] == "POLICY_VIOLATION"]
    assert violation["violationId"] == "V-9", violation

    # Soft delete, hard delete, the gap and the violation closed, the assessment completed.
    docs["r-del"] = p.update("risks", docs["r-del"], isDeleted=True, ttl=86400)
    p.container("risks").delete_item("r-hard", partition_key=t)
    docs["cmp"] = p.update("compliance", docs["cmp"], gaps=[
        {**docs["cmp"]["gaps"][0], "status": "closed"}, docs["cmp"]["gaps"][1]])
    docs["pol"] = p.update("policies", docs["pol"], violations=[
        docs["pol"]["violations"][0], {**docs["pol"]["violations"][1], "status": "remediated"}])
    docs["asm-active"] = p.update("assessments", docs["asm-active"], status="Done", completedAt=iso())
    second = settled(app, p, t, kinds)[len(first):]
    assert sorted((e["entityId"], e["eventType"], e["action"]) for e in second) == [
        ("asm-active", "ASSESSMENT_COMPLETED", "STATUS_CHANGE"), ("r-del", "RISK_DELETED", "DELETE")], second

    # The deleted risk written again (still deleted), the gap reopened, the assessment reopened.
    docs["r-del"] = p.update("risks", docs["r-del"], title="Fraud (archived)")
    docs["cmp"] = p.update("compliance", docs["cmp"], gaps=[
        {**docs["cmp"]["gaps"][0], "status": "open"}, docs["cmp"]["gaps"][1]])
    docs["asm-active"] = p.update("assessments", docs["asm-active"], status="in-progress")
    docs["pol"] = p.update("policies", docs["pol"], violations=[
        docs["pol"]["violations"][0], {**docs["pol"]["violations"][1], "status": "open"}])
    third = settled(app, p, t, kinds)[len(first) + len(second):]
    assert sorted((e["entityId"], e["eventType"]) for e in third) == [
        ("asm-active", "ASSESSMENT_STARTED"), ("cmp", "COMPLIANCE_GAP_DETECTED"),
        ("pol", "POLICY_VIOLATION")], third
    # A violation reopened is detected again, as a gap is (README "Mapping rules").
    assert next(e for e in third if e["eventType"] == "POLICY_VIOLATION")["data"]["violationId"] == "V-9"
    reopened = next(e for e in third if e["eventType"] == "ASSESSMENT_STARTED")["data"]
    assert reopened["previousPhase"] == "completed", reopened
    assert next(e for e in third if e["eventType"] == "COMPLIANCE_GAP_DETECTED")["data"]["gapId"] == "G-7"
    # Nothing ever about the hard-deleted risk but its creation.
    assert [e["eventType"] for e in events(app, t, source="COSMOS_DB") if e["entityId"] == "r-hard"] == [
        "RISK_CREATED"]


# -- The events of one change -------------------------------------------------------------------------

def test_one_changes_events_share_a_correlation_id_and_carry_the_document_and_its_feed_position(
        app: App) -> None:
    """docs/change-capture.md: 'Base events carry the document without Cosmos' system fields as `data`';
    '`timestamp` is when it happened in the document (`updatedAt`, `lastTest.testedAt`, ...)';
    '`metadata.changeFeed` holds `lsn`, `etag`, `ts`, `version`; all events of one change share a
    `correlationId`'; '`eventId` is a UUIDv8 made from the document's `_ts` (first 48 bits ...)';
    README 'Delay, RU and metrics': the delay of every change goes into `changeFeedDelayMs` in
    `GET /metrics/{tenantId}`."""
    t = tenant("shape")
    p = Platform(app.env)
    now = datetime.now(UTC).replace(microsecond=0)
    tested_at = (now - timedelta(hours=3)).astimezone(timezone(timedelta(hours=2))).isoformat()
    written = p.container("controls").create_item({
        "id": "c-shape", "tenantId": t, "name": "Firewall review", "status": "effective", "owner": "secops",
        "createdAt": iso(now), "updatedAt": iso(now),
        "lastTest": {"result": "Deficient", "testedAt": tested_at}})
    evs = wait_events(app, t, 3, FEED_TIMEOUT, source="COSMOS_DB")
    assert [e["eventType"] for e in evs] == ["CONTROL_CREATED", "CONTROL_TESTED", "CONTROL_FAILED"], evs
    assert len({e["correlationId"] for e in evs}) == 1 and len({e["eventId"] for e in evs}) == 3, evs
    for e in evs:
        eid = uuid.UUID(e["eventId"])
        assert eid.version == 8 and eid.int >> 80 == written["_ts"] * 1000, e["eventId"]
        feed = e["metadata"]["changeFeed"]
        assert isinstance(feed["lsn"], int) and feed["version"] == f"lsn:{feed['lsn']}", feed
        assert (feed["etag"], feed["ts"]) == (written["_etag"], written["_ts"]), feed
        assert (e["source"], e["entityType"], e["entityId"]) == ("COSMOS_DB", "control", "c-shape"), e
    created, tested, failed = evs
    assert created["data"] == {k: v for k, v in written.items() if not k.startswith("_")}, created["data"]
    assert instant(created["timestamp"]) == now, created["timestamp"]
    assert instant(tested["timestamp"]) == now - timedelta(hours=3), tested["timestamp"]
    assert tested["data"]["result"] == failed["data"]["result"] == "fail", (tested["data"], failed["data"])

    def delay() -> dict[str, Any] | None:
        r = app.get(f"/metrics/{t}", tenants=[t])
        assert r.status_code == 200, r.text
        window: dict[str, Any] = r.json()["windows"]["1h"]
        return window if window["changeFeedDelayMs"]["max"] is not None else None

    window = wait_for(delay, 30, what="the change-feed delay in the tenant's metrics")
    assert window["accepted"] >= 3 and 0 <= window["changeFeedDelayMs"]["mean"] < FEED_TIMEOUT * 1000, window


# -- Dead letters: the notice, no feedback loop, the counts, a replay naming an id twice ------------------

FAST = {"inProcessAttempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 1, "jitter": 0,
        "timeoutSeconds": 40}


def _dead(app: App, t: str, **params: str) -> list[dict[str, Any]]:
    r = app.get(f"/deadletters/{t}", params=params, tenants=[t])
    assert r.status_code == 200, r.text
    return list(r.json()["deadLetters"])


def _system_errors(app: App, t: str) -> list[dict[str, Any]]:
    r = app.get(f"/events/{t}", params={"eventType": "SYSTEM_ERROR", "limit": "1000"}, tenants=[t])
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()["events"]]


def test_a_dead_letter_is_announced_once_counted_and_a_replay_naming_it_twice_delivers_it_once(
        app: App, stack: Stack) -> None:
    """docs/delivery.md "Dead letter": 'A `SYSTEM_ERROR` event (source `EVENT_STREAMING`, `entityType`
    destination, `data`: destination, error, `sampleEventIds` = [the failed event's id], `deadLetterId`,
    `attempts`, `lastError`) then goes through the pipeline for the tenant ...: they are never parked and a
    system event never causes another one'; 'Metrics: ... `deadLettered` dead letters, per destination
    `parked`'; replay: 'An id named twice is replayed once.'

    The tenant's Kafka destination is refused (AMQP with no Event Hubs: non-transient), so the
    SYSTEM_ERROR events about it fail at Kafka too: that must raise no further notice nor dead letter."""
    t = tenant("dlnote")
    app.configure(t, {"destinations": [
        {"type": "redis"},
        {"type": "kafka", "config": {"transport": "amqp"}, "retry": {**FAST, "attempts": 1}}]})
    body = event_body(t)
    start = time.monotonic()
    r = app.post("/events", json=body, tenants=[t])
    assert r.status_code == 201, r.text
    assert {d["destination"]: d["status"] for d in r.json()["destinations"]} == {"redis": "delivered",
                                                                                 "kafka": "parked"}
    [dead] = wait_for(lambda: _dead(app, t), 60, what="the dead letter")
    took = time.monotonic() - start
    assert (dead["eventId"], dead["destination"], dead["reason"]) == (body["eventId"], "kafka",
                                                                      "non-transient error"), dead
    # 'PartitionKey = tenant, RowKey = `{eventId}__{destination}`': the record's id.
    assert (dead["id"], dead["kind"]) == (f"{body['eventId']}__kafka", "delivery"), dead
    assert dead["firstFailureAt"] and dead["deadLetteredAt"] and dead["event"]["data"] == body["data"], dead

    def notice() -> list[dict[str, Any]]:
        return [e for e in _system_errors(app, t) if e["data"].get("deadLetterId") == dead["id"]]

    [announced] = wait_for(notice, 30, what="the dead letter's SYSTEM_ERROR")
    assert (announced["source"], announced["entityType"], announced["entityId"]) == (
        "EVENT_STREAMING", "destination", "kafka"), announced
    data = announced["data"]
    assert data["destination"] == "kafka" and data["sampleEventIds"] == [body["eventId"]], data
    assert data["attempts"] == dead["attempts"] == 1 and data["error"] == "non-transient error", data
    assert "EVENTHUBS" in data["lastError"] and data["lastError"] == dead["lastError"][:1000], data

    # Give a parked SYSTEM_ERROR at least as long as the event's own dead letter took (and then some).
    time.sleep(max(5.0, 2 * took))
    notices = _system_errors(app, t)
    # One notice of the request's failure (parked: 1), one of the dead letter; none about a notice.
    assert len(notices) == 2, notices
    assert all(n["data"]["sampleEventIds"] == [body["eventId"]] for n in notices), notices
    assert [d["eventId"] for d in _dead(app, t, includeReplayed="true")] == [body["eventId"]]
    def counted() -> dict[str, Any] | None:
        got: dict[str, Any] = app.get(f"/metrics/{t}", tenants=[t]).json()["totals"]
        return got if got["deadLettered"] else None

    totals = wait_for(counted, 20, what="the dead letter counted")
    assert totals["deadLettered"] == 1 and totals["destinations"]["kafka"]["parked"] == 1, totals

    # The operator fixes the destination and replays, naming the record twice: delivered once.
    topic = f"sys-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    app.configure(t, {"topics": [topic], "destinations": [{"type": "redis"}, {"type": "kafka"}]})
    r = app.post(f"/deadletters/{t}/replay", json={"ids": [dead["id"], dead["id"]]}, tenants=[t])
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [{"id": dead["id"], "result": "delivered"}], r.text
    got = [h["eventId"] for h in topic_records(stack.broker, topic, expect=1, settle=1.0)
           if h.get("eventId") == body["eventId"]]
    assert got == [body["eventId"]], got


def test_a_parked_delivery_whose_destination_was_removed_is_dead_lettered_as_not_configured(
        breakable: tuple[Stack, App]) -> None:
    """docs/delivery.md "Dead letter": the reasons are `retries exhausted`, `non-transient error` and
    `destination not configured`; the last is what an operator sees when a tenant's destination was
    removed from its stream config while a delivery to it waited in the retry queue: the queue trigger
    dead-letters it (nothing dropped silently) and announces it."""
    stack, app = breakable
    t, topic = tenant("unconf"), f"sys-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    # The first queue retry comes 8 s after the park (jitter off): time enough to change the config.
    app.configure(t, {"topics": [topic], "destinations": [
        {"type": "redis"},
        {"type": "kafka", "retry": {**FAST, "attempts": 3, "backoffSeconds": 8, "maxBackoffSeconds": 8,
                                    "timeoutSeconds": 8}}]})
    body = {"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
            "entityId": "rsk-1", "data": {"score": 7}, "eventId": f"ev-{uuid.uuid4().hex[:12]}"}
    stack.down("kafka")
    try:
        r = app.post("/events", json=body, tenants=[t])
        assert r.status_code == 201, r.text
        assert {d["destination"]: d["status"] for d in r.json()["destinations"]} == {"redis": "delivered",
                                                                                     "kafka": "parked"}
        app.configure(t, {"destinations": [{"type": "redis"}]})  # Kafka removed
    finally:
        stack.up("kafka")
    [dead] = wait_for(lambda: [d for d in _dead(app, t) if d["eventType"] != "SYSTEM_ERROR"], 60,
                      what="the parked delivery dead-lettered")
    assert (dead["eventId"], dead["destination"], dead["reason"]) == (
        body["eventId"], "kafka", "destination not configured"), dead
    [announced] = wait_for(lambda: [e for e in _system_errors(app, t)
                                    if e["data"].get("deadLetterId") == dead["id"]], 30,
                           what="the dead letter's SYSTEM_ERROR")
    assert announced["data"]["error"] == "destination not configured", announced
    create_topic(stack.broker, topic)  # the stand-in broker keeps topics in memory only
    sent = [h for h in topic_records(stack.broker, topic, settle=1.0) if h.get("eventId") == body["eventId"]]
    assert sent == [], sent
