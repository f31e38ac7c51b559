"""Every producer of queue messages writes what the queue trigger reads.

A message written by each producer (the retry queue: parking, re-enqueueing, replay; the vector
destination) is picked up by the local runner's queue listener (devhost.queue_driver, which decodes
base64 text as the Functions host does) and handed to a function as exactly the bytes the producer
meant; nothing goes to the poison queue. The runner's own poison move copies text unchanged
(tests/test_devhost_queue.py).
"""
from __future__ import annotations

import base64
import dataclasses
import uuid
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient

from devhost.app_loader import load_functions
from devhost.queue_driver import QueueOptions, QueueWorker
from shared.destinations.base import publish_one
from shared.destinations.vector import VectorQueueDestination
from shared.enrich import enrich, now_iso
from shared.models import EventIn, StreamConfig
from shared.retries import RetryMessage
from shared.settings import Settings
from shared.vector.messages import decode_message
from tests.delivery_helpers import isolated_services
from tests.devhost_apps import queue_app


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, storage_connection_string: str) -> Any:
    """A queue listener of the runner on a given queue, calling a function that records each body."""
    monkeypatch.setenv("TEST_QUEUE", "unused")
    monkeypatch.setenv("TEST_STORAGE", storage_connection_string)
    queue_app.SEEN.clear()
    queue_app.GATE = None
    [spec] = load_functions("tests.devhost_apps.queue_app")

    def make(queue: str) -> QueueWorker:
        return QueueWorker(dataclasses.replace(spec, trigger={**spec.trigger, "queueName": queue}), QueueOptions())

    return make


async def _raw(conn: str, queue: str) -> list[str]:
    """The messages' text as stored (peeked, no decoding)."""
    client = QueueClient.from_connection_string(conn, queue)
    try:
        return [m.content for m in await client.peek_messages(max_messages=32)]
    finally:
        await client.close()


async def _trigger_once(worker: QueueWorker) -> bytes:
    """Let the runner's listener take the one message waiting; the bytes the function was given."""
    try:
        assert await worker.poll_once() == 1
    finally:
        await worker.close()
    assert (worker.succeeded, worker.poisoned) == (1, 0)
    [(body, _, _)] = queue_app.SEEN
    return body


def _event(tenant: str, n: int) -> Any:
    return enrich(EventIn.model_validate({"tenantId": tenant, "eventType": "RISK_CREATED", "source": "ARCHER_GRC",
                                          "action": "CREATE", "entityId": f"r-{n}", "entityType": "risk",
                                          "data": {"title": f"Risk {n} é ✓"}}), ingested_at=now_iso())


async def test_retry_queue_messages_reach_the_trigger_as_written(
        app_env: dict[str, str], recorder: Any, storage_connection_string: str) -> None:
    async with isolated_services() as svc:
        tenant = "qc-" + uuid.uuid4().hex[:8]
        ev = _event(tenant, 1)
        msg = RetryMessage(tenantId=tenant, destination="redis", attempt=2, firstFailureAt=now_iso(),
                           lastError="redis unavailable: ConnectionError", event=ev.to_dict())
        await svc.retries.send(msg, 0)
        meant = msg.model_dump_json(exclude_none=True)
        assert await _raw(storage_connection_string, svc.retries.name) == [
            base64.b64encode(meant.encode()).decode()]  # base64 text on the wire
        body = await _trigger_once(recorder(svc.retries.name))
        assert body == meant.encode()
        assert RetryMessage.model_validate_json(body) == msg


async def test_vector_queue_messages_reach_the_trigger_as_written(
        recorder: Any, storage_connection_string: str) -> None:
    settings = Settings.from_env({"STORAGE_CONNECTION_STRING": storage_connection_string,
                                  "VECTOR_QUEUE": "vec-" + uuid.uuid4().hex[:12]})
    tenant = "qc-" + uuid.uuid4().hex[:8]
    events = [_event(tenant, n) for n in range(5)]
    dest = VectorQueueDestination(settings)
    try:
        deliveries = await publish_one(dest, events, None, StreamConfig.default(tenant))  # type: ignore[arg-type]
    finally:
        await dest.close()
    assert [d.status for d in deliveries] == ["delivered"] * 5
    [raw] = await _raw(storage_connection_string, settings.vector_queue)
    body = await _trigger_once(recorder(settings.vector_queue))
    assert body == base64.b64decode(raw)
    items = decode_message(body)
    assert [i.eventId for i in items] == [e.eventId for e in events]
    assert "Risk 0 é ✓" in items[0].text  # non-ASCII text survives the round trip
