"""Real local services for the suite: started once per session on free ports, stopped by PID."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from localdev import services

ROOT = Path(__file__).resolve().parent.parent


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
