"""The vector index keeps a tenant's events `retentionDays`, as the analytics store does.

Neither index expires documents by itself (Azure AI Search has no TTL), so the hourly `purge_vectors`
timer deletes, for every tenant with a stored stream config, the documents timestamped before now -
retentionDays (`VectorIndex.purge_before`). Only tenants with a stored config can have documents: the
default config has no vector destination, and a backfill needs the destination enabled. A tenant that
has since removed the destination keeps its retentionDays and is purged all the same.

Tenants are taken in a random order, CONCURRENCY at a time, until the time budget is spent: with more
tenants than a run can do, each run reaches a different share of them, rather than the same ones
first every hour and the last ones never.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from shared.core.streamconfig import StreamConfig
from shared.vector.base import VectorIndex

CONCURRENCY = 4


def cutoff(now: datetime, retention_days: int) -> str:
    """The instant before which a tenant's documents are purged, RFC 3339 UTC to the millisecond."""
    return (now - timedelta(days=retention_days)).astimezone(UTC).isoformat(timespec="milliseconds")


def uses_vectors(configs: Mapping[str, StreamConfig]) -> bool:
    """Whether any stored config names the vector destination (enabled or not): else nothing is indexed."""
    return any(d.type == "vector" for c in configs.values() for d in c.destinations)


async def purge_expired(index: VectorIndex, configs: Mapping[str, StreamConfig], *,
                        now: datetime | None = None, budget_seconds: float = 240.0) -> dict[str, int]:
    """Purge each configured tenant's documents older than its retentionDays; returns counts."""
    now = now or datetime.now(UTC)
    deadline = time.monotonic() + budget_seconds
    order = list(configs.items())
    random.shuffle(order)
    todo = iter(order)
    stats = {"tenants": 0, "documents": 0, "left": len(order)}

    async def worker() -> None:
        for tenant, config in todo:  # one iterator: each tenant taken by one worker
            if time.monotonic() > deadline:
                return  # the next run carries on
            # Awaited first: `stats[...] += await ...` reads the count before the await, and another
            # worker's addition made meanwhile would be lost.
            deleted = await index.purge_before(tenant, cutoff(now, config.retentionDays))
            stats["documents"] += deleted
            stats["tenants"] += 1
            stats["left"] -= 1

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(CONCURRENCY, len(order))):
                group.create_task(worker())
    except ExceptionGroup as failed_run:  # the index down: the host's retry policy runs it again
        raise failed_run.exceptions[0] from None
    return stats
