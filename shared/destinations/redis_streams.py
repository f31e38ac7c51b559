"""Redis Streams destination: one stream per tenant, `grc:{tenant}:events`.

Each entry holds `t` (eventType), `s` (source), `f` (wire format) and `e` (the encoded event),
so readers can filter without parsing. Retention by `retentionDays` trims with MINID on every
XADD (approximate, so Redis trims whole macro-nodes cheaply); an optional length cap trims once
per batch. A batch is one pipelined round trip.

Writes are idempotent on eventId (option `dedupeSeconds`, default one hour): a small Lua script
appends the entry and keeps `grc:{tenant}:dlv:<eventId>` -> entry id, so a retry after an
unknown outcome (a timeout, a connection dropped mid-pipeline, a redelivered queue message)
returns the first entry's id instead of appending a second one. The marker only has to outlive
the retry horizon (in-process retries and the retry queue), hence the short TTL.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from shared.destinations.base import DependencyHealth, delivered, failed
from shared.destinations.options import RedisStreamOptions
from shared.models import Delivery, Event, StreamConfig
from shared.redisconn import tenant_key

DAY_MS = 86_400_000

# KEYS: stream, marker. ARGV: minid, ttl, t, s, f, e. Returns the entry id (new or the earlier one).
XADD_ONCE = """
local id = redis.call('GET', KEYS[2])
if id then return id end
id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', 't', ARGV[3], 's', ARGV[4], 'f', ARGV[5], 'e', ARGV[6])
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[2]))
return id
"""


def stream_key(tenant_id: str) -> str:
    return tenant_key(tenant_id, "events")


def delivered_key(tenant_id: str, event_id: str) -> str:
    return tenant_key(tenant_id, "dlv", event_id)


class RedisStreamsDestination:
    type = "redis"

    def __init__(self, client: Redis) -> None:
        self._redis = client
        self._xadd_once = client.register_script(XADD_ONCE)

    async def publish(
        self, events: Sequence[Event], options: RedisStreamOptions, stream: StreamConfig  # type: ignore[override]
    ) -> list[Delivery]:
        if not events:
            return []
        key = stream_key(stream.tenantId)
        minid = str(int(time.time() * 1000) - stream.retentionDays * DAY_MS)
        fmt = options.format
        pipe = self._redis.pipeline(transaction=False)
        for ev in events:
            if options.dedupeSeconds:
                await self._xadd_once(
                    keys=[key, delivered_key(stream.tenantId, ev.eventId)],
                    args=[minid, options.dedupeSeconds, ev.eventType.value, ev.source.value, fmt, ev.encode(fmt)],
                    client=pipe,
                )
                continue
            pipe.xadd(
                key,
                {"t": ev.eventType.value, "s": ev.source.value, "f": fmt, "e": ev.encode(fmt)},
                minid=minid,
                approximate=True,
            )
        if options.maxLen:
            pipe.xtrim(key, maxlen=options.maxLen, approximate=True)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:  # connection-level: nothing is known to be written
            return [failed(self.type, f"redis unavailable: {type(exc).__name__}", transient=True) for _ in events]
        out: list[Delivery] = []
        for reply in replies[: len(events)]:
            if isinstance(reply, Exception):
                transient = not isinstance(reply, ResponseError) or "OOM" in str(reply)
                out.append(failed(self.type, f"XADD failed: {str(reply)[:200]}", transient=transient))
            else:
                out.append(delivered(self.type, reply.decode() if isinstance(reply, bytes) else str(reply)))
        return out

    async def read_recent(
        self,
        tenant_id: str,
        limit: int,
        event_type: str | None = None,
        source: str | None = None,
        scan_cap: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Newest first; filters applied on the entry fields, scanning at most `scan_cap` entries."""
        key = stream_key(tenant_id)
        out: list[dict[str, Any]] = []
        upper = "+"
        scanned = 0
        page = limit if not (event_type or source) else min(max(limit * 4, 200), 1000)
        while len(out) < limit and scanned < scan_cap:
            entries = await self._redis.xrevrange(key, max=upper, min="-", count=page)
            if not entries:
                break
            for entry_id, fields in entries:
                if event_type and fields.get(b"t", b"").decode() != event_type:
                    continue
                if source and fields.get(b"s", b"").decode() != source:
                    continue
                doc = orjson.loads(fields[b"e"])
                out.append({"streamId": entry_id.decode(), "format": fields.get(b"f", b"native").decode(), "event": doc})
                if len(out) >= limit:
                    break
            scanned += len(entries)
            if len(entries) < page:
                break
            upper = "(" + entries[-1][0].decode()  # exclusive: continue below the last id seen
        return out

    async def health(self) -> DependencyHealth:
        start = time.perf_counter()
        try:
            await self._redis.ping()
            info = await self._redis.info("memory")
        except RedisError as exc:
            return DependencyHealth("redis", "unhealthy", detail=type(exc).__name__)
        latency = (time.perf_counter() - start) * 1000
        used = int(info.get("used_memory", 0))
        maxmem = int(info.get("maxmemory", 0))
        extra: dict[str, Any] = {"usedMemoryBytes": used, "maxMemoryBytes": maxmem or None}
        status = "healthy"
        if maxmem:
            pct = used * 100.0 / maxmem
            extra["memoryPercent"] = round(pct, 2)
            if pct > 80:
                status = "degraded"
        return DependencyHealth("redis", status, round(latency, 2), info=extra)  # type: ignore[arg-type]

    async def close(self) -> None:
        """The client is owned by the service container, which closes it."""
