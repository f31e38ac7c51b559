"""The change feed's dead letters through the one dead-letter API (GET /deadletters/{t},
POST /deadletters/{t}/replay, audited), as an operator sees them from outside:

- a document the mapping rules cannot map is listed for its tenant at once; one naming no valid
  tenant is listed under `_unmapped`, for admins only; a replay of either answers why it still fails;
- a batch that cannot be processed on its last retry (Redis, the entity state, down through every
  attempt) is dead-lettered, and once Redis is back its replay publishes the change's events.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.data.tables import TableClient, UpdateMode

from tests.system.cosmos import Platform, iso, wait_events
from tests.system.harness import App, Stack, own_stack_and_app, tenant, wait_for


def _dead(app: App, t: str, **kw: Any) -> list[dict[str, Any]]:
    r = app.get(f"/deadletters/{t}", **kw)
    assert r.status_code == 200, r.text
    return r.json()["deadLetters"]


def test_an_unmappable_document_is_dead_lettered_listed_and_replayed_with_its_reason(app: App) -> None:
    t = tenant("dl")
    marker = f"no-tenant-{uuid.uuid4().hex}"
    controls = Platform(app.env).container("controls")
    controls.create_item({"id": "ctl-broken", "tenantId": t, "name": "Backups", "lastTest": "passed",
                          "createdAt": iso(), "updatedAt": iso()})  # lastTest must be an object
    controls.create_item({"id": marker, "name": "nobody's", "createdAt": iso(), "updatedAt": iso()})

    [dead] = wait_for(lambda: _dead(app, t, tenants=[t]), 30, what="the document dead-lettered")
    assert dead["kind"] == "changefeed-document" and dead["container"] == "controls"
    assert "lastTest" in dead["reason"] and dead["document"]["id"] == "ctl-broken"

    # Naming no tenant: under _unmapped, which only an admin may read.
    unmapped = wait_for(lambda: [d for d in _dead(app, "_unmapped", params={"limit": "1000"})
                                 if (d["document"] or {}).get("id") == marker] or None, 30,
                        what="the tenantless document under _unmapped")
    assert "tenantId" in unmapped[0]["reason"]
    assert app.get("/deadletters/_unmapped", tenants=[t]).status_code == 403

    r = app.post(f"/deadletters/{t}/replay", json={"ids": [dead["id"]]}, tenants=[t])
    assert r.status_code == 200 and r.json()["results"][0]["result"] == "failed"
    assert "lastTest" in r.json()["results"][0]["error"]
    [kept] = _dead(app, t, tenants=[t])
    assert kept["attempts"] == 2 and not kept["replayed"]
    r = app.post("/deadletters/_unmapped/replay", json={"ids": [unmapped[0]["id"]]})
    assert r.status_code == 200 and r.json()["results"][0]["result"] == "failed"
    assert app.post("/deadletters/_unmapped/replay", json={}, tenants=[t]).status_code == 403
    audit = app.get(f"/audit/{t}", tenants=[t]).json()["items"]
    assert [a["action"] for a in audit] == ["deadletters.replay"] and audit[0]["after"]["counts"] == {"failed": 1}
    assert app.get("/audit/_unmapped").json()["items"][0]["action"] == "deadletters.replay"


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[Stack, App]]:
    """A stack and an app of this test's own: Redis is stopped, and the app's change-feed retries are
    20 times shorter (the runner's --retry-scale) so the last of the 5 retries comes within seconds."""
    with own_stack_and_app(tmp_path, ("redis", "azurite", "cosmos"), "--retry-scale", "0.05",
                           SYSTEM_PERFORMANCE_EVENTS="false") as running:
        yield running


def test_a_batch_failing_on_its_last_retry_is_dead_lettered_then_replayed(own: tuple[Stack, App]) -> None:
    stack, app = own
    t = tenant("dlr")
    platform = Platform(app.env)
    platform.container("risks")  # the runner created it
    stack.down("redis")  # the entity state (and every Redis destination) is gone for every attempt
    try:
        platform.create("risks", {"id": "r-1", "tenantId": t, "title": "Vendor breach", "status": "open"})
        [dead] = wait_for(lambda: _dead(app, t, tenants=[t]), 60, 0.5, what="the batch dead-lettered")
        assert dead["kind"] == "changefeed-document" and "entity state unavailable" in dead["reason"]
        assert app.get(f"/events/{t}", tenants=[t]).status_code == 503  # Redis is still down
    finally:
        stack.up("redis")
    r = app.post(f"/deadletters/{t}/replay", json={}, tenants=[t])
    assert r.status_code == 200 and r.json()["counts"] == {"processed": 1}, r.text
    [created] = wait_events(app, t, 1, source="COSMOS_DB")
    assert (created["eventType"], created["entityId"]) == ("RISK_CREATED", "r-1")
    assert _dead(app, t, tenants=[t]) == []
    [replayed] = _dead(app, t, tenants=[t], params={"includeReplayed": "true"})
    assert replayed["replayResult"] == "processed"
    assert app.get(f"/audit/{t}", tenants=[t]).json()["items"][0]["action"] == "deadletters.replay"


def _age(stack: Stack, app: App, partition: str, rid: str, days: float) -> None:
    """Make a record look dead-lettered `days` ago (its DeadLetteredAt), as a month of waiting would."""
    with TableClient.from_connection_string(stack.storage, app.env["DEADLETTER_TABLE"]) as table:
        when = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
        aged = {"PartitionKey": partition, "RowKey": rid, "DeadLetteredAt": when.replace("+00:00", "Z")}
        table.update_entity(aged, mode=UpdateMode.MERGE)


def test_dead_letters_are_kept_the_tenants_retention_days(app: App, stack: Stack) -> None:
    """A dead letter holds the tenant's event or document: it is kept retentionDays after it was
    dead-lettered, as the tenant's history is (README 'Delivery guarantees'), then purged by the hourly
    `purge_deadletters` timer (run here through the host's admin API); `_unmapped` keeps the default 30."""
    t = tenant("dlret")
    r = app.put(f"/stream-config/{t}", tenants=[t], json={"retentionDays": 2})
    assert r.status_code == 201, r.text
    risks = Platform(app.env).container("risks")
    for rid in ("risk-old", "risk-new"):
        risks.create_item({"id": rid, "tenantId": t, "status": 3, "createdAt": iso(), "updatedAt": iso()})
    markers = {f"old-{uuid.uuid4().hex}": 40, f"young-{uuid.uuid4().hex}": 10}  # no tenant: _unmapped
    for marker in markers:
        risks.create_item({"id": marker, "status": "open", "createdAt": iso(), "updatedAt": iso()})
    dead = wait_for(lambda: d if len(d := _dead(app, t, tenants=[t])) == 2 else None, 30,
                    what="both documents dead-lettered")
    ids = {d["document"]["id"]: d["id"] for d in dead}

    def tenantless() -> dict[str, str] | None:
        found = {d["document"]["id"]: d["id"] for d in _dead(app, "_unmapped", params={"limit": "1000"})
                 if (d["document"] or {}).get("id") in markers}
        return found if len(found) == 2 else None

    unmapped = wait_for(tenantless, 30, what="the tenantless documents under _unmapped")
    _age(stack, app, t, ids["risk-old"], 3)  # past the tenant's 2 days
    for marker, days in markers.items():
        _age(stack, app, "_unmapped", unmapped[marker], days)

    runs = app.log().count("dead-letter retention:")
    app.run_function("purge_deadletters")
    wait_for(lambda: app.log().count("dead-letter retention:") > runs, 60, what="the dead-letter purge ran")
    assert [d["document"]["id"] for d in _dead(app, t, tenants=[t])] == ["risk-new"]
    left = {d["document"]["id"] for d in _dead(app, "_unmapped", params={"limit": "1000"})} & set(markers)
    assert left == {m for m, days in markers.items() if days < 30}
