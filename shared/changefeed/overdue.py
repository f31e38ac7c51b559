"""ASSESSMENT_OVERDUE: once per assessment and due date whose due date passed and is not completed.

A timer runs `emit_overdue`; it queries the assessments container for due dates up to now
(plain SQL the local server also runs: no OFFSET/LIMIT, GROUP BY, DISTINCT), keeps the ones
not completed and not soft-deleted, and publishes one event each. The event id derives from
tenant + assessment id + due date, and its idempotency claim (kept CHANGEFEED_STATE_TTL_DAYS: the
`DedupePolicy` the caller passes) makes a second run, or a second instance running at the same
time, publish nothing again. Moving the due date gives a new id: the new date can be overdue again.

A date-only `dueDate` ("2026-11-30") is due at the end of that day (UTC).

The query reads only what a run can use, so a run costs what is open, not every assessment ever
written: completed and soft-deleted assessments, which are most of a container after a year, are
left out in SQL (safely: what the SQL keeps is a superset of what `is_overdue` keeps, so an odd
`status` is read and decided in code), and so are due dates older than the dedupe window (the
claim's TTL, CHANGEFEED_STATE_TTL_DAYS): such an assessment was announced when it became overdue,
and reading it after its claim expired would announce it again. Only the fields the rule and the
event use are projected.

Due dates are compared as instants, in code: `dueDate` is text as the writer stored it, with any
offset ("2026-12-02T07:07:42+05:30" is 01:37:42Z), and text order is not time order across offsets.
So the query over-selects safely by text, up to `now` + QUERY_MARGIN (RFC 3339 offsets lie within
±24 h, and a lowercase `t`/`z` sorts after its uppercase form, hence two days), and `is_overdue`
keeps exactly those whose instant is not after now. docs/change-capture.md states the convention.
"""
from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from azure.cosmos.aio import ContainerProxy

from shared.changefeed.processor import ChangeFeedProcessor
from shared.changefeed.rules import COMPLETED_STATUSES, ENTITY_TYPE, Kind, assessment_phase, parse_time
from shared.core.events import SCHEMA_VERSION, Action, Event, EventType, Source, is_tenant_id, utc_now_iso
from shared.core.ids import derived_uuid
from shared.delivery.idempotency import DedupePolicy
from shared.storage.cosmosdb import record_charge

log = logging.getLogger("grc.overdue")

# What the event carries (overdue_event), and what the query projects: those and what the rule
# (assessment_phase, is_overdue) reads besides.
EVENT_FIELDS = ("id", "title", "name", "status", "ownerId", "framework", "dueDate", "startedAt")
FIELDS = (*EVENT_FIELDS, "tenantId", "isDeleted", "completedAt")
# Each clause leaves out only documents `is_overdue` rejects: IS_BOOL / IS_STRING guard the
# comparisons (Cosmos' ternary logic drops a document whose condition is undefined), and TRIM strips
# no more than Python's strip(). Anything else (a status of another type, an empty `completedAt`)
# is read and decided in code.
QUERY = (
    f"SELECT {', '.join('c.' + f for f in FIELDS)} FROM c"
    " WHERE IS_DEFINED(c.dueDate) AND c.dueDate >= @lower AND c.dueDate <= @upper"
    " AND NOT (IS_BOOL(c.isDeleted) AND c.isDeleted = true)"
    " AND NOT (IS_STRING(c.status) AND LOWER(TRIM(c.status)) IN"
    f" ({', '.join(repr(x) for x in sorted(COMPLETED_STATUSES))}))"
    " AND NOT ((NOT IS_DEFINED(c.status) OR IS_NULL(c.status))"
    " AND IS_STRING(c.completedAt) AND LENGTH(c.completedAt) > 0)"
)
QUERY_MARGIN = timedelta(days=2)
PAGE_SIZE = 200


def due_at(value: Any) -> datetime | None:
    """`dueDate` as the moment it is due: a date means the end of that day (UTC)."""
    if isinstance(value, str) and len(value) == 10:
        try:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1)
        except (ValueError, OverflowError):  # OverflowError: 9999-12-31, the usual "no due date"
            return None
    return parse_time(value)


