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
from shared.vector.base import (
    EmbedderMismatch,
    IndexSpec,
    SearchFilters,
    SearchQuery,
    VectorConfigError,
    VectorDoc,
    VectorSearchError,
)
from shared.vector.vocabulary import solr_synonyms
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
    get_map, put_map, get, create = fake.requests[:4]
    assert [(r.method, r.path) for r in (get_map, put_map)] == [
        ("GET", "/synonymmaps('grc-synonyms')"), ("PUT", "/synonymmaps('grc-synonyms')")]
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
    hits = await index.search("t-a", SearchQuery.by_vector(q, "test-model"), 5,
                              SearchFilters(event_types=("CONTROL_FAILED", "RISK_CREATED")))
    req = [r for r in fake.requests if r.path.endswith("/docs/search.post.search")][-1]
    assert req.body["vectorFilterMode"] == "preFilter"
    assert req.body["filter"] == "tenantId eq 't-a' and search.in(eventType, 'CONTROL_FAILED|RISK_CREATED', '|')"
    vq = req.body["vectorQueries"][0]
    assert (vq["kind"], vq["k"], vq["fields"]) == ("vector", 5, "embedding")
    assert "embedding" not in req.body["select"]
    assert [h.event_id for h in hits] == ["e1", "e2"]
    for h, v in zip(hits, (a, b)):
        assert h.similarity == pytest.approx(sum(x * y for x, y in zip(q, v)), abs=1e-9)
        assert h.tenant_id == "t-a"
    assert [h.score for h in hits] == pytest.approx([1.0, 61 / 62])  # one ranking: rank scores


async def test_search_refuses_foreign_vectors(index: AzureSearchIndex, fake: FakeAzureSearch) -> None:
    with pytest.raises(EmbedderMismatch):
        await index.search("t-a", SearchQuery.by_vector(_unit(1, 0, 0), "test-model"), 3)
    with pytest.raises(EmbedderMismatch):
        await index.upsert([_doc("e1", "t-a", _unit(1, 0, 0, 0), model="other")])
    assert not any(r.path.endswith(("search.post.search", "search.index")) for r in fake.requests)


async def test_uploads_are_split_by_count_and_bytes(fake: FakeAzureSearch) -> None:
    idx = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k", max_batch_docs=3,
                           max_batch_bytes=64 * 1024)
    await idx.open()
    await idx.upsert([_doc(f"e{i}", "t-a", _unit(1, 0, 0, i + 1)) for i in range(7)])
    big = [_doc(f"b{i}", "t-a", _unit(1, 0, 0, 1), text="x" * 20_000) for i in range(3)]
    await idx.upsert(big)
    sizes = [len(r.body["value"]) for r in fake.requests if r.path.endswith("/docs/search.index")]
    assert sizes == [3, 3, 1, 1, 1, 1]  # a 20 KB text is sent twice (text, content): two such docs exceed 64 KB
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


# -- hybrid search: synonym map, schema upgrade, request shape (the fake ranks nothing itself) -------

def _fields(fake: FakeAzureSearch) -> dict[str, dict]:
    return {f["name"]: f for f in fake.indexes["grc-events"]["fields"]}


def _searches(fake: FakeAzureSearch) -> list:
    return [r for r in fake.requests if r.path.endswith("/docs/search.post.search")]


def _hybrid(text: str, vector: list[float], outcomes: frozenset[str] = frozenset(), mode: str = "hybrid") -> SearchQuery:
    return SearchQuery(text=text, mode=mode, vector=vector, model_id="test-model", outcomes=outcomes)  # type: ignore[arg-type]


