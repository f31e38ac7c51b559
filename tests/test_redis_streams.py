"""Redis Streams destination against the real Redis: key layout, entry fields, trimming, reads, health."""
from __future__ import annotations

import time
import uuid

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from shared.core.destination_options import RedisStreamOptions
from shared.core.enrich import enrich, now_iso
from shared.core.events import Event, EventIn
from shared.destinations.base import Chunk, publish_one
from shared.destinations.redis_streams import AGE_TRIM_SECONDS, DAY_MS, RedisStreamsDestination, stream_key
from shared.storage.redisconn import tenant_key
from tests.doubles import event_dict, stream_config

NODE_MAX_ENTRIES = 100  # Redis default stream-node-max-entries: approximate trims remove whole nodes


@pytest.fixture
def tenant() -> str:
    return f"rs-{uuid.uuid4().hex[:12]}"


def events(tenant: str, n: int, **over: object) -> list[Event]:
    ingested = now_iso()
    return [enrich(EventIn.model_validate(event_dict(tenantId=tenant, entityId=f"e{i}", **over)), ingested_at=ingested)
            for i in range(n)]


def test_stream_key_has_the_tenant_hash_tag() -> None:
    assert stream_key("tenant-123") == "grc:{tenant-123}:events"
    # Every key of a tenant hashes to the same cluster slot; other tenants mostly elsewhere.
    slots = {key_slot(k.encode()) for k in (stream_key("tenant-123"), tenant_key("tenant-123", "m", "total"),
                                            tenant_key("tenant-123", "cfgver"))}
    assert len(slots) == 1
    assert key_slot(stream_key("tenant-124").encode()) not in slots


async def test_publish_writes_fields_in_one_stream(redis: Redis, tenant: str) -> None:
    dest = RedisStreamsDestination(redis)
    evs = events(tenant, 3) + events(tenant, 1, eventType="CONTROL_FAILED", source="FRONTEND_APP")
    out = await publish_one(dest, evs, RedisStreamOptions(), stream_config(tenant))
    assert [d.status for d in out] == ["delivered"] * 4 and all(d.destination == "redis" for d in out)
    entries = await redis.xrange(stream_key(tenant))
    assert [e[0].decode() for e in entries] == [d.ref for d in out]
    assert set(entries[0][1]) == {b"t", b"s", b"f", b"e"}
    assert entries[0][1][b"t"] == b"RISK_UPDATED" and entries[0][1][b"s"] == b"ARCHER_GRC"
    assert entries[3][1][b"t"] == b"CONTROL_FAILED" and entries[3][1][b"s"] == b"FRONTEND_APP"
    assert {e[1][b"f"] for e in entries} == {b"native"}
    assert [orjson.loads(e[1][b"e"]) for e in entries] == [orjson.loads(ev.to_json()) for ev in evs]


async def test_cloudevents_format_is_stored_when_chosen(redis: Redis, tenant: str) -> None:
    dest = RedisStreamsDestination(redis)
    [ev] = events(tenant, 1)
    await publish_one(dest, [ev], RedisStreamOptions(format="cloudevents"), stream_config(tenant))
    [(_, fields)] = await redis.xrange(stream_key(tenant))
    assert fields[b"f"] == b"cloudevents"
    doc = orjson.loads(fields[b"e"])
    assert doc["specversion"] == "1.0" and doc["id"] == ev.eventId and doc["tenantid"] == tenant
    [read] = (await dest.read_recent(tenant, 1))[0]
    assert read["format"] == "cloudevents" and read["event"]["id"] == ev.eventId


async def test_empty_batch_writes_nothing(redis: Redis, tenant: str) -> None:
    assert await publish_one(RedisStreamsDestination(redis), [], RedisStreamOptions(), stream_config(tenant)) == []
    assert await redis.exists(stream_key(tenant)) == 0


