"""Promises of docs/change-capture.md, docs/vector-search.md and docs/architecture.md that no other system
test proved, checked from outside the running app (HTTP, the local Cosmos server, Redis and the queues as
an operator sees them, the runner's admin API and log):

Change capture, on the session app:
- the mapping rules' remaining words: a test result `failed`/`failure`/`ineffective` is a failure; a new
  `testedAt` with the same result is a new test, an edit without one is not; assessment phases from
  `inprogress`, `started`, `complete`, `closed` and `completedAt` alone (COMPLETED also on a first
  sighting); a gap identified by `requirementId`, else by a hash of its content (stable across
  versions); a compliance record without `status` gives no status event, a soft-deleted one gives
  `status: null`; `entityType` assessment, complianceRecord, policy; `timestamp` from `completedAt`,
  `startedAt`, a violation's `detectedAt`; derived events carry the summary (`id`, `name`, `status`);
- documents that cannot be mapped (an invalid `tenantId`, an `id` over 255 characters, nested too deep)
  are dead-lettered at once (attempt 1), never published;
- change-feed events go through the tenant's filters (same pipeline as the REST API) and count in its
  metrics;
- the Redis keys' lifetimes: the entity snapshot `grc:{t}:cf:s:<kind>:<id>` CHANGEFEED_STATE_TTL_DAYS
  (400), a change-feed event's idempotency claim CHANGEFEED_DEDUP_TTL_HOURS (168), a client's
  IDEMPOTENCY_WINDOW_SECONDS, the Redis destination's marker `grc:{t}:dlv:<eventId>` `dedupeSeconds`.

Change capture, on an app of this module's own (settings of its own, documents written before it ever ran):
- a first deployment: leases start from the beginning, documents older than the processor are
  backfilled (UPDATED / first-sighting events with `metadata.firstSeen: true`), in batches of at most 100;
  every COSMOS_* name setting is honoured; the lease store's marker is named
  `{prefix}{host}_{database _rid}_{container _rid}.info`; CHANGEFEED_STATE_TTL_DAYS and
  CHANGEFEED_DEDUP_TTL_HOURS set the keys' lifetimes;
- without a marker, the document's own times decide (`createdAt == updatedAt` is a creation);
- OVERDUE_SCHEDULE is the timer's schedule; a date-only `dueDate` is due at the end of that day (UTC); a
  moved due date is overdue again (a new event id); due dates older than CHANGEFEED_STATE_TTL_DAYS are
  not announced, and the overdue claim is kept that long;
- a batch that cannot be processed is retried with exponential backoff from 2 s (the runner's
  `--retry-scale` shortens it here), 5 retries, then dead-lettered with attempts 6, nothing published.

Vector search:
- the text template (order of the parts, outcome lead words, keys matched case-insensitively, first
  present wins, at most 8 changes and 8 other fields, ids and times and `metadata` left out, the bounds)
  and the outcome of each event type / status word, as the hit's `summary` and `outcome`;
- the outcomes a question names; the fusion formula (K 60, keyword 1.0, vector 0.5, outcome 0.5),
  `similarity` null without the vector ranking; stemming and plural folding of the vocabulary;
- one document per (tenant, event): a re-delivered message replaces it; a message item without
  `outcome` gets it from the text's `Status:` line; `entityType` parameter rules;
- the destination packs a publish into as few messages of at most 48 KiB as fit (`ref` =
  `VECTOR_QUEUE/messageId`); an index built for another model is refused: search answers 503 with
  Retry-After and the indexer's messages end in `<VECTOR_QUEUE>-poison` after 5 attempts.
"""
from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from azure.cosmos import CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from tests.system.cosmos import FEED_TIMEOUT, Platform, events, iso, settled, types_by_entity, wait_events
from tests.system.harness import App, Stack, app_env, own_stack, start_app, tenant, wait_for

INDEX_TIMEOUT = 90.0


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _ttl(stack: Stack, key: str) -> int:
    with stack.redis() as r:
        return int(r.ttl(key))


def _keys(stack: Stack, pattern: str) -> list[str]:
    with stack.redis() as r:
        return [k.decode() for k in r.scan_iter(match=pattern, count=1000)]


def _dead(app: App, t: str, **params: str) -> list[dict[str, Any]]:
    """The tenant's dead letters, as the tenant (`_unmapped`: as an admin, the only callers it answers)."""
    r = app.get(f"/deadletters/{t}", params={"limit": "1000", **params},
                tenants=None if t == "_unmapped" else [t])
    assert r.status_code == 200, r.text
    return list(r.json()["deadLetters"])


def _assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    if field is not None:
        assert any(e.get("field") == field for e in body.get("errors", [])), body
    return body


# ==== Change capture on the session app ===================================================================

