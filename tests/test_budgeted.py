"""shared/core/budgeted.py: bounded concurrency, a deadline for starting work, failures raised as such."""
from __future__ import annotations

import asyncio
import time

import pytest

from shared.core.budgeted import each_within


async def test_at_most_concurrency_at_once_and_every_item_done() -> None:
    running, peak, seen = 0, 0, []

    async def work(n: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        seen.append(n)
        running -= 1

    assert await each_within(range(20), work, concurrency=4, deadline=time.monotonic() + 60) == 20
    assert sorted(seen) == list(range(20)) and peak == 4


async def test_nothing_is_started_after_the_deadline() -> None:
    seen: list[int] = []

    async def work(n: int) -> None:
        seen.append(n)

    assert await each_within(range(5), work, concurrency=2, deadline=time.monotonic() - 1) == 0
    assert seen == []


async def test_the_first_failure_is_raised_as_itself_and_stops_the_rest() -> None:
    seen: list[int] = []

    async def work(n: int) -> None:
        if n == 3:
            raise ConnectionError("storage down")
        await asyncio.sleep(0.01)
        seen.append(n)

    with pytest.raises(ConnectionError, match="storage down"):
        await each_within(range(100), work, concurrency=2, deadline=time.monotonic() + 60)
    assert len(seen) < 10  # the others were cancelled, not run to the end
