"""The once-a-minute monitor (timer trigger): per-tenant SYSTEM_PERFORMANCE snapshots, DATA_ANOMALY
detection, service-wide figures as custom metrics.

Per run it looks at the last *complete* minute M (bucket-aligned, so every instance computes the
same figures for M) and at the tenants with events of their own in the last
MONITOR_LOOKBACK_MINUTES (`metrics.ACTIVE_KEY`, a sorted set by last activity; system events never
mark a tenant active) -- never at every tenant ever seen, so the work follows the active tenants.
They are handled CHUNK_TENANTS at a time, each step a few Redis round trips for the whole chunk
(not per tenant), one chunk after another within BUDGET_SECONDS (tenants left when it runs out
are logged; their minute stays unlocked, so a later run of it can still take them). For each:

1. a claim on `grc:{t}:mon:<M>` (storage/claims.py, kept LOCK_TTL_SECONDS) -- the tenant-minute
   lock: whichever instance takes it does the work, so overlapping or repeated runs (past-due
   timers, two instances) emit nothing twice;
2. the minute's counters without the service's own system events (`sys:*` counters, types
   SYSTEM_*/DATA_ANOMALY): throughput, latency percentiles, change-feed delay, error rate ->
   a SYSTEM_PERFORMANCE event when the tenant had events in M (SYSTEM_PERFORMANCE_EVENTS);
3. the anomaly baselines (shared/observability/anomaly.py, EWMA z-score) in `grc:{t}:anomaly`, advanced by one
   observation per minute (quiet minutes count as 0 events, so a collapse is seen too; the stored
   `lastMinute` makes a second observation of M a no-op) -> DATA_ANOMALY events.

All events of a run go through the pipeline as one system batch (shared/observability/system_events.py); their
tenants' stream configs are loaded first in at most one Table query (`ConfigStore.prefetch`), and
that query doubles as the pass's Tables health check, so a pass reads Azure Tables at most once.
Service-wide: health of every dependency (stored for /metrics alerts), instance memory, Kafka
producer lag, Redis memory, the retry queue's depth and poison count (from its health check, no
extra call) -> telemetry `on_system`; the all-tenant stream figures of M ->
`grc:service:perf` for /metrics.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import orjson

from shared.core.events import SYSTEM_EVENT_TYPES, Event, EventType
from shared.core.health import DependencyHealth
from shared.observability import service_stats, telemetry
from shared.observability.anomaly import Anomaly, TenantBaselines
from shared.observability.health import run_checks
from shared.observability.system_events import publish_system_events, system_event
from shared.observability.tenant_metrics import summarize
from shared.storage.claims import Claims
from shared.storage.redisconn import pipelined, tenant_key

log = logging.getLogger("grc.monitor")

MINUTE = 60
LOCK_TTL_SECONDS = 2 * 3600
ANOMALY_TTL_SECONDS = 7 * 24 * 3600
CHUNK_TENANTS = 500  # tenants per step: bounds each pipeline's size
BUDGET_SECONDS = 40.0  # a pass stops taking new chunks after this (the timer fires every 60 s)
clock: Callable[[], float] = time.time  # the timer's notion of now (tests replay synthetic minutes)
_SYSTEM_TYPE_KEYS = tuple(f"t:{t.value}" for t in SYSTEM_EVENT_TYPES)


@dataclass
class OwnCounts:
    """A tenant's interval counters without the service's own system events."""

    accepted: int
    failed: int
    rejected: int
    filtered: int
    duplicates: int

    @property
    def processed(self) -> int:
        return self.accepted + self.failed + self.rejected

    @property
    def activity(self) -> int:
        return self.processed + self.filtered + self.duplicates

    @property
    def error_rate(self) -> float:
        return round((self.failed + self.rejected) / self.processed, 4) if self.processed else 0.0


def own_counts(fields: Mapping[str, float]) -> OwnCounts:
    def own(name: str) -> int:
        return max(0, int(fields.get(name, 0)) - int(fields.get(f"sys:{name}", 0)))

    # accepted: every accepted event of a system type (the service's or a client's) is left out
    system_accepted = sum(int(fields.get(k, 0)) for k in _SYSTEM_TYPE_KEYS)
    accepted = max(0, int(fields.get("acc", 0)) - max(system_accepted, int(fields.get("sys:acc", 0))))
    return OwnCounts(accepted, own("fail"), own("rej"), own("flt"), own("dup"))


@dataclass
class TenantMinute:
    tenant: str
    counts: OwnCounts
    figures: dict[str, Any]
    anomalies: list[Anomaly]


@dataclass
class MonitorReport:
    minute: int  # epoch minute (epoch seconds // 60) of the interval looked at
    tenants: list[TenantMinute] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # another run holds the tenant-minute
    deferred: list[str] = field(default_factory=list)  # not reached within BUDGET_SECONDS
    events: list[Event] = field(default_factory=list)
    system: telemetry.SystemStats | None = None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def performance_data(counts: OwnCounts, fields: Mapping[str, float], start: float) -> dict[str, Any]:
    s = summarize(dict(fields), MINUTE)
    return {
        "intervalStart": _iso(start),
        "intervalSeconds": MINUTE,
        "events": counts.processed,
        "accepted": counts.accepted,
        "failed": counts.failed,
        "rejected": counts.rejected,
        "filtered": counts.filtered,
        "eventsPerSecond": round(counts.accepted / MINUTE, 3),
        "errorRate": counts.error_rate,
        "latencyMs": s["latencyMs"],
        "changeFeedDelayMs": s["changeFeedDelayMs"],
        "retries": s["retries"],
        "deadLettered": s["deadLettered"],
        "destinations": s["destinations"],
    }


def _observe(raw: bytes | None, minute: int, counts: OwnCounts) -> tuple[list[Anomaly], bytes | None]:
    """Advance a tenant's baselines by minute M; the anomalies and the new state (None: M was seen)."""
    state = orjson.loads(raw) if raw else {}
    if int(state.get("lastMinute", -1)) >= minute:
        return [], None  # this minute was already observed
    baselines = TenantBaselines.from_dict(state.get("baselines"))
    anomalies = baselines.observe_interval(counts.processed, counts.failed + counts.rejected)
    return anomalies, orjson.dumps({"lastMinute": minute, "baselines": baselines.to_dict()})


