"""Production event index: Azure AI Search through azure-search-documents (aio), hybrid queries.

At `open()` the GRC synonym map is created or brought in line with shared/vector/grc_synonyms.txt,
and the index is created, or an existing one is verified against the schema this code needs (vector
field size, HNSW + cosine profile, filterable fields) and against the model it was built with (kept
in the index description): a mismatch refuses to start rather than mixing vectors. An index made
before hybrid search gets its two new fields (`content`, searchable with the synonym map; `outcome`)
added in place -- Update Index allows adding fields, existing documents read null -- and the
documents indexed before are backfilled a page at a time by later uploads (`backfill_step`).

A search is one request: the question as `search` text over `content` and the query vector in
`vectorQueries` (weighted like the local fusion), fused by the service's own RRF (K = 60); optionally
re-ranked by the semantic ranker (AZURE_SEARCH_SEMANTIC_RANKER, Basic tier and up). Every search
carries `tenantId eq '<tenant>'` as the first filter clause, a pre-filter for the vector part, so
a tenant's hits come from its own documents only. The outcome boost and the 0..1 score are then
applied as locally (shared.vector.fusion), so `score` reads the same on both backends.
"""
from __future__ import annotations

import base64
import logging
import re
from datetime import datetime, timedelta
from typing import Any, Iterator, Sequence

import orjson
from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from shared.core.events import utc_instant
from shared.vector.base import (
    EmbedderMismatch,
    IndexInfo,
    IndexSpec,
    SearchFilters,
    SearchHit,
    SearchQuery,
    VectorConfigError,
    VectorDoc,
    VectorSearchError,
    check_query,
    check_spec,
    check_vector,
)
from shared.vector.fusion import CANDIDATES, DEFAULT_WEIGHTS, Weights, rank_value, rescore
from shared.vector.outcome import NONE, outcome_from_text, stored
from shared.vector.vocabulary import SYNONYM_MAP_NAME, solr_synonyms

log = logging.getLogger("grc.vector")

MAX_BATCH_DOCS = 1_000  # service cap on actions per indexing request
MAX_BATCH_BYTES = 16 * 1024 * 1024  # service cap on an indexing request's body
VECTOR_FIELD = "embedding"
PROFILE = "grc-vector-profile"
ALGORITHM = "grc-hnsw"
CONTENT_FIELD = "content"  # the searchable copy of `text` (BM25, English analyzer, GRC synonym map)
CONTENT_ANALYZER = "en.lucene"  # stemming and English stop words, like the local porter tokenizer
SEMANTIC_CONFIG = "grc-semantic"
FILTERABLE = ("tenantId", "eventId", "eventType", "source", "entityType", "entityId", "timestamp", "outcome")
SELECT = ["eventId", "tenantId", "eventType", "source", "entityType", "entityId", "timestamp", "text", "outcome"]
BACKFILL_PAGE = 1000
PURGE_PAGES = 100  # pages of keys one purge_before call deletes at most (a bounded call); the next carries on
# Characters with a meaning in the simple query syntax: a question is searched as words, never as operators.
_QUERY_SYNTAX = re.compile(r'([\\+\-&|!(){}\[\]^"~*?:/])')
_DESCRIPTION = re.compile(r"model=(?P<model>[^;]+); dimensions=(?P<dims>\d+)")


def document_key(tenant_id: str, event_id: str) -> str:
    """A key unique per (tenant, event) in the characters Azure allows (letters, digits, - _ =)."""
    return base64.urlsafe_b64encode(f"{tenant_id}\n{event_id}".encode()).decode()


def search_text(question: str) -> str:
    """The question as simple-syntax search text, every operator character escaped."""
    return _QUERY_SYNTAX.sub(r"\\\1", question)


def cosine_from_score(score: float) -> float:
    """Azure's cosine `@search.score` is 1 / (1 + cosine distance) = 1 / (2 - cos): invert it."""
    return 2.0 - 1.0 / score


