"""One change-feed batch -> events through the pipeline, exactly once downstream, nothing lost.

For a batch of changed documents of one container:
1. validate each; an unmappable one is dead-lettered with its reason (never dropped);
2. swap the entity snapshots in Redis (atomic, per tenant) to learn each change's prior;
3. map each change to its events (deterministic ids) and record its delay (now - `_ts`);
4. publish the events in bulk through the pipeline (`publish_enriched`) under the change feed's
   dedupe policy: each event id is claimed in the idempotency store (the ids are deterministic, so a
   re-delivered change is answered `duplicate`), failing closed when the claims cannot be checked;
5. if anything is left unpublished: raise `RetryBatch` so the host retries the batch (the
   retry policy), or, on the last attempt, dead-letter the leftover events and return.
Dead letters go to the one dead-letter store (delivery/deadletters.py), listed and replayed through
GET /deadletters/{tenantId} and POST /deadletters/{tenantId}/replay (`replay_dead_letter` below).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from shared.changefeed.rules import Kind, Mapped, Unmappable, map_change, snapshot, validate
from shared.changefeed.state import EntityState
from shared.core import limits
from shared.core.events import UNMAPPED_TENANT, Event, utc_now_iso
from shared.core.results import EventResult
from shared.delivery.deadletters import CHANGEFEED_EVENT, DeadLetters, partition_for
from shared.delivery.idempotency import PENDING_TTL_SECONDS, DedupePolicy
from shared.observability import telemetry
from shared.observability.tenant_metrics import CHANGEFEED, BatchStats, TenantMetrics
from shared.storage import payload

log = logging.getLogger("grc.changefeed")

OK_STATUSES = frozenset({"accepted", "filtered", "duplicate"})


class Publisher(Protocol):
    async def publish_enriched(
        self, events: Sequence[Event], *, received_at: float | None = None, stats: BatchStats | None = None,
        policy: DedupePolicy | None = None,
    ) -> list[EventResult]: ...


def _ref(doc: Any) -> str:
    """tenant/id@version of a change, without its content (for logs)."""
    if not isinstance(doc, dict):
        return f"<{type(doc).__name__}>"
    return f"{doc.get('tenantId')}/{doc.get('id')}@{doc.get('_lsn', doc.get('_etag'))}"


FeedStart = Callable[[Kind], Awaitable[datetime | None]]  # leases.FeedStarts.started


class Published(NamedTuple):
    """What `publish_events` made of a list of events."""
    left: list[Event]  # not published (for the host's retry, or a dead letter)
    published: int  # accepted or filtered
    duplicates: int
    errors: dict[str, str]  # eventId of each left -> why


def _why(result: EventResult) -> str:
    """Why an event was not published: the pipeline's reason and each failed destination's error."""
    failed = "; ".join(f"{d.destination}: {d.error}" for d in result.destinations
                       if d.status == "failed" and d.error)
    return f"{result.reason or result.status}" + (f" ({failed})" if failed else "")


class RetryBatch(RuntimeError):
    """Some changes could not be published yet; raising lets the host's retry policy redeliver them."""


