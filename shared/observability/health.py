"""Dependency health: every dependency checked concurrently, each under a hard time bound (GET /health,
the monitor pass, the failing-destination alert of /metrics).

Dependencies: Redis, Azure Tables, Azure Storage Queues, Cosmos DB (when COSMOS_DB_ENDPOINT is
set), every destination built in this instance (Kafka/Event Hubs, ...) and, under the Functions host,
`bindings`: the app settings the functions' bindings name (unhealthy when one is unset: a function
not loaded, a trigger not started; shared/core/bindings.py). Each reports a status,
its latency and details: `unhealthy` (error or no answer within HEALTH_TIMEOUT_SECONDS),
`degraded` (answered slower than HEALTH_DEGRADED_MS, or Redis above ALERT_MEMORY_PERCENT of its
maxmemory), else `healthy`. Overall: `unhealthy` (503) when Redis or Tables is unhealthy, else
`degraded` when anything is not healthy (an unreachable Cosmos, queue or destination included:
the instance still serves), else `healthy`.

The bound is enforced here, not by the SDKs' own timeouts/retries: a check still running at the
deadline is cancelled and *not waited for* (a client stuck in its own cleanup cannot hold the
answer), so /health answers within HEALTH_TIMEOUT_SECONDS plus scheduling noise.
Results are also kept in Redis (`grc:health`) for the failing-destination alert of /metrics.

/health is anonymous (load balancers and App Service's health check call it), so it must be cheap
and say little: the checks run at most once per HEALTH_CACHE_SECONDS per instance, concurrent
requests share one run in flight, and they use the instance's long-lived clients (one Cosmos
client, one credential). A caller who is not an admin gets the overall status and each
dependency's status only; an admin (AUTH_ADMIN_ROLE, or local-open under `make run`) also gets
latencies, details and figures (Redis memory, queue depths, producer lag).
"""
from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, Awaitable, Callable

import orjson

from shared.core import bindings
from shared.core.events import utc_now_iso
from shared.core.health import DependencyHealth
from shared.observability import resources

# The service container (shared/app/services.py) is handed in by the caller: this layer does not
# import the composition root; it uses its redis, settings, configs, queues, cosmos, retries and
# destinations.
Services = Any

Check = Callable[[], Awaitable[DependencyHealth]]
HEALTH_KEY = "grc:health"
HEALTH_KEY_TTL_SECONDS = 600
STORE_TIMEOUT_SECONDS = 0.5
# Every request needs these: Redis (streams, metrics, rate limits, config versions), Tables (configs).
CRITICAL = ("redis", "tables")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def _redis(services: Services) -> DependencyHealth:
    start = time.perf_counter()
    await services.redis.ping()
    latency = _ms(start)
    mem = await resources.redis_memory(services.redis)
    pct = mem["percent"]
    status = "healthy"
    detail = None
    limit = services.settings.alert_memory_percent
    if pct is not None and pct > limit:
        status, detail = "degraded", f"memory {pct} % of maxmemory (threshold {limit} %)"
    info = {"usedMemoryBytes": mem["usedBytes"], "maxMemoryBytes": mem["maxMemoryBytes"],
            "memoryPercent": pct, "headroomBytes": mem["headroomBytes"]}
    return DependencyHealth("redis", status, latency, detail=detail, info=info)  # type: ignore[arg-type]


async def _tables(services: Services) -> DependencyHealth:
    start = time.perf_counter()
    async with services.configs.reading() as table:
        async for _ in table.list_entities(results_per_page=1).by_page():
            break
    return DependencyHealth("tables", "healthy", _ms(start))


async def _queues(services: Services) -> DependencyHealth:
    start = time.perf_counter()
    async for _ in services.queues.list_queues(results_per_page=1).by_page():
        break
    return DependencyHealth("queues", "healthy", _ms(start))


async def _bindings() -> DependencyHealth:
    """The app settings the host reads for the functions' bindings (shared/core/bindings.py): one
    unset means a function not loaded or a trigger not started, e.g. nothing drains the retry queue."""
    missing = bindings.unset()
    if missing:
        return DependencyHealth("bindings", "unhealthy", 0.0, detail=bindings.describe(missing))
    return DependencyHealth("bindings", "healthy", 0.0)


async def _cosmos(services: Services) -> DependencyHealth:
    """A database read on the instance's Cosmos client (opening it reads the account first); a
    missing database still means the account answered."""
    from azure.cosmos.exceptions import CosmosResourceNotFoundError  # noqa: PLC0415

    start = time.perf_counter()
    client = await services.cosmos.client()
    try:
        await client.get_database_client(services.settings.cosmos_database).read()
    except CosmosResourceNotFoundError:
        pass
    return DependencyHealth("cosmos", "healthy", _ms(start))


def checks(services: Services) -> dict[str, Check]:
    out: dict[str, Check] = {
        "redis": lambda: _redis(services),
        "tables": lambda: _tables(services),
    }
    retries = getattr(services, "retries", None)
    if retries is not None and hasattr(retries, "health"):
        out["retryQueue"] = retries.health  # Storage Queues, through the retry queue (depth, poison)
    else:
        out["queues"] = lambda: _queues(services)
    if services.settings.cosmos_endpoint:
        out["cosmos"] = lambda: _cosmos(services)
    for type_, dest in services.destinations.built().items():
        if type_ != "redis":
            out[type_] = dest.health
    if bindings.names():  # under the Functions host (or the local runner): function_app.py is loaded
        out["bindings"] = _bindings
    return out


