"""Mapping rules: every rule and its edge cases, pure (no Redis, no Cosmos)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.changefeed.rules import (
    RULES,
    Kind,
    Unmappable,
    assessment_phase,
    item_id,
    map_change,
    snapshot,
    validate,
    version_of,
)
from shared.core.events import Action, EventType, Source
from shared.core.ids import uuid7_time_ms

T0 = "2026-11-01T10:00:00Z"
T1 = "2026-11-02T09:30:00Z"
INGESTED = "2026-11-27T00:00:00.000Z"
E = EventType


def doc(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "r-1", "tenantId": "acme", "createdAt": T0, "updatedAt": T0,
        "_lsn": 10, "_ts": 1_793_000_000, "_etag": '"e1"', "_rid": "x", "_self": "y",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def run(kind: Kind, d: dict[str, Any], prior: dict[str, Any] | None = None, container: str = "c",
        started: datetime | None = None):
    validate(kind, d)
    return map_change(kind, container, d, prior, ingested_at=INGESTED, feed_started=started).events


def types(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.eventType.value, e.action.value) for e in events]


def seen(kind: Kind, d: dict[str, Any]) -> dict[str, Any]:
    return snapshot(kind, d)


# ---- risks --------------------------------------------------------------------------------

def test_risk_first_sighting_with_equal_timestamps_is_created() -> None:
    evs = run(Kind.RISKS, doc(status="open", score=12))
    assert types(evs) == [("RISK_CREATED", "CREATE")]
    ev = evs[0]
    assert ev.source is Source.COSMOS_DB and ev.entityType == "risk" and ev.entityId == "r-1"
    assert ev.tenantId == "acme"
    assert ev.data["score"] == 12 and "_rid" not in ev.data and "_lsn" not in ev.data
    assert ev.timestamp == "2026-11-01T10:00:00.000Z"
    assert ev.metadata["changeFeed"]["lsn"] == 10 and "firstSeen" not in ev.metadata


def test_risk_without_timestamps_is_created_on_first_sighting() -> None:
    evs = run(Kind.RISKS, doc(createdAt=None, updatedAt=None))
    assert types(evs) == [("RISK_CREATED", "CREATE")]
    assert evs[0].timestamp == "2026-10-26T07:33:20.000Z"  # from _ts


def test_risk_first_sighting_after_updates_is_updated_first_seen() -> None:
    evs = run(Kind.RISKS, doc(updatedAt=T1, status="open"))
    assert types(evs) == [("RISK_UPDATED", "UPDATE")]
    assert evs[0].metadata["firstSeen"] is True


# ---- creation: the processor's start decides (leases.FeedStarts) -------------------------

STARTED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # the processor started between T0 and T1
T2 = "2026-11-02T09:30:01Z"


def test_created_and_edited_before_the_first_poll_is_created() -> None:
    """The issue's case: created after the processor started, edited before the feed delivered it."""
    evs = run(Kind.RISKS, doc(createdAt=T1, updatedAt=T2, status="open", score=9), started=STARTED)
    assert types(evs) == [("RISK_CREATED", "CREATE")]
    assert "firstSeen" not in evs[0].metadata and evs[0].data["score"] == 9


def test_created_and_moved_on_unseen_is_created_plus_status_changed_from_open() -> None:
    evs = run(Kind.RISKS, doc(createdAt=T1, updatedAt=T2, status="mitigating"), started=STARTED)
    assert types(evs) == [("RISK_CREATED", "CREATE"), ("RISK_STATUS_CHANGED", "STATUS_CHANGE")]
    assert evs[1].data["previousStatus"] == "open" and evs[1].data["status"] == "mitigating"
    assert evs[1].data["previousStatusInferred"] is True
    assert evs[0].correlationId == evs[1].correlationId and evs[0].eventId != evs[1].eventId


def test_created_in_a_later_status_but_never_edited_is_created_only() -> None:
    assert types(run(Kind.RISKS, doc(createdAt=T1, updatedAt=T1, status="accepted"), started=STARTED)) == [
        ("RISK_CREATED", "CREATE")]
    assert types(run(Kind.RISKS, doc(createdAt=T1, updatedAt=T2, status="Open"), started=STARTED)) == [
        ("RISK_CREATED", "CREATE")]


