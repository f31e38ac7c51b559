"""Vector search destination: publish only renders each event's text and enqueues it.

Embedding takes milliseconds per event locally and a network round trip in Azure, so it never
runs on the publish path: events go, batched into few messages, to the Storage queue
VECTOR_QUEUE, and the queue-triggered function `index_vectors` embeds and upserts them
(`shared.vector.indexer`). An event is `delivered` here once its message is in the queue; the
queue's approximate length is the destination's backlog (`vector_backlog`, and `health()`).
"""
from __future__ import annotations

import asyncio
import time
from typing import Sequence

from azure.core.exceptions import AzureError
from azure.storage.queue.aio import QueueServiceClient

from shared.core.health import DependencyHealth
from shared.core.results import Delivery
from shared.core.settings import Settings
from shared.destinations.base import Chunk, delivered, failed, failed_all
from shared.storage.clients import queue_service
from shared.storage.lazy import LazyQueue
from shared.vector.messages import IndexItem, encode_messages


BACKLOG_DEGRADED_MESSAGES = 5_000  # ~ hundreds of thousands of events waiting to be embedded
MAX_CONCURRENT_SENDS = 8


class VectorQueueDestination:
    type = "vector"

    def __init__(self, settings: Settings, queues: QueueServiceClient | None = None) -> None:
        """`queues`: the container's Queue service client (shared, not closed here); None: an own one."""
        self._settings = settings
        self._owned = queues is None
        self._service: QueueServiceClient | None = queues
        self._queue: LazyQueue | None = None
        self._sends = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

    def _lazy(self) -> LazyQueue:
        if self._queue is None:
            if self._service is None:
                self._service = queue_service(self._settings)
            self._queue = LazyQueue(self._service, self._settings.vector_queue)
        return self._queue

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]:
        """The events of every chunk, packed into as few messages as fit (an item names its tenant),
        sent MAX_CONCURRENT_SENDS at a time."""
        where = [(c, i) for c, ch in enumerate(chunks) for i in range(len(ch.events))]
        out: list[list[Delivery | None]] = [[None] * len(ch.events) for ch in chunks]
        if not where:
            return [[] for _ in chunks]
        try:
            messages = encode_messages([IndexItem.from_event(chunks[c].events[i]) for c, i in where])
        except ValueError as exc:  # cannot happen with bounded texts; never retry it
            return failed_all(self.type, chunks, str(exc), transient=False)
        queue = self._lazy()
        try:
            await queue.get()
        except AzureError as exc:
            return failed_all(self.type, chunks, f"queue unavailable: {type(exc).__name__}")

        async def send(text: str, members: list[int]) -> None:
            async with self._sends:
                try:
                    sent = await queue.send(text)
                    result = delivered(self.type, f"{self._settings.vector_queue}/{sent.id}")
                except AzureError as exc:
                    result = failed(self.type, f"enqueue failed: {type(exc).__name__}", transient=True)
            for m in members:
                c, i = where[m]
                out[c][i] = result

        await asyncio.gather(*(send(text, members) for text, members in messages))
        return [[d or failed(self.type, "not enqueued", transient=True) for d in row] for row in out]

    async def backlog(self) -> int:
        """Approximate number of messages waiting to be indexed (each holds up to ~100 events)."""
        return await self._lazy().depth()

    async def health(self) -> DependencyHealth:
        started = time.perf_counter()
        try:
            backlog = await self.backlog()
        except AzureError as exc:
            return DependencyHealth("vector-queue", "unhealthy", detail=type(exc).__name__)
        # A long backlog means search lags publishing (indexer down or too slow): degraded, not down.
        status = "degraded" if backlog > BACKLOG_DEGRADED_MESSAGES else "healthy"
        return DependencyHealth("vector-queue", status, round((time.perf_counter() - started) * 1000, 1),
                                info={"backlogMessages": backlog})

    async def close(self) -> None:
        if self._queue is not None:
            await self._queue.close()
        if self._owned and self._service is not None:
            await self._service.close()
            self._service = None
        self._queue = None


async def vector_backlog(settings: Settings) -> int:
    """The vector queue's approximate length, for metrics (a short-lived client of its own)."""
    dest = VectorQueueDestination(settings)
    try:
        return await dest.backlog()
    finally:
        await dest.close()
