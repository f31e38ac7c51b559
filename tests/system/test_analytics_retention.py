"""Analytics retention, from outside (README 'Analytics store', docs/analytics.md 'Retention' and 'Keys').

A tenant with the analytics destination and retentionDays 1 gets events timestamped 3 days ago (two
hours) and recent ones (20 h ago, now); `purge_analytics` is run through the host's admin API. The
old hours must be gone from GET /events/{t}/history and from the table (their partitions
`{t}_{yyyyMMddHH}_{shard}` and their `~index` rows, read with the Azure Tables SDK); the recent
hours must remain, in both. A run that fails (Table storage stopped by PID) is run again by the
host's retry policy and purges once storage is back, without waiting for the next hour.
"""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.data.tables import TableClient

from tests.system.harness import App, Stack, tenant, wait_for

SHARDS = 2
OLD = (timedelta(days=3), timedelta(days=3, hours=2))  # ago: past retentionDays 1
RECENT = (timedelta(hours=20), timedelta(0))  # ago: within it


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(t: str, at: datetime) -> dict[str, Any]:
    return {"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
            "entityId": "r-1", "data": {"score": 3}, "eventId": f"ev-{uuid.uuid4().hex[:12]}", "timestamp": _iso(at)}


def _setup(app: App, t: str, now: datetime) -> tuple[set[str], set[str]]:
    """The tenant's stream config (analytics, retentionDays 1) and its events: (old ids, recent ids)."""
    r = app.put(f"/stream-config/{t}", tenants=[t], json={
        "retentionDays": 1, "destinations": [{"type": "analytics", "config": {"shards": SHARDS}}]})
    assert r.status_code == 201, r.text
    old, recent = [_event(t, now - ago) for ago in OLD], [_event(t, now - ago) for ago in RECENT]
    r = app.post("/events/bulk", json={"events": old + recent}, tenants=[t])
    assert r.status_code == 200 and {e["status"] for e in r.json()["results"]} == {"accepted"}, r.text
    # Each written now, none parked: a parked write's retry that ran after the purge would write its
    # event again (a retry writes what it finds missing), and the purge would look undone.
    outcomes = {d["status"] for e in r.json()["results"] for d in e["destinations"]}
    assert outcomes == {"delivered"}, r.text
    return {e["eventId"] for e in old}, {e["eventId"] for e in recent}


def _history(app: App, t: str, since: datetime, *, or_503: bool = False) -> set[str] | None:
    """The event ids the test posted (source BACKEND_API) in the tenant's history; None for a 503 when
    `or_503` (storage starting again). Only those: the monitor's SYSTEM_PERFORMANCE event for a tenant
    active in the last minute goes to the tenant's destinations, analytics included, so a minute
    boundary during the test adds an event of the service's own (it failed the test in CI twice)."""
    r = app.get(f"/events/{t}/history", tenants=[t],
                params={"from": _iso(since), "limit": "1000", "source": "BACKEND_API"})
    if or_503 and r.status_code == 503:
        return None
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
    old_ids, recent_ids = _setup(app, t, now)
    old_hours, recent_hours = ({(now - ago).strftime("%Y%m%d%H") for ago in agos} for agos in (OLD, RECENT))
    since = now - timedelta(days=4)
    assert _history(app, t, since) == old_ids | recent_ids  # all stored before the purge

    with TableClient.from_connection_string(stack.storage, app.env["ANALYTICS_TABLE"]) as table:
        data, index = _stored_hours(table, t)
        # (At least: a system event of a minute that ended in a new hour adds that hour.)
        assert data == index and old_hours | recent_hours <= data, (data, index)
        app.run_function("purge_analytics")
        # The timer runs asynchronously (202): done when the old hours have left the history read.
        seen: list[set[str] | None] = [None]

        def purged() -> bool:
            seen[0] = _history(app, t, since)
            return seen[0] == recent_ids

        try:
            wait_for(purged, 60, 0.5, what="old hours purged from the history")
        except AssertionError:
            got = seen[0] or set()
            raise AssertionError(
                f"history after the purge: old {sorted(got & old_ids)}, recent {sorted(got & recent_ids)}, "
                f"other {sorted(got - old_ids - recent_ids)}; expected recent {sorted(recent_ids)}; "
                f"(data hours, index hours) now {_stored_hours(table, t)}, old {sorted(old_hours)}") from None
        data, index = wait_for(lambda: (got if not (got := _stored_hours(table, t))[1] & old_hours else None),
                               30, what="the old hours' index rows deleted")
    assert recent_hours <= index, (index, recent_hours)
    assert not data & old_hours, f"partitions of purged hours left behind: {sorted(data & old_hours)}"
    assert recent_hours <= data, (data, recent_hours)


def test_a_purge_that_fails_is_run_again_by_the_host_retry_policy(breakable: tuple[Stack, App]) -> None:
    stack, app = breakable
    t = tenant("ret")
    now = datetime.now(UTC)
    old_ids, recent_ids = _setup(app, t, now)
    since = now - timedelta(days=4)
    assert _history(app, t, since) == old_ids | recent_ids
    runs = "Executed 'Functions.purge_analytics'"
    before = app.log().count(runs)
    stack.down("azurite-durable")
    try:
        app.run_function("purge_analytics")
        # What an operator sees: the run failed (the host logs each execution's outcome).
        wait_for(lambda: f"{runs} (Failed" in app.log().split(runs, before)[-1], 60, 0.5,
                 what="the purge run failed while Table storage is down")
    finally:
        stack.up("azurite-durable")
    failed_at = time.monotonic()
    # Retried 10 s after the failure (then 20 s, 40 s): purged well before the next hourly run.
    wait_for(lambda: _history(app, t, since, or_503=True) == recent_ids, 75, 1.0,
             what="old hours purged by a retry")
    assert time.monotonic() - failed_at < 75
    assert app.log().count(f"{runs} (Succeeded") > 0
