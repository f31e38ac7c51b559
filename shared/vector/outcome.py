"""What an event says happened (failed, passed, overdue ...) and which outcome a question asks about.

An event's outcome comes from its type first (CONTROL_FAILED is a failure whatever its data says),
then from its status / result words. It leads the rendered text (shared.vector.text) and is stored
beside the document, so a search can boost the events whose outcome the question names
(shared.vector.fusion). Both rules are tables here, documented in docs/vector-search.md.
"""
from __future__ import annotations

import re
FAILED = "failed"
PASSED = "passed"
OVERDUE = "overdue"
VIOLATED = "violated"
GAP = "gap"
FINDINGS = "findings"
MITIGATED = "mitigated"
NONE = "none"  # stored for an event without one of the outcomes above (Azure: `outcome eq null` = not yet migrated)

OUTCOMES = (FAILED, PASSED, OVERDUE, VIOLATED, GAP, FINDINGS, MITIGATED)

# The words the rendered text starts with, per outcome.
LEAD_WORDS = {
    FAILED: "Failed", PASSED: "Passed", OVERDUE: "Overdue", VIOLATED: "Violated", GAP: "Gap found",
    FINDINGS: "Findings raised", MITIGATED: "Mitigated",
}

BY_EVENT_TYPE = {
    "CONTROL_FAILED": FAILED,
    "SYSTEM_ERROR": FAILED,
    "ASSESSMENT_OVERDUE": OVERDUE,
    "POLICY_VIOLATION": VIOLATED,
    "COMPLIANCE_GAP_DETECTED": GAP,
}

# Status / result words, tried in this order (the first that matches wins): "non-compliant" must be
# read before "compliant", "not effective" before "effective", "missed" before "completed".
_STATUS_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (FAILED, re.compile(r"\b(fail\w*|ineffective|not effective|non-?compliant|noncompliant|material weakness|"
                        r"significant deficiency|deficien\w*|missed|error)\b")),
    (FINDINGS, re.compile(r"\b(findings?|exceptions?|nonconformit\w*|non-conformit\w*|gaps?|qualified)\b")),
    (OVERDUE, re.compile(r"\b(overdue|late|past due)\b")),
    (MITIGATED, re.compile(r"\b(mitigated|remediated|resolved|closed|fixed)\b")),
    (PASSED, re.compile(r"\b(pass\w*|effective|success\w*|compliant|certified|approved|no exceptions|"
                        r"within tolerance)\b")),
)


def event_outcome(event_type: str, status: str | None) -> str | None:
    """The outcome of an event from its type and its status/result text; None when it states none."""
    by_type = BY_EVENT_TYPE.get(event_type)
    if by_type:
        return by_type
    text = (status or "").lower()
    for outcome, pattern in _STATUS_RULES:
        if pattern.search(text):
            return outcome
    return None


_STATUS_LINE = re.compile(r"^(?:Status|Previous status): (?:.* -> )?(?P<status>.*?)\.?$", re.MULTILINE)


def outcome_from_text(event_type: str, text: str) -> str | None:
    """The outcome of a document indexed before outcomes were stored (its `Status:` line and type)."""
    match = _STATUS_LINE.search(text)
    return event_outcome(event_type, match["status"] if match else None)


# Words of a question that name an outcome, and the outcomes each one asks for. Matched on whole
# words of the lower-cased question; phrases before single words.
QUERY_OUTCOME_WORDS: dict[str, tuple[str, ...]] = {
    # failure
    "failed": (FAILED, FINDINGS), "failing": (FAILED, FINDINGS), "fails": (FAILED, FINDINGS),
    "fail": (FAILED, FINDINGS), "failure": (FAILED, FINDINGS), "failures": (FAILED, FINDINGS),
    "ineffective": (FAILED, FINDINGS), "not effective": (FAILED, FINDINGS), "broken": (FAILED,),
    "did not work": (FAILED,), "didn't work": (FAILED,), "not working": (FAILED,), "unsuccessful": (FAILED,),
    "deficiency": (FAILED, FINDINGS), "deficiencies": (FAILED, FINDINGS), "exception": (FAILED, FINDINGS),
    "exceptions": (FAILED, FINDINGS), "findings": (FINDINGS, FAILED), "nonconformities": (FINDINGS, FAILED),
    "nonconformity": (FINDINGS, FAILED),
    # pass
    "passed": (PASSED,), "passing": (PASSED,), "passes": (PASSED,), "pass": (PASSED,),
    "effective": (PASSED,), "successful": (PASSED,), "succeeded": (PASSED,), "no exceptions": (PASSED,),
    # overdue
    "overdue": (OVERDUE,), "late": (OVERDUE,), "past due": (OVERDUE,), "behind schedule": (OVERDUE,),
    "delayed": (OVERDUE,),
    # violation
    "violation": (VIOLATED,), "violations": (VIOLATED,), "violated": (VIOLATED,), "violating": (VIOLATED,),
    "breach of policy": (VIOLATED,), "against policy": (VIOLATED,),
    # gap
    "gap": (GAP,), "gaps": (GAP,), "missing": (GAP,), "non-compliant": (GAP, FAILED),
    "noncompliant": (GAP, FAILED), "non-compliance": (GAP, FAILED), "noncompliance": (GAP, FAILED),
    "not compliant": (GAP, FAILED),
    # mitigated
    "mitigated": (MITIGATED,), "remediated": (MITIGATED,), "resolved": (MITIGATED,), "fixed": (MITIGATED,),
}
_QUERY_WORDS = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(w) for w in sorted(QUERY_OUTCOME_WORDS, key=len, reverse=True))
    + r")(?![\w-])"
)


def outcomes_named(query: str) -> frozenset[str]:
    """The outcomes a question asks about ("failed MFA checks" -> {failed, findings}); empty when none."""
    found: set[str] = set()
    for match in _QUERY_WORDS.finditer(query.lower()):
        found.update(QUERY_OUTCOME_WORDS[match.group(1)])
    return frozenset(found)


def lead_words(outcome: str | None) -> str | None:
    return LEAD_WORDS.get(outcome or "")


def stored(outcome: str | None) -> str:
    """The value kept in an index: an outcome, or `none`."""
    return outcome or NONE
