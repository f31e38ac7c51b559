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

import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from shared.core.budgeted import each_within
from shared.core.streamconfig import StreamConfig, retention_cutoff
from shared.vector.base import VectorIndex

CONCURRENCY = 4


def uses_vectors(configs: Mapping[str, StreamConfig]) -> bool:
    """Whether any stored config names the vector destination (enabled or not): else nothing is indexed."""
    return any(d.type == "vector" for c in configs.values() for d in c.destinations)


async def purge_expired(index: VectorIndex, configs: Mapping[str, StreamConfig], *,
                        now: datetime | None = None, budget_seconds: float = 240.0) -> dict[str, int]:
    """Purge each configured tenant's documents older than its retentionDays; returns counts."""
    at = now or datetime.now(UTC)
    order = list(configs.items())
    random.shuffle(order)
    stats = {"tenants": 0, "documents": 0, "left": 0}

    async def purge(tenant_config: tuple[str, StreamConfig]) -> None:
        tenant, config = tenant_config
        # Awaited first: `stats[...] += await ...` reads the count before the await, and another
        # tenant's addition made meanwhile would be lost.
        deleted = await index.purge_before(tenant, retention_cutoff(at, config.retentionDays))
        stats["documents"] += deleted

    # The index down: raised, and the host's retry policy runs the purge again.
    stats["tenants"] = await each_within(order, purge, concurrency=CONCURRENCY,
                                         deadline=time.monotonic() + budget_seconds)
    stats["left"] = len(order) - stats["tenants"]
    return stats
