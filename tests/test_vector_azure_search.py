"""AzureSearchIndex at its HTTP boundary.

No Azure AI Search emulator exists, so the real azure-search-documents aio client talks to
FakeAzureSearch (tests/vector_fakes.py), a local FAKE HTTP server that records each request.
These tests check the requests the adapter builds (schema, filters, batches, keys) and how it
reads the answers (score conversion, per-document failures); they say nothing about the service's
own ranking.
"""
from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from azure.core.credentials import AzureKeyCredential

from shared.vector.azure_search import (
    MAX_BATCH_BYTES,
    MAX_BATCH_DOCS,
    AzureSearchIndex,
    batches,
    build_filter,
    cosine_from_score,
    document_key,
    to_document,
)
from shared.vector.base import EmbedderMismatch, IndexSpec, SearchFilters, VectorDoc, VectorSearchError
from tests.vector_fakes import FakeAzureSearch, FakeTokenCredential

SPEC = IndexSpec("test-model", 4)


def _unit(*xs: float) -> list[float]:
    n = math.sqrt(sum(x * x for x in xs))
    return [x / n for x in xs]


def _doc(event_id: str, tenant: str, vector: list[float], text: str = "t", model: str = "test-model") -> VectorDoc:
    return VectorDoc(event_id=event_id, tenant_id=tenant, event_type="CONTROL_FAILED", source="ARCHER_GRC",
                     timestamp="2026-10-02T09:00:00Z", text=text, vector=vector, model_id=model,
                     entity_type="control", entity_id="C-1")


@pytest.fixture
async def fake():
    server = await FakeAzureSearch().start()
    yield server
    await server.stop()


@pytest.fixture
async def index(fake: FakeAzureSearch):
    idx = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="test-key")
    await idx.open()
    yield idx
    await idx.close()


async def test_open_creates_the_index_schema(index: AzureSearchIndex, fake: FakeAzureSearch) -> None:
    get, create = fake.requests[:2]
    assert (get.method, get.path) == ("GET", "/indexes('grc-events')")
    assert (create.method, create.path) == ("POST", "/indexes")
    assert create.headers["api-key"] == "test-key"
    body = create.body
    fields = {f["name"]: f for f in body["fields"]}
    assert fields["id"]["key"] is True
    for name in ("tenantId", "eventType", "source", "entityType", "entityId", "timestamp"):
        assert fields[name]["filterable"] is True, name
    assert fields["timestamp"]["type"] == "Edm.DateTimeOffset"
    vec = fields["embedding"]
    assert (vec["type"], vec["dimensions"], vec["searchable"]) == ("Collection(Edm.Single)", 4, True)
    profile = next(p for p in body["vectorSearch"]["profiles"] if p["name"] == vec["vectorSearchProfile"])
    algo = next(a for a in body["vectorSearch"]["algorithms"] if a["name"] == profile["algorithm"])
    assert algo["kind"] == "hnsw" and algo["hnswParameters"]["metric"] == "cosine"
    assert "model=test-model; dimensions=4" in body["description"]


async def test_open_verifies_an_existing_index(fake: FakeAzureSearch, index: AzureSearchIndex) -> None:
    again = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k")
    await again.open()  # same spec: accepted, nothing created
    assert [r.method for r in fake.requests].count("POST") == 1
    await again.close()
    for other in (IndexSpec("other-model", 4), IndexSpec("test-model", 8)):
        wrong = AzureSearchIndex(fake.endpoint, "grc-events", other, api_key="k")
        with pytest.raises(EmbedderMismatch):
            await wrong.open()
        await wrong.close()


async def test_open_survives_a_concurrent_create(fake: FakeAzureSearch, index: AzureSearchIndex) -> None:
    fake.hide_index_once = True  # GET says 404, the create then conflicts: another instance won
    other = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k")
    await other.open()
    await other.close()
    tail = [(r.method, r.path) for r in fake.requests[-3:]]
    assert tail == [("GET", "/indexes('grc-events')"), ("POST", "/indexes"), ("GET", "/indexes('grc-events')")]


async def test_open_refuses_an_index_without_cosine(fake: FakeAzureSearch, index: AzureSearchIndex) -> None:
    fake.indexes["grc-events"]["vectorSearch"]["algorithms"][0]["hnswParameters"]["metric"] = "dotProduct"
    again = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k")
    with pytest.raises(ValueError, match="cosine"):
        await again.open()
    await again.close()


async def test_upsert_is_merge_or_upload_keyed_per_tenant_and_event(index: AzureSearchIndex,
                                                                    fake: FakeAzureSearch) -> None:
    await index.upsert([_doc("e1", "t-a", _unit(1, 0, 0, 0)), _doc("e1", "t-b", _unit(1, 0, 0, 0))])
    await index.upsert([_doc("e1", "t-a", _unit(0, 1, 0, 0), text="new")])
    uploads = [r for r in fake.requests if r.path.endswith("/docs/search.index")]
    actions = [a for r in uploads for a in r.body["value"]]
    assert {a["@search.action"] for a in actions} == {"mergeOrUpload"}
    assert actions[0]["id"] == document_key("t-a", "e1") != actions[1]["id"]
    assert actions[0]["timestamp"] == "2026-10-02T09:00:00.000Z"
    assert len(fake.docs) == 2 and fake.docs[document_key("t-a", "e1")]["text"] == "new"
    assert (await index.info()).documents == 2


