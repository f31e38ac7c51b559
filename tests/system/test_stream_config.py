"""Stream configs round-trip: what GET answers can be PUT back (issue 12, item 5)."""
from __future__ import annotations

import uuid
from pathlib import Path

from localdev import services
from tests.system.harness import (App, Stack, app_env, create_topic, delete_topic, start_app, tenant,
                                  topic_names)


def test_get_then_put_of_the_same_body_round_trips(app: App) -> None:
    t = tenant()
    path = f"/stream-config/{t}"
    read = app.get(path, tenants=[t])
    assert read.status_code == 200 and read.json()["isDefault"] is True and read.json()["version"] == 0
    created = app.put(path, json=read.json(), tenants=[t])
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["isDefault"] is False
    assert created.json()["updatedAt"] and created.headers["etag"]

    # Read, modify, write back whole: the read-only fields come along and are accepted.
    current = app.get(path, tenants=[t]).json()
    current["batchSize"] = 25
    current["filters"] = [{"eventTypes": ["RISK_CREATED"], "sources": [], "conditions": {}}]
    replaced = app.put(path, json=current, tenants=[t])
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["version"], body["batchSize"], body["isDefault"]) == (2, 25, False)
    assert body["updatedAt"] != current["updatedAt"]
    assert app.get(path, tenants=[t]).json() == body

    # The body's version is what was read: a write from a stale read is refused, nothing changes.
    stale = app.put(path, json=read.json(), tenants=[t])
    assert stale.status_code == 412 and stale.headers["content-type"].startswith("application/problem+json")
    assert app.get(path, tenants=[t]).json() == body
    # Read-only fields still have their types: junk is a 400 naming the field.
    bad = app.put(path, json={**body, "version": "two"}, tenants=[t])
    assert bad.status_code == 400 and [e["field"] for e in bad.json()["errors"]] == ["version"], bad.text
    # A destination type given twice: the error names the list and where the repeat is.
    twice = app.put(path, json={**body, "destinations": [{"type": "redis"}, {"type": "vector"}, {"type": "redis"}]},
                    tenants=[t])
    assert twice.status_code == 400, twice.text
    assert [(e["pointer"], e["detail"]) for e in twice.json()["errors"]] == [
        ("/destinations", "destination types must be unique; repeated: 'redis' at 0, 2")]
    # A bad condition is named by its own path, each one, not only the first of the filter.
    bad_ops = app.put(path, json={**body, "filters": [{"conditions": {
        "data.score": {"gte": 3}, "data.owner": {"in": "me"}, "metadata.region": {"like": "west%"}}}]}, tenants=[t])
    assert bad_ops.status_code == 400, bad_ops.text
    assert [(e["pointer"], e["field"]) for e in bad_ops.json()["errors"]] == [
        ("/filters/0/conditions/data.owner", "filters[0].conditions.data.owner"),
        ("/filters/0/conditions/metadata.region", "filters[0].conditions.metadata.region")]
    assert app.get(path, tenants=[t]).json() == body


def test_openapi_documents_the_read_only_fields_on_put(app: App) -> None:
    doc = app.get("/openapi.json", anonymous=True).json()
    props = doc["components"]["schemas"]["StreamConfigIn"]["properties"]
    for name in ("version", "updatedAt", "isDefault"):
        assert "read-only" in props[name]["description"], props[name]
    put = doc["paths"]["/stream-config/{tenantId}"]["put"]
    assert "412" in put["responses"] and "version" in put["responses"]["412"]["description"]


def test_a_kafka_retry_block_without_a_timeout_keeps_the_kafka_default(app: App) -> None:
    """A user who only changes the attempts of a Kafka destination gets Kafka's safe attempt timeout
    (60 s, above KAFKA_DELIVERY_TIMEOUT_MS + the report grace), not a refusal; a too short one is
    still refused with the field named."""
    t = tenant()
    body = {"enabled": True, "destinations": [{"type": "kafka", "config": {}, "retry": {"attempts": 1}}]}
    r = app.put(f"/stream-config/{t}", json=body, tenants=[t])
    assert r.status_code == 201, r.text
    assert r.json()["destinations"][0]["retry"]["timeoutSeconds"] == 60
    body["destinations"][0]["retry"]["timeoutSeconds"] = 10
    r = app.put(f"/stream-config/{t}", json=body, tenants=[t])
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["destinations[0].retry.timeoutSeconds"]