async def test_the_grc_synonym_map_is_pushed_and_referenced(index: AzureSearchIndex, fake: FakeAzureSearch) -> None:
    pushed = fake.synonym_maps["grc-synonyms"]
    assert pushed["format"] == "solr" and pushed["synonyms"] == solr_synonyms()
    content, outcome = _fields(fake)["content"], _fields(fake)["outcome"]
    assert content["searchable"] is True and content["synonymMaps"] == ["grc-synonyms"]
    assert content["analyzer"] == "en.lucene"
    assert outcome["filterable"] is True
    assert "semantic" not in fake.indexes["grc-events"] or not fake.indexes["grc-events"]["semantic"]
    puts = lambda: [r for r in fake.requests if r.method == "PUT" and r.path.startswith("/synonymmaps")]  # noqa: E731
    again = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k")
    await again.open()  # unchanged map: read, not written
    assert len(puts()) == 1
    fake.synonym_maps["grc-synonyms"]["synonyms"] = "old, rules"  # the file changed since it was pushed
    await again.open()  # an instance opening: the map is brought in line
    assert len(puts()) == 2 and fake.synonym_maps["grc-synonyms"]["synonyms"] == solr_synonyms()
    await again.close()


async def test_a_hybrid_search_is_one_request_of_text_and_vector(index: AzureSearchIndex,
                                                                  fake: FakeAzureSearch) -> None:
    await index.upsert([_doc("e1", "t-a", _unit(1, 0, 0, 0), text="Failed. Control failed: X.")])
    assert fake.docs[document_key("t-a", "e1")]["content"] == "Failed. Control failed: X."
    q = _unit(1, 0.2, 0, 0)
    await index.search("t-a", _hybrid('SOC 2 - "change" (failed)?', q, frozenset({"failed"})), 5,
                       SearchFilters(event_types=("CONTROL_FAILED",)))
    body = _searches(fake)[-1].body
    assert body["search"] == 'SOC 2 \\- \\"change\\" \\(failed\\)\\?'  # words, never operators
    assert (body["searchFields"], body["searchMode"]) == ("content", "any")
    assert body["filter"] == "tenantId eq 't-a' and search.in(eventType, 'CONTROL_FAILED', '|')"
    assert body["vectorFilterMode"] == "preFilter"
    vq = body["vectorQueries"][0]
    assert (vq["kind"], vq["fields"], vq["k"], vq["weight"]) == ("vector", "embedding", 50, 0.5)
    assert body["top"] == 50  # an outcome is named: the boost re-ranks the first 50
    assert "outcome" in body["select"].split(",") and "embedding" not in body["select"]
    assert "queryType" not in body
    # Keyword only: no vector query; vector only: no text; no outcome named: the first k only.
    await index.search("t-a", _hybrid("access review", q, mode="keyword"), 5)
    body = _searches(fake)[-1].body
    assert "vectorQueries" not in body and body["search"] == "access review" and body["top"] == 5
    await index.search("t-a", _hybrid("access review", q, mode="vector"), 5)
    body = _searches(fake)[-1].body
    assert "search" not in body and body["vectorQueries"][0]["k"] == 5 and "weight" not in body["vectorQueries"][0]


async def test_the_outcome_boost_and_the_score_on_azure(index: AzureSearchIndex, fake: FakeAzureSearch) -> None:
    """The fake answers in cosine order with stand-in RRF values (1 + w) / (60 + rank); the adapter
    adds the outcome boost and normalises exactly as the local fusion does."""
    await index.upsert([
        _doc("pass", "t-a", _unit(1, 0, 0, 0), text="Passed. Control tested: X.\nStatus: passed."),
        _doc("fail", "t-a", _unit(1, 0.3, 0, 0), text="Failed. Control failed: X."),
        _doc("other", "t-b", _unit(1, 0, 0, 0), text="Failed. Control failed: X."),
    ])
    fake.docs[document_key("t-a", "pass")]["outcome"] = "passed"
    fake.docs[document_key("t-a", "fail")]["outcome"] = "failed"
    q = _unit(1, 0, 0, 0)
    hits = await index.search("t-a", _hybrid("X control failed", q, frozenset({"failed", "findings"})), 2)
    assert [(h.event_id, h.outcome, h.tenant_id) for h in hits] == [("fail", "failed", "t-a"), ("pass", "passed", "t-a")]
    full = (1.0 + 0.5 + 0.5) / 61
    assert hits[0].score == pytest.approx((1.5 / 62 + 0.5 / 61) / full)
    assert hits[1].score == pytest.approx((1.5 / 61) / full)
    assert hits[0].similarity is None  # Azure's hybrid score carries no cosine
    plain = await index.search("t-a", _hybrid("X control", q), 2)
    assert [h.event_id for h in plain] == ["pass", "fail"] and plain[0].score == pytest.approx(1.0)
    alone = await index.search("t-a", _hybrid("X control", q, mode="vector"), 2)
    assert alone[0].similarity == pytest.approx(1.0) and alone[0].score == pytest.approx(1.0)


