"""Destination `vector`: publish renders and enqueues only (real Azurite queue); the message format."""
from __future__ import annotations

import base64
import uuid

import orjson
import pytest
from azure.storage.queue.aio import QueueClient, QueueServiceClient
from pydantic import ValidationError

from shared.destinations.vector import VectorQueueDestination, vector_backlog
from shared.models import Event, StreamConfig, StreamConfigIn
from shared.settings import Settings
from shared.vector.indexer import IndexItem
from shared.vector.messages import MAX_MESSAGE_BYTES, decode_message, encode_messages
from shared.vector.text import render_event_text
from shared.destinations.base import Chunk, publish_one
from tests.vector_corpus import BANK, CORPUS


def _events(n: int) -> list[Event]:
    out = []
    for i in range(n):
        ev = dict(CORPUS[i % len(CORPUS)])
        out.append(Event.model_validate({**ev, "eventId": f"{ev['eventId']}-{i}", "tenantId": BANK}))
    return out


def test_messages_pack_items_in_order_under_the_queue_cap() -> None:
    items = [IndexItem.from_event(e) for e in _events(300)]
    messages = encode_messages(items)
    assert 1 < len(messages) < 30
    for text, _ in messages:
        assert len(text.encode()) <= MAX_MESSAGE_BYTES
        assert len(base64.b64encode(text.encode())) <= 64 * 1024
    assert [i for _, members in messages for i in members] == list(range(300))
    decoded = [item for text, _ in messages for item in decode_message(text.encode())]
    assert decoded == items


def test_malformed_messages_raise() -> None:
    for body in (b"not json", b'{"v": 2, "items": []}', b'{"v": 1, "items": [{"eventId": "x"}]}', b"[]"):
        with pytest.raises(ValueError):
            decode_message(body)


def test_stream_config_accepts_the_vector_destination() -> None:
    cfg = StreamConfigIn.model_validate({"destinations": [{"type": "redis"}, {"type": "vector"}]})
    assert [d.type for d in cfg.destinations] == ["redis", "vector"]
    with pytest.raises(ValidationError) as err:
        StreamConfigIn.model_validate({"destinations": [{"type": "vector", "config": {"model": "x"}}]})
    assert "model" in str(err.value)


async def queued_items(settings: Settings) -> list[IndexItem]:
    """What the queue trigger will get: base64 on the wire (the Functions default), our JSON inside."""
    queue = QueueClient.from_connection_string(settings.storage_connection_string, settings.vector_queue)
    try:
        items = []
        async for msg in queue.receive_messages(max_messages=32):
            items.extend(decode_message(base64.b64decode(msg.content)))
    finally:
        await queue.close()
    return items


@pytest.fixture
def settings(storage_connection_string: str) -> Settings:
    return Settings.from_env({"STORAGE_CONNECTION_STRING": storage_connection_string,
                              "VECTOR_QUEUE": "vec-" + uuid.uuid4().hex[:12]})


async def test_publish_enqueues_rendered_texts_in_few_messages(settings: Settings) -> None:
    events = _events(120)
    dest = VectorQueueDestination(settings)
    try:
        deliveries = await publish_one(dest, events, None, StreamConfig.default(BANK))  # type: ignore[arg-type]
        assert [d.status for d in deliveries] == ["delivered"] * 120
        assert all(d.ref and d.ref.startswith(settings.vector_queue + "/") for d in deliveries)
        expected_messages = len(encode_messages([IndexItem.from_event(e) for e in events]))
        assert await dest.backlog() == expected_messages
        assert await vector_backlog(settings) == expected_messages
        health = await dest.health()
        assert health.status == "healthy" and health.info["backlogMessages"] == expected_messages
    finally:
        await dest.close()
    items = await queued_items(settings)
    assert {i.eventId for i in items} == {e.eventId for e in events}
    first = next(i for i in items if i.eventId == events[0].eventId)
    assert first.text == render_event_text(events[0]) and first.tenantId == BANK


async def test_unreachable_queue_fails_transiently(settings: Settings) -> None:
    dead = QueueServiceClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        + base64.b64encode(b"k" * 32).decode() + ";QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        retry_total=0)
    dest = VectorQueueDestination(settings, dead)
    deliveries = await publish_one(dest, _events(3), None, StreamConfig.default(BANK))  # type: ignore[arg-type]
    await dest.close()
    await dead.close()
    assert [(d.status, d.transient) for d in deliveries] == [("failed", True)] * 3


def test_message_json_is_compact() -> None:
    (text, _), = encode_messages([IndexItem.from_event(_events(1)[0])])
    doc = orjson.loads(text)
    assert doc["v"] == 1 and "entityType" in doc["items"][0] and "data" not in doc["items"][0]


async def test_long_backlog_is_degraded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.destinations.vector as vector_destination

    dest = VectorQueueDestination(settings)
    try:
        await publish_one(dest, _events(2), None, StreamConfig.default(BANK))  # type: ignore[arg-type]
        assert (await dest.health()).status == "healthy"
        monkeypatch.setattr(vector_destination, "BACKLOG_DEGRADED_MESSAGES", 0)
        health = await dest.health()
        assert health.status == "degraded" and health.info["backlogMessages"] == 1
    finally:
        await dest.close()


async def test_one_call_for_many_tenants_packs_their_items_together(settings: Settings) -> None:
    tenants = [f"vt-{i:03d}" for i in range(60)]
    chunks = [Chunk(StreamConfig.default(t), None, [  # type: ignore[arg-type]
        e.model_copy(update={"tenantId": t}) for e in _events(2)]) for t in tenants]
    dest = VectorQueueDestination(settings)
    try:
        out = await dest.publish(chunks)
        assert [[d.status for d in ds] for ds in out] == [["delivered"] * 2] * 60
        backlog = await dest.backlog()
        assert backlog < 10  # 120 items of 60 tenants share messages; not one message per tenant
    finally:
        await dest.close()
    items = await queued_items(settings)
    assert sorted({i.tenantId for i in items}) == tenants and len(items) == 120
