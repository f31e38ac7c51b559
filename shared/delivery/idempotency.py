"""Idempotent publishing: an eventId accepted within the window is not delivered again.

Per tenant in Redis: `grc:{tenant}:idem:<eventId>` holds `pending` while the first request is in
flight (SET NX, short TTL so a crashed instance does not block the id for a day), then the
original result (status, eventId, destinations) for IDEMPOTENCY_WINDOW_SECONDS. A repeat gets
that result back as status `duplicate`. A concurrent repeat waits briefly for the first to
finish; if it is still in flight the repeat answers 409 (retry). When the first ends `failed`
the client's retry must go through, but must not send the event again where it already landed:
the marker becomes `partial:` + the destinations that delivered or parked it (or is removed when
there are none), and the retry resumes with the remaining destinations only. If Redis cannot be reached the check
is skipped (fail open): destinations are themselves idempotent on eventId (Redis Streams keeps
a per-event marker, the analytics table upserts by key), so availability wins.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.core.events import Event, utc_now_iso
from shared.core.results import Delivery, EventResult
from shared.storage.redisconn import run_script, tenant_key

log = logging.getLogger("grc.idempotency")

PENDING = b"pending"
PENDING_TTL_SECONDS = 300  # longer than any publish (in-process retries are bounded by their timeouts)

# KEYS[1] the id's key; ARGV[1] pending TTL. Takes the id (absent, or a failed attempt's partial
# record) or reports who holds it; atomic, so two concurrent requests never both take it.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'pending', 'EX', ARGV[1])
  return {'new', ''}
end
if string.sub(v, 1, 7) == 'pending' then return {'busy', ''} end
if string.sub(v, 1, 8) == 'partial:' then
  redis.call('SET', KEYS[1], 'pending:' .. string.sub(v, 9), 'EX', ARGV[1])
  return {'resume', string.sub(v, 9)}
end
return {'final', v}
"""

ClaimState = Literal["new", "resume", "duplicate", "busy", "unchecked"]


def idem_key(tenant_id: str, event_id: str) -> str:
    return tenant_key(tenant_id, "idem", event_id)


@dataclass
class Claim:
    state: ClaimState
    original: dict | None = None  # the stored result for a duplicate
    prior: list[Delivery] | None = None  # resume: destinations an earlier attempt delivered or parked


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
        self._claim = client.register_script(_CLAIM)

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
        """Every event's claim in one round trip, whatever the number of tenants."""
        calls = [([idem_key(ev.tenantId, ev.eventId)], [PENDING_TTL_SECONDS]) for ev in events]
        replies = await run_script(self._redis, self._claim, calls)
        claims = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply  # a claim that failed in Redis: the batch goes unchecked (fail open)
            state, value = reply
            state = state.decode() if isinstance(state, bytes) else str(state)
            if state == "final":
                claims.append(Claim("duplicate", orjson.loads(value)))
            elif state == "resume":
                prior = [Delivery.model_validate(d) for d in orjson.loads(value)]
                claims.append(Claim("resume", prior=prior))
            else:
                claims.append(Claim(state))  # type: ignore[arg-type]
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
                done = [d.model_dump(include={"destination", "status", "ref"}, exclude_none=True)
                        for d in res.destinations if d.status in ("delivered", "parked")]
                if done:
                    pipe.set(key, b"partial:" + orjson.dumps(done), ex=self._window)
                else:
                    pipe.delete(key)
        try:
            await pipe.execute()
        except RedisError as exc:  # the pending markers expire on their own
            log.warning("idempotency results not stored: %s", type(exc).__name__)