async def test_retention_days_trims_old_entries_with_minid(redis: Redis, tenant: str) -> None:
    """Approximate MINID removes only whole macro nodes whose entries are all older than the cut.

    So: 1,000 entries 3 days old (10 full nodes), then 5 entries 1 hour old. After one publish
    with retentionDays=1, at most one node's worth of old entries may survive (the node the recent
    entries share with the tail of the old ones), every recent entry survives, and so does the new one.
    """
    key = stream_key(tenant)
    now_ms = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    old_start = now_ms - 3 * DAY_MS
    for i in range(1000):
        pipe.xadd(key, {"t": "RISK_UPDATED", "s": "ARCHER_GRC", "f": "native", "e": b"{}"}, id=f"{old_start + i}-0")
    recent_start = now_ms - 3_600_000
    for i in range(5):
        pipe.xadd(key, {"t": "RISK_UPDATED", "s": "ARCHER_GRC", "f": "native", "e": b"{}"}, id=f"{recent_start + i}-0")
    await pipe.execute()
    assert await redis.xlen(key) == 1005

    out = await publish_one(RedisStreamsDestination(redis), events(tenant, 1), RedisStreamOptions(),
                                                       stream_config(tenant, retentionDays=1))
    ids = [int(e[0].split(b"-")[0]) for e in await redis.xrange(key)]
    cut = now_ms - DAY_MS
    old_left = [i for i in ids if i < cut]
    assert len(old_left) < NODE_MAX_ENTRIES, len(old_left)
    assert [i for i in ids if recent_start <= i < recent_start + 5] == [recent_start + i for i in range(5)]
    assert ids[-1] == int(out[0].ref.split("-")[0])  # type: ignore[union-attr]


async def test_the_age_trim_runs_on_a_tenants_first_write_then_at_most_once_per_period(
        redis: Redis, tenant: str) -> None:
    """Entries past the age cap go on the instance's first write for the tenant, and then at most once
    per AGE_TRIM_SECONDS (the clock is the destination's): writes in between leave older entries."""
    key = stream_key(tenant)
    now = [1000.0]
    dest = RedisStreamsDestination(redis, clock=lambda: now[0])
    options, config = RedisStreamOptions(retentionHours=1), stream_config(tenant)

    async def seed_old(key: str = key) -> None:  # 3 full nodes two hours old
        start, pipe = int(time.time() * 1000) - 2 * 3_600_000, redis.pipeline(transaction=False)
        for i in range(3 * NODE_MAX_ENTRIES):
            pipe.xadd(key, {"e": b"{}"}, id=f"{start + i}-{i}")
        await pipe.execute()

    async def old_left(key: str = key) -> int:
        cut = int(time.time() * 1000) - 3_600_000
        return len([e for e in await redis.xrange(key) if int(e[0].split(b"-")[0]) < cut])

    await seed_old()
    await publish_one(dest, events(tenant, 1), options, config)
    assert await old_left() < NODE_MAX_ENTRIES  # the first write trimmed
    await redis.delete(key)
    await seed_old()
    now[0] += AGE_TRIM_SECONDS - 1
    await publish_one(dest, events(tenant, 1), options, config)
    assert await old_left() == 3 * NODE_MAX_ENTRIES  # within the period: no age trim
    now[0] += 1
    await publish_one(dest, events(tenant, 1), options, config)
    assert await old_left() < NODE_MAX_ENTRIES  # the period over: trimmed again
    # Another tenant's first write trims its own stream at once, whatever this tenant's period.
    other = f"{tenant}-b"
    await seed_old(stream_key(other))
    await publish_one(dest, events(other, 1), options, stream_config(other))
    assert await old_left(stream_key(other)) < NODE_MAX_ENTRIES


async def test_long_retention_keeps_everything(redis: Redis, tenant: str) -> None:
    key = stream_key(tenant)
    start = int(time.time() * 1000) - 3 * DAY_MS
    pipe = redis.pipeline(transaction=False)
    for i in range(300):
        pipe.xadd(key, {"e": b"{}"}, id=f"{start + i}-0")
    await pipe.execute()
    await publish_one(RedisStreamsDestination(redis), events(tenant, 1), RedisStreamOptions(retentionHours=30 * 24),
                                                 stream_config(tenant, retentionDays=30))
    assert await redis.xlen(key) == 301


