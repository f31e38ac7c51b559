"""A bad auth setting never stops change capture (issue 17, item 2).

The runner starts with AUTH_ISSUER empty, which no authenticator can work with. Only the routes that
need a caller identity are refused, with 503 and a problem detail that says authentication is
misconfigured (not a 500, not a 401 that blames the caller); /health, the Cosmos DB triggers, the
timers and the queue triggers keep working.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import orjson
import pytest
from azure.cosmos import CosmosClient, PartitionKey
from redis import Redis

from tests.system.checks import drain_a_parked_delivery, errors_in, registered_functions, run_every_timer
from tests.system.harness import Stack, app_env, start_app, tenant, wait_for


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Its own stand-ins: the session app's change feed would share the lease container."""
    stack = Stack(tmp_path_factory.mktemp("auth-misconfigured"))
    try:
        stack.start(("redis", "azurite", "cosmos"))
        yield stack
    finally:
        stack.stop()


def protected_requests(tenant_id: str) -> list[tuple[str, str, dict[str, object] | None]]:
    """One request of each kind of protected route (write, read, metrics, config), valid otherwise."""
    event = {"tenantId": tenant_id, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE", "data": {}}
    return [("POST", "/events", event), ("GET", f"/events/{tenant_id}", None), ("GET", f"/metrics/{tenant_id}", None),
            ("PUT", f"/stream-config/{tenant_id}", {"enabled": True})]


def test_empty_issuer_refuses_protected_routes_and_nothing_else(own_stack: Stack, tmp_path: Path) -> None:
    env = app_env(own_stack, tmp_path, AUTH_ISSUER="")
    app = start_app(env, tmp_path)
    try:
        t = tenant("noauth")
        assert app.get("/health", anonymous=True).status_code == 200
        # Every kind of protected route, with and without credentials: 503, said plainly.
        for method, path, body in protected_requests(t):
            for headers in ({}, {"authorization": "Bearer not-a-token"}):
                r = app.client.request(method, path, json=body, headers=headers)
                assert r.status_code == 503, (method, path, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.headers["retry-after"] == "60"
                problem = r.json()
                assert problem["status"] == 503 and "misconfigured" in problem["detail"], problem
        log = app.log()
        refusals = [line for line in errors_in(log) if "caller authentication is misconfigured" in line]
        assert len(refusals) == 1 and "AUTH_ISSUER" in refusals[0], errors_in(log)
        assert errors_in(log) == refusals, errors_in(log)  # nothing else went wrong

        # Change capture: a document becomes an event in the tenant's Redis stream (README: `redis`
        # destination, stream grc:{tenantId}:events).
        doc = {"id": f"risk-{t}", "tenantId": t, "status": "open", "createdAt": "2026-11-01T00:00:00Z",
               "updatedAt": "2026-11-01T00:00:00Z"}
        with CosmosClient(env["COSMOS_DB_ENDPOINT"], env["COSMOS_DB_KEY"], connection_verify=False,
                          enable_endpoint_discovery=False) as client:
            db = client.create_database_if_not_exists(env["COSMOS_DB_DATABASE"])
            db.create_container_if_not_exists(env["COSMOS_RISKS_CONTAINER"], PartitionKey("/tenantId")).upsert_item(doc)
        with Redis(host=env["REDIS_HOST"], port=int(env["REDIS_PORT"])) as redis:
            entries = wait_for(lambda: redis.xrange(f"grc:{{{t}}}:events"), 60, 0.3, "the change-feed event")
        event = orjson.loads(entries[0][1][b"e"])
            # CREATED or firstSeen UPDATED, depending on whether the processor had started before the write
        # (docs/change-capture.md); what matters here is that change capture runs at all.
        assert event["eventType"] in ("RISK_CREATED", "RISK_UPDATED"), event
        assert (event["entityId"], event["source"]) == (doc["id"], "COSMOS_DB")
        for name, trigger in registered_functions().items():
            if trigger == "cosmosDBTrigger":
                wait_for(lambda n=name: f"{n}: " in app.log(), 30, what=f"{name} running")
        # Timers and queue triggers.
        run_every_timer(app)
        drain_a_parked_delivery(app, own_stack, env, t, event)
        assert errors_in(app.log()) == refusals, errors_in(app.log())
        assert app.get("/health", anonymous=True).status_code == 200
    finally:
        app.stop()
    assert not own_stack.poison_counts()


def test_local_open_where_app_service_runs_is_refused_not_open(own_stack: Stack, tmp_path: Path) -> None:
    """`jwt+local-open` (make run's mode: no credentials = local admin) where App Service runs the
    app (`WEBSITE_INSTANCE_ID` set): the mode is refused, so a caller without credentials is never an
    admin there; protected routes answer 503 (misconfigured), /health still answers (docs/security.md)."""
    env = app_env(own_stack, tmp_path, AUTH_MODE="jwt+local-open", WEBSITE_INSTANCE_ID="system-test-instance")
    app = start_app(env, tmp_path)
    try:
        t = tenant("openaz")
        assert app.get("/health", anonymous=True).status_code == 200
        for method, path, body in [*protected_requests(t), ("GET", "/deadletters/_unmapped", None)]:
            r = app.client.request(method, path, json=body)  # no credentials at all
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert "misconfigured" in r.json()["detail"]
        refusals = [line for line in errors_in(app.log()) if "caller authentication is misconfigured" in line]
        assert len(refusals) == 1 and "local-open" in refusals[0], errors_in(app.log())
    finally:
        app.stop()
