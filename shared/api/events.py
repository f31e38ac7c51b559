"""POST /events, POST /events/bulk, GET /events/{tenantId}."""
from __future__ import annotations

from typing import Any

from shared.api.params import enum_param, int_param, tenant_param
from shared.app.services import get_services
from shared.core import limits
from shared.core.events import ClientIdPattern, EventType, Source
from shared.core.results import Delivery, EventResult
from shared.core.validation import pointer
from shared.delivery.pipeline import PublishContext
from shared.http.adapter import admit, read_json
from shared.http.outages import RETRY_AFTER_SECONDS
from shared.http.types import ApiRequest, ApiResponse, ProblemError, json_response
from shared.security.tenants import tenant_costs


def delivery_body(d: Delivery) -> dict[str, Any]:
    """A delivery as the API shows it: `d.model_dump(exclude_none=True)`, built directly."""
    f = d.__dict__  # by key: a pydantic model's attribute reads cost twice as much (see enrich)
    out: dict[str, Any] = {"destination": f["destination"], "status": f["status"]}
    if f["ref"] is not None:
        out["ref"] = f["ref"]
    if f["error"] is not None:
        out["error"] = f["error"]
    out["transient"] = f["transient"]
    return out


def result_body(r: EventResult) -> dict[str, Any]:
    """An event's result as the API shows it: `model_dump(exclude_none=True)` (the per-event
    `httpStatus` of rejected events only), built directly rather than by pydantic's serializer, once
    per event of every bulk (docs/performance.md; tests/test_fast_values.py checks the two agree)."""
    f = r.__dict__
    out: dict[str, Any] = {"index": f["index"], "status": f["status"]}
    if f["eventId"] is not None:
        out["eventId"] = f["eventId"]
    if f["tenantId"] is not None:
        out["tenantId"] = f["tenantId"]
    out["destinations"] = [delivery_body(d) for d in f["destinations"]]
    errors = f["errors"]
    out["errors"] = [e.model_dump(exclude_none=True) for e in errors] if errors else []
    if f["reason"] is not None:
        out["reason"] = f["reason"]
    if f["httpStatus"] is not None and f["status"] == "rejected":
        out["httpStatus"] = f["httpStatus"]
    return out


async def publish_event(req: ApiRequest) -> ApiResponse:
    body = read_json(req, limits.MAX_SINGLE_BODY_BYTES)
    if not isinstance(body, dict):
        raise ProblemError(400, "Bad Request", "the body must be a JSON object (one event)",
                           errors=[{"pointer": "", "field": "(body)", "detail": "expected an object"}])
    key = req.headers.get("idempotency-key")
    if key is not None and not ClientIdPattern.fullmatch(key):
        raise ProblemError(400, "Bad Request", "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : -",
                           errors=[{"pointer": "#/headers/Idempotency-Key", "field": "Idempotency-Key",
                                    "detail": "invalid format"}])
    await admit(req, tenant_costs([body]))
    ctx = PublishContext(correlation_id=req.correlation_id, idempotency_key=key)
    result = (await get_services().pipeline.publish_raw([body], ctx))[0]
    if result.status == "rejected":
        status = result.httpStatus or 400
        title = {413: "Content Too Large", 422: "Unprocessable Content"}.get(status, "Bad Request")
        raise ProblemError(status, title, "the event is not valid" if status == 400 else result.errors[0].detail,
                           errors=[e.model_dump(exclude_none=True) for e in result.errors])
    if result.status == "failed" and result.httpStatus == 409:
        raise ProblemError(409, "Conflict", result.reason, headers={"Retry-After": "1"}, eventId=result.eventId)
    if result.status == "failed":
        raise ProblemError(503, "Service Unavailable", result.reason or "delivery failed; retry later",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}, eventId=result.eventId,
                           destinations=[delivery_body(d) for d in result.destinations])
    payload = result_body(result)
    payload["correlationId"] = req.correlation_id
    return json_response(payload, 201 if result.status == "accepted" else 200)


async def publish_bulk(req: ApiRequest) -> ApiResponse:
    body = read_json(req, limits.MAX_BULK_BODY_BYTES)
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        raise ProblemError(400, "Bad Request", 'the body must be {"events": [...]}',
                           errors=[{"pointer": "/events", "field": "events", "detail": "expected an array of events"}])
    extra = sorted(set(body) - {"events"})
    if extra:
        raise ProblemError(400, "Bad Request", 'the body holds only "events": {"events": [...]}',
                           errors=[{"pointer": pointer([name]), "field": name, "detail": "unknown member"}
                                   for name in extra[:20]])
    if len(events) > limits.MAX_BULK_EVENTS:
        raise ProblemError(413, "Content Too Large",
                           f"{len(events)} events in one request; the limit is {limits.MAX_BULK_EVENTS}",
                           maxEvents=limits.MAX_BULK_EVENTS)
    await admit(req, tenant_costs(events))  # a foreign tenant anywhere refuses the whole request
    ctx = PublishContext(correlation_id=req.correlation_id, pointer_prefix=("events",))
    results = await get_services().pipeline.publish_raw(events, ctx)
    counts = {s: 0 for s in ("accepted", "filtered", "rejected", "failed", "duplicate")}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    payload = {"correlationId": req.correlation_id, "total": len(results), **counts,
               "results": [result_body(r) for r in results]}
    if counts["failed"]:
        # Some events could neither be delivered nor parked: nothing about them was acknowledged.
        raise ProblemError(503, "Service Unavailable",
                           f"{counts['failed']} of {len(results)} events could not be delivered; "
                           "resend those (results[].status == 'failed') later",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}, **payload)
    return json_response(payload, 200)


async def list_events(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    limit = int_param(req, "limit", limits.DEFAULT_EVENTS_QUERY_LIMIT, 1, limits.MAX_EVENTS_QUERY_LIMIT)
    event_type = enum_param(req, "eventType", EventType)
    source = enum_param(req, "source", Source)
    entries, truncated = await get_services().redis_streams.read_recent(
        tenant, limit, event_type.value if event_type else None, source.value if source else None
    )
    return json_response({"tenantId": tenant, "count": len(entries), "truncated": truncated,
                          "events": entries})
