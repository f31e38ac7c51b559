"""Hybrid search on the local index: reciprocal rank fusion of FTS5 (BM25) and sqlite-vec (cosine),
the outcome rules and boost, the tenant guard and filters on the keyword path, and the migration of
an index built before keyword search (schema 1)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from shared.vector.base import IndexSpec, SearchFilters, SearchQuery, VectorDoc
from shared.vector.fusion import RRF_K, Candidate, Weights, fuse, rescore
from shared.vector.outcome import event_outcome, outcome_from_text, outcomes_named
from shared.vector.sqlite_index import SqliteVecIndex, _connect, tenant_token
from shared.vector.vocabulary import keyword_query

SPEC = IndexSpec("test-model", 4)
W = Weights(keyword=1.0, vector=0.5, outcome=0.5, k=60)


def _unit(*xs: float) -> list[float]:
    v = np.asarray(xs, dtype=np.float64)
    return (v / np.linalg.norm(v)).tolist()


def _doc(event_id: str, text: str, vector: list[float], *, tenant: str = "t-a", outcome: str | None = None,
         event_type: str = "CONTROL_TESTED", day: int = 1, entity_type: str = "control") -> VectorDoc:
    return VectorDoc(event_id=event_id, tenant_id=tenant, event_type=event_type, source="ARCHER_GRC",
                     timestamp=f"2026-10-{day:02d}T00:00:00.000Z", text=text, vector=vector, model_id="test-model",
                     entity_type=entity_type, entity_id=f"ent-{event_id}", outcome=outcome)


def _query(question: str, vector: list[float] | None, mode: str = "hybrid") -> SearchQuery:
    return SearchQuery(text=question, mode=mode, vector=vector, model_id="test-model",  # type: ignore[arg-type]
                       keywords=keyword_query(question).fts5(), outcomes=outcomes_named(question))


@pytest.fixture
async def index(tmp_path: Path):
    idx = SqliteVecIndex(str(tmp_path / "hybrid.db"), SPEC)
    await idx.open()
    yield idx
    await idx.close()


# -- the rules, as pure functions -------------------------------------------------------------------

def test_fusion_formula() -> None:
    both = Candidate("both", {"keyword": 1, "vector": 1})
    kw = Candidate("kw", {"keyword": 2}, outcome="failed")
    vec = Candidate("vec", {"vector": 2})
    ranked = fuse([vec, kw, both], ["keyword", "vector"], frozenset({"failed"}), W)
    assert [c.key for c, _ in ranked] == ["both", "kw", "vec"]
    full = (1.0 + 0.5 + 0.5) / (RRF_K + 1)
    scores = dict((c.key, s) for c, s in ranked)
    assert scores["both"] == pytest.approx((1.0 / 61 + 0.5 / 61) / full)
    assert scores["kw"] == pytest.approx((1.0 / 62 + 0.5 / 61) / full)
    assert scores["vec"] == pytest.approx((0.5 / 62) / full)
    # No outcome named: nothing boosted, a first place in both rankings scores exactly 1.
    plain = dict((c.key, s) for c, s in fuse([both, kw], ["keyword", "vector"], frozenset(), W))
    assert plain["both"] == pytest.approx(1.0) and plain["kw"] == pytest.approx((1.0 / 62) / (1.5 / 61))
    # A fused value computed elsewhere (Azure's RRF) lands on the same scale.
    assert rescore(1.0 / 61 + 0.5 / 61, None, ["keyword", "vector"], frozenset(), W) == pytest.approx(1.0)
    assert rescore(1.0 / 62, "failed", ["keyword", "vector"], frozenset({"failed"}), W) == pytest.approx(scores["kw"])


@pytest.mark.parametrize(("event_type", "status", "outcome"), [
    ("CONTROL_FAILED", None, "failed"),
    ("CONTROL_FAILED", "passed", "failed"),  # the type wins
    ("SYSTEM_ERROR", None, "failed"),
    ("ASSESSMENT_OVERDUE", None, "overdue"),
    ("POLICY_VIOLATION", None, "violated"),
    ("COMPLIANCE_GAP_DETECTED", None, "gap"),
    ("CONTROL_TESTED", "passed", "passed"),
    ("CONTROL_TESTED", "not effective", "failed"),
    ("CONTROL_TESTED", "2 medium findings", "findings"),
    ("COMPLIANCE_STATUS_CHANGED", "non-compliant", "failed"),
    ("COMPLIANCE_STATUS_CHANGED", "compliant", "passed"),
    ("COMPLIANCE_STATUS_CHANGED", "material weakness", "failed"),
    ("ASSESSMENT_COMPLETED", "completed, recovery time objective missed", "failed"),
    ("ASSESSMENT_COMPLETED", "completed with 2 exceptions", "findings"),
    ("ASSESSMENT_COMPLETED", "completed", None),
    ("RISK_STATUS_CHANGED", "mitigated", "mitigated"),
    ("RISK_STATUS_CHANGED", "escalated", None),
    ("RISK_CREATED", None, None),
])
def test_event_outcome(event_type: str, status: str | None, outcome: str | None) -> None:
    assert event_outcome(event_type, status) == outcome


def test_outcomes_a_question_names() -> None:
    assert outcomes_named("failed MFA checks") == {"failed", "findings"}
    assert outcomes_named("which access reviews passed?") == {"passed"}
    assert outcomes_named("overdue DSARs and late SARs") == {"overdue"}
    assert outcomes_named("DPIA missing before a rollout") == {"gap"}
    assert outcomes_named("backup restore that did not work") == {"failed"}
    assert outcomes_named("policy violations by staff") == {"violated"}
    assert outcomes_named("vendor access review") == frozenset()
    assert outcomes_named("password reset latest failover") == frozenset()  # whole words only


def test_outcome_of_a_stored_text() -> None:
    assert outcome_from_text("CONTROL_TESTED", "Control tested: Restore test.\nStatus: passed.") == "passed"
    assert outcome_from_text("RISK_STATUS_CHANGED", "Risk status changed: X.\nStatus: open -> mitigated.") == "mitigated"
    assert outcome_from_text("CONTROL_FAILED", "Control failed: X.") == "failed"
    assert outcome_from_text("RISK_CREATED", "Risk created: X.") is None


# -- fusion on the real index --------------------------------------------------------------------------

async def test_keyword_ranking_brings_in_what_the_vectors_miss(index: SqliteVecIndex) -> None:
    """60 documents: the one the question names is 60th by cosine (beyond the 50 the vector ranking
    contributes) but the only keyword match: hybrid finds it first, vector alone does not at all."""
    q = _unit(1, 0, 0, 0)
    docs = [_doc(f"n{i}", f"Routine note number {i}.", _unit(1, 0.01 * i, 0, 0)) for i in range(59)]
    docs.append(_doc("target", "Quarterly restore test of the ledger backup.", _unit(0.2, 1, 0, 0)))
    await index.upsert(docs)
    vector_only = await index.search("t-a", _query("ledger backup restore", q, "vector"), 10)
    assert "target" not in {h.event_id for h in vector_only}
    hybrid = await index.search("t-a", _query("ledger backup restore", q), 10)
    assert hybrid[0].event_id == "target" and hybrid[0].similarity is None  # only the keyword ranking saw it
    assert hybrid[0].score == pytest.approx((1.0 / 61) / (1.5 / 61))
    keyword = await index.search("t-a", _query("ledger backup restore", None, "keyword"), 10)
    assert [h.event_id for h in keyword] == ["target"] and keyword[0].score == pytest.approx(1.0)


async def test_found_by_both_beats_found_by_one(index: SqliteVecIndex) -> None:
    await index.upsert([
        _doc("both", "Vendor access review failed.", _unit(1, 0.1, 0, 0)),
        _doc("vec", "Unrelated words here.", _unit(1, 0, 0, 0)),  # nearest vector, no keyword
        _doc("kw", "Vendor access review notes.", _unit(0, 0, 1, 0)),  # keyword, far vector
    ])
    hits = await index.search("t-a", _query("vendor access review", _unit(1, 0, 0, 0)), 3)
    assert [h.event_id for h in hits] == ["both", "kw", "vec"]
    assert hits[0].score > 0.9 and hits[-1].score < 0.5


async def test_a_failure_question_ranks_the_failure_first(index: SqliteVecIndex) -> None:
    """The look-alike case: the passing and the failing test of one control, same vector."""
    v = _unit(1, 1, 0, 0)
    await index.upsert([
        _doc("pass", "Passed. Control tested: Change approval before deployment.\nStatus: passed.", v,
             outcome="passed"),
        _doc("fail", "Failed. Control failed: Change approval before deployment.\nStatus: failed.", v,
             outcome="failed", event_type="CONTROL_FAILED"),
    ])
    for question, first in (("change approval control failing", "fail"), ("change approval failures", "fail"),
                            ("change approval test that passed", "pass"), ("passing change approval", "pass")):
        hits = await index.search("t-a", _query(question, v), 2)
        assert hits[0].event_id == first, question
        assert hits[0].outcome == {"fail": "failed", "pass": "passed"}[first]
        assert hits[0].score > hits[1].score
    # Without the boost the passing test (equal on both rankings) is not pushed down.
    plain = await index.search("t-a", _query("change approval before deployment", v), 2)
    assert {h.event_id for h in plain} == {"pass", "fail"} and plain[0].score == pytest.approx(plain[1].score, abs=0.02)


# -- the tenant guard and the filters on the keyword path -------------------------------------------

async def test_keyword_and_hybrid_search_stay_in_the_tenant(index: SqliteVecIndex) -> None:
    v = _unit(1, 0, 0, 0)
    await index.upsert([
        _doc("same", "Failed. Vendor access review.", v, tenant="t-a"),
        _doc("same", "Failed. Vendor access review.", v, tenant="t-b"),
        # Another tenant's text that spells t-a's tenant token: the token counts only in its own column.
        _doc("spoof", f"Vendor access review {tenant_token('t-a')}", v, tenant="t-b"),
    ])
    for mode in ("keyword", "hybrid", "vector"):
        q = _query(f"vendor access review {tenant_token('t-a')}", v, mode)
        hits = await index.search("t-a", q, 10)
        assert [(h.tenant_id, h.event_id) for h in hits] == [("t-a", "same")], mode
        assert await index.search("t-c", q, 10) == [], mode
        with pytest.raises(ValueError, match="tenant"):
            await index.search("", q, 10)
    with pytest.raises(ValueError, match="vector"):
        await index.search("t-a", SearchQuery(text="x", mode="hybrid"), 10)


async def test_filters_are_the_same_on_every_ranking(index: SqliteVecIndex) -> None:
    v = _unit(1, 1, 1, 1)
    await index.upsert([
        _doc("r1", "Access review note.", v, event_type="RISK_CREATED", entity_type="risk", day=1),
        _doc("c1", "Access review note.", v, event_type="CONTROL_FAILED", day=5),
        _doc("c2", "Access review note.", v, event_type="CONTROL_TESTED", day=9),
        _doc("x1", "Access review note.", v, event_type="SYSTEM_ERROR", entity_type="system", day=9),
    ])
    cases = [
        (SearchFilters(event_types=("CONTROL_FAILED", "CONTROL_TESTED")), {"c1", "c2"}),
        (SearchFilters(entity_types=("risk",)), {"r1"}),
        (SearchFilters(time_from="2026-10-05T00:00:00Z", time_to="2026-10-08T23:59:59Z"), {"c1"}),
        (SearchFilters(entity_id="ent-c2"), {"c2"}),
        (SearchFilters(sources=("BACKEND_API",)), set()),
        (SearchFilters(), {"r1", "c1", "c2", "x1"}),
    ]
    for f, expected in cases:
        for mode in ("keyword", "vector", "hybrid"):
            got = {h.event_id for h in await index.search("t-a", _query("access review", v, mode), 10, f)}
            assert got == expected, (mode, f)


# -- an index built before keyword search ----------------------------------------------------------

def _schema_1_index(path: Path) -> None:
    """What SqliteVecIndex created before hybrid search (schema 1), with two events in it."""
    db = _connect(str(path))
    db.execute("CREATE TABLE vector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.executemany("INSERT INTO vector_meta VALUES (?, ?)",
                   [("model_id", "test-model"), ("dimensions", "4"), ("schema_version", "1")])
    db.execute("CREATE TABLE vector_docs (rowid INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL,"
               " event_id TEXT NOT NULL, UNIQUE (tenant_id, event_id))")
    db.execute("CREATE VIRTUAL TABLE vector_events USING vec0(tenant_id TEXT PARTITION KEY,"
               " embedding FLOAT[4] distance_metric=cosine, event_type TEXT, entity_type TEXT, entity_id TEXT,"
               " source TEXT, ts_ms INTEGER, +event_id TEXT, +ts TEXT, +summary TEXT)")
    old = [("e1", "CONTROL_TESTED", "Control tested: Quarterly restore test.\nStatus: passed.", _unit(1, 0, 0, 0)),
           ("e2", "CONTROL_FAILED", "Control failed: Quarterly restore test.\nStatus: failed.", _unit(0, 1, 0, 0))]
    for rowid, (event_id, event_type, text, vec) in enumerate(old, start=1):
        db.execute("INSERT INTO vector_docs (rowid, tenant_id, event_id) VALUES (?, 't-a', ?)", (rowid, event_id))
        db.execute("INSERT INTO vector_events (rowid, tenant_id, embedding, event_type, entity_type, entity_id,"
                   " source, ts_ms, event_id, ts, summary) VALUES (?, 't-a', ?, ?, 'control', 'C-1', 'ARCHER_GRC',"
                   " 1790000000000, ?, '2026-09-21T00:00:00.000Z', ?)",
                   (rowid, struct.pack("4f", *vec), event_type, event_id, text))
    db.close()


async def test_a_schema_1_index_gets_its_keyword_table_from_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_1_index(path)
    index = SqliteVecIndex(str(path), SPEC)
    await index.open()
    hits = await index.search("t-a", _query("restore test failed", None, "keyword"), 5)
    assert [(h.event_id, h.outcome) for h in hits] == [("e2", "failed"), ("e1", "passed")]
    assert hits[0].summary.startswith("Control failed: Quarterly restore test.")
    await index.upsert([_doc("e3", "Passed. Restore test of the mail archive.", _unit(0, 0, 1, 0), outcome="passed")])
    assert (await index.info()).documents == 3
    await index.close()
    db = _connect(str(path))
    assert dict(db.execute("SELECT key, value FROM vector_meta").fetchall())["schema_version"] == "2"
    assert db.execute("SELECT count(*) FROM vector_fts").fetchone()[0] == 3
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "vector_knn" in tables and "vector_events" not in tables  # vectors moved to the L2 table
    db.close()
    again = SqliteVecIndex(str(path), SPEC)  # opening once more changes nothing
    await again.open()
    near = await again.search("t-a", _query("restore test", _unit(1, 0.2, 0, 0), "vector"), 5)
    assert near[0].event_id == "e1" and near[0].similarity == pytest.approx(float(np.dot(_unit(1, 0.2, 0, 0),
                                                                                           _unit(1, 0, 0, 0))))
    assert len(await again.search("t-a", _query("restore test", _unit(1, 1, 1, 0)), 5)) == 3
    await again.close()
