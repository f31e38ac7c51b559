"""A destination's own concurrency limit is kept out of its calls' attempt timeouts
(shared/destinations/own_limit.py), through the dispatcher's real attempt path.

The dependency is a fake (each request sleeps, or never answers); the dispatcher, the retry policy's
timeout and the limit are the production ones.
"""
from __future__ import annotations

import asyncio
import time
from typing import Sequence

from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig
from shared.delivery.dispatch import Dispatcher
from shared.destinations.base import Chunk, delivered
from shared.destinations.own_limit import OwnLimit
from shared.observability.tenant_metrics import BatchStats
from tests.kafka_helpers import make_event

TIMEOUT = 0.3


class FakeLimitedDependency:
    """Stands in for a destination that caps its requests in flight (analytics: Table transactions):
    one request per event, each behind the limit; `delays` per event id, None = never answers."""

    type = "analytics"

    def __init__(self, limit: int, delays: dict[str, float | None], default: float = 0.1) -> None:
        self.limit = OwnLimit(limit)
        self.delays = delays
        self.default = default
        self.answered: list[str] = []

    async def _request(self, event_id: str) -> Delivery:
        async with self.limit.slot():
            delay = self.delays.get(event_id, self.default)
            if delay is None:
                await asyncio.Event().wait()  # a dependency that went silent
            await asyncio.sleep(delay or 0)
            self.answered.append(event_id)
            return delivered(self.type, event_id)

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]:
        out = []
        for ch in chunks:
            out.append(list(await asyncio.gather(*(self._request(ev.eventId) for ev in ch.events))))
        return out

    async def health(self) -> None:  # pragma: no cover - not used
        return None

    async def close(self) -> None:  # pragma: no cover - not used
        return None


class Lookup(dict):  # type: ignore[type-arg]
    pass


def config(tenant: str) -> StreamConfig:
    return StreamConfig.model_validate({"tenantId": tenant, "destinations": [
        {"type": "analytics", "retry": {"timeoutSeconds": TIMEOUT, "inProcessAttempts": 1}}]})


async def call(dispatch: Dispatcher, tenant: str, n: int) -> list[Delivery]:
    events = [make_event(tenant=tenant, eventId=f"{tenant}-{i}") for i in range(n)]
    [out] = await dispatch.deliver_chunks("analytics", [(config(tenant), events)], BatchStats())
    return out


async def test_calls_queued_behind_the_limit_do_not_time_out_while_the_dependency_answers() -> None:
    # Limit 1, 8 calls of 2 requests of 0.1 s: the last call waits about 1.4 s for its turn, far past
    # the 0.3 s timeout, while every request is answered in 0.1 s. Counted as "no answer", 6 of the 8
    # would fail.
    dep = FakeLimitedDependency(1, {})
    dispatch = Dispatcher(Lookup(analytics=dep))
    start = time.monotonic()
    results = await asyncio.gather(*(call(dispatch, f"tenant-{c}", 2) for c in range(8)))
    assert time.monotonic() - start > 1.4
    assert [d.status for out in results for d in out] == ["delivered"] * 16


async def test_a_silent_dependency_fails_every_queued_call_one_timeout_after_its_last_answer() -> None:
    # The first request never answers. The call holding it and the calls queued behind it (started
    # 0.04 s apart) each fail about TIMEOUT after they started, not one TIMEOUT after another: the
    # first call's request, cancelled by its timeout, is no answer that would keep the others waiting.
    dep = FakeLimitedDependency(1, {"tenant-0-0": None})
    dispatch = Dispatcher(Lookup(analytics=dep))

    async def later(c: int) -> list[Delivery]:
        await asyncio.sleep(0.04 * c)
        return await call(dispatch, f"tenant-{c}", 1)

    start = time.monotonic()
    results = await asyncio.gather(*(later(c) for c in range(5)))
    took = time.monotonic() - start
    assert all(d.status == "failed" and d.transient and "no answer within" in (d.error or "")
               for out in results for d in out), results
    assert TIMEOUT + 0.16 <= took < 2 * TIMEOUT, took
    assert dep.answered == []


async def test_an_unanswered_request_fails_its_call_while_other_calls_are_answered() -> None:
    # Limit 2: one call's request hangs; another call's 20 requests are answered one after another on
    # the other slot for about 1 s. The hung call fails one timeout after its request went out.
    dep = FakeLimitedDependency(2, {"hung-0": None}, default=0.05)
    dispatch = Dispatcher(Lookup(analytics=dep))
    start = time.monotonic()
    hung = asyncio.ensure_future(call(dispatch, "hung", 1))
    busy = asyncio.ensure_future(call(dispatch, "busy", 20))
    [failed_delivery] = await hung
    assert failed_delivery.status == "failed" and time.monotonic() - start < 2 * TIMEOUT
    assert [d.status for d in await busy] == ["delivered"] * 20
