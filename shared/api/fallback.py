"""Catch-all route: 405 with Allow for a known path and a wrong method, 404 otherwise.

The Functions host answers a wrong method with 404; a `{*path}` function has the lowest route
precedence, so it only sees requests no other function matched.
"""
from __future__ import annotations

from shared.api.routes import allowed_methods
from shared.http.adapter import public
from shared.http.types import ApiRequest, ApiResponse, ProblemError


@public
async def not_matched(req: ApiRequest) -> ApiResponse:
    allowed = allowed_methods(req.path)
    if allowed:
        raise ProblemError(405, "Method Not Allowed", f"{req.method} is not allowed here; use {', '.join(allowed)}",
                           headers={"Allow": ", ".join(allowed)})
    raise ProblemError(404, "Not Found", f"no route matches {req.path}")
