"""GET /health: every dependency checked concurrently, each under a short timeout."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from shared.destinations.base import DependencyHealth
from shared.http.adapter import public
from shared.http.types import ApiRequest, ApiResponse, json_response
from shared.models import utc_now_iso
from shared.services import Services, get_services

Check = Callable[[], Awaitable[DependencyHealth]]


async def _tables(services: Services) -> DependencyHealth:
    start = time.perf_counter()
    table = await services.configs.table()
    async for _ in table.list_entities(results_per_page=1).by_page():
        break
    return DependencyHealth("tables", "healthy", round((time.perf_counter() - start) * 1000, 2))


def checks(services: Services) -> dict[str, Check]:
    out: dict[str, Check] = {
        "redis": services.redis_streams.health,
        "tables": lambda: _tables(services),
        "retryQueue": services.retries.health,
    }
    for type_, dest in services.destinations.built().items():
        if type_ != "redis":
            out[type_] = dest.health
    return out


async def _run(name: str, check: Check, timeout: float) -> DependencyHealth:
    start = time.perf_counter()
    try:
        return await asyncio.wait_for(check(), timeout)
    except asyncio.TimeoutError:
        return DependencyHealth(name, "unhealthy", round((time.perf_counter() - start) * 1000, 2),
                                detail=f"no answer within {timeout} s")
    except Exception as exc:  # noqa: BLE001 - report the kind of failure, never its text (may hold hosts)
        return DependencyHealth(name, "unhealthy", round((time.perf_counter() - start) * 1000, 2),
                                detail=type(exc).__name__)


@public
async def health(req: ApiRequest) -> ApiResponse:
    services = get_services()
    timeout = services.settings.health_timeout_seconds
    named = checks(services)
    results = await asyncio.gather(*(_run(n, c, timeout) for n, c in named.items()))
    deps = {n: r.to_dict() for n, r in zip(named, results)}
    states = {r.status for r in results}
    overall = "unhealthy" if "unhealthy" in states else "degraded" if "degraded" in states else "healthy"
    body = {"status": overall, "service": "grc-event-streaming", "time": utc_now_iso(), "dependencies": deps}
    return json_response(body, 503 if overall == "unhealthy" else 200, headers={"Cache-Control": "no-store"})
