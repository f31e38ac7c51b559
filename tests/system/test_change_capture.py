"""Change capture through the local Cosmos server's change feed, as the platform writes (item 4).

The runner polls each container's feed about once a second; writes the platform makes between
two polls reach the app as one change (the latest version). Each step below waits until the
previous one's events are out, except where coalescing is the point.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.system.cosmos import Platform, iso, types_by_entity, wait_events
from tests.system.harness import App, tenant


def _by_type(evs: list[dict[str, Any]], entity: str) -> dict[str, dict[str, Any]]:
    return {e["eventType"] + "/" + e["action"]: e for e in evs if e["entityId"] == entity}


def test_created_and_edited_between_two_polls_is_still_created(app: App) -> None:
    t = tenant("cf")
    p = Platform(app.env)
    now = datetime.now(UTC)
    # What the feed hands over when a create and an edit fall between two polls: one version,
    # createdAt < updatedAt, status already moved on. Written as one document, so it is deterministic.
    p.container("risks").create_item({"id": "r-coalesced", "tenantId": t, "title": "Vendor breach", "score": 12,
                                      "status": "mitigating", "createdAt": iso(now),
                                      "updatedAt": iso(now + timedelta(seconds=1))})
    p.container("controls").create_item({"id": "c-coalesced", "tenantId": t, "name": "Backups", "status": "effective",
                                         "createdAt": iso(now), "updatedAt": iso(now + timedelta(seconds=1)),
                                         "lastTest": {"result": "fail", "testedAt": iso(now)}})
    # And the real thing: create, then edit at once (usually one poll sees only the edit).
    created = p.create("risks", {"id": "r-fast", "tenantId": t, "title": "Phishing", "status": "open", "score": 4})
    p.update("risks", created, score=9)
    evs = wait_events(app, t, 6, source="COSMOS_DB")
    got = types_by_entity(evs)
    assert got["r-coalesced"] == ["RISK_CREATED", "RISK_STATUS_CHANGED"], got
    changed = _by_type(evs, "r-coalesced")["RISK_STATUS_CHANGED/STATUS_CHANGE"]
    assert (changed["data"]["previousStatus"], changed["data"]["status"]) == ("open", "mitigating")
    assert changed["data"]["previousStatusInferred"] is True
    assert got["c-coalesced"] == ["CONTROL_CREATED", "CONTROL_TESTED", "CONTROL_FAILED"], got
    assert got["r-fast"][0] == "RISK_CREATED" and got["r-fast"].count("RISK_CREATED") == 1, got
    assert set(got["r-fast"][1:]) <= {"RISK_UPDATED"}, got  # the edit, when a poll fell in between
    assert not any(e["metadata"].get("firstSeen") for e in evs)


def test_every_container_create_update_status_change_and_soft_delete(app: App) -> None:
    t = tenant("cf")
    p = Platform(app.env)
    docs = {
        "risks": p.create("risks", {"id": "risk-1", "tenantId": t, "title": "Ransomware", "status": "open",
                                    "score": 16}),
        "controls": p.create("controls", {"id": "ctl-1", "tenantId": t, "name": "MFA", "status": "effective",
                                          "lastTest": {"result": "pass", "testedAt": iso()}}),
        "assessments": p.create("assessments", {"id": "asm-1", "tenantId": t, "title": "DORA",
                                                "status": "planned"}),
        "compliance": p.create("compliance", {"id": "iso-1", "tenantId": t, "status": "partially_compliant",
                                              "gaps": [{"id": "g1", "requirement": "A.5.1", "severity": "high"}]}),
        "policies": p.create("policies", {"id": "pol-1", "tenantId": t, "name": "Access",
                                          "violations": [{"id": "v1", "severity": "medium"}]}),
    }
    evs = wait_events(app, t, 6, source="COSMOS_DB")
    assert types_by_entity(evs) == {
        "risk-1": ["RISK_CREATED"], "ctl-1": ["CONTROL_CREATED", "CONTROL_TESTED"],
        "iso-1": ["COMPLIANCE_STATUS_CHANGED", "COMPLIANCE_GAP_DETECTED"], "pol-1": ["POLICY_VIOLATION"],
    }, evs  # a planned assessment is no event
    risk = _by_type(evs, "risk-1")["RISK_CREATED/CREATE"]
    assert risk["source"] == "COSMOS_DB" and risk["entityType"] == "risk" and risk["data"]["score"] == 16
    assert risk["metadata"]["container"] == "risks" and risk["metadata"]["changeFeed"]["lsn"]

    # Updates: a new score, a failing test, a started assessment, a new gap, a second violation.
    docs["risks"] = p.update("risks", docs["risks"], score=20)
    # A control-effectiveness result (README: "not effective" is a fail)
    docs["controls"] = p.update("controls", docs["controls"],
                                lastTest={"result": "Not Effective", "testedAt": iso()})
    # "In Progress" as a UI shows it (README: any case, spaces or hyphens)
    docs["assessments"] = p.update("assessments", docs["assessments"], status="In Progress", startedAt=iso())
    docs["compliance"] = p.update("compliance", docs["compliance"],
                                  gaps=[*docs["compliance"]["gaps"], {"id": "g2", "requirement": "A.8.2"}])
    docs["policies"] = p.update("policies", docs["policies"],
                                violations=[*docs["policies"]["violations"], {"id": "v2", "severity": "high"}])
    evs = wait_events(app, t, 6 + 7, source="COSMOS_DB")
    got = types_by_entity(evs)
    assert got["risk-1"][1:] == ["RISK_UPDATED"]
    assert got["ctl-1"][2:] == ["CONTROL_UPDATED", "CONTROL_TESTED", "CONTROL_FAILED"]
    assert got["asm-1"] == ["ASSESSMENT_STARTED"]
    assert got["iso-1"][2:] == ["COMPLIANCE_GAP_DETECTED"]
    assert got["pol-1"][1:] == ["POLICY_VIOLATION"]

    # Status changes: the risk is closed, the assessment completed, the compliance record compliant.
    docs["risks"] = p.update("risks", docs["risks"], status="closed")
    docs["assessments"] = p.update("assessments", docs["assessments"], status="completed", completedAt=iso())
    docs["compliance"] = p.update("compliance", docs["compliance"], status="compliant", gaps=[])
    evs = wait_events(app, t, 13 + 4, source="COSMOS_DB")
    got = types_by_entity(evs)
    assert got["risk-1"][2:] == ["RISK_UPDATED", "RISK_STATUS_CHANGED"]
    closed = [e for e in evs if e["eventType"] == "RISK_STATUS_CHANGED"][-1]["data"]
    assert (closed["previousStatus"], closed["status"]) == ("open", "closed") and "previousStatusInferred" not in closed
    assert got["asm-1"] == ["ASSESSMENT_STARTED", "ASSESSMENT_COMPLETED"]
    assert got["iso-1"][3:] == ["COMPLIANCE_STATUS_CHANGED"]

    # Soft deletes (isDeleted + ttl): the catalogue's delete event of each container.
    for kind in ("risks", "controls", "compliance"):
        docs[kind] = p.update(kind, docs[kind], isDeleted=True, ttl=86400)
    evs = wait_events(app, t, 17 + 3, source="COSMOS_DB")
    deleted = {(e["entityId"], e["eventType"], e["action"]) for e in evs[17:]}
    assert deleted == {("risk-1", "RISK_DELETED", "DELETE"), ("ctl-1", "CONTROL_UPDATED", "DELETE"),
                       ("iso-1", "COMPLIANCE_STATUS_CHANGED", "DELETE")}, evs[17:]
