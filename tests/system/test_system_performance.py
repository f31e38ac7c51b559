"""SYSTEM_PERFORMANCE from outside (README 'System events', docs/observability.md, same section): one
per tenant per minute that had events of its own, with that minute's counts; the service's own events
never keep a tenant active.

A tenant posts events in minute M; the `monitor` timer (scheduled every minute, and run twice more by
hand through the admin API) must publish exactly one SYSTEM_PERFORMANCE for M into the tenant's stream,
with the accepted count. In minute M+1 the tenant's stream gains that system event but no event of
its own: the passes over M+1 publish nothing for it.

DATA_ANOMALY needs 15 minutes of a tenant's baseline before it may fire: not provoked here (see the
report of the audit's row 12).
"""
from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.system.harness import App, tenant, wait_for

EVENTS = 7


def _performance(app: App, t: str) -> list[dict[str, Any]]:
    r = app.get(f"/events/{t}", params={"eventType": "SYSTEM_PERFORMANCE", "limit": "100"}, tenants=[t])
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()["events"]]


def _pass_over(app: App, minute: int) -> None:
    """Run the monitor by hand twice (idempotent per tenant-minute) and wait until a pass over `minute`
    is logged (the scheduled one or ours)."""
    wait_for(lambda: int(time.time() // 60) > minute, 75, 0.2, what=f"minute {minute} over")
    app.run_function("monitor")
    app.run_function("monitor")
    wait_for(lambda: f"monitor pass for minute {minute}:" in app.log(), 60, 0.5, what=f"a pass over minute {minute}")


@pytest.mark.timeout(240)  # up to two minute boundaries waited for, plus a fresh minute to start in
def test_one_system_performance_per_active_minute_and_none_for_a_quiet_one(app: App) -> None:
    t = tenant("perf")
    if time.time() % 60 > 45:  # all events in one minute, with time for them to be counted in it
        wait_for(lambda: time.time() % 60 < 30, 20, 0.2, what="a fresh minute")
    minute = int(time.time() // 60)
    body = {"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE", "data": {"n": 1}}
    r = app.post("/events/bulk", json={"events": [{**body, "entityId": f"r-{n}"} for n in range(EVENTS)]}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == EVENTS, r.text
    assert int(time.time() // 60) == minute, "the bulk straddled a minute: the counts would split"

    _pass_over(app, minute)
    [perf] = wait_for(lambda: _performance(app, t), 30, what="SYSTEM_PERFORMANCE published")
    start = datetime.fromisoformat(perf["data"]["intervalStart"].replace("Z", "+00:00"))
    assert start == datetime.fromtimestamp(minute * 60, UTC) and perf["data"]["intervalSeconds"] == 60, perf["data"]
    assert perf["data"]["accepted"] == EVENTS and perf["data"]["events"] == EVENTS, perf["data"]
    assert (perf["source"], perf["action"]) == ("EVENT_STREAMING", "NOTIFY")

    # Minute M+1: only the service's own event reached the tenant. Passes over it add nothing.
    _pass_over(app, minute + 1)  # a pass logs its line after it published its events
    assert [p["data"]["intervalStart"] for p in _performance(app, t)] == [perf["data"]["intervalStart"]]
