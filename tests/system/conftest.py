"""System tier fixtures: one stack of local stand-ins and one running app for the session.

Tests that need other settings, or that stop services, start their own (`start_app`, `Stack`).
After every test, every `<queue>-poison` queue must be empty: a message the host would give up
on is a delivery nobody retries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.system.harness import App, Stack, app_env, start_app

STACK = ("redis", "azurite", "cosmos", "kafka")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("system-stack"))
    try:
        s.start(STACK)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def app(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    work: Path = tmp_path_factory.mktemp("system-app")
    running = start_app(app_env(stack, work), work)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def no_poison(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("stack")
    poisoned = {q: n for q, n in stack.poison_counts().items() if n}
    assert not poisoned, f"messages moved to poison queues: {poisoned}"