def test_mapping_rules_in_the_other_words_and_the_derived_events_fields(app: App) -> None:
    """docs/change-capture.md "Document conventions", "Mapping rules" and the events' shape:
    - controls: `result` "pass" | "fail" (any case; also ... failed, failure, ineffective ...);
      CONTROL_TESTED when `lastTest` (`testedAt` + `result`) differs from the last known;
    - assessments: `in_progress` (also ... inprogress, started ...), `completed` (also complete, done,
      closed); any case; without `status`, `completedAt`/`startedAt` decide; ASSESSMENT_COMPLETED when
      the phase becomes completed (a first sighting included: the phases fire on it anyway);
    - compliance: COMPLIANCE_STATUS_CHANGED 'first sighting with a `status`'; a soft delete 'gives it with
      action DELETE and `status: null`'; a gap identified by its `id` (else `gapId`/`violationId`/
      `requirementId`, else a hash of its content), one per open gap not open at the last sighting;
    - 'derived events a summary (`id`, `title`/`name`, `status`, ...) plus their own fields'; `entityType`
      is ... assessment, complianceRecord or policy; `timestamp` from `lastTest.testedAt`, `startedAt`,
      `completedAt`, `detectedAt`."""
    t = tenant("words")
    p = Platform(app.env)
    kinds = ("controls", "assessments", "compliance", "policies")
    now = datetime.now(UTC).replace(microsecond=0)
    tested, done_at, started_at = iso(now - timedelta(hours=5)), iso(now - timedelta(hours=2)), \
        iso(now - timedelta(hours=1))
    docs: dict[str, dict[str, Any]] = {}
    for cid, result in (("c-failed", "FAILED"), ("c-failure", "Failure"), ("c-ineffective", "ineffective")):
        test = {"result": result, "testedAt": tested}
        docs[cid] = p.create("controls", {"id": cid, "tenantId": t, "name": f"Backups {cid}",
                                          "status": "active", "lastTest": test})
    docs["c-retest"] = p.create("controls", {"id": "c-retest", "tenantId": t, "name": "MFA",
                                             "owner": "secops",
                                             "lastTest": {"result": "pass", "testedAt": tested}})
    for aid, fields in (("a-inprogress", {"status": "inprogress"}), ("a-started", {"status": "Started"}),
                        ("a-complete", {"status": "complete", "completedAt": done_at}),
                        ("a-closed", {"status": "Closed"}), ("a-completed-at", {"completedAt": done_at}),
                        ("a-planned", {"status": "planned"})):
        docs[aid] = p.create("assessments", {"id": aid, "tenantId": t, "title": f"Audit {aid}", **fields})
    hashed_gap = {"requirement": "A.9.2", "severity": "high"}
    docs["cmp-req"] = p.create("compliance", {"id": "cmp-req", "tenantId": t, "status": "non_compliant",
                                              "gaps": [{"requirementId": "REQ-9", "requirement": "A.1",
                                                        "severity": "low"}, hashed_gap]})
    docs["cmp-nostatus"] = p.create("compliance", {"id": "cmp-nostatus", "tenantId": t, "framework": "ISO"})
    violation = {"id": "v1", "severity": "high", "detectedAt": "2026-03-04T05:06:07+02:00"}
    docs["pol"] = p.create("policies", {"id": "pol", "tenantId": t, "name": "Access",
                                        "violations": [violation]})

    first = settled(app, p, t, kinds)
    failed_three = ["CONTROL_CREATED", "CONTROL_TESTED", "CONTROL_FAILED"]
    assert types_by_entity(first) == {
        "c-failed": failed_three, "c-failure": failed_three, "c-ineffective": failed_three,
        "c-retest": ["CONTROL_CREATED", "CONTROL_TESTED"],
        "a-inprogress": ["ASSESSMENT_STARTED"], "a-started": ["ASSESSMENT_STARTED"],
        "a-complete": ["ASSESSMENT_COMPLETED"], "a-closed": ["ASSESSMENT_COMPLETED"],
        "a-completed-at": ["ASSESSMENT_COMPLETED"],
        "cmp-req": ["COMPLIANCE_STATUS_CHANGED", "COMPLIANCE_GAP_DETECTED", "COMPLIANCE_GAP_DETECTED"],
        "pol": ["POLICY_VIOLATION"],
    }, first
    by = {(e["entityId"], e["eventType"]): e for e in first}
    for cid in ("c-failed", "c-failure", "c-ineffective"):
        failed = by[(cid, "CONTROL_FAILED")]
        assert failed["data"]["result"] == "fail" and failed["action"] == "TEST", failed
        assert (failed["data"]["id"], failed["data"]["name"], failed["data"]["status"]) == (
            cid, f"Backups {cid}", "active"), failed["data"]
        assert failed["data"]["test"] == docs[cid]["lastTest"], failed["data"]
        assert _instant(failed["timestamp"]) == _instant(tested), failed
    for aid in ("a-complete", "a-closed", "a-completed-at"):
        completed = by[(aid, "ASSESSMENT_COMPLETED")]
        assert (completed["entityType"], completed["action"]) == ("assessment", "STATUS_CHANGE"), completed
        assert completed["data"]["id"] == aid and completed["data"]["title"] == f"Audit {aid}", completed
    assert _instant(by[("a-complete", "ASSESSMENT_COMPLETED")]["timestamp"]) == _instant(done_at)
    assert _instant(by[("a-completed-at", "ASSESSMENT_COMPLETED")]["timestamp"]) == _instant(done_at)
    gaps = [e for e in first if e["eventType"] == "COMPLIANCE_GAP_DETECTED"]
    assert all(e["entityType"] == "complianceRecord" for e in gaps), gaps
    gap_ids = {e["data"]["gap"].get("requirementId", "hashed"): e["data"]["gapId"] for e in gaps}
    assert gap_ids["REQ-9"] == "REQ-9", gap_ids
    # The hashed one: an id of its own, none of the gap's values.
    assert gap_ids["hashed"] and gap_ids["hashed"] not in {"A.9.2", "high", "REQ-9"}, gap_ids
    [violated] = [e for e in first if e["eventType"] == "POLICY_VIOLATION"]
    assert violated["entityType"] == "policy" and violated["data"]["violation"] == violation, violated
    assert violated["data"]["violationId"] == "v1" and violated["data"]["name"] == "Access", violated
    assert _instant(violated["timestamp"]) == datetime(2026, 3, 4, 3, 6, 7, tzinfo=UTC), violated

    # A new testedAt with the same result is a new test; the planned assessment starts; the compliance record
    # is saved again with the same open gaps (the hashed gap is the same gap: not detected again).
    docs["c-retest"] = p.update("controls", docs["c-retest"],
                                lastTest={"result": "pass", "testedAt": started_at})
    docs["a-planned"] = p.update("assessments", docs["a-planned"], status="IN PROGRESS", startedAt=started_at)
    docs["cmp-req"] = p.update("compliance", docs["cmp-req"], notes="reviewed by the DPO")
    second = settled(app, p, t, kinds)[len(first):]
    assert types_by_entity(second) == {"c-retest": ["CONTROL_UPDATED", "CONTROL_TESTED"],
                                       "a-planned": ["ASSESSMENT_STARTED"]}, second
    restarted = next(e for e in second if e["eventType"] == "ASSESSMENT_STARTED")
    assert _instant(restarted["timestamp"]) == _instant(started_at), restarted
    assert restarted["data"]["previousPhase"] == "planned", restarted["data"]

    # An edit that leaves lastTest alone is no test; the compliance record soft-deleted: status null.
    docs["c-retest"] = p.update("controls", docs["c-retest"], owner="itops")
    docs["cmp-req"] = p.update("compliance", docs["cmp-req"], isDeleted=True, ttl=86400)
    third = settled(app, p, t, kinds)[len(first) + len(second):]
    assert [(e["entityId"], e["eventType"], e["action"]) for e in third if e["entityId"] == "c-retest"] == [
        ("c-retest", "CONTROL_UPDATED", "UPDATE")], third
    [gone] = [e for e in third if e["entityId"] == "cmp-req"]
    assert (gone["eventType"], gone["action"]) == ("COMPLIANCE_STATUS_CHANGED", "DELETE"), gone
    assert "status" in gone["data"] and gone["data"]["status"] is None, gone["data"]
    assert len(third) == 2, third


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth):
        node = {"n": node}
    return node


def test_documents_that_cannot_be_mapped_are_dead_lettered_at_once_and_never_published(app: App) -> None:
    """docs/change-capture.md: `id` 'the entity id (string, up to 255 characters)'; `tenantId` '3-64 of
    `a-z 0-9 -`'; 'Documents that cannot be mapped (... no or invalid `id`/`tenantId`, ... too large or
    deep ...) are dead-lettered with their reason at once, never dropped'; kind `changefeed-document`
    (RowKey from the container and a hash of the document); 'Documents that name no valid tenant are kept
    under the reserved partition `_unmapped`'."""
    t = tenant("unmap")
    risks = Platform(app.env).container("risks")
    container = app.env["COSMOS_RISKS_CONTAINER"]
    bad_tenant_id = f"r-bad-tenant-{uuid.uuid4().hex[:8]}"
    expected = {"r-deep": "too large or deep"}
    risks.create_item({"id": "r-deep", "tenantId": t, "title": "Deep", "status": "open", "createdAt": iso(),
                       "updatedAt": iso(), "detail": _nested(40)})
    long_id = "r" * 256
    try:
        risks.create_item({"id": long_id, "tenantId": t, "title": "Long id", "status": "open",
                           "createdAt": iso(), "updatedAt": iso()})
        expected[long_id] = "invalid `id`"
    except CosmosHttpResponseError:  # a server that enforces Cosmos' own limit: nothing to check then
        pass
    risks.create_item({"id": bad_tenant_id, "tenantId": "Not_A_Tenant", "title": "Odd", "status": "open",
                       "createdAt": iso(), "updatedAt": iso()})
    risks.create_item({"id": "r-fine", "tenantId": t, "title": "Fine", "status": "open", "createdAt": iso(),
                       "updatedAt": iso()})

    dead = wait_for(lambda: d if len(d := _dead(app, t)) == len(expected) else None, FEED_TIMEOUT, 0.5,
                    what="the unmappable documents dead-lettered")
    for d in dead:
        doc_id = d["document"]["id"]
        assert expected[doc_id] in d["reason"], d
        assert (d["kind"], d["container"], d["attempts"]) == ("changefeed-document", container, 1), d
        assert container in d["id"] and doc_id not in d["id"], d["id"]
    unmapped = wait_for(lambda: [d for d in _dead(app, "_unmapped") if (d["document"] or {}).get("id")
                                 == bad_tenant_id], FEED_TIMEOUT, 0.5,
                        what="the invalid tenant under _unmapped")
    assert "invalid `tenantId`" in unmapped[0]["reason"] and unmapped[0]["attempts"] == 1, unmapped
    # The batch's valid document is published; none of the others.
    evs = wait_events(app, t, 1, FEED_TIMEOUT, source="COSMOS_DB")
    assert [(e["entityId"], e["eventType"]) for e in evs] == [("r-fine", "RISK_CREATED")], evs


