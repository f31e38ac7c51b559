"""The hot path's shortcuts build exactly what the validated models and pydantic's serializer would:
`Delivery.of`, `EventResult.of`, `Event.to_json` and the API's result bodies (docs/performance.md)."""
from __future__ import annotations

import orjson
import pytest

from shared.api.events import delivery_body, result_body
from shared.core.enrich import enrich, now_iso
from shared.core.events import Event, EventIn
from shared.core.results import Delivery, EventResult, FieldError

DELIVERIES = [
    Delivery.of("redis", "delivered", "1700000000000-0"),
    Delivery.of("kafka", "failed", None, "broker down", True),
    Delivery.of("analytics", "parked", None, "timeout"),
]


@pytest.mark.parametrize("d", DELIVERIES)
def test_delivery_of_equals_the_validated_model(d: Delivery) -> None:
    validated = Delivery.model_validate(d.model_dump())
    assert d == validated and hash(d) == hash(validated)
    assert delivery_body(d) == validated.model_dump(exclude_none=True)
    assert list(delivery_body(d)) == list(validated.model_dump(exclude_none=True))  # same key order
    with pytest.raises(Exception):
        d.status = "failed"  # type: ignore[misc]  # still frozen


RESULTS = [
    EventResult.of(0, "accepted", "e-1", "tenant-a", DELIVERIES[:1], None, 201),
    EventResult.of(1, "failed", "e-2", "tenant-a", DELIVERIES[1:], "delivery failed", 503),
    EventResult.of(2, "filtered", "e-3", "tenant-b", None, "no filter matched", 200),
    EventResult(index=3, status="rejected", tenantId="tenant-b", reason="validation failed", httpStatus=400,
                errors=[FieldError(pointer="/events/3/eventType", field="eventType", detail="bad", type="enum")]),
    EventResult(index=4, status="duplicate", eventId="e-4", tenantId="tenant-c", destinations=DELIVERIES[:1]),
]


@pytest.mark.parametrize("r", RESULTS)
def test_result_body_is_what_model_dump_gives(r: EventResult) -> None:
    expected = r.model_dump(exclude_none=True, exclude={"httpStatus"} if r.status != "rejected" else set())
    assert orjson.dumps(result_body(r)) == orjson.dumps(expected)  # same keys, values and order


def test_event_result_of_equals_the_validated_model() -> None:
    r = RESULTS[0]
    validated = EventResult.model_validate(r.model_dump())
    assert r == validated
    assert r.model_copy(update={"index": 9}).index == 9


def _event(**extra: object) -> Event:
    return enrich(EventIn.model_validate({
        "tenantId": "tenant-a", "eventType": "RISK_UPDATED", "source": "ARCHER_GRC", "action": "UPDATE",
        "data": {"score": 4, "nested": {"k": [1, 2]}}, **extra}), ingested_at=now_iso(), correlation_id="c-1")


def test_to_json_is_the_wire_dict_for_trusted_and_validated_events() -> None:
    trusted = _event(entityId="risk-1", metadata={"m": "x"})
    assert trusted.to_json() == orjson.dumps(trusted.to_dict())
    validated = Event.model_validate(trusted.to_dict())  # field order of the model, not of `trusted`
    assert validated.to_json() == trusted.to_json()
    reordered = Event.trusted(dict(reversed(list(trusted.__dict__.items()))))  # keys in another order
    assert reordered.to_json() == trusted.to_json()


def test_trusted_instances_share_one_complete_fields_set_that_copies_and_assignments_leave_alone() -> None:
    # shared/core/trusted.py: one set of given fields per model, shared by its trusted instances.
    a, b = Delivery.of("redis", "delivered", "1-0"), Delivery.of("kafka", "delivered", "t/0@1")
    assert a.model_fields_set is b.model_fields_set and a.model_fields_set == set(Delivery.model_fields)
    parked = a.model_copy(update={"status": "parked"})
    assert parked.model_fields_set is not a.model_fields_set and parked.status == "parked" and a.status == "delivered"
    r = EventResult.of(0, "accepted", "e-1", "tenant-a", [a], None, 201)
    r.status = "failed"  # an assignment on a model that is not frozen
    assert EventResult.of(1, "accepted").model_fields_set == set(EventResult.model_fields)
    ev = _event(entityId="risk-1")
    assert ev.model_fields_set == set(Event.model_fields)
    assert ev.model_dump(exclude_unset=True) == ev.model_dump()  # pydantic reads the set as given fields
    assert Delivery.model_validate(a.model_dump()).model_fields_set == set(Delivery.model_fields)
