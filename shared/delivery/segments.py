"""Segments of a large batch: whole destination chunks, handed on while the rest is validated.

Validating a bulk is CPU in this process; delivering it is mostly CPU elsewhere (Redis, the broker,
the Table service). Done one after the other, each side waits for the other: with a 500-event bulk
the service's process idled while Redis ran the appends, and Redis idled while the process
validated. Cut into segments, the destinations work on one segment while the next one is validated
(the pipeline routes a segment in a task while it validates on).

A segment holds only complete chunks, so the destinations get the same calls as without segments:
the pipeline cuts a tenant's events into chunks of its `batchSize` (in request order), and a chunk is
complete once it holds `batchSize` events or the tenant's last event of the batch (each tenant's count
is known from the raw items before validation: a rejected item still counts as seen). The pipeline
routes segments one after the other, so a tenant's chunks still reach each destination in request
order. A batch of 500 tenants with one event each completes a chunk with every event; a tenant with
many events completes one every `batchSize`; tenants whose events are spread over the whole batch
complete at its end (as without segments).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.core.events import Event
from shared.core.streamconfig import StreamConfig

Item = tuple[int, Event]  # (index in the batch, event)


class Segments:
    def __init__(self, counts: Mapping[str, int], configs: Mapping[str, StreamConfig], size: int) -> None:
        """`counts`: raw items per tenant named (security.tenants.tenant_costs); `configs`: the
        batch's stream configs (their batchSize); `size`: events per segment (at least)."""
        self._size = size
        # tenant -> [open chunk, raw items of the tenant not seen yet, batchSize]
        self._tenants: dict[str, list[Any]] = {
            t: [[], n, configs[t].batchSize] for t, n in counts.items() if t in configs}
        self._complete: list[Item] = []
        self._held: list[Item] = []  # events of a tenant not counted: sent with the last segment

    def add(self, i: int, ev: Event) -> list[Item] | None:
        """Item `i` passed validation as `ev`; a segment, when the complete chunks make one."""
        state = self._tenants.get(ev.tenantId)
        if state is None:
            self._held.append((i, ev))
            return None
        chunk = state[0]
        chunk.append((i, ev))
        state[1] -= 1
        if len(chunk) >= state[2] or not state[1]:
            return self._close(chunk)
        return None

    def skip(self, tenant: Any) -> list[Item] | None:
        """A raw item naming `tenant` was rejected: it no longer holds its tenant's last chunk open."""
        state = self._tenants.get(tenant) if type(tenant) is str else None
        if state is None:
            return None
        state[1] -= 1
        return self._close(state[0]) if not state[1] and state[0] else None

    def _close(self, chunk: list[Item]) -> list[Item] | None:
        complete = self._complete
        complete += chunk
        chunk.clear()
        if len(complete) < self._size:
            return None
        self._complete = []
        return complete

    def rest(self) -> list[Item]:
        """Everything not handed out yet, in batch order (the last segment)."""
        out = self._complete + self._held
        for state in self._tenants.values():
            out += state[0]
            state[0] = []
        self._complete, self._held = [], []
        out.sort(key=_index)
        return out


def _index(item: Item) -> int:
    return item[0]
