"""Delivery guarantees on the path Azure runs: the retry queue drained by the runner's queue trigger
(decoding messages as the Functions host does), dead letters, replay, the vector queue.

Failing destinations are made from outside only: a tenant's Kafka destination over AMQP with no
Event Hubs configured (a non-transient refusal), or the breakable stack's Kafka broker stopped by
PID (sends time out: transient) and started again.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.system.harness import App, Stack, create_topic, event_body, tenant, topic_records, wait_for

# Queue retries every second (jitter off) so a dead letter comes within seconds. A Kafka attempt
# must outlast the breakable app's KAFKA_DELIVERY_TIMEOUT_MS (2 s) plus the 5 s report grace.
FAST = {"inProcessAttempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 1, "jitter": 0, "timeoutSeconds": 8}


def _deadletters(app: App, t: str, **params: str) -> list[dict[str, Any]]:
    r = app.get(f"/deadletters/{t}", params=params, tenants=[t])
    assert r.status_code == 200, r.text
    return [d for d in r.json()["deadLetters"] if d["eventType"] != "SYSTEM_ERROR"]


def _kafka_ids(stack: Stack, topic: str, event_id: str, expect: int = 1) -> list[str]:
    return [h["eventId"] for h in topic_records(stack.broker, topic, expect=expect) if h.get("eventId") == event_id]


def _parked_while_kafka_is_down(stack: Stack, app: App, prefix: str,
                                **over: Any) -> tuple[str, str, dict[str, Any]]:
    """A new tenant streaming to a new topic, an event posted while the broker is stopped (parked
    for the queue retries), the broker started again: (tenant, topic, event)."""
    t, topic = tenant(prefix), f"sys-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    app.configure(t, {"topics": [topic], "destinations": [
        {"type": "kafka", "retry": {**FAST, "attempts": 6, "maxBackoffSeconds": 4}}]})
    body = event_body(t, **over)
    stack.down("kafka")
    try:
        r = app.post("/events", json=body, tenants=[t])
        assert r.status_code == 201 and r.json()["destinations"][0]["status"] == "parked", r.text
    finally:
        stack.up("kafka")
    create_topic(stack.broker, topic)  # the stand-in broker keeps topics in memory only
    return t, topic, body


def test_a_refused_delivery_is_parked_then_dead_lettered_by_the_queue_trigger(app: App) -> None:
    """The issue's own reproduction: AMQP with no Event Hubs configured. The parked delivery is read
    by the runner's queue trigger (not poisoned), and dead-lettered at once: the refusal is not transient."""
    t = tenant("amqp")
    app.configure(t, {"destinations": [{"type": "kafka", "config": {"transport": "amqp"},
                                          "retry": {**FAST, "attempts": 1, "timeoutSeconds": 40}}]})
    body = event_body(t)
    r = app.post("/events", json=body, tenants=[t])
    assert r.status_code == 201, r.text
    assert [(d["destination"], d["status"]) for d in r.json()["destinations"]] == [("kafka", "parked")]
    [dead] = wait_for(lambda: _deadletters(app, t), 30, what="dead letter listed")
    assert dead["eventId"] == body["eventId"] and dead["destination"] == "kafka"
    assert dead["reason"] == "non-transient error" and dead["attempts"] == 1
    assert "EVENTHUBS" in dead["lastError"] and dead["event"]["data"] == body["data"]


def test_dead_lettered_after_the_configured_attempts_then_replayed_once_and_audited(
        breakable: tuple[Stack, App]) -> None:
    stack, app = breakable
    t, topic = tenant("dlq"), f"sys-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    app.configure(t, {"topics": [topic],
                      "destinations": [{"type": "kafka", "retry": {**FAST, "attempts": 2}}]})
    body = event_body(t)
    stack.down("kafka")
    try:
        r = app.post("/events", json=body, tenants=[t])
        assert r.status_code == 201, r.text
        assert r.json()["destinations"][0]["status"] == "parked"
        [dead] = wait_for(lambda: _deadletters(app, t), 60, what="dead letter listed")
    finally:
        stack.up("kafka")
    # Two queue attempts by the queue trigger, each a transient failure, then the dead letter.
    assert dead["eventId"] == body["eventId"] and dead["reason"] == "retries exhausted" and dead["attempts"] == 2
    assert "_MSG_TIMED_OUT" in dead["lastError"] or "timed out" in dead["lastError"].lower(), dead["lastError"]
    # Counted as the trigger ran them (metrics are written after the dead letter's notice went out).
    wait_for(lambda: app.get(f"/metrics/{t}", tenants=[t]).json()["totals"]["retries"] >= 2, 20,
             what="both queue retries counted")

    create_topic(stack.broker, topic)  # the stand-in broker keeps topics in memory only
    r = app.post(f"/deadletters/{t}/replay", json={"ids": [dead["id"]]}, tenants=[t])
    assert r.status_code == 200, r.text
    assert r.json()["counts"] == {"delivered": 1}
    assert _kafka_ids(stack, topic, body["eventId"]) == [body["eventId"]]  # delivered once
    again = app.post(f"/deadletters/{t}/replay", json={"ids": [dead["id"]]}, tenants=[t]).json()
    assert again["counts"] == {"already replayed": 1}
    assert _kafka_ids(stack, topic, body["eventId"]) == [body["eventId"]]
    assert _deadletters(app, t) == []  # replayed records are no longer listed by default
    [listed] = _deadletters(app, t, includeReplayed="true")
    assert listed["replayed"] is True and listed["replayResult"] == "delivered"

    trail = app.get(f"/audit/{t}", tenants=[t]).json()["items"]
    replays = [a for a in trail if a["action"] == "deadletters.replay"]
    assert [a["after"]["counts"] for a in replays] == [{"already replayed": 1}, {"delivered": 1}]
    first = replays[1]
    assert first["actor"] == "system-test" and first["at"] and first["before"] == {"ids": [dead["id"]]}
    assert first["after"]["results"] == [{"id": dead["id"], "result": "delivered"}]


