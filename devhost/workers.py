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
        self.stopping.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=self.stop_timeout)
            except TimeoutError:
                task.cancel()
            except Exception:
                log.exception("%s worker %s ended with an error", self.kind, task.get_name())
        self._tasks.clear()
