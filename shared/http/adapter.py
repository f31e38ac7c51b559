"""The one request adapter every HTTP function goes through.

It assigns the correlation id, parses and bounds bodies, turns `ProblemError` and unexpected
exceptions into problem details (never leaking internals), and is the single place where
authentication and tenant checks apply.
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import orjson

from shared.http.types import ApiRequest, ApiResponse, ProblemError
from shared.ids import uuid7
from shared.models import ClientIdPattern

log = logging.getLogger("grc.http")

Handler = Callable[[ApiRequest], Awaitable[ApiResponse]]
JSON_TYPES = ("application/json", "text/json")


def correlation_id_for(req: ApiRequest) -> str:
    for name in ("x-correlation-id", "x-request-id"):
        value = req.headers.get(name)
        if value and ClientIdPattern.match(value):
            return value
    return uuid7()


async def handle(req: ApiRequest, handler: Handler) -> ApiResponse:
    req.correlation_id = correlation_id_for(req)
    try:
        resp = await handler(req)
    except ProblemError as exc:
        resp = exc.response(instance=req.path, correlation_id=req.correlation_id)
    except Exception:  # noqa: BLE001 - never show internals to a client
        log.exception("unhandled error in %s %s (correlationId=%s)", req.method, req.path, req.correlation_id)
        resp = ProblemError(500, "Internal Server Error", "The request could not be processed.").response(
            instance=req.path, correlation_id=req.correlation_id
        )
    resp.headers.setdefault("x-correlation-id", req.correlation_id)
    return resp


def read_json(req: ApiRequest, max_bytes: int) -> Any:
    """Parse a JSON body: 415 when not JSON, 413 when too large, 400 with the position when malformed."""
    ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES:
        raise ProblemError(415, "Unsupported Media Type",
                           f"send the body as application/json (got {ctype or 'no Content-Type'})")
    declared = req.headers.get("content-length")
    if len(req.body) > max_bytes or (declared and declared.isdigit() and int(declared) > max_bytes):
        raise ProblemError(413, "Content Too Large", f"the body is larger than {max_bytes} bytes",
                           maxBytes=max_bytes)
    if not req.body:
        raise ProblemError(400, "Bad Request", "the request body is empty",
                           errors=[{"pointer": "", "field": "(body)", "detail": "a JSON body is required"}])
    try:
        return orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise ProblemError(400, "Bad Request", f"the body is not valid JSON: {exc.msg} at position {exc.pos}",
                           errors=[{"pointer": "", "field": "(body)", "detail": "malformed JSON"}]) from exc
