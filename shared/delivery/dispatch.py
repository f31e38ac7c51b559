"""Dispatch: a batch's chunks to one destination, in one call per attempt, under its retry policy.

Each destination call runs under its retry policy (`retry` of the destination config; tenants with
different policies go in separate calls, one after another, so a batch never has more than one call
in flight per destination): a per-attempt timeout, and the failed, transient events retried in
process a few times with a short backoff (at most IN_PROCESS_MAX_DELAY_SECONDS) before the pipeline
parks them. A destination that raises, or does not answer in time, fails its events transiently: a
destination bug never loses a batch. Time a call waits behind the destination's own concurrency limit
while the dependency keeps answering is not "not answering" (destinations/own_limit.py). A tenant
whose events a call failed all, slowly, has its deliveries to that destination paused for a while:
they then fail at once, unsent, and are parked (breaker.py).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from shared.core.destination_options import IN_PROCESS_MAX_DELAY_SECONDS, RetryPolicy
from shared.core.events import Event
from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig
from shared.delivery.breaker import Breaker
from shared.destinations.base import Chunk, Destination, DestinationPaused, failed_all
from shared.destinations.own_limit import attempt_clock
from shared.observability.tenant_metrics import BatchStats

log = logging.getLogger("grc.pipeline")


class DestinationLookup(Protocol):
    def get(self, type_: str) -> Destination | None: ...


MAX_ROUTES = 10_000  # stream configs whose routing is kept worked out
Target = tuple[Any, RetryPolicy, tuple[Any, ...]]  # a destination's (options, policy, policy key) in a Route


@dataclass(frozen=True, slots=True)
class Route:
    """What a stream config says about routing, worked out once per config object (configs are
    cached per instance, so a batch naming hundreds of tenants does not redo this per tenant)."""

    enabled: tuple[str, ...]  # enabled destination types, in config order
    targets: dict[str, Target]  # type -> (options, policy, policy key)


def _route_of(config: StreamConfig) -> Route:
    targets: dict[str, Target] = {}
    for d in config.destinations:  # the first of a type (types are unique in a valid config)
        if d.type not in targets:
            policy = getattr(d, "retry", None) or RetryPolicy()
            targets[d.type] = (d.options, policy, tuple(policy.__dict__.values()))
    return Route(tuple(d.type for d in config.destinations if d.enabled), targets)


class DestinationBatch:
    """One destination's chunks of a batch, grouped by retry policy as they are added. The pipeline
    adds each tenant chunk with the Route it already looked up (once per tenant of every batch: no
    second lookup here); `Dispatcher.deliver_chunks` builds one from (config, events) pairs."""

    __slots__ = ("dest_type", "chunks", "groups")

    def __init__(self, dest_type: str) -> None:
        self.dest_type = dest_type
        self.chunks: list[Chunk] = []
        self.groups: dict[tuple[Any, ...], tuple[RetryPolicy, list[int]]] = {}

    def add(self, config: StreamConfig, target: Target, events: list[Event]) -> None:
        options, policy, key = target
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = (policy, [len(self.chunks)])
        else:
            group[1].append(len(self.chunks))
        self.chunks.append(Chunk(config, options, events))


class Dispatcher:
    def __init__(self, destinations: DestinationLookup, rand: Callable[[], float] = random.random) -> None:
        self.destinations = destinations
        self.rand = rand
        self._routes: dict[int, tuple[StreamConfig, Route]] = {}
        self.breaker = Breaker()

    def route_for(self, config: StreamConfig) -> Route:
        hit = self._routes.get(id(config))
        if hit is not None and hit[0] is config:
            return hit[1]
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        route = _route_of(config)
        self._routes[id(config)] = (config, route)  # the config is held, so its id is not reused
        return route

    async def deliver_chunks(
        self, dest_type: str, chunks: list[tuple[StreamConfig, list[Event]]], stats: BatchStats,
        attempts: int | None = None, guarded: bool = True,
    ) -> list[list[Delivery]]:
        """Chunks of any number of tenants to one destination; a Delivery per event, per chunk
        (`deliver` with the chunks' routes looked up here)."""
        batch = DestinationBatch(dest_type)
        route_for = self.route_for
        for config, events in chunks:
            batch.add(config, route_for(config).targets[dest_type], events)
        return await self.deliver(batch, stats, attempts, guarded)

    async def deliver(
        self, batch: DestinationBatch, stats: BatchStats, attempts: int | None = None, guarded: bool = True,
    ) -> list[list[Delivery]]:
        """A batch's chunks to one destination; a Delivery per event, per chunk.

        Chunks whose tenants share a retry policy (normally all) go in one call per attempt; the
        groups of different policies go one after another, so one batch never has more than one
        call in flight to a destination. `guarded=False` (the retry queue's drain, replays): sent
        even for tenants whose deliveries are paused (breaker.py).
        """
        prepared = batch.chunks
        dest = self.destinations.get(batch.dest_type)
        if dest is None:
            return failed_all(batch.dest_type, prepared,
                              f"destination type {batch.dest_type!r} is not available in this deployment",
                              transient=False)
        if len(batch.groups) == 1:  # the usual case: every tenant of the batch has the same policy
            [(policy, _)] = batch.groups.values()
            return await self._deliver_group(dest, prepared, policy, stats, attempts, guarded)
        out: list[list[Delivery]] = [[] for _ in prepared]
        for policy, members in batch.groups.values():
            got = await self._deliver_group(dest, [prepared[j] for j in members], policy, stats, attempts,
                                            guarded)
            for j, dels in zip(members, got):
                out[j] = dels
        return out

    async def _deliver_group(
        self, dest: Destination, chunks: list[Chunk], policy: RetryPolicy, stats: BatchStats,
        attempts: int | None, guarded: bool,
    ) -> list[list[Delivery]]:
        """Calls under one retry policy: the failed, transient events of every chunk are tried again
        together, after the policy's (capped) backoff, except a tenant's paused meanwhile (parked now)."""
        out = await self._attempt(dest, chunks, policy, guarded)
        tries = attempts if attempts is not None else policy.inProcessAttempts
        breaker = self.breaker
        for attempt in range(2, tries + 1):
            again = []  # (chunk, positions of its failed transient events); one pass, lists only for those
            for c, dels in enumerate(out):
                for d in dels:
                    if d.status == "failed" and d.transient:
                        # a tenant paused meanwhile is parked now rather than waiting for another slow failure
                        if not (guarded and breaker.paused(dest.type, chunks[c].stream.tenantId)):
                            again.append((c, [i for i, x in enumerate(dels)
                                              if x.status == "failed" and x.transient]))
                        break
            if not again:
                break
            for c, ix in again:
                stats.tenant(chunks[c].stream.tenantId).count("retry", len(ix))
            await asyncio.sleep(min(IN_PROCESS_MAX_DELAY_SECONDS, policy.delay(attempt - 1, self.rand())))
            retry = [Chunk(chunks[c].stream, chunks[c].options, [chunks[c].events[i] for i in ix]) for c, ix in again]
            got = await self._attempt(dest, retry, policy, guarded)
            for (c, ix), dels in zip(again, got):
                row = out[c] = list(out[c])
                for i, d in zip(ix, dels):
                    row[i] = d
        return out

    async def _attempt(
        self, dest: Destination, chunks: list[Chunk], policy: RetryPolicy, guarded: bool
    ) -> list[list[Delivery]]:
        if not guarded:
            return await self._measured(dest, chunks, policy, frozenset())
        refused, probes = self.breaker.admit(dest.type, chunks)
        if not refused:
            return await self._measured(dest, chunks, policy, probes)
        out = [self.breaker.refused(dest.type, ch) if i in refused else [] for i, ch in enumerate(chunks)]
        sent = [i for i in range(len(chunks)) if i not in refused]
        if sent:
            got = await self._measured(dest, [chunks[i] for i in sent], policy, probes)
            for i, dels in zip(sent, got):
                out[i] = dels
        return out

    async def _measured(
        self, dest: Destination, chunks: list[Chunk], policy: RetryPolicy, probes: frozenset[str]
    ) -> list[list[Delivery]]:
        """The call, its outcome and duration told to the breaker."""
        started = time.monotonic()
        out: list[list[Delivery]] = []
        try:
            out = await self._call(dest, chunks, policy)
            return out
        finally:  # also when cancelled: a probe that never ends would pause its tenants for good
            self.breaker.record(dest.type, chunks, out, time.monotonic() - started, probes)

    async def _call(
        self, dest: Destination, chunks: list[Chunk], policy: RetryPolicy
    ) -> list[list[Delivery]]:
        try:
            # asyncio.timeout, not wait_for: the call runs in this task instead of a new one per attempt.
            # attempt_clock: a destination's own queue (own_limit.py) does not count against the timeout.
            async with asyncio.timeout(policy.timeoutSeconds) as deadline:
                with attempt_clock(deadline, policy.timeoutSeconds):
                    out = await dest.publish(chunks)
        except TimeoutError:
            return failed_all(dest.type, chunks, f"no answer within {policy.timeoutSeconds} s")
        except DestinationPaused as exc:  # nothing sent: held, and its events parked without a retry
            self.breaker.hold(dest.type, exc.seconds, exc.reason)
            return failed_all(dest.type, chunks, f"not sent: {exc.reason}")
        except Exception as exc:  # noqa: BLE001 - a destination bug must not lose the batch
            log.exception("destination %s raised", dest.type)
            return failed_all(dest.type, chunks, f"destination error: {type(exc).__name__}")
        if len(out) != len(chunks) or any(len(d) != len(ch.events) for d, ch in zip(out, chunks)):
            raise RuntimeError(f"destination {dest.type} returned results that do not match its chunks")
        return out