def test_a_document_older_than_the_processor_is_updated_first_seen_even_untouched() -> None:
    for d in (doc(status="open"), doc(updatedAt=T1, status="closed")):  # created T0 < start
        evs = run(Kind.RISKS, d, started=STARTED)
        assert types(evs) == [("RISK_UPDATED", "UPDATE")] and evs[0].metadata["firstSeen"] is True


def test_without_created_at_the_last_write_against_the_start_decides() -> None:
    after, before = int(STARTED.timestamp()) + 5, int(STARTED.timestamp()) - 5
    assert types(run(Kind.RISKS, doc(createdAt=None, _ts=after), started=STARTED)) == [("RISK_CREATED", "CREATE")]
    assert types(run(Kind.RISKS, doc(createdAt=None, _ts=before), started=STARTED)) == [("RISK_UPDATED", "UPDATE")]


def test_control_created_and_tested_unseen_is_created_and_tested() -> None:
    test = {"result": "fail", "testedAt": T2}
    evs = run(Kind.CONTROLS, doc(createdAt=T1, updatedAt=T2, lastTest=test), started=STARTED)
    assert types(evs) == [("CONTROL_CREATED", "CREATE"), ("CONTROL_TESTED", "TEST"), ("CONTROL_FAILED", "TEST")]
    old = run(Kind.CONTROLS, doc(updatedAt=T2, lastTest=test), started=STARTED)
    assert types(old)[0] == ("CONTROL_UPDATED", "UPDATE") and old[0].metadata["firstSeen"] is True


def test_a_later_change_of_a_created_document_is_unaffected_by_the_start() -> None:
    prior = seen(Kind.RISKS, doc(createdAt=T1, updatedAt=T1, status="open"))
    evs = run(Kind.RISKS, doc(createdAt=T1, updatedAt=T2, status="closed", _lsn=11), prior, started=STARTED)
    assert types(evs) == [("RISK_UPDATED", "UPDATE"), ("RISK_STATUS_CHANGED", "STATUS_CHANGE")]
    assert "previousStatusInferred" not in evs[1].data and evs[1].data["previousStatus"] == "open"


def test_risk_update_with_same_status_is_updated_only() -> None:
    prior = seen(Kind.RISKS, doc(status="open"))
    evs = run(Kind.RISKS, doc(updatedAt=T1, status="open", score=20, _lsn=11), prior)
    assert types(evs) == [("RISK_UPDATED", "UPDATE")]
    assert evs[0].timestamp == "2026-11-02T09:30:00.000Z"


def test_risk_status_change_gives_updated_and_status_changed() -> None:
    prior = seen(Kind.RISKS, doc(status="open"))
    evs = run(Kind.RISKS, doc(updatedAt=T1, status="mitigated", title="Vendor risk", _lsn=11), prior)
    assert types(evs) == [("RISK_UPDATED", "UPDATE"), ("RISK_STATUS_CHANGED", "STATUS_CHANGE")]
    sc = evs[1]
    assert sc.data == {"id": "r-1", "title": "Vendor risk", "previousStatus": "open", "status": "mitigated"}
    assert len({e.eventId for e in evs}) == 2
    assert evs[0].correlationId == evs[1].correlationId


def test_risk_status_set_for_the_first_time_is_a_change() -> None:
    prior = seen(Kind.RISKS, doc())
    evs = run(Kind.RISKS, doc(status="open", _lsn=11, updatedAt=T1), prior)
    assert ("RISK_STATUS_CHANGED", "STATUS_CHANGE") in types(evs)
    assert evs[-1].data["previousStatus"] is None


def test_risk_soft_delete_is_deleted_once() -> None:
    prior = seen(Kind.RISKS, doc(status="open"))
    deleted = doc(status="open", isDeleted=True, ttl=3600, updatedAt=T1, _lsn=11)
    evs = run(Kind.RISKS, deleted, prior)
    assert types(evs) == [("RISK_DELETED", "DELETE")]
    # Touching a deleted document again (e.g. a ttl change) says nothing more.
    again = run(Kind.RISKS, {**deleted, "ttl": 60, "_lsn": 12}, seen(Kind.RISKS, deleted))
    assert again == []


def test_risk_deleted_with_status_change_emits_only_deleted() -> None:
    prior = seen(Kind.RISKS, doc(status="open"))
    evs = run(Kind.RISKS, doc(status="closed", isDeleted=True, _lsn=11, updatedAt=T1), prior)
    assert types(evs) == [("RISK_DELETED", "DELETE")]


