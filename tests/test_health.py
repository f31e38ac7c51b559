"""GET /health against the real local services, a hanging dependency, and the degraded states."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest
from azure.cosmos import PartitionKey

from shared.app.services import get_services, reset_services
from shared.core.settings import get_settings
from shared.observability.health import recent_health
from tests.functions_client import auth_headers, invoke

Configure = Callable[..., Awaitable[None]]


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung dependency)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)  # read nothing, answer nothing
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    srv.close()


@pytest.fixture
async def configure(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Configure]:
    """Set app settings for this test and rebuild the service container with them."""

    async def apply(**env: str) -> None:
        await reset_services()
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    yield apply
    await reset_services()
    monkeypatch.undo()
    get_settings.cache_clear()


async def test_hanging_redis_and_cosmos_answer_within_the_timeout(configure: Configure, hanging_port: int) -> None:
    await configure(REDIS_PORT=str(hanging_port), COSMOS_DB_ENDPOINT=f"http://127.0.0.1:{hanging_port}",
                    COSMOS_DB_KEY="bG9jYWwtaGVhbHRoLXRlc3Qta2V5LW5vdC1hLXNlY3JldA==", HEALTH_TIMEOUT_SECONDS="1")
    start = time.monotonic()
    status, _, body = await invoke("health", "GET", "/health")
    elapsed = time.monotonic() - start
    assert elapsed < 1 + 1, elapsed
    assert status == 503 and body["status"] == "unhealthy"
    deps = body["dependencies"]
    for name in ("redis", "cosmos"):
        assert deps[name]["status"] == "unhealthy", deps[name]
        assert deps[name]["detail"] == "no answer within 1.0 s"
        assert 900 <= deps[name]["latencyMs"] < 2000
    assert deps["tables"]["status"] in ("healthy", "degraded")  # the others still answer
    assert deps.get("queues", deps.get("retryQueue"))["status"] in ("healthy", "degraded")


async def test_a_hanging_optional_dependency_degrades_but_keeps_serving(configure: Configure,
                                                                         hanging_port: int) -> None:
    await configure(COSMOS_DB_ENDPOINT=f"http://127.0.0.1:{hanging_port}", HEALTH_TIMEOUT_SECONDS="1",
                    COSMOS_DB_KEY="bG9jYWwtaGVhbHRoLXRlc3Qta2V5LW5vdC1hLXNlY3JldA==")
    start = time.monotonic()
    status, _, body = await invoke("health", "GET", "/health")
    assert time.monotonic() - start < 1 + 1
    assert status == 200 and body["status"] == "degraded"
    assert body["dependencies"]["cosmos"]["status"] == "unhealthy"
    assert body["dependencies"]["redis"]["status"] != "unhealthy"


async def test_all_dependencies_healthy_with_latency(configure: Configure, cosmos_server: Any) -> None:
    await configure(**cosmos_server.settings)
    status, headers, body = await invoke("health", "GET", "/health")
    assert status == 200, body
    deps = body["dependencies"]
    queues = "retryQueue" if "retryQueue" in deps else "queues"  # the retry queue's check when deployed
    assert set(deps) == {"redis", "tables", queues, "cosmos", "bindings"}  # bindings: function_app is loaded
    assert {d["status"] for d in deps.values()} <= {"healthy", "degraded"}
    assert all(isinstance(d["latencyMs"], float) for d in deps.values())
    assert deps["redis"]["maxMemoryBytes"] == 1 << 30 and deps["redis"]["memoryPercent"] < 80
    assert headers.get("Cache-Control") == "no-store"
    stored = await recent_health(get_services())  # kept for the failing-destination alert
    assert stored["redis"]["status"] == deps["redis"]["status"]


async def test_slow_answers_are_degraded_not_unhealthy(configure: Configure) -> None:
    await configure(HEALTH_DEGRADED_MS="0.001")
    status, _, body = await invoke("health", "GET", "/health")
    assert status == 200 and body["status"] == "degraded"
    assert body["dependencies"]["tables"]["status"] == "degraded"
    assert body["dependencies"]["tables"]["detail"].startswith("slow: ")


async def test_redis_memory_above_the_alert_threshold_is_degraded(configure: Configure) -> None:
    await configure(ALERT_MEMORY_PERCENT="0.001")
    status, _, body = await invoke("health", "GET", "/health")
    redis = body["dependencies"]["redis"]
    assert status == 200 and redis["status"] == "degraded"
    assert "of maxmemory (threshold 0.001 %)" in redis["detail"]
    assert redis["headroomBytes"] == redis["maxMemoryBytes"] - redis["usedMemoryBytes"]


async def test_built_kafka_destination_reports_health_and_producer_lag(configure: Configure,
                                                                       kafka_broker: Any) -> None:
    from shared.observability import service_stats

    await configure(**kafka_broker.settings)
    services = get_services()
    assert services.destinations.get("kafka") is not None  # built, as a tenant's config would
    status, _, body = await invoke("health", "GET", "/health")
    kafka = body["dependencies"]["kafka"]
    assert status == 200 and kafka["status"] in ("healthy", "degraded") and kafka["brokers"] >= 1
    lag = service_stats.kafka_pending(services)
    assert lag is not None and lag["pendingMessages"] == 0 and lag["pendingBytes"] == 0
    section = await service_stats.service_section(services)
    assert section["kafka"] == lag
    stats = service_stats.system_stats(section, {"kafka": kafka["status"]})
    assert stats.kafka_pending_messages == 0 and stats.destinations_healthy == {"kafka": True}


async def test_strangers_and_tenant_callers_get_states_only_admins_the_figures(configure: Configure,
                                                                              cosmos_server: Any) -> None:
    await configure(**cosmos_server.settings)
    admin = (await invoke("health", "GET", "/health"))[2]  # the suite's default caller is an admin
    assert admin["dependencies"]["redis"]["latencyMs"] is not None and "memoryPercent" in admin["dependencies"]["redis"]
    assert admin["checkedAt"] and admin["time"]
    for headers in ({"authorization": ""}, auth_headers(["acme"]), {"authorization": "Bearer not.a.token"}):
        status, _, body = await invoke("health", "GET", "/health", headers=headers)
        assert status == 200 and set(body) == {"status", "service", "dependencies"}, body
        assert body["dependencies"] == {n: {"status": d["status"]} for n, d in admin["dependencies"].items()}


async def test_checks_run_once_per_cache_period_and_callers_share_a_run(configure: Configure,
                                                                       cosmos_server: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.observability import health as health_api

    await configure(**cosmos_server.settings, HEALTH_CACHE_SECONDS="30")
    runs: list[float] = []
    real = health_api.run_checks

    async def counted(services: Any) -> Any:
        runs.append(time.monotonic())
        await asyncio.sleep(0.2)  # a slow dependency: concurrent callers arrive during the run
        return await real(services)

    monkeypatch.setattr(health_api, "run_checks", counted)
    answers = await asyncio.gather(*(invoke("health", "GET", "/health") for _ in range(25)))
    answers += [await invoke("health", "GET", "/health") for _ in range(5)]
    assert len(runs) == 1, runs
    assert {a[2]["checkedAt"] for a in answers} == {answers[0][2]["checkedAt"]}
    # A period of 0 checks on every call.
    await configure(**cosmos_server.settings, HEALTH_CACHE_SECONDS="0")
    for _ in range(3):
        await invoke("health", "GET", "/health")
    assert len(runs) == 4


async def test_one_cosmos_client_per_instance_for_health_and_the_overdue_timer(configure: Configure,
                                                                              cosmos_server: Any) -> None:
    from shared.app.jobs import run_overdue_check

    await configure(**cosmos_server.settings, HEALTH_CACHE_SECONDS="0",
                    COSMOS_DB_DATABASE=f"health-{time.time_ns()}")
    services = get_services()
    client = await services.cosmos.client()
    db = await client.create_database_if_not_exists(services.settings.cosmos_database)
    await db.create_container_if_not_exists(services.settings.cosmos_assessments_container,
                                            partition_key=PartitionKey("/tenantId"))
    for _ in range(3):
        assert (await invoke("health", "GET", "/health"))[2]["dependencies"]["cosmos"]["status"] != "unhealthy"
        await run_overdue_check()
    assert services.cosmos.opened == 1


async def test_one_managed_identity_credential_per_instance(configure: Configure) -> None:
    """In Azure (no connection string, no Cosmos key) Tables, Queues, the vector queue and Cosmos DB
    share the instance's one credential (constructed only; no token is requested here)."""
    await configure(STORAGE_CONNECTION_STRING="", STORAGE_ACCOUNT_NAME="grcstorage", COSMOS_DB_KEY="",
                    COSMOS_DB_ENDPOINT="https://grc.documents.azure.com:443/")
    services = get_services()
    identity = services.identity()
    assert services.tables.credential is identity and services.queues.credential is identity
    vector = services.destinations.get("vector")
    vector._lazy()  # type: ignore[union-attr]
    assert vector._service is services.queues  # type: ignore[union-attr]  # the container's Queue client
    assert services.cosmos._credential() is identity  # what the one Cosmos client is built with


async def test_a_destination_built_within_the_period_is_checked_at_once(configure: Configure) -> None:
    await configure(HEALTH_CACHE_SECONDS="300")
    first = (await invoke("health", "GET", "/health"))[2]
    assert "vector" not in first["dependencies"]
    get_services().destinations.get("vector")  # a tenant's config routes to it now
    second = (await invoke("health", "GET", "/health"))[2]
    assert second["dependencies"]["vector"]["status"] in ("healthy", "degraded")
    assert (await invoke("health", "GET", "/health"))[2]["checkedAt"] == second["checkedAt"]  # cached again
