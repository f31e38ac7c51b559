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
    def __init__(self, raw_tenants: Sequence[Any], configs: Mapping[str, StreamConfig], size: int) -> None:
        """`raw_tenants`: each raw item's tenantId as sent (None when absent); `configs`: the batch's
        stream configs (for batchSize); `size`: events per segment (at least)."""
        self._raw = raw_tenants
        self._size = size
        # tenant -> [open chunk, raw items of the tenant not yet seen, batchSize]
        self._tenants: dict[str, list[Any]] = {}
        for t in raw_tenants:
            state = self._tenants.get(t) if type(t) is str else None
            if state is not None:
                state[1] += 1
            elif type(t) is str and t in configs:
                self._tenants[t] = [[], 1, configs[t].batchSize]
        self._complete: list[Item] = []
        self._held: list[Item] = []  # events whose validated tenant was not counted: sent at the end

    def add(self, i: int, ev: Event) -> None:
        """Item `i` passed validation as `ev`."""
        state = self._tenants.get(ev.tenantId) if ev.tenantId == self._raw[i] else None
        if state is None:
            self._held.append((i, ev))
            return
        chunk = state[0]
        chunk.append((i, ev))
        state[1] -= 1
        if len(chunk) >= state[2] or not state[1]:
            self._complete += chunk
            chunk.clear()

    def skip(self, i: int) -> None:
        """Item `i` was rejected: it no longer holds its tenant's last chunk open."""
        t = self._raw[i]
        state = self._tenants.get(t) if type(t) is str else None
        if state is not None:
            state[1] -= 1
            if not state[1] and state[0]:
                self._complete += state[0]
                state[0].clear()

    def take(self) -> list[Item] | None:
        """The complete chunks, once they hold at least a segment's worth of events."""
        if len(self._complete) < self._size:
            return None
        out, self._complete = self._complete, []
        return out

    def rest(self) -> list[Item]:
        """Everything not taken yet, in batch order (the last segment)."""
        out = self._complete + self._held
        for state in self._tenants.values():
            out += state[0]
            state[0] = []
        self._complete, self._held = [], []
        out.sort(key=_index)
        return out


def _index(item: Item) -> int:
    return item[0]
