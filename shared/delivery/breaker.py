"""Deliveries paused for a tenant whose destination makes its callers wait and then fails.

Why: a dependency that hangs or holds messages (a Kafka broker down: librdkafka keeps each message
until `KAFKA_DELIVERY_TIMEOUT_MS`, then fails it) made every request wait for its whole attempt
timeout, twice with the in-process retry: a POST /events answered after about a minute while Event
Hubs was down, longer than many clients wait. Once a call has failed every event of a tenant
transiently after at least SLOW_FAILURE_SECONDS, that tenant's deliveries to that destination are
paused for PAUSE_SECONDS: they are not sent and fail at once, so the pipeline parks them (the client
is answered at once, the retry queue delivers later), and the in-process retries of the call are
not made. Then one call at a time carries the tenant's events as a probe: a delivered event resumes
the tenant, another failure pauses it again for twice as long (up to MAX_PAUSE_SECONDS), so in a
long outage few requests wait for a probe. A delivery by the retry queue's drain resumes it too.

Per tenant, not per destination: one tenant's own fault (a topic that does not exist also fails
slowly) must not hold up the other tenants' deliveries. In an outage each tenant then waits once
per pause, not on every request.

A destination that says it sends nothing for a while (`DestinationPaused`: Redis left a call
unanswered moments ago, so the instance sends Redis nothing for a few seconds) is held as a whole
for that long: its calls are not made, and its events are parked at once without the in-process
retry, which would only wait to fail the same way.

Safe for the dedupe windows: an event that is not sent cannot land later. A destination that fails
fast (connection refused) is not paused: its callers do not wait, and the in-process retry is worth
having for a blip. The state is per instance. The retry queue's drain and replays are not paused
(their calls are how the destination is found back), but their outcomes count.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.core.results import Delivery
from shared.destinations.base import Chunk, failed_all

log = logging.getLogger("grc.pipeline")

SLOW_FAILURE_SECONDS = 2.0  # a call failing every event after this long would make the next callers wait too
PAUSE_SECONDS = 10.0  # how long deliveries fail at once before a call is let through as a probe
MAX_PAUSE_SECONDS = 300.0  # each failed probe doubles the pause up to this (the drain still resumes it)
MAX_PAUSED = 10_000  # (destination, tenant) pairs kept; past it, the ended pauses are forgotten


@dataclass
class _Paused:
    until: float
    reason: str
    length: float = PAUSE_SECONDS
    probing: bool = False


class Breaker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._paused: dict[tuple[str, str], _Paused] = {}
        self._held: dict[str, tuple[float, str]] = {}  # destination -> (until, why): nothing sent

    def hold(self, dest_type: str, seconds: float, reason: str) -> None:
        """`dest_type` sends nothing for `seconds` (it said so): its guarded calls are not made meanwhile."""
        until = self.clock() + seconds
        if until > self._held.get(dest_type, (0.0, ""))[0]:
            self._held[dest_type] = (until, reason)

    def _holding(self, dest_type: str) -> str | None:
        """Why `dest_type` is held now, or None."""
        held = self._held.get(dest_type)
        if held is None:
            return None
        if self.clock() < held[0]:
            return held[1]
        del self._held[dest_type]
        return None

    def paused(self, dest_type: str, tenant: str) -> bool:
        """Whether the tenant's deliveries to `dest_type` are paused (or the destination held) now."""
        if self._held and self._holding(dest_type) is not None:
            return True
        p = self._paused.get((dest_type, tenant))
        return p is not None and (p.probing or self.clock() < p.until)

    def admit(self, dest_type: str, chunks: Sequence[Chunk]) -> tuple[set[int], frozenset[str]]:
        """(the chunks of a call not to send, the tenants whose chunks probe). A tenant's chunks of
        one call go or stay together; a paused tenant whose pause has ended probes; a held
        destination gets none."""
        if self._held and self._holding(dest_type) is not None:
            return set(range(len(chunks))), frozenset()
        if not self._paused:  # the usual case, kept cheap: nothing paused anywhere
            return set(), frozenset()
        now = self.clock()
        decided: dict[str, bool] = {}  # tenant -> sent
        probes: set[str] = set()
        refused: set[int] = set()
        for i, ch in enumerate(chunks):
            tenant = ch.stream.tenantId
            go = decided.get(tenant)
            if go is None:
                p = self._paused.get((dest_type, tenant))
                if p is None:
                    go = True
                elif p.probing or now < p.until:
                    go = False
                else:
                    go, p.probing = True, True
                    probes.add(tenant)
                decided[tenant] = go
            if not go:
                refused.add(i)
        return refused, frozenset(probes)

    def record(self, dest_type: str, chunks: Sequence[Chunk], deliveries: Sequence[Sequence[Delivery]],
               elapsed: float, probes: frozenset[str]) -> None:
        """A call's outcome, per tenant: a slow failure of all its events pauses (any failure, for a
        probe); any delivered event resumes. `deliveries` empty: the call broke off (cancelled)."""
        for tenant in probes:
            p = self._paused.get((dest_type, tenant))
            if p is not None:
                p.probing = False
        if not deliveries or (elapsed < SLOW_FAILURE_SECONDS and not probes and not self._paused):
            return  # the usual case: a quick call and nothing paused
        failed_all: dict[str, bool] = {}
        error: dict[str, str] = {}
        for ch, dels in zip(chunks, deliveries):
            tenant = ch.stream.tenantId
            ok = failed_all.get(tenant, True)
            for d in dels:
                if d.status != "failed" or not d.transient:
                    ok = False
                    break
            failed_all[tenant] = ok and bool(dels)
            if dels and dels[0].error:
                error.setdefault(tenant, dels[0].error)
        for tenant, all_failed in failed_all.items():
            key = (dest_type, tenant)
            p = self._paused.get(key)
            if all_failed and (elapsed >= SLOW_FAILURE_SECONDS or tenant in probes):
                reason = f"a call failed every event after {elapsed:.1f} s ({error.get(tenant, 'no answer')})"
                length = PAUSE_SECONDS
                if p is None:
                    log.warning("destination %s paused for tenant %s for %.0f s: %s", dest_type, tenant,
                                length, reason)
                    self._forget_ended()
                elif tenant in probes:
                    length = min(MAX_PAUSE_SECONDS, p.length * 2)
                else:
                    length = p.length
                self._paused[key] = _Paused(self.clock() + length, reason, length)
            elif p is not None and not all_failed:
                del self._paused[key]
                log.warning("destination %s resumed for tenant %s: a call delivered again", dest_type, tenant)

    def refused(self, dest_type: str, chunk: Chunk) -> list[Delivery]:
        """The deliveries of a chunk not sent because its tenant's deliveries are paused (or the
        destination is held)."""
        held = self._holding(dest_type) if self._held else None
        if held is None:
            p = self._paused.get((dest_type, chunk.stream.tenantId))
            held = f"{dest_type} paused for this tenant after {p.reason if p else 'a slow failure'}"
        return failed_all(dest_type, [chunk], f"not sent: {held}")[0]

    def _forget_ended(self) -> None:
        if len(self._paused) < MAX_PAUSED:
            return
        now = self.clock()
        for key in [k for k, p in self._paused.items() if not p.probing and now >= p.until]:
            del self._paused[key]
