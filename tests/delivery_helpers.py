"""Helpers for delivery tests: an isolated service container, a destination whose Redis is down,
and draining the retry queue through the registered queue function with the local runner's queue
listener, which decodes each message as the Functions host does (base64 text): a producer that
wrote anything else would see its messages poisoned here too."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from devhost.app_loader import load_functions
from devhost.queue_driver import QueueOptions, QueueWorker
from localdev import services as localdev_services
from shared.app import services as services_mod
from shared.app.services import Services
from shared.core.settings import get_settings
from shared.destinations.redis_streams import RedisStreamsDestination


@contextlib.asynccontextmanager
async def isolated_services(**overrides: Any) -> AsyncIterator[Services]:
    """This loop's container with its own retry queue and dead-letter table (names unique per test)."""
    suffix = uuid.uuid4().hex[:8]
    settings = get_settings().model_copy(update={"retry_queue": f"rq-{suffix}", "deadletter_table": f"dl{suffix}",
                                                 **overrides})
    await services_mod._per_loop.discard()
    svc = services_mod._per_loop.get(lambda: Services(settings))
    try:
        yield svc
    finally:
        services_mod._per_loop.pop()
        queue = await svc.retries.queue()
        with contextlib.suppress(Exception):
            await queue.delete_queue()
        await svc.close()


def down_redis() -> RedisStreamsDestination:
    """A Redis Streams destination whose server is not there: real connection refusals (transient)."""
    client = Redis(port=localdev_services.free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    return RedisStreamsDestination(client)


def queue_worker(function: str, queue_name: str, options: QueueOptions | None = None) -> QueueWorker:
    """The local runner's listener for one of function_app's queue functions, on `queue_name`."""
    spec = next(s for s in load_functions("function_app") if s.name == function)
    return QueueWorker(dataclasses.replace(spec, trigger={**spec.trigger, "queueName": queue_name}),
                       options or QueueOptions(batch_size=32, visibility_timeout_s=1))


async def receive_raw(svc: Services, n: int = 32) -> list[Any]:
    """Visible messages (decoded), left invisible for 30 s."""
    queue = await svc.retries.queue()
    return [m async for m in queue.receive_messages(messages_per_page=n, max_messages=n, visibility_timeout=30)]


async def drain(svc: Services, timeout: float = 30.0) -> dict[str, int]:
    """Run `drain_retries` on every message until the retry queue is empty, as the host would."""
    worker = queue_worker("drain_retries", svc.retries.name)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not await worker.poll_once():
                if (await (await svc.retries.queue()).get_queue_properties()).approximate_message_count == 0:
                    assert worker.poisoned == 0, "retry messages were poisoned"
                    return {"processed": worker.succeeded, "errors": worker.failed}
                await asyncio.sleep(0.2)
    finally:
        await worker.close()
    raise AssertionError(f"retry queue not empty after {timeout} s: {worker.succeeded} processed, {worker.failed} failed")