def _drop(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" noise


async def _run(name: str, check: Check, timeout: float, degraded_ms: float) -> DependencyHealth:
    start = time.perf_counter()
    task = asyncio.ensure_future(check())
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        task.add_done_callback(_drop)  # never awaited: its cleanup cannot delay the answer
        return DependencyHealth(name, "unhealthy", _ms(start), detail=f"no answer within {timeout} s")
    exc = task.exception()
    if exc is not None:  # report the kind of failure, never its text (it may hold hosts or keys)
        return DependencyHealth(name, "unhealthy", _ms(start), detail=type(exc).__name__)
    result = task.result()
    result.name = name
    if result.latency_ms is None:
        result.latency_ms = _ms(start)
    if result.status == "healthy" and result.latency_ms > degraded_ms:
        result.status = "degraded"
        result.detail = f"slow: {result.latency_ms} ms (threshold {degraded_ms:g} ms)"
    return result


async def run_checks(services: Services, known: dict[str, DependencyHealth] | None = None
                     ) -> dict[str, DependencyHealth]:
    """All checks, concurrently, bounded; the results are also stored for /metrics alerts.
    `known`: results the caller just observed itself (e.g. the monitor's Table query), not probed again."""
    s = services.settings
    known = known or {}
    named = {n: c for n, c in checks(services).items() if n not in known}
    results = await asyncio.gather(*(_run(n, c, s.health_timeout_seconds, s.health_degraded_ms)
                                     for n, c in named.items()))
    out = {**dict(zip(named, results)), **known}
    await _store(services, out)
    return out


class _Cache:
    """The last results of this instance's checks and the run in flight, if any."""

    def __init__(self) -> None:
        self.results: dict[str, DependencyHealth] | None = None
        self.at = 0.0  # time.monotonic() when `results` were taken
        self.checked_at = ""
        self.running: asyncio.Future[dict[str, DependencyHealth]] | None = None


_caches: "weakref.WeakKeyDictionary[Any, _Cache]" = weakref.WeakKeyDictionary()


async def cached_checks(services: Services) -> tuple[dict[str, DependencyHealth], str]:
    """The checks' results no older than HEALTH_CACHE_SECONDS, and when they were taken: at most one
    run per period per instance, whatever the request rate; callers arriving during a run share it."""
    cache = _caches.get(services)
    if cache is None:
        cache = _caches[services] = _Cache()
    ttl = services.settings.health_cache_seconds
    # Fresh enough, and about the same dependencies (a destination built since is checked at once).
    fresh = cache.results is not None and time.monotonic() - cache.at < ttl
    if fresh and set(cache.results or ()) == set(checks(services)):
        return cache.results, cache.checked_at  # type: ignore[return-value]
    running = cache.running
    if running is None:
        started, checked_at = time.monotonic(), utc_now_iso()
        running = cache.running = asyncio.ensure_future(run_checks(services))

        def keep(task: asyncio.Future[dict[str, DependencyHealth]]) -> None:
            cache.running = None
            if not task.cancelled() and task.exception() is None:
                cache.results, cache.at, cache.checked_at = task.result(), started, checked_at

        running.add_done_callback(keep)
    # Shielded: a caller that goes away does not cancel the run the others wait for.
    results = await asyncio.shield(running)
    return results, cache.checked_at


async def _store(services: Services, results: dict[str, DependencyHealth]) -> None:
    if results.get("redis") is None or results["redis"].status == "unhealthy":
        return
    now = time.time()
    mapping = {n: orjson.dumps({"status": r.status, "at": now, "detail": r.detail}) for n, r in results.items()}
    pipe = services.redis.pipeline(transaction=False)
    pipe.hset(HEALTH_KEY, mapping=mapping)  # type: ignore[arg-type]
    pipe.expire(HEALTH_KEY, HEALTH_KEY_TTL_SECONDS)
    task = asyncio.ensure_future(pipe.execute())
    task.add_done_callback(_drop)  # a cache for alerts: /health never fails or waits long for it
    await asyncio.wait({task}, timeout=STORE_TIMEOUT_SECONDS)
    if not task.done():
        task.cancel()


async def recent_health(services: Services, max_age_seconds: float = 180.0) -> dict[str, dict[str, Any]]:
    """Dependency states stored by /health or the monitor timer in the last `max_age_seconds`."""
    raw = await services.redis.hgetall(HEALTH_KEY)
    now = time.time()
    out = {}
    for k, v in raw.items():
        try:
            rec = orjson.loads(v)
        except orjson.JSONDecodeError:
            continue
        if now - float(rec.get("at", 0)) <= max_age_seconds:
            out[k.decode() if isinstance(k, bytes) else str(k)] = rec
    return out


def overall(results: dict[str, DependencyHealth]) -> str:
    """Unhealthy only when a dependency every request needs is down; any other one down (Cosmos,
    the retry queue, one destination) leaves the instance serving, so the service is degraded."""
    states = {r.status for r in results.values()}
    if any(results[n].status == "unhealthy" for n in CRITICAL if n in results):
        return "unhealthy"
    return "degraded" if states - {"healthy"} else "healthy"