async def test_the_stream_is_bounded_by_default_by_age_and_length(redis: Redis, tenant: str) -> None:
    """The default options keep 6 hours at most (retentionDays 30 notwithstanding) and 10,000 entries."""
    defaults = RedisStreamOptions()
    assert (defaults.maxLen, defaults.retentionHours) == (10_000, 6)
    hour = 3_600_000
    key = stream_key(tenant)
    now_ms = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    for i in range(1000):  # 10 full nodes, 7 hours old
        pipe.xadd(key, {"t": "RISK_UPDATED", "s": "ARCHER_GRC", "f": "native", "e": b"{}"},
                  id=f"{now_ms - 7 * hour + i}-0")
    for i in range(5):  # 5 hours old: kept
        pipe.xadd(key, {"t": "RISK_UPDATED", "s": "ARCHER_GRC", "f": "native", "e": b"{}"},
                  id=f"{now_ms - 5 * hour + i}-0")
    await pipe.execute()
    await publish_one(RedisStreamsDestination(redis), events(tenant, 1), defaults, stream_config(tenant, retentionDays=30))
    ids = [int(e[0].split(b"-")[0]) for e in await redis.xrange(key)]
    assert len([i for i in ids if i < now_ms - 6 * hour]) < NODE_MAX_ENTRIES
    assert len([i for i in ids if now_ms - 6 * hour <= i < now_ms - 4 * hour]) == 5
    # Length: 10,600 recent entries in batches: never more than one node above the cap.
    other = f"{tenant}-len"
    dest = RedisStreamsDestination(redis)
    for _ in range(10):
        await publish_one(dest, events(other, 1060), RedisStreamOptions(dedupeSeconds=0), stream_config(other))
    assert 10_000 <= await redis.xlen(stream_key(other)) < 10_000 + NODE_MAX_ENTRIES


async def test_max_len_caps_the_stream(redis: Redis, tenant: str) -> None:
    dest = RedisStreamsDestination(redis)
    evs = events(tenant, 1000)
    out = await publish_one(dest, evs, RedisStreamOptions(maxLen=100), stream_config(tenant))
    length = await redis.xlen(stream_key(tenant))
    # Approximate: never below the cap, never more than one macro node above it.
    assert 100 <= length < 100 + NODE_MAX_ENTRIES, length
    newest = await redis.xrevrange(stream_key(tenant), count=1)
    assert newest[0][0].decode() == out[-1].ref
    # Without a cap (null), nothing is trimmed by length.
    other = f"{tenant}-nocap"
    await publish_one(dest, events(other, 300), RedisStreamOptions(maxLen=None), stream_config(other))
    assert await redis.xlen(stream_key(other)) == 300


async def test_read_recent_newest_first_with_limit(redis: Redis, tenant: str) -> None:
    dest = RedisStreamsDestination(redis)
    evs = events(tenant, 30)
    await publish_one(dest, evs, RedisStreamOptions(), stream_config(tenant))
    got = (await dest.read_recent(tenant, 10))[0]
    assert [g["event"]["entityId"] for g in got] == [f"e{i}" for i in range(29, 19, -1)]
    ids = [tuple(int(p) for p in g["streamId"].split("-")) for g in got]  # (ms, seq): compare as numbers
    assert ids == sorted(ids, reverse=True) and got[0]["format"] == "native"
    assert len((await dest.read_recent(tenant, 1000))[0]) == 30
    assert (await dest.read_recent("rs-never-written", 10))[0] == []


