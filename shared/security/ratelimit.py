"""Per-tenant rate limit: a token bucket in Redis, shared by every instance of the app.

One Lua script reads, refills, takes and writes a bucket atomically. The bucket lives in one key
with the tenant as hash tag, `grc:{tenant}:ratelimit`, so it is Redis-Cluster safe. One event costs
one token, so a bulk request of N events costs N. The clock is Redis' own `TIME` (no skew between
instances); tests pass `now` instead and so never sleep.

Leases: an instance takes a tenant's tokens from Redis a little ahead -- the request's cost plus
up to LEASE_RATE_SECONDS of the tenant's rate (at most a tenth of the burst) -- and spends the
rest on the tenant's next requests for up to LEASE_SECONDS, so a tenant named in every request
(a backend publishing for all tenants) costs a Redis call per lease, not per request. A token is
never spent twice (every lease comes atomically from the shared bucket), so no tenant gets over
its rate; a lease not used up in time is dropped, so across instances a tenant can be refused up
to LEASE_RATE_SECONDS of its rate early. A request naming many tenants (a bulk) takes the leases
it needs in one round trip (a pipeline of one script call per tenant) and is all or nothing: when
any tenant is refused, the others' tokens taken from their leases go back to the leases, and those
taken from Redis for this request go back to Redis (one more round trip, only on such a refusal):
held in a lease they would be dropped after LEASE_SECONDS and never reach another instance.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.core.events import is_tenant_id
from shared.storage.redisconn import run_script, tenant_key

log = logging.getLogger(__name__)

LEASE_SECONDS = 1.0
LEASE_RATE_SECONDS = 0.1
MAX_LEASES = 10_000  # beyond this many tenants, expired leases are forgotten

# KEYS[1] bucket hash {t: tokens, ts: seconds}; ARGV: rate/s, burst, cost, most to take, now
# ("" = Redis TIME). Takes at least `cost` and up to `most` tokens, or nothing. Returns {allowed
# 0|1, seconds until `cost` tokens are there, tokens left, tokens taken} as strings, because Redis
# truncates Lua numbers to integers.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local most = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
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
local taken = 0
if tokens >= cost then
  taken = math.min(tokens, most)
  tokens = tokens - taken
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(ts))
-- A full bucket is the same as no bucket: let idle tenants' keys expire.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait), tostring(tokens), tostring(taken)}
"""

# KEYS[1] bucket hash; ARGV: burst, tokens to give back. A refused all-or-nothing request returns
# what it took; no bucket (expired) is a full one already. Refill stays keyed to `ts`: the next take
# adds it and caps at the burst.
_GIVE_BACK = """
local burst = tonumber(ARGV[1])
local tokens = tonumber(redis.call('HGET', KEYS[1], 't'))
if tokens == nil then
  return 0
end
redis.call('HSET', KEYS[1], 't', tostring(math.min(burst, tokens + tonumber(ARGV[2]))))
return 1
"""


class Decision(NamedTuple):
    allowed: bool
    retry_after_seconds: int  # whole seconds for the Retry-After header; 0 when allowed
    remaining: int
    wait_seconds: float = 0.0  # the exact wait until the cost is there (a throttle sleeps this long)


@dataclass(slots=True)
class _Lease:
    tokens: float
    until: float


def bucket_key(tenant: str, name: str = "ratelimit") -> str:
    return tenant_key(tenant, name)  # grc:{tenant}:ratelimit


