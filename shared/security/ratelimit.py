"""Per-tenant rate limit: a token bucket in Redis, shared by every instance of the app.

One Lua script reads, refills, takes and writes a bucket atomically. The bucket lives in one key
with the tenant as hash tag, `grc:{tenant}:ratelimit`, so it is Redis-Cluster safe. One event costs
one token, so a bulk request of N events costs N. A request naming many tenants (a bulk) charges
all their buckets in one round trip (a pipeline of one script call per tenant) and is all or
nothing: when any bucket refuses, the tokens taken from the others are given back. The clock is
Redis' own `TIME` (no skew between instances); tests pass `now` instead and so never sleep.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

from shared.redisconn import run_script, tenant_key
from shared.security.tenants import is_tenant_id

log = logging.getLogger(__name__)

# KEYS[1] bucket hash {t: tokens, ts: seconds}; ARGV: rate/s, burst, cost, now ("" = Redis TIME).
# A negative cost gives tokens back (never above the burst). Returns {allowed 0|1, seconds until
# `cost` tokens are there, tokens left} as strings, because Redis truncates Lua numbers to integers.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = math.min(burst, tokens - cost)
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(ts))
-- A full bucket is the same as no bucket: let idle tenants' keys expire.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait), tostring(tokens)}
"""


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    allowed: bool
    retry_after_seconds: int  # whole seconds for the Retry-After header; 0 when allowed
    remaining: int


def bucket_key(tenant: str) -> str:
    return tenant_key(tenant, "ratelimit")  # grc:{tenant}:ratelimit


class RateLimiter:
    """`take(tenant, cost)` on a bucket of `burst` tokens refilled at `rate` tokens per second.

    rate 0 disables the limit. A request costing more than the burst would never pass, so its cost
    is capped at the burst: it needs a full bucket and empties it. If Redis fails the request is let
    through (logged): the limit protects capacity, and a Redis outage must not become an API outage
    of its own.
    """

    def __init__(self, client: aioredis.Redis, *, rate: float, burst: int) -> None:
        if burst < 1 or rate < 0:
            raise ValueError("burst must be >= 1 and rate >= 0")
        self._client = client
        self._rate = rate
        self._burst = burst
        self._script = client.register_script(_TOKEN_BUCKET)

    async def take(self, tenant: str, cost: int = 1, *, now: float | None = None) -> Decision:
        return (await self.take_all({tenant: cost}, now=now))[tenant]

    async def take_all(self, costs: Mapping[str, int], *, now: float | None = None) -> dict[str, Decision]:
        """Charge each tenant's bucket its cost, in one round trip; all or nothing (see the module doc)."""
        for tenant, cost in costs.items():
            if not is_tenant_id(tenant):
                raise ValueError("invalid tenant id")
            if cost < 1:
                raise ValueError("cost must be >= 1")
        if self._rate == 0:
            return {t: Decision(allowed=True, retry_after_seconds=0, remaining=self._burst) for t in costs}
        capped = {t: min(c, self._burst) for t, c in costs.items()}
        clock = "" if now is None else repr(float(now))
        try:
            replies = await self._run(capped, clock)
        except RedisError as exc:
            log.warning("rate limit for %d tenant(s) not applied: %s", len(costs), type(exc).__name__)
            return {t: Decision(allowed=True, retry_after_seconds=0, remaining=0) for t in costs}
        out: dict[str, Decision] = {}
        charged: list[str] = []
        for tenant, reply in zip(capped, replies):
            if isinstance(reply, Exception):
                log.warning("rate limit for %s not applied: %s", tenant, type(reply).__name__)
                out[tenant] = Decision(allowed=True, retry_after_seconds=0, remaining=0)
                continue
            allowed, wait, tokens = reply
            ok = int(allowed) == 1
            if ok:
                charged.append(tenant)
            out[tenant] = Decision(allowed=ok, retry_after_seconds=0 if ok else max(1, math.ceil(float(wait))),
                                   remaining=max(0, math.floor(float(tokens))))
        if charged and not all(d.allowed for d in out.values()):
            try:
                await self._run({t: -capped[t] for t in charged}, clock)
            except RedisError as exc:  # the tokens come back by refill anyway
                log.warning("rate limit tokens not given back: %s", type(exc).__name__)
        return out

    async def _run(self, costs: Mapping[str, int], clock: str) -> list[Any]:
        rate, burst = repr(float(self._rate)), str(self._burst)
        return await run_script(self._client, self._script,
                                [([bucket_key(t)], [rate, burst, str(c), clock]) for t, c in costs.items()])
