"""GET /events/{tenantId}/history: the analytics table, newest first, paged with an opaque token; a page
stops at the answer's byte cap (`truncated`; shared/core/answer_cap.py) and its token resumes right
after its last event."""
from __future__ import annotations

import time
from datetime import UTC, datetime

from shared.api import paging
from shared.api.params import bad_param, enum_param, int_param, tenant_param, time_param
from shared.app.services import get_services
from shared.core import limits
from shared.core.events import EventType, Source, utc_now_iso
from shared.destinations.analytics import is_position
from shared.http.types import ApiRequest, ApiResponse, json_response

DEFAULT_RANGE_MS = 24 * 3_600_000
PAGE_SCOPE = "history"
# The parameters that define the result set, as sent; a continuation token is valid only with the same.
BOUND = ("from", "to", "eventType", "source")


def _ms_param(req: ApiRequest, name: str) -> int | None:
    value = time_param(req, name)
    return None if value is None else int(value.timestamp() * 1000)


async def event_history(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    limit = int_param(req, "limit", limits.DEFAULT_EVENTS_QUERY_LIMIT, 1, limits.MAX_EVENTS_QUERY_LIMIT)
    event_type = enum_param(req, "eventType", EventType)
    source = enum_param(req, "source", Source)
    to_ms = _ms_param(req, "to")
    to_ms = int(time.time() * 1000) if to_ms is None else to_ms
    from_ms = _ms_param(req, "from")
    from_ms = to_ms - DEFAULT_RANGE_MS if from_ms is None else from_ms
    if from_ms > to_ms:
        raise bad_param("from", "must not be after 'to'")
    bound = paging.as_sent(req, *BOUND)
    after = paging.position(req, PAGE_SCOPE, tenant, bound, valid=is_position)
    page = await get_services().analytics.history(
        tenant, from_ms=from_ms, to_ms=to_ms, limit=limit, after=after,
        event_type=event_type.value if event_type else None, source=source.value if source else None,
    )
    body = {"tenantId": tenant, "from": _iso(from_ms), "to": _iso(to_ms), "count": len(page.events),
            "truncated": page.truncated, "events": page.events,
            "continuationToken": paging.token(PAGE_SCOPE, tenant, bound, page.next_position)}
    return json_response(body)


def _iso(ms: int) -> str:
    return utc_now_iso(datetime.fromtimestamp(ms / 1000, UTC))
