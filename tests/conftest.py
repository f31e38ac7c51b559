"""Real local services for the suite: started once per session on free ports, stopped by PID."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from localdev import services

ROOT = Path(__file__).resolve().parent.parent

# The settings function_app.py's bindings name as %NAME%, with the sample's values: the host always
# has them, and once any test has imported function_app the app refuses work whose binding setting is
# missing (shared/core/bindings.py). tests/test_bindings.py keeps this list the bindings' own.
BINDING_SETTINGS = ("BACKFILL_QUEUE", "COSMOS_ASSESSMENTS_CONTAINER", "COSMOS_COMPLIANCE_CONTAINER",
                    "COSMOS_CONTROLS_CONTAINER", "COSMOS_DB_DATABASE", "COSMOS_LEASE_CONTAINER",
                    "COSMOS_POLICIES_CONTAINER", "COSMOS_RISKS_CONTAINER", "OVERDUE_SCHEDULE", "RETRY_QUEUE",
                    "VECTOR_QUEUE")
_SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
for _name in BINDING_SETTINGS:
    os.environ.setdefault(_name, _SAMPLE[_name])


@contextlib.contextmanager
def env_overrides(env: dict[str, str]) -> Iterator[None]:
    """Set environment variables (App Settings) for a block, restore them after; settings re-read."""
    from shared.core.settings import get_settings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


def _service(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Running]:
    running = services.start(name, tmp_path_factory.mktemp(name))
    try:
        yield running
    finally:
        services.stop(running.proc)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Running]:
    yield from _service("redis", tmp_path_factory)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Running]:
    yield from _service("azurite", tmp_path_factory)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Running]:
    yield from _service("kafka", tmp_path_factory)


@pytest.fixture(scope="session")
def redis_port(redis_server: services.Running) -> int:
    return redis_server.ports["port"]


@pytest.fixture(scope="session")
def storage_connection_string(azurite: services.Running) -> str:
    return azurite.settings["STORAGE_CONNECTION_STRING"]


@pytest.fixture(scope="session")
def cosmos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Running]:
    yield from _service("cosmos", tmp_path_factory)


@pytest.fixture(scope="session")
def app_env(redis_port: int, storage_connection_string: str) -> Iterator[dict[str, str]]:
    """Point the app's settings at the real local services (process environment, like App Settings)."""
    from devhost.app_loader import load_settings
    from shared.core.settings import get_settings

    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_port),
        "STORAGE_CONNECTION_STRING": storage_connection_string,
        "AzureWebJobsStorage": storage_connection_string,
        # The suite runs with Azure's rules (a caller identity on every protected route); `make run`'s
        # sample adds `+local-open`, tested on its own in test_devhost_e2e.py.
        "AUTH_MODE": "jwt",
        # No Cosmos DB in the general suite (/health would report the sample's 127.0.0.1:8081 down);
        # change-capture tests use the cosmos_server fixture's settings.
        "COSMOS_DB_ENDPOINT": "",
        # Tests count the events in tenant streams; a runner's monitor timer would add a
        # SYSTEM_PERFORMANCE event whenever a minute turns. tests/test_monitor.py turns them on.
        "SYSTEM_PERFORMANCE_EVENTS": "false",
    }
    with env_overrides(env):
        load_settings(ROOT / "local.settings.sample.json")  # the rest of the defaults, env wins
        get_settings.cache_clear()
        yield env


@pytest.fixture
async def app_services(app_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """This test loop's service container, closed afterwards."""
    from shared.app.services import get_services, reset_services

    yield get_services()
    await reset_services()


@pytest.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    """A raw client on the session's Redis, for tests that inspect keys."""
    client = Redis(port=redis_port)
    try:
        yield client
    finally:
        await client.aclose()