async def test_the_semantic_ranker_option(fake: FakeAzureSearch) -> None:
    idx = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k", semantic_ranker=True)
    await idx.open()
    config = fake.indexes["grc-events"]["semantic"]["configurations"][0]
    assert config["name"] == "grc-semantic"
    assert config["prioritizedFields"]["prioritizedContentFields"] == [{"fieldName": "content"}]
    await idx.upsert([_doc("a", "t-a", _unit(1, 0, 0, 0)), _doc("b", "t-a", _unit(0, 1, 0, 0))])
    fake.reranker_scores.update({"a": 1.0, "b": 3.0})
    hits = await idx.search("t-a", _hybrid("vendor access", _unit(1, 0, 0, 0)), 2)
    body = _searches(fake)[-1].body
    assert (body["queryType"], body["semanticConfiguration"]) == ("semantic", "grc-semantic")
    assert [h.event_id for h in hits] == ["b", "a"]  # the reranker's order, not the cosine order
    assert [h.score for h in hits] == pytest.approx([0.75, 0.25])  # rerankerScore / 4
    await idx.close()


async def test_an_index_made_before_hybrid_search_is_upgraded_in_place(fake: FakeAzureSearch) -> None:
    old = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k")
    await old.open()
    await old.upsert([_doc("e1", "t-a", _unit(1, 0, 0, 0), text="Control failed: X.\nStatus: failed."),
                      _doc("e2", "t-a", _unit(0, 1, 0, 0), text="Control tested: X.\nStatus: passed.")])
    await old.close()
    # Make it what the previous release created: no `content`, no `outcome`, documents without them.
    schema = fake.indexes["grc-events"]
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in ("content", "outcome")]
    for doc in fake.docs.values():
        doc.pop("content"), doc.pop("outcome")
    fake.docs[document_key("t-a", "e2")]["eventType"] = "CONTROL_TESTED"  # its outcome comes from its status
    new = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k")
    await new.open()
    update = [r for r in fake.requests if r.method == "PUT" and r.path == "/indexes('grc-events')"]
    assert len(update) == 1  # Update Index with the two fields added (the fake refuses dropped fields)
    assert {"content", "outcome"} <= {f["name"] for f in update[0].body["fields"]}
    await new.upsert([_doc("e3", "t-a", _unit(0, 0, 1, 0), text="Passed. Control tested: Y.")])
    merges = [a for r in fake.requests if r.path.endswith("/docs/search.index") for a in r.body["value"]
              if a["@search.action"] == "merge"]
    assert sorted((a["id"], a["outcome"], a["content"][:15]) for a in merges) == [
        (document_key("t-a", "e1"), "failed", "Control failed:"), (document_key("t-a", "e2"), "passed", "Control tested:")]
    backfill = [r for r in _searches(fake) if r.body.get("filter") == "outcome eq null"]
    assert len(backfill) == 1
    await new.upsert([_doc("e4", "t-a", _unit(0, 0, 0, 1))])
    assert len([r for r in _searches(fake) if r.body.get("filter") == "outcome eq null"]) == 1  # done: not asked again
    await new.close()
    schema = fake.indexes["grc-events"]  # as updated above
    schema["fields"] = [{**f, "searchable": False} if f["name"] == "content" else f for f in schema["fields"]]
    broken = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k")
    with pytest.raises(ValueError, match="rebuild"):
        await broken.open()
    await broken.close()


