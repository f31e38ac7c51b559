"""The GRC vocabulary (shared/vector/grc_synonyms.txt): its format, the keyword query a question
becomes, and that the expansion finds events written in the other form -- on the real FTS5 index."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.vector.base import IndexSpec, SearchQuery, VectorDoc
from shared.vector.sqlite_index import SqliteVecIndex
from shared.vector.vocabulary import (
    MAX_CLAUSES,
    MAX_TERMS_PER_RULE,
    gloss,
    keyword_query,
    load_rules,
    solr_synonyms,
    words,
)

SPEC = IndexSpec("test-model", 4)


def test_the_file_keeps_its_rules() -> None:
    rules = load_rules()
    assert len(rules) >= 100
    assert all(2 <= len(r.terms) <= MAX_TERMS_PER_RULE for r in rules)
    by_term: dict[tuple[str, ...], int] = {}
    for rule in rules:
        for term in rule.terms:
            key = tuple(words(term))
            assert by_term.setdefault(key, rule.line) == rule.line or key in {tuple(words(t)) for t in rule.terms}
    must = {"soc 2": "service organisation controls report", "dpia": "data protection impact assessment",
            "sox": "sarbanes-oxley", "sod": "segregation of duties", "rto": "recovery time objective",
            "rpo": "recovery point objective", "mfa": "multi-factor authentication", "kyc": "know your customer"}
    for short, long in must.items():
        assert any(short in r.terms and long in r.terms for r in rules), short


@pytest.mark.parametrize(("line", "error"), [
    ("a => b", "'=>'"),
    ("lonely", "2 to 20"),
    (", ".join(f"t{i}" for i in range(21)), "2 to 20"),
    ("SOC 2, soc2", "lower-case"),
    ("a;b, c", "lower-case"),
])
def test_a_broken_rule_is_refused_with_its_line(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "syn.txt"
    path.write_text(f"# comment\n\nok, fine\n{line}\n")
    with pytest.raises(ValueError, match=error) as info:
        load_rules(path)
    assert "syn.txt:4" in str(info.value)


def test_a_term_in_two_rules_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "syn.txt"
    path.write_text("sar, suspicious activity report\nsar, subject access request\n")
    with pytest.raises(ValueError, match="already in the rule on line 1"):
        load_rules(path)


def test_azure_gets_the_rules_without_comments() -> None:
    text = solr_synonyms()
    lines = text.splitlines()
    assert len(lines) == len(load_rules())
    assert not any(line.startswith("#") or not line.strip() for line in lines)
    assert "soc 2, soc2, soc ii, service organisation controls report" in text


def test_a_question_expands_to_whole_rules() -> None:
    q = keyword_query("Show me SoD failures in SAP")
    clauses = [{" ".join(p) for p in c} for c in q.clauses]
    assert {"sod", "segregation of duties", "separation of duties"} <= clauses[0]
    assert clauses[1:] == [{"failures"}, {"sap"}]  # "show", "me", "in" are stop words
    # Long form in the question: the same rule, matched by its longest term first.
    q2 = keyword_query("segregation of duties conflicts")
    assert {" ".join(p) for p in q2.clauses[0]} == clauses[0]
    # Plurals fold for matching: DSARs is a DSAR.
    assert "data subject access request" in keyword_query("overdue DSARs").fts5()


def test_the_fts5_expression_never_carries_the_questions_operators() -> None:
    expr = keyword_query('NEAR(a b) "quoted" OR AND NOT * col:term ^2 -x').fts5()
    for part in expr.split(" OR "):
        assert part.startswith('"') and part.endswith('"') and '"' not in part[1:-1]
    assert keyword_query("the of and a 2 x").fts5() == ""  # nothing left to match on
    long = keyword_query(" ".join(f"word{i}" for i in range(200)))
    assert len(long.clauses) == MAX_CLAUSES


def test_gloss_spells_out_acronyms_for_the_model() -> None:
    assert gloss("SoD failures in SAP") == "SoD failures in SAP (segregation of duties)"
    assert gloss("overdue DPIA") == "overdue DPIA (data protection impact assessment)"
    assert gloss("vendor access review") == "vendor access review"  # no short vocabulary term


def _doc(event_id: str, text: str, tenant: str = "t-a") -> VectorDoc:
    return VectorDoc(event_id=event_id, tenant_id=tenant, event_type="COMPLIANCE_GAP_DETECTED", source="ARCHER_GRC",
                     timestamp="2026-10-01T00:00:00Z", text=text, vector=[0.5, 0.5, 0.5, 0.5], model_id="test-model")


async def test_keyword_search_finds_the_other_form(tmp_path: Path) -> None:
    index = SqliteVecIndex(str(tmp_path / "v.db"), SPEC)
    await index.open()
    await index.upsert([
        _doc("dpia", "Gap found. No data protection impact assessment before launching employee monitoring."),
        _doc("soc", "Findings raised. Service organization controls report issued with a qualified opinion."),
        _doc("noise", "Risk created. Office relocation delayed by the landlord."),
    ])

    async def keyword(question: str) -> list[str]:
        query = SearchQuery(text=question, mode="keyword", keywords=keyword_query(question).fts5())
        return [h.event_id for h in await index.search("t-a", query, 5)]

    assert await keyword("DPIA not done") == ["dpia"]
    assert await keyword("SOC 2 qualified") == ["soc"]
    assert await keyword("SOC2 report") == ["soc"]
    # Without the vocabulary the acronym matches nothing.
    assert await keyword("DPIA") == ["dpia"]
    plain = SearchQuery(text="DPIA", mode="keyword", keywords='"dpia"')
    assert await index.search("t-a", plain, 5) == []
    await index.close()