def test_change_feed_events_go_through_the_tenants_filters_and_metrics(app: App) -> None:
    """docs/change-capture.md: change-feed events go 'through the same pipeline as the REST API (tenant
    filters, destinations, metrics)'; a filtered event is settled ('delivered or filtered'), not retried or
    dead-lettered."""
    t = tenant("cfflt")
    app.configure(t, {"filters": [{"eventTypes": ["RISK_STATUS_CHANGED"],
                                   "conditions": {"data.status": "closed"}}]})
    p = Platform(app.env)
    doc = p.create("risks", {"id": "r-1", "tenantId": t, "title": "Vendor breach", "status": "open"})
    doc = p.update("risks", doc, status="mitigating")
    p.update("risks", doc, status="closed")
    [kept] = wait_events(app, t, 1, FEED_TIMEOUT, source="COSMOS_DB")  # the last change: all before are done
    assert (kept["eventType"], kept["data"]["status"]) == ("RISK_STATUS_CHANGED", "closed"), kept
    assert [e["eventType"] for e in events(app, t, source="COSMOS_DB")] == ["RISK_STATUS_CHANGED"]

    def counted() -> dict[str, Any] | None:
        window: dict[str, Any] = app.get(f"/metrics/{t}", tenants=[t]).json()["windows"]["1h"]
        return window if window["accepted"] >= 1 and window["filtered"] >= 1 else None

    window = wait_for(counted, 30, what="the change's events counted in the tenant's metrics")
    assert window["accepted"] == 1 and window["filtered"] >= 1, window
    assert _dead(app, t) == []


def test_state_claim_and_marker_keys_live_as_long_as_their_settings_say(app: App, stack: Stack) -> None:
    """docs/change-capture.md "Mapping rules": the snapshot `grc:{tenant}:cf:s:<kind>:<id>` is 'kept
    `CHANGEFEED_STATE_TTL_DAYS`, 400'; "Idempotency claims": a change-feed event's claim
    `grc:{tenant}:idem:<eventId>` 'delivered or filtered → the status kept `CHANGEFEED_DEDUP_TTL_HOURS`
    (168)'. docs/architecture.md "Dedupe": a client's eventId is deduplicated 'within the window'
    (IDEMPOTENCY_WINDOW_SECONDS); the Redis destination marker `grc:{t}:dlv:<eventId>` is kept
    `dedupeSeconds`."""
    t = tenant("ttl")
    state_ttl = int(app.env["CHANGEFEED_STATE_TTL_DAYS"]) * 86_400
    claim_ttl = int(app.env["CHANGEFEED_DEDUP_TTL_HOURS"]) * 3_600
    assert (state_ttl, claim_ttl) == (400 * 86_400, 168 * 3_600), "the documented local defaults"
    Platform(app.env).create("risks", {"id": "r-ttl", "tenantId": t, "title": "Fraud", "status": "open"})
    [created] = wait_events(app, t, 1, FEED_TIMEOUT, source="COSMOS_DB")
    snapshot = f"grc:{{{t}}}:cf:s:risks:r-ttl"
    assert state_ttl - 120 < _ttl(stack, snapshot) <= state_ttl, snapshot
    claim = f"grc:{{{t}}}:idem:{created['eventId']}"
    settled = wait_for(lambda: (x if (x := _ttl(stack, claim)) > 3600 else None), 30,
                       what="the change's claim settled")
    assert claim_ttl - 120 < settled <= claim_ttl, settled

    event_id = f"ev-{uuid.uuid4().hex[:12]}"
    r = app.post("/events", json={"tenantId": t, "eventId": event_id, "eventType": "RISK_UPDATED",
                                  "source": "BACKEND_API", "action": "UPDATE", "entityId": "r-ttl",
                                  "data": {"score": 3}}, tenants=[t])
    assert r.status_code == 201, r.text
    window = int(app.env["IDEMPOTENCY_WINDOW_SECONDS"])
    client = wait_for(lambda: (x if (x := _ttl(stack, f"grc:{{{t}}}:idem:{event_id}")) > 600 else None), 30,
                      what="the client's claim settled")
    assert window - 120 < client <= window, client
    config = app.get(f"/stream-config/{t}", tenants=[t]).json()
    dedupe = int(config["destinations"][0]["config"]["dedupeSeconds"])
    marker = _ttl(stack, f"grc:{{{t}}}:dlv:{event_id}")
    assert dedupe - 120 < marker <= dedupe, (marker, dedupe)


# ==== Change capture on an app of this module's own ======================================================

OWN_DATABASE = "grc-audit"
OWN_CONTAINERS = {"risks": "risk-register", "controls": "control-library", "assessments": "assessment-plans",
                  "compliance": "compliance-records", "policies": "policy-register"}
OWN_LEASES = "feed-leases"
OWN_STATE_TTL_DAYS = 3
OWN_DEDUP_TTL_HOURS = 5
OWN_VECTOR_QUEUE = "vec-audit"
RETRY_SCALE = 0.1  # the change-feed retry policy's delays, tenfold shorter (the runner's --retry-scale)
BACKFILLED_RISKS = 230
OTHER_MODEL = "another-embedding-model"


@dataclass
class Own:
    stack: Stack
    app: App
    backfill_tenant: str
    probe_event_id: str


def _own_settings() -> dict[str, str]:
    out = {f"COSMOS_{kind.upper()}_CONTAINER": name for kind, name in OWN_CONTAINERS.items()}
    out.update(COSMOS_DB_DATABASE=OWN_DATABASE, COSMOS_LEASE_CONTAINER=OWN_LEASES,
               CHANGEFEED_STATE_TTL_DAYS=str(OWN_STATE_TTL_DAYS),
               CHANGEFEED_DEDUP_TTL_HOURS=str(OWN_DEDUP_TTL_HOURS),
               OVERDUE_SCHEDULE="*/2 * * * * *", VECTOR_QUEUE=OWN_VECTOR_QUEUE,
               SYSTEM_PERFORMANCE_EVENTS="false")
    return out


