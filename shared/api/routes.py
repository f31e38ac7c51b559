"""The route table: what function_app.py registers, what /openapi.json documents, what 405 knows."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from shared import limits
from shared.api import audit, deadletters, events, health, history, metrics, search, streamconfig
from shared.models import CLIENT_ID_PATTERN
from shared.http.adapter import Handler


@dataclass(frozen=True)
class Route:
    name: str  # the Functions function name
    method: str
    path: str  # Functions route template, no leading slash
    handler: Handler
    summary: str
    anonymous: bool = False
    request_schema: str | None = None  # components/schemas name
    response_schema: str | None = None
    success: int = 200
    # (name, JSON type or a JSON Schema, description)
    query: tuple[tuple[str, str | dict[str, Any], str], ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)
    headers: tuple[tuple[str, dict[str, Any], str], ...] = ()  # (header name, JSON Schema, description)
    required_query: tuple[str, ...] = ()  # query parameters the handler refuses to do without


_EVENTS_LIMIT = {"type": "integer", "minimum": 1, "maximum": limits.MAX_EVENTS_QUERY_LIMIT}
_AUDIT_LIMIT = {"type": "integer", "minimum": 1, "maximum": audit.MAX_LIMIT}
_TOKEN_DOC = ("the `continuationToken` of the previous page, sent with the same query parameters (it is signed "
              "and bound to the tenant and the query; any other value answers 400)")

ROUTES: tuple[Route, ...] = (
    Route("health", "GET", "health", health.health, "Health of the service and each dependency",
          anonymous=True, response_schema="Health", tags=("operations",)),
    Route("publish_event", "POST", "events", events.publish_event, "Publish one event",
          request_schema="EventIn", response_schema="EventResult", success=201, tags=("events",),
          headers=(("Idempotency-Key", {"type": "string", "pattern": CLIENT_ID_PATTERN},
                    "the eventId when the body has none: a retry is then a duplicate"),)),
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
          response_schema="EventHistory", tags=("events",),
          query=(("from", {"type": "string", "format": "date-time"}, "RFC 3339, inclusive (default: 24 h before 'to')"),
                 ("to", {"type": "string", "format": "date-time"}, "RFC 3339, inclusive (default: now)"),
                 ("eventType", {"$ref": "#/components/schemas/EventType"}, "only this event type"),
                 ("source", {"$ref": "#/components/schemas/Source"}, "only this source"),
                 ("limit", _EVENTS_LIMIT, "1-1000, default 100"),
                 ("continuationToken", "string", _TOKEN_DOC))),
    Route("list_deadletters", "GET", "deadletters/{tenantId}", deadletters.list_deadletters,
          "A tenant's dead-lettered deliveries (destination, reason, attempts, last error, the event)",
          response_schema="DeadLetterList", tags=("delivery",),
          query=(("limit", _EVENTS_LIMIT, "1-1000, default 100"),
                 ("includeReplayed", {"type": "string", "enum": ["true", "false"]},
                  "also list records already replayed (default false)"),
                 ("continuationToken", "string", _TOKEN_DOC))),
    Route("replay_deadletters", "POST", "deadletters/{tenantId}/replay", deadletters.replay_deadletters,
          "Send dead letters back through their destination (all not yet replayed, or the given ids)",
          request_schema="ReplayRequest", response_schema="ReplayResult", tags=("delivery",)),
    Route("get_metrics", "GET", "metrics/{tenantId}", metrics.get_metrics,
          "Real-time metrics of a tenant (1 min, 5 min, 1 h windows and totals), alert conditions, service figures",
          response_schema="TenantMetrics", tags=("operations",)),
    Route("get_stream_config", "GET", "stream-config/{tenantId}", streamconfig.get_stream_config,
          "A tenant's stream configuration (the documented default when none is stored)",
          response_schema="StreamConfig", tags=("config",)),
    Route("put_stream_config", "PUT", "stream-config/{tenantId}", streamconfig.put_stream_config,
          "Create or replace a tenant's stream configuration (If-Match for optimistic concurrency). The body "
          "GET answers with can be sent back as it is: its read-only `version` makes the write conditional on "
          "it (412 when the stored version moved on), `updatedAt` and `isDefault` are ignored",
          request_schema="StreamConfigIn", response_schema="StreamConfig", tags=("config",),
          headers=(("If-Match", {"type": "string"}, "the ETag read (or `*`: only if one is stored)"),
                   ("If-None-Match", {"type": "string"}, "`*`: only if none is stored yet"))),
    Route("get_audit", "GET", "audit/{tenantId}", audit.get_audit,
          "A tenant's audit trail (config changes, replays, admin actions), newest first",
          response_schema="AuditList", tags=("audit",),
          query=(("limit", _AUDIT_LIMIT, "1-1000, default 100"),
                 ("continuation", "string", "the `continuation` of the previous page (signed and bound to the "
                                  "tenant; any other value answers 400)"))),
    Route("search_events", "GET", "search/{tenantId}", search.search_events,
          "Hybrid (keyword + semantic) search of a tenant's events (destination `vector`), best match first",
          response_schema="SearchResult", tags=("events",),
          query=(("q", {"type": "string", "minLength": 1, "maxLength": 1000},
                  "what to look for (at most 1,000 characters)"),
                 ("k", {"type": "integer", "minimum": 1}, "hits, 1-VECTOR_SEARCH_MAX_K (50), default 10"),
                 ("mode", {"type": "string", "enum": ["hybrid", "vector", "keyword"]},
                  "rankings to fuse: hybrid (default), vector or keyword"),
                 ("eventType", "string", "EventType values, comma-separated"),
                 ("entityType", "string", "entity types, comma-separated"),
                 ("from", {"type": "string", "format": "date-time"}, "RFC 3339 date-time, inclusive"),
                 ("to", {"type": "string", "format": "date-time"}, "RFC 3339 date-time, inclusive")),
          required_query=("q",)),
)


def _regex(template: str) -> re.Pattern[str]:
    parts = []
    for seg in template.strip("/").split("/"):
        parts.append("[^/]+" if seg.startswith("{") else re.escape(seg))
    return re.compile("^/" + "/".join(parts) + "/?$")


@lru_cache(maxsize=1)
def _compiled() -> list[tuple[re.Pattern[str], Route]]:
    return [(_regex(r.path), r) for r in all_routes()]


def all_routes() -> tuple[Route, ...]:
    from shared.api import openapi  # noqa: PLC0415 - openapi documents ROUTES itself

    return (*ROUTES, openapi.ROUTE)


def allowed_methods(path: str) -> list[str]:
    return sorted({r.method for rx, r in _compiled() if rx.fullmatch(path)})
