"""SqliteVecIndex: the real sqlite-vec extension, on a temporary file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.vector.base import EmbedderMismatch, IndexSpec, SearchFilters, SearchQuery, VectorDoc
from shared.vector.sqlite_index import SqliteVecIndex

SPEC = IndexSpec("test-model", 4)


def _unit(*xs: float) -> list[float]:
    v = np.asarray(xs, dtype=np.float64)
    return (v / np.linalg.norm(v)).tolist()


def _doc(event_id: str, tenant: str, vector: list[float], *, event_type: str = "RISK_CREATED",
         entity_type: str | None = "risk", day: int = 1, text: str = "t", model: str = "test-model") -> VectorDoc:
    return VectorDoc(event_id=event_id, tenant_id=tenant, event_type=event_type, source="ARCHER_GRC",
                     timestamp=f"2026-10-{day:02d}T00:00:00.000Z", text=text, vector=vector, model_id=model,
                     entity_type=entity_type, entity_id=f"ent-{event_id}")


@pytest.fixture
async def index(tmp_path: Path):
    idx = SqliteVecIndex(str(tmp_path / "vec.db"), SPEC)
    await idx.open()
    yield idx
    await idx.close()


async def test_similarity_is_cosine_and_score_the_rank_score(index: SqliteVecIndex) -> None:
    a, b = _unit(1, 0, 0, 0), _unit(1, 1, 0, 0)
    await index.upsert([_doc("e1", "t-a", a), _doc("e2", "t-a", b)])
    q = _unit(1, 0.2, 0, 0)
    hits = await index.search("t-a", SearchQuery.by_vector(q, "test-model"), 5)
    assert [h.event_id for h in hits] == ["e1", "e2"]
    for h, v in zip(hits, (a, b)):
        assert h.similarity == pytest.approx(float(np.dot(q, v)), abs=1e-5)
    # One ranking: 1.0 for the first, (K + 1) / (K + rank) after (shared.vector.fusion).
    assert [h.score for h in hits] == pytest.approx([1.0, 61 / 62])
    assert hits[0].entity_id == "ent-e1" and hits[0].timestamp == "2026-10-01T00:00:00.000Z"


async def test_tenant_is_a_partition(index: SqliteVecIndex) -> None:
    v = _unit(1, 0, 0, 0)
    await index.upsert([_doc("same-id", "t-a", v, text="a"), _doc("same-id", "t-b", v, text="b")])
    hits = await index.search("t-b", SearchQuery.by_vector(v, "test-model"), 10)
    assert [(h.tenant_id, h.summary) for h in hits] == [("t-b", "b")]
    assert await index.search("t-c", SearchQuery.by_vector(v, "test-model"), 10) == []


async def test_reupsert_replaces_and_never_duplicates(index: SqliteVecIndex) -> None:
    await index.upsert([_doc("e1", "t-a", _unit(1, 0, 0, 0), text="old")])
    await index.upsert([_doc("e1", "t-a", _unit(0, 1, 0, 0), text="new")] * 2)
    hits = await index.search("t-a", SearchQuery.by_vector(_unit(0, 1, 0, 0), "test-model"), 10)
    assert [(h.event_id, h.summary) for h in hits] == [("e1", "new")]
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert (await index.info()).documents == 1


async def test_filters(index: SqliteVecIndex) -> None:
    v = _unit(1, 1, 1, 1)
    await index.upsert([
        _doc("r1", "t-a", v, event_type="RISK_CREATED", entity_type="risk", day=1),
        _doc("c1", "t-a", v, event_type="CONTROL_FAILED", entity_type="control", day=5),
        _doc("c2", "t-a", v, event_type="CONTROL_TESTED", entity_type="control", day=9),
        _doc("x1", "t-a", v, event_type="SYSTEM_ERROR", entity_type=None, day=9),
    ])

    async def ids(f: SearchFilters) -> set[str]:
        return {h.event_id for h in await index.search("t-a", SearchQuery.by_vector(v, "test-model"), 10, f)}

    assert await ids(SearchFilters(event_types=("CONTROL_FAILED", "CONTROL_TESTED"))) == {"c1", "c2"}
    assert await ids(SearchFilters(entity_types=("risk",))) == {"r1"}
    assert await ids(SearchFilters(time_from="2026-10-05T00:00:00Z", time_to="2026-10-08T23:59:59Z")) == {"c1"}
    assert await ids(SearchFilters(entity_id="ent-c2")) == {"c2"}
    assert await ids(SearchFilters()) == {"r1", "c1", "c2", "x1"}


async def test_delete(index: SqliteVecIndex) -> None:
    v = _unit(1, 0, 0, 0)
    await index.upsert([_doc("e1", "t-a", v), _doc("e2", "t-a", v)])
    assert await index.delete("t-b", ["e1"]) == 0  # another tenant cannot delete it
    assert await index.delete("t-a", ["e1", "missing"]) == 1
    assert [h.event_id for h in await index.search("t-a", SearchQuery.by_vector(v, "test-model"), 10)] == ["e2"]


async def test_purge_before_deletes_the_tenants_older_documents_from_both_rankings(
        index: SqliteVecIndex) -> None:
    v = _unit(1, 0, 0, 0)
    await index.upsert([_doc(f"old{d}", "t-a", v, day=d, text="failed control") for d in range(1, 10)]
                       + [_doc("new", "t-a", v, day=10, text="failed control"),
                          _doc("theirs", "t-b", v, day=1, text="failed control")])
    assert await index.purge_before("t-a", "2026-10-10T00:00:00.000Z") == 9  # day 10 is not before
    assert await index.purge_before("t-a", "2026-10-10T00:00:00.000Z") == 0
    for mode in ("vector", "keyword", "hybrid"):
        query = SearchQuery(text="failed control", mode=mode, vector=v, model_id="test-model",
                            keywords='"failed" AND "control"')
        assert [h.event_id for h in await index.search("t-a", query, 20)] == ["new"], mode
        assert [h.event_id for h in await index.search("t-b", query, 20)] == ["theirs"], mode
    assert await index.count("t-a") == 1 and await index.count() == 2
    await index.upsert([_doc("old1", "t-a", v, day=1)])  # indexed again (a backfill): a fresh row
    assert await index.count("t-a") == 2


async def test_vectors_of_another_embedder_are_refused(index: SqliteVecIndex) -> None:
    with pytest.raises(EmbedderMismatch, match="model"):
        await index.upsert([_doc("e1", "t-a", _unit(1, 0, 0, 0), model="other-model")])
    with pytest.raises(EmbedderMismatch, match="dimensions"):
        await index.upsert([_doc("e1", "t-a", [1.0, 0.0, 0.0])])
    with pytest.raises(EmbedderMismatch):
        await index.search("t-a", SearchQuery.by_vector(_unit(1, 0, 0, 0), "other-model"), 3)
    assert (await index.info()).documents == 0


async def test_index_built_for_another_model_refuses_to_open(tmp_path: Path) -> None:
    path = str(tmp_path / "vec.db")
    first = SqliteVecIndex(path, SPEC)
    await first.open()
    await first.close()
    for other in (IndexSpec("other-model", 4), IndexSpec("test-model", 8)):
        with pytest.raises(EmbedderMismatch, match="built for 'test-model'"):
            await SqliteVecIndex(path, other).open()
    reopened = SqliteVecIndex(path, SPEC)
    await reopened.open()  # the same spec opens fine
    info = await reopened.info()
    assert (info.model_id, info.dimensions) == ("test-model", 4)
    await reopened.close()
