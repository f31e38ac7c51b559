"""Batches naming many tenants, through the running app: bulks spanning 1,000 tenants (several at
once; with the default config, and with Redis, Kafka and analytics enabled for every tenant) and a
change-feed batch of 100 documents of 100 tenants. Nothing may fail or be parked
because of the service's own limits (connection pools, concurrency, timeouts): every event is
delivered at once, the retry queue stays empty, and no SYSTEM_ERROR is raised.

The app runs on a stack of its own, so its retry queue and its log hold only this module's work.
"""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import CosmosClient, PartitionKey

from tests.system.harness import App, Stack, create_topic, own_stack_and_app, topic_records, wait_for

STACK = ("redis", "azurite", "cosmos", "kafka")
TENANTS = 1000
FAILURE_LINE = re.compile(r"destination \S+ failed \d+ event\(s\) of tenant")


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App]]:
    work: Path = tmp_path_factory.mktemp("many-tenants")
    with own_stack_and_app(work, STACK) as running:
        yield running


def event(tenant: str, n: int) -> dict[str, Any]:
    return {"tenantId": tenant, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
            "entityId": f"risk-{n}", "entityType": "risk", "data": {"score": n % 25}}


def assert_nothing_failed(stack: Stack, app: App, tenants: list[str]) -> None:
    """No delivery failure logged, nothing in the retry queue or a poison queue, and no
    SYSTEM_ERROR in a sample of the tenants' streams."""
    assert not FAILURE_LINE.findall(app.log()), [ln for ln in app.log().splitlines() if FAILURE_LINE.search(ln)][:5]
    assert "MaxConnectionsError" not in app.log() and "stream configs unavailable" not in app.log()
    assert stack.queue_depth(app.env["RETRY_QUEUE"]) == 0
    assert not any(stack.poison_counts().values())
    for t in tenants[:: max(1, len(tenants) // 10)]:
        listed = app.get(f"/events/{t}?eventType=SYSTEM_ERROR").json()
        assert listed["count"] == 0, listed


def every_destination(stack: Stack, app: App, tenants: list[str]) -> str:
    """Each tenant's stream config enables Redis, Kafka (a new topic, returned) and analytics."""
    topic = f"many-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic, partitions=4)
    config = {"topics": [topic], "destinations": [{"type": "redis"}, {"type": "kafka"}, {"type": "analytics"}]}

    def configure(t: str) -> None:
        r = app.put(f"/stream-config/{t}", json=config, tenants=[t])
        assert r.status_code in (200, 201), r.text[:300]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(configure, tenants))
    return topic


def test_bulks_spanning_1000_tenants_deliver_every_event(own: tuple[Stack, App]) -> None:
    stack, app = own
    run = uuid.uuid4().hex[:6]
    tenants = [f"mt{run}-{i:04d}" for i in range(TENANTS)]
    # Three bulks of 1,000 events, each naming all 1,000 tenants, sent at the same time.
    bodies = [{"events": [event(t, k * TENANTS + i) for i, t in enumerate(tenants)]} for k in range(3)]
    headers = app.auth()

    def post(body: dict[str, Any]) -> Any:
        return app.client.post("/events/bulk", json=body, headers=headers, timeout=120)

    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(post, bodies))
    for r in responses:
        assert r.status_code == 200, r.text[:500]
        doc = r.json()
        assert doc["accepted"] == TENANTS and doc["failed"] == 0, {k: doc[k] for k in ("accepted", "failed")}
        statuses = {(d["destination"], d["status"]) for res in doc["results"] for d in res["destinations"]}
        assert statuses == {("redis", "delivered")}  # none failed, none parked
    for t in (tenants[0], tenants[499], tenants[-1]):
        listed = app.get(f"/events/{t}?eventType=RISK_UPDATED").json()
        assert listed["count"] == 3, listed
        metrics = app.get(f"/metrics/{t}").json()
        one_minute = metrics["windows"]["1m"]
        assert one_minute["accepted"] == 3 and one_minute["failed"] == 0
        assert one_minute["destinations"]["redis"] == {"delivered": 3, "failed": 0, "parked": 0}
    assert_nothing_failed(stack, app, tenants)


def test_bulks_spanning_1000_tenants_with_every_destination_enabled(own: tuple[Stack, App]) -> None:
    """As a platform runs it: every tenant streams to Redis, Event Hubs (Kafka) and the analytics store,
    so each bulk is 1,000 tenants' work for each destination (1,000 Table transactions for analytics).
    Sixteen such bulks at once: each event is delivered to each destination once, none failed or parked.
    (Before destinations/own_limit.py, the analytics calls queued behind the instance's own limit of
    Table transactions in flight timed out at 10 s: most of the bulks were parked, two answered 503.)"""
    stack, app = own
    run = uuid.uuid4().hex[:6]
    tenants = [f"md{run}-{i:04d}" for i in range(TENANTS)]
    topic = every_destination(stack, app, tenants)
    bodies = [{"events": [event(t, k * TENANTS + i) for i, t in enumerate(tenants)]} for k in range(16)]
    headers = app.auth()

    def post(body: dict[str, Any]) -> Any:
        return app.client.post("/events/bulk", json=body, headers=headers, timeout=180)

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(post, bodies))
    event_ids: list[str] = []
    for r in responses:
        assert r.status_code == 200, r.text[:500]
        doc = r.json()
        assert doc["accepted"] == TENANTS and doc["failed"] == 0, {k: doc[k] for k in ("accepted", "failed")}
        delivered = {(d["destination"], d["status"]) for res in doc["results"] for d in res["destinations"]}
        assert delivered == {("redis", "delivered"), ("kafka", "delivered"), ("analytics", "delivered")}
        event_ids += [res["eventId"] for res in doc["results"]]
    records = topic_records(stack.broker, topic, expect=len(event_ids), timeout=60)
    ours = [h["eventId"] for h in records if h.get("eventType") == "RISK_UPDATED"]  # not the monitor's events
    assert sorted(ours) == sorted(event_ids), ({k: v for k, v in records[0].items()}, len(ours))  # each once
    for t in (tenants[0], tenants[499], tenants[-1]):
        history = app.get(f"/events/{t}/history?eventType=RISK_UPDATED", tenants=[t]).json()
        assert len(history["events"]) == len(bodies), history
        listed = app.get(f"/events/{t}?eventType=RISK_UPDATED").json()
        assert listed["count"] == len(bodies), listed
    assert_nothing_failed(stack, app, tenants)


