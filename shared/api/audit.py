"""GET /audit/{tenantId}: the tenant's audit trail, newest first; and `record_audit` for handlers."""
from __future__ import annotations

import logging
from typing import Any

import orjson

from shared.api import paging
from shared.api.params import int_param, tenant_param
from shared.app.services import get_services
from shared.http.types import ApiRequest, ApiResponse, json_response
from shared.security.audit import is_position

log = logging.getLogger("grc.audit")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PAGE_SCOPE = "audit"


async def get_audit(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req, unmapped=True)
    limit = int_param(req, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = paging.position(req, PAGE_SCOPE, tenant, {}, param="continuation", valid=is_position)
    page = await get_services().audit.list(tenant, limit, after)
    page.continuation = paging.token(PAGE_SCOPE, tenant, {}, page.continuation)
    return json_response({"tenantId": tenant, **page.model_dump(mode="json")})


async def record_audit(req: ApiRequest, tenant: str, action: str, target: str, before: Any, after: Any) -> None:
    """Append an audit record for a change that has been made. The change stands even if the trail
    cannot be written (it already happened); the record then goes to the error log in full, which in
    Azure lands in Application Insights, so it is not lost."""
    actor = req.principal if req.principal is not None else "anonymous"
    try:
        await get_services().audit.record(tenant, actor, action, target, before, after, req.correlation_id)
    except Exception:  # noqa: BLE001
        log.exception("audit record not written: tenant=%s actor=%s action=%s target=%s correlationId=%s "
                      "before=%s after=%s", tenant, getattr(actor, "subject", actor), action, target,
                      req.correlation_id, _brief(before), _brief(after))


def _brief(value: Any, limit: int = 8192) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit} chars)"
