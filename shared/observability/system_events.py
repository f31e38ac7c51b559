"""The service's own events (SYSTEM_ERROR, SYSTEM_PERFORMANCE, DATA_ANOMALY), published through the
same pipeline as any event -- the tenant's filters and destinations apply -- with guards so they
cannot feed back into themselves:

* they are published as a *system batch* (`BatchStats(system=True)`): the failure hook ignores such
  batches, so a system event that fails or is filtered never raises another system event, and the
  pipeline never parks their failed deliveries (best effort: no retry/dead-letter round trip);
* a system batch does not mark its tenant active (`metrics.ACTIVE_KEY`) and its outcome counters are
  also kept as `sys:<name>`, so the monitor timer neither keeps a tenant alive with its own
  SYSTEM_PERFORMANCE events nor lets system events move the anomaly baselines;
* `is_system_event` tells any code (e.g. the dead-letter path) that an event is one of these types,
  so it raises no notice about it.

SYSTEM_ERROR on a destination failure: one per tenant, per destination, per batch (never one per
event), with `data = {destination, error, count, failed, parked, sampleEventIds}`.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from shared.core.enrich import now_iso
from shared.core.events import SYSTEM_EVENT_TYPES, Action, Event, EventType, Source
from shared.core.ids import uuid7
from shared.core.results import EventResult
from shared.observability import telemetry
from shared.observability.tenant_metrics import BatchStats

log = logging.getLogger("grc.system_events")

SAMPLE_EVENT_IDS = 10
MAX_ERROR_CHARS = 300
_SYSTEM_TYPE_VALUES = frozenset(t.value for t in SYSTEM_EVENT_TYPES)


def is_system_event(event: Event | Mapping[str, Any]) -> bool:
    """SYSTEM_ERROR, SYSTEM_PERFORMANCE or DATA_ANOMALY: never the cause of another system event."""
    et = event.eventType if isinstance(event, Event) else event.get("eventType")
    return (et.value if isinstance(et, EventType) else et) in _SYSTEM_TYPE_VALUES


def system_event(
    tenant: str,
    event_type: EventType,
    data: dict[str, Any],
    *,
    entity_type: str,
    entity_id: str,
    event_id: str | None = None,
) -> Event:
    """An enriched event from the service itself (source EVENT_STREAMING), correlated with the
    current invocation when there is one."""
    if event_type not in SYSTEM_EVENT_TYPES:
        raise ValueError(f"{event_type} is not a system event type")
    now = now_iso()
    op = telemetry.current_operation()
    action = Action.NOTIFY if event_type is not EventType.DATA_ANOMALY else Action.DETECT
    return Event(
        eventId=event_id or uuid7(), tenantId=tenant, eventType=event_type, source=Source.EVENT_STREAMING,
        action=action, entityType=entity_type, entityId=entity_id, data=data,
        metadata={"system": True, **({"operation": op.name} if op else {})},
        timestamp=now, ingestedAt=now, correlationId=op.trace_id if op else uuid7(),
    )


async def publish_system_events(pipeline: Any, events: Sequence[Event]) -> list[EventResult]:
    """Publish as a system batch (see the module doc); never raises."""
    if not events:
        return []
    try:
        return list(await pipeline.publish_enriched(list(events), stats=BatchStats(system=True)))
    except Exception as exc:  # noqa: BLE001 - a system event is best effort; it must not fail its cause
        log.error("system events not published: %s", type(exc).__name__)
        return []


def system_error(tenant: str, destination: str, reason: str, event_ids: Sequence[str], *,
                 count: int | None = None, failed: int | None = None, parked: int = 0,
                 extra: Mapping[str, Any] | None = None) -> Event:
    n = len(event_ids) if count is None else count
    data: dict[str, Any] = {
        "destination": destination,
        "error": telemetry.redact(reason)[:MAX_ERROR_CHARS],
        "count": n,
        "failed": n - parked if failed is None else failed,
        "parked": parked,
        "sampleEventIds": list(event_ids[:SAMPLE_EVENT_IDS]),
    }
    if extra:
        data.update(extra)
    return system_event(tenant, EventType.SYSTEM_ERROR, data, entity_type="destination", entity_id=destination)


async def emit_system_error(pipeline: Any, tenant: str, destination: str, reason: str,
                            event_ids: Sequence[str], *, count: int | None = None,
                            extra: Mapping[str, Any] | None = None) -> EventResult | None:
    """One SYSTEM_ERROR for `tenant` about `destination` (e.g. a dead letter: pass
    `extra={"deadLetterId": ..., "attempts": ...}`). Guarded: published as a system batch, so its own
    failure raises nothing further. Returns its result, or None when it could not be published."""
    ev = system_error(tenant, destination, reason, event_ids, count=count, extra=extra)
    results = await publish_system_events(pipeline, [ev])
    return results[0] if results else None


@dataclass
class DestinationFailure:
    failed: int = 0
    parked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    event_ids: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.failed + self.parked

    @property
    def error(self) -> str:
        return self.errors.most_common(1)[0][0] if self.errors else "delivery failed"


def destination_failures(results: Sequence[EventResult]) -> dict[tuple[str, str], DestinationFailure]:
    """(tenant, destination) -> what failed there in this batch (`parked` = failed, retry scheduled)."""
    out: dict[tuple[str, str], DestinationFailure] = {}
    for r in results:
        if not r.tenantId:
            continue
        for d in r.destinations:
            if d.status == "delivered":
                continue
            f = out.get((r.tenantId, d.destination))
            if f is None:
                f = out[(r.tenantId, d.destination)] = DestinationFailure()
            if d.status == "parked":
                f.parked += 1
            else:
                f.failed += 1
            f.errors[d.error or "delivery failed"] += 1
            if r.eventId and len(f.event_ids) < SAMPLE_EVENT_IDS:
                f.event_ids.append(r.eventId)
    return out


class DestinationFailureHook:
    """A pipeline `BatchHook`: per tenant and destination that failed in a batch, one error log with
    dimensions and one SYSTEM_ERROR event. Ignores system batches (the feedback guard).

    `background=True` (the service's setting): the events are published in a task of their own, so
    a destination that is down or hanging does not make the caller wait a second time for the
    notice about it; `drain()` waits for those still running (shutdown, tests)."""

    def __init__(self, pipeline: Any, *, background: bool = False) -> None:
        self.pipeline = pipeline
        self.background = background
        self._tasks: set[asyncio.Task[Any]] = set()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def __call__(self, stats: BatchStats, results: Sequence[EventResult]) -> None:
        if getattr(stats, "system", False) or not stats.failed_deliveries:
            return
        failures = destination_failures(results)
        if not failures:
            return
        tel = telemetry.current()
        events = []
        for (tenant, dest), f in sorted(failures.items()):
            tel.log_event(logging.ERROR,
                          f"destination {dest} failed {f.count} event(s) of tenant {tenant} "
                          f"({f.parked} parked for retry): {telemetry.redact(f.error)[:MAX_ERROR_CHARS]}",
                          tenantId=tenant, destination=dest, count=f.count, errorType="DeliveryFailed")
            events.append(system_error(tenant, dest, f.error, f.event_ids, count=f.count, failed=f.failed,
                                       parked=f.parked))
        if not self.background:
            await publish_system_events(self.pipeline, events)
            return
        task = asyncio.ensure_future(publish_system_events(self.pipeline, events))
        self._tasks.add(task)  # a strong reference until done (the loop keeps only weak ones)
        task.add_done_callback(self._tasks.discard)