@dataclass
class BatchOutcome:
    documents: int = 0
    events: int = 0
    published: int = 0  # accepted or filtered by the tenant's stream config
    duplicates: int = 0  # already delivered earlier (a re-delivered batch)
    stale: int = 0  # older than a version already processed
    settled: int = 0  # this version's events were all delivered, filtered or dead-lettered before
    deadlettered_documents: int = 0
    deadlettered_events: int = 0
    unpublished: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class ChangeFeedProcessor:
    def __init__(
        self,
        *,
        state: EntityState,
        dedupe: DedupePolicy,
        publisher: Publisher,
        deadletters: DeadLetters,
        metrics: TenantMetrics | None = None,
        clock: Any = time.time,
        feed_started: FeedStart | None = None,
        pending_seconds: int = PENDING_TTL_SECONDS,
    ) -> None:
        self.feed_started = feed_started
        self.state = state
        self.dedupe = dedupe
        self.last_attempt_dedupe = dataclasses.replace(dedupe, busy_wait_seconds=pending_seconds + 5)
        self.publisher = publisher
        self.deadletters = deadletters
        self.metrics = metrics
        self.clock = clock

    async def process(
        self, kind: Kind, container: str, docs: Sequence[Any], *, final_attempt: bool = True, attempt: int = 1
    ) -> BatchOutcome:
        """One batch of the change feed; `attempt`: the host's attempt at it (1 = first), which dead
        letters record as their `Attempts`."""
        now = self.clock()
        ingested_at = utc_now_iso(datetime.fromtimestamp(now, UTC))
        out = BatchOutcome(documents=len(docs))
        stats = BatchStats()

        valid: list[tuple[dict[str, Any], Any]] = []
        unmapped: list[tuple[Any, str]] = []
        for doc in docs:
            try:
                valid.append((doc, validate(kind, doc)))
            except Unmappable as exc:
                unmapped.append((doc, f"unmappable: {exc}"))

        # Entity snapshots, one atomic swap per tenant, in feed order.
        by_tenant: dict[str, list[int]] = {}
        for i, (doc, _) in enumerate(valid):
            by_tenant.setdefault(doc["tenantId"], []).append(i)
        snaps = [snapshot(kind, doc) for doc, _ in valid]
        priors: list[Any] = [None] * len(valid)
        try:
            got = await self.state.swap(kind.value, {
                tenant: [(valid[i][0]["id"], valid[i][1], snaps[i]) for i in idx]
                for tenant, idx in by_tenant.items()})
            for tenant, idx in by_tenant.items():
                for i, p in zip(idx, got[tenant]):
                    priors[i] = p
        except Exception as exc:
            if not final_attempt:
                raise RetryBatch(f"entity state unavailable: {type(exc).__name__}") from exc
            unmapped += [(doc, f"entity state unavailable: {type(exc).__name__}") for doc, _ in valid]
            valid = []

        # Creation is told by the processor's start (rules.Change.is_create); None = unknown.
        started = await self.feed_started(kind) if self.feed_started is not None and valid else None
        mapped: list[Mapped] = []
        for (doc, version), snap, prior in zip(valid, snaps, priors):
            if prior.stale:
                out.stale += 1
                continue
            m = map_change(kind, container, doc, prior.snapshot, ingested_at=ingested_at,
                           version=version, snap=snap, feed_started=started)
            if prior.settled:  # settled before: count, publish nothing
                out.settled += 1
                out.duplicates += len(m.events)
                stats.tenant(m.tenant_id).count("dup", len(m.events))
                continue
            too_big = next((e for e in m.events if len(e.to_json()) > limits.MAX_EVENT_BYTES), None)
            if too_big is not None:
                unmapped.append((doc, f"{too_big.eventType.value} event exceeds {limits.MAX_EVENT_BYTES} bytes"))
                continue
            mapped.append(m)

        events = [e for m in mapped for e in m.events]
        out.events = len(events)
        # The last attempt waits out claims in flight elsewhere (`DedupePolicy.busy_wait_seconds`): an
        # instance that died mid-publish left its claims pending, and giving up now would dead-letter
        # changes that its re-delivered batch can still publish once they expire.
        done = await self.publish_events(events, now,
                                         policy=self.last_attempt_dedupe if final_attempt else None)
        left = done.left
        out.published = done.published
        out.duplicates += done.duplicates
        if left and not final_attempt:
            out.unpublished = left
            await self.record(stats, container)
            raise RetryBatch(f"{len(left)} of {len(events)} change-feed event(s) not published")

        # The batch is settled: dead-letter what could not be mapped and, on the last attempt, what could
        # not be published. Parking failures propagate, so the host retries; on the last attempt
        # the log names every change (no document content), so each can be re-triggered by a touch.
        try:
            await self._dead_letter(kind, container, unmapped, left, out, stats, attempt, done.errors)
        except Exception:
            if final_attempt:
                log.exception("LOST after the last retry, dead-lettering failed: container=%s changes=%s",
                              container, [_ref(d) for d, _ in unmapped] + sorted(
                                  {f"{e.tenantId}/{e.entityId}@{e.metadata.get('changeFeed', {}).get('version')}"
                                   for e in left}))
            raise

        # Every event of these changes is now delivered, filtered or dead-lettered: a later re-delivery of
        # the same versions yields nothing, even after the dedup markers expire.
        try:
            await self.state.settle(kind.value, [(m.tenant_id, m.entity_id, m.version.ident) for m in mapped])
        except Exception as exc:  # noqa: BLE001 - the dedup markers still cover re-deliveries
            log.warning("settled versions not recorded: %s", type(exc).__name__)
        for m in mapped:
            if m.ts is not None:
                stats.tenant(m.tenant_id).observe_delay(max(0.0, (now - m.ts) * 1000.0))
        await self.record(stats, container)
        return out

    async def _dead_letter(self, kind: Kind, container: str, unmapped: list[tuple[Any, str]], left: list[Event],
                           out: BatchOutcome, stats: BatchStats, attempt: int,
                           errors: dict[str, str]) -> None:
        if unmapped:
            await self.deadletters.record_documents(container, kind.value, unmapped, attempts=attempt)
            out.deadlettered_documents = len(unmapped)
            for doc, _ in unmapped:
                tenant = partition_for(doc)
                if tenant != UNMAPPED_TENANT:
                    stats.tenant(tenant).count("rej")
                    stats.tenant(tenant).deadletter(CHANGEFEED)
            log.warning("dead-lettered %d %s document(s): %s", len(unmapped), container,
                        "; ".join(sorted({r for _, r in unmapped}))[:500])
        if left:
            out.unpublished = left
            await self.deadletters.record_events(container, kind.value, left,
                                                 "not published after the last retry",
                                                 attempts=attempt, errors=errors)
            out.deadlettered_events = len(left)
            for ev in left:
                stats.tenant(ev.tenantId).deadletter(CHANGEFEED)
            log.error("dead-lettered %d %s event(s) after the last retry", len(left), container)

    async def publish_events(self, events: list[Event], now: float, *, policy: DedupePolicy | None = None
                             ) -> Published:
        """Publish through the pipeline under the dedupe policy (the change feed's, or `policy`).
        Claimed elsewhere right now, failed, or not checkable: left, for the host's retry, with why."""
        if not events:
            return Published([], 0, 0, {})
        try:
            results = await self.publisher.publish_enriched(events, received_at=now, policy=policy or self.dedupe)
        except Exception as exc:  # noqa: BLE001
            log.warning("publishing change-feed events failed: %s", type(exc).__name__)
            return Published(list(events), 0, 0, {e.eventId: f"publishing failed: {type(exc).__name__}"
                                                   for e in events})
        left = [(e, r) for e, r in zip(events, results) if r.status not in OK_STATUSES]
        published = sum(1 for r in results if r.status in ("accepted", "filtered"))
        return Published([e for e, _ in left], published, sum(1 for r in results if r.status == "duplicate"),
                         {e.eventId: _why(r) for e, r in left})

    async def record(self, stats: BatchStats, container: str = telemetry.ALL) -> None:
        if not stats.tenants:
            return
        # Application Insights: change-feed delay (grc.changefeed.delay_ms, the processing-delay
        # alert's metric), rejected and dead-lettered counts of this batch; no-op without telemetry.
        tel = telemetry.current()
        if tel.enabled:
            tel.on_batch(telemetry.from_pipeline_stats(stats, container=container))
        if self.metrics is not None:
            await self.metrics.try_record(stats)

    # ---- replay of dead letters ----------------------------------------------------------

    async def replay_dead_letter(self, tenant: str, row: dict[str, Any]) -> tuple[str, str | None]:
        """A change-feed dead letter again (delivery/replay.py's `Replayer`): an event published
        through the pipeline (its idempotency claim keeps that from delivering it twice), a document
        mapped and processed again. (result, error): `published` / `processed`, or `failed` and why."""
        body = payload.load(row)
        if DeadLetters.kind_of(row) == CHANGEFEED_EVENT:
            done = await self.publish_events([Event.model_validate(body)], self.clock())
            return ("failed", f"not published: {next(iter(done.errors.values()))}") if done.left else (
                "published", None)
        try:
            kind = Kind(row.get("EntityKind"))
        except ValueError:
            return "failed", f"unknown entity kind {row.get('EntityKind')!r}"
        try:
            validate(kind, body)
        except Unmappable as exc:
            return "failed", f"unmappable: {exc}"
        try:
            out = await self.process(kind, str(row.get("Container")), [body], final_attempt=False)
        except RetryBatch as exc:
            return "failed", str(exc)
        if out.deadlettered_documents:  # mapped, but not processable (e.g. an event too large)
            return "failed", "dead-lettered again: see its new record"
        return "processed", None