def is_overdue(doc: dict[str, Any], now: datetime, since: datetime | None = None) -> bool:
    """Due at or before `now` (and after `since`, the start of the dedupe window), open, not deleted."""
    if doc.get("isDeleted") is True or assessment_phase(doc) == "completed":
        return False
    due = due_at(doc.get("dueDate"))
    return due is not None and due <= now and (since is None or due > since)


def overdue_event(doc: dict[str, Any], container: str, now: datetime, ingested_at: str) -> Event:
    due = due_at(doc["dueDate"])
    assert due is not None
    tenant, aid = doc["tenantId"], doc["id"]
    event_id = derived_uuid(int(due.timestamp() * 1000), "overdue", container, tenant, aid, str(doc["dueDate"]))
    data = {k: doc[k] for k in EVENT_FIELDS if k in doc}
    data.update({"phase": assessment_phase(doc), "overdueByHours": round((now - due).total_seconds() / 3600, 1)})
    # due_at gives UTC, so the timestamp is the due instant as UTC.
    return Event.trusted(dict(
        eventId=event_id, tenantId=tenant, eventType=EventType.ASSESSMENT_OVERDUE, source=Source.COSMOS_DB,
        action=Action.DETECT, entityId=aid, entityType=ENTITY_TYPE[Kind.ASSESSMENTS], data=data,
        metadata={"container": container, "detectedBy": "overdue-timer"},
        timestamp=utc_now_iso(due), ingestedAt=ingested_at, schemaVersion=SCHEMA_VERSION,
        correlationId=event_id,
    ))


@dataclass
class OverdueRun:
    scanned: int = 0
    overdue: int = 0
    published: int = 0
    already: int = 0
    unpublished: int = 0
    request_charge: float = 0.0
    errors: list[str] = field(default_factory=list)


def _text(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def query_upper_bound(now: datetime) -> str:
    """The text the query compares `dueDate` with: later than the text of any due date up to now."""
    return _text(now + QUERY_MARGIN)


def query_lower_bound(since: datetime) -> str:
    """Earlier than the text of any due date after `since` (a date-only one included)."""
    return _text(since - QUERY_MARGIN)[:10]


async def _pages(container: ContainerProxy, lower: str, upper: str,
                 run: OverdueRun) -> AsyncIterator[list[dict[str, Any]]]:
    pager = container.query_items(QUERY, parameters=[{"name": "@lower", "value": lower},
                                                     {"name": "@upper", "value": upper}],
                                  max_item_count=PAGE_SIZE).by_page()
    async for page in pager:
        items = [d async for d in page]
        run.request_charge += record_charge("overdue-query", container)
        yield items


async def emit_overdue(
    container: ContainerProxy,
    container_name: str,
    processor: ChangeFeedProcessor,
    policy: DedupePolicy,
    *,
    now: datetime | None = None,
) -> OverdueRun:
    """Publish ASSESSMENT_OVERDUE for every newly overdue assessment; safe to run anywhere, anytime."""
    now = now or datetime.now(UTC)
    # The window in which an announced event's claim is remembered: past it, announcing again is
    # what reading would do, so it is not read.
    assert policy.window_seconds is not None, "the overdue claims need an explicit window"
    since = now - timedelta(seconds=policy.window_seconds)
    ingested_at = utc_now_iso(now)
    run = OverdueRun()
    async for page in _pages(container, query_lower_bound(since), query_upper_bound(now), run):
        run.scanned += len(page)
        events = []
        for doc in page:
            tenant = doc.get("tenantId")
            if not (is_tenant_id(tenant) and isinstance(doc.get("id"), str)):
                continue  # the change feed parks such documents
            if is_overdue(doc, now, since):
                events.append(overdue_event(doc, container_name, now, ingested_at))
        run.overdue += len(events)
        if not events:
            continue
        done = await processor.publish_events(events, time.time(), policy=policy)
        run.published += done.published
        run.already += done.duplicates
        run.unpublished += len(done.left)
    if run.unpublished:
        # The next run retries them: their markers were released.
        log.warning("%d overdue event(s) not published; the next run retries", run.unpublished)
    return run