def _index_of_another_model(path: Path) -> None:
    """A local index file as another embedding model left it (its `vector_meta`)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE vector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.executemany("INSERT INTO vector_meta (key, value) VALUES (?, ?)",
                       [("model_id", OTHER_MODEL), ("dimensions", "384"), ("schema_version", "2")])
    db.close()


def _written_before_the_first_start(env: dict[str, str], t: str) -> None:
    """What infra and the platform did before the service's first deployment: the database, the monitored
    containers (`/tenantId`) and the lease container (`/id`) exist, and documents are in them."""
    with CosmosClient(env["COSMOS_DB_ENDPOINT"], env["COSMOS_DB_KEY"], connection_verify=False,
                      enable_endpoint_discovery=False) as client:
        db = client.create_database_if_not_exists(OWN_DATABASE)
        made = {kind: db.create_container_if_not_exists(name, partition_key=PartitionKey("/tenantId"))
                for kind, name in OWN_CONTAINERS.items()}
        db.create_container_if_not_exists(OWN_LEASES, partition_key=PartitionKey("/id"))
        now = iso()

        def risk(i: int) -> None:
            made["risks"].create_item({"id": f"r-{i:03d}", "tenantId": t, "title": f"Legacy risk {i}",
                                       "status": "open", "createdAt": now, "updatedAt": now})

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(risk, range(BACKFILLED_RISKS)))
        made["compliance"].create_item({"id": "cmp-old", "tenantId": t, "status": "non_compliant",
                                        "createdAt": now, "updatedAt": now,
                                        "gaps": [{"id": "g1", "requirement": "A.5.1", "severity": "high"}]})
        made["policies"].create_item({"id": "pol-old", "tenantId": t, "name": "Access", "createdAt": now,
                                      "updatedAt": now, "violations": [{"id": "v1", "severity": "high"}]})
        made["assessments"].create_item({"id": "asm-old", "tenantId": t, "title": "SOX",
                                         "status": "in_progress", "createdAt": now, "updatedAt": now})


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    work: Path = tmp_path_factory.mktemp("capture-vectors")
    with own_stack(work / "stack", ("redis", "azurite", "cosmos")) as stack:
        index = work / "vector-other-model.db"
        _index_of_another_model(index)
        env = app_env(stack, work / "app", **_own_settings(), VECTOR_SQLITE_PATH=str(index))
        t = tenant("first")
        _written_before_the_first_start(env, t)
        # The processor's start (`_ts` of the lease store's marker, whole seconds) after those writes.
        time.sleep(1.5)
        app = start_app(env, work / "app", "--retry-scale", str(RETRY_SCALE))
        try:
            # A message for the indexer, which cannot index into another model's index: it must end in
            # the poison queue after 5 attempts, 10 s apart (host.json): the last test checks, meanwhile
            # the others run.
            probe, probe_id = tenant("probe"), f"ev-{uuid.uuid4().hex[:12]}"
            app.configure(probe, {"destinations": [{"type": "vector"}]})
            r = app.post("/events", tenants=[probe], json={
                "tenantId": probe, "eventId": probe_id, "eventType": "CONTROL_FAILED", "source": "ARCHER_GRC",
                "action": "TEST", "entityId": "c-1", "data": {"name": "MFA"}})
            assert r.status_code == 201, r.text
            sent = [(d["destination"], d["status"]) for d in r.json()["destinations"]]
            assert sent == [("vector", "delivered")], r.text
            yield Own(stack, app, t, probe_id)
        finally:
            app.stop()


def test_a_first_deployment_backfills_old_documents_in_batches_of_at_most_100(own: Own) -> None:
    """docs/change-capture.md: the container settings, `COSMOS_LEASE_CONTAINER`, `COSMOS_DB_DATABASE`;
    'Batches hold at most 100 documents'; 'New leases start from the beginning of the feed'; 'a document
    created before it is a backfill: RISK_UPDATED ... with `metadata.firstSeen: true`, even untouched
    since, so a first deployment ... never announces old entities as new' while 'the other containers'
    first-sighting events ... fire on a first sighting anyway'; the marker
    `{prefix}{account host}_{database _rid}_{container _rid}.info`; leases `{prefix}{database}.{container}`;
    the snapshot kept `CHANGEFEED_STATE_TTL_DAYS`, the claims `CHANGEFEED_DEDUP_TTL_HOURS`."""
    app, t = own.app, own.backfill_tenant
    evs = wait_events(app, t, BACKFILLED_RISKS + 4, FEED_TIMEOUT, source="COSMOS_DB")
    got = types_by_entity(evs)
    assert {k: v for k, v in got.items() if k.startswith("r-")} == {
        f"r-{i:03d}": ["RISK_UPDATED"] for i in range(BACKFILLED_RISKS)}
    assert {k: v for k, v in got.items() if not k.startswith("r-")} == {
        "cmp-old": ["COMPLIANCE_STATUS_CHANGED", "COMPLIANCE_GAP_DETECTED"], "pol-old": ["POLICY_VIOLATION"],
        "asm-old": ["ASSESSMENT_STARTED"]}, got
    assert all(e["metadata"].get("firstSeen") is True for e in evs), [e for e in evs if not e["metadata"].get(
        "firstSeen")][:3]
    containers = {e["entityType"]: e["metadata"]["container"] for e in evs}
    assert containers == {"risk": OWN_CONTAINERS["risks"], "complianceRecord": OWN_CONTAINERS["compliance"],
                          "policy": OWN_CONTAINERS["policies"], "assessment": OWN_CONTAINERS["assessments"]}
    # One batch, one ingestion time: the risks came in batches of at most 100, the first ones full.
    batches = Counter(e["ingestedAt"] for e in evs if e["entityType"] == "risk")
    assert sum(batches.values()) == BACKFILLED_RISKS and max(batches.values()) == 100, batches
    assert len(batches) >= -(-BACKFILLED_RISKS // 100), batches

    # A document written now is a creation.
    p = Platform(app.env)
    p.create("risks", {"id": "new-1", "tenantId": t, "title": "New", "status": "open"})
    new = wait_for(lambda: [e for e in events(app, t, source="COSMOS_DB") if e["entityId"] == "new-1"],
                   FEED_TIMEOUT, what="the new risk's event")
    assert [(e["eventType"], e["metadata"].get("firstSeen")) for e in new] == [("RISK_CREATED", None)], new

    # The lease container: one lease per trigger and one marker per lease store, named as documented.
    leases = p.db.get_container_client(OWN_LEASES)
    ids = {d["id"] for d in leases.query_items("SELECT c.id FROM c", enable_cross_partition_query=True)}
    db_rid = p.db.read()["_rid"]
    for kind, name in OWN_CONTAINERS.items():
        assert f"{kind}-{OWN_DATABASE}.{name}" in ids, ids
        container_rid = p.container(kind).read()["_rid"]
        assert f"{kind}-127.0.0.1_{db_rid}_{container_rid}.info" in ids, (kind, ids)

    # The keys live as long as this app's settings say (3 days, 5 hours).
    stack = own.stack
    state = _ttl(stack, f"grc:{{{t}}}:cf:s:risks:r-000")
    assert OWN_STATE_TTL_DAYS * 86_400 - 300 < state <= OWN_STATE_TTL_DAYS * 86_400, state
    window = OWN_DEDUP_TTL_HOURS * 3600

    def settled() -> list[int] | None:  # the last batch's claims are settled just after its events are out
        claims = [_ttl(stack, k) for k in _keys(stack, f"grc:{{{t}}}:idem:*")]
        return claims if len(claims) >= BACKFILLED_RISKS + 5 and min(claims) > 3600 else None

    claims = wait_for(settled, 30, what="the change-feed claims settled")
    assert all(window - 300 < c <= window for c in claims), sorted(set(claims))[:5]


def test_without_a_lease_marker_the_documents_own_times_decide(own: Own) -> None:
    """docs/change-capture.md: 'When no marker can be read (a host that names it otherwise, Cosmos
    unreachable), the rule falls back to the document's own times (`createdAt == updatedAt`, or one
    missing, is a creation)'. The controls container's marker is deleted before its first batch (no other
    test of this module writes controls): a document created in 2020 and never edited is then a creation,
    one edited since is an update seen first."""
    app = own.app
    t = tenant("nomark")
    p = Platform(app.env)
    leases = p.db.get_container_client(OWN_LEASES)
    [marker] = [d["id"] for d in leases.query_items("SELECT c.id FROM c", enable_cross_partition_query=True)
                if d["id"].startswith("controls-") and d["id"].endswith(".info")]
    leases.delete_item(marker, partition_key=marker)
    try:
        controls = p.container("controls")
        old, later = "2020-01-01T00:00:00Z", "2021-06-30T12:00:00Z"
        for cid, times in (("c-2020", {"createdAt": old, "updatedAt": old}),
                           ("c-edited", {"createdAt": old, "updatedAt": later}),
                           ("c-only-updated", {"updatedAt": old}), ("c-no-times", {})):
            controls.create_item({"id": cid, "tenantId": t, "name": cid, "status": "effective", **times})
        evs = settled(app, p, t, ("controls",))
    finally:
        leases.create_item({"id": marker})  # for Platform() of the later tests (a new start: now)
    assert types_by_entity(evs) == {"c-2020": ["CONTROL_CREATED"], "c-edited": ["CONTROL_UPDATED"],
                                    "c-only-updated": ["CONTROL_CREATED"],
                                    "c-no-times": ["CONTROL_CREATED"]}, evs
    assert [e["entityId"] for e in evs if e["metadata"].get("firstSeen")] == ["c-edited"], evs


def _overdue(app: App, t: str) -> list[dict[str, Any]]:
    return [e for e in events(app, t) if e["eventType"] == "ASSESSMENT_OVERDUE"]


def _runs(app: App) -> int:
    return app.log().count("overdue check:")


def test_overdue_on_its_schedule_date_only_due_dates_moved_due_dates_and_the_window(own: Own) -> None:
    """docs/change-capture.md: the `assessments_overdue` timer (`OVERDUE_SCHEDULE`); '`dueDate` (a date =
    due at the end of that day UTC ...)'; 'The event's `timestamp` is the due instant in UTC; `data.dueDate`
    is the stored text and `data.overdueByHours` the delay. A moved due date can become overdue again (a new
    event id)'; due dates older than `CHANGEFEED_STATE_TTL_DAYS` are not read; docs/architecture.md "Overdue
    marker": the idempotency claim 'held that long'. No run by hand: this app's schedule is every 2 s."""
    app = own.app
    t = tenant("odue")
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    if midnight + timedelta(days=1) - now < timedelta(minutes=2):  # today must stay today
        time.sleep((midnight + timedelta(days=1) - now).total_seconds() + 1)
        now = datetime.now(UTC)
        midnight = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    today = now.date()
    due = {"a-yesterday": (today - timedelta(days=1)).isoformat(), "a-today": today.isoformat(),
           "a-moved": iso(now - timedelta(hours=1)),
           "a-in-window": iso(now - timedelta(days=OWN_STATE_TTL_DAYS - 1)),
           "a-past-window": iso(now - timedelta(days=OWN_STATE_TTL_DAYS + 1))}
    p = Platform(app.env)
    docs = {aid: p.create("assessments", {"id": aid, "tenantId": t, "title": aid, "dueDate": d,
                                          "status": "planned"}) for aid, d in due.items()}
    found = wait_for(lambda: (o if len(o := _overdue(app, t)) >= 3 else None), 30, 0.5,
                     what="the scheduled overdue check announcing them")
    by_id = {e["entityId"]: e for e in found}
    assert sorted(by_id) == ["a-in-window", "a-moved", "a-yesterday"], found
    yesterday = by_id["a-yesterday"]
    assert _instant(yesterday["timestamp"]) == midnight and yesterday["timestamp"].endswith("Z"), yesterday
    assert yesterday["data"]["dueDate"] == due["a-yesterday"], yesterday["data"]
    hours = (datetime.now(UTC) - midnight).total_seconds() / 3600
    assert hours - 0.3 <= yesterday["data"]["overdueByHours"] <= hours + 0.1, (hours, yesterday["data"])
    assert _instant(by_id["a-moved"]["timestamp"]) == _instant(due["a-moved"]), by_id["a-moved"]
    key = f"grc:{{{t}}}:idem:{yesterday['eventId']}"
    claim = wait_for(lambda: (x if (x := _ttl(own.stack, key)) > 3600 else None), 30,
                     what="the claim settled")
    assert OWN_STATE_TTL_DAYS * 86_400 - 300 < claim <= OWN_STATE_TTL_DAYS * 86_400, claim

    moved_to = iso(datetime.now(UTC) - timedelta(minutes=30))
    p.update("assessments", docs["a-moved"], dueDate=moved_to)
    again = wait_for(lambda: (m if len(m := [e for e in _overdue(app, t) if e["entityId"] == "a-moved"]) == 2
                              else None), 30, 0.5, what="the moved due date announced again")
    assert again[0]["eventId"] != again[1]["eventId"], again
    assert {e["data"]["dueDate"] for e in again} == {due["a-moved"], moved_to}, again
    runs = _runs(app)
    wait_for(lambda: _runs(app) >= runs + 2, 30, 0.5, what="two more scheduled runs")
    assert Counter(e["entityId"] for e in _overdue(app, t)) == {"a-yesterday": 1, "a-moved": 2,
                                                                "a-in-window": 1}


