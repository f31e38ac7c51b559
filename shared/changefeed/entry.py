"""What the trigger functions call: a change-feed batch, the overdue timer, parked-item replay.

`function_app.py` only decodes (DocumentList -> dicts, retry context -> attempt numbers).
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from shared.app.services import Services, get_services
from shared.changefeed.overdue import OverdueRun, emit_overdue
from shared.changefeed.processor import BatchOutcome
from shared.changefeed.rules import Kind
from shared.changefeed.runtime import container_of, processor_for
from shared.changefeed.state import Dedup

log = logging.getLogger("grc.changefeed")
_overdue_markers: weakref.WeakKeyDictionary[Services, Dedup] = weakref.WeakKeyDictionary()


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
    """Raises `RetryBatch` while retries remain and something is unpublished; parks on the last one."""
    services = get_services()
    final = is_final_attempt(retry_count, max_retry_count)
    out = await processor_for(services).process(
        kind, container_of(services.settings, kind), list(docs), final_attempt=final
    )
    log.info("%s: %d change(s) -> %d event(s), %d published, %d duplicate(s), %d parked",
             kind.value, out.documents, out.events, out.published, out.duplicates,
             out.parked_documents + out.parked_events)
    return out


async def run_overdue_check() -> OverdueRun:
    services = get_services()
    s = services.settings
    markers = _overdue_markers.get(services)
    if markers is None:
        markers = _overdue_markers[services] = Dedup(services.redis, s.changefeed_state_ttl_days * 86_400)
    client = await services.cosmos.client()  # the instance's one client, kept between runs
    container = client.get_database_client(s.cosmos_database).get_container_client(
        s.cosmos_assessments_container)
    run = await emit_overdue(container, s.cosmos_assessments_container, processor_for(services), markers)
    log.info("overdue check: %d scanned, %d overdue, %d published, %d already sent, %.1f RU",
             run.scanned, run.overdue, run.published, run.already, run.request_charge)
    return run


async def replay_parked(tenant: str, limit: int = 100) -> dict[str, int]:
    return await processor_for(get_services()).replay_tenant(tenant, limit)
