"""The HTTP API's contract through the registered functions: status codes, problem details, limits."""
from __future__ import annotations

import pytest

from shared.core import limits
from tests.functions_client import invoke

pytestmark = pytest.mark.usefixtures("app_services")


def ev(tenant: str = "api-tenant", **over: object) -> dict[str, object]:
    base: dict[str, object] = {"tenantId": tenant, "eventType": "CONTROL_TESTED", "source": "MCP_SERVER",
                               "action": "TEST", "entityId": "ctl-1", "entityType": "control",
                               "data": {"result": "pass"}}
    base.update(over)
    return base


async def test_413_when_body_too_large() -> None:
    big = b'{"x":"' + b"a" * (limits.MAX_SINGLE_BODY_BYTES + 10) + b'"}'
    status, headers, body = await invoke("publish_event", "POST", "/events", big)
    assert status == 413 and body["maxBytes"] == limits.MAX_SINGLE_BODY_BYTES


async def test_413_when_enriched_event_too_large() -> None:
    status, _, body = await invoke("publish_event", "POST", "/events",
                                   ev(data={f"part{i}": "x" * 199_990 for i in range(5)}))
    assert status == 413 and "limit" in body["detail"]


async def test_415_when_not_json() -> None:
    status, _, body = await invoke("publish_event", "POST", "/events", b"tenantId=x",
                                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert status == 415 and body["title"] == "Unsupported Media Type"


async def test_400_malformed_json_and_non_object() -> None:
    status, _, body = await invoke("publish_event", "POST", "/events", b"{nope")
    assert status == 400 and "position" in body["detail"]
    status, _, body = await invoke("publish_event", "POST", "/events", [1, 2])
    assert status == 400 and body["errors"][0]["field"] == "(body)"


async def test_idempotency_key_becomes_event_id_and_client_id_wins() -> None:
    status, _, body = await invoke("publish_event", "POST", "/events", ev(), headers={"idempotency-key": "key-123"})
    assert status == 201 and body["eventId"] == "key-123"
    status, _, body = await invoke("publish_event", "POST", "/events", ev(eventId="client-9"),
                                   headers={"idempotency-key": "key-456"})
    assert body["eventId"] == "client-9"
    status, _, body = await invoke("publish_event", "POST", "/events", ev(), headers={"idempotency-key": "bad key!"})
    assert status == 400 and body["errors"][0]["field"] == "Idempotency-Key"


async def test_bulk_results_in_request_order_and_bad_event_does_not_fail_others() -> None:
    events = [ev(entityId="a"), {"tenantId": "api-tenant", "eventType": "BOGUS"}, ev(entityId="c")]
    status, _, body = await invoke("publish_events_bulk", "POST", "/events/bulk", {"events": events})
    assert status == 200
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert body["accepted"] == 2 and body["rejected"] == 1
    pointers = {e["pointer"] for e in body["results"][1]["errors"]}
    assert "/events/1/eventType" in pointers and "/events/1/data" in pointers


async def test_bulk_limits() -> None:
    status, _, body = await invoke("publish_events_bulk", "POST", "/events/bulk",
                                   {"events": [ev()] * (limits.MAX_BULK_EVENTS + 1)})
    assert status == 413 and body["maxEvents"] == limits.MAX_BULK_EVENTS
    status, _, body = await invoke("publish_events_bulk", "POST", "/events/bulk", {"evts": []})
    assert status == 400 and body["errors"][0]["pointer"] == "/events"


async def test_list_events_query_validation_and_filters() -> None:
    await invoke("publish_events_bulk", "POST", "/events/bulk", {"events": [
        ev("list-tenant", eventType="RISK_CREATED", source="ARCHER_GRC", action="CREATE"),
        ev("list-tenant", eventType="CONTROL_FAILED", source="MCP_SERVER", action="TEST"),
    ]})
    route = {"tenantId": "list-tenant"}
    status, _, body = await invoke("list_events", "GET", "/events/list-tenant", route=route,
                                   params={"eventType": "RISK_CREATED"})
    assert status == 200 and [e["event"]["eventType"] for e in body["events"]] == ["RISK_CREATED"]
    status, _, body = await invoke("list_events", "GET", "/events/list-tenant", route=route,
                                   params={"source": "MCP_SERVER"})
    assert [e["event"]["source"] for e in body["events"]] == ["MCP_SERVER"]
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"limit": ""}, {"limit": "\u00b2"},
                {"limit": "+5"}, {"eventType": "NOPE"}, {"eventType": ""}, {"source": "x"}):
        status, _, body = await invoke("list_events", "GET", "/events/list-tenant", route=route, params=bad)
        assert status == 400, bad
        assert body["errors"][0]["field"] in bad
    status, _, body = await invoke("list_events", "GET", "/events/BAD", route={"tenantId": "BAD"})
    assert status == 400 and body["errors"][0]["pointer"] == "#/path/tenantId"


