"""validate -> enrich -> tenant filter -> route, with a result for every event.

The pipeline works on a batch: the configs of all its tenants are fetched in one go, each
destination gets every tenant's passing events, in chunks of the tenant's `batchSize`, in ONE call
(so a batch naming a thousand tenants costs each destination one call, not a thousand concurrent
ones), destinations run concurrently, and metrics are recorded once per batch. A delivery that
fails is handed to the `Parker` (the retry queue); an event is `accepted` only when each of its
destinations delivered or parked it, otherwise `failed` (the client must retry: nothing was
acknowledged).

Each destination call runs under its retry policy (dispatch.py): a per-attempt timeout, and the
failed, transient events retried in process a few times with a short backoff before they are
parked. Events with a client-given id (eventId or Idempotency-Key) and service-made events are
claimed in the idempotency store first: a repeat within the window gets the original result as
`duplicate` and is not delivered again.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol, Sequence

from pydantic import ValidationError

from shared.core import limits
from shared.core.enrich import enrich, now_iso
from shared.core.events import Event, EventType, Source, is_tenant_id, validate_event_in
from shared.core.filters import passes
from shared.core.ids import uuid7, uuid7s
from shared.core.results import Delivery, EventResult, FieldError
from shared.core.streamconfig import StreamConfig
from shared.core.validation import field_error, field_errors
from shared.delivery.dispatch import DestinationBatch, DestinationLookup, Dispatcher
from shared.delivery.idempotency import (
    DedupePolicy,
    IdempotencyStore,
    conflict_result,
    duplicate_result,
    fingerprint,
)
from shared.observability.tenant_metrics import BatchStats, TenantMetrics, TenantStats, hist_index

log = logging.getLogger("grc.pipeline")


@dataclass(frozen=True)
class Failure:
    event: Event
    destination: str
    delivery: Delivery
    stream: StreamConfig


_OUTCOME = {"delivered": "ok", "failed": "fail", "parked": "park"}
_OUTCOME_COUNTERS: dict[tuple[str, str], str] = {}
_TYPE_COUNTER = {t: f"t:{t.value}" for t in EventType}
_SOURCE_COUNTER = {s: f"s:{s.value}" for s in Source}


def _outcome_counter(destination: str, status: str) -> str:
    """The metrics counter of a delivery outcome, `d:<destination>:ok|fail|park` (names made once)."""
    name = _OUTCOME_COUNTERS.get((destination, status))
    if name is None:
        name = _OUTCOME_COUNTERS[(destination, status)] = f"d:{destination}:{_OUTCOME[status]}"
    return name


class Parker(Protocol):
    """Takes failed deliveries for later retry; returns, per failure, whether it was parked."""

    async def park(self, failures: Sequence[Failure]) -> list[bool]: ...


class ConfigSource(Protocol):
    async def get_many(self, tenant_ids: Iterable[str]) -> dict[str, StreamConfig]: ...


# Runs after metrics are written; may be async (awaited: e.g. system events for failed deliveries).
BatchHook = Callable[[BatchStats, Sequence[EventResult]], "None | Awaitable[None]"]

PARK_TIMEOUT_SECONDS = 10.0  # the retry queue must answer in time, else the request answers 503
REUSED_ID = "already used within the dedupe window for a different event; send this one with a new id"


@dataclass
class PublishContext:
    correlation_id: str | None = None
    idempotency_key: str | None = None  # only for a single event
    received_at: float = field(default_factory=time.time)
    pointer_prefix: tuple[Any, ...] = ()  # e.g. ("events",) for bulk bodies


class Pipeline:
    def __init__(
        self,
        configs: ConfigSource,
        destinations: DestinationLookup,
        metrics: TenantMetrics | None = None,
        parker: Parker | None = None,
        hooks: Sequence[BatchHook] = (),
        idempotency: IdempotencyStore | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.configs = configs
        self.destinations = destinations
        self.metrics = metrics
        self.parker = parker
        self.hooks = list(hooks)
        self.idempotency = idempotency
        self.dispatch = Dispatcher(destinations, rand)

    # ---- entry points ------------------------------------------------------------------

    async def publish_raw(self, items: Sequence[Any], ctx: PublishContext) -> list[EventResult]:
        """Events as clients send them (dicts): validated and enriched here."""
        stats = BatchStats()
        results: list[EventResult | None] = [None] * len(items)
        ingested_at = now_iso()
        correlation_id = ctx.correlation_id or uuid7()  # one request, one correlation id
        ready: list[tuple[int, Event]] = []
        client_ids: set[int] = set()  # generated ids need no idempotency check
        fresh = uuid7s(len(items))  # made together (shared/core/ids.py); a client's eventId leaves one unused
        key, pointer_prefix = ctx.idempotency_key, ctx.pointer_prefix
        for i, raw in enumerate(items):
            try:
                ein = validate_event_in(raw)
            except ValidationError as exc:
                prefix = (*pointer_prefix, i) if pointer_prefix else ()
                results[i] = self._reject(i, field_errors(exc, prefix), raw, stats)
                continue
            ev = enrich(ein, ingested_at=ingested_at, correlation_id=correlation_id, event_id=key or fresh[i])
            size = len(ev.to_json())
            if size > limits.MAX_EVENT_BYTES:
                prefix = (*pointer_prefix, i) if pointer_prefix else ()
                results[i] = self._reject(
                    i,
                    [FieldError(pointer="/".join(["", *map(str, prefix)]), field="(event)",
                                detail=f"enriched event is {size} bytes; the limit is {limits.MAX_EVENT_BYTES}",
                                type="too_large")],
                    raw, stats, http_status=413,
                )
                continue
            ready.append((i, ev))
            if key or ein.__dict__["eventId"]:
                client_ids.add(i)

        def reused(i: int) -> FieldError:  # where a client's id for a different event came from
            if key:
                return FieldError(pointer="#/headers/Idempotency-Key", field="Idempotency-Key",
                                  detail=REUSED_ID, type="id_reused")
            return field_error([*((*pointer_prefix, i) if pointer_prefix else ()), "eventId"], REUSED_ID,
                               "id_reused")

        routed = await self._route(ready, stats, ctx.received_at, client_ids, reused=reused)
        for i, res in routed.items():
            results[i] = res
        out = [r for r in results if r is not None]
        await self._finish(stats, out)
        return out

    async def publish_enriched(
        self, events: Sequence[Event], *, received_at: float | None = None, stats: BatchStats | None = None,
        dedupe: bool = True, policy: DedupePolicy | None = None,
    ) -> list[EventResult]:
        """Events built by the service itself (change feed, system events): ids are stable, so deduped,
        under `policy` (idempotency.DedupePolicy) when given."""
        stats = stats or BatchStats()
        routed = await self._route(list(enumerate(events)), stats, received_at or time.time(),
                                   set(range(len(events))) if dedupe else set(), policy)
        out = [routed[i] for i in range(len(events))]
        await self._finish(stats, out)
        return out

    # ---- stages ------------------------------------------------------------------------

    def _reject(
        self, i: int, errors: list[FieldError], raw: Any, stats: BatchStats, http_status: int = 400
    ) -> EventResult:
        tenant = raw.get("tenantId") if isinstance(raw, dict) else None
        if is_tenant_id(tenant):
            stats.tenant(tenant).count("rej")
        else:
            tenant = None
        reason = "event too large" if http_status == 413 else "validation failed"
        return EventResult(index=i, status="rejected", tenantId=tenant, errors=errors, reason=reason,
                           httpStatus=http_status)

    async def _route(
        self, ready: list[tuple[int, Event]], stats: BatchStats, received_at: float, dedupe: set[int],
        policy: DedupePolicy | None = None, reused: Callable[[int], FieldError] | None = None,
    ) -> dict[int, EventResult]:
        """Idempotency around routing: claim ids, route the new ones, store their results. `reused`:
        the error for a client's id already used for a different event (refused); without it (the
        service's own events) such a repeat is answered as a duplicate."""
        checked = [(i, ev) for i, ev in ready if i in dedupe]
        if self.idempotency is None or not checked:
            return await self._route_new(ready, stats, received_at)
        prior: dict[int, dict[str, Delivery]] = {}  # a retried event: destinations already done
        results: dict[int, EventResult] = {}
        first: dict[tuple[str, str], int] = {}
        repeats: dict[int, int] = {}  # the same id twice in one batch: index -> first index
        unique: list[tuple[int, Event]] = []
        for i, ev in checked:
            k = (ev.tenantId, ev.eventId)
            if k in first:
                repeats[i] = first[k]
            else:
                first[k] = i
                unique.append((i, ev))
        claims = await self.idempotency.claim([ev for _, ev in unique], policy.busy_wait_seconds if policy else None)
        skip = set(repeats)
        claimed: list[tuple[int, Event]] = []
        conflicted: dict[int, dict[str, Any]] = {}  # refused as another event under a used id: the record
        for (i, ev), claim in zip(unique, claims):
            if claim.state == "conflict" and claim.original is not None and reused is not None:
                conflicted[i] = claim.original
                results[i] = conflict_result(i, ev, claim.original, reused(i))
                stats.tenant(ev.tenantId).count("rej")
                skip.add(i)
            elif claim.state in ("duplicate", "conflict") and claim.original is not None:
                results[i] = duplicate_result(i, ev, claim.original)
                stats.tenant(ev.tenantId).count("dup")
                skip.add(i)
            elif claim.state == "unchecked" and policy is not None and policy.strict:
                stats.tenant(ev.tenantId).count("fail")
                results[i] = EventResult(index=i, status="failed", eventId=ev.eventId, tenantId=ev.tenantId,
                                         reason="the idempotency claims cannot be checked; retry later",
                                         httpStatus=503)
                skip.add(i)
            elif claim.state == "busy":
                stats.tenant(ev.tenantId).count("fail")
                results[i] = EventResult(index=i, status="failed", eventId=ev.eventId, tenantId=ev.tenantId,
                                         reason="an event with this eventId is being processed; retry later",
                                         httpStatus=409)
                skip.add(i)
            elif claim.state in ("new", "resume"):
                claimed.append((i, ev))
                if claim.prior:
                    prior[i] = {d.destination: d for d in claim.prior}
        results.update(await self._route_new([(i, ev) for i, ev in ready if i not in skip], stats, received_at,
                                             prior))
        await self.idempotency.settle([(ev, results[i]) for i, ev in claimed], policy)
        events = dict(ready)
        for i, j in repeats.items():
            orig = results[j]
            ev = events[i]
            if reused is not None:
                # Judged against the stored record when the first was refused, else against the first.
                stored = conflicted.get(j)
                same = fingerprint(ev) == (stored["f"] if stored is not None else fingerprint(events[j]))
                if stored is not None and same:
                    stats.tenant(ev.tenantId).count("dup")
                    results[i] = duplicate_result(i, ev, stored)
                    continue
                if not same:
                    results[i] = conflict_result(i, ev, stored or {}, reused(i))
                    stats.tenant(ev.tenantId).count("rej")
                    continue
            if orig.status in ("accepted", "filtered", "duplicate"):
                stats.tenant(ev.tenantId).count("dup")
                results[i] = duplicate_result(i, ev, {"s": orig.status, "e": orig.eventId, "at": "this request",
                                                      "d": [d.model_dump() for d in orig.destinations]})
            else:
                results[i] = orig.model_copy(update={"index": i})
        return results

    async def _route_new(
        self, ready: list[tuple[int, Event]], stats: BatchStats, received_at: float,
        prior: dict[int, dict[str, Delivery]] | None = None,
    ) -> dict[int, EventResult]:
        """Route events; `prior` names, per event, destinations an earlier attempt already delivered
        to or parked for (a client's retry after a 503): those are not sent again."""
        prior = prior or {}
        results: dict[int, EventResult] = {}
        if not ready:
            return results
        # tenant -> (indices, events), in request order: a tenant's events are one chunk as they are
        by_tenant: dict[str, tuple[list[int], list[Event]]] = {}
        for i, ev in ready:
            group = by_tenant.get(ev.tenantId)
            if group is None:
                by_tenant[ev.tenantId] = ([i], [ev])
            else:
                group[0].append(i)
                group[1].append(ev)
        try:
            configs = await self.configs.get_many(by_tenant)
        except Exception as exc:  # noqa: BLE001 - any storage failure means: not routable now
            log.warning("stream configs unavailable: %s", type(exc).__name__)
            for tenant, (indices, events) in by_tenant.items():
                for i, ev in zip(indices, events):
                    stats.tenant(tenant).count("fail")
                    results[i] = EventResult(index=i, status="failed", eventId=ev.eventId, tenantId=tenant,
                                             reason="stream configuration unavailable", httpStatus=503)
            return results

        # Per destination, every tenant's chunks of the batch (in request order per tenant), with
        # each chunk's event indices.
        jobs: dict[str, tuple[DestinationBatch, list[list[int]]]] = {}
        deliveries: dict[int, list[Delivery]] = {}  # every passing event, even with no destination
        route_for = self.dispatch.route_for
        # Once per tenant of the batch (a batch may name a thousand): the common cases take short paths.
        for tenant, (indices, events) in by_tenant.items():
            config = configs[tenant]
            if not config.enabled or config.filters:
                ts = stats.tenant(tenant)
                kept_i: list[int] = []
                kept_e: list[Event] = []
                for i, ev in zip(indices, events):
                    if passes(config, ev):
                        kept_i.append(i)
                        kept_e.append(ev)
                    else:
                        ts.count("flt")
                        reason = "stream disabled for tenant" if not config.enabled else "no filter matched"
                        results[i] = EventResult.of(i, "filtered", ev.eventId, tenant, None, reason, 200)
                if not kept_i:
                    continue
                indices, events = kept_i, kept_e
            route = route_for(config)
            size = config.batchSize
            for dest_type in route.enabled:
                if prior:
                    todo = [(i, ev) for i, ev in zip(indices, events) if dest_type not in prior.get(i, {})]
                    d_indices, d_events = [i for i, _ in todo], [ev for _, ev in todo]
                else:
                    d_indices, d_events = indices, events
                job = jobs.get(dest_type)
                if job is None:
                    job = jobs[dest_type] = (DestinationBatch(dest_type), [])
                batch, chunk_indices = job
                target = route.targets[dest_type]
                if len(d_indices) <= size:
                    if d_indices:
                        batch.add(config, target, d_events)
                        chunk_indices.append(d_indices)
                else:
                    for start in range(0, len(d_indices), size):
                        batch.add(config, target, d_events[start:start + size])
                        chunk_indices.append(d_indices[start:start + size])
            if prior:
                for i in indices:
                    done = prior.get(i, {})
                    deliveries[i] = [done[t] for t in route.enabled if t in done]
            else:
                for i in indices:
                    deliveries[i] = []

        # One call per destination carries every tenant's chunks (see destinations/base.py); the
        # destinations run concurrently, so a batch has at most one call in flight per destination.
        dest_types = list(jobs)
        calls = [self.dispatch.deliver(jobs[t][0], stats) for t in dest_types]
        # One destination (the default config: Redis only) is awaited here, without a task for it.
        per_dest = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        failures: list[tuple[int, int, Failure]] = []  # (event index, position in its deliveries, failure)
        for dest_type, outcomes in zip(dest_types, per_dest):
            batch, chunk_indices = jobs[dest_type]
            for chunk, indices, dels in zip(batch.chunks, chunk_indices, outcomes):
                for i, ev, d in zip(indices, chunk.events, dels):
                    deliveries[i].append(d)
                    if d.status == "failed":
                        failures.append((i, len(deliveries[i]) - 1, Failure(ev, dest_type, d, chunk.stream)))
        # System events are best effort and never parked: a notice about a failing destination that
        # fails there too must not come back through the retry queue and its dead letters.
        if failures and self.parker is not None and not stats.system:
            try:
                parked = await asyncio.wait_for(self.parker.park([f for _, _, f in failures]), PARK_TIMEOUT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the retry store is down: the events are not accepted
                log.error("parking failed deliveries failed: %s", type(exc).__name__)
                parked = [False] * len(failures)
            for (i, pos, f), ok in zip(failures, parked):
                if ok:  # a new value for this event only (Delivery is frozen; others may share f.delivery)
                    deliveries[i][pos] = f.delivery.model_copy(update={"status": "parked"})

        done = time.time()
        latency_ms = max(0.0, (done - received_at) * 1000.0)
        bucket = hist_index(latency_ms)  # one latency for the batch: observed once per tenant
        # Per event of every batch: counted straight into the tenant's counters (what TenantStats.count
        # does, without a method call per count), the models' fields read by key (see enrich).
        for tenant, (indices, events) in by_tenant.items():
            ts = stats.tenant(tenant)
            accepted = 0
            counts = ts.counters
            get = counts.get
            for i, ev in zip(indices, events):
                dels = deliveries.get(i)
                if dels is None:  # filtered
                    continue
                earlier = prior.get(i) if prior else None
                ok = True
                for d in dels:
                    df = d.__dict__
                    status = df["status"]
                    # A delivery an earlier attempt made was counted by that attempt.
                    if earlier is None or earlier.get(df["destination"]) is not d:
                        name = _outcome_counter(df["destination"], status)
                        counts[name] = get(name, 0) + 1
                        if status != "delivered":
                            stats.failed_deliveries += 1
                    if status == "failed":
                        ok = False
                f = ev.__dict__
                if ok:
                    accepted += 1
                    name = _TYPE_COUNTER[f["eventType"]]
                    counts[name] = get(name, 0) + 1
                    name = _SOURCE_COUNTER[f["source"]]
                    counts[name] = get(name, 0) + 1
                    results[i] = EventResult.of(i, "accepted", f["eventId"], tenant, dels, None, 201)
                else:
                    counts["fail"] = get("fail", 0) + 1
                    results[i] = EventResult.of(i, "failed", f["eventId"], tenant, dels,
                                                "delivery failed and could not be parked for retry", 503)
            if accepted:
                ts.count("acc", accepted)
                ts.observe_latency(latency_ms, accepted, bucket)
        return results

    async def deliver(
        self, dest_type: str, config: StreamConfig, events: Sequence[Event], *,
        attempts: int | None = None, stats: TenantStats | None = None,
    ) -> list[Delivery]:
        """One destination only (retry queue, replay): the destination's retry policy, no parking."""
        batch = BatchStats()
        if stats is not None:
            batch.tenants[config.tenantId] = stats
        chunks = [(config, list(events))]
        return (await self.dispatch.deliver_chunks(dest_type, chunks, batch, attempts=attempts,
                                                   guarded=False))[0]

    async def _finish(self, stats: BatchStats, results: Sequence[EventResult]) -> None:
        if self.metrics is not None:
            try:
                await self.metrics.record(stats)
            except Exception as exc:  # noqa: BLE001 - metrics never fail a publish
                log.warning("metrics not recorded: %s", type(exc).__name__)
        for hook in self.hooks:
            try:
                out = hook(stats, results)
                if inspect.isawaitable(out):
                    await out
            except Exception:  # noqa: BLE001
                log.exception("batch hook failed")