# ==== Vector destination and search on this module's own app (an index of another model) ==============

def _refs(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for res in results:
        [vector] = [d for d in res["destinations"] if d["destination"] == "vector"]
        assert vector["status"] == "delivered", res
        out.append(vector["ref"])
    return out


def test_a_publish_is_packed_into_as_few_48_kib_queue_messages_as_fit(own: Own) -> None:
    """docs/vector-search.md "Destination `vector`": 'renders each event's text and packs the events into
    as few Storage queue messages as fit (... at most 48 KiB of JSON ...; ~100 typical events a message)';
    'An event is `delivered` once its message is in the queue (`ref` = `queue/messageId`)'. 100 events whose
    texts reach the 2,000-character bound are about 230 KB of items: 5 messages of at most 48 KiB (4 if a
    message took 64 KiB, 100 if each event had its own)."""
    app = own.app
    t = tenant("pack")
    app.configure(t, {"destinations": [{"type": "vector"}]})

    def event(i: int, big: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"title": f"Quarterly review {i}", "status": "open"}
        if big:
            data.update({k: f"{k} " + "z" * 300 for k in ("description", "severity", "priority", "riskLevel",
                                                               "rating", "likelihood", "impact", "category",
                                                               "framework", "regulation", "requirement",
                                                               "controlType", "owner", "department", "vendor",
                                                               "system")})
        return {"tenantId": t, "eventId": f"ev-{uuid.uuid4().hex[:12]}", "eventType": "RISK_UPDATED",
                "source": "ARCHER_GRC", "action": "UPDATE", "entityType": "risk", "entityId": f"r-{i}",
                "data": data}

    small = app.post("/events/bulk", tenants=[t], json={"events": [event(i, False) for i in range(30)]})
    assert small.status_code == 200 and small.json()["accepted"] == 30, small.text[:500]
    refs = _refs(small.json()["results"])
    assert len(set(refs)) == 1 and refs[0].startswith(f"{OWN_VECTOR_QUEUE}/") and len(refs[0]) > len(
        OWN_VECTOR_QUEUE) + 1, refs[:2]

    big = app.post("/events/bulk", tenants=[t], json={"events": [event(i, True) for i in range(100)]})
    assert big.status_code == 200 and big.json()["accepted"] == 100, big.text[:500]
    refs = _refs(big.json()["results"])
    assert 5 <= len(set(refs)) <= 6, Counter(refs)
    # Each message holds a run of the request's events, in order.
    runs = [ref for i, ref in enumerate(refs) if i == 0 or refs[i - 1] != ref]
    assert len(runs) == len(set(refs)), refs


def test_an_index_built_for_another_model_answers_503_with_retry_after(own: Own) -> None:
    """docs/vector-search.md "No mixing": 'an index records the model id and dimensions it was built with
    (sqlite: table `vector_meta` ...). Opening it with another embedder ... raises `EmbedderMismatch`';
    "Search API": 'an unavailable index or embedder is 503 with `Retry-After`'."""
    app = own.app
    t = tenant("mix")
    r = app.get(f"/search/{t}", tenants=[t], params={"q": "failed MFA"})
    body = _assert_problem(r, 503)
    assert int(r.headers["retry-after"]) > 0 and "hits" not in body, (r.headers, body)
    # The file still says what it was built for: nothing rewrote it for this model.
    with sqlite3.connect(Path(app.env["VECTOR_SQLITE_PATH"])) as db:
        meta = dict(db.execute("SELECT key, value FROM vector_meta").fetchall())
    db.close()
    assert meta["model_id"] == OTHER_MODEL, meta


def test_an_embedding_size_the_local_model_cannot_make_answers_503_with_retry_after(
        own: Own, tmp_path: Path) -> None:
    """docs/vector-search.md "Settings": '`EMBEDDING_DIMENSIONS` 0 = the model's own size (384 local ...)';
    "Search API": 'an unavailable index or embedder is 503 with `Retry-After`'. An app whose
    EMBEDDING_DIMENSIONS asks the local model for 128 dimensions has no usable embedder: a search is 503
    (a deployment error to retry after fixing), not a 500. (An app of its own beside the module's, on its
    default database, queues and index file.)"""
    env = app_env(own.stack, tmp_path, EMBEDDING_DIMENSIONS="128", SYSTEM_PERFORMANCE_EVENTS="false",
                  VECTOR_QUEUE=f"vec-{uuid.uuid4().hex[:6]}")
    other = start_app(env, tmp_path)
    try:
        t = tenant("dims")
        r = other.get(f"/search/{t}", tenants=[t], params={"q": "failed MFA"})
        body = _assert_problem(r, 503)
        assert int(r.headers["retry-after"]) > 0 and "hits" not in body, (r.headers, body)
        assert body["detail"] == "vector search is not configured", body  # a setting, not the index
        assert "EMBEDDING_DIMENSIONS is 128" in other.log()  # the operator's log names the setting
    finally:
        other.stop()


_EXECUTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+: Executed "
                       r"'Functions\.changefeed_policies' \((\w+), Id=[^,]*, Duration=(\d+)ms\)",
                       re.MULTILINE)


