"""GET /search/{tenantId}?q=&k=10&mode=hybrid&eventType=&entityType=&from=&to=: search of a tenant's events.

The tenant comes from the path only (the request adapter has already checked the caller may read
it) and is a required argument of the index search, so no request can reach another tenant's
events. `eventType` and `entityType` take one value or a comma-separated list. `mode` is `hybrid`
(keyword and vector rankings fused, the default), `vector` or `keyword` (docs/vector-search.md).
"""
from __future__ import annotations

import logging
import re
from datetime import datetime

from pydantic import BaseModel

from shared.api.params import bad_param, int_param, tenant_param, time_param
from shared.core.events import EventType
from shared.core.settings import get_settings
from shared.http.outages import RETRY_AFTER_SECONDS
from shared.http.types import ApiRequest, ApiResponse, ProblemError, json_response
from shared.vector.base import (
    SEARCH_MODES,
    EmbedderMismatch,
    SearchFilters,
    VectorConfigError,
    VectorSearchError,
)
from shared.vector.indexer import get_service
from shared.vector.outcome import outcomes_named

log = logging.getLogger("grc.vector")

MAX_QUERY_CHARS = 1_000
DEFAULT_K = 10
MAX_LIST_ITEMS = 20
ENTITY_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class SearchHitOut(BaseModel):
    eventId: str
    tenantId: str
    score: float  # fused rank score, 0..1, 1 = first in every ranking used; the same scale on every backend
    similarity: float | None = None  # cosine similarity of question and event, when the vector ranking saw it
    outcome: str | None = None  # failed, passed, overdue, violated, gap, findings, mitigated; null: none stated
    eventType: str
    source: str
    entityType: str | None = None
    entityId: str | None = None
    timestamp: str
    summary: str  # the rendered event text (docs/vector-search.md)


class SearchResult(BaseModel):
    tenantId: str
    query: str
    k: int
    mode: str
    outcomes: list[str]  # the outcomes the question names, whose events were boosted
    model: str
    count: int
    hits: list[SearchHitOut]


def _list_param(req: ApiRequest, name: str) -> tuple[str, ...]:
    raw = req.query.get(name)
    if not raw:
        return ()
    values = tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))
    if len(values) > MAX_LIST_ITEMS:
        raise bad_param(name, f"at most {MAX_LIST_ITEMS} values")
    return values


def _iso_param(req: ApiRequest, name: str) -> str | None:
    value = time_param(req, name)
    return None if value is None else value.isoformat()


def parse_filters(req: ApiRequest) -> SearchFilters:
    event_types = _list_param(req, "eventType")
    valid = {e.value for e in EventType}
    unknown = [v for v in event_types if v not in valid]
    if unknown:
        raise bad_param("eventType", f"unknown {', '.join(unknown)}; use EventType values")
    entity_types = _list_param(req, "entityType")
    if any(not ENTITY_TYPE.fullmatch(v) for v in entity_types):
        raise bad_param("entityType", "letters, digits and _ . -, starting with a letter (max 64)")
    time_from, time_to = _iso_param(req, "from"), _iso_param(req, "to")
    if time_from and time_to and datetime.fromisoformat(time_from) > datetime.fromisoformat(time_to):
        raise bad_param("from", "must not be later than 'to'")
    return SearchFilters(event_types=event_types, entity_types=entity_types, time_from=time_from, time_to=time_to)


async def search_events(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    query = (req.query.get("q") or "").strip()
    if not query:
        raise bad_param("q", "the search text is required")
    if len(query) > MAX_QUERY_CHARS:
        raise bad_param("q", f"at most {MAX_QUERY_CHARS} characters")
    max_k = get_settings().vector_search_max_k
    k = int_param(req, "k", min(DEFAULT_K, max_k), 1, max_k)  # the default too stays within the max
    # `mode=` (empty) never arrives: the host hands no query parameter whose value is empty.
    mode = req.query.get("mode", "hybrid")
    if mode not in SEARCH_MODES:
        raise bad_param("mode", f"one of {', '.join(SEARCH_MODES)}")
    filters = parse_filters(req)
    try:
        service = get_service()
        hits = await service.search(tenant, query, k, filters, mode=mode)  # type: ignore[arg-type]
    except VectorConfigError as exc:  # a deployment error, not the caller's
        log.error("vector search not available on this instance: %s", exc)
        raise ProblemError(503, "Service Unavailable", "vector search is not configured",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc
    except VectorSearchError as exc:
        log.warning("vector search unavailable: %s (correlationId=%s)", exc, req.correlation_id)
        raise ProblemError(503, "Service Unavailable", "vector search is unavailable; retry later",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc
    except EmbedderMismatch as exc:  # a deployment error (index built for another model), not the caller's
        log.error("vector index and embedder disagree: %s", exc)
        raise ProblemError(503, "Service Unavailable", "vector search is misconfigured",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc
    return json_response({
        "tenantId": tenant,
        "query": query,
        "k": k,
        "mode": mode,
        "outcomes": sorted(outcomes_named(query)),
        "model": service.embedder.model_id,
        "count": len(hits),
        "hits": [h.to_dict() for h in hits],
    })
