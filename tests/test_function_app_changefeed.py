"""The Cosmos DB trigger and timer registrations, called with batches decoded as the worker decodes them."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from azure.functions import meta
from azure.functions.cosmosdb import CosmosDBTriggerConverter

import function_app
from shared.app.services import Services
from shared.changefeed.processor import RetryBatch
from shared.destinations.redis_streams import stream_key
from tests.functions_client import auth_headers, invoke

pytestmark = pytest.mark.usefixtures("app_services")
CONTAINERS = {"changefeed_risks": "COSMOS_RISKS_CONTAINER", "changefeed_controls": "COSMOS_CONTROLS_CONTAINER",
              "changefeed_assessments": "COSMOS_ASSESSMENTS_CONTAINER",
              "changefeed_compliance": "COSMOS_COMPLIANCE_CONTAINER",
              "changefeed_policies": "COSMOS_POLICIES_CONTAINER"}


def functions() -> dict[str, Any]:
    function_app.app.functions_bindings = None
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def decoded(docs: list[Any]) -> Any:
    """Exactly what the Python worker hands a cosmosDBTrigger function."""
    return CosmosDBTriggerConverter.decode(meta.Datum(json.dumps(docs), "json"), trigger_metadata={})


@dataclass
class Retry:
    retry_count: int
    max_retry_count: int


@dataclass
class Ctx:
    retry_context: Retry | None
    function_name: str = "changefeed_risks"
    invocation_id: str = "test"


async def stream(services: Services, tenant: str) -> list[dict[str, Any]]:
    return [orjson.loads(f[b"e"]) for _, f in await services.redis.xrange(stream_key(tenant))]


def risk(tenant: str, rid: str, lsn: int, **kw: Any) -> dict[str, Any]:
    return {"id": rid, "tenantId": tenant, "status": "open", "createdAt": "2026-11-01T00:00:00Z",
            "updatedAt": "2026-11-01T00:00:00Z", "_lsn": lsn, "_ts": 1_790_000_000, "_etag": f'"{lsn}"', **kw}


def test_one_trigger_per_container_sharing_one_lease_container() -> None:
    fns = functions()
    prefixes = set()
    for name, setting in CONTAINERS.items():
        b = json.loads(fns[name].get_function_json())["bindings"][0]
        assert b["type"] == "cosmosDBTrigger" and b["direction"] == "IN"
        assert b["containerName"] == f"%{setting}%" and b["databaseName"] == "%COSMOS_DB_DATABASE%"
        assert b["leaseContainerName"] == "%COSMOS_LEASE_CONTAINER%" and b["connection"] == "COSMOS"
        assert 1 <= b["maxItemsPerInvocation"] <= 1000
        prefixes.add(b["leaseContainerPrefix"])
        retry = fns[name].get_settings_dict("retry_policy")
        assert retry["strategy"] == "exponential_backoff" and int(retry["max_retry_count"]) >= 1
    assert len(prefixes) == len(CONTAINERS)  # distinct lease prefixes: no two functions steal leases


def test_overdue_timer_registration() -> None:
    b = json.loads(functions()["assessments_overdue"].get_function_json())["bindings"][0]
    assert b["type"] == "timerTrigger" and b["schedule"] == "%OVERDUE_SCHEDULE%"


async def test_a_decoded_batch_becomes_events(app_services: Services) -> None:
    tenant = f"fa-{uuid.uuid4().hex[:8]}"
    fn = functions()["changefeed_risks"].get_user_function()
    docs = decoded([risk(tenant, "r1", 1), risk(tenant, "r2", 2, status="closed")])
    assert type(docs).__name__ == "DocumentList"
    await fn(docs=docs, context=Ctx(Retry(0, 5)))
    evs = await stream(app_services, tenant)
    assert [(e["eventType"], e["entityId"], e["source"]) for e in evs] == [
        ("RISK_CREATED", "r1", "COSMOS_DB"), ("RISK_CREATED", "r2", "COSMOS_DB")]
    # The same batch again (the host redelivers after a crash): nothing new.
    await fn(docs=decoded([risk(tenant, "r1", 1), risk(tenant, "r2", 2, status="closed")]),
             context=Ctx(Retry(0, 5)))
    assert len(await stream(app_services, tenant)) == 2


async def deadletters(tenant: str, **headers: str) -> tuple[int, Any]:
    status, _, body = await invoke("list_deadletters", "GET", f"/deadletters/{tenant}", route={"tenantId": tenant},
                                   headers=headers or None)
    return status, body


async def test_transient_failure_raises_until_the_last_retry_then_dead_letters(app_services: Services) -> None:
    tenant = f"fa-{uuid.uuid4().hex[:8]}"
    fn = functions()["changefeed_controls"].get_user_function()
    batch = [{"id": "c1", "tenantId": tenant, "lastTest": {"result": "fail", "testedAt": "2026-11-02T00:00:00Z"},
              "_lsn": 7, "_ts": 1_790_000_000}]
    # Break the tenant's stream (a key of the wrong type): every XADD fails. Without the retry queue
    # (as when it cannot be written) the failure reaches the change-feed function.
    await app_services.redis.set(stream_key(tenant), "not a stream")
    app_services.pipeline.parker = None
    with pytest.raises(RetryBatch):
        await fn(docs=decoded(batch), context=Ctx(Retry(0, 5)))
    with pytest.raises(RetryBatch):
        await fn(docs=decoded(batch), context=Ctx(Retry(4, 5)))
    await fn(docs=decoded(batch), context=Ctx(Retry(5, 5)))  # the last retry: dead-letters, does not raise
    status, listed = await deadletters(tenant)
    assert status == 200 and {(d["kind"], d["container"]) for d in listed["deadLetters"]} == {
        ("changefeed-event", "controls")}
    assert sorted(d["event"]["eventType"] for d in listed["deadLetters"]) == [
        "CONTROL_CREATED", "CONTROL_FAILED", "CONTROL_TESTED"]
    await app_services.redis.delete(stream_key(tenant))
    status, _, replayed = await invoke("replay_deadletters", "POST", f"/deadletters/{tenant}/replay", {},
                                       route={"tenantId": tenant})
    assert status == 200 and replayed["counts"] == {"published": 3}
    assert [e["eventType"] for e in await stream(app_services, tenant)] == [
        "CONTROL_CREATED", "CONTROL_TESTED", "CONTROL_FAILED"]  # in the order the change gave them
    status, _, trail = await invoke("get_audit", "GET", f"/audit/{tenant}", route={"tenantId": tenant})
    assert [a["action"] for a in trail["items"]] == ["deadletters.replay"]


async def test_no_retry_policy_context_counts_as_final(app_services: Services) -> None:
    tenant = f"fa-{uuid.uuid4().hex[:8]}"
    fn = functions()["changefeed_risks"].get_user_function()
    await app_services.redis.set(stream_key(tenant), "x")
    app_services.pipeline.parker = None  # the failure must reach the function (no retry queue)
    await fn(docs=decoded([risk(tenant, "r1", 1)]), context=Ctx(None))
    assert (await deadletters(tenant))[1]["count"] == 1
    await app_services.redis.delete(stream_key(tenant))


async def test_null_and_tenantless_documents_are_dead_lettered_for_admins(app_services: Services) -> None:
    fn = functions()["changefeed_policies"].get_user_function()
    marker = uuid.uuid4().hex
    await fn(docs=decoded([None, {"id": marker, "_lsn": 1, "_ts": 1}]), context=Ctx(Retry(0, 5)))
    rows = (await app_services.deadletters.list("_unmapped", limit=1000)).items
    mine = [d for d in rows if isinstance(d["document"], dict) and d["document"].get("id") == marker]
    assert len(mine) == 1 and "tenantId" in mine[0]["reason"] and mine[0]["container"] == "policies"
    assert any(d["document"] is None and "JSON object" in d["reason"] for d in rows)
    # Over HTTP: an admin lists them (and its replay is audited under _unmapped); a tenant caller may not.
    status, listed = await deadletters("_unmapped")
    assert status == 200 and any(d["id"] == mine[0]["id"] for d in listed["deadLetters"])
    status, _ = await deadletters("_unmapped", **auth_headers(["acme"]))
    assert status == 403
    status, _, replayed = await invoke("replay_deadletters", "POST", "/deadletters/_unmapped/replay",
                                       {"ids": [mine[0]["id"]]}, route={"tenantId": "_unmapped"})
    assert status == 200 and replayed["results"][0]["result"] == "failed"  # still names no tenant
    assert "tenantId" in replayed["results"][0]["error"]
    status, _, trail = await invoke("get_audit", "GET", "/audit/_unmapped", route={"tenantId": "_unmapped"})
    assert status == 200 and trail["items"][0]["action"] == "deadletters.replay"