async def _tenants(services: Any, tenants: list[str], minute: int) -> list[TenantMinute | None]:
    """One chunk: locks, counters and anomaly states of all its tenants in a few round trips.
    None for a tenant whose minute another run holds."""
    redis = services.redis
    claims = Claims(redis)
    locks = [tenant_key(t, "mon", str(minute)) for t in tenants]
    taken = await claims.take(locks, LOCK_TTL_SECONDS)
    mine = [t for t, claim in zip(tenants, taken) if claim.state == "new"]
    start = minute * MINUTE
    try:
        fields = await services.metrics.intervals(mine, start, MINUTE)
        states = await redis.mget([tenant_key(t, "anomaly") for t in mine]) if mine else []
        out: dict[str, TenantMinute] = {}
        writes: list[tuple[Any, ...]] = []
        for t, raw in zip(mine, states):
            counts = own_counts(fields[t])
            anomalies, state = _observe(raw, minute, counts)
            if state is not None:
                writes.append(("SET", tenant_key(t, "anomaly"), state, "EX", ANOMALY_TTL_SECONDS))
            out[t] = TenantMinute(t, counts, performance_data(counts, fields[t], start), anomalies)
        for reply in await pipelined(redis, writes):
            if isinstance(reply, Exception):
                raise reply
    except Exception:
        # let a later run of this minute try these tenants again
        await claims.settle((tenant_key(t, "mon", str(minute)), None, 0) for t in mine)
        raise
    return [out.get(t) for t in tenants]


def _events(tm: TenantMinute, perf_events: bool) -> list[Event]:
    out = []
    if perf_events and tm.counts.activity:
        out.append(system_event(tm.tenant, EventType.SYSTEM_PERFORMANCE, tm.figures,
                                entity_type="tenant", entity_id=tm.tenant))
    for a in tm.anomalies:
        data = {**a.to_dict(), "intervalStart": tm.figures["intervalStart"], "intervalSeconds": MINUTE,
                "events": tm.counts.processed, "failed": tm.counts.failed + tm.counts.rejected}
        out.append(system_event(tm.tenant, EventType.DATA_ANOMALY, data, entity_type="tenant",
                                entity_id=tm.tenant))
    return out