def test_a_destination_that_recovers_during_its_retries_gets_the_event_once(breakable: tuple[Stack, App]) -> None:
    stack, app = breakable
    t, topic, body = _parked_while_kafka_is_down(stack, app, "heal")
    wait_for(lambda: _kafka_ids(stack, topic, body["eventId"], expect=1), 60, what="delivered by a queue retry")
    totals = wait_for(lambda: (m := app.get(f"/metrics/{t}", tenants=[t]).json()["totals"])
                      ["destinations"]["kafka"].get("delivered") and m, 20, what="delivery counted")
    assert totals["retries"] >= 1 and totals["deadLettered"] == 0
    assert _kafka_ids(stack, topic, body["eventId"]) == [body["eventId"]]  # once
    assert _deadletters(app, t, includeReplayed="true") == []


def test_an_event_too_large_for_a_queue_message_is_parked_and_delivered_whole(
        breakable: tuple[Stack, App]) -> None:
    """A queue message holds 64 KiB: a larger parked event is stored in the dead-letter table and its
    message carries the key (shared/delivery/retry_queue.py). The runner's queue trigger reads it back
    and delivers the whole event once; nothing is dead-lettered or poisoned."""
    stack, app = breakable
    findings = [f"finding {i}: control MFA failed on host {i % 97}" for i in range(6000)]
    data = {"control": "MFA", "result": "fail", "findings": findings}
    assert len(json.dumps(data)) > 4 * 64 * 1024  # four queue messages
    t, topic, body = _parked_while_kafka_is_down(stack, app, "bigpark", data=data)

    def delivered() -> list[dict[str, str]]:
        return [h for h in topic_records(stack.broker, topic, expect=1, with_value=True)
                if h.get("eventId") == body["eventId"]]

    [record] = wait_for(delivered, 60, what="the large event delivered by a queue retry")
    assert json.loads(record["value"])["data"] == body["data"]
    assert len(delivered()) == 1  # once
    assert _deadletters(app, t) == [] and stack.poison_counts().get("delivery-retries", 0) == 0


def test_a_destination_that_fails_slowly_is_paused_and_the_next_requests_are_answered_at_once(
        breakable: tuple[Stack, App]) -> None:
    """docs/delivery.md 'Paused destinations': with the broker stopped, a Kafka send fails only when
    the message times out (2 s on the breakable app). Each request used to wait for that twice (two
    in-process attempts); now the first slow failure pauses the tenant's Kafka deliveries, so one
    request at most waits, once, and the others are parked at once. All are delivered once the broker
    is back."""
    stack, app = breakable
    t, topic = tenant("pause"), f"sys-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    app.configure(t, {"topics": [topic], "destinations": [
        {"type": "kafka", "retry": {**FAST, "inProcessAttempts": 2, "attempts": 8, "maxBackoffSeconds": 2}}]})
    bodies = [event_body(t) for _ in range(4)]
    took: list[float] = []
    stack.down("kafka")
    try:
        for body in bodies:
            start = time.monotonic()
            r = app.post("/events", json=body, tenants=[t])
            took.append(time.monotonic() - start)
            assert r.status_code == 201 and r.json()["destinations"][0]["status"] == "parked", r.text
    finally:
        stack.up("kafka")
    assert len([x for x in took if x >= 1.0]) <= 1 and max(took) < 4.0, took
    assert f"destination kafka paused for tenant {t}" in app.log()
    create_topic(stack.broker, topic)
    for body in bodies:
        wait_for(lambda: _kafka_ids(stack, topic, body["eventId"], expect=len(bodies)), 60,
                 what="delivered by a queue retry")
    got = [h["eventId"] for h in topic_records(stack.broker, topic, expect=len(bodies))]
    assert sorted(got) == sorted(b["eventId"] for b in bodies)  # each once
    assert _deadletters(app, t, includeReplayed="true") == []