async def test_read_recent_filters_and_pages(redis: Redis, tenant: str) -> None:
    dest = RedisStreamsDestination(redis)
    cfg = stream_config(tenant)
    # Five matching events, then 1,500 others on top: matches lie beyond the first pages.
    await publish_one(dest, events(tenant, 5, eventType="CONTROL_FAILED", source="FRONTEND_APP"), RedisStreamOptions(), cfg)
    await publish_one(dest, events(tenant, 500, eventType="CONTROL_FAILED"), RedisStreamOptions(), cfg)
    await publish_one(dest, events(tenant, 1000), RedisStreamOptions(), cfg)

    by_type = (await dest.read_recent(tenant, 20, event_type="CONTROL_FAILED"))[0]
    assert len(by_type) == 20 and {g["event"]["eventType"] for g in by_type} == {"CONTROL_FAILED"}
    assert [g["event"]["entityId"] for g in by_type] == [f"e{i}" for i in range(499, 479, -1)]

    both = (await dest.read_recent(tenant, 10, event_type="CONTROL_FAILED", source="FRONTEND_APP"))[0]
    assert [g["event"]["entityId"] for g in both] == ["e4", "e3", "e2", "e1", "e0"]
    ids = [g["streamId"] for g in both]
    assert len(set(ids)) == 5  # no entry returned twice across page borders

    by_source = (await dest.read_recent(tenant, 3, source="ARCHER_GRC"))[0]
    assert [g["event"]["source"] for g in by_source] == ["ARCHER_GRC"] * 3
    # The scan cap bounds the work: the five FRONTEND_APP entries are 1,500 deep.
    assert (await dest.read_recent(tenant, 10, source="FRONTEND_APP", scan_cap=1000))[0] == []
    assert len((await dest.read_recent(tenant, 10, source="FRONTEND_APP"))[0]) == 5


async def test_unfiltered_read_pages_beyond_one_page(redis: Redis, tenant: str) -> None:
    dest = RedisStreamsDestination(redis)
    await publish_one(dest, events(tenant, 50), RedisStreamOptions(), stream_config(tenant))
    got = (await dest.read_recent(tenant, 50, event_type="RISK_UPDATED"))[0]
    assert len(got) == 50 and len({g["streamId"] for g in got}) == 50


async def test_a_listing_stops_at_its_byte_budget_and_says_so(redis: Redis, tenant: str) -> None:
    """Stops before the event that would pass `max_bytes` (one event at least), newest first, none
    skipped; read in pages sized by what the first saw, not one read of `limit` entries."""
    dest = RedisStreamsDestination(redis)
    await publish_one(dest, events(tenant, 40), RedisStreamOptions(), stream_config(tenant))
    size = len((await redis.xrevrange(stream_key(tenant), count=1))[0][1][b"e"])
    got, truncated = await dest.read_recent(tenant, 1000, max_bytes=size * 25 + size // 2)
    assert truncated and [g["event"]["entityId"] for g in got] == [f"e{i}" for i in range(39, 14, -1)]
    one, truncated = await dest.read_recent(tenant, 1000, max_bytes=1)
    assert truncated and [g["event"]["entityId"] for g in one] == ["e39"]
    every, truncated = await dest.read_recent(tenant, 1000)
    assert not truncated and len(every) == 40
    filtered, truncated = await dest.read_recent(tenant, 1000, event_type="RISK_UPDATED",
                                                      max_bytes=size * 3)
    assert truncated and len(filtered) == 3


async def test_health_reports_memory(redis: Redis) -> None:
    h = await RedisStreamsDestination(redis).health()
    assert h.name == "redis" and h.status == "healthy"
    d = h.to_dict()
    assert d["usedMemoryBytes"] > 0 and d["latencyMs"] is not None and d["latencyMs"] >= 0
    assert "password" not in orjson.dumps(d).decode().lower()


async def test_health_degraded_near_maxmemory(redis: Redis) -> None:
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory", str(int(used * 1.1)))
    try:
        h = await RedisStreamsDestination(redis).health()
    finally:
        await redis.config_set("maxmemory", "0")
    assert h.status == "degraded" and h.info["memoryPercent"] > 80 and h.info["maxMemoryBytes"] > 0


async def test_health_and_publish_when_redis_is_down() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Redis(port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))  # fail fast
    try:
        dest = RedisStreamsDestination(client)
        h = await dest.health()
        out = await publish_one(dest, events("rs-down", 2), RedisStreamOptions(), stream_config("rs-down"))
    finally:
        await client.aclose()
    assert h.status == "unhealthy" and h.detail == "ConnectionError"
    assert [d.status for d in out] == ["failed", "failed"] and all(d.transient for d in out)


async def test_xadd_error_reply_is_a_permanent_failure(redis: Redis, tenant: str) -> None:
    # The key holds a string: XADD gets WRONGTYPE, which retrying cannot fix.
    await redis.set(stream_key(tenant), "not a stream")
    out = await publish_one(RedisStreamsDestination(redis), events(tenant, 2), RedisStreamOptions(), stream_config(tenant))
    assert [d.status for d in out] == ["failed", "failed"]
    assert out[0].transient is False and "WRONGTYPE" in (out[0].error or "")


