"""devhost's queue driver against Azurite: delivery, deletion, redelivery and the poison queue."""
from __future__ import annotations

import asyncio
import os
import uuid
from typing import Iterator

import pytest
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from devhost import runner
from devhost.app_loader import load_functions
from devhost.queue_driver import QueueDriver, QueueOptions
from tests import queue_app

pytestmark = pytest.mark.usefixtures("app_env")


@pytest.fixture
def queue_name(app_env: dict[str, str]) -> Iterator[str]:
    name = "qd-" + uuid.uuid4().hex[:10]
    os.environ["TEST_QUEUE"] = name
    queue_app.SEEN.clear()
    yield name
    os.environ.pop("TEST_QUEUE", None)


def client(name: str, encode: bool = True) -> QueueClient:
    kw = {"message_encode_policy": TextBase64EncodePolicy()} if encode else {}
    return QueueClient.from_connection_string(os.environ["STORAGE_CONNECTION_STRING"], name, **kw)


def test_runner_maps_queue_triggers_to_the_driver() -> None:
    assert "queueTrigger" in runner.DRIVERS
    specs = {s.name: s for s in load_functions("function_app")}
    drain = specs["drain_retries"]
    assert drain.trigger_type == "queueTrigger"
    assert drain.trigger["queueName"] == os.environ.get("RETRY_QUEUE", "delivery-retries")


async def test_success_deletes_failure_redelivers_then_poisons(queue_name: str) -> None:
    [spec] = load_functions("tests.queue_app")
    assert spec.trigger["queueName"] == queue_name  # %TEST_QUEUE% resolved
    driver = QueueDriver([spec], QueueOptions(max_dequeue_count=3, visibility_timeout=0))
    q = client(queue_name)
    await q.create_queue()
    await q.send_message("ok-1")
    await q.send_message("fail-1")
    raw = client(queue_name, encode=False)
    await raw.send_message("not base64 at all!")
    for _ in range(10):
        await driver.drain()
        props = await q.get_queue_properties()
        if props.approximate_message_count == 0:
            break
        await asyncio.sleep(0.1)
    ok = [s for s in queue_app.SEEN if s["body"] == "ok-1"]
    bad = [s for s in queue_app.SEEN if s["body"] == "fail-1"]
    assert len(ok) == 1 and ok[0]["dequeue_count"] == 1 and ok[0]["inserted"] is not None and ok[0]["pop_receipt"]
    assert [s["dequeue_count"] for s in bad] == [1, 2, 3]
    assert len({s["id"] for s in bad}) == 1
    poison = client(queue_name + "-poison", encode=False)
    contents = sorted([m.content async for m in poison.receive_messages(max_messages=10)])
    assert contents == sorted(["ZmFpbC0x", "not base64 at all!"])  # as sent: base64 of 'fail-1'
    assert (await q.get_queue_properties()).approximate_message_count == 0
    await driver.stop()
    await q.delete_queue()
    await poison.delete_queue()
    for c in (q, raw, poison):
        await c.close()


async def test_started_driver_polls_in_the_background(queue_name: str) -> None:
    [spec] = load_functions("tests.queue_app")
    driver = QueueDriver([spec], QueueOptions(max_polling_interval=0.2))
    await driver.start()
    q = client(queue_name)
    await q.send_message("ok-bg")
    for _ in range(50):
        if any(s["body"] == "ok-bg" for s in queue_app.SEEN):
            break
        await asyncio.sleep(0.1)
    await driver.stop()
    assert [s["body"] for s in queue_app.SEEN] == ["ok-bg"]
    await q.delete_queue()
    await q.close()
