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
    """The client's eventId (or Idempotency-Key), timestamp and correlationId are kept when given."""
    ts = (
        utc_now_iso(event.timestamp.astimezone(timezone.utc))
        if event.timestamp is not None
        else ingested_at
    )
    return Event.trusted(
        eventId=event.eventId or event_id or uuid7(),
        tenantId=event.tenantId,
        eventType=event.eventType,
        source=event.source,
        action=event.action,
        entityId=event.entityId,
        entityType=event.entityType,
        data=event.data,
        metadata=event.metadata,
        timestamp=ts,
        ingestedAt=ingested_at,
        schemaVersion=SCHEMA_VERSION,
        correlationId=event.correlationId or correlation_id or uuid7(),
    )


def now_iso() -> str:
    return utc_now_iso(datetime.now(timezone.utc))
