"""Enrichment: id, timestamps, schema version and correlation id for a validated event."""
from __future__ import annotations

from datetime import datetime, timezone

from shared.core.events import SCHEMA_VERSION, Event, EventIn, utc_now_iso
from shared.core.ids import uuid7


def enrich(
    event: EventIn,
    *,
    ingested_at: str,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> Event:
    """The client's eventId (or Idempotency-Key), timestamp and correlationId are kept when given.
    Reads the validated fields from the instance's dict: a pydantic model's attribute reads are not
    specialised by CPython 3.11 (see event_records.plan_records), and this runs per event."""
    f = event.__dict__
    ts = f["timestamp"]
    return Event.trusted({
        "eventId": f["eventId"] or event_id or uuid7(),
        "tenantId": f["tenantId"],
        "eventType": f["eventType"],
        "source": f["source"],
        "action": f["action"],
        "entityId": f["entityId"],
        "entityType": f["entityType"],
        "data": f["data"],
        "metadata": f["metadata"],
        "timestamp": ingested_at if ts is None else utc_now_iso(ts),  # EventIn made it UTC
        "ingestedAt": ingested_at,
        "schemaVersion": SCHEMA_VERSION,
        "correlationId": f["correlationId"] or correlation_id or uuid7(),
    })


def now_iso() -> str:
    return utc_now_iso(datetime.now(timezone.utc))
