"""GET /metrics/{tenantId}: the tenant's real-time metrics from Redis, the alert conditions that
hold now, and the service-wide figures of the parts (Kafka lag, Redis memory, Cosmos RU, delay)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared import alerts, resources, service_stats
from shared.api.health import recent_health
from shared.api.params import tenant_param
from shared.http.types import ApiRequest, ApiResponse, json_response
from shared.services import DESTINATION_FACTORIES, Services, get_services

log = logging.getLogger("grc.api.metrics")


async def _health(services: Services) -> dict[str, dict[str, Any]]:
    try:
        return await asyncio.wait_for(recent_health(services), service_stats.REDIS_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the destination alert then rests on delivery figures
        log.warning("stored health unavailable: %s", type(exc).__name__)
        return {}


async def get_metrics(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    services = get_services()
    snapshot, health, service = await asyncio.gather(
        services.metrics.snapshot(tenant), _health(services), service_stats.service_section(services))
    known = set(DESTINATION_FACTORIES) | set((snapshot["windows"].get("5m") or {}).get("destinations") or {})
    memory = resources.memory_usage()
    snapshot["alerts"] = alerts.evaluate(snapshot["windows"], memory, health, services.settings, known)
    snapshot["service"] = service
    return json_response(snapshot)