def test_the_vector_queue_path_indexes_what_was_published(app: App) -> None:
    t = tenant("vec")
    app.configure(t, {"destinations": [{"type": "redis"}, {"type": "vector"}]})
    events = [
        event_body(t, eventType="RISK_CREATED", source="ARCHER_GRC", action="CREATE", entityType="risk",
                   entityId="r-1",
                   data={"title": "Vendor data breach exposes customer records", "severity": "high"}),
        event_body(t, eventType="CONTROL_TESTED", source="BACKEND_API", action="TEST", entityType="control",
                   entityId="c-1", data={"title": "Quarterly firewall rule review", "result": "pass"}),
    ]
    r = app.post("/events/bulk", json={"events": events}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    vector = [d for res in r.json()["results"] for d in res["destinations"] if d["destination"] == "vector"]
    assert [d["status"] for d in vector] == ["delivered", "delivered"]  # queued for `index_vectors`

    def top_hit() -> str | None:
        hits = app.get(f"/search/{t}", params={"q": "customer data leak at a supplier", "k": "2"},
                       tenants=[t]).json().get("hits", [])
        return hits[0]["eventId"] if len(hits) == 2 else None

    assert wait_for(top_hit, 60, what="both events indexed by the queue trigger") == events[0]["eventId"]


def test_a_failed_delivery_is_announced_as_one_system_error_in_the_tenants_stream(app: App) -> None:
    """The pipeline's failure hook, seen by a client: a request whose Kafka delivery is refused (AMQP
    with no Event Hubs) and whose Redis delivery succeeds puts one SYSTEM_ERROR about kafka, naming
    the event, in the tenant's Redis stream."""
    t = tenant("syserr")
    app.configure(t, {"destinations": [
        {"type": "redis"},
        {"type": "kafka", "config": {"transport": "amqp"}, "retry": {**FAST, "attempts": 1, "timeoutSeconds": 40}}]})
    body = event_body(t)
    r = app.post("/events", json=body, tenants=[t])
    assert r.status_code == 201, r.text
    assert {d["destination"]: d["status"] for d in r.json()["destinations"]} == {"redis": "delivered",
                                                                                 "kafka": "parked"}

    def about_this_event() -> list[dict[str, Any]]:
        got = app.get(f"/events/{t}", params={"eventType": "SYSTEM_ERROR"}, tenants=[t])
        assert got.status_code == 200, got.text
        return [e["event"] for e in got.json()["events"]
                if e["event"]["data"].get("sampleEventIds") == [body["eventId"]]
                and e["event"]["data"].get("parked") == 1]

    [notice] = wait_for(about_this_event, 30, what="the request's SYSTEM_ERROR in the tenant's stream")
    assert notice["data"]["destination"] == "kafka" and notice["entityId"] == "kafka"
    assert notice["data"]["count"] == 1 and "EVENTHUBS" in notice["data"]["error"]


def test_a_tenants_events_share_a_kafka_partition_in_the_order_posted(app: App, stack: Stack) -> None:
    """README 'Kafka / Event Hubs destination': the record key is the tenant, so a tenant's events go to
    one partition, in the order they were delivered; here bulks naming three tenants, interleaved."""
    tenants, topic = [tenant("order") for _ in range(3)], f"sys-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic, partitions=3)
    for t in tenants:
        app.configure(t, {"topics": [topic], "destinations": [{"type": "kafka"}]})
    posted: dict[str, list[str]] = {t: [] for t in tenants}
    for _ in range(4):
        events = [event_body(t) for _ in range(3) for t in tenants]  # t1, t2, t3, t1, ...
        r = app.post("/events/bulk", json={"events": events}, tenants=tenants)
        assert r.status_code == 200 and r.json()["accepted"] == 9, r.text
        for e in events:
            posted[e["tenantId"]].append(e["eventId"])
    records = topic_records(stack.broker, topic, expect=36, with_place=True)
    assert len(records) == 36
    for t in tenants:
        mine = [r for r in records if r["tenantId"] == t]
        assert {r["key"] for r in mine} == {t} and len({r["partition"] for r in mine}) == 1, mine
        assert [r["eventId"] for r in sorted(mine, key=lambda r: int(r["offset"]))] == posted[t]