async def test_turning_the_semantic_ranker_on_adds_its_configuration_in_place(index: AzureSearchIndex,
                                                                               fake: FakeAzureSearch) -> None:
    assert not fake.indexes["grc-events"].get("semantic")
    on = AzureSearchIndex(fake.endpoint, "grc-events", SPEC, api_key="k", semantic_ranker=True)
    await on.open()
    update = [r for r in fake.requests if r.method == "PUT" and r.path == "/indexes('grc-events')"]
    assert len(update) == 1 and update[0].body["semantic"]["configurations"][0]["name"] == "grc-semantic"
    await on.open()  # already there: nothing written
    assert len([r for r in fake.requests if r.method == "PUT" and r.path == "/indexes('grc-events')"]) == 1
    await on.close()


def _at(event_id: str, tenant: str, timestamp: str) -> VectorDoc:
    return VectorDoc(event_id=event_id, tenant_id=tenant, event_type="RISK_UPDATED", source="ARCHER_GRC",
                     timestamp=timestamp, text="t", vector=_unit(1, 0, 0, 0), model_id="test-model")


@pytest.mark.parametrize("deletes_seen_at_once", [True, False])
async def test_purge_before_deletes_the_tenants_older_documents_page_by_page(
        index: AzureSearchIndex, fake: FakeAzureSearch, deletes_seen_at_once: bool) -> None:
    """2,300 old documents of one tenant (300 of them at one instant) over three pages, the newer ones and
    another tenant's kept. A deletion shows in searches only after the index refreshes: the pages must not
    depend on it (the fake keeps deleted documents findable when `deletes_seen_at_once` is False)."""
    old = [_at(f"o{i}", "t-a", f"2026-09-{1 + i // 100:02d}T10:00:00.{i % 100:03d}Z") for i in range(2_000)]
    old += [_at(f"s{i}", "t-a", "2026-09-25T00:00:00Z") for i in range(300)]
    new = [_at(f"n{i}", "t-a", "2026-10-01T00:00:00Z") for i in range(5)]
    other = [_at(f"x{i}", "t-b", "2026-09-01T00:00:00Z") for i in range(5)]
    await index.upsert(old + new + other)
    fake.deletes_seen_at_once = deletes_seen_at_once
    searches = len([r for r in fake.requests if r.path.endswith("search.post.search")])
    assert await index.purge_before("t-a", "2026-10-01T00:00:00Z") == 2_300
    left = {d["eventId"] for d in fake.docs.values()}
    assert left == {d.event_id for d in new + other}
    asked = [r.body for r in fake.requests if r.path.endswith("search.post.search")][searches:]
    assert all(b["filter"].startswith("tenantId eq 't-a' and ") and b["orderby"] == "timestamp asc"
               for b in asked)
    assert "timestamp le 2026-09-30T23:59:59.999Z" in asked[0]["filter"]
    assert len(asked) <= 5, len(asked)  # three pages and the one that finds nothing new


async def test_purge_before_is_bounded_per_call_and_the_next_call_carries_on(
        index: AzureSearchIndex, fake: FakeAzureSearch, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.vector.azure_search.PURGE_PAGES", 1)
    await index.upsert([_at(f"o{i}", "t-a", f"2026-09-01T00:{i // 60:02d}:{i % 60:02d}Z")
                        for i in range(1_500)])
    assert await index.purge_before("t-a", "2026-10-01T00:00:00Z") == 1_000
    assert await index.purge_before("t-a", "2026-10-01T00:00:00Z") == 500
    assert fake.docs == {}


def test_an_index_without_an_endpoint_is_a_config_error() -> None:
    # GET /search answers 503 for it ("vector search is not configured"), not 500.
    with pytest.raises(VectorConfigError, match="AZURE_SEARCH_ENDPOINT"):
        AzureSearchIndex("", "grc-events", SPEC, api_key="k")
