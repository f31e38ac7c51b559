"""GET /health: the overall status and each dependency's (observability/health.py runs the checks).

Anonymous (load balancers and App Service's health check call it), so it says little: a caller who is
not an admin gets the overall status and each dependency's status only; an admin (AUTH_ADMIN_ROLE,
or local-open under `make run`) also gets latencies, details and figures. 503 with Retry-After when
Redis or Tables is unhealthy.
"""
from __future__ import annotations

from typing import Any

from shared.app.services import get_services
from shared.core.events import utc_now_iso
from shared.http.adapter import optional_principal, public
from shared.http.outages import RETRY_AFTER_SECONDS
from shared.http.types import ApiRequest, ApiResponse, json_response
from shared.observability.health import cached_checks, overall


@public
async def health(req: ApiRequest) -> ApiResponse:
    services = get_services()
    results, checked_at = await cached_checks(services)
    status = overall(results)
    body: dict[str, Any] = {"status": status, "service": "grc-event-streaming"}
    caller = await optional_principal(req)
    if caller is not None and caller.is_admin:
        body.update(time=utc_now_iso(), checkedAt=checked_at,
                    dependencies={n: r.to_dict() for n, r in results.items()})
    else:  # strangers and tenant callers: states only, no latencies, hosts, sizes or errors
        body["dependencies"] = {n: {"status": r.status} for n, r in results.items()}
    headers = {"Cache-Control": "no-store"}
    if status == "unhealthy":  # the health document itself is the body; Retry-After as on every 503
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return json_response(body, 503 if status == "unhealthy" else 200, headers=headers)
