"""End to end: documents written into the local Cosmos server come out as events, through the runner's
Cosmos driver (the change feed via the azure-cosmos SDK, leases in the lease container)."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from azure.cosmos import ContainerProxy, CosmosClient

from devhost.app_loader import load_functions
from devhost.cosmos_driver import CosmosDriver, FeedWorker
from localdev import services
from shared.app.jobs import run_overdue_check
from shared.app.services import Services, get_services, reset_services
from shared.destinations.redis_streams import stream_key
from tests.conftest import env_overrides
from tests.test_devhost_e2e import start_runner

# Documents are "created" an hour from now: after every change-feed processor a test starts, so their
# first sighting is a creation (leases.py); LATER and LATEST are their edits.
_BASE = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
NOW, LATER, LATEST = (f"{(_BASE + timedelta(days=d)).isoformat()}".replace("+00:00", "Z") for d in (0, 1, 2))


@pytest.fixture
def cosmos_env(app_env: dict[str, str], cosmos_server: services.Running) -> Iterator[dict[str, str]]:
    """The app pointed at the local Cosmos server, with a database of its own per test."""
    env = {**cosmos_server.settings, "COSMOS_DB_DATABASE": f"grc-{uuid.uuid4().hex[:8]}"}
    with env_overrides(env):
        yield {**app_env, **env}


@pytest.fixture
async def svc(cosmos_env: dict[str, str]) -> AsyncIterator[Services]:
    yield get_services()
    await reset_services()


@pytest.fixture
def db(cosmos_env: dict[str, str]) -> Any:
    client = CosmosClient(cosmos_env["COSMOS_DB_ENDPOINT"], cosmos_env["COSMOS_DB_KEY"],
                          connection_verify=False, enable_endpoint_discovery=False)
    return client.create_database_if_not_exists(cosmos_env["COSMOS_DB_DATABASE"])


def container(db: Any, name: str) -> ContainerProxy:
    from azure.cosmos import PartitionKey

    return db.create_container_if_not_exists(name, partition_key=PartitionKey("/tenantId"))


async def workers(driver: CosmosDriver) -> dict[str, FeedWorker]:
    out = {}
    for spec in driver.specs:
        w = FeedWorker(spec, driver._client(str(spec.trigger["connection"])), poll_ms=0)
        await w.open()
        out[spec.trigger["containerName"]] = w
    return out


async def drain(w: FeedWorker) -> int:
    """Poll until the feed is empty, resuming from the stored lease each time (as the loop does)."""
    total = 0
    token = (await w.read_lease()).continuation
    while True:
        token, n = await w.step(token)
        total += n
        if n == 0:
            return total


async def stream(svc: Services, tenant: str) -> list[dict[str, Any]]:
    return [orjson.loads(f[b"e"]) for _, f in await svc.redis.xrange(stream_key(tenant))]


def per_entity(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(e["entityId"], []).append(e["eventType"])
    return out


def stamp(**kw: Any) -> dict[str, Any]:
    return {"createdAt": NOW, "updatedAt": NOW, **kw}


def cosmos_specs() -> list[Any]:
    return [s for s in load_functions() if s.trigger_type == "cosmosDBTrigger"]


async def test_documents_become_the_right_events_in_order_per_entity(svc: Services, db: Any) -> None:
    tenant = f"e2e-{uuid.uuid4().hex[:8]}"
    driver = CosmosDriver(cosmos_specs())
    try:
        ws = await workers(driver)
        risks, controls = container(db, "risks"), container(db, "controls")
        compliance, policies, assessments = container(db, "compliance"), container(db, "policies"), \
            container(db, "assessments")
        risks.upsert_item(stamp(id="r1", tenantId=tenant, status="open", score=16))
        risks.upsert_item(stamp(id="r2", tenantId=tenant, status="open", score=4))
        controls.upsert_item(stamp(id="c1", tenantId=tenant, lastTest={"result": "pass", "testedAt": NOW}))
        compliance.upsert_item(stamp(id="k1", tenantId=tenant, status="non_compliant",
                                     gaps=[{"id": "g1", "requirement": "A.5"}]))
        policies.upsert_item(stamp(id="p1", tenantId=tenant, violations=[{"id": "v1", "severity": "high"}]))
        assessments.upsert_item(stamp(id="a1", tenantId=tenant, status="in_progress", dueDate="2026-12-31"))
        assert sum([await drain(w) for w in ws.values()]) == 6

        later = LATER
        risks.upsert_item(stamp(id="r1", tenantId=tenant, status="mitigated", score=6, updatedAt=later))
        risks.upsert_item(stamp(id="r2", tenantId=tenant, status="open", isDeleted=True, ttl=86400,
                                updatedAt=later))
        controls.upsert_item(stamp(id="c1", tenantId=tenant, updatedAt=later,
                                   lastTest={"result": "fail", "testedAt": later}))
        compliance.upsert_item(stamp(id="k1", tenantId=tenant, status="non_compliant", updatedAt=later,
                                     gaps=[{"id": "g1"}, {"id": "g2", "requirement": "A.8"}]))
        assessments.upsert_item(stamp(id="a1", tenantId=tenant, status="completed", dueDate="2026-12-31",
                                      completedAt=later, updatedAt=later))
        for w in ws.values():
            await drain(w)

        got = per_entity(await stream(svc, tenant))
        assert got == {
            "r1": ["RISK_CREATED", "RISK_UPDATED", "RISK_STATUS_CHANGED"],
            "r2": ["RISK_CREATED", "RISK_DELETED"],
            "c1": ["CONTROL_CREATED", "CONTROL_TESTED", "CONTROL_UPDATED", "CONTROL_TESTED", "CONTROL_FAILED"],
            "k1": ["COMPLIANCE_STATUS_CHANGED", "COMPLIANCE_GAP_DETECTED", "COMPLIANCE_GAP_DETECTED"],
            "p1": ["POLICY_VIOLATION"],
            "a1": ["ASSESSMENT_STARTED", "ASSESSMENT_COMPLETED"],
        }
        delay = (await svc.metrics.snapshot(tenant))["windows"]["5m"]["changeFeedDelayMs"]
        assert delay["mean"] is not None  # each change's delay (now - _ts) was recorded
    finally:
        await driver.stop()


async def test_redelivered_feed_gives_no_duplicates_and_restart_resumes(svc: Services, db: Any) -> None:
    tenant = f"e2e-{uuid.uuid4().hex[:8]}"
    risks = container(db, "risks")
    for i in range(5):
        risks.upsert_item(stamp(id=f"r{i}", tenantId=tenant, status="open"))

    first = CosmosDriver(cosmos_specs())
    w = (await workers(first))["risks"]
    assert await drain(w) == 5
    assert len(await stream(svc, tenant)) == 5

    # The host re-delivers (lease lost, another instance from an old checkpoint): everything again.
    assert w.leases is not None
    await w.leases.delete_item(w.lease_id, partition_key=w.lease_id)
    assert await drain(w) == 5
    assert len(await stream(svc, tenant)) == 5  # no duplicates downstream
    await first.stop()

    # A restart (new driver, new client) resumes from its lease: nothing replayed, nothing skipped.
    risks.upsert_item(stamp(id="r9", tenantId=tenant, status="open"))
    second = CosmosDriver(cosmos_specs())
    try:
        w2 = (await workers(second))["risks"]
        assert (await w2.read_lease()).continuation is not None
        assert await drain(w2) == 1
        evs = await stream(svc, tenant)
        assert [e["entityId"] for e in evs] == ["r0", "r1", "r2", "r3", "r4", "r9"]
    finally:
        await second.stop()


async def test_overdue_assessments_once_across_runs_and_instances(svc: Services, db: Any) -> None:
    import asyncio

    tenant = f"e2e-{uuid.uuid4().hex[:8]}"
    a = container(db, "assessments")
    a.upsert_item(stamp(id="late", tenantId=tenant, status="in_progress", dueDate="2026-01-31"))
    a.upsert_item(stamp(id="late-planned", tenantId=tenant, status="planned", dueDate="2026-02-01T12:00:00Z"))
    a.upsert_item(stamp(id="done", tenantId=tenant, status="completed", dueDate="2026-01-31"))
    a.upsert_item(stamp(id="deleted", tenantId=tenant, status="planned", dueDate="2026-01-31", isDeleted=True))
    a.upsert_item(stamp(id="future", tenantId=tenant, status="planned", dueDate="2999-01-01"))
    a.upsert_item(stamp(id="no-due", tenantId=tenant, status="planned"))

    runs = await asyncio.gather(run_overdue_check(), run_overdue_check())  # two instances at once
    assert sum(r.published for r in runs) == 2
    again = await run_overdue_check()
    assert again.published == 0 and again.already >= 2
    evs = [e for e in await stream(svc, tenant) if e["eventType"] == "ASSESSMENT_OVERDUE"]
    assert sorted(e["entityId"] for e in evs) == ["late", "late-planned"]
    assert runs[0].request_charge > 0  # the RU charge of the service's own query was read

    # A new due date that passes again is overdue again (a new marker).
    a.upsert_item(stamp(id="late", tenantId=tenant, status="in_progress", dueDate="2026-03-31"))
    assert (await run_overdue_check()).published == 1


def test_through_the_local_runner_process_with_restart(cosmos_env: dict[str, str], db: Any,
                                                       tmp_path: Any) -> None:
    """`python -m devhost` drives the Cosmos triggers; events show in GET /events/{tenantId}."""
    tenant = f"e2e-{uuid.uuid4().hex[:8]}"
    risks = container(db, "risks")
    risks.upsert_item(stamp(id="r1", tenantId=tenant, status="open"))
    args = ("--feed-poll-ms", "100", "--state-dir", str(tmp_path / "state"))

    def events_of(base: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{base}/events/{tenant}", params={"limit": 100}).json()
        return [e["event"] for e in body["events"]]

    def wait_for(base: str, n: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            evs = events_of(base)
            if len(evs) >= n:
                return evs
            time.sleep(0.1)
        return events_of(base)

    proc, base = start_runner({**cosmos_env, "AUTH_MODE": "jwt+local-open"}, tmp_path, *args)
    try:
        assert [e["eventType"] for e in wait_for(base, 1)] == ["RISK_CREATED"]
        risks.upsert_item(stamp(id="r1", tenantId=tenant, status="closed", updatedAt=LATEST))
        assert len(wait_for(base, 3)) == 3
    finally:
        services.stop(proc)

    risks.upsert_item(stamp(id="r2", tenantId=tenant, status="open"))
    proc, base = start_runner({**cosmos_env, "AUTH_MODE": "jwt+local-open"}, tmp_path, *args)
    try:
        evs = wait_for(base, 4)
        time.sleep(0.5)  # a few more polls: a replay from the beginning would add entries now
        evs = events_of(base)
        assert sorted(e["eventType"] for e in evs) == sorted(
            ["RISK_CREATED", "RISK_UPDATED", "RISK_STATUS_CHANGED", "RISK_CREATED"])
        assert len({e["eventId"] for e in evs}) == 4
    finally:
        services.stop(proc)


async def test_the_processor_start_is_the_lease_store_marker_and_decides_creation(svc: Services, db: Any) -> None:
    """The runner writes the lease store's `.info` marker as the host's processor does; the app reads
    its `_ts` as the start: a document created before it is a backfill (UPDATED, firstSeen), one created
    after it is CREATED even when edited before the feed delivered it (issue 12, item 4)."""
    from shared.changefeed.leases import LEASE_PREFIXES, FeedStarts, container_of
    from shared.changefeed.rules import Kind

    tenant = f"e2e-{uuid.uuid4().hex[:8]}"
    risks = container(db, "risks")
    ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    risks.upsert_item({"id": "old", "tenantId": tenant, "status": "open", "createdAt": ago, "updatedAt": ago})
    clock = [0.0]
    s = svc.settings
    starts = FeedStarts(svc.cosmos, s.cosmos_database, s.cosmos_lease_container,
                        {k: container_of(s, k) for k in Kind}, clock=lambda: clock[0])
    assert await starts.started(Kind.RISKS) is None  # no processor yet

    driver = CosmosDriver(cosmos_specs())
    try:
        w = (await workers(driver))["risks"]
        markers = [d for d in db.get_container_client(s.cosmos_lease_container).query_items(
            "SELECT * FROM c", enable_cross_partition_query=True) if d["id"].endswith(".info")]
        risks_marker = next(m for m in markers if m["id"].startswith(LEASE_PREFIXES[Kind.RISKS]))
        assert risks_marker["id"] == (f"risks-127.0.0.1_{db.read()['_rid']}_{risks.read()['_rid']}.info")
        assert len(markers) == 5  # one per monitored container
        await w.open()  # a second start keeps the first marker
        assert [d["_ts"] for d in db.get_container_client(s.cosmos_lease_container).query_items(
            "SELECT * FROM c", enable_cross_partition_query=True) if d["id"] == risks_marker["id"]] == [
            risks_marker["_ts"]]

        assert await starts.started(Kind.RISKS) is None  # "none yet" is cached for MISSING_TTL
        clock[0] += 31
        started = await starts.started(Kind.RISKS)
        assert started == datetime.fromtimestamp(risks_marker["_ts"], UTC)
        assert abs((datetime.now(UTC) - started).total_seconds()) < 60
        assert await svc.changefeed.feed_started(Kind.RISKS) == started  # what the triggers use

        # Created after the start and edited before the first poll: one change, still a creation.
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        risks.upsert_item({"id": "new", "tenantId": tenant, "status": "open", "createdAt": now, "updatedAt": now})
        edited = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        risks.upsert_item({"id": "new", "tenantId": tenant, "status": "assessing", "createdAt": now,
                           "updatedAt": edited})
        assert await drain(w) == 2  # "old" and the last version of "new"
        evs = await stream(svc, tenant)
        assert per_entity(evs) == {"old": ["RISK_UPDATED"], "new": ["RISK_CREATED", "RISK_STATUS_CHANGED"]}
        old = next(e for e in evs if e["entityId"] == "old")
        assert old["metadata"]["firstSeen"] is True
        changed = next(e for e in evs if e["eventType"] == "RISK_STATUS_CHANGED")
        assert (changed["data"]["previousStatus"], changed["data"]["status"]) == ("open", "assessing")
    finally:
        await driver.stop()
