"""Real-time per-tenant metrics in Redis, shared by every instance, written once per batch.

Layout (all keys of a tenant carry the `{tenant}` hash tag, so they live in one cluster slot):
- `grc:{t}:m:b:<epoch//10>`: a hash per 10-second bucket (kept 65 minutes) with counters
  (`acc`, `flt`, `rej`, `fail`, `dup`, `retry`, `dlq`), per type `t:<TYPE>`, per source `s:<SRC>`,
  per destination `d:<dest>:ok|fail|park`, dead letters per destination `dlq:<dest>` (the change
  feed's own under `dlq:changefeed`; `dlq` is their total), and log-scale histograms `lat:<i>` (end-to-end
  processing latency) and `dly:<i>` (change-feed delay) plus their `latn/lats`, `dlyn/dlys` sums.
- `grc:{t}:m:total`: the same counters without histograms, never expiring.
Windows (1 min, 5 min, 1 h) are sums over buckets; percentiles come from the merged histogram
(upper bound of the bucket: at most 10 % high).

A write is one round trip whatever the number of tenants: one script call per tenant and bucket
(its bucket and total share the tenant's hash tag, so each call is Cluster-safe) plus one ZADD and
one SADD naming every tenant, in one pipeline.

Write-behind (METRICS_FLUSH_MS > 0, the service's setting): `record` merges a batch into the
instance's pending counters and a background flush writes them at most METRICS_FLUSH_MS later, so
a tenant that appears in every request costs one script call per flush, not one per request
(a Redis script call costs ~10 us of Redis CPU; a request naming 500 tenants would spend more on
its metrics than on its events). Reads on the instance (`snapshot`, `intervals`,
`active_tenants`) flush first, so an instance always sees its own counts; other instances see
them within METRICS_FLUSH_MS. Pending counts are capped (MAX_PENDING_TENANTS, then written at
once) and written on `close`; an instance that dies loses at most METRICS_FLUSH_MS of counts.
With 0, `record` writes every batch before it returns.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from redis.asyncio import Redis

from shared.storage.redisconn import pipelined, run_script, tenant_key

log = logging.getLogger("grc.metrics")

BUCKET_SECONDS = 10
MAX_PENDING_TENANTS = 5_000  # tenant-buckets waiting for the write-behind flush; more: written at once
BUCKET_TTL_SECONDS = 3900
WINDOWS = {"1m": 60, "5m": 300, "1h": 3600}
HIST_BASE_MS = 0.1
HIST_GROWTH = 1.1
TENANTS_KEY = "grc:tenants"  # tenants seen, for periodic snapshots
# tenant -> last time it had events of its own (not the service's system events): the monitor
# timer's work list. System events never mark a tenant active, so they cannot keep it monitored.
ACTIVE_KEY = "grc:active"
# The destination of dead letters no destination gave up on: change-feed documents that could not be
# mapped and change-feed events not published on the last retry (their dead-letter record ids end so).
CHANGEFEED = "changefeed"
SYSTEM_COUNTERS = ("acc", "flt", "rej", "fail", "dup")  # also written as `sys:<name>` for system batches

# KEYS[1] bucket, KEYS[2] total; ARGV: bucket TTL, n pairs for bucket and total, m pairs for the
# bucket only, then float pairs for the bucket (HINCRBYFLOAT) to the end.
_RECORD = """
local b, t = KEYS[1], KEYS[2]
local i = 4
for _ = 1, tonumber(ARGV[2]) do
  redis.call('HINCRBY', b, ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', t, ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HINCRBY', b, ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  redis.call('HINCRBYFLOAT', b, ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('EXPIRE', b, ARGV[1])
return 1
"""


def hist_index(ms: float) -> int:
    return max(0, int(math.log(max(ms, HIST_BASE_MS) / HIST_BASE_MS, HIST_GROWTH)))


def hist_upper(index: int) -> float:
    return HIST_BASE_MS * HIST_GROWTH ** (index + 1)


class Counts(dict):  # type: ignore[type-arg]
    """A Counter without Counter's construction cost (a batch makes a few per tenant): missing = 0."""

    def __missing__(self, key: object) -> int:
        return 0


@dataclass(slots=True)
class TenantStats:
    """What one batch did for one tenant; the pipeline fills it, `record` writes it in one go."""

    counters: Counts = field(default_factory=Counts)
    latency: Counts = field(default_factory=Counts)
    latency_sum_ms: float = 0.0
    delay: Counts = field(default_factory=Counts)
    delay_sum_ms: float = 0.0

    # dict.get rather than `+=` through __missing__ (a Python call per new key): these run per event.
    def count(self, name: str, n: int = 1) -> None:
        c = self.counters
        c[name] = c.get(name, 0) + n

    def deadletter(self, destination: str, n: int = 1) -> None:
        """Dead letters: the total (`dlq`) and per destination (`dlq:<dest>`), so telemetry can say
        where each was given up (CHANGEFEED for what the change feed could not map or publish)."""
        self.count("dlq", n)
        self.count(f"dlq:{destination}", n)

    def observe_latency(self, ms: float, n: int = 1, index: int | None = None) -> None:
        """`index`: hist_index(ms) when the caller has it (a batch observes one latency for every tenant)."""
        h, i = self.latency, hist_index(ms) if index is None else index
        h[i] = h.get(i, 0) + n
        self.latency_sum_ms += ms * n

    def observe_delay(self, ms: float) -> None:
        self.delay[hist_index(ms)] += 1
        self.delay_sum_ms += ms

    def copy(self) -> "TenantStats":
        return TenantStats(Counts(self.counters), Counts(self.latency), self.latency_sum_ms, Counts(self.delay),
                           self.delay_sum_ms)

    def add(self, other: "TenantStats") -> None:
        # Once per tenant of every batch (write-behind merge): histograms are often empty, so skipped.
        mine = self.counters
        for k, n in other.counters.items():
            mine[k] = mine.get(k, 0) + n
        if other.latency:
            mine = self.latency
            for k, n in other.latency.items():
                mine[k] = mine.get(k, 0) + n
            self.latency_sum_ms += other.latency_sum_ms
        if other.delay:
            mine = self.delay
            for k, n in other.delay.items():
                mine[k] = mine.get(k, 0) + n
            self.delay_sum_ms += other.delay_sum_ms


@dataclass
class BatchStats:
    tenants: dict[str, TenantStats] = field(default_factory=dict)
    # A batch of the service's own system events (shared/observability/system_events.py): its outcome counters
    # are also kept as `sys:<name>` so detectors can leave them out, and it triggers no system event.
    system: bool = False
    # Deliveries of the batch that failed or were parked (counted beside their `d:<dest>:fail|park`
    # counters): lets the failure hook skip a batch in O(1) instead of scanning every tenant's counters.
    failed_deliveries: int = 0

    def tenant(self, tenant_id: str) -> TenantStats:
        ts = self.tenants.get(tenant_id)
        if ts is None:
            ts = self.tenants[tenant_id] = TenantStats()
        return ts


def _percentile(hist: dict[int, int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for idx in sorted(hist):
        seen += hist[idx]
        if seen >= rank:
            return round(hist_upper(idx), 2)
    return round(hist_upper(max(hist)), 2)


def _record_call(tenant: str, ts: TenantStats, bucket: int, system: bool) -> tuple[list[str], list[Any]]:
    both = [(k, int(v)) for k, v in ts.counters.items() if v]
    only_bucket = [(f"lat:{idx}", n) for idx, n in ts.latency.items()]
    only_bucket += [(f"dly:{idx}", n) for idx, n in ts.delay.items()]
    floats: list[tuple[str, float]] = []
    if ts.latency:
        only_bucket.append(("latn", sum(ts.latency.values())))
        floats.append(("lats", ts.latency_sum_ms))
    if ts.delay:
        only_bucket.append(("dlyn", sum(ts.delay.values())))
        floats.append(("dlys", ts.delay_sum_ms))
    if system:
        only_bucket += [(f"sys:{k}", v) for k, v in both if k in SYSTEM_COUNTERS]
    args: list[Any] = [BUCKET_TTL_SECONDS, len(both), len(only_bucket)]
    for k, v in (*both, *only_bucket, *floats):
        args += (k, v)
    return [tenant_key(tenant, "m", "b", str(bucket)), tenant_key(tenant, "m", "total")], args


# (10-s bucket, system batch?) -> tenant -> what to add there
Pending = dict[tuple[int, bool], dict[str, TenantStats]]


class TenantMetrics:
    def __init__(self, client: Redis, flush_seconds: float = 0.0) -> None:
        self._redis = client
        self._record = client.register_script(_RECORD)
        self._flush_seconds = flush_seconds
        self._pending: Pending = {}
        self._active: dict[str, float] = {}  # tenant -> latest time it had events of its own
        self._latest = 0.0  # the latest time recorded into _active
        self._size = 0
        self._flusher: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()

    async def record(self, stats: BatchStats, now: float | None = None) -> None:
        if not stats.tenants:
            return
        now = time.time() if now is None else now
        key = (int(now // BUCKET_SECONDS), stats.system)
        active = {} if stats.system else dict.fromkeys(stats.tenants, now)
        if self._flush_seconds <= 0:
            await self._write({key: stats.tenants}, active)
            return
        into = self._pending.setdefault(key, {})
        for tenant, ts in stats.tenants.items():
            mine = into.get(tenant)
            if mine is None:  # a copy: the caller's hooks still read the batch's own stats
                into[tenant] = ts.copy()
                self._size += 1
            else:
                mine.add(ts)
        if now >= self._latest:  # the usual case: no tenant has a later time, so one C-level update
            self._latest = now
            self._active.update(active)
        else:
            for tenant in active:
                self._active[tenant] = max(now, self._active.get(tenant, now))
        if self._size >= MAX_PENDING_TENANTS:
            await self.flush()
        elif self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def try_record(self, stats: BatchStats) -> None:
        """`record`, for callers whose work must not fail on metrics: a failure is logged, not raised."""
        try:
            await self.record(stats)
        except Exception as exc:  # noqa: BLE001 - metrics never fail a batch, a retry or a replay
            log.warning("metrics not recorded: %s", type(exc).__name__)

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self._flush_seconds)
            self._flusher = None
            # Shielded: `close` cancels a flusher that is still sleeping, never a write under way.
            await asyncio.shield(self.flush())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - metrics never fail the service; the counts are lost
            log.warning("metrics not written: %s", type(exc).__name__)
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    async def flush(self) -> None:
        """Write what is pending now (one round trip); returns once it is in Redis."""
        async with self._writing:  # after a flush in progress, so a read then sees its counts too
            pending, active = self._pending, self._active
            self._pending, self._active, self._size = {}, {}, 0
            if pending:
                await self._write(pending, active)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self.flush()  # after a write under way (the lock), then what is still pending

    async def _write(self, pending: Pending, active: dict[str, float]) -> None:
        calls = [_record_call(tenant, ts, bucket, system)
                 for (bucket, system), tenants in pending.items() for tenant, ts in tenants.items()]
        seen = {t for tenants in pending.values() for t in tenants}
        index: list[tuple[Any, ...]] = [("SADD", TENANTS_KEY, *seen)]
        if active:
            index.append(("ZADD", ACTIVE_KEY, *(x for t, at in active.items() for x in (at, t))))
        for reply in await run_script(self._redis, self._record, calls, extra=index):
            if isinstance(reply, Exception):
                raise reply

    async def active_tenants(self, since: float, until: float | None = None) -> list[str]:
        """Tenants with events of their own in [since, until] (epoch seconds)."""
        await self.flush()
        await self._redis.zremrangebyscore(ACTIVE_KEY, "-inf", f"({since - BUCKET_TTL_SECONDS}")  # buckets gone
        hi: float | str = "+inf" if until is None else until
        return sorted(t.decode() for t in await self._redis.zrangebyscore(ACTIVE_KEY, since, hi))

    async def intervals(
        self, tenants: Sequence[str], start: float, seconds: int
    ) -> dict[str, dict[str, float]]:
        """Per tenant, raw counters/histograms of the buckets in [start, start + seconds)
        (bucket-aligned), for any number of tenants in one round trip."""
        await self.flush()
        first = int(start // BUCKET_SECONDS)
        buckets = [str(b) for b in range(first, first + max(1, seconds // BUCKET_SECONDS))]
        replies = await pipelined(self._redis, [("HGETALL", tenant_key(t, "m", "b", b)) for t in tenants
                                                for b in buckets])
        for r in replies:
            if isinstance(r, Exception):
                raise r
        n = len(buckets)
        return {t: _merge(_decode(_pairs(r)) for r in replies[i * n:(i + 1) * n])
                for i, t in enumerate(tenants)}

    async def snapshot(self, tenant: str, now: float | None = None) -> dict[str, Any]:
        await self.flush()
        now = time.time() if now is None else now
        current = int(now // BUCKET_SECONDS)
        n_buckets = WINDOWS["1h"] // BUCKET_SECONDS
        pipe = self._redis.pipeline(transaction=False)
        for i in range(n_buckets):
            pipe.hgetall(tenant_key(tenant, "m", "b", str(current - i)))
        pipe.hgetall(tenant_key(tenant, "m", "total"))
        replies = await pipe.execute()
        buckets = [_decode(r) for r in replies[:-1]]  # newest first
        totals = _decode(replies[-1])
        windows = {
            name: summarize(_merge(buckets[: seconds // BUCKET_SECONDS]), seconds)
            for name, seconds in WINDOWS.items()
        }
        return {
            "tenantId": tenant,
            "generatedAt": now,
            "windows": windows,
            "totals": summarize_counters(totals),
        }


def _pairs(reply: dict[bytes, bytes] | list[bytes]) -> dict[bytes, bytes]:
    """A raw HGETALL reply as a dict: a map in RESP3, a flat field, value, ... list in RESP2."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply)
    return dict(zip(it, it))


def _decode(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items()}


def _merge(buckets: Iterable[dict[str, float]]) -> dict[str, float]:
    out: Counter[str] = Counter()
    for b in buckets:
        out.update(b)
    return dict(out)


def _top(fields: dict[str, float], prefix: str, n: int = 5) -> list[dict[str, Any]]:
    items = [(k[len(prefix):], int(v)) for k, v in fields.items() if k.startswith(prefix)]
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    return [{"name": k, "count": v} for k, v in items[:n]]


def _destinations(fields: dict[str, float]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for k, v in fields.items():
        if k.startswith("d:"):
            _, dest, outcome = k.split(":", 2)
            out.setdefault(dest, {"delivered": 0, "failed": 0, "parked": 0})
            out[dest]["delivered" if outcome == "ok" else "failed" if outcome == "fail" else "parked"] += int(v)
    return out


def summarize_counters(fields: dict[str, float]) -> dict[str, Any]:
    acc, flt, rej = int(fields.get("acc", 0)), int(fields.get("flt", 0)), int(fields.get("rej", 0))
    fail, dup = int(fields.get("fail", 0)), int(fields.get("dup", 0))
    dests = _destinations(fields)
    d_ok = sum(d["delivered"] for d in dests.values())
    d_bad = sum(d["failed"] + d["parked"] for d in dests.values())
    processed = acc + fail + rej
    return {
        "accepted": acc,
        "filtered": flt,
        "rejected": rej,
        "failed": fail,
        "duplicates": dup,
        "retries": int(fields.get("retry", 0)),
        "deadLettered": int(fields.get("dlq", 0)),
        # Error rate: events that were refused or could not be delivered everywhere at first try,
        # over everything processed; delivery error rate counts per destination attempt.
        "errorRate": round((rej + fail) / processed, 4) if processed else 0.0,
        "deliveryErrorRate": round(d_bad / (d_ok + d_bad), 4) if (d_ok + d_bad) else 0.0,
        "topEventTypes": _top(fields, "t:"),
        "topSources": _top(fields, "s:"),
        "destinations": dests,
    }


def summarize(fields: dict[str, float], seconds: int) -> dict[str, Any]:
    out = summarize_counters(fields)
    out["windowSeconds"] = seconds
    out["eventsPerSecond"] = round(out["accepted"] / seconds, 3)
    lat = {int(k[4:]): int(v) for k, v in fields.items() if k.startswith("lat:")}
    dly = {int(k[4:]): int(v) for k, v in fields.items() if k.startswith("dly:")}
    latn, dlyn = fields.get("latn", 0), fields.get("dlyn", 0)
    out["latencyMs"] = {
        "p50": _percentile(lat, 0.50),
        "p95": _percentile(lat, 0.95),
        "p99": _percentile(lat, 0.99),
        "max": round(hist_upper(max(lat)), 2) if lat else None,
        "mean": round(fields.get("lats", 0) / latn, 2) if latn else None,
    }
    out["changeFeedDelayMs"] = {
        "p50": _percentile(dly, 0.50),
        "p99": _percentile(dly, 0.99),
        "max": round(hist_upper(max(dly)), 2) if dly else None,
        "mean": round(fields.get("dlys", 0) / dlyn, 2) if dlyn else None,
    }
    return out
