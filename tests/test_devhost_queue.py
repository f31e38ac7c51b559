"""devhost's queue driver on a real Azurite queue: base64 decoding, delete on success, retries
up to maxDequeueCount, then the poison queue."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from devhost.app_loader import load_functions
from devhost.queue_driver import QueueDriver, QueueOptions
from tests.devhost_apps import queue_app


@pytest.fixture
def queue_env(monkeypatch: pytest.MonkeyPatch, storage_connection_string: str) -> str:
    name = "q-" + uuid.uuid4().hex[:12]
    monkeypatch.setenv("TEST_QUEUE", name)
    monkeypatch.setenv("TEST_STORAGE", storage_connection_string)
    queue_app.SEEN.clear()
    return name


async def _wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_messages_are_delivered_retried_and_poisoned(queue_env: str, storage_connection_string: str) -> None:
    specs = load_functions("tests.devhost_apps.queue_app")
    assert [s.trigger["queueName"] for s in specs] == [queue_env]
    sender = QueueClient.from_connection_string(storage_connection_string, queue_env,
                                                message_encode_policy=TextBase64EncodePolicy())
    await sender.create_queue()
    await sender.send_message("hello")
    await sender.send_message("boom")
    driver = QueueDriver(specs, QueueOptions(batch_size=4, max_dequeue_count=3))
    await driver.start()
    try:
        await _wait_for(lambda: sum(1 for b, _ in queue_app.SEEN if b == b"boom") == 3)
        poison = QueueClient.from_connection_string(storage_connection_string, f"{queue_env}-poison")
        got: list[str] = []

        async def poisoned() -> None:
            while not got:
                got.extend([m.content async for m in poison.receive_messages()])
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poisoned(), 10)
        await poison.close()
    finally:
        await driver.stop()
    assert (b"hello", 1) in queue_app.SEEN
    assert [c for b, c in queue_app.SEEN if b == b"boom"] == [1, 2, 3]
    assert got == [TextBase64EncodePolicy().encode("boom")]  # moved as it was, still base64
    props = await sender.get_queue_properties()
    assert props.approximate_message_count == 0  # hello deleted, boom moved
    await sender.close()


def test_queue_options_from_host_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert QueueOptions.from_host_json(tmp_path / "missing.json") == QueueOptions()  # the host's defaults
    host = tmp_path / "host.json"
    host.write_text('{"extensions": {"queues": {"batchSize": 2, "maxDequeueCount": 7, '
                    '"visibilityTimeout": "00:00:30", "maxPollingInterval": "00:00:05", "messageEncoding": "none"}}}')
    opts = QueueOptions.from_host_json(host)
    assert (opts.batch_size, opts.max_dequeue_count, opts.visibility_timeout_s, opts.max_poll_s, opts.encoding) == (
        2, 7, 30.0, 5.0, "none")
