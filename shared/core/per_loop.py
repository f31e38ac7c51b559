"""One instance of something per running event loop.

Async SDK clients (Azure, redis.asyncio, aiohttp) are bound to the event loop that made them. The
Functions worker runs one loop for the life of the process, so "one per loop" is "one per
instance"; tests get a new loop per test and so a fresh set. Entries go with their loop.
"""
from __future__ import annotations

import asyncio
import weakref
from typing import Callable, Generic, Protocol, TypeVar


class _Closeable(Protocol):
    async def close(self) -> None: ...


T = TypeVar("T", bound=_Closeable)


class PerLoop(Generic[T]):
    def __init__(self) -> None:
        self._items: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T]" = weakref.WeakKeyDictionary()

    def get(self, build: Callable[[], T]) -> T:
        """This loop's instance, built on first use."""
        loop = asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is None:
            item = self._items[loop] = build()
        return item

    def pop(self) -> T | None:
        """Forget this loop's instance and hand it back (to be closed), if there is one."""
        return self._items.pop(asyncio.get_running_loop(), None)

    async def discard(self) -> None:
        """Forget this loop's instance and close it, if there is one."""
        item = self.pop()
        if item is not None:
            await item.close()
