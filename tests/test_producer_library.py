"""The producer as an in-process library: the original MCP example, against real Redis + Azurite."""
from __future__ import annotations

import uuid

import orjson
import pytest
from redis.asyncio import Redis

from shared import EventProducer
from shared.core.events import EventIn
from shared.core.settings import Settings
from shared.destinations.redis_streams import stream_key


@pytest.fixture
def settings(redis_port: int, storage_connection_string: str) -> Settings:
    return Settings(REDIS_PORT=redis_port, STORAGE_CONNECTION_STRING=storage_connection_string,
                    STREAM_CONFIG_TABLE="producertest")


async def test_original_mcp_example(settings: Settings, redis: Redis) -> None:
    producer = EventProducer.from_settings(settings)
    try:
        result = await producer.publish_event({
            "tenantId": "tenant-123",
            "eventType": "RISK_UPDATED",
            "source": "ARCHER_GRC",
            "action": "UPDATE",
            "entityId": "rec-1",
            "data": {
                "archerData": {"riskScore": 8.5, "previousScore": 6.0, "owner": "jane.doe"},
                "changeType": "risk_score_updated",
            },
        })
    finally:
        await producer.close()
    assert result.status == "accepted" and result.httpStatus == 201
    assert result.tenantId == "tenant-123" and result.eventId
    [delivery] = result.destinations
    assert delivery.destination == "redis" and delivery.status == "delivered"

    entries = await redis.xrange(stream_key("tenant-123"), min=delivery.ref, max=delivery.ref)
    assert len(entries) == 1
    doc = orjson.loads(entries[0][1][b"e"])
    assert doc["eventId"] == result.eventId and doc["entityId"] == "rec-1"
    assert doc["data"]["changeType"] == "risk_score_updated" and doc["data"]["archerData"]["riskScore"] == 8.5
    total = await redis.hgetall("grc:{tenant-123}:m:total")
    assert int(total[b"acc"]) >= 1


async def test_context_manager_model_input_and_keys(settings: Settings, redis: Redis) -> None:
    tenant = f"lib-{uuid.uuid4().hex[:10]}"
    async with EventProducer.from_settings(settings) as producer:
        ev = EventIn.model_validate({"tenantId": tenant, "eventType": "USER_ACTION", "source": "MCP_SERVER",
                                     "action": "NOTIFY", "data": {"tool": "search"}})
        res = await producer.publish_event(ev, correlation_id="corr-7", idempotency_key="idem-7")
        bad = await producer.publish_event({"tenantId": tenant, "eventType": "USER_ACTION"})
        bulk = await producer.publish_bulk([
            {"tenantId": tenant, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE", "data": {}},
            {"tenantId": tenant, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE"},
        ])
    assert res.status == "accepted" and res.eventId == "idem-7"
    assert bad.status == "rejected" and {e.field for e in bad.errors} == {"source", "action", "data"}
    assert [r.status for r in bulk] == ["accepted", "rejected"] and bulk[1].errors[0].field == "events[1].data"
    entries = await redis.xrange(stream_key(tenant))
    docs = [orjson.loads(f[b"e"]) for _, f in entries]
    assert [d["eventType"] for d in docs] == ["USER_ACTION", "RISK_CREATED"]
    assert docs[0]["correlationId"] == "corr-7"


def test_library_import_does_not_pull_in_functions() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, shared.app.producer; from shared import EventProducer; print('azure.functions' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