def odata_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def odata_time(ts: str) -> str:
    dt = utc_instant(datetime.fromisoformat(ts))
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_filter(tenant_id: str, f: SearchFilters) -> str:
    """The OData filter of a search: the tenant clause always comes first and is always there."""
    if not tenant_id:
        raise ValueError("tenant_id is required")
    clauses = [f"tenantId eq {odata_literal(tenant_id)}"]
    for field, values in (("eventType", f.event_types), ("entityType", f.entity_types), ("source", f.sources)):
        if values:
            # search.in takes one delimited string; '|' cannot occur in these values
            clauses.append(f"search.in({field}, {odata_literal('|'.join(values))}, '|')")
    if f.entity_id:
        clauses.append(f"entityId eq {odata_literal(f.entity_id)}")
    if f.time_from:
        clauses.append(f"timestamp ge {odata_time(f.time_from)}")
    if f.time_to:
        clauses.append(f"timestamp le {odata_time(f.time_to)}")
    return " and ".join(clauses)


def to_document(doc: VectorDoc) -> dict[str, Any]:
    return {
        "id": document_key(doc.tenant_id, doc.event_id),
        "tenantId": doc.tenant_id,
        "eventId": doc.event_id,
        "eventType": doc.event_type,
        "source": doc.source,
        "entityType": doc.entity_type,
        "entityId": doc.entity_id,
        "timestamp": odata_time(doc.timestamp),
        "text": doc.text,
        CONTENT_FIELD: doc.text,
        "outcome": stored(doc.outcome),
        VECTOR_FIELD: list(doc.vector),
    }


def batches(documents: Sequence[dict[str, Any]], max_docs: int = MAX_BATCH_DOCS,
            max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[dict[str, Any]]]:
    """Split an upload so no request exceeds the count cap or the byte cap (with room for the envelope)."""
    budget = max_bytes - 1024
    batch: list[dict[str, Any]] = []
    size = 0
    for doc in documents:
        # the action envelope adds `"@search.action":"mergeOrUpload",` and a comma
        doc_size = len(orjson.dumps(doc)) + 40
        if doc_size > budget:
            raise VectorSearchError(f"document {doc.get('eventId')!r} alone is larger than an upload request")
        if batch and (len(batch) >= max_docs or size + doc_size > budget):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += doc_size
    if batch:
        yield batch


def hybrid_fields() -> list[Any]:
    """The fields hybrid search added to the schema: an index made before gets them added in place."""
    from azure.search.documents.indexes.models import SearchableField, SearchFieldDataType, SimpleField

    return [
        SearchableField(name=CONTENT_FIELD, analyzer_name=CONTENT_ANALYZER, synonym_map_names=[SYNONYM_MAP_NAME]),
        SimpleField(name="outcome", type=SearchFieldDataType.STRING, filterable=True, facetable=True),
    ]


def semantic_search() -> Any:
    from azure.search.documents.indexes.models import (
        SemanticConfiguration,
        SemanticField,
        SemanticPrioritizedFields,
        SemanticSearch,
    )

    return SemanticSearch(configurations=[SemanticConfiguration(
        name=SEMANTIC_CONFIG,
        prioritized_fields=SemanticPrioritizedFields(content_fields=[SemanticField(field_name=CONTENT_FIELD)]),
    )])


def semantic_score(reranker: float, outcome: str | None, outcomes: frozenset[str],
                   w: Weights = DEFAULT_WEIGHTS) -> float:
    """With the semantic ranker the order is its `@search.rerankerScore` (0-4, Microsoft's relevance
    scale); the outcome boost counts w.outcome of a perfect reranker score, normalised to 0..1."""
    bonus = w.outcome if outcomes and outcome in outcomes else 0.0
    return (reranker / 4.0 + bonus) / (1.0 + (w.outcome if outcomes else 0.0))


