"""Service-wide performance figures of the parts (GET /metrics `service` section, monitor timer):
Kafka producer lag, Redis memory and headroom, Cosmos DB RU of the service's own calls, stream
processing delay (all tenants, last complete minute, written by the monitor timer), instance memory.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Mapping, Sequence

import orjson

from shared.observability import cosmos_usage, resources, telemetry
from shared.observability.telemetry.records import SystemStats

log = logging.getLogger("grc.service_stats")

STREAM_PERF_KEY = "grc:service:perf"  # JSON written by the monitor timer once a minute
STREAM_PERF_TTL_SECONDS = 600
REDIS_TIMEOUT_SECONDS = 1.0
# Every instance reports its own memory (the alert rule is per cloud_RoleInstance), at most this often.
INSTANCE_GAUGE_SECONDS = 15.0
_gauge_lock = threading.Lock()
_gauge_at = 0.0


def telemetry_hook(stats: Any, results: Sequence[Any] = ()) -> None:
    """The pipeline's telemetry hook: the batch's counters and latencies, plus this instance's
    memory gauge at most every INSTANCE_GAUGE_SECONDS (the monitor timer runs on one instance only)."""
    global _gauge_at
    tel = telemetry.current()
    tel.pipeline_hook(stats, results)
    if not tel.enabled:
        return
    now = time.monotonic()
    with _gauge_lock:
        if now - _gauge_at < INSTANCE_GAUGE_SECONDS:
            return
        _gauge_at = now
    tel.on_system(SystemStats(memory_percent=resources.memory_usage().percent))


async def record_outside_pipeline(metrics: Any, stats: Any) -> None:
    """What a retry-queue message or a dead-letter replay did, recorded as the pipeline records a
    batch (its `_finish`): the tenant counters (`metrics.try_record`, never raises) and the telemetry
    hook, so deliveries on retry and dead letters (per destination) reach the `grc.*` metrics too."""
    await metrics.try_record(stats)
    telemetry_hook(stats)


def kafka_pending(services: Any) -> dict[str, Any] | None:
    """Messages and bytes awaiting delivery reports, when the Kafka destination is built here."""
    dest = services.destinations.built().get("kafka")
    pending = getattr(dest, "pending", None)
    if not callable(pending):
        return None
    try:
        p = pending()
    except Exception as exc:  # noqa: BLE001 - a figure, never a failure of /metrics
        log.warning("kafka pending() failed: %s", type(exc).__name__)
        return None
    return {"pendingMessages": int(p.get("messages", 0)), "pendingBytes": int(p.get("bytes", 0)),
            "statsAt": p.get("statsAt")}


async def _bounded(coro: Any) -> Any:
    try:
        return await asyncio.wait_for(coro, REDIS_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001
        log.warning("service figure unavailable: %s", type(exc).__name__)
        return None


async def stream_processing(services: Any) -> dict[str, Any] | None:
    raw = await services.redis.get(STREAM_PERF_KEY)
    return orjson.loads(raw) if raw else None


async def service_section(services: Any) -> dict[str, Any]:
    redis_mem, stream = await asyncio.gather(_bounded(resources.redis_memory(services.redis)),
                                             _bounded(stream_processing(services)))
    return {
        "instanceMemory": resources.memory_usage().to_dict(),
        "kafka": kafka_pending(services),
        "redis": redis_mem,
        "cosmos": cosmos_usage.snapshot(),
        "streamProcessing": stream,
    }


def system_stats(section: Mapping[str, Any], health: Mapping[str, str] | None = None,
                 retry_queue: Mapping[str, Any] | None = None) -> SystemStats:
    """The custom-metric view of the service section (telemetry `on_system`). `retry_queue`: the
    retry queue's health figures (`messages`, `poisonMessages`), when its check answered."""
    kafka = section.get("kafka") or {}
    redis = section.get("redis") or {}
    queue = retry_queue or {}
    return SystemStats(
        memory_percent=(section.get("instanceMemory") or {}).get("percent"),
        kafka_pending_messages=kafka.get("pendingMessages"),
        kafka_pending_bytes=kafka.get("pendingBytes"),
        redis_memory_percent=redis.get("percent"),
        retry_queue_messages=queue.get("messages"),
        retry_queue_poison_messages=queue.get("poisonMessages"),
        destinations_healthy={k: v != "unhealthy" for k, v in (health or {}).items()},
    )