def test_a_batch_is_retried_with_exponential_backoff_from_2_s_then_dead_lettered(own: Own) -> None:
    """docs/change-capture.md "Retries and dead letters": 'the retry policy (exponential backoff 2 s →
    60 s, 5 retries)'; on the last attempt the batch is dead-lettered (`Attempts` 6: 'the first and the
    change-feed retry policy's 5 retries'); 'the change feed fails closed: the batch is retried, never
    published unchecked'. Redis (the entity state) is down through every attempt; this app's runner
    scales the policy's delays by 0.1: 0.2, 0.4, 0.8, 1.6, 3.2 s between the six attempts."""
    stack, app = own.stack, own.app
    t = tenant("backoff")
    p = Platform(app.env)
    policies = p.container("policies")
    start = len(app.log())
    stack.down("redis")
    try:
        policies.create_item({"id": "pol-1", "tenantId": t, "name": "Access", "createdAt": iso(),
                              "updatedAt": iso(), "violations": [{"id": "v1", "severity": "high"}]})
        wait_for(lambda: "changefeed_policies: batch of 1 given up" in app.log()[start:]
                 or len(_EXECUTED.findall(app.log()[start:])) >= 6 or None, 60, 0.3,
                 what="the batch's six attempts")
    finally:
        stack.up("redis")
    wait_for(lambda: app.get(f"/events/{t}", tenants=[t]).status_code == 200, 30, 0.3, what="Redis answering")
    runs = [m for line in app.log()[start:].splitlines() if (m := _EXECUTED.search(line))]
    assert len(runs) == 6, [m.group(0) for m in runs]
    assert [m.group(2) for m in runs[:5]] == ["Failed"] * 5, [m.group(0) for m in runs]
    ends = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") for m in runs]
    starts = [end - timedelta(milliseconds=int(m.group(3))) for end, m in zip(ends, runs)]
    delays = [(starts[i + 1] - ends[i]).total_seconds() for i in range(5)]
    expected = [RETRY_SCALE * 2 * 2 ** i for i in range(5)]
    assert all(e - 0.03 <= d <= e + 0.6 for d, e in zip(delays, expected)), (delays, expected)

    [dead] = wait_for(lambda: _dead(app, t), 30, what="the batch's document dead-lettered")
    assert (dead["kind"], dead["attempts"]) == ("changefeed-document", 6), dead
    assert "entity state unavailable" in dead["reason"], dead
    assert events(app, t, source="COSMOS_DB") == []  # nothing published unchecked


@pytest.mark.timeout(240)  # the fixture's start, then 5 attempts 10 s apart (host.json) at most
def test_the_indexers_failing_messages_end_in_the_poison_queue(own: Own) -> None:
    """docs/vector-search.md: '`index_vectors` ... Any failure raises, so the host retries the message and
    after `maxDequeueCount` (5) moves it to `VECTOR_QUEUE-poison`: nothing is dropped silently.' The probe
    event the fixture published cannot be indexed (the index is another model's)."""
    stack = own.stack
    poison = f"{OWN_VECTOR_QUEUE}-poison"

    def poisoned() -> bool:
        with stack.queues() as qs:
            names = {q.name for q in qs.list_queues()}
            if poison not in names:
                return False
            # Copied as it was (base64, as the trigger reads it); this client does not decode.
            got = [base64.b64decode(m.content).decode() for m in
                   qs.get_queue_client(poison).peek_messages(max_messages=32)]
            return any(own.probe_event_id in {i["eventId"] for i in json.loads(m)["items"]} for m in got)

    started = time.monotonic()
    wait_for(poisoned, 120, 1.0, what="the probe's message in the poison queue")
    log = own.app.log()
    assert f"moved to {poison} after 5 attempts" in log, log[-3000:]
    print(f"\npoison check waited {time.monotonic() - started:.0f} s")


# ==== Vector search on the session app ==================================================================

NOW = datetime.now(UTC).replace(microsecond=0)

# name: (eventType, action, entityType, entityId, data)
VECTOR_EVENTS: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "rich": ("CONTROL_TESTED", "TEST", "control", "C-210", {
        "name": "Quarterly vendor access review",
        "description": "Access of 12 vendor accounts\n was   not reviewed in Q3.",
        "result": "Not Effective", "previousStatus": "effective",
        "changes": {"reviewer": {"old": "alice", "new": "bob"}, "scope": {"from": "EU", "to": "global"},
                    "frequency": {"previous": "annual", "current": "quarterly"},
                    "evidence": {"before": "none", "after": "screenshots"},
                    **{f"c{i}": {"old": "a", "new": "b"} for i in range(5, 11)}},
        "severity": "high", "owner": "IT Security", "vendor": "Acme Payroll",
        "region": "emea", "quarter": "Q3", "auditor": "KPMG", "site": "Leeds", "team": "IAM",
        "tool": "SailPoint",
        "sampleSize": 25, "wave": 2, "ninth": "n9", "tenth": "n10",
        "controlId": "C-210", "testedAt": "2026-10-02T09:00:00Z", "vendor_id": "V-1", "_internal": "z",
        "id": "C-210", "timestamp": "2026-10-02T09:00:00Z", "tags": ["sox", "itgc"]}),
    "overdue": ("ASSESSMENT_OVERDUE", "DETECT", "assessment", "AS-1", {
        "title": "Data subject access request backlog review", "status": "overdue"}),
    "violation": ("POLICY_VIOLATION", "DETECT", "policy", "POL-1", {"policyName": "Acceptable use",
                                                                     "severity": "medium"}),
    "gap": ("COMPLIANCE_GAP_DETECTED", "DETECT", "complianceRecord", "GDPR-35", {
        "Title": "No DPIA for employee monitoring"}),
    "mitigated": ("RISK_STATUS_CHANGED", "STATUS_CHANGE", "risk", "R-7", {
        "title": "Phishing of finance staff", "previousStatus": "open", "status": "remediated"}),
    "findings": ("CONTROL_TESTED", "TEST", "control", "C-5", {"name": "Journal entry approval",
                                                              "result": "2 exceptions noted"}),
    "none": ("RISK_CREATED", "CREATE", "risk", "R-8", {"title": "", "name": "Supplier insolvency",
                                                       "status": "open"}),
    "bounds": ("RISK_UPDATED", "UPDATE", "risk", "R-9", {
        "title": "x" * 300, "description": "y" * 600,
        **{k: k + " " + "w" * 300 for k in ("severity", "priority", "riskLevel", "rating", "likelihood",
                                            "impact", "score", "category", "framework", "regulation",
                                            "requirement", "controlType", "owner", "department", "vendor",
                                            "system")}}),
    "sod": ("CONTROL_TESTED", "TEST", "control", "C-9", {"name": "Segregation of duties review in SAP",
                                                         "result": "failed"}),
    "replaced": ("RISK_CREATED", "CREATE", "risk", "R-10", {"title": "Data centre flooding",
                                                            "status": "open"}),
}


@dataclass
class Indexed:
    tenant: str
    ids: dict[str, str]  # name -> eventId
    bodies: dict[str, dict[str, Any]]


