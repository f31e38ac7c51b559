"""SYSTEM_PERFORMANCE from outside (README 'System events', docs/observability.md, same section): one
per tenant per minute that had events of its own, with that minute's counts; the service's own events
never keep a tenant active.

A tenant posts events in minute M; the `monitor` timer (scheduled every minute, and run twice more by
hand through the admin API) must publish exactly one SYSTEM_PERFORMANCE for M into the tenant's stream,
with the accepted count. In minute M+1 the tenant's stream gains that system event but no event of
its own: the passes over M+1 publish nothing for it.

DATA_ANOMALY (same sections): a second tenant, whose baseline says about 2 events a minute, posts 60 in
minute M; the passes over M publish exactly one DATA_ANOMALY for it (event rate, up, with the minute's
figures), the first tenant none (no baseline yet). The detector scores a tenant only after 15 one-minute
observations, too long to wait for here: the test writes that baseline as the documented state
(`grc:{tenant}:anomaly`, docs/observability.md), as 15 watched minutes would have left it. Everything
else goes the way Azure runs it: events over HTTP, the registered monitor timer, the tenant's stream.
"""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.system.harness import App, Stack, tenant, wait_for

EVENTS = 7
JUMP = 60  # events in minute M of the tenant whose baseline is about 2 a minute


def _system_events(app: App, t: str, event_type: str) -> list[dict[str, Any]]:
    r = app.get(f"/events/{t}", params={"eventType": event_type, "limit": "100"}, tenants=[t])
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()["events"]]


def _performance(app: App, t: str) -> list[dict[str, Any]]:
    return _system_events(app, t, "SYSTEM_PERFORMANCE")


def _seed_baseline(stack: Stack, t: str, minute: int) -> None:
    """The tenant's anomaly state as 15 watched minutes of about 2 events each leave it (mean 2, variance
    1), the last one just before `minute`; the error-rate baseline still empty."""
    state = {"lastMinute": minute - 1,
             "baselines": {"event_rate": {"mean": 2.0, "var": 1.0, "count": 15},
                           "error_rate": {"mean": 0.0, "var": 0.0, "count": 0}}}
    stack.redis().set(f"grc:{{{t}}}:anomaly", json.dumps(state), ex=86_400)


def _pass_over(app: App, minute: int) -> None:
    """Run the monitor by hand twice (idempotent per tenant-minute) and wait until a pass over `minute`
    is logged (the scheduled one or ours)."""
    wait_for(lambda: int(time.time() // 60) > minute, 75, 0.2, what=f"minute {minute} over")
    app.run_function("monitor")
    app.run_function("monitor")
    wait_for(lambda: f"monitor pass for minute {minute}:" in app.log(), 60, 0.5, what=f"a pass over minute {minute}")


@pytest.mark.timeout(240)  # up to two minute boundaries waited for, plus a fresh minute to start in
def test_one_system_performance_per_active_minute_and_a_data_anomaly_for_a_rate_jump(
        app: App, stack: Stack) -> None:
    t, jumpy = tenant("perf"), tenant("anom")
    if time.time() % 60 > 45:  # all events in one minute, with time for them to be counted in it
        wait_for(lambda: time.time() % 60 < 30, 20, 0.2, what="a fresh minute")
    minute = int(time.time() // 60)
    _seed_baseline(stack, jumpy, minute)
    body = {"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE", "data": {"n": 1}}
    r = app.post("/events/bulk", json={"events": [{**body, "entityId": f"r-{n}"} for n in range(EVENTS)]}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == EVENTS, r.text
    jump = [{**body, "tenantId": jumpy, "entityId": f"r-{n}"} for n in range(JUMP)]
    r = app.post("/events/bulk", json={"events": jump}, tenants=[jumpy])
    assert r.status_code == 200 and r.json()["accepted"] == JUMP, r.text
    assert int(time.time() // 60) == minute, "the bulks straddled a minute: the counts would split"

    _pass_over(app, minute)
    [perf] = wait_for(lambda: _performance(app, t), 30, what="SYSTEM_PERFORMANCE published")
    start = datetime.fromisoformat(perf["data"]["intervalStart"].replace("Z", "+00:00"))
    assert start == datetime.fromtimestamp(minute * 60, UTC) and perf["data"]["intervalSeconds"] == 60, perf["data"]
    assert perf["data"]["accepted"] == EVENTS and perf["data"]["events"] == EVENTS, perf["data"]
    assert (perf["source"], perf["action"]) == ("EVENT_STREAMING", "NOTIFY")

    # The jump: one DATA_ANOMALY for minute M with its figures; none for a tenant without a baseline.
    [anomaly] = wait_for(lambda: _system_events(app, jumpy, "DATA_ANOMALY"), 30,
                         what="DATA_ANOMALY published")
    data = anomaly["data"]
    assert (anomaly["source"], anomaly["action"], anomaly["tenantId"]) == ("EVENT_STREAMING", "DETECT", jumpy)
    assert (data["signal"], data["direction"]) == ("event_rate", "up"), data
    assert (data["value"], data["baseline"]) == (JUMP, 2.0), data
    assert data["z"] >= 4 and (data["events"], data["failed"]) == (JUMP, 0), data
    assert data["intervalStart"] == perf["data"]["intervalStart"] and data["intervalSeconds"] == 60, data
    assert _system_events(app, t, "DATA_ANOMALY") == []
    assert json.loads(stack.redis().get(f"grc:{{{jumpy}}}:anomaly"))["lastMinute"] == minute  # advanced once

    # Minute M+1: only the service's own events reached the tenants. Passes over it add nothing: no
    # SYSTEM_PERFORMANCE, and the quiet minute after the jump is no anomaly (the spike was clipped).
    _pass_over(app, minute + 1)  # a pass logs its line after it published its events
    assert [p["data"]["intervalStart"] for p in _performance(app, t)] == [perf["data"]["intervalStart"]]
    anomalies = _system_events(app, jumpy, "DATA_ANOMALY")
    assert [a["data"]["intervalStart"] for a in anomalies] == [data["intervalStart"]]