def test_risk_deleted_before_first_sighting_is_still_deleted() -> None:
    assert types(run(Kind.RISKS, doc(isDeleted=True, ttl=10))) == [("RISK_DELETED", "DELETE")]


def test_is_deleted_must_be_true_not_truthy() -> None:
    assert types(run(Kind.RISKS, doc(isDeleted="yes"))) == [("RISK_CREATED", "CREATE")]


def test_undelete_is_an_update() -> None:
    prior = seen(Kind.RISKS, doc(isDeleted=True, status="open"))
    evs = run(Kind.RISKS, doc(status="open", isDeleted=False, _lsn=11, updatedAt=T1), prior)
    assert types(evs) == [("RISK_UPDATED", "UPDATE")]


# ---- controls -----------------------------------------------------------------------------

def ctl(**kw: Any) -> dict[str, Any]:
    return doc(id="c-1", **kw)


def test_control_created_with_a_passing_test() -> None:
    evs = run(Kind.CONTROLS, ctl(lastTest={"result": "pass", "testedAt": T0}))
    assert types(evs) == [("CONTROL_CREATED", "CREATE"), ("CONTROL_TESTED", "TEST")]
    assert evs[1].data["result"] == "pass" and evs[1].entityType == "control"


def test_control_new_failing_test_gives_updated_tested_failed() -> None:
    prior = seen(Kind.CONTROLS, ctl(lastTest={"result": "pass", "testedAt": T0}))
    evs = run(Kind.CONTROLS, ctl(lastTest={"result": "FAILED", "testedAt": T1}, updatedAt=T1, _lsn=11), prior)
    assert types(evs) == [("CONTROL_UPDATED", "UPDATE"), ("CONTROL_TESTED", "TEST"), ("CONTROL_FAILED", "TEST")]
    assert evs[2].data["result"] == "fail"
    assert evs[2].timestamp == "2026-11-02T09:30:00.000Z"


def test_control_update_without_new_test_is_updated_only() -> None:
    test = {"result": "fail", "testedAt": T0}
    prior = seen(Kind.CONTROLS, ctl(lastTest=test))
    evs = run(Kind.CONTROLS, ctl(lastTest=test, owner="x", updatedAt=T1, _lsn=11), prior)
    assert types(evs) == [("CONTROL_UPDATED", "UPDATE")]


def test_control_retest_same_result_new_time_is_tested_again() -> None:
    prior = seen(Kind.CONTROLS, ctl(lastTest={"result": "pass", "testedAt": T0}))
    evs = run(Kind.CONTROLS, ctl(lastTest={"result": "pass", "testedAt": T1}, updatedAt=T1, _lsn=11), prior)
    assert types(evs) == [("CONTROL_UPDATED", "UPDATE"), ("CONTROL_TESTED", "TEST")]


@pytest.mark.parametrize(("result", "outcome"), [
    ("Ineffective", "fail"), ("Not Effective", "fail"), ("not-effective", "fail"), ("Deficient", "fail"),
    ("FAILURE", "fail"), ("Effective", "pass"), ("Partially Effective", "partially effective"),
])
def test_control_effectiveness_words_are_a_pass_or_a_fail(result: str, outcome: str) -> None:
    evs = run(Kind.CONTROLS, ctl(lastTest={"result": result, "testedAt": T0}))
    failed = [("CONTROL_FAILED", "TEST")] if outcome == "fail" else []
    assert types(evs) == [("CONTROL_CREATED", "CREATE"), ("CONTROL_TESTED", "TEST"), *failed]
    assert evs[1].data["result"] == outcome and evs[1].data["test"]["result"] == result


def test_control_inconclusive_result_is_tested_not_failed() -> None:
    evs = run(Kind.CONTROLS, ctl(lastTest={"result": "inconclusive", "testedAt": T0}))
    assert types(evs)[1:] == [("CONTROL_TESTED", "TEST")]
    assert evs[1].data["result"] == "inconclusive"


def test_control_soft_delete_is_updated_with_delete_action() -> None:
    prior = seen(Kind.CONTROLS, ctl())
    evs = run(Kind.CONTROLS, ctl(isDeleted=True, ttl=60, _lsn=11, updatedAt=T1,
                                 lastTest={"result": "fail", "testedAt": T1}), prior)
    assert types(evs) == [("CONTROL_UPDATED", "DELETE")]


