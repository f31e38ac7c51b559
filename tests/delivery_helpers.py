"""Helpers for delivery tests: an isolated service container, a destination whose Redis is down,
and draining the retry queue through the registered queue function."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from azure.functions.queue import QueueMessage  # the worker's own type (dequeue count, times)
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from localdev import services as localdev_services
from shared import services as services_mod
from shared.destinations.redis_streams import RedisStreamsDestination
from shared.services import Services
from shared.settings import get_settings
from tests.functions_client import context, registrations

log = logging.getLogger("tests.delivery")


@contextlib.asynccontextmanager
async def isolated_services(**overrides: Any) -> AsyncIterator[Services]:
    """This loop's container with its own retry queue and dead-letter table (names unique per test)."""
    suffix = uuid.uuid4().hex[:8]
    settings = get_settings().model_copy(update={"retry_queue": f"rq-{suffix}", "deadletter_table": f"dl{suffix}",
                                                 **overrides})
    loop = asyncio.get_running_loop()
    previous = services_mod._per_loop.pop(loop, None)
    if previous is not None:
        await previous.close()
    svc = services_mod._per_loop[loop] = Services(settings)
    try:
        yield svc
    finally:
        services_mod._per_loop.pop(loop, None)
        queue = await svc.retries.queue()
        with contextlib.suppress(Exception):
            await queue.delete_queue()
        await svc.close()


def down_redis() -> RedisStreamsDestination:
    """A Redis Streams destination whose server is not there: real connection refusals (transient)."""
    client = Redis(port=localdev_services.free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    return RedisStreamsDestination(client)


def queue_message(m: Any) -> QueueMessage:
    """A received message (content already base64-decoded by the client's policy) as the worker passes it."""
    return QueueMessage(id=m.id, body=m.content.encode() if isinstance(m.content, str) else m.content,
                             dequeue_count=m.dequeue_count, expiration_time=m.expires_on,
                             insertion_time=m.inserted_on, time_next_visible=m.next_visible_on,
                             pop_receipt=m.pop_receipt)


async def receive_raw(svc: Services, n: int = 32) -> list[Any]:
    """Visible messages (decoded), left invisible for 30 s."""
    queue = await svc.retries.queue()
    return [m async for m in queue.receive_messages(messages_per_page=n, max_messages=n, visibility_timeout=30)]


async def drain(svc: Services, timeout: float = 30.0) -> dict[str, int]:
    """Call the registered queue function for every message until the queue is empty (as the host would)."""
    fn = registrations()["drain_retries"]["fn"]
    raw = await svc.retries.queue()
    counts = {"processed": 0, "errors": 0}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs = [m async for m in raw.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=30)]
        async def one(m: Any) -> None:  # a batch runs concurrently, as the host runs it
            try:
                await fn(queue_message(m), context("drain_retries"))
            except Exception:
                log.exception("queue function failed")
                counts["errors"] += 1
                await raw.update_message(m, pop_receipt=m.pop_receipt, visibility_timeout=1)
                return
            await raw.delete_message(m, pop_receipt=m.pop_receipt)
            counts["processed"] += 1

        await asyncio.gather(*(one(m) for m in msgs))
        if not msgs:
            props = await raw.get_queue_properties()
            if props.approximate_message_count == 0:
                return counts
            await asyncio.sleep(0.2)
    raise AssertionError(f"retry queue not empty after {timeout} s: {counts}")