def _search(app: App, t: str, **params: str) -> dict[str, Any]:
    r = app.get(f"/search/{t}", tenants=[t], params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def indexed(app: App) -> Indexed:
    """A tenant whose events (source ARCHER_GRC only: not the monitor's) are indexed by the queue trigger."""
    t = tenant("vtext")
    app.configure(t, {"destinations": [{"type": "vector"}], "filters": [{"sources": ["ARCHER_GRC"]}]})
    bodies = {}
    for i, (name, (event_type, action, entity_type, entity_id, data)) in enumerate(VECTOR_EVENTS.items()):
        bodies[name] = {"tenantId": t, "eventId": f"ev-{name}-{uuid.uuid4().hex[:8]}",
                        "eventType": event_type, "source": "ARCHER_GRC", "action": action,
                        "entityType": entity_type, "entityId": entity_id, "data": data,
                        "metadata": {"secretMarker": "metadata-never-rendered"},
                        "timestamp": iso(NOW - timedelta(minutes=i))}
    r = app.post("/events/bulk", tenants=[t], json={"events": list(bodies.values())})
    assert r.status_code == 200 and r.json()["accepted"] == len(bodies), r.text[:1000]
    wait_for(lambda: _search(app, t, q="review", k="50", mode="vector")["count"] == len(bodies),
             INDEX_TIMEOUT, 0.5, what="the tenant's events indexed by index_vectors")
    return Indexed(t, {n: b["eventId"] for n, b in bodies.items()}, bodies)


def _hits_by_id(app: App, t: str) -> dict[str, dict[str, Any]]:
    return {h["eventId"]: h for h in _search(app, t, q="review", k="50", mode="vector")["hits"]}


def test_the_rendered_text_and_the_outcome_of_each_event(app: App, indexed: Indexed) -> None:
    """docs/vector-search.md "The text template": the parts in order ('{Outcome}. {Event type in words}:
    {title}.', 'Status: {previous status} -> {status}.', 'Entity:', 'Action: {action in words}.',
    'Description:', 'Changes: ... at most 8', 'Details: every present key of severity, ..., owner, ...,
    vendor', 'Other: up to 8 more top-level scalar fields, skipping ids and times'); `data` keys matched
    case-insensitively, the first present one wins; whitespace collapsed; a title cut at 200 characters, a
    field at 400, the whole text at 2,000 (`…` marks a cut); '`metadata` is not rendered'. The outcome
    table: by event type first, then the status words in their order ('not effective' is a failure, not a
    pass); the lead words; 'an event with none of them has no lead'."""
    hits = _hits_by_id(app, indexed.tenant)
    ids = indexed.ids
    changes = "; ".join(["reviewer: alice -> bob", "scope: EU -> global", "frequency: annual -> quarterly",
                         "evidence: none -> screenshots", "c5: a -> b", "c6: a -> b", "c7: a -> b",
                         "c8: a -> b"])
    assert hits[ids["rich"]]["summary"] == "\n".join([
        "Failed. Control tested: Quarterly vendor access review.",
        "Status: effective -> Not Effective.",
        "Entity: control C-210.",
        "Action: test.",
        "Description: Access of 12 vendor accounts was not reviewed in Q3.",
        f"Changes: {changes}.",
        "Details: severity: high; owner: IT Security; vendor: Acme Payroll.",
        "Other: region: emea; quarter: Q3; auditor: KPMG; site: Leeds; team: IAM; tool: SailPoint; "
        "sample size: 25; wave: 2.",
    ]), hits[ids["rich"]]["summary"]
    heads = {name: hits[ids[name]]["summary"].split("\n") for name in ids}
    assert heads["overdue"][0] == "Overdue. Assessment overdue: Data subject access request backlog review."
    assert heads["violation"][0] == "Violated. Policy violation: Acceptable use."
    assert heads["gap"][0] == "Gap found. Compliance gap detected: No DPIA for employee monitoring."
    assert heads["mitigated"][:2] == ["Mitigated. Risk status changed: Phishing of finance staff.",
                                      "Status: open -> remediated."]
    assert heads["mitigated"][3] == "Action: status change.", heads["mitigated"]
    assert heads["findings"][0] == "Findings raised. Control tested: Journal entry approval."
    assert heads["none"][:4] == ["Risk created: Supplier insolvency.", "Status: open.", "Entity: risk R-8.",
                                 "Action: create."], heads["none"]
    outcomes = {name: hits[ids[name]]["outcome"] for name in ids}
    assert outcomes == {"rich": "failed", "overdue": "overdue", "violation": "violated", "gap": "gap",
                        "mitigated": "mitigated", "findings": "findings", "none": None, "bounds": None,
                        "sod": "failed", "replaced": None}, outcomes
    assert all("metadata-never-rendered" not in h["summary"] for h in hits.values())

    bounded = hits[ids["bounds"]]["summary"]
    assert len(bounded) == 2000 and bounded.endswith("…"), (len(bounded), bounded[-20:])
    lines = bounded.split("\n")
    assert lines[0] == "Risk updated: " + "x" * 199 + "….", lines[0][:40]
    assert "Description: " + "y" * 399 + "…" in lines, [line[:40] for line in lines]


def _expected_score(ranks: dict[str, int], used: list[str], outcome_match: bool, named: bool) -> float:
    """docs/vector-search.md "Modes, fusion and the score", with K 60, w_keyword 1.0, w_vector 0.5,
    w_outcome 0.5."""
    weights = {"keyword": 1.0, "vector": 0.5}
    fused = sum(weights[r] / (60 + rank) for r, rank in ranks.items()) + (0.5 / 61 if outcome_match else 0.0)
    full = (sum(weights[r] for r in used) + (0.5 if named else 0.0)) / 61
    return fused / full


@pytest.mark.parametrize(("question", "named"), [("vendor access review", []),
                                                 ("failed vendor access review", ["failed", "findings"])])
def test_the_score_is_the_documented_rank_fusion(app: App, indexed: Indexed, question: str,
                                                 named: list[str]) -> None:
    """docs/vector-search.md: 'Each ranking contributes its best `max(k, 50)`; they are fused by reciprocal
    rank fusion': fused(d) = Σ w_ranking / (K + rank) + w_outcome / (K + 1) when the question names d's
    outcome, score = fused / fused_max (K 60, w_keyword 1.0, w_vector 0.5, w_outcome 0.5); 'a hit only one
    of the two rankings found scores at most 0.67 (keyword) or 0.33 (vector) without an outcome named';
    '`similarity` is the cosine similarity ... when the vector ranking saw the hit (null otherwise)'. The
    rankings are read from the API itself: `mode=vector` gives the cosine order (its similarities),
    `mode=keyword` the BM25 ranks (its scores, which the same formula made, must give back whole ranks)."""
    t = indexed.tenant
    answers = {mode: _search(app, t, q=question, k="50", mode=mode)
               for mode in ("keyword", "vector", "hybrid")}
    # 'Search API': the answer's fields, and the local model's id.
    hybrid = answers["hybrid"]
    assert set(hybrid) == {"tenantId", "query", "k", "mode", "outcomes", "model", "count", "hits"}, hybrid
    assert (hybrid["model"], hybrid["query"], hybrid["count"]) == (
        "all-MiniLM-L6-v2-onnx-int8", question, len(hybrid["hits"])), hybrid
    hit_fields = {"eventId", "tenantId", "score", "similarity", "outcome", "eventType", "source",
                  "entityType", "entityId", "timestamp", "summary"}
    assert all(set(h) == hit_fields for h in hybrid["hits"]), hybrid["hits"][:1]
    assert all(a["outcomes"] == named for a in answers.values()), answers["hybrid"]["outcomes"]
    boost = bool(named)

    def matched(h: dict[str, Any]) -> bool:
        return boost and h["outcome"] in named

    # The vector ranking is the cosine order (nearest first); its hits carry the similarity.
    by_cosine = sorted(answers["vector"]["hits"], key=lambda h: -h["similarity"])
    rank = {"vector": {h["eventId"]: i for i, h in enumerate(by_cosine, start=1)}}
    assert len(rank["vector"]) == len(VECTOR_EVENTS), rank
    assert all(-1 <= h["similarity"] <= 1 for h in by_cosine), by_cosine
    # The keyword ranking's ranks, read back from keyword mode's scores (score = (1/(K+r) + boost) /
    # fused_max): a score the formula did not make gives no whole rank.
    keyword = answers["keyword"]["hits"]
    assert all(h["similarity"] is None for h in keyword), keyword[:1]
    derived = {h["eventId"]: 61 / (h["score"] * (1 + 0.5 * boost) - 0.5 * matched(h)) - 60 for h in keyword}
    assert all(abs(r - round(r)) < 1e-3 for r in derived.values()), derived
    rank["keyword"] = {e: round(r) for e, r in derived.items()}
    assert sorted(rank["keyword"].values()) == list(range(1, len(keyword) + 1)), rank["keyword"]
    assert 0 < len(keyword) < len(VECTOR_EVENTS), rank["keyword"]
    if not boost:  # no outcome named: keyword mode's hits are in BM25 order
        assert [rank["keyword"][h["eventId"]] for h in keyword] == list(range(1, len(keyword) + 1))
    similarity = {h["eventId"]: h["similarity"] for h in by_cosine}
    wrong = {}
    for mode in ("vector", "hybrid"):
        used = ["keyword", "vector"] if mode == "hybrid" else [mode]
        for h in answers[mode]["hits"]:
            ranks = {r: rank[r][h["eventId"]] for r in used if h["eventId"] in rank[r]}
            want = _expected_score(ranks, used, matched(h), boost)
            if abs(h["score"] - want) > 2e-6:
                wrong[(mode, h["eventId"])] = (h["score"], round(want, 6), ranks)
    assert not wrong, wrong
    for mode in ("keyword", "vector", "hybrid"):
        scores = [h["score"] for h in answers[mode]["hits"]]
        assert scores == sorted(scores, reverse=True) and 0 < min(scores) and max(scores) <= 1, (mode, scores)
    for h in hybrid["hits"]:
        assert h["similarity"] == pytest.approx(similarity[h["eventId"]], abs=1e-6), h
        if not boost and h["eventId"] not in rank["keyword"]:  # found by the vector ranking only
            assert h["score"] <= 1 / 3 + 1e-6, h


def test_keywords_are_stemmed_and_the_vocabulary_folds_plurals(app: App, indexed: Indexed) -> None:
    """docs/vector-search.md "GRC vocabulary": 'every vocabulary term found in it (longest first, plurals
    folded: DSARs ~ DSAR) is replaced by its whole rule'; 'FTS5 tokenizes with Porter stemming over
    unicode61 (`failing` finds `failed`)'. Keyword mode only, so the vector ranking cannot find them."""
    t, ids = indexed.tenant, indexed.ids
    failing = {h["eventId"] for h in _search(app, t, q="failing", k="50", mode="keyword")["hits"]}
    assert {ids["rich"], ids["sod"]} <= failing, failing  # their texts say "Failed"
    sods = [h["eventId"] for h in _search(app, t, q="SoDs", k="50", mode="keyword")["hits"]]
    assert sods[:1] == [ids["sod"]], sods  # "sod" = segregation of duties, in the plural
    dsars = [h["eventId"] for h in _search(app, t, q="DSARs", k="50", mode="keyword")["hits"]]
    assert dsars[:1] == [ids["overdue"]], dsars  # "data subject access request"


def test_one_document_per_tenant_and_event_a_redelivered_message_replaces_it(
        app: App, stack: Stack, indexed: Indexed) -> None:
    """docs/vector-search.md "Keys": 'one document per (tenantId, eventId): re-delivery replaces, never
    duplicates'; the queue message `{"v": 1, "items": [...]}`; 'a message enqueued before outcomes existed
    has none, and the indexer reads it from the text's `Status:` line and type'. A message written to the
    vector queue as an older producer would (no `outcome`) re-delivers one indexed event with another text;
    the same eventId in another tenant is a document of its own."""
    t, ids = indexed.tenant, indexed.ids
    body = indexed.bodies["replaced"]
    other = tenant("vkey")
    app.configure(other, {"destinations": [{"type": "vector"}], "filters": [{"sources": ["ARCHER_GRC"]}]})
    r = app.post("/events", tenants=[other], json={**body, "tenantId": other,
                                                   "data": {"title": "Warehouse fire", "status": "open"}})
    assert r.status_code == 201, r.text
    text = "Risk created: Data centre flooding.\nStatus: passed.\nEntity: risk R-10."
    item = {"eventId": ids["replaced"], "tenantId": t, "eventType": "RISK_CREATED", "source": "ARCHER_GRC",
            "timestamp": body["timestamp"], "entityType": "risk", "entityId": "R-10", "text": text}
    with QueueClient.from_connection_string(stack.storage, app.env["VECTOR_QUEUE"],
                                            message_encode_policy=TextBase64EncodePolicy()) as q:
        q.send_message(json.dumps({"v": 1, "items": [item]}))

    def replaced() -> dict[str, Any] | None:
        hits = [h for h in _hits_by_id(app, t).values() if h["eventId"] == ids["replaced"]]
        return hits[0] if len(hits) == 1 and hits[0]["summary"] == text else None

    hit = wait_for(replaced, INDEX_TIMEOUT, 0.5, what="the re-delivered message indexed")
    assert hit["outcome"] == "passed", hit  # from its Status: line
    assert len(_hits_by_id(app, t)) == len(VECTOR_EVENTS)  # replaced, not added
    theirs = wait_for(lambda: _search(app, other, q="fire", k="50", mode="vector")["hits"] or None,
                      INDEX_TIMEOUT, 0.5, what="the other tenant's event indexed")
    assert [(h["eventId"], h["summary"].split("\n")[0]) for h in theirs] == [
        (ids["replaced"], "Risk created: Warehouse fire.")], theirs


OUTCOME_QUESTIONS: list[tuple[str, list[str]]] = [
    ("which SOC 2 controls failed", ["failed", "findings"]),
    ("controls that did not work", ["failed"]),
    ("unsuccessful backup restores", ["failed"]),
    ("nonconformities in ISO 27001", ["failed", "findings"]),
    ("access reviews with no exceptions", ["passed"]),
    ("audits behind schedule", ["overdue"]),
    ("breach of policy by contractors", ["violated"]),
    ("missing DPIA", ["gap"]),
    ("non-compliant vendors", ["failed", "gap"]),
    ("remediated phishing risks", ["mitigated"]),
    ("controls that did not fail", ["failed", "findings"]),  # 'Negations are not understood'
    ("vendor access review", []),
]


def test_the_outcomes_a_question_names(app: App) -> None:
    """docs/vector-search.md "Outcome boost": the words of the question and the outcomes they boost, listed
    in the response as `outcomes`; 'Negations are not understood'."""
    t = tenant("vq")
    wrong = {}
    for question, expected in OUTCOME_QUESTIONS:
        got = _search(app, t, q=question)["outcomes"]
        if got != expected:
            wrong[question] = got
    assert not wrong, wrong


@pytest.mark.parametrize(("value", "ok"), [
    ("1risk", False), ("risk type", False), ("a" * 65, False), ("risk,-x", False),
    (",".join(f"type{i}" for i in range(21)), False),
    ("a" * 64, True), ("x.y-z_1", True), (",".join(f"type{i}" for i in range(20)), True),
])
def test_the_entity_type_parameter_rules(app: App, value: str, ok: bool) -> None:
    """docs/vector-search.md "Search API": '`entityType` entity types, comma-separated (at most 20; each a
    letter, then up to 63 letters, digits, `_`, `.` or `-`, as in an event)'; bad parameters are 400 problem
    details naming the field."""
    t = tenant("vet")
    r = app.get(f"/search/{t}", tenants=[t], params={"q": "risk", "entityType": value})
    if ok:
        assert r.status_code == 200, r.text
    else:
        _assert_problem(r, 400, "entityType")