async def test_search_prefilters_on_tenant_and_returns_cosine(index: AzureSearchIndex,
                                                              fake: FakeAzureSearch) -> None:
    a, b = _unit(1, 0, 0, 0), _unit(1, 1, 0, 0)
    await index.upsert([_doc("e1", "t-a", a), _doc("e2", "t-a", b), _doc("e3", "t-b", a)])
    q = _unit(1, 0.2, 0, 0)
    hits = await index.search("t-a", q, 5, SearchFilters(event_types=("CONTROL_FAILED", "RISK_CREATED")),
                              model_id="test-model")
    req = [r for r in fake.requests if r.path.endswith("/docs/search.post.search")][-1]
    assert req.body["vectorFilterMode"] == "preFilter"
    assert req.body["filter"] == "tenantId eq 't-a' and search.in(eventType, 'CONTROL_FAILED|RISK_CREATED', '|')"
    vq = req.body["vectorQueries"][0]
    assert (vq["kind"], vq["k"], vq["fields"]) == ("vector", 5, "embedding")
    assert "embedding" not in req.body["select"]
    assert [h.event_id for h in hits] == ["e1", "e2"]
    for h, v in zip(hits, (a, b)):
        assert h.score == pytest.approx(sum(x * y for x, y in zip(q, v)), abs=1e-9)
        assert h.tenant_id == "t-a"


async def test_search_refuses_foreign_vectors(index: AzureSearchIndex, fake: FakeAzureSearch) -> None:
    with pytest.raises(EmbedderMismatch):
        await index.search("t-a", _unit(1, 0, 0), 3, model_id="test-model")
    with pytest.raises(EmbedderMismatch):
        await index.upsert([_doc("e1", "t-a", _unit(1, 0, 0, 0), model="other")])
    assert not any(r.path.endswith(("search.post.search", "search.index")) for r in fake.requests)


async def test_uploads_are_split_by_count_and_bytes(fake: FakeAzureSearch) -> None:
    idx = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k", max_batch_docs=3,
                           max_batch_bytes=64 * 1024)
    await idx.open()
    await idx.upsert([_doc(f"e{i}", "t-a", _unit(1, 0, 0, i + 1)) for i in range(7)])
    big = [_doc(f"b{i}", "t-a", _unit(1, 0, 0, 1), text="x" * 40_000) for i in range(3)]
    await idx.upsert(big)
    sizes = [len(r.body["value"]) for r in fake.requests if r.path.endswith("/docs/search.index")]
    assert sizes == [3, 3, 1, 1, 1, 1]  # two 40 KB docs do not fit in 64 KB
    assert len(fake.docs) == 10
    await idx.close()


def test_default_caps_are_the_service_limits() -> None:
    assert (MAX_BATCH_DOCS, MAX_BATCH_BYTES) == (1000, 16 * 1024 * 1024)
    docs = [to_document(_doc(f"e{i}", "t-a", [0.5] * 4, text="y" * 20_000)) for i in range(1500)]
    split = list(batches(docs))
    assert all(len(b) <= 1000 for b in split)
    assert all(len(orjson.dumps({"value": b})) < 16 * 1024 * 1024 for b in split)
    assert sum(len(b) for b in split) == 1500


def test_filter_escapes_quotes_and_ranges() -> None:
    f = build_filter("t-a", SearchFilters(entity_types=("risk",), entity_id="O'Brien",
                                          time_from="2026-10-01T00:00:00+02:00", time_to="2026-10-31T00:00:00Z"))
    assert f == ("tenantId eq 't-a' and search.in(entityType, 'risk', '|') and entityId eq 'O''Brien'"
                 " and timestamp ge 2026-09-30T22:00:00.000Z and timestamp le 2026-10-31T00:00:00.000Z")
    with pytest.raises(ValueError):
        build_filter("", SearchFilters())


def test_score_conversion_matches_azures_formula() -> None:
    for cos in (1.0, 0.5, 0.0, -0.3, -1.0):
        assert cosine_from_score(1.0 / (1.0 + (1.0 - cos))) == pytest.approx(cos)


async def test_managed_identity_token_is_sent_as_bearer(tmp_path: Path) -> None:
    """Without a key the adapter sends an Entra ID token (FAKE credential) for the Search scope.
    azure-core sends bearer tokens over https only, so this fake serves a throwaway certificate."""
    fake = await FakeAzureSearch(tls_dir=tmp_path).start()
    cred = FakeTokenCredential(token="fake-entra-token")
    idx = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, credential=cred, connection_verify=False)
    try:
        await idx.open()
        await idx.upsert([_doc("e1", "t-a", _unit(1, 0, 0, 0))])
    finally:
        await idx.close()
        await fake.stop()
    assert cred.scopes and all(s == ("https://search.azure.com/.default",) for s in cred.scopes)
    assert {r.headers.get("Authorization") for r in fake.requests} == {"Bearer fake-entra-token"}
    assert not any("api-key" in r.headers for r in fake.requests)


async def test_bearer_token_never_goes_over_plain_http(fake: FakeAzureSearch) -> None:
    cred = FakeTokenCredential()
    idx = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, credential=cred, retry_total=0)
    with pytest.raises(VectorSearchError, match="ServiceRequestError"):
        await idx.open()
    assert cred.scopes == [] and fake.requests == []
    await idx.close()
