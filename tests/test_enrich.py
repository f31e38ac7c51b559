"""Enrichment (ids, timestamps, correlation) and the CloudEvents view of an event."""
from __future__ import annotations

import re
import uuid

import orjson
import pytest

from shared.core import limits
from shared.core.enrich import enrich, now_iso
from shared.core.events import SCHEMA_VERSION, EventIn
from shared.core.ids import uuid7_time_ms
from shared.delivery.pipeline import Pipeline, PublishContext
from tests.doubles import MemoryConfigs, MemoryDestination, MemoryDestinations, SpyMetrics, event_dict

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
INGESTED = "2026-11-27T03:00:00.000Z"


def _in(**over: object) -> EventIn:
    return EventIn.model_validate(event_dict(**over))


def test_client_event_id_is_kept_over_idempotency_key() -> None:
    ev = enrich(_in(eventId="client-1"), ingested_at=INGESTED, event_id="idem-1")
    assert ev.eventId == "client-1"


def test_idempotency_key_is_used_when_no_client_id() -> None:
    assert enrich(_in(), ingested_at=INGESTED, event_id="idem-1").eventId == "idem-1"


def test_new_event_id_is_time_ordered() -> None:
    a = enrich(_in(), ingested_at=INGESTED).eventId
    b = enrich(_in(), ingested_at=INGESTED).eventId
    assert uuid.UUID(a).version == 7 and a < b
    assert abs(uuid7_time_ms(a) - uuid7_time_ms(b)) < 5_000


def test_client_timestamp_is_normalised_to_utc_z() -> None:
    ev = enrich(_in(timestamp="2026-01-31T14:00:00.5+02:00"), ingested_at=INGESTED)
    assert ev.timestamp == "2026-01-31T12:00:00.500Z"
    assert ev.ingestedAt == INGESTED


def test_missing_timestamp_is_ingested_at() -> None:
    ev = enrich(_in(), ingested_at=INGESTED)
    assert ev.timestamp == INGESTED == ev.ingestedAt


def test_now_iso_shape() -> None:
    assert ISO_Z.match(now_iso())


def test_schema_version() -> None:
    assert enrich(_in(), ingested_at=INGESTED).schemaVersion == SCHEMA_VERSION == "1.0"


def test_correlation_id_precedence() -> None:
    assert enrich(_in(correlationId="c-client"), ingested_at=INGESTED, correlation_id="c-req").correlationId == "c-client"
    assert enrich(_in(), ingested_at=INGESTED, correlation_id="c-req").correlationId == "c-req"
    new = enrich(_in(), ingested_at=INGESTED).correlationId
    assert uuid.UUID(new).version == 7


def test_fields_are_carried_and_native_json_is_complete() -> None:
    ev = enrich(_in(metadata={"userId": "u1"}), ingested_at=INGESTED, correlation_id="c1")
    doc = orjson.loads(ev.encode("native"))
    assert doc == {
        "eventId": ev.eventId, "tenantId": "tenant-123", "eventType": "RISK_UPDATED", "source": "ARCHER_GRC",
        "action": "UPDATE", "entityId": "rec-1", "entityType": "risk", "data": {"riskScore": 7, "status": "open"},
        "metadata": {"userId": "u1"}, "timestamp": INGESTED, "ingestedAt": INGESTED, "schemaVersion": "1.0",
        "correlationId": "c1",
    }
    assert ev.to_json() is ev.to_json()  # serialised once, shared by destinations


def test_cloudevents_view() -> None:
    ev = enrich(_in(timestamp="2026-01-31T12:00:00Z"), ingested_at=INGESTED, correlation_id="c1")
    ce = orjson.loads(ev.encode("cloudevents"))
    assert ce["specversion"] == "1.0"
    assert ce["id"] == ev.eventId
    assert ce["source"] == "/tenants/tenant-123/sources/ARCHER_GRC"
    assert ce["type"] == "com.grc.RISK_UPDATED"
    assert ce["time"] == "2026-01-31T12:00:00.000Z"
    assert ce["subject"] == "risk/rec-1"
    assert ce["datacontenttype"] == "application/json"
    assert ce["tenantid"] == "tenant-123"
    assert ce["data"]["data"] == {"riskScore": 7, "status": "open"}
    # CloudEvents extension attribute names: lowercase alphanumerics only.
    for name in ce:
        assert re.fullmatch(r"[a-z0-9]{1,20}", name), name
    assert ce != orjson.loads(ev.encode("native"))


def test_cloudevents_subject_absent_without_entity() -> None:
    ev = enrich(_in(entityId=None, entityType=None), ingested_at=INGESTED)
    assert "subject" not in ev.to_cloudevent()


async def test_event_near_the_enriched_limit_is_rejected_with_413() -> None:
    dest = MemoryDestination()
    pipeline = Pipeline(MemoryConfigs(), MemoryDestinations(dest), SpyMetrics())
    # Strings under the per-string cap, together just over the enriched-size limit.
    chunk = limits.MAX_STRING_LENGTH - 16
    n = limits.MAX_EVENT_BYTES // chunk + 1
    big = event_dict(data={f"s{i}": "x" * chunk for i in range(n)})
    per = (limits.MAX_EVENT_BYTES - 2_000) // 4  # just under the limit once enriched
    small = event_dict(data={f"s{i}": "x" * per for i in range(4)})
    results = await pipeline.publish_raw([big, small], PublishContext())
    assert results[0].status == "rejected" and results[0].httpStatus == 413
    assert results[0].errors[0].type == "too_large" and "1000000" in results[0].errors[0].detail
    assert results[0].tenantId == "tenant-123"
    assert results[1].status == "accepted"
    assert [len(c) for c in dest.calls] == [1]


async def test_too_large_pointer_in_bulk() -> None:
    pipeline = Pipeline(MemoryConfigs(), MemoryDestinations(MemoryDestination()))
    chunk = limits.MAX_STRING_LENGTH - 16
    big = event_dict(data={f"s{i}": "x" * chunk for i in range(limits.MAX_EVENT_BYTES // chunk + 1)})
    res = await pipeline.publish_raw([event_dict(), big], PublishContext(pointer_prefix=("events",)))
    assert res[1].errors[0].pointer == "/events/1"


@pytest.mark.parametrize("fmt", ["native", "cloudevents"])
def test_encode_is_valid_json(fmt: str) -> None:
    ev = enrich(_in(), ingested_at=INGESTED)
    assert isinstance(orjson.loads(ev.encode(fmt)), dict)
