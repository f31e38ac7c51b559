"""Storage Queues down while Redis, Blob and Tables answer (README "Outages", docs/observability.md
"Health"): Azure can lose one service of a Storage account, so locally the queue service runs as its
own Azurite process (`azurite-queue`, on disk) and is stopped by PID.

While it is down, /health answers 200 `degraded` (`retryQueue` unhealthy, Redis and Tables up); a tenant
whose destinations need no queue keeps getting 201; an event whose delivery needs the queue (the
vector destination enqueues for `index_vectors`) cannot be delivered nor parked in the retry queue
(the same service), so it is not acknowledged: 503 with Retry-After. The client's retry with the same
eventId after the queue is back is accepted, its Redis delivery (done on the first try) is not sent
again, and the queue trigger, which kept polling through the outage, indexes it: once in each
destination. A different event sent under that id meanwhile is refused (422) and leaves the retry
to resume. Nothing is moved to a poison queue.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from localdev import services
from tests.system.harness import App, Stack, app_env, own_stack, start_app, tenant, wait_for

STACK = ("redis", "azurite", "azurite-queue", "cosmos")
REFUSED_WITHIN_SECONDS = 10.0  # measured 4.4-4.7 s: the vector send and its in-process retries, then the park


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App]]:
    """A stack whose Storage Queues are a process of their own; the app with checks cached 1 s."""
    work: Path = tmp_path_factory.mktemp("queue-outage")
    with own_stack(work / "stack", STACK) as stack:
        blob_table, queue = stack.running["azurite"].ports, stack.running["azurite-queue"].ports
        conn = services.azurite_connection_string(blob_table["blob"], queue["queue"], blob_table["table"])
        # The stack's storage settings name the queue process: the app's, and the test's own queue reads.
        stack.running["azurite"].settings.update(STORAGE_CONNECTION_STRING=conn, AzureWebJobsStorage=conn)
        env = app_env(stack, work / "app", HEALTH_CACHE_SECONDS="1", SYSTEM_PERFORMANCE_EVENTS="false")
        app = start_app(env, work / "app")
        try:
            yield stack, app
        finally:
            app.stop()


def _event(t: str, event_id: str, title: str) -> dict[str, Any]:
    return {"tenantId": t, "eventId": event_id, "eventType": "CONTROL_FAILED", "source": "ARCHER_GRC",
            "action": "TEST", "entityType": "control", "entityId": "SC-CC8",
            "data": {"name": title, "status": "failed"}}


def _health(app: App) -> httpx.Response:
    return app.get("/health")  # as an admin: each dependency's status


def _indexed(app: App, t: str) -> list[str]:
    """The tenant's events in the vector index (not the SYSTEM_ERROR about the failure)."""
    hits = app.get(f"/search/{t}", tenants=[t],
                   params={"q": "control failed", "k": "10", "eventType": "CONTROL_FAILED"}).json()
    return sorted(h["eventId"] for h in hits.get("hits", []))


def _status(r: httpx.Response, name: str) -> str | None:
    return r.json()["dependencies"].get(name, {}).get("status")


def test_queues_down_is_200_degraded_an_event_needing_them_is_503_and_its_retry_is_delivered_once(
        split: tuple[Stack, App]) -> None:
    stack, app = split
    plain, searched = tenant("qd"), tenant("qv")
    r = app.put(f"/stream-config/{searched}", tenants=[searched],
                json={"destinations": [{"type": "redis"}, {"type": "vector"}]})
    assert r.status_code in (200, 201), r.text
    first = app.post("/events", tenants=[searched], json=_event(searched, "qv-first", "Change approval"))
    assert first.status_code == 201, first.text  # the vector queue exists and works
    # Indexed before the queue stops: a stop that lands while the trigger's dequeue of qv-first is
    # answered leaves the message leased, invisible for the 10-minute lease (at-least-once, as the
    # host; a clean-clone CI run saw it), and this test is about the events of the outage.
    wait_for(lambda: _indexed(app, searched) == ["qv-first"], 60, 0.2, what="qv-first indexed before the stop")
    wait_for(lambda: _status(_health(app), "retryQueue") == "healthy", 30, what="queues healthy before")

    stack.down("azurite-queue")
    try:
        down = wait_for(lambda: (h if _status(h := _health(app), "retryQueue") == "unhealthy" else None), 30,
                        what="the retry queue unhealthy while the queue process is stopped")
        assert down.status_code == 200 and down.json()["status"] == "degraded", down.json()
        assert {_status(down, "redis"), _status(down, "tables")} <= {"healthy", "degraded"}, down.json()
        assert "retry-after" not in down.headers

        ok = app.post("/events", tenants=[plain], json=_event(plain, "qd-1", "Quarterly access review"))
        assert ok.status_code == 201, ok.text  # Redis only: no queue needed

        t0 = time.monotonic()
        refused = app.post("/events", tenants=[searched], json=_event(searched, "qv-2", "Firewall review"))
        took = time.monotonic() - t0
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["detail"] == "delivery failed and could not be parked for retry", refused.text
        # Each queue call fails in about 1.2 s (the SDK's own retry waits took 38 s: storage/clients.py).
        assert took < REFUSED_WITHIN_SECONDS, took
        before = {d["destination"]: d for d in refused.json()["destinations"]}
        assert before["redis"]["status"] == "delivered" and before["vector"]["status"] == "failed", before
    finally:
        stack.up("azurite-queue")

    wait_for(lambda: _status(_health(app), "retryQueue") == "healthy", 30, what="queues healthy again")
    # A different event under the id of the one that failed part-way is refused, not resumed: the
    # resume would send its content to the destination the first never reached (docs/delivery.md).
    other = app.post("/events", tenants=[searched], json=_event(searched, "qv-2", "Badge reader audit"))
    assert other.status_code == 422, other.text
    assert [(e["pointer"], e["type"]) for e in other.json()["errors"]] == [("/eventId", "id_reused")]
    # ...and the record is put back as it was: the first event's own retry still resumes.
    again = app.post("/events", tenants=[searched], json=_event(searched, "qv-2", "Firewall review"))
    assert again.status_code == 201, again.text
    after = {d["destination"]: d for d in again.json()["destinations"]}
    assert after["redis"]["ref"] == before["redis"]["ref"], after  # the first try delivered it: not again
    assert after["vector"]["status"] in ("delivered", "parked"), after  # parked: the retry queue delivers it

    def listed() -> list[str]:
        body = app.get(f"/events/{searched}", tenants=[searched],  # not the SYSTEM_ERROR about the failure
                       params={"limit": "100", "eventType": "CONTROL_FAILED"}).json()
        return [e["event"]["eventId"] for e in body["events"]]

    assert sorted(listed()) == ["qv-2", "qv-first"], listed()

    def indexed() -> list[str] | None:
        ids = _indexed(app, searched)
        return ids if {"qv-2", "qv-first"} <= set(ids) else None

    assert wait_for(indexed, 90, 0.5, what="both events indexed by index_vectors") == ["qv-2", "qv-first"]
    assert not any(stack.poison_counts().values()), stack.poison_counts()