def test_filter_conditions_decide_what_is_delivered(app: App) -> None:
    """README "Stream configuration", Filters: an event passes when any filter matches; a filter's
    conditions must all hold; ordering compares numbers with numbers, two RFC 3339 date-times as
    instants (any offsets), other strings as text; a missing path fails every operator but `ne` and
    `exists: false`. What is filtered is answered `filtered` and is not in the stream."""
    t = tenant("filters")
    config = {"tenantId": t, "filters": [
        {"eventTypes": ["RISK_UPDATED"],
         "conditions": {"data.score": {"gte": 15}, "data.dueAt": {"lt": "2026-12-01T00:00:00Z"}}},
        {"eventTypes": ["CONTROL_FAILED"], "conditions": {"metadata.region": "westeurope"}},
    ]}
    assert app.put(f"/stream-config/{t}", json=config, tenants=[t]).status_code in (200, 201)

    def event(i: int, event_type: str, data: dict[str, object], **metadata: str) -> dict[str, object]:
        return {"tenantId": t, "eventId": f"flt-{i}", "eventType": event_type, "source": "ARCHER_GRC",
                "action": "UPDATE", "entityType": "risk", "entityId": f"r-{i}", "data": data,
                "metadata": metadata}

    events = [
        event(0, "RISK_UPDATED", {"score": 20, "dueAt": "2026-12-01T03:00:00+05:00"}),  # 11-30T22:00Z
        event(1, "RISK_UPDATED", {"score": 20, "dueAt": "2026-12-01T00:00:00.5Z"}),  # half a second late
        event(2, "RISK_UPDATED", {"score": 14, "dueAt": "2026-11-01T00:00:00Z"}),  # score too low
        event(3, "RISK_UPDATED", {"score": "20", "dueAt": "2026-11-01T00:00:00Z"}),  # a string is no number
        event(4, "RISK_UPDATED", {"score": 15}),  # no dueAt: the condition fails
        event(5, "CONTROL_FAILED", {}, region="westeurope"),
        event(6, "CONTROL_FAILED", {}, region="eastus"),
        event(7, "RISK_CREATED", {"score": 20, "dueAt": "2026-11-01T00:00:00Z"}),  # no filter names it
    ]
    r = app.post("/events/bulk", json={"events": events}, tenants=[t])
    assert r.status_code == 200, r.text
    statuses = [x["status"] for x in r.json()["results"]]
    assert statuses == ["accepted", "filtered", "filtered", "filtered", "filtered", "accepted", "filtered",
                        "filtered"], statuses
    listed = app.get(f"/events/{t}", tenants=[t]).json()["events"]
    assert sorted(e["event"]["eventId"] for e in listed) == ["flt-0", "flt-5"], listed


def test_a_kafka_topic_the_broker_does_not_have_is_refused_and_never_made(app: App, stack: Stack) -> None:
    """README "Kafka / Event Hubs destination", Topics: Event Hubs creates no event hub through Kafka,
    so a stream config naming a topic the broker does not have is refused (422, naming where), and the
    local broker, like Event Hubs, is never made to create one. The deployment's event hub
    (`grc-events`, KAFKA_DEFAULT_TOPIC) exists, as infra provisions it."""
    t = tenant("topics")
    typo = f"grc-evnts-{uuid.uuid4().hex[:6]}"
    r = app.put(f"/stream-config/{t}", tenants=[t], json={
        "topics": ["grc-events", typo],
        "destinations": [{"type": "kafka",
                          "config": {"routes": [{"topic": f"{typo}-2", "eventTypes": []}]}}]})
    problem = r.json()
    assert r.status_code == 422 and problem["type"] == "about:blank", r.text
    assert sorted((e["pointer"], e["type"]) for e in problem["errors"]) == [
        ("/destinations/0/config/routes/0/topic", "unknown_topic"), ("/topics/1", "unknown_topic")], problem
    assert app.get(f"/stream-config/{t}", tenants=[t]).json()["isDefault"] is True  # nothing stored
    # No topics named: the deployment's default event hub, which exists.
    r = app.put(f"/stream-config/{t}", tenants=[t],
                json={"destinations": [{"type": "redis"}, {"type": "kafka"}]})
    assert r.status_code == 201, r.text
    sent = app.post("/events", tenants=[t], json={
        "tenantId": t, "eventId": "topics-1", "eventType": "RISK_UPDATED", "source": "MCP_SERVER",
        "action": "UPDATE", "data": {"score": 3}})
    assert sent.status_code == 201, sent.text
    kafka = next(d for d in sent.json()["destinations"] if d["destination"] == "kafka")
    assert kafka["status"] == "delivered" and kafka["ref"].startswith("grc-events/"), kafka
    assert not {typo, f"{typo}-2"} & topic_names(stack.broker)


