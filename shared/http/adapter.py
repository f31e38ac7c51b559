"""The one request adapter every HTTP function goes through.

It assigns the correlation id, parses and bounds bodies, turns `ProblemError` and unexpected
exceptions into problem details (never leaking internals), and is the single place where
authentication and tenant checks apply. A dependency that is down (`shared.http.outages`) is a 503
with `Retry-After` on every route, never a 500.
"""
from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from shared.app.services import get_services
from shared.core.events import ClientIdPattern, is_tenant_id
from shared.core.ids import uuid7
from shared.core.validation import field_error, field_errors
from shared.http.big_ints import INT_MAX, INT_MIN, out_of_range_ints
from shared.http.content_coding import decoded_body, too_large
from shared.http.outages import RETRY_AFTER_SECONDS, unavailable_dependency
from shared.http.types import ApiRequest, ApiResponse, ProblemError
from shared.observability import telemetry
from shared.security.errors import RateLimited, SecurityError, response_headers
from shared.security.identity import authenticate
from shared.security.principal import Principal
from shared.security.tenants import authorize_all

log = logging.getLogger("grc.http")

Handler = Callable[[ApiRequest], Awaitable[ApiResponse]]
JSON_TYPES = ("application/json", "text/json")


def correlation_id_for(req: ApiRequest) -> str:
    for name in ("x-correlation-id", "x-request-id"):
        value = req.headers.get(name)
        if value and ClientIdPattern.fullmatch(value):
            return value
    return uuid7()


