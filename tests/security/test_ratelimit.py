"""Per-tenant token bucket against the real Redis (time passed in, so nothing sleeps)."""
from __future__ import annotations

import uuid
from typing import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.security.ratelimit import RateLimiter, bucket_key


@pytest.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    client = Redis(port=redis_port)
    yield client
    await client.aclose()


def tenant() -> str:
    return "t-" + uuid.uuid4().hex[:12]


async def test_burst_then_refused_with_retry_after(redis: Redis) -> None:
    limiter = RateLimiter(redis, rate=10, burst=50)
    t, now = tenant(), 1_000.0
    for i in range(5):
        d = await limiter.take(t, 10, now=now)
        assert d.allowed and d.remaining == 40 - 10 * i
    refused = await limiter.take(t, 1, now=now)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after_seconds == 1  # 1 token at 10/s: 0.1 s, rounded up to a whole second
    big = await limiter.take(t, 35, now=now)
    assert not big.allowed and big.retry_after_seconds == 4  # 35 tokens at 10/s = 3.5 s -> 4


async def test_refill_over_time(redis: Redis) -> None:
    limiter = RateLimiter(redis, rate=100, burst=200)
    t = tenant()
    assert (await limiter.take(t, 200, now=0.0)).allowed
    assert not (await limiter.take(t, 50, now=0.1)).allowed   # 10 tokens back
    d = await limiter.take(t, 50, now=0.6)                     # 60 tokens back
    assert d.allowed and d.remaining == 10
    d = await limiter.take(t, 1, now=100.0)                    # refill stops at the burst
    assert d.allowed and d.remaining == 199


async def test_refused_request_takes_nothing(redis: Redis) -> None:
    limiter = RateLimiter(redis, rate=1, burst=10)
    t = tenant()
    assert (await limiter.take(t, 8, now=0.0)).allowed
    assert not (await limiter.take(t, 5, now=0.0)).allowed
    assert (await limiter.take(t, 2, now=0.0)).allowed  # the refused 5 were not deducted


async def test_clients_share_the_bucket_and_tenants_do_not(redis: Redis, redis_port: int) -> None:
    other = Redis(port=redis_port)  # a second instance of the app
    try:
        a, b = RateLimiter(redis, rate=10, burst=30), RateLimiter(other, rate=10, burst=30)
        t, u = tenant(), tenant()
        assert (await a.take(t, 20, now=5.0)).allowed  # a also leased 1 token ahead (0.1 s of 10/s)
        d = await b.take(t, 20, now=5.0)
        assert not d.allowed and d.retry_after_seconds == 2  # 9 left: 11 more at 10/s
        assert (await b.take(t, 9, now=5.0)).allowed and not (await b.take(t, 1, now=5.0)).allowed
        assert (await a.take(t, 1, now=5.0)).allowed  # a's lease: never a token more than the bucket had
        assert not (await a.take(t, 1, now=5.0)).allowed
        assert (await b.take(u, 30, now=5.0)).allowed  # another tenant has its own bucket
    finally:
        await other.aclose()


async def test_cost_above_burst_needs_and_empties_a_full_bucket(redis: Redis) -> None:
    limiter = RateLimiter(redis, rate=10, burst=20)
    t = tenant()
    d = await limiter.take(t, 500, now=0.0)
    assert d.allowed and d.remaining == 0
    d = await limiter.take(t, 500, now=0.5)
    assert not d.allowed and d.retry_after_seconds == 2  # 15 more tokens at 10/s


async def test_key_is_cluster_safe_and_expires(redis: Redis) -> None:
    limiter = RateLimiter(redis, rate=100, burst=1000)
    t = tenant()
    assert bucket_key(t) == f"grc:{{{t}}}:ratelimit"
    await limiter.take(t, 1)  # Redis clock
    ttl_ms = await redis.pttl(bucket_key(t))
    assert 0 < ttl_ms <= 11_000  # a full refill (10 s) plus a second


async def test_redis_clock_is_used_when_no_time_is_given(redis: Redis) -> None:
    limiter = RateLimiter(redis, rate=1, burst=3)
    t = tenant()
    assert [(await limiter.take(t)).allowed for _ in range(4)] == [True, True, True, False]


