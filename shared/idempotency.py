"""Idempotent publishing: an eventId accepted within the window is not delivered again.

Per tenant in Redis: `grc:{tenant}:idem:<eventId>` holds `pending` while the first request is in
flight (SET NX, short TTL so a crashed instance does not block the id for a day), then the
original result (status, eventId, destinations) for IDEMPOTENCY_WINDOW_SECONDS. A repeat gets
that result back as status `duplicate`. A concurrent repeat waits briefly for the first to
finish; if it is still in flight the repeat answers 409 (retry). When the first ends `failed`
the marker is removed, so the client's retry goes through. If Redis cannot be reached the check
is skipped (fail open): destinations are themselves idempotent on eventId (Redis Streams keeps
a per-event marker, the analytics table upserts by key), so availability wins.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Literal, Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.models import Delivery, Event, EventResult, utc_now_iso
from shared.redisconn import tenant_key

log = logging.getLogger("grc.idempotency")

PENDING = b"pending"
PENDING_TTL_SECONDS = 300  # longer than any publish (in-process retries are bounded by their timeouts)

ClaimState = Literal["new", "duplicate", "busy", "unchecked"]


def idem_key(tenant_id: str, event_id: str) -> str:
    return tenant_key(tenant_id, "idem", event_id)


@dataclass
class Claim:
    state: ClaimState
    original: dict | None = None  # the stored result for a duplicate


def duplicate_result(index: int, ev: Event, original: dict) -> EventResult:
    was = original.get("s", "accepted")
    return EventResult(
        index=index,
        status="duplicate",
        eventId=original.get("e", ev.eventId),
        tenantId=ev.tenantId,
        destinations=[Delivery.model_validate(d) for d in original.get("d", [])],
        reason=f"eventId already {was} at {original.get('at')}; not delivered again",
        httpStatus=200,
    )


class IdempotencyStore:
    def __init__(self, client: Redis, window_seconds: int, wait_seconds: float = 2.0, poll_seconds: float = 0.05):
        self._redis = client
        self._window = window_seconds
        self._wait = wait_seconds
        self._poll = poll_seconds

    async def claim(self, events: Sequence[Event]) -> list[Claim]:
        """One claim per event (ids distinct within the call)."""
        if not events:
            return []
        try:
            claims = await self._try_claim(events)
            deadline = time.monotonic() + self._wait
            while any(c.state == "busy" for c in claims) and time.monotonic() < deadline:
                await asyncio.sleep(self._poll)
                busy = [i for i, c in enumerate(claims) if c.state == "busy"]
                again = await self._try_claim([events[i] for i in busy])
                for i, c in zip(busy, again):
                    claims[i] = c
            return claims
        except RedisError as exc:
            log.warning("idempotency check skipped, Redis unavailable: %s", type(exc).__name__)
            return [Claim("unchecked") for _ in events]

    async def _try_claim(self, events: Sequence[Event]) -> list[Claim]:
        pipe = self._redis.pipeline(transaction=False)
        for ev in events:
            pipe.set(idem_key(ev.tenantId, ev.eventId), PENDING, nx=True, ex=PENDING_TTL_SECONDS)
        got = await pipe.execute()
        taken = [i for i, ok in enumerate(got) if not ok]
        claims = [Claim("new") for _ in events]
        if taken:
            pipe = self._redis.pipeline(transaction=False)
            for i in taken:
                pipe.get(idem_key(events[i].tenantId, events[i].eventId))
            for i, value in zip(taken, await pipe.execute()):
                if value is None:  # released between the two calls: try again on the next round
                    claims[i] = Claim("busy")
                elif value == PENDING:
                    claims[i] = Claim("busy")
                else:
                    claims[i] = Claim("duplicate", orjson.loads(value))
        return claims

    async def settle(self, settled: Sequence[tuple[Event, EventResult]]) -> None:
        """Store the final result of claimed events; release the ones that failed."""
        if not settled:
            return
        pipe = self._redis.pipeline(transaction=False)
        for ev, res in settled:
            key = idem_key(ev.tenantId, ev.eventId)
            if res.status in ("accepted", "filtered"):
                doc = {"s": res.status, "e": res.eventId, "at": utc_now_iso(),
                       "d": [d.model_dump(include={"destination", "status", "ref"}, exclude_none=True)
                             for d in res.destinations]}
                pipe.set(key, orjson.dumps(doc), ex=self._window)
            else:
                pipe.delete(key)
        try:
            await pipe.execute()
        except RedisError as exc:  # the pending markers expire on their own
            log.warning("idempotency results not stored: %s", type(exc).__name__)