def test_a_change_feed_batch_of_100_tenants(own: tuple[Stack, App]) -> None:
    """Half the tenants on the default config (Redis), half with Redis, Kafka and analytics."""
    stack, app = own
    run = uuid.uuid4().hex[:6]
    tenants = [f"cf{run}-{i:03d}" for i in range(100)]
    streaming = tenants[::2]
    topic = every_destination(stack, app, streaming)
    client = CosmosClient(app.env["COSMOS_DB_ENDPOINT"], app.env["COSMOS_DB_KEY"],
                          connection_verify=False, enable_endpoint_discovery=False)
    db = client.create_database_if_not_exists(app.env["COSMOS_DB_DATABASE"])
    risks = db.create_container_if_not_exists(app.env["COSMOS_RISKS_CONTAINER"], partition_key=PartitionKey("/tenantId"))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    docs = [{"id": f"risk-{t}", "tenantId": t, "title": "Vendor outage", "status": "open", "score": 12,
             "createdAt": now, "updatedAt": now} for t in tenants]
    with ThreadPoolExecutor(8) as pool:  # written fast, so the feed hands them over in few batches
        list(pool.map(risks.upsert_item, docs))

    def arrived() -> bool:
        return all(app.get(f"/events/{t}?source=COSMOS_DB").json()["count"] >= 1 for t in tenants)

    wait_for(arrived, 90, 1.0, "an event for each of the 100 tenants")
    for t in tenants[::20]:
        [ev] = app.get(f"/events/{t}?source=COSMOS_DB").json()["events"]
        assert ev["event"]["entityId"] == f"risk-{t}" and ev["event"]["tenantId"] == t
    records = topic_records(stack.broker, topic, expect=len(streaming), timeout=60)
    changes = sorted(h["tenantId"] for h in records if h.get("source") == "COSMOS_DB")
    assert changes == sorted(streaming)  # one change each, once
    for t in streaming[::10]:  # the destinations of one publish run side by side: analytics may finish last
        def stored(t: str = t) -> list[str]:
            history = app.get(f"/events/{t}/history?source=COSMOS_DB", tenants=[t]).json()
            return [e["entityId"] for e in history["events"]]

        assert wait_for(stored, 10, 0.2, f"{t}'s change in the analytics store") == [f"risk-{t}"]
    assert_nothing_failed(stack, app, tenants)


def test_a_large_bulk_lands_in_each_tenants_stream_in_request_order(own: tuple[Stack, App]) -> None:
    """A bulk of 1,000 events (the largest allowed) with tenants laid out as batches are in practice:
    one tenant with 400 events in a row, one with 300 spread over the rest of the batch, 300 tenants
    with one event each, and 20 invalid items among them. Every valid event is delivered once, each
    tenant's stream holds its events in request order, and the results follow the request."""
    stack, app = own
    run = uuid.uuid4().hex[:6]
    block, spread = f"ob{run}-block", f"ob{run}-spread"
    singles = [f"ob{run}-one-{i:03d}" for i in range(300)]
    items: list[dict[str, Any]] = [event(block, n) for n in range(400)]
    for n in range(300):  # the spread tenant's events alternate with the singles'
        items += (event(spread, n), event(singles[n], 0))
    invalid = set(range(7, 1000, 50))  # 20 items: a bad eventType
    for i in invalid:
        items[i] = {**items[i], "eventType": "NOT_A_TYPE"}
    assert len(items) == 1000
    r = app.post("/events/bulk", json={"events": items}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    doc = r.json()
    assert [res["index"] for res in doc["results"]] == list(range(1000))
    assert [res["status"] for res in doc["results"]] == ["rejected" if i in invalid else "accepted" for i in range(1000)]
    assert doc["accepted"] == 980 and doc["failed"] == 0
    for t in (block, spread, singles[0], singles[-1]):
        sent = [it["entityId"] for i, it in enumerate(items) if it["tenantId"] == t and i not in invalid]
        listed = app.get(f"/events/{t}?limit=1000").json()
        stored = [e["event"]["entityId"] for e in reversed(listed["events"])]  # the stream lists newest first
        assert stored == sent, (t, len(stored), len(sent))
    assert_nothing_failed(stack, app, [block, spread, *singles])