def test_control_malformed_last_test_is_unmappable() -> None:
    with pytest.raises(Unmappable, match="lastTest"):
        validate(Kind.CONTROLS, ctl(lastTest="passed"))
    with pytest.raises(Unmappable, match="lastTest"):
        validate(Kind.CONTROLS, ctl(lastTest={"testedAt": T0}))


# ---- assessments --------------------------------------------------------------------------

def asm(**kw: Any) -> dict[str, Any]:
    return doc(id="a-1", dueDate="2026-12-01", **kw)


def test_assessment_planned_gives_nothing() -> None:
    assert run(Kind.ASSESSMENTS, asm(status="planned")) == []


def test_assessment_started_then_completed() -> None:
    planned = asm(status="planned")
    started = asm(status="in_progress", startedAt=T1, _lsn=11, updatedAt=T1)
    evs = run(Kind.ASSESSMENTS, started, seen(Kind.ASSESSMENTS, planned))
    assert types(evs) == [("ASSESSMENT_STARTED", "STATUS_CHANGE")]
    assert evs[0].data["previousPhase"] == "planned" and evs[0].data["dueDate"] == "2026-12-01"
    assert evs[0].timestamp == "2026-11-02T09:30:00.000Z"
    done = asm(status="completed", completedAt="2026-11-03T08:00:00Z", _lsn=12)
    evs = run(Kind.ASSESSMENTS, done, seen(Kind.ASSESSMENTS, started))
    assert types(evs) == [("ASSESSMENT_COMPLETED", "STATUS_CHANGE")]
    assert evs[0].timestamp == "2026-11-03T08:00:00.000Z"


def test_assessment_still_in_progress_gives_nothing() -> None:
    started = asm(status="in_progress")
    assert run(Kind.ASSESSMENTS, asm(status="IN_PROGRESS", notes="x", _lsn=11), seen(Kind.ASSESSMENTS, started)) == []


def test_assessment_first_seen_completed_is_completed_only() -> None:
    assert types(run(Kind.ASSESSMENTS, asm(status="completed"))) == [("ASSESSMENT_COMPLETED", "STATUS_CHANGE")]


@pytest.mark.parametrize("status", ["in_progress", "In Progress", "in-progress", " IN  PROGRESS ", "InProgress",
                                    "Started", "active"])
def test_assessment_started_whatever_the_spelling(status: str) -> None:
    assert assessment_phase(asm(status=status)) == "in_progress"
    assert types(run(Kind.ASSESSMENTS, asm(status=status))) == [("ASSESSMENT_STARTED", "STATUS_CHANGE")]


def test_assessment_phase_from_timestamps_without_status() -> None:
    assert types(run(Kind.ASSESSMENTS, asm(startedAt=T0))) == [("ASSESSMENT_STARTED", "STATUS_CHANGE")]
    assert types(run(Kind.ASSESSMENTS, asm(startedAt=T0, completedAt=T1))) == [
        ("ASSESSMENT_COMPLETED", "STATUS_CHANGE")]


def test_assessment_reopened_is_started_again() -> None:
    done = asm(status="completed")
    evs = run(Kind.ASSESSMENTS, asm(status="in_progress", _lsn=11), seen(Kind.ASSESSMENTS, done))
    assert types(evs) == [("ASSESSMENT_STARTED", "STATUS_CHANGE")]


def test_assessment_soft_delete_gives_nothing() -> None:
    started = asm(status="in_progress")
    assert run(Kind.ASSESSMENTS, asm(status="completed", isDeleted=True, _lsn=11),
               seen(Kind.ASSESSMENTS, started)) == []


# ---- compliance ---------------------------------------------------------------------------

def cmp_(**kw: Any) -> dict[str, Any]:
    return doc(id="k-1", framework="ISO27001", **kw)


def test_compliance_first_sighting_status_and_gaps() -> None:
    gaps = [{"id": "g1", "requirement": "A.5.1", "severity": "high"},
            {"id": "g2", "requirement": "A.8.2", "status": "resolved"}]
    evs = run(Kind.COMPLIANCE, cmp_(status="partially_compliant", gaps=gaps))
    assert types(evs) == [("COMPLIANCE_STATUS_CHANGED", "STATUS_CHANGE"), ("COMPLIANCE_GAP_DETECTED", "DETECT")]
    assert evs[0].data["previousStatus"] is None and evs[0].data["status"] == "partially_compliant"
    assert evs[1].data["gapId"] == "g1" and evs[1].data["gap"]["requirement"] == "A.5.1"
    assert evs[1].entityType == "complianceRecord"