async def test_stream_config_default_put_etag_and_filtering() -> None:
    route = {"tenantId": "cfg-tenant"}
    status, headers, body = await invoke("get_stream_config", "GET", "/stream-config/cfg-tenant", route=route)
    assert status == 200 and body["isDefault"] is True and "ETag" not in headers

    config = {"enabled": True, "filters": [{"eventTypes": ["RISK_CREATED"],
                                            "conditions": {"data.score": {"gte": 10}}}],
              "destinations": [{"type": "redis", "enabled": True, "config": {}}], "retentionDays": 7}
    status, headers, body = await invoke("put_stream_config", "PUT", "/stream-config/cfg-tenant", config,
                                         route=route)
    assert status == 201 and body["version"] == 1
    etag = headers["ETag"]

    status, _, problem = await invoke("put_stream_config", "PUT", "/stream-config/cfg-tenant", config,
                                      route=route, headers={"if-match": 'W/"stale"'})
    assert status == 412
    status, headers, body = await invoke("put_stream_config", "PUT", "/stream-config/cfg-tenant",
                                         {**config, "retentionDays": 8}, route=route, headers={"if-match": etag})
    assert status == 200 and body["version"] == 2 and body["retentionDays"] == 8

    status, _, body = await invoke("publish_event", "POST", "/events",
                                   ev("cfg-tenant", eventType="RISK_CREATED", action="CREATE", data={"score": 3}))
    assert status == 200 and body["status"] == "filtered"
    status, _, body = await invoke("publish_event", "POST", "/events",
                                   ev("cfg-tenant", eventType="RISK_CREATED", action="CREATE", data={"score": 30}))
    assert status == 201 and body["status"] == "accepted"


