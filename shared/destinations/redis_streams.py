"""Redis Streams destination: one stream per tenant, `grc:{tenant}:events`.

Each entry holds `t` (eventType), `s` (source), `f` (wire format) and `e` (the encoded event),
so readers can filter without parsing. The stream holds recent events only, bounded by default:
the length cap `maxLen` (default 10,000) trims on every XADD, and entries older than
`retentionHours` (or `retentionDays`, if shorter) go with an XTRIM MINID at most once per
AGE_TRIM_SECONDS per tenant and instance (both approximate, so Redis trims whole macro-nodes
cheaply). The age trim is not on every XADD because a trim command in the script costs Redis about
1.4 us per call (of 8.7 for a one-event append: a batch naming 500 tenants makes 500 calls), while
an age cap of hours is no worse for being applied up to a minute late. A chunk is one command: a
server-side script appends every entry (one key, so it is
Redis-Cluster safe) and answers each entry's id or its error, which removes redis-py's
per-command packing and reply handling from the hot path (see bench/publish_path.py). A publish
call sends the scripts of all its chunks -- every tenant of the batch -- in one pipeline: one
connection and one round trip however many tenants the batch names. The keys stay per tenant (a
script may only touch keys of one hash slot on Redis Cluster, so there is one script call per
tenant chunk, not one for the batch); Redis runs a pipeline in order, so a tenant's chunks land
in request order.

Writes are idempotent on eventId (option `dedupeSeconds`, default one hour): the script keeps
`grc:{tenant}:dlv:<eventId>` -> entry id (same hash tag as the stream, so every key of the call
is in one cluster slot), and a retry after an unknown outcome (a timeout, a connection dropped
mid-call, a redelivered queue message) answers the first entry's id instead of appending a second
one. The marker only has to outlive the retry horizon (in-process retries and the retry queue).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.core import limits
from shared.core.answer_cap import AnswerCap
from shared.core.destination_options import RedisStreamOptions
from shared.core.events import Event, EventType, Source
from shared.core.health import DependencyHealth
from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig
from shared.destinations.base import Chunk, DestinationPaused, delivered, failed, failed_all
from shared.storage.redis_unanswered import NotSent
from shared.storage.redisconn import TenantKeys, run_script, tenant_key

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# KEYS[1] stream, KEYS[2..n+1] the per-event markers (only when deduplicating);
# ARGV: format, maxlen ('0' = none), marker ttl, minid ('' = no age trim in this call), then
# (type, source, payload) per event.
# pcall per entry: one failing XADD (e.g. OOM) is reported for that entry, the others still land.
_APPEND = """
local key, fmt, maxlen, ttl, minid = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local capped = maxlen ~= '0'
local out = {}
local n = 1
for i = 5, #ARGV, 3 do
  n = n + 1
  local marker = KEYS[n]
  local prev = false
  if marker then prev = redis.call('GET', marker) end
  if prev then
    out[#out + 1] = prev
  else
    local r
    if capped then
      r = redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, '*', 't', ARGV[i], 's', ARGV[i + 1], 'f', fmt, 'e', ARGV[i + 2])
    else
      r = redis.pcall('XADD', key, '*', 't', ARGV[i], 's', ARGV[i + 1], 'f', fmt, 'e', ARGV[i + 2])
    end
    if type(r) == 'table' and r.err then
      out[#out + 1] = 'ERR ' .. r.err
    else
      out[#out + 1] = r
      if marker then redis.call('SET', marker, r, 'EX', ttl) end
    end
  end
end
if minid ~= '' then redis.pcall('XTRIM', key, 'MINID', '~', minid) end
return out
"""
AGE_TRIM_SECONDS = 60.0  # a tenant's stream is trimmed by age at most this often per instance
MAX_AGE_TRIMS = 100_000  # tenants whose next age trim is kept; beyond, forgotten (an early trim)


def stream_key(tenant_id: str) -> str:
    return tenant_key(tenant_id, "events")


def delivered_key(tenant_id: str, event_id: str) -> str:
    return tenant_key(tenant_id, "dlv", event_id)


_TYPES = {t: t.value for t in EventType}  # enum values by dict lookup: Enum.value is a property call
_SOURCES = {s: s.value for s in Source}


# tenant -> (stream key, marker key prefix); the prefix + eventId is the key delivered_key makes
_KEYS = TenantKeys(("events",), ("dlv", ""))


def _append_call(chunk: Chunk, now_ms: int, minids: dict[int, str], trims: dict[str, float],
                 now: float) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the append script for one tenant's chunk (built per tenant of every batch:
    kept to one pass over the events). `minids`: retention -> MINID of this publish call (tenants
    mostly share their retention, so it is formatted once per call, not per tenant). `trims`:
    tenant -> when its stream is next trimmed by age (monotonic `now`)."""
    stream = chunk.stream
    tenant = stream.tenantId
    options: RedisStreamOptions = chunk.options  # type: ignore[assignment]
    fmt, ttl = options.format, options.dedupeSeconds
    due = trims.get(tenant)
    if due is None or now >= due:
        trims[tenant] = now + AGE_TRIM_SECONDS
        keep_ms = min(stream.retentionDays * DAY_MS, options.retentionHours * HOUR_MS)
        minid = minids.get(keep_ms)
        if minid is None:
            minid = minids[keep_ms] = str(now_ms - keep_ms)
    else:
        minid = ""
    args: list[Any] = [fmt, options.maxLen or 0, ttl, minid]
    key, marker = _KEYS[tenant]
    keys = [key]
    types, sources = _TYPES, _SOURCES
    if ttl:
        for ev in chunk.events:
            args += (types[ev.eventType], sources[ev.source], ev.encode(fmt))
            keys.append(marker + ev.eventId)
    else:
        for ev in chunk.events:
            args += (types[ev.eventType], sources[ev.source], ev.encode(fmt))
    return keys, args


class RedisStreamsDestination:
    type = "redis"

    def __init__(self, client: Redis, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = client
        self._append = client.register_script(_APPEND)
        self._clock = clock
        self._trims: dict[str, float] = {}  # tenant -> when its stream is next trimmed by age

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]:
        out: list[list[Delivery]] = [[] for _ in chunks]
        todo = [i for i, ch in enumerate(chunks) if ch.events]
        now_ms = int(time.time() * 1000)
        now, trims = self._clock(), self._trims
        if len(trims) > MAX_AGE_TRIMS:
            trims.clear()
        try:
            # A generator: the pipeline is written while the calls are still being built.
            minids: dict[int, str] = {}
            calls = (_append_call(chunks[i], now_ms, minids, trims, now) for i in todo)
            # Each call's Deliveries are made as its reply is read: a batch naming 500 tenants has
            # 500 replies, and Redis is still running the later calls meanwhile.
            replies = await run_script(self._redis, self._append, calls, each_reply=self._deliveries,
                                       count=len(todo))
        except NotSent as exc:  # Redis paused as unanswered: nothing sent, none will be for a while
            raise DestinationPaused(str(exc), exc.seconds) from exc
        except RedisError as exc:  # connection-level error: nothing is known to be written
            return failed_all(self.type, chunks, f"redis unavailable: {type(exc).__name__}")
        for i, reply in zip(todo, replies):
            if isinstance(reply, Exception):  # the script failed as a whole (e.g. OOM before its first XADD)
                [out[i]] = failed_all(self.type, [chunks[i]], f"redis script failed: {str(reply)[:200]}")
            else:
                out[i] = reply
        return out

    def _deliveries(self, reply: list[Any]) -> list[Delivery]:
        return [self._delivery(r) for r in reply]

    def _delivery(self, reply: Any) -> Delivery:
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        if text.startswith("ERR "):
            # OOM and LOADING clear up; anything else is a refusal that retrying will not fix.
            transient = "OOM" in text or "LOADING" in text or "BUSY" in text
            return failed(self.type, f"XADD failed: {text[4:204]}", transient=transient)
        return delivered(self.type, text)

    async def landed(
        self, events: Sequence[Event], options: RedisStreamOptions, stream: StreamConfig
    ) -> list[bool]:
        """Whether each event is already in the stream (its marker exists; needs dedupeSeconds)."""
        if not options.dedupeSeconds:
            return [False] * len(events)
        pipe = self._redis.pipeline(transaction=False)
        for ev in events:
            pipe.exists(delivered_key(stream.tenantId, ev.eventId))
        return [bool(n) for n in await pipe.execute()]

    async def read_recent(
        self,
        tenant_id: str,
        limit: int,
        event_type: str | None = None,
        source: str | None = None,
        scan_cap: int = 10_000,
        max_bytes: int = limits.MAX_LIST_RESPONSE_BYTES,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, filters applied on the entry fields, scanning at most `scan_cap` entries; and
        whether it stopped before `limit` at `max_bytes` of stored events (it returns one event at
        least). Read a page at a time, sized by the answer's cap (shared/core/answer_cap.py): one read
        of `limit` entries of 1 MB each would be 1 GB."""
        key = stream_key(tenant_id)
        out: list[dict[str, Any]] = []
        upper = "+"
        scanned = 0
        cap = AnswerCap(max_bytes)
        page = limit if not (event_type or source) else min(max(limit * 4, 200), 1000)
        while len(out) < limit and scanned < scan_cap:
            count = cap.next_read(page)
            entries = await self._redis.xrevrange(key, max=upper, min="-", count=count)
            if not entries:
                break
            for entry_id, fields in entries:
                raw = fields[b"e"]
                if (event_type and fields.get(b"t", b"").decode() != event_type) or \
                        (source and fields.get(b"s", b"").decode() != source):
                    cap.skip(len(raw))
                    continue
                if not cap.admit(len(raw)):
                    return out, True
                out.append({"streamId": entry_id.decode(), "format": fields.get(b"f", b"native").decode(),
                            "event": orjson.loads(raw)})
                if len(out) >= limit:
                    break
            scanned += len(entries)
            if len(entries) < count:
                break
            upper = "(" + entries[-1][0].decode()  # exclusive: continue below the last id seen
        return out, False

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