async def test_rate_zero_disables_and_bad_input_is_rejected(redis: Redis) -> None:
    off = RateLimiter(redis, rate=0, burst=1)
    t = tenant()
    assert all([(await off.take(t, 1_000_000)).allowed for _ in range(3)])
    assert await redis.exists(bucket_key(t)) == 0
    with pytest.raises(ValueError):
        await off.take("Bad}Tenant", 1)
    with pytest.raises(ValueError):
        await off.take(t, 0)


async def test_redis_down_lets_requests_through() -> None:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from localdev.services import free_port

    dead = Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        d = await RateLimiter(dead, rate=1, burst=1).take(tenant(), 5)
        assert d.allowed
    finally:
        await dead.aclose()


async def test_many_tenants_are_charged_in_one_round_trip(redis_port: int) -> None:
    from tests.doubles import RoundTrips

    trips = RoundTrips(redis_port)
    client = trips.client
    try:
        limiter = RateLimiter(client, rate=10, burst=50)
        await limiter.take(tenant(), 1, now=0.0)  # the script is loaded once per server
        tenants = [tenant() for _ in range(500)]
        await trips.warm()
        got = await limiter.take_all({t: 10 for t in tenants}, now=0.0)
        assert trips.count == 1
        assert all(d.allowed and d.remaining == 40 for d in got.values()) and list(got) == tenants
    finally:
        await client.aclose()


async def test_one_refused_tenant_refuses_all_and_the_others_keep_their_tokens(redis: Redis) -> None:
    limiter = RateLimiter(redis, rate=10, burst=50)
    a, b, c = tenant(), tenant(), tenant()
    assert (await limiter.take(b, 45, now=0.0)).allowed  # b has 5 tokens left
    got = await limiter.take_all({a: 20, b: 10, c: 30}, now=0.0)
    assert [got[t].allowed for t in (a, b, c)] == [True, False, True]
    assert got[b].retry_after_seconds == 1  # 5 more tokens at 10/s
    # a's and c's tokens went back to their leases on this instance: 50 each still; b still has its 5.
    assert (await limiter.take(a, 50, now=0.0)).allowed and (await limiter.take(c, 50, now=0.0)).allowed
    assert (await limiter.take(b, 5, now=0.0)).allowed and not (await limiter.take(b, 1, now=0.0)).allowed


async def test_a_refused_request_gives_the_others_redis_tokens_back_to_every_instance(
        redis: Redis, redis_port: int) -> None:
    """Kept in this instance's lease, the tokens would be dropped after LEASE_SECONDS and never seen
    by another instance: a client that obeys Retry-After would find the fresh tenant's burst gone."""
    other = Redis(port=redis_port)  # a second instance of the app
    try:
        limiter, elsewhere = RateLimiter(redis, rate=0.2, burst=10), RateLimiter(other, rate=0.2, burst=10)
        exhausted, fresh = tenant(), tenant()
        assert (await limiter.take(exhausted, 10, now=0.0)).allowed
        got = await limiter.take_all({exhausted: 1, fresh: 10}, now=0.0)
        assert not got[exhausted].allowed and got[fresh].allowed
        assert float(await redis.hget(bucket_key(fresh), "t")) == 10.0  # back in the shared bucket
        assert (await elsewhere.take(fresh, 10, now=0.5)).allowed  # another instance spends it
        assert not (await limiter.take(fresh, 1, now=0.5)).allowed  # and it was given back once only
    finally:
        await other.aclose()


async def test_a_tenant_in_every_request_costs_one_redis_call_per_lease(redis_port: int) -> None:
    from tests.doubles import RoundTrips

    trips = RoundTrips(redis_port)
    try:
        limiter = RateLimiter(trips.client, rate=1000, burst=5000)  # leases of 100 tokens (0.1 s)
        await limiter.take(tenant(), 1, now=0.0)  # the script is loaded once per server
        tenants = [tenant() for _ in range(300)]
        await trips.warm()
        for i in range(101):  # 101 requests naming all 300 tenants, one token each
            got = await limiter.take_all(dict.fromkeys(tenants, 1), now=0.0 + i * 0.001)
            assert all(d.allowed for d in got.values())
        assert trips.count == 1  # the first request took 1 + a lease of 100 per tenant; 100 used it up
        await limiter.take_all(dict.fromkeys(tenants, 1), now=0.2)
        assert trips.count == 2  # used up: new leases, in one round trip
        await limiter.take_all(dict.fromkeys(tenants, 1), now=5.0)
        assert trips.count == 3  # a lease lasts LEASE_SECONDS: after that, a new one
    finally:
        await trips.client.aclose()
