"""GET /events/{tenantId}/history and the analytics retention timer, through the registered functions."""
from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from shared.app.services import Services
from shared.core.streamconfig import StreamConfigIn
from tests.functions_client import context, invoke, registrations

pytestmark = pytest.mark.usefixtures("app_services")


def ev(tenant: str, ts: datetime, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"tenantId": tenant, "eventType": "ASSESSMENT_COMPLETED", "source": "ARCHER_GRC",
                            "action": "UPDATE", "data": {"n": 1}, "timestamp": ts.isoformat()}
    base.update(over)
    return base


async def setup_tenant(svc: Services, retention_days: int = 30) -> str:
    t = "hist-" + uuid.uuid4().hex[:8]
    await svc.configs.write(t, StreamConfigIn.model_validate({
        "destinations": [{"type": "analytics", "config": {"shards": 3}}], "retentionDays": retention_days}))
    return t


async def test_history_endpoint_pages_with_an_opaque_token(app_services: Services) -> None:
    t = await setup_tenant(app_services)
    now = datetime.now(UTC).replace(microsecond=0)
    events = [ev(t, now - timedelta(minutes=10 * i), data={"n": i},
                 source="MCP_SERVER" if i % 2 else "ARCHER_GRC") for i in range(12)]
    status, _, body = await invoke("publish_events_bulk", "POST", "/events/bulk", {"events": events})
    assert status == 200 and body["accepted"] == 12
    route = {"tenantId": t}
    got: list[int] = []
    query: dict[str, str] = {"limit": "5", "from": (now - timedelta(hours=3)).isoformat()}
    params = dict(query)
    while True:
        status, _, page = await invoke("event_history", "GET", f"/events/{t}/history", route=route, params=params)
        assert status == 200 and page["count"] <= 5
        got += [e["data"]["n"] for e in page["events"]]
        if not page["continuationToken"]:
            break
        params = {**query, "continuationToken": page["continuationToken"]}
    assert got == list(range(12))
    # The token continues only the query it came from: another filter, range or tenant is refused.
    token = {"continuationToken": (await invoke("event_history", "GET", f"/events/{t}/history", route=route,
                                                params=query))[2]["continuationToken"]}
    for other in ({"limit": "5"}, {**query, "source": "MCP_SERVER"}, {**query, "to": now.isoformat()}):
        status, _, body = await invoke("event_history", "GET", f"/events/{t}/history", route=route,
                                       params={**other, **token})
        assert status == 400 and body["errors"][0]["field"] == "continuationToken", other
    status, _, page = await invoke("event_history", "GET", f"/events/{t}/history", route=route,
                                   params={"source": "MCP_SERVER", "from": (now - timedelta(hours=3)).isoformat()})
    assert [e["data"]["n"] for e in page["events"]] == [1, 3, 5, 7, 9, 11]


async def test_history_parameter_errors() -> None:
    route = {"tenantId": "hist-x"}
    for params, field in (({"from": "yesterday"}, "from"), ({"continuationToken": "!!"}, "continuationToken"),
                          ({"limit": "0"}, "limit"), ({"eventType": "NOPE"}, "eventType"),
                          ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from")):
        status, _, body = await invoke("event_history", "GET", "/events/hist-x/history", route=route, params=params)
        assert status == 400 and body["errors"][0]["field"] == field, params


async def test_retention_timer_purges_expired_hour_partitions(app_services: Services) -> None:
    t = await setup_tenant(app_services, retention_days=2)
    keep = await setup_tenant(app_services, retention_days=30)
    now = datetime.now(UTC)
    old = now - timedelta(days=3)
    for tenant in (t, keep):
        events = [ev(tenant, old - timedelta(minutes=i)) for i in range(30)] + [ev(tenant, now)]
        _, _, body = await invoke("publish_events_bulk", "POST", "/events/bulk", {"events": events})
        assert body["accepted"] == 31
    fn = registrations()["purge_analytics"]
    assert registrations()["purge_analytics"]["type"] == "timerTrigger"
    await fn["fn"](TimerRequest(past_due=False), context("purge_analytics"))

    async def count(tenant: str) -> int:
        table = await app_services.analytics.table()
        return len([e async for e in table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi", parameters={"lo": tenant + "_", "hi": tenant + "`"},
            select=["RowKey"])])

    assert await count(t) == 1  # the 3-day-old hour(s) are gone, the current one stays
    assert await count(keep) == 31
    page = await app_services.analytics.history(t, from_ms=0, to_ms=2**41, limit=100)
    assert len(page.events) == 1


async def test_two_purges_at_once_both_finish_and_delete_every_expired_entity(app_services: Services) -> None:
    """A run by hand beside the hourly one, or a retry beside a slow run: both read the same keys, and
    the later delete of an entity the other already deleted must not fail the run (a transaction that
    names an absent entity is refused whole)."""
    tenants = [await setup_tenant(app_services, retention_days=1) for _ in range(3)]
    old = datetime.now(UTC) - timedelta(days=3)
    for t in tenants:
        events = [ev(t, old - timedelta(hours=h, minutes=i)) for h in range(4) for i in range(40)]
        _, _, body = await invoke("publish_events_bulk", "POST", "/events/bulk", {"events": events})
        assert body["accepted"] == 160

    retention_of = {t: 1 for t in tenants}
    analytics = app_services.analytics
    first, second = await asyncio.gather(analytics.purge_expired(retention_of),
                                         analytics.purge_expired(retention_of))
    assert first["entities"] + second["entities"] >= 3 * 160
    table = await analytics.table()
    for t in tenants:
        left = [e async for e in table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi", parameters={"lo": t + "_", "hi": t + "`"},
            select=["RowKey"])]
        assert left == [], t
        page = await analytics.history(t, from_ms=0, to_ms=2**41, limit=10)
        assert page.events == []
