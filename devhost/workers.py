"""The background-worker lifecycle the trigger drivers share: start tasks, stop them on a signal."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("devhost")


class WorkerTasks:
    """One asyncio task per function; `stop()` signals them and waits, cancelling stragglers."""

    def __init__(self, kind: str, stop_timeout: float = 30.0) -> None:
        self.kind = kind
        self.stop_timeout = stop_timeout
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.stopping.clear()
        self._tasks.append(asyncio.create_task(run(self.stopping), name=f"{self.kind}:{name}"))  # type: ignore[arg-type]

    async def stop(self) -> None:
        """All workers are given `stop_timeout` together (one after another, a runner with three queue
        triggers and storage down took 85 s to stop); those still running then are cancelled."""
        self.stopping.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self.stop_timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for task in tasks:
            if task not in late and not task.cancelled() and task.exception() is not None:
                log.error("%s worker %s ended with an error", self.kind, task.get_name(),
                          exc_info=task.exception())
