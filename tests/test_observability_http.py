"""A request through the registered function and the HTTP adapter, with telemetry exported to a local
ingestion endpoint: the envelopes carry the invocation's operation, the dimensions, and no payload
or secret. The destination is a real Redis Streams destination whose Redis refuses connections."""
from __future__ import annotations

import socket
from typing import Any, AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.app import services as services_mod
from shared.app.services import get_services, reset_services
from shared.destinations.redis_streams import RedisStreamsDestination
from shared.observability import service_stats
from tests.functions_client import invoke
from tests.system.fakes import FakeIngestion
from tests.test_telemetry import (  # noqa: F401 - fixtures
    SECRET,
    SPAN_ID,
    TRACE_ID,
    TRACEPARENT,
    _configure,
    _isolated,
    ingestion,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once closed


@pytest.fixture
async def broken_redis_destination(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    dead = Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    monkeypatch.setitem(services_mod.DESTINATION_FACTORIES, "redis", lambda s: RedisStreamsDestination(dead))
    await reset_services()
    yield
    await reset_services()
    await dead.aclose()


@pytest.mark.usefixtures("broken_redis_destination")
async def test_failed_delivery_envelopes_are_correlated_and_clean(ingestion: tuple[FakeIngestion, str],
                                                                  tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    service_stats._gauge_at = float("-inf")  # the instance gauge is throttled process-wide
    event = {"tenantId": "obs-tenant", "eventType": "RISK_CREATED", "source": "FRONTEND_APP", "action": "CREATE",
             "entityId": "risk-9", "data": {"title": "payload-marker-77", "conn": f"AccountKey={SECRET}"}}
    status, _, body = await invoke("publish_event", "POST", "/events", event, traceparent=TRACEPARENT)
    assert status in (503, 201), body  # 201 when a retry queue parked the failed delivery
    await get_services().failure_hook.drain()  # the SYSTEM_ERROR notice (it fails too, and stops there)
    tel.flush()

    def ready(es: list[dict[str, Any]]) -> bool:
        names = {e["data"]["baseData"].get("metrics", [{}])[0].get("name") for e in es}
        return {"grc.deliveries.failed", "grc.instance.memory_percent"} <= names and any(e["data"]["baseType"] == "MessageData" for e in es)

    envs = sink.wait_for(ready)
    raw = b"".join(sink.raw).decode()
    for leaked in ("payload-marker-77", SECRET, SECRET[:40]):
        assert leaked not in raw

    logs = [e for e in envs if e["data"]["baseType"] == "MessageData"
            and e["data"]["baseData"]["message"].startswith("destination redis failed")]
    assert len(logs) == 1  # one per tenant and destination, not per event; none for the notice
    log = logs[0]
    assert log["tags"]["ai.operation.id"] == TRACE_ID and log["tags"]["ai.operation.parentId"] == SPAN_ID
    assert log["tags"]["ai.operation.name"] == "publish_event"
    props = log["data"]["baseData"]["properties"]
    assert {k: props[k] for k in ("tenantId", "destination", "count", "errorType", "operation")} == {
        "tenantId": "obs-tenant", "destination": "redis", "count": "1", "errorType": "DeliveryFailed",
        "operation": "publish_event"}
    assert log["data"]["baseData"]["severityLevel"] == 3

    failed = sink.metrics("grc.deliveries.failed")
    ours = [e for e in failed if e["data"]["baseData"]["properties"] == {"tenantId": "obs-tenant",
                                                                          "destination": "redis"}]
    assert ours and all(e["tags"]["ai.operation.id"] == TRACE_ID for e in ours)
    outcome = "grc.events.failed" if status == 503 else "grc.events.accepted"  # accepted = parked for retry
    per_event = [e for e in sink.metrics(outcome) if e["data"]["baseData"]["properties"]["tenantId"] == "obs-tenant"]
    assert per_event and per_event[0]["data"]["baseData"]["metrics"][0]["value"] >= 1  # + the notice

    [memory] = sink.metrics("grc.instance.memory_percent")  # every instance reports its own memory
    assert 0 < memory["data"]["baseData"]["metrics"][0]["value"] < 100
    assert memory["tags"].get("ai.cloud.roleInstance")  # the alert rule splits by instance


async def test_change_feed_delay_reaches_application_insights(ingestion: tuple[FakeIngestion, str], tmp_path: Any,
                                                              app_env: dict[str, str]) -> None:
    """The processing-delay alert's metric: grc.changefeed.delay_ms per tenant and container."""
    import time
    import uuid

    from shared.changefeed.rules import Kind

    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    tenant = f"cf-{uuid.uuid4().hex[:8]}"
    doc = {"id": "r1", "tenantId": tenant, "createdAt": "2026-11-01T10:00:00Z", "updatedAt": "2026-11-01T10:00:00Z",
           "status": "open", "score": 9, "_lsn": 1, "_ts": int(time.time()) - 5, "_etag": "e1"}
    try:
        out = await get_services().changefeed.process(Kind.RISKS, "risks", [doc])
        assert out.published == 1
        tel.flush()
        sink.wait_for(lambda es: any(e["data"]["baseData"].get("metrics", [{}])[0].get("name")
                                     == "grc.changefeed.delay_ms" for e in es))
        [delay] = [e for e in sink.metrics("grc.changefeed.delay_ms")
                   if e["data"]["baseData"]["properties"]["tenantId"] == tenant]
        point = delay["data"]["baseData"]["metrics"][0]
        assert delay["data"]["baseData"]["properties"]["container"] == "risks"
        assert point["count"] == 1 and 4000 <= point["value"] <= 7000 and point["max"] >= point["value"]
    finally:
        await reset_services()
