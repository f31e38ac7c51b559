"""Events -> Kafka records (pure): every record's headers are its own event's, whatever the batch shares."""
from __future__ import annotations

from typing import Any

from shared.core.destination_options import KafkaOptions
from shared.core.events import Action
from shared.core.streamconfig import StreamConfig
from shared.destinations.event_records import Outcome, merge, plan_records
from tests.kafka_helpers import big_event, make_event


def cfg(**kw: Any) -> StreamConfig:
    return StreamConfig.model_validate({"tenantId": "tenant-a", "destinations": [{"type": "kafka"}], **kw})


def expected_headers(ev: Any) -> list[tuple[str, str]]:
    """The documented header set and order, built field by field (str values: UTF-8 on the wire)."""
    h = [("eventId", ev.eventId), ("eventType", ev.eventType.value), ("tenantId", ev.tenantId),
         ("correlationId", ev.correlationId), ("source", ev.source.value), ("action", ev.action.value),
         ("schemaVersion", ev.schemaVersion)]
    if ev.entityType:
        h.append(("entityType", ev.entityType))
    if ev.entityId:
        h.append(("entityId", ev.entityId))
    h.append(("content-type", "application/json"))
    return h


def test_each_record_carries_its_own_events_headers_in_a_mixed_batch() -> None:
    # Events that share some header values and differ in others, interleaved, some with one
    # correlation id: the batch-shared header tuples must never leak from one event to another.
    events = [
        make_event("tenant-a", "RISK_CREATED", "BACKEND_API", correlationId="corr-1"),
        make_event("tenant-b", "RISK_CREATED", "BACKEND_API", correlationId="corr-1"),
        make_event("tenant-a", "POLICY_VIOLATION", "BACKEND_API", entity_id="risk-1"),
        make_event("tenant-a", "RISK_CREATED", "COSMOS_DB", entity_id="risk-2"),
        make_event("tenant-a", "RISK_CREATED", "BACKEND_API", correlationId="corr-1"),
        make_event("tenant-b", "RISK_CREATED", "BACKEND_API", entity_id="risk-3").model_copy(
            update={"schemaVersion": "2.0", "action": Action.UPDATE}),
        make_event("tenant-b", "RISK_CREATED", "BACKEND_API", entity_id="risk-4"),
    ]
    plan = plan_records(events, KafkaOptions(), cfg(topics=["t1"]), "default")
    assert [r.event for r in plan.records] == list(range(len(events)))
    for rec, ev in zip(plan.records, events):
        assert rec.headers == expected_headers(ev)
        assert rec.value == ev.to_json()
        assert rec.key == ev.tenantId
        assert rec.topic == "t1"
    assert plan.one_per_event


def test_cloudevents_records_keep_the_base_headers_then_ce_headers() -> None:
    ev = make_event("tenant-a", entity_id="risk-1")
    [rec] = plan_records([ev], KafkaOptions(format="cloudevents"), cfg(), "default").records
    base = expected_headers(ev)[:-1]
    assert rec.headers[:len(base)] == base
    assert rec.headers[-1] == ("content-type", "application/json")
    assert ("ce_id", ev.eventId) in rec.headers


def test_entity_key_and_plan_shapes_for_merge() -> None:
    events = [make_event("tenant-a", entity_id="risk-1"), make_event("tenant-a")]
    plan = plan_records(events, KafkaOptions(key="entityId"), cfg(topics=["t1", "t2"]), "default")
    assert [(r.event, r.topic, r.key) for r in plan.records] == [
        (0, "t1", "risk-1"), (0, "t2", "risk-1"), (1, "t1", "tenant-a"), (1, "t2", "tenant-a")]
    assert not plan.one_per_event  # two records per event: merge takes the general path
    outcomes = [Outcome(True, "t1/0@1"), Outcome(False, "boom", True), Outcome(True, "t1/0@2"),
                Outcome(True, "t2/0@2")]
    first, second = merge("kafka", 2, plan, outcomes)
    assert (first.status, first.error, first.transient) == ("failed", "t2: boom", True)
    assert (second.status, second.ref) == ("delivered", "t1/0@2,t2/0@2")


def test_refused_or_unrouted_events_take_the_general_merge() -> None:
    events = [make_event("tenant-a"), big_event("tenant-a", 1_000_001), make_event("tenant-a")]
    plan = plan_records(events, KafkaOptions(), cfg(), "default")
    assert [r.event for r in plan.records] == [0, 2] and not plan.one_per_event
    dels = merge("kafka", 3, plan, [Outcome(True, "default/0@1"), Outcome(False, "late", False)])
    assert [d.status for d in dels] == ["delivered", "failed", "failed"]
    assert dels[0].ref == "default/0@1" and "1000000 bytes" in (dels[1].error or "")
    assert dels[2].error == "default: late" and not dels[2].transient


def test_one_record_per_event_merge_reports_each_events_own_outcome() -> None:
    events = [make_event("tenant-a") for _ in range(3)]
    plan = plan_records(events, KafkaOptions(), cfg(), "default")
    assert plan.one_per_event
    dels = merge("kafka", 3, plan, [Outcome(True, "default/0@7"), Outcome(False, "_MSG_TIMED_OUT: x", True),
                                    Outcome(True, "default/1@3")])
    assert [(d.status, d.ref, d.error, d.transient) for d in dels] == [
        ("delivered", "default/0@7", None, False), ("failed", None, "default: _MSG_TIMED_OUT: x", True),
        ("delivered", "default/1@3", None, False)]
