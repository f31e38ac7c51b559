"""The two protocols of event search (an embedder, an index) and the values they exchange.

Every backend pair has the same shape: the offline MiniLM + sqlite-vec + SQLite FTS5 locally and in
CI, Azure OpenAI + Azure AI Search in production. A search is hybrid by default: a keyword ranking
and a vector ranking fused by reciprocal rank fusion (shared.vector.fusion); a hit's `score` is that
fused rank score on the same 0..1 scale on every index, and `similarity` the cosine similarity
when the vector ranking saw the hit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

Vector = list[float]
SearchMode = Literal["hybrid", "vector", "keyword"]
SEARCH_MODES: tuple[str, ...] = ("hybrid", "vector", "keyword")


class VectorSearchError(Exception):
    """A vector backend failed (network, service error); worth a retry."""


class VectorConfigError(RuntimeError):
    """Vector search cannot run on this instance as configured (missing package, model file, setting)."""


class EmbedderMismatch(ValueError):
    """Vectors from another model or of another size than the index was built with."""


@dataclass(frozen=True)
class IndexSpec:
    """What an index was built for: vectors of one model and one size, never mixed."""

    model_id: str
    dimensions: int


@dataclass
class VectorDoc:
    """One event in the index, keyed by (tenantId, eventId): re-delivery replaces, never duplicates."""

    event_id: str
    tenant_id: str
    event_type: str
    source: str
    timestamp: str  # RFC 3339, UTC
    text: str  # the rendered template (shared.vector.text): returned as the hit's summary
    vector: Vector
    model_id: str
    entity_type: str | None = None
    entity_id: str | None = None
    outcome: str | None = None  # shared.vector.outcome: failed, passed, overdue ... or None


@dataclass(frozen=True)
class SearchQuery:
    """One question, prepared once (shared.vector.indexer) and run by any index.

    `text` is the question as asked (Azure AI Search analyses it and applies the synonym map itself);
    `keywords` is the FTS5 expression with the GRC vocabulary already expanded (local index);
    `outcomes` are the outcomes the question names, whose events are boosted."""

    text: str
    mode: SearchMode = "hybrid"
    vector: Sequence[float] | None = None
    model_id: str | None = None
    keywords: str = ""
    outcomes: frozenset[str] = frozenset()

    @classmethod
    def by_vector(cls, vector: Sequence[float], model_id: str) -> "SearchQuery":
        """A vector-only query (no question text): nearest neighbours, no keywords, no outcome."""
        return cls(text="", mode="vector", vector=vector, model_id=model_id)

    @property
    def uses_vector(self) -> bool:
        return self.mode in ("hybrid", "vector")

    @property
    def uses_keywords(self) -> bool:
        return self.mode in ("hybrid", "keyword")


@dataclass(frozen=True)
class SearchFilters:
    """Optional narrowing of a search; the tenant is never a filter but a required argument."""

    event_types: tuple[str, ...] = ()
    entity_types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    entity_id: str | None = None
    time_from: str | None = None  # RFC 3339, inclusive
    time_to: str | None = None  # RFC 3339, inclusive


@dataclass
class SearchHit:
    event_id: str
    tenant_id: str
    score: float  # fused rank score in (0, 1], 1.0 = first in every ranking used (shared.vector.fusion)
    event_type: str
    source: str
    timestamp: str
    summary: str
    entity_type: str | None = None
    entity_id: str | None = None
    outcome: str | None = None
    similarity: float | None = None  # cosine similarity, when the vector ranking saw this hit

    def to_dict(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "tenantId": self.tenant_id,
            "score": round(self.score, 6),
            "similarity": None if self.similarity is None else round(self.similarity, 6),
            "outcome": self.outcome,
            "eventType": self.event_type,
            "source": self.source,
            "entityType": self.entity_type,
            "entityId": self.entity_id,
            "timestamp": self.timestamp,
            "summary": self.summary,
        }


@dataclass
class IndexInfo:
    backend: str
    name: str
    model_id: str
    dimensions: int
    documents: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "name": self.name,
            "modelId": self.model_id,
            "dimensions": self.dimensions,
            "documents": self.documents,
            **self.extra,
        }


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors, in order, in batches."""

    model_id: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> list[Vector]: ...

    async def close(self) -> None: ...


@runtime_checkable
class VectorIndex(Protocol):
    spec: IndexSpec

    async def open(self) -> None:
        """Create the index, or verify an existing one was built for `spec` (else EmbedderMismatch)."""

    async def upsert(self, docs: Sequence[VectorDoc]) -> int: ...

    async def search(
        self, tenant_id: str, query: SearchQuery, k: int, filters: SearchFilters | None = None
    ) -> list[SearchHit]:
        """The k best hits of one tenant's events, fused over the rankings `query.mode` asks for."""

    async def delete(self, tenant_id: str, event_ids: Sequence[str]) -> int: ...

    async def purge_before(self, tenant_id: str, before: str) -> int:
        """Delete the tenant's documents timestamped before `before` (RFC 3339, UTC, to the millisecond,
        as timestamps are stored): the tenant's retentionDays.
        Returns how many were deleted; an index may stop short (a bounded call) and leave the rest to
        the next call."""

    async def info(self) -> IndexInfo: ...

    async def close(self) -> None: ...


def check_vector(spec: IndexSpec, vector: Sequence[float], model_id: str) -> None:
    """Refuse a vector that was not made by the embedder the index was built with."""
    if model_id != spec.model_id:
        raise EmbedderMismatch(
            f"index holds vectors of model {spec.model_id!r}; refused a vector of model {model_id!r}"
        )
    if len(vector) != spec.dimensions:
        raise EmbedderMismatch(
            f"index holds {spec.dimensions}-dimension vectors; refused one of {len(vector)} dimensions"
        )


def check_query(spec: IndexSpec, tenant_id: str, query: SearchQuery) -> None:
    """What every index checks before it searches: a tenant, and a vector of its own model when one is used."""
    if not tenant_id:
        raise ValueError("tenant_id is required")
    if query.mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {', '.join(SEARCH_MODES)}")
    if query.uses_vector:
        if query.vector is None or query.model_id is None:
            raise ValueError(f"a {query.mode} search needs the query vector and its model id")
        check_vector(spec, query.vector, query.model_id)


def check_spec(stored: IndexSpec, wanted: IndexSpec, where: str) -> None:
    if stored != wanted:
        raise EmbedderMismatch(
            f"{where} was built for {stored.model_id!r} ({stored.dimensions} dimensions), not for "
            f"{wanted.model_id!r} ({wanted.dimensions} dimensions): use another index or rebuild it"
        )
