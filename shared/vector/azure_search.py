"""Production vector index: Azure AI Search through azure-search-documents (aio).

At `open()` the index is created, or an existing one is verified against the schema this code
needs (vector field size, HNSW + cosine profile, filterable fields) and against the model it was
built with (kept in the index description): a mismatch refuses to start rather than mixing vectors.
Every search carries `tenantId eq '<tenant>'` as a pre-filter, so a tenant's k nearest are found
among its own documents only. Azure reports a cosine hit as `@search.score = 1 / (1 + (1 - cos))`;
hits are converted back to cosine similarity, the scale every index here uses.
"""
from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

import orjson
from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from shared.vector.base import (
    EmbedderMismatch,
    IndexInfo,
    IndexSpec,
    SearchFilters,
    SearchHit,
    VectorDoc,
    VectorSearchError,
    check_spec,
    check_vector,
)

MAX_BATCH_DOCS = 1_000  # service cap on actions per indexing request
MAX_BATCH_BYTES = 16 * 1024 * 1024  # service cap on an indexing request's body
VECTOR_FIELD = "embedding"
PROFILE = "grc-vector-profile"
ALGORITHM = "grc-hnsw"
FILTERABLE = ("tenantId", "eventId", "eventType", "source", "entityType", "entityId", "timestamp")
SELECT = ["eventId", "tenantId", "eventType", "source", "entityType", "entityId", "timestamp", "text"]
_DESCRIPTION = re.compile(r"model=(?P<model>[^;]+); dimensions=(?P<dims>\d+)")


def document_key(tenant_id: str, event_id: str) -> str:
    """A key unique per (tenant, event) in the characters Azure allows (letters, digits, - _ =)."""
    return base64.urlsafe_b64encode(f"{tenant_id}\n{event_id}".encode()).decode()


def cosine_from_score(score: float) -> float:
    """Azure's cosine `@search.score` is 1 / (1 + cosine distance) = 1 / (2 - cos): invert it."""
    return 2.0 - 1.0 / score


def odata_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def odata_time(ts: str) -> str:
    dt = datetime.fromisoformat(ts)
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
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


def index_schema(name: str, spec: IndexSpec) -> Any:
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
    ]
    vector_search = VectorSearch(
        algorithms=[HnswAlgorithmConfiguration(
            name=ALGORITHM, parameters=HnswParameters(metric="cosine", m=4, ef_construction=400, ef_search=500))],
        profiles=[VectorSearchProfile(name=PROFILE, algorithm_configuration_name=ALGORITHM)],
    )
    return SearchIndex(
        name=name, fields=fields, vector_search=vector_search,
        description=f"GRC event vectors; model={spec.model_id}; dimensions={spec.dimensions}",
    )


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
        **client_kwargs: Any,  # e.g. transport / retry options
    ) -> None:
        from azure.search.documents.aio import SearchClient
        from azure.search.documents.indexes.aio import SearchIndexClient

        if not endpoint:
            raise ValueError("AZURE_SEARCH_ENDPOINT is not set")
        self.spec = spec
        self.index_name = index_name
        self._max_docs = min(max_batch_docs, MAX_BATCH_DOCS)
        self._max_bytes = min(max_batch_bytes, MAX_BATCH_BYTES)
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
            try:
                existing = await self._indexes.get_index(self.index_name)
            except ResourceNotFoundError:
                try:
                    await self._indexes.create_index(index_schema(self.index_name, self.spec))
                    return
                except ResourceExistsError:  # another instance created it meanwhile: verify theirs
                    existing = await self._indexes.get_index(self.index_name)
        except AzureError as exc:
            raise VectorSearchError(f"Azure AI Search index check failed: {type(exc).__name__}") from exc
        verify_schema(existing, self.spec)

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

    async def search(
        self,
        tenant_id: str,
        vector: Sequence[float],
        k: int,
        filters: SearchFilters | None = None,
        *,
        model_id: str,
    ) -> list[SearchHit]:
        from azure.search.documents.models import VectorizedQuery

        check_vector(self.spec, vector, model_id)
        odata = build_filter(tenant_id, filters or SearchFilters())
        query = VectorizedQuery(vector=list(vector), k_nearest_neighbors=k, fields=VECTOR_FIELD)
        hits: list[SearchHit] = []
        try:
            results = await self._search.search(
                search_text=None, vector_queries=[query], vector_filter_mode="preFilter",
                filter=odata, select=SELECT, top=k,
            )
            async for r in results:
                if r.get("tenantId") != tenant_id:  # belt and braces: never hand out another tenant's event
                    continue
                hits.append(SearchHit(
                    event_id=r["eventId"], tenant_id=r["tenantId"], score=cosine_from_score(r["@search.score"]),
                    event_type=r["eventType"], source=r["source"], timestamp=r["timestamp"],
                    summary=r.get("text") or "", entity_type=r.get("entityType"), entity_id=r.get("entityId"),
                ))
        except AzureError as exc:
            raise VectorSearchError(f"Azure AI Search query failed: {type(exc).__name__}") from exc
        return hits

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
