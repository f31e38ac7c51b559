"""Per-tenant real-time metrics on the real Redis: windows, rates, top lists, percentiles, TTLs."""
from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest
from redis.asyncio import Redis

from shared.observability.tenant_metrics import (
    ACTIVE_KEY,
    BUCKET_SECONDS,
    BUCKET_TTL_SECONDS,
    TENANTS_KEY,
    BatchStats,
    TenantMetrics,
    hist_index,
    hist_upper,
)
from shared.storage.redisconn import tenant_key
from tests.doubles import RoundTrips


@pytest.fixture
def tenant() -> str:
    return f"mx-{uuid.uuid4().hex[:12]}"


def batch(tenant: str, *, acc: int = 0, flt: int = 0, rej: int = 0, fail: int = 0,
          types: dict[str, int] | None = None, sources: dict[str, int] | None = None,
          dests: dict[str, int] | None = None, latencies: list[float] = (), delays: list[float] = ()) -> BatchStats:
    stats = BatchStats()
    ts = stats.tenant(tenant)
    for name, n in (("acc", acc), ("flt", flt), ("rej", rej), ("fail", fail)):
        if n:
            ts.count(name, n)
    for k, n in (types or {}).items():
        ts.count(f"t:{k}", n)
    for k, n in (sources or {}).items():
        ts.count(f"s:{k}", n)
    for k, n in (dests or {}).items():
        ts.count(f"d:{k}", n)
    for ms in latencies:
        ts.observe_latency(ms)
    for ms in delays:
        ts.observe_delay(ms)
    return stats


def test_histogram_bucket_bounds() -> None:
    for ms in (0.05, 0.1, 1.0, 7.3, 100.0, 12_345.6):
        idx = hist_index(ms)
        upper = hist_upper(idx)
        assert upper >= ms and upper <= max(ms, 0.1) * 1.1 + 1e-9
    assert hist_index(0) == 0 and hist_index(1.0) < hist_index(1.2)