def test_compliance_only_new_gaps_are_detected_one_event_each() -> None:
    before = cmp_(status="non_compliant", gaps=[{"id": "g1"}])
    after = cmp_(status="non_compliant", gaps=[{"id": "g1"}, {"id": "g2"}, {"id": "g3"}], _lsn=11)
    evs = run(Kind.COMPLIANCE, after, seen(Kind.COMPLIANCE, before))
    assert types(evs) == [("COMPLIANCE_GAP_DETECTED", "DETECT")] * 2
    assert [e.data["gapId"] for e in evs] == ["g2", "g3"]
    assert len({e.eventId for e in evs}) == 2


def test_compliance_status_change_without_gap_change() -> None:
    before = cmp_(status="non_compliant", gaps=[{"id": "g1"}])
    evs = run(Kind.COMPLIANCE, cmp_(status="compliant", gaps=[], _lsn=11), seen(Kind.COMPLIANCE, before))
    assert types(evs) == [("COMPLIANCE_STATUS_CHANGED", "STATUS_CHANGE")]
    assert evs[0].data["previousStatus"] == "non_compliant"


def test_compliance_gap_closed_then_reopened_is_detected_again() -> None:
    closed = cmp_(status="compliant", gaps=[{"id": "g1", "status": "closed"}])
    evs = run(Kind.COMPLIANCE, cmp_(status="compliant", gaps=[{"id": "g1", "status": "open"}], _lsn=11),
              seen(Kind.COMPLIANCE, closed))
    assert [e.data["gapId"] for e in evs] == ["g1"]


def test_compliance_gap_without_id_uses_a_content_hash() -> None:
    gap = {"requirement": "A.9", "severity": "low"}
    assert item_id(gap) == item_id(dict(reversed(list(gap.items()))))
    evs = run(Kind.COMPLIANCE, cmp_(gaps=[gap, gap]))
    assert [e.eventType for e in evs] == [E.COMPLIANCE_GAP_DETECTED]  # listed twice, fires once


def test_compliance_soft_delete() -> None:
    before = cmp_(status="compliant")
    evs = run(Kind.COMPLIANCE, cmp_(status="compliant", isDeleted=True, _lsn=11), seen(Kind.COMPLIANCE, before))
    assert types(evs) == [("COMPLIANCE_STATUS_CHANGED", "DELETE")]
    assert evs[0].data["isDeleted"] is True and evs[0].data["status"] is None


def test_compliance_gaps_must_be_objects() -> None:
    with pytest.raises(Unmappable, match="gaps"):
        validate(Kind.COMPLIANCE, cmp_(gaps="none"))
    with pytest.raises(Unmappable, match="gaps"):
        validate(Kind.COMPLIANCE, cmp_(gaps=["g1"]))


# ---- policies -----------------------------------------------------------------------------

def pol(**kw: Any) -> dict[str, Any]:
    return doc(id="p-1", name="Acceptable use", **kw)


def test_policy_without_violations_gives_nothing() -> None:
    assert run(Kind.POLICIES, pol(status="active", violations=[])) == []


def test_policy_violation_once_per_violation() -> None:
    v1 = {"id": "v1", "severity": "high", "detectedAt": T1, "userId": "u7"}
    evs = run(Kind.POLICIES, pol(violations=[v1]))
    assert types(evs) == [("POLICY_VIOLATION", "DETECT")]
    assert evs[0].data["violationId"] == "v1" and evs[0].data["violation"]["userId"] == "u7"
    assert evs[0].timestamp == "2026-11-02T09:30:00.000Z"
    after = pol(violations=[v1, {"id": "v2"}, {"id": "v3", "status": "dismissed"}], _lsn=11)
    evs = run(Kind.POLICIES, after, seen(Kind.POLICIES, pol(violations=[v1])))
    assert [e.data["violationId"] for e in evs] == ["v2"]


def test_policy_violations_must_be_a_list() -> None:
    with pytest.raises(Unmappable, match="violations"):
        validate(Kind.POLICIES, pol(violations=3))


# ---- common: validation, versions, ids ----------------------------------------------------

