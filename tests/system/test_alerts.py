"""The alert conditions of GET /metrics/{tenantId}, provoked from outside (README 'GET /metrics/{tenantId}',
docs/observability.md, same table).

errorRate and failingDestination: a tenant delivering to Redis (works) and to Kafka over AMQP with no
Event Hubs configured (refused: each delivery parked, then dead-lettered by the queue trigger, as in
test_delivery.py). processingDelay: an app of its own with ALERT_DELAY_SECONDS=3, stopped by PID
while the platform writes a document, started again after more than the threshold: the change is
picked up late, and its change-feed delay is the figure.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.system.cosmos import Platform, wait_events
from tests.system.harness import App, app_env, own_stack, start_app, tenant, wait_for

# One queue attempt, at once: the AMQP refusal is non-transient, dead-lettered by the queue trigger.
REFUSING_KAFKA = {"type": "kafka", "config": {"transport": "amqp"},
                  "retry": {"inProcessAttempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 1, "jitter": 0,
                            "attempts": 1, "timeoutSeconds": 40}}
EVENTS = 25  # over the 20 deliveries errorRate needs
DELAY_THRESHOLD = 3


def _event(t: str, n: int) -> dict[str, Any]:
    return {"tenantId": t, "eventType": "CONTROL_FAILED", "source": "BACKEND_API", "action": "TEST",
            "entityId": f"ctl-{n}", "data": {"control": "MFA", "result": "fail"}}


def _alerts(app: App, t: str) -> dict[str, Any]:
    r = app.get(f"/metrics/{t}", tenants=[t])
    assert r.status_code == 200, r.text
    return r.json()


def test_error_rate_and_failing_destination_fire_with_value_and_threshold(app: App) -> None:
    t, healthy = tenant("alert"), tenant("alert")
    r = app.put(f"/stream-config/{t}", json={"destinations": [{"type": "redis"}, REFUSING_KAFKA]}, tenants=[t])
    assert r.status_code == 201, r.text
    r = app.post("/events/bulk", json={"events": [_event(t, i) for i in range(EVENTS)]}, tenants=[t])
    assert r.status_code == 200, r.text
    assert {d["destination"]: d["status"] for d in r.json()["results"][0]["destinations"]} == \
        {"redis": "delivered", "kafka": "parked"}
    # A tenant whose deliveries all land, for contrast: nothing fires.
    assert app.post("/events/bulk", json={"events": [_event(healthy, i) for i in range(EVENTS)]},
                    tenants=[healthy]).status_code == 200

    body = wait_for(lambda: (b if {"errorRate", "failingDestination"} <= set((b := _alerts(app, t))["alerts"]["firing"])
                             else None), 30, what="errorRate and failingDestination firing")
    conditions = body["alerts"]["conditions"]
    window = body["windows"]["5m"]["destinations"]
    error = conditions["errorRate"]
    assert error["firing"] is True and error["threshold"] == 0.05  # ALERT_ERROR_RATE's default
    deliveries = sum(d.get("delivered", 0) + d.get("failed", 0) + d.get("parked", 0) for d in window.values())
    bad = sum(d.get("failed", 0) + d.get("parked", 0) for d in window.values())
    assert deliveries >= 2 * EVENTS and error["deliveries"] == deliveries, (error, window)
    # failed (incl. parked) / all deliveries: Redis took every event, Kafka none -> about half.
    assert abs(error["value"] - bad / deliveries) < 0.01 and 0.4 <= error["value"] < 1.0, (error, window)
    failing = conditions["failingDestination"]
    assert failing["firing"] is True and failing["value"] == ["kafka"], failing  # Redis delivers: not listed
    assert failing["threshold"] == "failed > 0 and delivered == 0, or health unhealthy"
    assert failing["destinations"]["kafka"]["delivered"] == 0 and failing["destinations"]["kafka"]["failed"] >= EVENTS

    calm = wait_for(lambda: (b if (b := _alerts(app, healthy))["totals"]["accepted"] >= EVENTS else None), 30,
                    what="the healthy tenant's events counted")
    assert calm["alerts"]["firing"] == [], calm["alerts"]
    assert calm["alerts"]["conditions"]["errorRate"]["value"] == 0
    # The refused deliveries were dead-lettered, not left in a queue.
    wait_for(lambda: [d for d in app.get(f"/deadletters/{t}", tenants=[t]).json()["deadLetters"]
                      if d["eventType"] == "CONTROL_FAILED"], 30, what="dead letters listed")


def test_processing_delay_fires_when_changes_are_picked_up_late(tmp_path: Path) -> None:
    with own_stack(tmp_path / "stack", ("redis", "azurite", "cosmos")) as stack:
        work = tmp_path / "app"
        env = app_env(stack, work, ALERT_DELAY_SECONDS=str(DELAY_THRESHOLD), SYSTEM_PERFORMANCE_EVENTS="false")
        t = tenant("delay")
        app = start_app(env, work)
        try:
            platform = Platform(env)
            platform.container("risks")
            app.stop()  # the runner is down (by PID): the platform goes on writing
            platform.create("risks", {"id": "r-late", "tenantId": t, "title": "Vendor breach", "status": "open"})
            written = time.monotonic()
            time.sleep(DELAY_THRESHOLD + 2)  # the outage itself, longer than the threshold
            app = start_app(env, work)  # same state and lease container: it resumes where it stopped
            [created] = wait_events(app, t, 1, 60, source="COSMOS_DB")
            late = time.monotonic() - written
            assert created["entityId"] == "r-late"
            body = wait_for(lambda: (b if "processingDelay" in (b := _alerts(app, t))["alerts"]["firing"] else None),
                            30, what="processingDelay firing")
        finally:
            app.stop()
    delay = body["alerts"]["conditions"]["processingDelay"]
    assert delay["threshold"] == DELAY_THRESHOLD and delay["unit"] == "s"
    # The figure is the change-feed delay (a histogram bucket's upper bound, so at least the real one).
    assert delay["value"] > DELAY_THRESHOLD and delay["value"] == delay["changeFeedDelayMaxSeconds"], delay
    assert delay["changeFeedDelayMaxSeconds"] >= DELAY_THRESHOLD + 2 - 1, (delay, late)
    assert body["alerts"]["conditions"]["errorRate"]["firing"] is False