def _stream_figures(minute: int, tenants: list[TenantMinute]) -> dict[str, Any]:
    def worst(key: str, stat: str) -> float | None:
        vals = [t.figures[key][stat] for t in tenants if t.figures[key][stat] is not None]
        return max(vals) if vals else None

    events = sum(t.counts.accepted for t in tenants)
    return {
        "intervalStart": _iso(minute * MINUTE), "intervalSeconds": MINUTE, "tenants": len(tenants),
        "eventsPerSecond": round(events / MINUTE, 3),
        "endToEndLatencyMsP99Max": worst("latencyMs", "p99"),
        "endToEndLatencyMsMeanMax": worst("latencyMs", "mean"),
        "changeFeedDelayMsP99Max": worst("changeFeedDelayMs", "p99"),
        "changeFeedDelayMsMax": worst("changeFeedDelayMs", "max"),
    }


async def run_minute(services: Any, now: float | None = None) -> MonitorReport:
    """One monitor pass for the last complete minute before `now`."""
    now = clock() if now is None else now
    minute = int(now // MINUTE) - 1
    settings = services.settings
    report = MonitorReport(minute)
    since = (minute - settings.monitor_lookback_minutes + 1) * MINUTE
    tenants = await services.metrics.active_tenants(since, (minute + 1) * MINUTE)
    deadline = time.monotonic() + BUDGET_SECONDS
    for first in range(0, len(tenants), CHUNK_TENANTS):
        if first and time.monotonic() > deadline:  # the first chunk always runs
            report.deferred = tenants[first:]
            log.warning("monitor pass for minute %d: budget of %.0f s spent, %d tenant(s) not reached",
                        minute, BUDGET_SECONDS, len(report.deferred))
            break
        chunk = tenants[first:first + CHUNK_TENANTS]
        try:
            outcomes = await _tenants(services, chunk, minute)
        except Exception as exc:  # noqa: BLE001 - the next chunk and the next run carry on
            log.error("monitor pass failed for %d tenant(s): %s", len(chunk), type(exc).__name__)
            continue
        for t, out in zip(chunk, outcomes):
            if out is None:
                report.skipped.append(t)
            else:
                report.tenants.append(out)
                report.events.extend(_events(out, settings.system_performance_events))
    known = {}
    if report.events:
        tables = await _prefetch_configs(services, sorted({e.tenantId for e in report.events}))
        if tables is not None:
            known["tables"] = tables
        if tables is None or tables.status != "unhealthy":
            await publish_system_events(services.pipeline, report.events)
    if report.tenants:
        await services.redis.set(service_stats.STREAM_PERF_KEY,
                                 orjson.dumps(_stream_figures(minute, report.tenants)),
                                 ex=service_stats.STREAM_PERF_TTL_SECONDS)

    health = await run_checks(services, known)
    section = await service_stats.service_section(services)
    known = set(services.destinations.built()) | {"redis"}
    queue = health.get("retryQueue")  # its depth and poison count, charted over time (grc.retryqueue.*)
    report.system = service_stats.system_stats(section, {n: h.status for n, h in health.items() if n in known},
                                               queue.info if queue is not None else None)
    telemetry.current().on_system(report.system)
    return report


async def _prefetch_configs(services: Any, tenants: list[str]) -> DependencyHealth | None:
    """Stream configs of the system events' tenants, in at most one Table query. When a query ran,
    its outcome is the Tables health of this pass (no second read to probe it); None when every
    config was cached (the health check then probes Tables itself)."""
    start = time.perf_counter()
    try:
        queried = await services.configs.prefetch(tenants)
    except Exception as exc:  # noqa: BLE001 - reported as the Tables health; the events wait a minute
        log.error("monitor pass: stream configs unavailable: %s", type(exc).__name__)
        return DependencyHealth("tables", "unhealthy", round((time.perf_counter() - start) * 1000, 2),
                                detail=type(exc).__name__)
    if not queried:
        return None
    return DependencyHealth("tables", "healthy", round((time.perf_counter() - start) * 1000, 2))
