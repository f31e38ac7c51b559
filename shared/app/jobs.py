"""Every non-HTTP entry point a trigger calls (function_app.py only decodes and wraps them in the
invocation's telemetry operation): a change-feed batch, the overdue check, the retry-queue drain,
the retention purges (analytics, vector index, dead letters), the monitor pass, vector indexing, a
backfill chunk."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from shared.app.services import get_services
from shared.changefeed.leases import container_of
from shared.changefeed.overdue import OverdueRun, emit_overdue
from shared.changefeed.processor import BatchOutcome
from shared.changefeed.rules import Kind
from shared.delivery.backfill import BackfillRunner
from shared.delivery.retry_queue import RetryProcessor
from shared.observability import telemetry
from shared.observability.monitor import MonitorReport, run_minute
from shared.vector import indexer as vector_indexer
from shared.vector import retention as vector_retention

log = logging.getLogger("grc.jobs")


def is_final_attempt(retry_count: int | None, max_retry_count: int | None) -> bool:
    """The host's retry context: count 0 = first execution; max -1 = retry forever; no policy = final."""
    if retry_count is None or max_retry_count is None:
        return True
    if max_retry_count < 0:
        return False
    return retry_count >= max_retry_count


async def on_change_batch(
    kind: Kind, docs: Sequence[Any], *, retry_count: int | None = None, max_retry_count: int | None = None
) -> BatchOutcome:
    """Raises `RetryBatch` while retries remain and something is unpublished; dead-letters on the last one."""
    services = get_services()
    final = is_final_attempt(retry_count, max_retry_count)
    out = await services.changefeed.process(
        kind, container_of(services.settings, kind), list(docs), final_attempt=final,
        attempt=(retry_count or 0) + 1,
    )
    log.info("%s: %d change(s) -> %d event(s), %d published, %d duplicate(s), %d dead-lettered",
             kind.value, out.documents, out.events, out.published, out.duplicates,
             out.deadlettered_documents + out.deadlettered_events)
    return out


async def run_overdue_check() -> OverdueRun:
    services = get_services()
    s = services.settings
    client = await services.cosmos.client()  # the instance's one client, kept between runs
    container = client.get_database_client(s.cosmos_database).get_container_client(
        s.cosmos_assessments_container)
    run = await emit_overdue(container, s.cosmos_assessments_container, services.changefeed,
                             services.overdue_dedupe)
    log.info("overdue check: %d scanned, %d overdue, %d published, %d already sent, %.1f RU",
             run.scanned, run.overdue, run.published, run.already, run.request_charge)
    return run


async def process_retry_message(body: bytes | str) -> str:
    """One retry-queue message; raises (so the host redelivers, then poisons) only when storage fails."""
    return await RetryProcessor(get_services()).process(body)


async def _retention_days(tenants: list[str]) -> dict[str, int]:
    """Each tenant's retentionDays (the default config's for a tenant with none stored)."""
    configs = await get_services().configs.get_many(tenants)
    return {t: c.retentionDays for t, c in configs.items()}


async def purge_analytics(budget_seconds: float = 240.0) -> dict[str, Any]:
    """Delete analytics hour partitions older than each configured tenant's retentionDays. Only tenants
    with a stored config can have analytics data (the default config has Redis only; a backfill or a
    replay needs the destination configured), as for the vector index; a tenant that has since removed
    the destination keeps its retentionDays and is purged all the same."""
    services = get_services()
    configs = await services.configs.stored()
    stats = await services.analytics.purge_expired({t: c.retentionDays for t, c in configs.items()},
                                                   budget_seconds=budget_seconds)
    log.info("analytics retention: %s", stats)
    return stats


async def purge_deadletters(budget_seconds: float = 240.0) -> dict[str, int]:
    """Delete dead letters recorded more than their tenant's retentionDays ago."""
    stats = await get_services().deadletters.purge_expired(_retention_days, budget_seconds=budget_seconds)
    log.info("dead-letter retention: %s", stats)
    return stats


async def purge_vectors(budget_seconds: float = 240.0) -> dict[str, int]:
    """Delete vector-index documents older than each configured tenant's retentionDays."""
    configs = await get_services().configs.stored()
    if not vector_retention.uses_vectors(configs):
        stats = {"tenants": 0, "documents": 0, "left": 0}  # no tenant indexes: the index is not opened
    else:
        service = vector_indexer.get_service()
        await service.open()
        stats = await vector_retention.purge_expired(service.index, configs, budget_seconds=budget_seconds)
    log.info("vector retention: %s", stats)
    return stats


async def monitor_pass(past_due: bool = False) -> MonitorReport:
    """One monitor pass (SYSTEM_PERFORMANCE, DATA_ANOMALY, service-wide custom metrics)."""
    if past_due:
        log.info("monitor timer is past due; the tenant-minute locks keep the pass idempotent")
    report = await run_minute(get_services())
    telemetry.current().log_event(
        logging.INFO, f"monitor pass for minute {report.minute}: {len(report.tenants)} tenant(s), "
        f"{len(report.events)} system event(s)", count=len(report.events))
    return report


async def index_vectors(body: bytes | str) -> int:
    """One vector-queue message embedded and indexed; raises so the host retries, then poisons."""
    return await vector_indexer.process_queue_message(body)


async def run_backfill(body: bytes | str, message_id: str) -> str:
    """One backfill chunk (docs/backfill.md); raises (the host redelivers, then poisons) only when
    storage fails: the job record is the checkpoint, so a redelivery skips what was done."""
    return await BackfillRunner(get_services()).run(body, message_id)