class RateLimiter:
    """`take(tenant, cost)` on a bucket of `burst` tokens refilled at `rate` tokens per second.

    rate 0 disables the limit. A request costing more than the burst would never pass, so its cost
    is capped at the burst: it needs a full bucket and empties it. If Redis fails the request is let
    through (logged): the limit protects capacity, and a Redis outage must not become an API outage
    of its own. `name`: the bucket's key per tenant (the API's `ratelimit`; backfills have their own
    bucket, `backfill`, so a backfill never spends the tenant's API budget).
    """

    def __init__(self, client: aioredis.Redis, *, rate: float, burst: int, name: str = "ratelimit") -> None:
        if burst < 1 or rate < 0:
            raise ValueError("burst must be >= 1 and rate >= 0")
        self._client = client
        self._name = name
        self._rate = rate
        self._burst = burst
        self._script = client.register_script(_TOKEN_BUCKET)
        self._give_back = client.register_script(_GIVE_BACK)
        self._extra = min(int(rate * LEASE_RATE_SECONDS), burst // 10)  # tokens taken ahead
        self._leases: dict[str, _Lease] = {}

    async def take(self, tenant: str, cost: int = 1, *, now: float | None = None) -> Decision:
        return (await self.take_all({tenant: cost}, now=now))[tenant]

    async def take_all(self, costs: Mapping[str, int], *, now: float | None = None) -> dict[str, Decision]:
        """Charge each tenant its cost, from its lease or in one round trip for all; all or nothing."""
        if self._rate == 0:
            self._check(costs)
            if any(c < 1 for c in costs.values()):
                raise ValueError("cost must be >= 1")
            return {t: Decision(allowed=True, retry_after_seconds=0, remaining=self._burst) for t in costs}
        clock = time.monotonic() if now is None else now
        if len(self._leases) > MAX_LEASES:
            self._leases = {t: lease for t, lease in self._leases.items() if lease.until > clock}
        out: dict[str, Decision] = {}
        spent: dict[str, float] = {}  # tenant -> tokens taken from its lease for this request
        need: dict[str, tuple[float, float]] = {}  # tenant -> (cost, what its lease holds)
        leases, burst = self._leases, self._burst
        # Once per tenant of every request (a bulk may name a thousand): a tenant with a lease was
        # checked when the lease was taken, so only the others are checked (below), before any
        # Redis key is made of them.
        for tenant, cost in costs.items():
            if cost < 1:
                raise ValueError("cost must be >= 1")
            if cost > burst:
                cost = burst
            lease = leases.get(tenant)
            have = lease.tokens if lease is not None and lease.until > clock else 0.0
            if have >= cost:
                lease.tokens = left = have - cost  # type: ignore[union-attr]
                spent[tenant] = cost
                out[tenant] = Decision(True, 0, int(left))  # int(): floor of a non-negative number
            else:
                need[tenant] = (cost, have)
        fetched: dict[str, float] = {}  # tenant -> tokens taken from Redis for this request
        refused = False
        if need:
            try:
                self._check(need)
            except ValueError:
                for tenant, n in spent.items():
                    leases[tenant].tokens += n
                raise
            await self._take_leases(need, clock, now, out, spent, fetched)
            refused = not all(out[t].allowed for t in need)
        if refused:
            # All or nothing: what came from a lease goes back to it; what came from Redis goes
            # back to Redis, where every instance sees it and no lease expiry can drop it.
            back: dict[str, float] = {}
            for tenant, n in spent.items():
                lease = leases[tenant]
                lease.tokens += n
                if fetched.get(tenant):
                    lease.tokens -= fetched[tenant]
                    back[tenant] = fetched[tenant]
            if back:
                await self._return_tokens(back)
        return out

    @staticmethod
    def _check(costs: Mapping[str, Any]) -> None:
        for tenant in costs:
            if not is_tenant_id(tenant):
                raise ValueError("invalid tenant id")

    async def _return_tokens(self, back: Mapping[str, float]) -> None:
        calls = [([bucket_key(t, self._name)], [str(self._burst), repr(n)]) for t, n in back.items()]
        try:
            await run_script(self._client, self._give_back, calls)
        except RedisError as exc:  # the tokens are lost: the tenant is refused early, never let through
            log.warning("rate limit tokens of %d tenant(s) not given back: %s", len(back), type(exc).__name__)

    async def _take_leases(self, need: dict[str, tuple[float, float]], clock: float, now: float | None,
                           out: dict[str, Decision], spent: dict[str, float],
                           fetched: dict[str, float]) -> None:
        rate, burst = repr(float(self._rate)), str(self._burst)
        redis_clock = "" if now is None else repr(float(now))
        calls = []
        for tenant, (cost, have) in need.items():
            short = cost - have
            most = short + self._extra
            calls.append(([bucket_key(tenant, self._name)], [rate, burst, repr(short), repr(most), redis_clock]))
        try:
            replies = await run_script(self._client, self._script, calls)
        except RedisError as exc:
            log.warning("rate limit for %d tenant(s) not applied: %s", len(need), type(exc).__name__)
            for tenant in need:
                out[tenant] = Decision(allowed=True, retry_after_seconds=0, remaining=0)
            return
        for (tenant, (cost, have)), reply in zip(need.items(), replies):
            if isinstance(reply, Exception):  # this tenant's script failed in Redis: let it through
                log.warning("rate limit for %s not applied: %s", tenant, type(reply).__name__)
                out[tenant] = Decision(allowed=True, retry_after_seconds=0, remaining=0)
                continue
            allowed, wait, left, taken = (float(x) for x in reply)
            if allowed != 1:
                out[tenant] = Decision(allowed=False, retry_after_seconds=max(1, math.ceil(wait)), remaining=0,
                                       wait_seconds=wait)
                continue
            lease = self._leases.get(tenant)
            if lease is None or lease.until <= clock:
                lease = self._leases[tenant] = _Lease(0.0, 0.0)
            lease.tokens = have + taken - cost
            fetched[tenant] = taken
            lease.until = clock + LEASE_SECONDS
            spent[tenant] = cost
            out[tenant] = Decision(allowed=True, retry_after_seconds=0,
                                   remaining=math.floor(left + lease.tokens))
