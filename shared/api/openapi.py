"""The OpenAPI 3.1 document of GET /openapi.json, built from the route table and the pydantic models."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from shared.api.search import SearchResult
from shared.core import limits
from shared.core.answer_cap import TRUNCATED_DOC, TRUNCATED_PAGED_DOC
from shared.core.backfill import BackfillJob, BackfillList, BackfillRequest
from shared.core.events import UNMAPPED_TENANT, EventIn
from shared.core.results import EventResult
from shared.core.streamconfig import StreamConfig, StreamConfigIn
from shared.security.audit import AuditRecord


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(max_length=limits.MAX_BULK_EVENTS)


class BulkResult(BaseModel):
    correlationId: str
    total: int
    accepted: int
    filtered: int
    rejected: int
    failed: int
    duplicate: int = 0
    results: list[EventResult]


class StoredEvent(BaseModel):
    streamId: str
    format: str
    event: dict[str, Any]




class EventList(BaseModel):
    tenantId: str
    count: int
    truncated: bool = Field(False, description=(
        TRUNCATED_DOC + " The rest cannot be reached from here: ask with a smaller `limit`, or page through "
        "the history (GET /events/{tenantId}/history)."))
    events: list[StoredEvent]


class AuditList(BaseModel):
    tenantId: str
    items: list[AuditRecord]
    continuation: str | None = None
    truncated: bool = Field(False, description=TRUNCATED_PAGED_DOC)


def _paged_list(items: str) -> dict[str, Any]:
    """A paged listing's schema: open (each item as its store answers it), with the paging members."""
    return {**_OPEN_OBJECT, "properties": {
        "tenantId": {"type": "string"}, "count": {"type": "integer"},
        "truncated": {"type": "boolean", "description": TRUNCATED_PAGED_DOC},
        items: {"type": "array", "items": {"type": "object"}},
        "continuationToken": {"type": ["string", "null"],
                              "description": "the next page (send it back with the same query); null: none"}}}


