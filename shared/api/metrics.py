"""GET /metrics/{tenantId}: the tenant's real-time metrics from Redis."""
from __future__ import annotations

from shared.api.params import tenant_param
from shared.http.types import ApiRequest, ApiResponse, json_response
from shared.services import get_services


async def get_metrics(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    snapshot = await get_services().metrics.snapshot(tenant)
    return json_response(snapshot)