async def test_a_thousand_tenants_in_one_call_use_one_connection(redis_port: int) -> None:
    """Every tenant's chunk in one pipeline: a pool of ONE connection (redis-py's non-blocking pool,
    which raises MaxConnectionsError for a second one) serves a call naming 1,000 tenants."""
    client = Redis(port=redis_port, max_connections=1)
    try:
        dest = RedisStreamsDestination(client)
        tenants = [f"rs-{uuid.uuid4().hex[:8]}-{i}" for i in range(1000)]
        chunks = [Chunk(stream_config(t), RedisStreamOptions(), events(t, 2)) for t in tenants]
        out = await dest.publish(chunks)
        assert [len(d) for d in out] == [2] * 1000
        assert {d.status for ds in out for d in ds} == {"delivered"}
        for t, ds in zip(tenants[:20], out[:20]):  # each tenant's own stream, in order
            assert [e[0].decode() for e in await client.xrange(stream_key(t))] == [d.ref for d in ds]
    finally:
        await client.aclose()


async def test_chunks_of_one_tenant_land_in_call_order(redis: Redis, tenant: str) -> None:
    dest = RedisStreamsDestination(redis)
    evs = events(tenant, 7)
    cfg = stream_config(tenant)
    out = await dest.publish([Chunk(cfg, RedisStreamOptions(), evs[:3]), Chunk(cfg, RedisStreamOptions(), []),
                              Chunk(cfg, RedisStreamOptions(), evs[3:])])
    assert [len(d) for d in out] == [3, 0, 4]
    stored = [orjson.loads(e[1][b"e"])["entityId"] for e in await redis.xrange(stream_key(tenant))]
    assert stored == [f"e{i}" for i in range(7)]


async def test_script_flushed_from_redis_is_loaded_again(redis: Redis, tenant: str) -> None:
    dest = RedisStreamsDestination(redis)
    await redis.script_flush()  # what a restart or failover does to the script cache
    out = await publish_one(dest, events(tenant, 2), RedisStreamOptions(), stream_config(tenant))
    assert [d.status for d in out] == ["delivered"] * 2


async def test_a_retried_chunk_appends_only_the_events_that_did_not_land(redis: Redis, tenant: str) -> None:
    """A chunk sent again after an unknown outcome in which only its first events landed (the
    markers exist for those): they answer their first entry, the others are appended once."""
    dest = RedisStreamsDestination(redis)
    evs = events(tenant, 5)
    cfg = stream_config(tenant)
    first = await publish_one(dest, evs[:2], RedisStreamOptions(), cfg)
    again = await publish_one(dest, evs, RedisStreamOptions(), cfg)
    assert [d.status for d in again] == ["delivered"] * 5
    assert [d.ref for d in again[:2]] == [d.ref for d in first]
    stored = [orjson.loads(e[1][b"e"])["eventId"] for e in await redis.xrange(stream_key(tenant))]
    assert stored == [ev.eventId for ev in evs]


@pytest.mark.parametrize("landed_before", [False, True])
async def test_an_event_twice_in_one_chunk_is_appended_once(redis: Redis, tenant: str, landed_before: bool) -> None:
    """The same event twice in a chunk (a parked event drained with its redelivered copy): one
    entry, both answered with its ref -- whether or not some marker of the chunk existed before."""
    dest = RedisStreamsDestination(redis)
    [a, b] = events(tenant, 2)
    cfg = stream_config(tenant)
    if landed_before:
        await publish_one(dest, [b], RedisStreamOptions(), cfg)
    out = await publish_one(dest, [a, b, a], RedisStreamOptions(), cfg)
    assert [d.status for d in out] == ["delivered"] * 3
    assert out[0].ref == out[2].ref
    stored = [orjson.loads(e[1][b"e"])["eventId"] for e in await redis.xrange(stream_key(tenant))]
    assert sorted(stored) == sorted([a.eventId, b.eventId])
