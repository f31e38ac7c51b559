"""System tier fixtures: one stack of local stand-ins and one running app for the session.

Tests that stop services use `breakable`: a second stack whose Redis and Azurite are durable (an
fsync'd AOF, data on disk, as the real services keep what they acknowledged) with an app of its own
(short Kafka delivery timeout); a test may stop any of its services by PID and must leave them
running (the fixture checks). Tests that need still other settings start their own (`start_app`,
`Stack`). After every test, every `<queue>-poison` queue must be empty: a message the host would
give up on is a delivery nobody retries. A failing test's report ends with what the runners logged
while it ran (warnings, errors, each timer or queue invocation's outcome): a CI run keeps only that.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest

from tests.system.harness import APP_LOGS, App, Stack, app_env, start_app

STACK = ("redis", "azurite", "cosmos", "kafka")
BREAKABLE = ("redis-durable", "azurite-durable", "cosmos", "kafka")
# The breakable app's Kafka producer gives up on a message after 2 s (the sample says 30 s), so a
# stopped broker turns into failed, retried deliveries within seconds.
BREAKABLE_KAFKA_DELIVERY_TIMEOUT_MS = 2000
BREAKABLE_QUEUE_LEASE_SECONDS = 20


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


@pytest.fixture(scope="session")
def breakable_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App]]:
    work: Path = tmp_path_factory.mktemp("breakable")
    s = Stack(work / "stack")
    try:
        s.start(BREAKABLE)
        # A queue message whose dequeue answer is lost when storage dies stays leased until the
        # lease ends: 20 s here instead of the host's 10 minutes, so such a retry is seen in time.
        running = start_app(app_env(s, work, KAFKA_DELIVERY_TIMEOUT_MS=str(BREAKABLE_KAFKA_DELIVERY_TIMEOUT_MS),
                                    SYSTEM_PERFORMANCE_EVENTS="false"), work / "app",
                            "--queue-lease-seconds", str(BREAKABLE_QUEUE_LEASE_SECONDS))
        try:
            yield s, running
        finally:
            running.stop()
    finally:
        s.stop()


@pytest.fixture
def breakable(breakable_session: tuple[Stack, App]) -> Iterator[tuple[Stack, App]]:
    """The breakable stack and its app; every service must be running again when the test ends."""
    stack, running = breakable_session
    yield stack, running
    stopped = [name for name in stack.running if not stack.is_up(name)]
    for name in stopped:  # leave it usable for the next test, then fail this one
        stack.up(name)
    assert not stopped, f"the test left services stopped: {stopped}"
    assert running.alive(), "the breakable app died"


@pytest.fixture(autouse=True)
def no_poison(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    stacks: list[Stack] = []
    if "stack" in request.fixturenames:
        stacks.append(request.getfixturevalue("stack"))
    if "breakable" in request.fixturenames:  # its session part is still up after the test's teardown
        stacks.append(request.getfixturevalue("breakable_session")[0])
    for stack in stacks:
        assert not (poisoned := stack.poison_counts()), f"messages moved to poison queues: {poisoned}"


# A failing test shows what the runners logged while it ran, as far as it says why: warnings, errors
# with their tracebacks, and each non-HTTP invocation's outcome (timers, queue messages, jobs).
_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+)")
LOG_LINES_SHOWN = 60
_LOG_START = pytest.StashKey[dict[Path, int]]()


def _telling(lines: list[str]) -> list[str]:
    out: list[str] = []
    keep = False
    for line in lines:
        m = _LINE.match(line)
        if m:
            level, logger = m.groups()
            keep = level in ("WARNING", "ERROR", "CRITICAL") or logger.startswith("grc.jobs") \
                or "Executed 'Functions." in line
        if keep:
            out.append(line[:300])
    return out[-LOG_LINES_SHOWN:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    item.stash[_LOG_START] = {p: p.stat().st_size for p in APP_LOGS if p.exists()}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    start = item.stash.get(_LOG_START, {})
    for path in APP_LOGS:
        if not path.exists():
            continue
        with path.open("rb") as f:
            f.seek(start.get(path, 0))
            lines = f.read().decode(errors="replace").splitlines()
        if shown := _telling(lines):
            rep.sections.append((f"{path.name}: warnings, errors and invocations during the test",
                                 "\n".join(shown)))