def index_schema(name: str, spec: IndexSpec, semantic: bool = False) -> Any:
    from azure.search.documents.indexes.models import (
        HnswAlgorithmConfiguration,
        HnswParameters,
        SearchField,
        SearchFieldDataType,
        SearchIndex,
        SimpleField,
        VectorSearch,
        VectorSearchProfile,
    )

    string = SearchFieldDataType.STRING
    fields = [
        SimpleField(name="id", type=string, key=True),
        SimpleField(name="tenantId", type=string, filterable=True),
        SimpleField(name="eventId", type=string, filterable=True),
        SimpleField(name="eventType", type=string, filterable=True, facetable=True),
        SimpleField(name="source", type=string, filterable=True, facetable=True),
        SimpleField(name="entityType", type=string, filterable=True, facetable=True),
        SimpleField(name="entityId", type=string, filterable=True),
        SimpleField(name="timestamp", type=SearchFieldDataType.DATE_TIME_OFFSET, filterable=True, sortable=True),
        SimpleField(name="text", type=string),
        SearchField(
            name=VECTOR_FIELD,
            type="Collection(Edm.Single)",
            searchable=True,
            retrievable=False,  # vectors are never returned: smaller answers
            vector_search_dimensions=spec.dimensions,
            vector_search_profile_name=PROFILE,
        ),
        *hybrid_fields(),
    ]
    vector_search = VectorSearch(
        algorithms=[HnswAlgorithmConfiguration(
            name=ALGORITHM, parameters=HnswParameters(metric="cosine", m=4, ef_construction=400, ef_search=500))],
        profiles=[VectorSearchProfile(name=PROFILE, algorithm_configuration_name=ALGORITHM)],
    )
    return SearchIndex(
        name=name, fields=fields, vector_search=vector_search,
        semantic_search=semantic_search() if semantic else None,
        description=f"GRC event vectors; model={spec.model_id}; dimensions={spec.dimensions}",
    )


def upgrade_schema(index: Any, semantic: bool) -> bool:
    """Bring an index made before hybrid search up to this schema in place, with only the changes
    Update Index allows without a rebuild: new fields, a synonym map on an existing field, a semantic
    configuration. Returns whether anything changed. A `content` field that exists but is not
    searchable cannot be changed in place: refused (rebuild the index)."""
    where = f"Azure AI Search index {index.name!r}"
    fields = {f.name: f for f in index.fields}
    changed = False
    for wanted in hybrid_fields():
        if wanted.name not in fields:
            index.fields.append(wanted)
            changed = True
    content = fields.get(CONTENT_FIELD)
    if content is not None:
        if not content.searchable:
            raise ValueError(f"{where}: field {CONTENT_FIELD!r} is not searchable; rebuild the index")
        if SYNONYM_MAP_NAME not in (content.synonym_map_names or []):
            content.synonym_map_names = [SYNONYM_MAP_NAME]
            changed = True
    if semantic:
        configs = getattr(index.semantic_search, "configurations", None) or []
        if not any(c.name == SEMANTIC_CONFIG for c in configs):
            if index.semantic_search is None:
                index.semantic_search = semantic_search()
            else:
                index.semantic_search.configurations = [*configs, *semantic_search().configurations]
            changed = True
    return changed


def verify_schema(index: Any, spec: IndexSpec) -> None:
    """Refuse an index this code cannot use safely (wrong model, size, metric or filters)."""
    where = f"Azure AI Search index {index.name!r}"
    match = _DESCRIPTION.search(index.description or "")
    if not match:
        raise EmbedderMismatch(f"{where} does not record its embedding model (description); refusing to mix")
    check_spec(IndexSpec(match["model"], int(match["dims"])), spec, where)
    fields = {f.name: f for f in index.fields}
    vec = fields.get(VECTOR_FIELD)
    if vec is None or vec.vector_search_dimensions != spec.dimensions:
        raise EmbedderMismatch(f"{where}: field {VECTOR_FIELD!r} is missing or not {spec.dimensions} dimensions")
    missing = [n for n in FILTERABLE if n not in fields or not fields[n].filterable]
    if missing:
        raise ValueError(f"{where}: fields not filterable: {', '.join(missing)}")
    profiles = {p.name: p for p in (index.vector_search.profiles if index.vector_search else None) or []}
    algorithms = {a.name: a for a in (index.vector_search.algorithms if index.vector_search else None) or []}
    profile = profiles.get(vec.vector_search_profile_name)
    algorithm = algorithms.get(profile.algorithm_configuration_name) if profile else None
    metric = getattr(getattr(algorithm, "parameters", None), "metric", None)
    kind = getattr(algorithm, "kind", None)
    if algorithm is None or getattr(kind, "value", kind) != "hnsw" or getattr(metric, "value", metric) != "cosine":
        raise ValueError(f"{where}: vector profile is not HNSW with the cosine metric")