@pytest.mark.parametrize("bad, reason", [
    ("not a doc", "JSON object"),
    ({"tenantId": "acme", "_lsn": 1}, "`id`"),
    ({"id": "", "tenantId": "acme", "_lsn": 1}, "`id`"),
    ({"id": "x" * 256, "tenantId": "acme", "_lsn": 1}, "`id`"),
    ({"id": "a", "_lsn": 1}, "tenantId"),
    ({"id": "a", "tenantId": "", "_lsn": 1}, "tenantId"),
    ({"id": "a", "tenantId": "Acme Corp", "_lsn": 1}, "invalid `tenantId`"),
    ({"id": "a", "tenantId": "acme", "status": 3, "_lsn": 1}, "status"),
    ({"id": "a", "tenantId": "acme"}, "no version"),
    ({"id": "a", "tenantId": "acme", "_etag": "e"}, "no version"),
])
def test_unmappable_documents(bad: Any, reason: str) -> None:
    with pytest.raises(Unmappable, match=reason):
        validate(Kind.RISKS, bad)


def test_too_deep_document_is_unmappable() -> None:
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(40):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(Unmappable, match="too large or deep"):
        validate(Kind.RISKS, doc(extra=deep))


def test_version_prefers_lsn_then_etag_with_ts() -> None:
    assert version_of({"_lsn": 7, "_etag": "x", "_ts": 1}).ident == "lsn:7"
    v = version_of({"_etag": '"abc"', "_ts": 5})
    assert (v.order, v.ident) == (5, "etag:abc")


def test_event_ids_are_deterministic_and_depend_on_version_container_and_type() -> None:
    prior = seen(Kind.RISKS, doc(status="open"))
    d = doc(status="closed", updatedAt=T1, _lsn=11)
    a = run(Kind.RISKS, d, prior)
    b = map_change(Kind.RISKS, "c", d, prior, ingested_at="2030-01-01T00:00:00.000Z").events
    assert [e.eventId for e in a] == [e.eventId for e in b]
    newer = run(Kind.RISKS, {**d, "_lsn": 12}, prior)
    assert {e.eventId for e in newer}.isdisjoint({e.eventId for e in a})
    other = run(Kind.RISKS, d, prior, container="risks-eu")
    assert {e.eventId for e in other}.isdisjoint({e.eventId for e in a})
    # Time-prefixed like UUIDv7: the first 48 bits are the document's _ts in ms.
    assert uuid7_time_ms(a[0].eventId) == d["_ts"] * 1000


def test_same_id_in_two_tenants_gives_different_event_ids() -> None:
    a = run(Kind.RISKS, doc(tenantId="acme"))
    b = run(Kind.RISKS, doc(tenantId="globex"))
    assert a[0].eventId != b[0].eventId


def test_unparseable_timestamp_falls_back_to_ts() -> None:
    evs = run(Kind.RISKS, doc(createdAt="yesterday", updatedAt="today"))
    assert types(evs) == [("RISK_CREATED", "CREATE")]  # timestamps unreadable: treated as missing
    assert evs[0].timestamp == "2026-10-26T07:33:20.000Z"


def test_offsetless_timestamp_is_utc() -> None:
    evs = run(Kind.RISKS, doc(createdAt="2026-11-01T10:00:00", updatedAt="2026-11-01T10:00:00"))
    assert evs[0].timestamp == "2026-11-01T10:00:00.000Z"


def test_events_serialise_and_validate_as_events() -> None:
    from shared.core.events import Event

    for ev in run(Kind.CONTROLS, ctl(lastTest={"result": "fail", "testedAt": T0})):
        again = Event.model_validate_json(ev.to_json())
        assert again.eventId == ev.eventId and again.action in (Action.CREATE, Action.TEST)


def test_every_event_type_of_the_catalogue_has_a_rule() -> None:
    covered = {r.event_type for rules in RULES.values() for r in rules}
    wanted = {E.RISK_CREATED, E.RISK_UPDATED, E.RISK_STATUS_CHANGED, E.RISK_DELETED, E.CONTROL_CREATED,
              E.CONTROL_UPDATED, E.CONTROL_TESTED, E.CONTROL_FAILED, E.ASSESSMENT_STARTED,
              E.ASSESSMENT_COMPLETED, E.COMPLIANCE_GAP_DETECTED, E.COMPLIANCE_STATUS_CHANGED, E.POLICY_VIOLATION}
    assert covered == wanted