def public(handler: Handler) -> Handler:
    """Mark a handler as answering without a caller identity (/health, /openapi.json, 404/405)."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


async def optional_principal(req: ApiRequest) -> Principal | None:
    """The caller's identity on a public route, or None when it has none or a bad one (a public route
    never refuses; it may only tell an admin more)."""
    try:
        return await authenticate(req.headers, get_services().settings)
    except SecurityError:
        return None


async def admit(req: ApiRequest, tenant_costs: Mapping[str, int]) -> None:
    """Tenant authorisation and rate limit for the tenants a request touches (cost = events).
    Any tenant not granted refuses the whole request (docs/security.md, 'Bulk requests')."""
    assert req.principal is not None, "admit() needs an authenticated request"
    authorize_all(req.principal, tenant_costs)
    # Invalid ids: only an admin gets here with one; the handler answers 400 for it.
    costs = {t: c for t, c in tenant_costs.items() if is_tenant_id(t)}
    if not costs:
        return
    decisions = await get_services().ratelimit.take_all(costs)  # every tenant in one round trip
    refused = sorted(t for t, d in decisions.items() if not d.allowed)
    if refused:
        wait = max(decisions[t].retry_after_seconds for t in refused)
        raise RateLimited(wait, f"tenant(s) {', '.join(refused[:5])} over their rate")


async def _secure(req: ApiRequest, handler: Handler) -> ApiResponse:
    if not getattr(handler, "public", False):
        req.principal = await authenticate(req.headers, get_services().settings)
        if "tenantId" in req.route:  # path-scoped routes; body-scoped ones call admit() themselves
            await admit(req, {req.route["tenantId"]: 1})
    return await handler(req)


async def handle(req: ApiRequest, handler: Handler, function_name: str | None = None,
                 deadline: float | None = None, completes: bool = False) -> ApiResponse:
    """Run `handler` inside the invocation's telemetry operation (operation id = the traceparent's
    trace id, name = the Functions function name), so every log record and failure-type metric of
    the request joins the host's request telemetry in Application Insights. `deadline` (the route's):
    past it the request is an outage, 503 with Retry-After; `completes` (a write route): the work
    then goes on to its end instead of being cancelled."""
    with telemetry.operation(req.traceparent, function_name or f"{req.method} {req.path}"):
        return await _handle(req, handler, deadline, completes)


async def _handle(req: ApiRequest, handler: Handler, deadline: float | None = None,
                  completes: bool = False) -> ApiResponse:
    req.correlation_id = correlation_id_for(req)
    try:
        if completes and deadline is not None:
            resp = await _answer_within(req, handler, deadline)
        else:
            async with asyncio.timeout(deadline):  # TimeoutError past it: an outage below
                resp = await _secure(req, handler)
    except ProblemError as exc:
        resp = exc.response(instance=req.path, correlation_id=req.correlation_id)
    except SecurityError as exc:  # generic detail only; the reason goes to the log
        log.info("%s %s refused %d: %s (correlationId=%s)", req.method, req.path, exc.status, exc.reason,
                 req.correlation_id)
        resp = ProblemError(exc.status, exc.title, exc.detail, headers=response_headers(exc)).response(
            instance=req.path, correlation_id=req.correlation_id)
    except Exception as exc:  # noqa: BLE001 - never show internals to a client
        dependency = unavailable_dependency(exc)
        if dependency is not None:  # an outage, not a bug: the client should come back
            log.warning("%s %s: %s unavailable (%s, correlationId=%s)", req.method, req.path, dependency,
                        type(exc).__name__, req.correlation_id)
            resp = ProblemError(503, "Service Unavailable",
                                "A service this request needs is unavailable; retry after the Retry-After interval.",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)}).response(
                instance=req.path, correlation_id=req.correlation_id)
        else:
            log.exception("unhandled error in %s %s (correlationId=%s)", req.method, req.path, req.correlation_id)
            resp = ProblemError(500, "Internal Server Error", "The request could not be processed.").response(
                instance=req.path, correlation_id=req.correlation_id
            )
    resp.headers.setdefault("x-correlation-id", req.correlation_id)
    return resp


async def _answer_within(req: ApiRequest, handler: Handler, deadline: float) -> ApiResponse:
    """A write's answer within `deadline`, the write itself never cut short: past the deadline the
    client gets 503 with Retry-After and the work goes on to its end on this instance (its outcome
    logged), so a change is never left halfway. Whether it was applied is then read back (a config's
    `version` and ETag, a job's state), as after any answer that did not arrive."""
    work = asyncio.ensure_future(_secure(req, handler))
    try:
        return await asyncio.wait_for(asyncio.shield(work), deadline)
    except asyncio.CancelledError:  # the request itself was cancelled: the write still ends, logged
        work.add_done_callback(partial(_finished_late, req, "its request was cancelled"))
        raise
    except TimeoutError:
        work.add_done_callback(partial(_finished_late, req, "its 503"))
        log.warning("%s %s: no answer within %g s; answered 503, the change goes on (correlationId=%s)",
                    req.method, req.path, deadline, req.correlation_id)
        raise ProblemError(503, "Service Unavailable",
                           f"The change did not finish within {deadline:g} s: a service it needs is slow or "
                           "unavailable. It goes on and may still be applied: read the resource back before "
                           "sending it again.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None


def _finished_late(req: ApiRequest, after: str, work: "asyncio.Future[ApiResponse]") -> None:
    """The outcome of a write whose client got no answer from it (a 503 at its deadline, or the request
    cancelled): the log is its only record."""
    if work.cancelled():
        outcome = "cancelled"
    elif (exc := work.exception()) is None:
        outcome = f"answered {work.result().status}"
    elif isinstance(exc, (ProblemError, SecurityError)):
        outcome = f"refused {exc.status}"
    else:
        outcome = f"failed ({type(exc).__name__})"
    log.warning("%s %s finished after %s: %s (correlationId=%s)", req.method, req.path, after, outcome,
                req.correlation_id)


def read_json(req: ApiRequest, max_bytes: int) -> Any:
    """Parse a JSON body: 415 when not JSON, 413 when too large, 400 with the position when malformed,
    400 naming each integer that would lose digits (shared/http/big_ints.py)."""
    return _json_body(req, max_bytes)[1]


UTF8_BOM = b"\xef\xbb\xbf"
UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii")  # us-ascii: a subset, read the same


def _charset(params: str) -> str:
    """The `charset` parameter of a Content-Type's parameters (after the ";"), lower-cased; utf-8 when
    it has none."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return "utf-8"


def _json_body(req: ApiRequest, max_bytes: int) -> tuple[bytes, Any]:
    """The body's bytes without its content coding (shared/http/content_coding.py), and its JSON."""
    ctype, _, params = (req.headers.get("content-type") or "").partition(";")
    ctype = ctype.strip().lower()
    if ctype not in JSON_TYPES:
        raise ProblemError(415, "Unsupported Media Type",
                           f"send the body as application/json (got {ctype or 'no Content-Type'})")
    charset = _charset(params)
    if charset not in UTF8_CHARSETS:
        # The body is read as UTF-8 (RFC 8259 8.1): a body in another charset would be refused as
        # malformed or, where its bytes happen to be valid UTF-8, stored as other characters.
        raise ProblemError(415, "Unsupported Media Type",
                           f"send the body as UTF-8 (got charset={charset[:40]})")
    declared = req.headers.get("content-length")
    if len(req.body) > max_bytes or (declared and declared.isdigit() and int(declared) > max_bytes):
        raise too_large(max_bytes)
    if not req.body and "chunked" in (req.headers.get("transfer-encoding") or "").lower():
        # The Functions host passes a body to the worker only when the request has a Content-Length
        # (devhost/http_driver.py, `_handle`): a chunked one arrives empty. Saying so beats "empty".
        raise ProblemError(411, "Length Required",
                           "the body was sent chunked (Transfer-Encoding: chunked, no Content-Length); the "
                           "Functions host does not pass such a body on: send it with a Content-Length")
    body = decoded_body(req.body, req.headers.get("content-encoding"), max_bytes)
    if body[:3] == UTF8_BOM:
        # RFC 8259 8.1 lets a parser ignore it, and a JSON file saved by a Windows editor starts with
        # one (`curl --data-binary @event.json`); orjson refuses it.
        body = body[3:]
    if not body:
        raise ProblemError(400, "Bad Request", "the request body is empty",
                           errors=[{"pointer": "", "field": "(body)", "detail": "a JSON body is required"}])
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProblemError(400, "Bad Request", f"the body is not valid JSON: {exc.msg} at position {exc.pos}",
                           errors=[{"pointer": "", "field": "(body)", "detail": "malformed JSON"}]) from exc
    big = out_of_range_ints(body)
    if big:  # refused whole, like malformed JSON: parsed, they would have silently lost digits
        detail = "integer out of range; send it as a string"
        raise ProblemError(400, "Bad Request",
                           f"the body holds integers outside {INT_MIN} to {INT_MAX}, which would lose "
                           "digits; send such numbers as strings",
                           errors=[field_error(loc, detail, "int_out_of_range").model_dump(exclude_none=True)
                                   for loc in big])
    return body, value


M = TypeVar("M", bound=BaseModel)


def read_model(req: ApiRequest, model: type[M], max_bytes: int, what: str) -> M:
    """A JSON body as `model`: `read_json`'s checks, then the model in strict JSON mode (values must have
    the documented JSON types: no 0 -> false, "30" -> 30); 400 naming every invalid field otherwise."""
    body, _ = _json_body(req, max_bytes)
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise ProblemError(400, "Bad Request", f"{what} is not valid",
                           errors=[e.model_dump(exclude_none=True) for e in field_errors(exc)]) from exc