async def test_windows_totals_and_rates(redis: Redis, tenant: str) -> None:
    m = TenantMetrics(redis)
    now = float(int(time.time() // BUCKET_SECONDS) * BUCKET_SECONDS + 5)  # mid-bucket: no edge effects
    await m.record(batch(tenant, acc=12, flt=3, rej=2, fail=1,
                         types={"RISK_UPDATED": 8, "RISK_CREATED": 4}, sources={"ARCHER_GRC": 12},
                         dests={"redis:ok": 12, "redis:fail": 1}), now=now)
    await m.record(batch(tenant, acc=30, types={"CONTROL_TESTED": 30}, sources={"FRONTEND_APP": 30},
                         dests={"redis:ok": 30}), now=now - 120)       # inside 5m and 1h, not 1m
    await m.record(batch(tenant, acc=60, rej=40, types={"USER_ACTION": 60}, sources={"MCP_SERVER": 60},
                         dests={"redis:park": 5}), now=now - 1200)     # inside 1h only
    snap = await m.snapshot(tenant, now=now)
    w = snap["windows"]
    assert snap["tenantId"] == tenant
    assert [w[k]["accepted"] for k in ("1m", "5m", "1h")] == [12, 42, 102]
    assert [w[k]["windowSeconds"] for k in ("1m", "5m", "1h")] == [60, 300, 3600]
    assert w["1m"]["eventsPerSecond"] == round(12 / 60, 3)
    assert w["5m"]["eventsPerSecond"] == round(42 / 300, 3)
    assert w["1m"]["filtered"] == 3 and w["1m"]["rejected"] == 2 and w["1m"]["failed"] == 1
    assert w["1m"]["errorRate"] == round(3 / 15, 4)
    assert w["1h"]["errorRate"] == round((2 + 1 + 40) / (102 + 1 + 42), 4)
    assert w["1m"]["destinations"] == {"redis": {"delivered": 12, "failed": 1, "parked": 0}}
    assert w["1h"]["destinations"] == {"redis": {"delivered": 42, "failed": 1, "parked": 5}}
    assert w["1m"]["deliveryErrorRate"] == round(1 / 13, 4)
    assert [t["name"] for t in w["1m"]["topEventTypes"]] == ["RISK_UPDATED", "RISK_CREATED"]
    assert w["1h"]["topEventTypes"][0] == {"name": "USER_ACTION", "count": 60}
    assert [s["name"] for s in w["1h"]["topSources"]] == ["MCP_SERVER", "FRONTEND_APP", "ARCHER_GRC"]
    t = snap["totals"]
    assert t["accepted"] == 102 and t["rejected"] == 42 and t["filtered"] == 3
    # An empty tenant has zeros, not errors.
    empty = await m.snapshot(f"{tenant}-none", now=now)
    assert empty["windows"]["1m"]["accepted"] == 0 and empty["windows"]["1m"]["latencyMs"]["p50"] is None
    assert empty["windows"]["1m"]["errorRate"] == 0.0


async def test_top_lists_order_and_cap(redis: Redis, tenant: str) -> None:
    m = TenantMetrics(redis)
    types = {"RISK_CREATED": 5, "RISK_UPDATED": 9, "CONTROL_FAILED": 5, "POLICY_VIOLATION": 1,
             "DATA_ANOMALY": 7, "USER_ACTION": 2, "SYSTEM_ERROR": 3}
    await m.record(batch(tenant, acc=32, types=types))
    top = (await m.snapshot(tenant))["windows"]["1m"]["topEventTypes"]
    # Count descending, ties by name; five at most.
    assert [(t["name"], t["count"]) for t in top] == [
        ("RISK_UPDATED", 9), ("DATA_ANOMALY", 7), ("CONTROL_FAILED", 5), ("RISK_CREATED", 5), ("SYSTEM_ERROR", 3)]


async def test_latency_percentiles_within_ten_percent(redis: Redis, tenant: str) -> None:
    m = TenantMetrics(redis)
    samples = [float(i) for i in range(1, 1001)]  # 1..1000 ms
    # Two batches, split unevenly, merged by the window.
    await m.record(batch(tenant, acc=300, latencies=samples[::3]))
    await m.record(batch(tenant, acc=700, latencies=[s for i, s in enumerate(samples) if i % 3]))
    lat = (await m.snapshot(tenant))["windows"]["1m"]["latencyMs"]
    ordered = sorted(samples)
    for q, key in ((0.50, "p50"), (0.95, "p95"), (0.99, "p99")):
        true = ordered[math.ceil(q * len(ordered)) - 1]
        assert true <= lat[key] <= true * 1.1, (key, true, lat[key])
    assert lat["p50"] <= lat["p95"] <= lat["p99"]
    assert lat["mean"] == pytest.approx(500.5, rel=1e-6)


async def test_change_feed_delay(redis: Redis, tenant: str) -> None:
    m = TenantMetrics(redis)
    delays = [100.0] * 98 + [2_000.0, 5_000.0]
    await m.record(batch(tenant, delays=delays))
    d = (await m.snapshot(tenant))["windows"]["5m"]["changeFeedDelayMs"]
    assert 100 <= d["p50"] <= 110
    assert 2_000 <= d["p99"] <= 2_200
    assert 5_000 <= d["max"] <= 5_500
    assert d["mean"] == pytest.approx(sum(delays) / 100)


async def test_bucket_expires_total_does_not(redis: Redis, tenant: str) -> None:
    now = time.time()
    await TenantMetrics(redis).record(batch(tenant, acc=1, latencies=[5.0]), now=now)
    bkey = tenant_key(tenant, "m", "b", str(int(now // BUCKET_SECONDS)))
    assert 0 < await redis.ttl(bkey) <= BUCKET_TTL_SECONDS
    assert BUCKET_TTL_SECONDS >= 3600 + BUCKET_SECONDS  # a bucket outlives the 1-hour window
    assert await redis.ttl(tenant_key(tenant, "m", "total")) == -1
    total = await redis.hgetall(tenant_key(tenant, "m", "total"))
    assert b"acc" in total and not any(k.startswith(b"lat") for k in total)  # no histograms in totals
    assert await redis.sismember(TENANTS_KEY, tenant)


async def test_one_round_trip_per_batch(redis_port: int, tenant: str) -> None:
    trips = RoundTrips(redis_port)
    client = trips.client
    try:
        m = TenantMetrics(client)
        stats = batch(tenant, acc=5, types={"RISK_UPDATED": 5}, dests={"redis:ok": 5}, latencies=[1, 2, 3])
        other = batch(f"{tenant}-b", acc=2, rej=1)
        stats.tenants.update(other.tenants)
        await m.record(batch(f"{tenant}-w", acc=1))  # the script is loaded once per server
        await trips.warm()
        await m.record(stats)
        assert trips.count == 1
        await m.record(BatchStats())  # nothing to write: no round trip
        assert trips.count == 1
        snap = await m.snapshot(tenant)
        assert trips.count == 2  # a snapshot is one round trip too
        assert snap["windows"]["1m"]["accepted"] == 5
        assert (await m.snapshot(f"{tenant}-b"))["windows"]["1m"]["rejected"] == 1
    finally:
        await client.aclose()


async def test_a_thousand_tenants_in_one_round_trip(redis_port: int, redis: Redis, tenant: str) -> None:
    trips = RoundTrips(redis_port)
    client = trips.client
    try:
        m = TenantMetrics(client)
        stats = BatchStats()
        for i in range(1000):
            stats.tenants.update(batch(f"{tenant}-{i}", acc=2, dests={"redis:ok": 2}, latencies=[3.0, 4.0]).tenants)
        await m.record(batch(f"{tenant}-w", acc=1))
        await trips.warm()
        await m.record(stats)
        assert trips.count == 1
    finally:
        await client.aclose()
    for i in (0, 999):
        w = (await TenantMetrics(redis).snapshot(f"{tenant}-{i}"))["windows"]["1m"]
        assert w["accepted"] == 2 and w["destinations"]["redis"]["delivered"] == 2 and w["latencyMs"]["p50"]
    assert await redis.zscore(ACTIVE_KEY, f"{tenant}-999") and await redis.sismember(TENANTS_KEY, f"{tenant}-0")


async def test_script_flushed_from_redis_is_loaded_again(redis: Redis, tenant: str) -> None:
    await redis.script_flush()
    await TenantMetrics(redis).record(batch(tenant, acc=3, latencies=[1.0]))
    assert (await TenantMetrics(redis).snapshot(tenant))["totals"]["accepted"] == 3


async def test_pipeline_counts_reach_redis(redis: Redis, tenant: str) -> None:
    """End to end: a pipeline batch lands in the tenant's counters, rejected events included."""
    from shared.delivery.pipeline import Pipeline, PublishContext
    from tests.doubles import MemoryConfigs, MemoryDestination, MemoryDestinations, event_dict

    pipe = Pipeline(MemoryConfigs(), MemoryDestinations(MemoryDestination()), TenantMetrics(redis))
    await pipe.publish_raw([event_dict(tenantId=tenant), event_dict(tenantId=tenant, action="NOPE"),
                            event_dict(tenantId=tenant, eventType="CONTROL_FAILED")], PublishContext())
    w = (await TenantMetrics(redis).snapshot(tenant))["windows"]["1m"]
    assert w["accepted"] == 2 and w["rejected"] == 1 and w["errorRate"] == round(1 / 3, 4)
    assert {t["name"] for t in w["topEventTypes"]} == {"RISK_UPDATED", "CONTROL_FAILED"}
    assert w["latencyMs"]["p50"] is not None


async def test_write_behind_merges_batches_into_one_write_and_reads_flush_first(
        redis_port: int, redis: Redis, tenant: str) -> None:
    trips = RoundTrips(redis_port)
    try:
        m = TenantMetrics(trips.client, flush_seconds=30.0)  # no timer flush within this test
        await m.record(batch(f"{tenant}-w", acc=1))
        await m.flush()  # the script is loaded once per server
        await trips.warm()
        for _ in range(20):  # 20 batches, each naming the same 100 tenants
            stats = BatchStats()
            for i in range(100):
                stats.tenants.update(batch(f"{tenant}-{i}", acc=3, latencies=[7.0]).tenants)
            await m.record(stats)
        assert trips.count == 0  # nothing written yet
        assert not await redis.exists(tenant_key(f"{tenant}-0", "m", "total"))  # another instance sees nothing yet
        snap = await m.snapshot(f"{tenant}-0")  # a read on this instance flushes first
        assert trips.count == 2  # one write for all 2,000 tenant-batches, then the read
        assert snap["windows"]["1m"]["accepted"] == 60 and snap["totals"]["accepted"] == 60
        assert snap["windows"]["1m"]["latencyMs"]["p50"] is not None
        assert (await TenantMetrics(trips.client).snapshot(f"{tenant}-99"))["totals"]["accepted"] == 60
    finally:
        await trips.client.aclose()


async def test_write_behind_flushes_by_itself_and_on_close(redis: Redis, tenant: str) -> None:
    m = TenantMetrics(redis, flush_seconds=0.05)
    await m.record(batch(tenant, acc=2))
    deadline = time.monotonic() + 5
    while not await redis.exists(tenant_key(tenant, "m", "total")):  # the background flush
        assert time.monotonic() < deadline, "not flushed"
        await asyncio.sleep(0.02)
    m = TenantMetrics(redis, flush_seconds=60.0)
    await m.record(batch(f"{tenant}-c", acc=4))
    await m.close()
    assert int((await redis.hgetall(tenant_key(f"{tenant}-c", "m", "total")))[b"acc"]) == 4


async def test_write_behind_caps_what_it_keeps(redis: Redis, tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.observability.tenant_metrics as metrics_module

    monkeypatch.setattr(metrics_module, "MAX_PENDING_TENANTS", 10)
    m = TenantMetrics(redis, flush_seconds=60.0)
    stats = BatchStats()
    for i in range(10):
        stats.tenants.update(batch(f"{tenant}-{i}", acc=1).tenants)
    await m.record(stats)  # the cap is reached: written before record returns
    assert await redis.exists(tenant_key(f"{tenant}-9", "m", "total"))
    await m.close()
