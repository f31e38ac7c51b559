"""The running app answers as a new user meets it: the original example, the admin API, health."""
from __future__ import annotations

from tests.system.harness import App, tenant, wait_for


def test_original_example_and_reads(app: App) -> None:
    t = tenant()
    body = {"tenantId": t, "eventType": "RISK_CREATED", "source": "FRONTEND_APP", "action": "CREATE",
            "data": {"test": True}}
    r = app.post("/events", json=body, tenants=[t])
    assert r.status_code == 201, r.text
    event_id = r.json()["eventId"]
    listed = app.get(f"/events/{t}", tenants=[t]).json()
    assert [e["event"]["eventId"] for e in listed["events"]] == [event_id]
    metrics = app.get(f"/metrics/{t}", tenants=[t]).json()
    assert metrics["windows"]["1m"]["accepted"] == 1


def test_the_host_admin_api(app: App) -> None:
    assert app.client.get("/admin/host/status").json() == {"state": "Running"}
    names = {f["name"]: f["trigger"] for f in app.client.get("/admin/functions").json()}
    assert names["assessments_overdue"] == "timerTrigger" and names["drain_retries"] == "queueTrigger"
    r = app.client.post("/admin/functions/publish_event", json={})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert app.client.post("/admin/functions/nope", json={}).status_code == 404
    before = app.log().count("admin: purge_analytics run by hand")
    app.run_function("purge_analytics")
    wait_for(lambda: app.log().count("admin: purge_analytics run by hand") > before, 10, what="manual run logged")


def test_health_is_anonymous_and_healthy(app: App) -> None:
    r = app.get("/health", anonymous=True)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("healthy", "degraded")
