"""The two protocols of vector search (an embedder, an index) and the values they exchange.

Every backend pair has the same shape: the offline MiniLM + sqlite-vec locally and in CI,
Azure OpenAI + Azure AI Search in production. Scores are cosine similarity (higher is better,
1.0 = same direction) on every index, so a threshold means the same thing everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

Vector = list[float]


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
    score: float  # cosine similarity in [-1, 1], higher is better
    event_type: str
    source: str
    timestamp: str
    summary: str
    entity_type: str | None = None
    entity_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "tenantId": self.tenant_id,
            "score": round(self.score, 6),
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
        self,
        tenant_id: str,
        vector: Sequence[float],
        k: int,
        filters: SearchFilters | None = None,
        *,
        model_id: str,
    ) -> list[SearchHit]: ...

    async def delete(self, tenant_id: str, event_ids: Sequence[str]) -> int: ...

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


def check_spec(stored: IndexSpec, wanted: IndexSpec, where: str) -> None:
    if stored != wanted:
        raise EmbedderMismatch(
            f"{where} was built for {stored.model_id!r} ({stored.dimensions} dimensions), not for "
            f"{wanted.model_id!r} ({wanted.dimensions} dimensions): use another index or rebuild it"
        )
