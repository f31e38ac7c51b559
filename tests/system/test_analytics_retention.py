"""Analytics retention, from outside (README 'Analytics store', docs/analytics.md 'Retention' and 'Keys').

A tenant with the analytics destination and retentionDays 1 gets events timestamped 3 days ago (two
hours) and recent ones (20 h ago, now); `purge_analytics` is run through the host's admin API. The
old hours must be gone from GET /events/{t}/history and from the table (their partitions
`{t}_{yyyyMMddHH}_{shard}` and their `~index` rows, read with the Azure Tables SDK); the recent
hours must remain, in both.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.data.tables import TableClient

from tests.system.harness import App, Stack, tenant, wait_for

SHARDS = 2


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(t: str, at: datetime) -> dict[str, Any]:
    return {"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
            "entityId": "r-1", "data": {"score": 3}, "eventId": f"ev-{uuid.uuid4().hex[:12]}", "timestamp": _iso(at)}


def _history(app: App, t: str, since: datetime) -> set[str]:
    r = app.get(f"/events/{t}/history", params={"from": _iso(since), "limit": "1000"}, tenants=[t])
    assert r.status_code == 200, r.text
    assert r.json().get("continuationToken") is None, "one page expected"
    return {e["eventId"] for e in r.json()["events"]}


def _stored_hours(table: TableClient, t: str) -> tuple[set[str], set[str]]:
    """(hours with entities in the tenant's partitions, hours of the tenant's index rows)."""
    rows = table.query_entities("PartitionKey ge @lo and PartitionKey lt @hi",
                                parameters={"lo": f"{t}_", "hi": f"{t}`"}, select=["PartitionKey"])
    data = {pk.rsplit("_", 2)[1] for pk in (e["PartitionKey"] for e in rows)}
    index = table.query_entities("PartitionKey eq '~index' and RowKey ge @lo and RowKey lt @hi",
                                 parameters={"lo": f"{t}_", "hi": f"{t}`"}, select=["RowKey"])
    return data, {rk.rsplit("_", 2)[1] for rk in (e["RowKey"] for e in index)}


def test_purge_deletes_the_hours_past_retention_and_keeps_the_rest(app: App, stack: Stack) -> None:
    t = tenant("ret")
    now = datetime.now(UTC)
    old_times = [now - timedelta(days=3), now - timedelta(days=3, hours=2)]
    recent_times = [now - timedelta(hours=20), now]
    r = app.put(f"/stream-config/{t}", tenants=[t], json={
        "retentionDays": 1, "destinations": [{"type": "analytics", "config": {"shards": SHARDS}}]})
    assert r.status_code == 201, r.text
    old = [_event(t, at) for at in old_times]
    recent = [_event(t, at) for at in recent_times]
    r = app.post("/events/bulk", json={"events": old + recent}, tenants=[t])
    assert r.status_code == 200 and {e["status"] for e in r.json()["results"]} == {"accepted"}, r.text
    old_ids, recent_ids = {e["eventId"] for e in old}, {e["eventId"] for e in recent}
    old_hours = {at.strftime("%Y%m%d%H") for at in old_times}
    recent_hours = {at.strftime("%Y%m%d%H") for at in recent_times}
    since = now - timedelta(days=4)
    assert _history(app, t, since) == old_ids | recent_ids  # all stored before the purge

    with TableClient.from_connection_string(stack.storage, app.env["ANALYTICS_TABLE"]) as table:
        data, index = _stored_hours(table, t)
        assert data == index == old_hours | recent_hours, (data, index)
        app.run_function("purge_analytics")
        # The timer runs asynchronously (202): done when the old hours have left the history read.
        wait_for(lambda: _history(app, t, since) == recent_ids, 60, 0.5, what="old hours purged from the history")
        data, index = wait_for(lambda: (got if (got := _stored_hours(table, t))[1] == recent_hours else None), 30,
                               what="the old hours' index rows deleted")
    assert data == recent_hours, f"partitions of purged hours left behind: {sorted(data - recent_hours)}"
