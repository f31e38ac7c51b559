"""Work through many items a few at a time, within a time budget: the hourly retention purges.

A purge has more to do (expired tenant-hours, tenants' old documents) than one request can carry, and a
timer run must end within the function timeout; so each item is started only before the deadline and
whatever is left waits for the next run. The first failure (storage down) cancels the rest and is raised
as itself, not as an ExceptionGroup: the host's retry policy and the log see the storage error.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def each_within(items: Iterable[T], work: Callable[[T], Awaitable[None]], *, concurrency: int,
                      deadline: float) -> int:
    """Run `work` on each item, at most `concurrency` at once, starting none after `deadline`
    (`time.monotonic()`); returns how many were done."""
    todo = iter(items)
    done = 0

    async def worker() -> None:
        nonlocal done
        for item in todo:  # one iterator: each item taken by one worker
            if time.monotonic() > deadline:
                return
            await work(item)
            done += 1

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return done
