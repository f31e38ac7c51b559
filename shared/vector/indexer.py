"""Index and search events: render -> embed -> upsert, and question -> hybrid tenant-scoped search.

`VectorSearchService` pairs one embedder with one index (the index refuses any other embedder)
and is built once per instance from settings: the local model loads once, clients are reused.
The work items are `IndexItem`s, the small form an event takes in the vector queue. A question is
prepared once for any index (`prepare_query`): the outcomes it names, its keyword query with the GRC
vocabulary expanded, and the vector of the question with its acronyms spelled out.
"""
from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from typing import Any, Mapping, Sequence

from shared.core.events import Event
from shared.core.per_loop import PerLoop
from shared.core.settings import Settings
from shared.vector.base import (
    Embedder,
    IndexSpec,
    SearchFilters,
    SearchHit,
    SearchMode,
    SearchQuery,
    VectorConfigError,
    VectorDoc,
    VectorIndex,
)
from shared.vector.messages import IndexItem, decode_message
from shared.vector.outcome import outcomes_named
from shared.vector.vocabulary import gloss, keyword_query

log = logging.getLogger("grc.vector")


class VectorSearchService:
    def __init__(self, embedder: Embedder, index: VectorIndex) -> None:
        if index.spec != IndexSpec(embedder.model_id, embedder.dimensions):
            raise ValueError(
                f"index spec {index.spec} does not match embedder {embedder.model_id} ({embedder.dimensions})"
            )
        self.embedder = embedder
        self.index = index
        self._opened = False
        self._open_lock = asyncio.Lock()

    async def open(self) -> None:
        async with self._open_lock:
            if not self._opened:
                await self.index.open()
                self._opened = True

    async def index_items(self, items: Sequence[IndexItem]) -> int:
        """Embed and upsert; the last item wins when one batch holds an event twice."""
        await self.open()
        latest = {(i.tenantId, i.eventId): i for i in items}
        unique = list(latest.values())
        if not unique:
            return 0
        vectors = await self.embedder.embed([i.text for i in unique])
        docs = [
            VectorDoc(
                event_id=i.eventId, tenant_id=i.tenantId, event_type=i.eventType, source=i.source,
                timestamp=i.timestamp, text=i.text, vector=v, model_id=self.embedder.model_id,
                entity_type=i.entityType, entity_id=i.entityId, outcome=i.effective_outcome(),
            )
            for i, v in zip(unique, vectors)
        ]
        return await self.index.upsert(docs)

    async def index_events(self, events: Sequence[Event | Mapping[str, Any]]) -> int:
        return await self.index_items([IndexItem.from_event(e) for e in events])

    async def prepare_query(self, question: str, mode: SearchMode = "hybrid") -> SearchQuery:
        """The question for any index: outcomes named, keywords (vocabulary expanded), vector (glossed)."""
        vector = None
        if mode in ("hybrid", "vector"):
            (vector,) = await self.embedder.embed([gloss(question)])
        return SearchQuery(
            text=question, mode=mode, vector=vector, model_id=self.embedder.model_id,
            keywords=keyword_query(question).fts5() if mode in ("hybrid", "keyword") else "",
            outcomes=outcomes_named(question),
        )

    async def search(
        self, tenant_id: str, query: str, k: int = 10, filters: SearchFilters | None = None,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        if not tenant_id:
            raise ValueError("tenant_id is required")
        await self.open()
        return await self.index.search(tenant_id, await self.prepare_query(query, mode), k, filters)

    async def close(self) -> None:
        await self.index.close()
        await self.embedder.close()


def build_embedder(settings: Settings) -> Embedder:
    if settings.embedding_backend == "azure-openai":
        from shared.vector.azure_openai import AzureOpenAIEmbedder

        return AzureOpenAIEmbedder(
            endpoint=settings.azure_openai_endpoint, deployment=settings.azure_openai_deployment,
            model=settings.azure_openai_model, dimensions=settings.embedding_dimensions,
            api_key=settings.azure_openai_api_key, api_version=settings.azure_openai_api_version,
            batch_size=settings.embedding_batch_size, managed_identity_client_id=settings.azure_client_id,
        )
    from shared.vector.local_minilm import DIMENSIONS

    if settings.embedding_dimensions not in (0, DIMENSIONS):  # a setting: search answers 503, not 500
        raise VectorConfigError(f"the local model makes {DIMENSIONS}-dimension vectors; "
                                f"EMBEDDING_DIMENSIONS is {settings.embedding_dimensions}")
    return _local_model(settings.local_tokenizer_path, min(settings.embedding_batch_size, 64))


@lru_cache(maxsize=2)
def _local_model(tokenizer_path: str, batch_size: int) -> Embedder:
    """The local model is loaded once per process (it holds no event-loop state)."""
    try:
        from shared.vector.local_minilm import LocalMiniLM
    except ImportError as exc:  # requirements-local.txt is never deployed
        raise VectorConfigError(
            "EMBEDDING_BACKEND=local needs the local-only packages (requirements-local.txt); "
            "in Azure set EMBEDDING_BACKEND=azure-openai and VECTOR_BACKEND=azure-search"
        ) from exc
    return LocalMiniLM(tokenizer_path, batch_size=batch_size)


def build_index(settings: Settings, spec: IndexSpec) -> VectorIndex:
    if settings.vector_backend == "azure-search":
        from shared.vector.azure_search import AzureSearchIndex

        return AzureSearchIndex(
            settings.azure_search_endpoint, settings.azure_search_index, spec,
            api_key=settings.azure_search_api_key, managed_identity_client_id=settings.azure_client_id,
            semantic_ranker=settings.azure_search_semantic_ranker,
        )
    from shared.vector.sqlite_index import SqliteVecIndex

    return SqliteVecIndex(settings.vector_sqlite_path, spec)


def build_service(settings: Settings) -> VectorSearchService:
    embedder = build_embedder(settings)
    return VectorSearchService(embedder, build_index(settings, IndexSpec(embedder.model_id, embedder.dimensions)))


# Azure clients are bound to the event loop that made them: one service per running loop.
_per_loop: PerLoop[VectorSearchService] = PerLoop()


def get_service() -> VectorSearchService:
    from shared.core.settings import get_settings

    return _per_loop.get(lambda: build_service(get_settings()))


async def reset_service() -> None:
    """Close this loop's service (tests that change settings; the local runner on stop)."""
    await _per_loop.discard()


async def process_queue_message(body: bytes | str) -> int:
    """The queue-triggered indexer: decode one message, embed and upsert its events.

    Raises on failure so the Functions host retries the message and, after maxDequeueCount,
    moves it to `<queue>-poison`: an event is never dropped silently."""
    items = decode_message(body)
    count = await get_service().index_items(items)
    log.info("vector index: %d events upserted", count)
    return count