class Problem(BaseModel):
    """RFC 9457 problem details; `errors` lists every invalid field with its JSON Pointer."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    correlationId: str | None = None
    errors: list[dict[str, Any]] | None = None


_OPEN_OBJECT = {"type": "object", "additionalProperties": True}
_EXTRA_SCHEMAS = {"TenantMetrics": {**_OPEN_OBJECT, "description": (
                      "The tenant's windows, totals and alert conditions. The service-wide figures (`service`: "
                      "Kafka lag, Redis memory, Cosmos RU, all tenants' stream processing, instance memory) and "
                      "the instance `memory` condition are answered to admins only (AUTH_ADMIN_ROLE).")},
                  "Health": {**_OPEN_OBJECT, "description": (
                      "`status`, `service` and each dependency's `status`; admins also get latencies, details "
                      "and figures, `time` and `checkedAt` (results are cached HEALTH_CACHE_SECONDS).")},
                  "EventHistory": _paged_list("events"),
                  "DeadLetterList": _paged_list("deadLetters"), "ReplayResult": _OPEN_OBJECT,
                  "ReplayRequest": {"type": "object", "properties": {
                      "ids": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 512},
                              "maxItems": 500},
                      "continuationToken": {"type": "string"}},
                      "additionalProperties": False, "maxProperties": 1,
                      "description": "`ids`: those records; `{}`: the first 500 records not yet replayed; "
                                     "`continuationToken` (from the answer before): the next 500 past those"}}
_MODELS: list[type[BaseModel]] = [EventIn, EventResult, StreamConfig, StreamConfigIn, BulkRequest, BulkResult,
                                  EventList, AuditList, Problem, SearchResult, BackfillRequest, BackfillJob,
                                  BackfillList]


def _problem(desc: str) -> dict[str, Any]:
    return {"description": desc,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def document(routes: Sequence[Any]) -> dict[str, Any]:
    """The document of `routes` (shared.api.routes.Route)."""
    _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}")
    schemas = {**defs["$defs"], **_EXTRA_SCHEMAS}
    paths: dict[str, dict[str, Any]] = {}
    for r in (r for r in routes if r.documented):
        op: dict[str, Any] = {"operationId": r.name, "summary": r.summary, "tags": list(r.tags) or ["meta"]}
        params = []
        if "{tenantId}" in r.path:
            tenant = schemas["EventIn"]["properties"]["tenantId"]
            if r.unmapped:  # admins only: dead letters naming no valid tenant, and their audit trail
                tenant = {"anyOf": [tenant, {"const": UNMAPPED_TENANT}]}
            params.append({"name": "tenantId", "in": "path", "required": True, "schema": tenant})
        for name, schema, desc in r.path_params:
            params.append({"name": name, "in": "path", "required": True, "description": desc, "schema": schema})
        for name, typ, desc in r.query:
            param = {"name": name, "in": "query", "required": name in r.required_query,
                     "description": desc, "schema": typ if isinstance(typ, dict) else {"type": typ}}
            if not param["required"]:
                # The host hands the app no query parameter whose value is empty: it reads as absent.
                param["allowEmptyValue"] = True
            params.append(param)
        for name, schema, desc in r.headers:
            params.append({"name": name, "in": "header", "required": False, "description": desc,
                           "schema": schema})
        if r.request_schema:  # every JSON body is read by read_json: shared/http/content_coding.py
            params.append({"name": "Content-Encoding", "in": "header", "required": False,
                           "description": "gzip to send the body gzip'd; the size limits are on the "
                                          "decoded body",
                           "schema": {"enum": ["gzip", "x-gzip", "identity", ""]}})
        if params:
            op["parameters"] = params
        if r.request_schema:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{r.request_schema}"}}}}
        ok = {"description": "OK"}
        if r.response_schema:
            ok["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{r.response_schema}"}}}
        responses: dict[str, Any] = {str(r.success): ok}
        if r.name == "publish_event":
            responses["200"] = {"description": "Filtered out by the tenant's stream config",
                                "content": ok["content"]}
        responses["400"] = _problem("Invalid input; `errors` names each field")
        if r.request_schema:
            responses["411"] = _problem("The body was sent chunked, without a Content-Length")
            responses["413"] = _problem("Body or event too large")
            responses["415"] = _problem("Body is not JSON, or its Content-Encoding is not gzip "
                                        "(Accept-Encoding)")
        responses["405"] = _problem("Method not allowed")
        responses["500"] = _problem("Unexpected error (no internals disclosed)")
        responses["503"] = _problem("A dependency is unavailable; retry after Retry-After")
        if r.method == "PUT":
            # Create or replace: 201 when nothing was stored before, 200 when it replaced a document.
            responses["201"] = {**ok, "description": "Created (nothing was stored before)"}
            responses["412"] = _problem("If-Match / If-None-Match failed, or the body's `version` (as read by "
                                        "GET) is no longer the stored one")
        for status, desc in r.responses:
            if status < 300:
                responses[str(status)] = {**ok, "description": desc}
            else:  # a 3xx has no body; an error is a problem
                responses[str(status)] = {"description": desc} if status < 400 else _problem(desc)
        op["responses"] = responses
        if not r.anonymous:
            # A function key (host) and a caller identity (app): docs/security.md.
            op["security"] = [{"functionKey": [], "bearer": []}, {"functionKeyQuery": [], "bearer": []}]
            responses["401"] = _problem("No valid caller identity (WWW-Authenticate: Bearer)")
            responses["403"] = _problem("The caller is not granted the tenant")
            responses.setdefault("429", _problem("The tenant's rate limit is exceeded; retry after Retry-After"))
        paths.setdefault("/" + r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "GRC Event Streaming Service", "version": "1.0.0",
                 "description": "Captures GRC data changes and streams them per tenant."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "Entra ID access token (or the local development key)"},
            },
        },
    }
