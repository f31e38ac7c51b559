"""Path and query parameter parsing with problem details naming the parameter."""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TypeVar

from shared.core.events import (
    TENANT_RULE,
    UNMAPPED_TENANT,
    date_time_problem,
    is_tenant_id,
    parse_rfc3339,
    to_utc,
)
from shared.http.types import ApiRequest, ProblemError

E = TypeVar("E", bound=Enum)


def bad_param(name: str, detail: str, where: str = "query", raw: str | None = None) -> ProblemError:
    """400 naming the parameter. `raw`, a query value holding a ",": the host hands a parameter given
    more than once to the function as its values joined by "," (devhost/http_driver.py, `joined`),
    which the client may not expect."""
    if raw is not None and "," in raw:
        detail += (f" (got {raw[:100]!r}: a parameter given more than once arrives as its values joined "
                   "by ',')")
    what = "header" if where == "headers" else f"{where} parameter"
    return ProblemError(400, "Bad Request", f"invalid {what} {name!r}: {detail}",
                        errors=[{"pointer": f"#/{where}/{name}", "field": name, "detail": detail}])


def tenant_param(req: ApiRequest, *, unmapped: bool = False) -> str:
    """The path's tenantId. `unmapped`: the route also serves the reserved partition of dead letters
    that name no valid tenant (UNMAPPED_TENANT), to admins only (a tenant grant can never name it:
    the request adapter has already refused anyone else with 403)."""
    tenant = req.route.get("tenantId", "")
    if unmapped and tenant == UNMAPPED_TENANT and req.principal is not None and req.principal.is_admin:
        return tenant
    if not is_tenant_id(tenant):
        raise bad_param("tenantId", f"must be {TENANT_RULE}", "path")
    return tenant


def text_path_param(req: ApiRequest, name: str, max_length: int) -> str:
    """A path parameter of 1 to `max_length` characters, the bounds its OpenAPI schema states (a longer
    one names nothing the route could find: 400 naming it, not a 404)."""
    value = req.route.get(name, "")
    if not 0 < len(value) <= max_length:
        raise bad_param(name, f"must be 1-{max_length} characters (got {len(value)})", "path")
    return value


def int_param(req: ApiRequest, name: str, default: int, lo: int, hi: int) -> int:
    raw = req.query.get(name)
    if raw is None:
        return default
    # ASCII digits only: str.isdigit() also takes "²", which int() then refuses. No int() of more
    # digits than `hi` has: Python refuses one of over 4,300 (a ValueError), which a query holds.
    digits = raw.lstrip("0") or "0"
    if not (raw.isascii() and raw.isdigit()) or len(digits) > len(str(hi)) or not lo <= int(digits) <= hi:
        raise bad_param(name, f"must be an integer from {lo} to {hi}", raw=raw)
    return int(digits)


def enum_param(req: ApiRequest, name: str, enum: type[E]) -> E | None:
    raw = req.query.get(name)
    if raw is None:
        return None
    try:
        return enum(raw)
    except ValueError:
        raise bad_param(name, f"must be one of {', '.join(m.value for m in enum)}", raw=raw) from None


def time_param(req: ApiRequest, name: str) -> datetime | None:
    """An RFC 3339 date-time with a zone, as documented (fromisoformat alone also takes ISO 8601
    basic forms such as 20260131T000000), as UTC; absent: None; empty, out of range (no UTC
    date-time) or anything else: 400."""
    raw = req.query.get(name)
    if raw is None:
        return None
    value = parse_rfc3339(raw)
    if value is None:
        problem = date_time_problem(raw)
        detail = (f"is not a valid date-time: {problem}" if problem else
                  "must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")
        if " " in raw and parse_rfc3339(raw.replace(" ", "+")) is not None:
            # The usual cause: an offset's "+" sent unencoded, which a query string reads as a space.
            detail += f" (got {raw[:100]!r}: a '+' in a query string reads as a space; send it as %2B)"
        raise bad_param(name, detail, raw=raw)
    if value.tzinfo is None:
        raise bad_param(name, "needs a time zone offset, e.g. 2026-01-31T12:00:00Z")
    try:
        return to_utc(value)
    except ValueError as exc:
        raise bad_param(name, str(exc)) from None
