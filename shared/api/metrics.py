"""GET /metrics/{tenantId}: the tenant's real-time metrics from Redis, the alert conditions that
hold now, and, for admins only, the service-wide figures of the parts (Kafka lag, Redis memory,
Cosmos RU, all tenants' stream processing, the answering instance's memory).

A tenant's caller sees its own tenant only: its windows and totals, and the alert conditions of its
own deliveries (error rate, delay, failing destinations among those it delivers to). The figures of
the whole service, including the instance `memory` condition, go to callers with the admin role."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.api.params import tenant_param
from shared.app.services import DESTINATION_FACTORIES, Services, get_services
from shared.http.types import ApiRequest, ApiResponse, json_response
from shared.observability import alerts, resources, service_stats
from shared.observability.health import recent_health

log = logging.getLogger("grc.api.metrics")


async def _health(services: Services) -> dict[str, dict[str, Any]]:
    try:
        return await asyncio.wait_for(recent_health(services), service_stats.REDIS_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the destination alert then rests on delivery figures
        log.warning("stored health unavailable: %s", type(exc).__name__)
        return {}


SERVICE_WIDE_CONDITIONS = ("memory",)  # the answering instance's, not the tenant's


async def _nothing() -> None:
    return None


async def get_metrics(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    services = get_services()
    admin = req.principal is not None and req.principal.is_admin
    snapshot, health, service = await asyncio.gather(
        services.metrics.snapshot(tenant), _health(services),
        service_stats.service_section(services) if admin else _nothing())
    own = set((snapshot["windows"].get("5m") or {}).get("destinations") or {})
    # A tenant hears of a destination's failed health check only if it delivers to it.
    known = set(DESTINATION_FACTORIES) | own if admin else own
    memory = resources.memory_usage() if admin else None
    block = alerts.evaluate(snapshot["windows"], memory, health, services.settings, known)
    if not admin:
        for name in SERVICE_WIDE_CONDITIONS:
            block["conditions"].pop(name, None)
        block["firing"] = [n for n in block["firing"] if n not in SERVICE_WIDE_CONDITIONS]
    snapshot["alerts"] = block
    if admin:
        snapshot["service"] = service
    return json_response(snapshot)
