"""Non-HTTP entry points the triggers call: the retry-queue drain and the analytics retention purge."""
from __future__ import annotations

import logging
from typing import Any

from shared.app.services import get_services
from shared.delivery.retry_queue import RetryProcessor

log = logging.getLogger("grc.jobs")


async def process_retry_message(body: bytes | str) -> str:
    """One retry-queue message; raises (so the host redelivers, then poisons) only when storage fails."""
    return await RetryProcessor(get_services()).process(body)


async def purge_analytics(budget_seconds: float = 240.0) -> dict[str, Any]:
    """Delete analytics hour partitions older than each tenant's retentionDays."""
    services = get_services()

    async def retention_of(tenants: list[str]) -> dict[str, int]:
        configs = await services.configs.get_many(tenants)
        return {t: c.retentionDays for t, c in configs.items()}

    stats = await services.analytics.purge_expired(retention_of, budget_seconds=budget_seconds)
    log.info("analytics retention: %s", stats)
    return stats
