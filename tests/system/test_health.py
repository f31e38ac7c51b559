"""/health is cheap and says little to strangers (issue 12, item 7)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from localdev import services
from tests.system.harness import App, Stack, app_env, start_app, tenant, wait_for

MINIMAL_KEYS = {"status", "service", "dependencies"}


def _minimal(body: dict[str, object]) -> bool:
    deps = body["dependencies"]
    return set(body) == MINIMAL_KEYS and all(d.keys() == {"status"} for d in deps.values())  # type: ignore[union-attr]


def test_strangers_and_tenants_get_states_only_admins_the_figures(app: App) -> None:
    admin = app.get("/health").json()
    assert {"redis", "tables", "cosmos"} <= set(admin["dependencies"]), admin
    assert all("latencyMs" in d for d in admin["dependencies"].values())
    assert "usedMemoryBytes" in admin["dependencies"]["redis"] and admin["checkedAt"]
    for who in ({"anonymous": True}, {"tenants": [tenant()], "roles": []},
                {"anonymous": True, "headers": {"authorization": "Bearer forged.token.value"}}):
        r = app.get("/health", **who)  # type: ignore[arg-type]
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        body = r.json()
        assert _minimal(body), body
        assert set(body["dependencies"]) == set(admin["dependencies"])


def test_many_callers_cost_one_check_per_period_and_one_cosmos_client(app: App) -> None:
    """600 anonymous requests from 8 connections: the admin view shows the cached results' time, which
    moves at most once per HEALTH_CACHE_SECONDS (5); the instance opened one Cosmos client in all."""
    first = app.get("/health").json()["checkedAt"]

    def burst(_: int) -> set[int]:
        with httpx.Client(base_url=app.base, timeout=30) as c:
            return {c.get("/health").status_code for _ in range(75)}

    with ThreadPoolExecutor(8) as pool:
        codes = set().union(*pool.map(burst, range(8)))
    assert codes == {200}
    seen = {first, app.get("/health").json()["checkedAt"]}
    assert len(seen) <= 2, seen  # the burst took less than two periods on any machine this runs on
    app.run_function("assessments_overdue")  # the overdue timer uses the same client
    wait_for(lambda: "overdue check:" in app.log(), 60, what="an overdue run")
    assert app.log().count("Cosmos DB client opened") == 1, "a Cosmos client per call"


@pytest.fixture
def own_stack(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path / "stack").start(("redis", "azurite", "cosmos"))
    yield stack  # type: ignore[misc]
    stack.stop()


def test_redis_down_is_503_and_recovers(own_stack: Stack, tmp_path: Path) -> None:
    app = start_app(app_env(own_stack, tmp_path / "app", HEALTH_CACHE_SECONDS="1"), tmp_path / "app")
    try:
        assert app.get("/health", anonymous=True).status_code == 200
        redis = own_stack.running["redis"]
        services.stop(redis.proc, 2.0)
        down = wait_for(lambda: (r if (r := app.get("/health", anonymous=True)).status_code == 503 else None), 30,
                        what="503 while Redis is down")
        assert down.json()["status"] == "unhealthy" and _minimal(down.json())
        assert down.json()["dependencies"]["redis"] == {"status": "unhealthy"}
        own_stack.running["redis"] = services.start("redis", own_stack.work / "redis", redis.ports)
        wait_for(lambda: app.get("/health", anonymous=True).status_code == 200, 30, what="200 once Redis is back")
    finally:
        app.stop()