async def test_a_config_write_without_an_answer_is_a_503_audited_as_outcome_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The store applies the write and its answer is lost (the table client raising after the real
    call stands in for it): the client gets 503 with Retry-After, and the audit trail says the write
    may have been applied, with what was asked; the config reads back as written."""
    import uuid

    from azure.core.exceptions import ServiceResponseError
    from azure.data.tables.aio import TableClient

    tenant = f"cfg-{uuid.uuid4().hex[:8]}"
    route = {"tenantId": tenant}
    real_create = TableClient.create_entity

    async def answer_lost(self: TableClient, *args: object, **kwargs: object) -> object:
        await real_create(self, *args, **kwargs)
        raise ServiceResponseError("the connection was closed before the answer")

    monkeypatch.setattr(TableClient, "create_entity", answer_lost)
    status, headers, _ = await invoke("put_stream_config", "PUT", f"/stream-config/{tenant}",
                                      {"retentionDays": 2}, route=route)
    assert status == 503 and int(headers["Retry-After"]) > 0
    monkeypatch.setattr(TableClient, "create_entity", real_create)
    status, _, trail = await invoke("get_audit", "GET", f"/audit/{tenant}", route=route)
    assert status == 200 and [a["action"] for a in trail["items"]] == ["stream-config.put"], trail
    after = trail["items"][0]["after"]
    assert after["outcome"].startswith("unknown (ServiceResponseError)"), after
    assert after["requested"]["retentionDays"] == 2, after
    status, _, config = await invoke("get_stream_config", "GET", f"/stream-config/{tenant}", route=route)
    assert status == 200 and config["version"] == 1 and config["retentionDays"] == 2

    # A write that fails before it is sent (its read of the stored config has no answer) changed
    # nothing: a 503, and nothing more in the trail.
    real_get = TableClient.get_entity

    async def read_lost(self: TableClient, *args: object, **kwargs: object) -> object:
        raise ServiceResponseError("the connection was closed before the answer")

    monkeypatch.setattr(TableClient, "get_entity", read_lost)
    status, _, _ = await invoke("put_stream_config", "PUT", f"/stream-config/{tenant}", {"retentionDays": 3},
                                route=route)
    assert status == 503
    monkeypatch.setattr(TableClient, "get_entity", real_get)
    status, _, trail = await invoke("get_audit", "GET", f"/audit/{tenant}", route=route)
    assert len(trail["items"]) == 1, trail


async def test_stream_config_validation_errors_have_field_paths() -> None:
    route = {"tenantId": "cfg-bad"}
    status, _, body = await invoke("put_stream_config", "PUT", "/stream-config/cfg-bad", {
        "tenantId": "other-tenant", "retentionDays": 0,
        "destinations": [{"type": "redis", "config": {"maxLen": 1}}],
        "filters": [{"conditions": {"data.x": {"regex": "a"}}}]}, route=route)
    assert status == 400
    fields = {e["field"] for e in body["errors"]}
    assert {"retentionDays", "destinations[0].config.maxLen", "filters[0].conditions.data.x"} <= fields
    status, _, body = await invoke("put_stream_config", "PUT", "/stream-config/cfg-bad",
                                   {"tenantId": "other-tenant"}, route=route)
    assert status == 400 and body["errors"][0]["field"] == "tenantId"


async def test_stream_config_refuses_delivery_windows_that_do_not_hold() -> None:
    """Each Redis dedupe window must cover the destination's retry horizon; a Kafka attempt must outlast
    KAFKA_DELIVERY_TIMEOUT_MS plus the report grace. Refused with the field path, never defaulted."""
    route = {"tenantId": "cfg-windows"}
    long_retries = {"attempts": 10, "backoffSeconds": 60, "maxBackoffSeconds": 600}
    delivery_timeout_s = 30  # the sample's KAFKA_DELIVERY_TIMEOUT_MS
    status, _, body = await invoke("put_stream_config", "PUT", "/stream-config/cfg-windows", {"destinations": [
        {"type": "redis", "config": {"dedupeSeconds": 3600}, "retry": long_retries},
        {"type": "kafka", "retry": {"timeoutSeconds": delivery_timeout_s + 5}},
    ]}, route=route)
    assert status == 400, body
    by_pointer = {e["pointer"]: e for e in body["errors"]}
    assert set(by_pointer) == {"/destinations/0/config/dedupeSeconds", "/destinations/1/retry/timeoutSeconds"}
    # 12 tries x 10 s + 1 s + backoffs (60, 120, 240, 480, 600 x 6) x 1.2 + 10 queue polls x 60 s
    assert "retry horizon of 6121 s" in by_pointer["/destinations/0/config/dedupeSeconds"]["detail"]
    assert "more than 35 s" in by_pointer["/destinations/1/retry/timeoutSeconds"]["detail"]
    # Within the windows (or deduplication off on purpose): stored.
    status, _, body = await invoke("put_stream_config", "PUT", "/stream-config/cfg-windows", {"destinations": [
        {"type": "redis", "config": {"dedupeSeconds": 7200}, "retry": long_retries},
        {"type": "analytics", "retry": long_retries},
        {"type": "kafka", "retry": {"timeoutSeconds": delivery_timeout_s + 5.5}},
    ]}, route=route)
    assert status == 201, body
    status, _, body = await invoke("put_stream_config", "PUT", "/stream-config/cfg-windows", {"destinations": [
        {"type": "redis", "config": {"dedupeSeconds": 0}, "retry": long_retries}]}, route=route)
    assert status == 200, body


async def test_bulk_refuses_unknown_top_level_members() -> None:
    """BulkRequest forbids members other than `events`; a typo such as `event` must not pass silently."""
    status, _, body = await invoke("publish_events_bulk", "POST", "/events/bulk",
                                   {"events": [ev("bulk-extra")], "dryRun": True})
    assert status == 400 and body["errors"][0]["field"] == "dryRun"


@pytest.mark.parametrize("field,value", [("compressionEnabled", 0), ("enabled", "true"), ("retentionDays", "30"),
                                         ("batchSize", 10.5), ("destinations", [{"type": "redis", "enabled": 1}])])
async def test_stream_config_takes_json_types_as_documented(field: str, value: object) -> None:
    """No coercion of look-alike values (0 -> false, "30" -> 30): the body must match the schema."""
    route = {"tenantId": "cfg-strict"}
    status, _, body = await invoke("put_stream_config", "PUT", "/stream-config/cfg-strict", {field: value}, route=route)
    assert status == 400, body
    assert body["errors"][0]["field"].split("[")[0] == field


async def test_metrics_endpoint_counts_what_was_published() -> None:
    await invoke("publish_events_bulk", "POST", "/events/bulk", {"events": [ev("met-tenant")] * 3 + [
        {"tenantId": "met-tenant", "eventType": "RISK_CREATED"}]})
    status, _, body = await invoke("get_metrics", "GET", "/metrics/met-tenant", route={"tenantId": "met-tenant"})
    assert status == 200
    one_min = body["windows"]["1m"]
    assert one_min["accepted"] == 3 and one_min["rejected"] == 1
    assert one_min["destinations"]["redis"]["delivered"] == 3
    assert one_min["topEventTypes"][0] == {"name": "CONTROL_TESTED", "count": 3}
    assert one_min["errorRate"] == 0.25
    assert body["totals"]["accepted"] >= 3


async def test_health_reports_each_dependency() -> None:
    status, headers, body = await invoke("health", "GET", "/health")
    assert status == 200 and body["status"] == "healthy"
    assert set(body["dependencies"]) >= {"redis", "tables"}
    assert all(d["latencyMs"] is not None for d in body["dependencies"].values())
    assert "password" not in str(body).lower()
