"""devhost's queue driver on a real Azurite queue keeps the Functions host's queue-trigger contract
(devhost/queue_driver.py cites the documented defaults): base64 text, maxDequeueCount then
`<queue>-poison`, visibilityTimeout between attempts, batchSize and newBatchThreshold."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from devhost.app_loader import ROOT, load_functions
from devhost.queue_driver import QueueDriver, QueueOptions
from localdev import services
from tests.devhost_apps import queue_app


@pytest.fixture
def queue_env(monkeypatch: pytest.MonkeyPatch, storage_connection_string: str) -> str:
    name = "q-" + uuid.uuid4().hex[:12]
    monkeypatch.setenv("TEST_QUEUE", name)
    monkeypatch.setenv("TEST_STORAGE", storage_connection_string)
    queue_app.SEEN.clear()
    queue_app.GATE = None
    return name


@pytest.fixture
async def sender(queue_env: str, storage_connection_string: str) -> AsyncIterator[QueueClient]:
    """Writes base64 text, as every producer of the app does (shared.storage.clients.queue_client)."""
    client = QueueClient.from_connection_string(storage_connection_string, queue_env,
                                                message_encode_policy=TextBase64EncodePolicy())
    await client.create_queue()
    yield client
    await client.delete_queue()
    await client.close()


async def _wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _poisoned(conn: str, queue: str, expect: int, timeout: float = 10.0) -> list[str]:
    """The raw text of the messages in `<queue>-poison` (no decoding: what the host copied)."""
    poison = QueueClient.from_connection_string(conn, f"{queue}-poison")
    got: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expect and time.monotonic() < deadline:
            try:
                got.extend([m.content async for m in poison.receive_messages(visibility_timeout=60)])
            except Exception:  # noqa: BLE001 - the poison queue does not exist yet
                pass
            await asyncio.sleep(0.05)
    finally:
        await poison.close()
    return got


def _seen(body: bytes) -> list[tuple[int, float]]:
    return [(c, t) for b, c, t in queue_app.SEEN if b == body]


async def _until_poisoned(body: bytes, options: QueueOptions, conn: str, queue: str,
                          timeout: float) -> QueueDriver:
    """Runs the queue app until `body` has had its maxDequeueCount attempts and went to the poison
    queue; the stopped driver."""
    driver = QueueDriver(load_functions("tests.devhost_apps.queue_app"), options)
    await driver.start()
    try:
        await _wait_for(lambda: len(_seen(body)) == options.max_dequeue_count, timeout=timeout)
        assert await _poisoned(conn, queue, 1)
    finally:
        await driver.stop()
    return driver


async def test_delivered_then_retried_up_to_the_default_max_dequeue_count_then_poisoned(
        queue_env: str, sender: QueueClient, storage_connection_string: str) -> None:
    specs = load_functions("tests.devhost_apps.queue_app")
    assert [s.trigger["queueName"] for s in specs] == [queue_env]
    assert QueueOptions().max_dequeue_count == 5  # the host's default
    await sender.send_message("hello")
    await sender.send_message("boom")
    driver = QueueDriver(specs, QueueOptions(batch_size=4))
    await driver.start()
    try:
        await _wait_for(lambda: len(_seen(b"boom")) == 5)
        got = await _poisoned(storage_connection_string, queue_env, 1)
    finally:
        await driver.stop()
    assert [c for c, _ in _seen(b"hello")] == [1]
    assert [c for c, _ in _seen(b"boom")] == [1, 2, 3, 4, 5]  # maxDequeueCount attempts, no sixth
    assert got == [TextBase64EncodePolicy().encode("boom")]  # moved as it was, still base64
    assert (await sender.get_queue_properties()).approximate_message_count == 0  # hello deleted, boom moved
    [worker] = driver.workers
    assert (worker.succeeded, worker.failed, worker.poisoned) == (1, 5, 1)


async def test_a_failed_message_comes_back_after_the_visibility_timeout(
        queue_env: str, sender: QueueClient, storage_connection_string: str) -> None:
    await sender.send_message("boom")
    await _until_poisoned(b"boom", QueueOptions(max_dequeue_count=3, visibility_timeout_s=2),
                          storage_connection_string, queue_env, timeout=30)
    times = [t for _, t in _seen(b"boom")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Invisible for visibilityTimeout after each failure (Azurite keeps whole seconds: >= ~1.9 s).
    assert all(g >= 1.9 for g in gaps), gaps


async def test_a_message_past_function_timeout_fails_and_is_retried_as_any_failure(
        queue_env: str, sender: QueueClient, storage_connection_string: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """host.json's functionTimeout: the late invocation is cancelled and fails, so the message comes
    back after visibilityTimeout with its dequeue count up, and is poisoned after maxDequeueCount."""
    from devhost import invoke as invoke_module

    monkeypatch.setattr(invoke_module, "FUNCTION_TIMEOUT_S", 0.5)
    monkeypatch.setattr(invoke_module._Watchdog, "CHECK_S", 0.05)
    await sender.send_message("late")
    driver = await _until_poisoned(b"late", QueueOptions(max_dequeue_count=2, visibility_timeout_s=1),
                                   storage_connection_string, queue_env, timeout=20)
    assert [c for c, _ in _seen(b"late")] == [1, 2]
    [worker] = driver.workers
    assert (worker.failed, worker.poisoned) == (2, 1)


async def test_a_message_that_is_not_base64_is_poisoned_at_once_without_a_call(
        queue_env: str, storage_connection_string: str) -> None:
    raw = QueueClient.from_connection_string(storage_connection_string, queue_env)  # no encoding: plain text
    await raw.create_queue()
    await raw.send_message('{"not": "base64"}')
    driver = QueueDriver(load_functions("tests.devhost_apps.queue_app"), QueueOptions())
    await driver.start()
    try:
        got = await _poisoned(storage_connection_string, queue_env, 1)
    finally:
        await driver.stop()
        await raw.delete_queue()
        await raw.close()
    assert got == ['{"not": "base64"}'] and queue_app.SEEN == []  # as the host's decoding-failed handler


async def test_batch_size_and_new_batch_threshold(queue_env: str, sender: QueueClient) -> None:
    """batchSize messages per fetch; the next fetch only once the number still running is at or below
    newBatchThreshold, so at most batchSize + newBatchThreshold run at once."""
    for _ in range(12):
        await sender.send_message("hold")
    queue_app.GATE = asyncio.Semaphore(0)
    driver = QueueDriver(load_functions("tests.devhost_apps.queue_app"),
                         QueueOptions(batch_size=4, new_batch_threshold=2))
    [worker] = driver.workers
    await driver.start()
    observe = 0.6  # long enough for the listener to poll several times (it polls at once after a batch)
    try:
        await _wait_for(lambda: len(queue_app.SEEN) == 4)
        await asyncio.sleep(observe)
        assert len(queue_app.SEEN) == 4  # one batch of batchSize; 4 running > threshold 2: no fetch
        queue_app.GATE.release()
        await _wait_for(lambda: worker.running == 3)
        await asyncio.sleep(observe)
        assert len(queue_app.SEEN) == 4  # 3 running, still above the threshold
        queue_app.GATE.release()
        await _wait_for(lambda: len(queue_app.SEEN) == 8)  # 2 running = threshold: a new batch of 4
        await asyncio.sleep(observe)
        assert len(queue_app.SEEN) == 8 and worker.running == 6
        for _ in range(12):
            queue_app.GATE.release()
        await _wait_for(lambda: worker.succeeded == 12)
    finally:
        await driver.stop()
    assert worker.max_running == 6  # batchSize + newBatchThreshold


async def test_a_running_message_stays_leased_past_its_first_lease(queue_env: str, sender: QueueClient) -> None:
    """The lease is renewed at half-time while the function runs, so a long invocation is not run twice."""
    await sender.send_message("hold")
    queue_app.GATE = asyncio.Semaphore(0)
    driver = QueueDriver(load_functions("tests.devhost_apps.queue_app"), QueueOptions(), lease_seconds=2)
    [worker] = driver.workers
    await driver.start()
    try:
        await _wait_for(lambda: len(queue_app.SEEN) == 1)
        await asyncio.sleep(4)  # two lease lengths: without renewal the message would be handed out again
        assert [c for _, c, _ in queue_app.SEEN] == [1]
        queue_app.GATE.release()
        await _wait_for(lambda: worker.succeeded == 1)
    finally:
        await driver.stop()
    assert (await sender.get_queue_properties()).approximate_message_count == 0  # deleted with the renewed receipt


async def test_an_invocation_ending_during_a_renewal_settles_with_the_renewed_receipt(
        queue_env: str, sender: QueueClient) -> None:
    """The function ends while a renewal the queue has already taken is still on its way back. The
    renewal is let finish, not cancelled: cancelled, the runner kept the old pop receipt, the delete
    failed and the message would run again when its lease ended (a clean-clone CI run saw it)."""
    await sender.send_message("hold")
    queue_app.GATE = asyncio.Semaphore(0)
    driver = QueueDriver(load_functions("tests.devhost_apps.queue_app"), QueueOptions(), lease_seconds=2)
    [worker] = driver.workers
    taken, answer = asyncio.Event(), asyncio.Event()
    update = worker.queue.update_message

    async def slow_answer(*args: object, **kwargs: object) -> object:
        renewed = await update(*args, **kwargs)  # the real request: storage has the new receipt
        taken.set()
        await answer.wait()  # its answer is still on the way when the function ends
        return renewed

    worker.queue.update_message = slow_answer  # type: ignore[method-assign]
    await driver.start()
    try:
        await asyncio.wait_for(taken.wait(), 5)
        queue_app.GATE.release()
        await asyncio.sleep(0.3)  # the invocation has ended and waits for the renewal
        assert worker.succeeded == 0
        answer.set()
        await _wait_for(lambda: worker.succeeded == 1)
    finally:
        await driver.stop()
    assert [c for _, c, _ in queue_app.SEEN] == [1]
    assert (await sender.get_queue_properties()).approximate_message_count == 0  # deleted: it will not run again


async def test_a_batch_is_one_get_messages_request(queue_env: str, sender: QueueClient) -> None:
    """The host's listener asks for batchSize messages in one request. The SDK's `max_messages` would
    dequeue them one request each, and storage failing between two requests would strand the messages
    already leased for the whole lease."""
    for _ in range(3):
        await sender.send_message("hello")
    driver = QueueDriver(load_functions("tests.devhost_apps.queue_app"), QueueOptions(batch_size=4))
    [worker] = driver.workers
    asked: list[int | None] = []
    dequeue = worker.queue._client.queue.receive_messages  # the generated Get Messages operation

    async def counted(*args: object, **kwargs: object) -> object:
        asked.append(kwargs.get("number_of_messages"))  # type: ignore[arg-type]
        return await dequeue(*args, **kwargs)

    worker.queue._client.queue.receive_messages = counted  # type: ignore[method-assign]
    try:
        assert len(await worker.receive()) == 3
        assert asked == [4]  # one request for the batch
        assert await worker.receive() == [] and asked == [4, 4]  # an empty queue: one request, no messages
    finally:
        await driver.stop()


def test_queue_options_from_host_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    defaults = QueueOptions.from_host_json(tmp_path / "missing.json")
    assert defaults == QueueOptions()  # the host's defaults
    assert (defaults.batch_size, defaults.new_batch_threshold, defaults.max_dequeue_count,
            defaults.visibility_timeout_s, defaults.max_poll_s, defaults.encoding) == (16, 8, 5, 0.0, 60.0, "base64")
    host = tmp_path / "host.json"
    host.write_text('{"extensions": {"queues": {"batchSize": 2, "maxDequeueCount": 7, '
                    '"visibilityTimeout": "00:00:30", "maxPollingInterval": "00:00:05", "messageEncoding": "none"}}}')
    opts = QueueOptions.from_host_json(host)
    assert (opts.batch_size, opts.new_batch_threshold, opts.max_dequeue_count, opts.visibility_timeout_s,
            opts.max_poll_s, opts.encoding) == (2, 1, 7, 30.0, 5.0, "none")
    host.write_text('{"extensions": {"queues": {"batchSize": 33}}}')
    with pytest.raises(ValueError, match="batchSize"):
        QueueOptions.from_host_json(host)


def test_the_app_says_base64_explicitly() -> None:
    """host.json names the encoding every producer writes (shared.storage.clients.queue_client), so a host
    whose default changed could not silently poison the retry and vector queues."""
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"
    opts = QueueOptions.from_host_json()
    assert opts.encoding == "base64" and opts.max_dequeue_count == 5 and opts.new_batch_threshold == 8


async def test_a_stop_does_not_wait_for_a_receive_that_storage_does_not_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage refusing connections: the SDK retries each receive for over a minute. `make run` stopped
    after 85 s then (three queue triggers, each stop waited 30 s in turn); a stop now ends the receive."""
    port = services.free_port()  # nothing listens there
    monkeypatch.setenv("TEST_QUEUE", "q-" + uuid.uuid4().hex[:12])
    monkeypatch.setenv("TEST_STORAGE", services.azurite_connection_string(port, port, port))
    driver = QueueDriver(load_functions("tests.devhost_apps.queue_app"), QueueOptions())
    await driver.start()
    await asyncio.sleep(1.0)  # the first receive is refused and in the SDK's retry wait
    t0 = time.monotonic()
    await driver.stop()
    assert time.monotonic() - t0 < 2.0
