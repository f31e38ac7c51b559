"""The route table, the one registry: function_app.py registers it with the Functions host (a
`func.Blueprint` built from it by shared/http/functions_adapter.py: one named function per route),
/openapi.json documents it, and 405 knows its methods. The two handlers that describe the table itself
(/openapi.json and the 404/405 fallback) are here, beside it."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from shared.api import (
    audit,
    backfills,
    deadletters,
    events,
    health,
    history,
    metrics,
    openapi as openapi_doc,
    search,
    streamconfig,
)
from shared.core import limits
from shared.core.events import CLIENT_ID_PATTERN
from shared.http.adapter import public
from shared.http.routing import ANY_METHOD, Route, allowed_methods
from shared.http.types import ApiRequest, ApiResponse, ProblemError, json_response


_EVENTS_LIMIT = {"type": "integer", "minimum": 1, "maximum": limits.MAX_EVENTS_QUERY_LIMIT}
_AUDIT_LIMIT = {"type": "integer", "minimum": 1, "maximum": audit.MAX_LIMIT}
_JOB_ID = ("jobId", {"type": "string", "minLength": 1, "maxLength": backfills.MAX_JOB_ID_CHARS},
           "the job id POST answered")
# Routes of Table storage answer 503 with Retry-After when storage hangs past this (Route.deadline);
# a write's work then goes on to its end (Route.completes). A replay has no route deadline: it bounds
# its reads itself (delivery/replay.py), and a healthy replay of many dead letters may take longer.
_READ = limits.STORAGE_READ_SECONDS
_WRITE = limits.STORAGE_READ_SECONDS
_TOKEN_DOC = ("the `continuationToken` of the previous page, sent with the same query parameters (it is signed "
              "and bound to the tenant and the query; any other value answers 400)")

API_ROUTES: tuple[Route, ...] = (
    Route("health", "GET", "health", health.health, "Health of the service and each dependency",
          anonymous=True, response_schema="Health", tags=("operations",)),
    Route("publish_event", "POST", "events", events.publish_event, "Publish one event",
          request_schema="EventIn", response_schema="EventResult", success=201, tags=("events",),
          headers=(("Idempotency-Key", {"type": "string", "pattern": CLIENT_ID_PATTERN},
                    "the eventId when the body has none: a retry is then a duplicate"),),
          responses=((409, "An event with this eventId is still being processed by another request; retry "
                           "after Retry-After"),
                     (422, "This eventId (or Idempotency-Key) was already used for a different event"))),
    Route("publish_events_bulk", "POST", "events/bulk", events.publish_bulk,
          "Publish up to 1,000 events (4 MiB); a result per event, in request order",
          request_schema="BulkRequest", response_schema="BulkResult", tags=("events",)),
    Route("list_events", "GET", "events/{tenantId}", events.list_events,
          "Recent events of a tenant, newest first (from Redis Streams)",
          response_schema="EventList", tags=("events",),
          query=(("limit", _EVENTS_LIMIT, "1-1000, default 100"),
                 ("eventType", {"$ref": "#/components/schemas/EventType"}, "only this event type"),
                 ("source", {"$ref": "#/components/schemas/Source"}, "only this source"))),
    Route("event_history", "GET", "events/{tenantId}/history", history.event_history,
          "A tenant's stored events (analytics table) in a time range, newest first, paged",
          response_schema="EventHistory", tags=("events",), deadline=_READ,
          query=(("from", {"type": "string", "format": "date-time"}, "RFC 3339, inclusive (default: 24 h before 'to')"),
                 ("to", {"type": "string", "format": "date-time"}, "RFC 3339, inclusive (default: now)"),
                 ("eventType", {"$ref": "#/components/schemas/EventType"}, "only this event type"),
                 ("source", {"$ref": "#/components/schemas/Source"}, "only this source"),
                 ("limit", _EVENTS_LIMIT, "1-1000, default 100"),
                 ("continuationToken", "string", _TOKEN_DOC))),
    Route("list_deadletters", "GET", "deadletters/{tenantId}", deadletters.list_deadletters,
          "A tenant's dead-lettered deliveries (destination, reason, attempts, last error, the event)",
          response_schema="DeadLetterList", tags=("delivery",), unmapped=True, deadline=_READ,
          query=(("limit", _EVENTS_LIMIT, "1-1000, default 100"),
                 ("includeReplayed", {"type": "string", "enum": ["true", "false"]},
                  "also list records already replayed (default false)"),
                 ("continuationToken", "string", _TOKEN_DOC))),
    Route("replay_deadletters", "POST", "deadletters/{tenantId}/replay", deadletters.replay_deadletters,
          "Send dead letters back through their destination (all not yet replayed, or the given ids)",
          request_schema="ReplayRequest", response_schema="ReplayResult", tags=("delivery",), unmapped=True),
    Route("start_backfill", "POST", "backfills/{tenantId}", backfills.start_backfill,
          "Re-stream the tenant's stored events of [from, to) into one destination, oldest first, as a "
          "resumable job (docs/backfill.md); 202 with the job and its Location",
          request_schema="BackfillRequest", response_schema="BackfillJob", success=202, tags=("delivery",),
          deadline=_WRITE, completes=True,
          responses=((409, "The destination (or the tenant's stream) is not enabled in its stream config"),
                     (429, "The tenant's rate limit is exceeded, or it has BACKFILL_MAX_CONCURRENT_JOBS "
                           "backfills queued or running; retry after Retry-After"))),
    Route("list_backfills", "GET", "backfills/{tenantId}", backfills.list_backfills,
          "The tenant's backfill jobs, newest first", response_schema="BackfillList", tags=("delivery",),
          deadline=_READ,
          query=(("limit", _EVENTS_LIMIT, "1-1000, default 50"), ("continuationToken", "string", _TOKEN_DOC))),
    Route("get_backfill", "GET", "backfills/{tenantId}/{jobId}", backfills.get_backfill,
          "A backfill's state and progress (read, delivered, skipped duplicates, filtered, failed, "
          "dead-lettered, position, rate, estimated time left)", response_schema="BackfillJob",
          tags=("delivery",), path_params=(_JOB_ID,), responses=((404, "No such job for this tenant"),),
          deadline=_READ),
    Route("cancel_backfill", "DELETE", "backfills/{tenantId}/{jobId}", backfills.cancel_backfill,
          "Cancel a backfill: cancelled at once, or `cancelling` while a chunk runs (it stops at its next "
          "checkpoint)", response_schema="BackfillJob", success=202, tags=("delivery",), path_params=(_JOB_ID,),
          responses=((404, "No such job for this tenant"), (409, "The job has completed or failed already")),
          deadline=_WRITE, completes=True),
    Route("get_metrics", "GET", "metrics/{tenantId}", metrics.get_metrics,
          "Real-time metrics of a tenant (1 min, 5 min, 1 h windows and totals), alert conditions, service figures",
          response_schema="TenantMetrics", tags=("operations",)),
    Route("get_stream_config", "GET", "stream-config/{tenantId}", streamconfig.get_stream_config,
          "A tenant's stream configuration (the documented default when none is stored)",
          response_schema="StreamConfig", tags=("config",), deadline=_READ,
          headers=(("If-None-Match", {"type": "string"},
                    "ETags read before, comma-separated (or `*`): 304 while the stored config is one of "
                    "them"),),
          responses=((304, "Not Modified: the stored config is one `If-None-Match` names (ETag header, no "
                           "body)"),)),
    Route("put_stream_config", "PUT", "stream-config/{tenantId}", streamconfig.put_stream_config,
          "Create or replace a tenant's stream configuration (If-Match for optimistic concurrency). The body "
          "GET answers with can be sent back as it is: its read-only `version` makes the write conditional on "
          "it (412 when the stored version moved on), `updatedAt` and `isDefault` are ignored",
          request_schema="StreamConfigIn", response_schema="StreamConfig", tags=("config",),
          headers=(("If-Match", {"type": "string"},
                    "the ETag read, or several comma-separated (or `*`: only if one is stored)"),
                   ("If-None-Match", {"type": "string"},
                    "`*`: only if none is stored yet; ETags: only if the stored config is none of them")),
          responses=((422, "An enabled Kafka destination names a topic (event hub) the broker does not "
                           "have"),),
          deadline=_WRITE, completes=True),
    Route("get_audit", "GET", "audit/{tenantId}", audit.get_audit,
          "A tenant's audit trail (config changes, replays, admin actions), newest first",
          response_schema="AuditList", tags=("audit",), unmapped=True, deadline=_READ,
          query=(("limit", _AUDIT_LIMIT, "1-1000, default 100"),
                 ("continuation", "string", "the `continuation` of the previous page (signed and bound to the "
                                  "tenant; any other value answers 400)"))),
    Route("search_events", "GET", "search/{tenantId}", search.search_events,
          "Hybrid (keyword + semantic) search of a tenant's events (destination `vector`), best match first",
          response_schema="SearchResult", tags=("events",),
          query=(("q", {"type": "string", "minLength": 1, "maxLength": 1000},
                  "what to look for (at most 1,000 characters)"),
                 ("k", {"type": "integer", "minimum": 1},
                  "hits, 1-VECTOR_SEARCH_MAX_K (50), default 10 (at most VECTOR_SEARCH_MAX_K)"),
                 ("mode", {"type": "string", "enum": ["hybrid", "vector", "keyword"]},
                  "rankings to fuse: hybrid (default), vector or keyword"),
                 ("eventType", "string", "EventType values, comma-separated"),
                 ("entityType", "string", "entity types, comma-separated"),
                 ("from", {"type": "string", "format": "date-time"}, "RFC 3339 date-time, inclusive"),
                 ("to", {"type": "string", "format": "date-time"}, "RFC 3339 date-time, inclusive")),
          required_query=("q",)),
)


@public
async def openapi(req: ApiRequest) -> ApiResponse:
    return json_response(_document())


@public
async def not_matched(req: ApiRequest) -> ApiResponse:
    """Lowest route precedence: 405 with Allow for a known path and a wrong method, 404 otherwise
    (the Functions host answers a wrong method with 404; a `{*path}` function sees only requests no
    other function matched)."""
    allowed = allowed_methods(ROUTES, req.path)
    if allowed:
        raise ProblemError(405, "Method Not Allowed", f"{req.method} is not allowed here; use {', '.join(allowed)}",
                           headers={"Allow": ", ".join(allowed)})
    raise ProblemError(404, "Not Found", f"no route matches {req.path}")


ROUTES: tuple[Route, ...] = (
    *API_ROUTES,
    Route("openapi", "GET", "openapi.json", openapi, "This document", anonymous=True, tags=("meta",)),
    Route("not_matched", ANY_METHOD, "{*path}", not_matched, "404 / 405 for what no other route matches",
          anonymous=True, documented=False),
)


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    return openapi_doc.document(ROUTES)