def test_without_topics_the_default_topic_is_checked_and_a_silent_broker_leaves_them_unchecked(
        stack: Stack, tmp_path: Path) -> None:
    """README, Topics: with no topics named, the deployment's default topic (KAFKA_DEFAULT_TOPIC) is
    the one checked (422 at `/topics` when the broker lacks it); a broker that cannot be asked within
    HEALTH_TIMEOUT_SECONDS does not block the write: the config is stored unchecked, and logged."""
    kafka_config = {"destinations": [{"type": "redis"}, {"type": "kafka"}]}
    t = tenant("default-topic")
    app = start_app(app_env(stack, tmp_path / "missing", KAFKA_DEFAULT_TOPIC=f"gone-{uuid.uuid4().hex[:6]}",
                            SYSTEM_PERFORMANCE_EVENTS="false"), tmp_path / "missing")
    try:
        r = app.put(f"/stream-config/{t}", tenants=[t], json=kafka_config)
        assert r.status_code == 422, r.text
        assert [(e["pointer"], e["type"]) for e in r.json()["errors"]] == [("/topics", "unknown_topic")]
        assert "KAFKA_DEFAULT_TOPIC" in r.json()["errors"][0]["detail"]
    finally:
        app.stop()
    silent = start_app(app_env(stack, tmp_path / "silent", KAFKA_BROKER=f"127.0.0.1:{services.free_port()}",
                               SYSTEM_PERFORMANCE_EVENTS="false"), tmp_path / "silent")
    try:
        r = silent.put(f"/stream-config/{t}", tenants=[t], json=kafka_config)
        assert r.status_code == 201, r.text
        assert f"stream config of {t} stored with its Kafka topics unchecked" in silent.log()
    finally:
        silent.stop()


def test_a_topic_gone_after_the_check_is_not_created_again_by_a_delivery(stack: Stack,
                                                                          tmp_path: Path) -> None:
    """README, Topics: the producers never ask the broker to create a topic, so an event hub deleted
    after the config was stored fails its deliveries (parked for retry) under the local runner as in
    Azure, instead of the local broker creating it again. (An instance restarted after the deletion:
    tansu also accepts a produce to a deleted topic whose metadata a producer still holds, where
    Event Hubs refuses it; that is the stand-in's, not checked here.)"""
    t, topic = tenant("gone-topic"), f"gone-{uuid.uuid4().hex[:6]}"
    create_topic(stack.broker, topic)
    env = app_env(stack, tmp_path, KAFKA_DELIVERY_TIMEOUT_MS="3000", SYSTEM_PERFORMANCE_EVENTS="false")
    app = start_app(env, tmp_path)
    try:
        r = app.put(f"/stream-config/{t}", tenants=[t], json={"topics": [topic], "destinations": [
            {"type": "kafka", "retry": {"attempts": 2, "inProcessAttempts": 1, "timeoutSeconds": 9}}]})
        assert r.status_code == 201, r.text
    finally:
        app.stop()
    delete_topic(stack.broker, topic)  # an operator removes the event hub
    app = start_app(env, tmp_path)
    try:
        sent = app.post("/events", tenants=[t], json={
            "tenantId": t, "eventId": "gone-1", "eventType": "RISK_UPDATED", "source": "MCP_SERVER",
            "action": "UPDATE", "data": {"score": 3}})
        assert sent.status_code == 201, sent.text
        assert [(d["destination"], d["status"]) for d in sent.json()["destinations"]] == [("kafka", "parked")]
        assert topic not in topic_names(stack.broker)
    finally:
        app.stop()