class AzureSearchIndex:
    """`VectorIndex` over one Azure AI Search index."""

    backend = "azure-search"

    def __init__(
        self,
        endpoint: str,
        index_name: str,
        spec: IndexSpec,
        api_key: str = "",
        credential: AsyncTokenCredential | None = None,
        managed_identity_client_id: str = "",
        max_batch_docs: int = MAX_BATCH_DOCS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        semantic_ranker: bool = False,
        **client_kwargs: Any,  # e.g. transport / retry options
    ) -> None:
        from azure.search.documents.aio import SearchClient
        from azure.search.documents.indexes.aio import SearchIndexClient

        if not endpoint:
            raise VectorConfigError("AZURE_SEARCH_ENDPOINT is not set")
        self.spec = spec
        self.index_name = index_name
        self._max_docs = min(max_batch_docs, MAX_BATCH_DOCS)
        self._max_bytes = min(max_batch_bytes, MAX_BATCH_BYTES)
        self.semantic_ranker = semantic_ranker
        self._backfill_pending = True  # documents indexed before `content`/`outcome` existed may remain
        self._owned_credential: Any = None
        cred: Any
        if api_key:
            cred = AzureKeyCredential(api_key)
        elif credential is not None:
            cred = credential
        else:
            from azure.identity.aio import ManagedIdentityCredential

            cred = self._owned_credential = ManagedIdentityCredential(client_id=managed_identity_client_id or None)
        self._indexes = SearchIndexClient(endpoint, cred, **client_kwargs)
        self._search = SearchClient(endpoint, index_name, cred, **client_kwargs)

    async def open(self) -> None:
        try:
            await self._sync_synonym_map()  # before the index: a field may only name an existing map
            try:
                existing = await self._indexes.get_index(self.index_name)
            except ResourceNotFoundError:
                try:
                    await self._indexes.create_index(index_schema(self.index_name, self.spec, self.semantic_ranker))
                    self._backfill_pending = False
                    return
                except ResourceExistsError:  # another instance created it meanwhile: verify theirs
                    existing = await self._indexes.get_index(self.index_name)
            # In memory first: the fields an older index lacks are added, then the whole is verified
            # before anything is written back.
            changed = upgrade_schema(existing, self.semantic_ranker)
            verify_schema(existing, self.spec)
            if changed:
                log.warning("Azure AI Search index %s: adding the hybrid search fields in place", self.index_name)
                await self._indexes.create_or_update_index(existing)
        except AzureError as exc:
            raise VectorSearchError(f"Azure AI Search index check failed: {type(exc).__name__}") from exc

    async def _sync_synonym_map(self) -> None:
        """Create the GRC synonym map, or update it when grc_synonyms.txt changed since it was pushed."""
        from azure.search.documents.indexes.models import SynonymMap

        wanted = solr_synonyms()
        try:
            current = await self._indexes.get_synonym_map(SYNONYM_MAP_NAME)
            rules = current.synonyms if isinstance(current.synonyms, str) else "\n".join(current.synonyms or [])
            if rules.strip() == wanted:
                return
        except ResourceNotFoundError:
            pass
        await self._indexes.create_or_update_synonym_map(SynonymMap(name=SYNONYM_MAP_NAME, synonyms=wanted.splitlines()))

    async def backfill_step(self, page: int = BACKFILL_PAGE) -> int:
        """Give one page of documents indexed before hybrid search (outcome null) their `content` and
        `outcome`, by merge (a document deleted meanwhile stays deleted). Returns how many were merged;
        when a page comes back short, nothing is left and later uploads stop asking."""
        try:
            results = await self._search.search(
                search_text=None, filter="outcome eq null", select=["id", "eventType", "text"], top=page)
            legacy = [r async for r in results]
            if legacy:
                await self._search.merge_documents(documents=[
                    {"id": r["id"], CONTENT_FIELD: r.get("text") or "",
                     "outcome": stored(outcome_from_text(r.get("eventType") or "", r.get("text") or ""))}
                    for r in legacy
                ])
        except AzureError as exc:
            raise VectorSearchError(f"Azure AI Search backfill failed: {type(exc).__name__}") from exc
        if len(legacy) < page:
            self._backfill_pending = False
        return len(legacy)

    async def upsert(self, docs: Sequence[VectorDoc]) -> int:
        for doc in docs:
            check_vector(self.spec, doc.vector, doc.model_id)
        done = 0
        for batch in batches([to_document(d) for d in docs], self._max_docs, self._max_bytes):
            try:
                results = await self._search.merge_or_upload_documents(documents=batch)
            except AzureError as exc:
                raise VectorSearchError(f"Azure AI Search upload failed: {type(exc).__name__}") from exc
            failed = [r for r in results if not r.succeeded]
            if failed:
                raise VectorSearchError(
                    f"Azure AI Search refused {len(failed)} of {len(batch)} documents "
                    f"(first: status {failed[0].status_code}: {failed[0].error_message})"
                )
            done += len(batch)
        if self._backfill_pending:
            try:
                await self.backfill_step()
            except VectorSearchError as exc:  # the upload above succeeded; the next one tries again
                log.warning("vector index backfill: %s", exc)
        return done

    async def delete(self, tenant_id: str, event_ids: Sequence[str]) -> int:
        if not event_ids:
            return 0
        docs = [{"id": document_key(tenant_id, e)} for e in event_ids]
        try:
            results = await self._search.delete_documents(documents=docs)
        except AzureError as exc:
            raise VectorSearchError(f"Azure AI Search delete failed: {type(exc).__name__}") from exc
        return sum(1 for r in results if r.succeeded)

    async def purge_before(self, tenant_id: str, before: str) -> int:
        """Page through the tenant's documents older than `before`, oldest first, deleting each page.

        A deletion becomes visible to searches only after the index refreshes (about a second), so the
        pages do not rely on it: each starts at the last page's newest timestamp and skips the keys
        already deleted. No index in Azure AI Search expires documents by itself."""
        # `lt before` at the stored millisecond precision, through the one filter builder (inclusive).
        last = odata_time((utc_instant(datetime.fromisoformat(before)) - timedelta(milliseconds=1))
                          .isoformat())
        deleted: set[str] = set()
        since: str | None = None
        for _ in range(PURGE_PAGES):
            flt = build_filter(tenant_id, SearchFilters(time_from=since, time_to=last))
            try:
                results = await self._search.search(search_text=None, filter=flt, select=["id", "timestamp"],
                                                    order_by=["timestamp asc"], top=BACKFILL_PAGE)
                page = [(r["id"], r["timestamp"]) async for r in results]
                fresh = [key for key, _ in page if key not in deleted]
                if fresh:
                    outcome = await self._search.delete_documents(documents=[{"id": key} for key in fresh])
                    refused = [r for r in outcome if not r.succeeded and r.status_code != 404]
                    if refused:
                        first = refused[0]
                        raise VectorSearchError(f"Azure AI Search refused {len(refused)} deletions (first: "
                                                f"status {first.status_code}: {first.error_message})")
            except AzureError as exc:
                raise VectorSearchError(f"Azure AI Search purge failed: {type(exc).__name__}") from exc
            deleted.update(fresh)
            if len(page) < BACKFILL_PAGE or not fresh:
                break
            since = page[-1][1]
        return len(deleted)

    async def search(
        self, tenant_id: str, query: SearchQuery, k: int, filters: SearchFilters | None = None,
        *, weights: Weights = DEFAULT_WEIGHTS,
    ) -> list[SearchHit]:
        check_query(self.spec, tenant_id, query)
        request = self.search_request(tenant_id, query, k, filters or SearchFilters(), weights)
        if request is None:
            return []
        rankings = [r for r, used in (("keyword", "search_text" in request), ("vector", "vector_queries" in request))
                    if used]
        semantic = request.get("query_type") == "semantic"
        scored: list[tuple[float, int, SearchHit]] = []
        try:
            results = await self._search.search(**request)
            rank = 0
            async for r in results:
                rank += 1
                if r.get("tenantId") != tenant_id:  # belt and braces: never hand out another tenant's event
                    continue
                outcome = None if r.get("outcome") in (None, NONE) else r["outcome"]
                raw = r["@search.score"]
                if semantic:
                    score = semantic_score(r.get("@search.rerankerScore") or 0.0, outcome, query.outcomes, weights)
                elif len(rankings) == 2:  # the service's RRF: 1 / (60 + rank) + (w_vector / w_keyword) / (60 + rank)
                    score = rescore(raw * weights.keyword, outcome, rankings, query.outcomes, weights)
                else:  # one ranking: BM25 or cosine scores are not rank values; the order is
                    score = rescore(rank_value(rank, rankings[0], weights), outcome, rankings, query.outcomes, weights)
                scored.append((score, rank, SearchHit(
                    event_id=r["eventId"], tenant_id=r["tenantId"], score=score, event_type=r["eventType"],
                    source=r["source"], timestamp=r["timestamp"], summary=r.get("text") or "",
                    entity_type=r.get("entityType"), entity_id=r.get("entityId"), outcome=outcome,
                    similarity=cosine_from_score(raw) if rankings == ["vector"] else None,
                )))
        except AzureError as exc:
            raise VectorSearchError(f"Azure AI Search query failed: {type(exc).__name__}") from exc
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [hit for _, _, hit in scored[:k]]

    def search_request(self, tenant_id: str, query: SearchQuery, k: int, f: SearchFilters,
                       weights: Weights = DEFAULT_WEIGHTS) -> dict[str, Any] | None:
        """The keyword arguments of one `SearchClient.search` call: text and vector in one hybrid request."""
        from azure.search.documents.models import VectorizedQuery

        depth = max(k, CANDIDATES)
        request: dict[str, Any] = {
            "filter": build_filter(tenant_id, f), "select": SELECT,
            # The outcome boost re-ranks: it needs the candidates beyond the first k.
            "top": depth if query.outcomes else k,
        }
        if query.uses_keywords and query.text.strip():
            request.update(search_text=search_text(query.text), search_fields=[CONTENT_FIELD], search_mode="any")
            if self.semantic_ranker:
                request.update(query_type="semantic", semantic_configuration_name=SEMANTIC_CONFIG)
        if query.uses_vector:
            hybrid = "search_text" in request
            request.update(
                vector_queries=[VectorizedQuery(
                    # RRF fuses each ranking's best CANDIDATES, as locally; a lone vector ranking needs k.
                    vector=list(query.vector or ()), k_nearest_neighbors=depth if hybrid else request["top"],
                    fields=VECTOR_FIELD,
                    weight=weights.vector / weights.keyword if hybrid else None,
                )],
                vector_filter_mode="preFilter",
            )
        if "search_text" not in request and "vector_queries" not in request:
            return None  # a keyword search of a question with no words
        return request

    async def info(self) -> IndexInfo:
        try:
            count = await self._search.get_document_count()
        except AzureError as exc:
            raise VectorSearchError(f"Azure AI Search count failed: {type(exc).__name__}") from exc
        return IndexInfo(backend=self.backend, name=self.index_name, model_id=self.spec.model_id,
                         dimensions=self.spec.dimensions, documents=count)

    async def close(self) -> None:
        await self._search.close()
        await self._indexes.close()
        if self._owned_credential is not None:
            await self._owned_credential.close()
