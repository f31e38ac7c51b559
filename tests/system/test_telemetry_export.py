"""The app's telemetry, from outside, with either backend (TELEMETRY_BACKEND=opencensus | opentelemetry):
the app in the local runner sends to the (fake) ingestion endpoint of its connection string, and both
backends put the same `grc.*` metrics (names and customDimensions) and log fields there.

Per backend, on a stack of its own (its change feed and queues are not the session app's): an
accepted event (grc.events.accepted, grc.deliveries.succeeded per destination), a refused caller (an
info log line of the invocation), a document the mapping rules cannot map (grc.deadletters.recorded
under destination `changefeed`), and a monitor pass run through the admin API (the retry queue's
depth and poison count as grc.retryqueue.* gauges).
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.system.cosmos import Platform, iso
from tests.system.fakes import FakeIngestion
from tests.system.harness import Stack, app_env, own_stack, start_app, tenant, wait_for

BACKENDS = ("opencensus", "opentelemetry")
# The SDKs' usage reports and the distro's remote configuration would go to Microsoft: off here.
OFFLINE = {"APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
           "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true"}


@pytest.fixture(scope="module")
def telemetry_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_stack(tmp_path_factory.mktemp("telemetry-stack")) as stack:
        yield stack


def metric_rows(ingestion: FakeIngestion, t: str) -> set[tuple[str, tuple[str, ...]]]:
    """(metric name, its customDimensions keys) of every grc.* record of tenant `t` or of no tenant."""
    out = set()
    for e in ingestion.received():
        if e["data"]["baseType"] != "MetricData":
            continue
        name, props = e["data"]["baseData"]["metrics"][0]["name"], e["data"]["baseData"]["properties"]
        if name.startswith("grc.") and props.get("tenantId", t) == t:
            out.add((name, tuple(sorted(props))))
    return out


def one_backend(backend: str, stack: Stack, work: Path) -> dict[str, Any]:
    ingestion = FakeIngestion()
    env = app_env(stack, work, APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string,
                  TELEMETRY_BACKEND=backend, LOG_LEVEL="info", **OFFLINE)
    app = start_app(env, work)
    try:
        t = tenant("tel")
        event = {"tenantId": t, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE",
                 "entityId": "r-1", "data": {"title": "telemetry"}}
        assert app.post("/events", json=event, tenants=[t]).status_code == 201
        assert app.post("/events", json=event, anonymous=True).status_code == 401
        Platform(env).container("controls").create_item(  # lastTest must be an object: unmappable
            {"id": f"ctl-{uuid.uuid4().hex[:8]}", "tenantId": t, "lastTest": "passed", "createdAt": iso(),
             "updatedAt": iso()})
        app.run_function("monitor")

        def exported() -> set[tuple[str, tuple[str, ...]]] | None:
            rows = metric_rows(ingestion, t)
            names = {n for n, _ in rows}
            want = {"grc.events.accepted", "grc.deliveries.succeeded", "grc.deadletters.recorded",
                    "grc.retryqueue.messages", "grc.retryqueue.poison_messages"}
            return rows if want <= names else None

        rows = wait_for(exported, 90, 1.0, f"the {backend} backend's metrics at the ingestion endpoint")
        dead = [e["data"]["baseData"]["properties"] for e in ingestion.received()
                if e["data"]["baseType"] == "MetricData"
                and e["data"]["baseData"]["metrics"][0]["name"] == "grc.deadletters.recorded"
                and e["data"]["baseData"]["properties"].get("tenantId") == t]
        refused = wait_for(lambda: [e for e in ingestion.logs()
                                    if "refused 401" in e["data"]["baseData"].get("message", "")] or None,
                           30, 0.5, "the refused caller's log line")
        return {"rows": rows, "dead": dead, "refused": refused[0]}
    finally:
        app.stop()
        ingestion.close()


def test_the_apps_telemetry_is_the_same_with_either_backend(telemetry_stack: Stack, tmp_path: Path) -> None:
    seen = {b: one_backend(b, telemetry_stack, tmp_path / b) for b in BACKENDS}
    for backend, got in seen.items():
        rows = dict(got["rows"])
        assert rows["grc.events.accepted"] == ("eventType", "source", "tenantId"), backend
        assert rows["grc.deliveries.succeeded"] == ("destination", "tenantId"), backend
        assert rows["grc.retryqueue.messages"] == () and rows["grc.retryqueue.poison_messages"] == ()
        # the change feed's own dead letter, under its destination (no longer "all")
        assert [d["destination"] for d in got["dead"]] == ["changefeed"], backend
        log = got["refused"]
        props = log["data"]["baseData"]["properties"]
        assert {"process", "module", "fileName", "lineNumber", "level", "logger_name", "operation"} <= set(props)
        assert props["logger_name"] == "grc.http" and props["operation"] == "publish_event", props
        assert len(log["tags"]["ai.operation.id"]) == 32 and log["tags"]["ai.operation.id"] != "0" * 32
    # What the workbook and the alert rules read: the same series and keys, whichever backend sent them
    # (compared over the metrics both runs sent; gauges such as Kafka's come when the monitor sees them).
    census, otel = (seen[b]["rows"] for b in BACKENDS)
    both = {n for n, _ in census} & {n for n, _ in otel}
    assert {r for r in census if r[0] in both} == {r for r in otel if r[0] in both}
    assert set(seen["opencensus"]["refused"]["data"]["baseData"]["properties"]) == \
        set(seen["opentelemetry"]["refused"]["data"]["baseData"]["properties"])


# What the docs let a record carry (docs/observability.md 'Logs' and 'What is the same', README
# 'Logs'): the whitelisted log dimensions, the log handlers' standard fields, and the metric
# dimensions of the custom-metrics table.
DOCUMENTED_LOG_KEYS = {"tenantId", "eventType", "source", "destination", "correlationId", "operation", "eventId",
                       "container", "errorType", "attempt", "count", "durationMs", "statusCode",
                       "process", "module", "fileName", "lineNumber", "level", "logger_name"}
DOCUMENTED_METRIC_KEYS = {"tenantId", "eventType", "source", "destination", "container"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_payloads_tokens_and_keys_never_reach_telemetry(backend: str, telemetry_stack: Stack, tmp_path: Path) -> None:
    """Markers in an event's data (accepted, refused as invalid, and failing delivery), in a bearer
    token and in the `?code=` function key: none is in any body POSTed to the ingestion endpoint,
    and every customDimensions key is one the docs list."""
    ingestion = FakeIngestion()
    env = app_env(telemetry_stack, tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string,
                  TELEMETRY_BACKEND=backend, LOG_LEVEL="info", **OFFLINE)
    app = start_app(env, tmp_path)
    # Short markers (not caught by the long-token rule by chance), one per place a secret sits.
    marks = {k: f"mk{k}{uuid.uuid4().hex[:8]}" for k in ("data", "bad", "failing", "token", "code", "codeok")}
    try:
        t, failing = tenant("red"), tenant("red")
        event = {"tenantId": t, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE",
                 "entityId": "r-1", "data": {"title": marks["data"], "note": f"secret {marks['data']}"}}
        assert app.post("/events", json=event, tenants=[t]).status_code == 201
        invalid = {**event, "action": marks["bad"], "data": {"title": marks["bad"]}}  # refused: the action
        assert app.post("/events", json=invalid, tenants=[t]).status_code == 400
        # A bearer token and a function key that carry markers: the refused caller is logged.
        r = app.post("/events", params={"code": marks["code"]}, json=event, anonymous=True,
                     headers={"authorization": f"Bearer {marks['token']}.{marks['token']}.sig"})
        assert r.status_code == 401
        assert app.post("/events", params={"code": marks["codeok"]}, json=event, tenants=[t]).status_code == 201
        # A delivery that fails (Kafka over AMQP with no Event Hubs): error logs, a dead letter.
        assert app.put(f"/stream-config/{failing}", tenants=[failing], json={"destinations": [
            {"type": "kafka", "config": {"transport": "amqp"},
             "retry": {"inProcessAttempts": 1, "attempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 1,
                       "jitter": 0, "timeoutSeconds": 40}}]}).status_code == 201
        bad_delivery = {**event, "tenantId": failing, "data": {"title": marks["failing"]}}
        assert app.post("/events", json=bad_delivery, tenants=[failing]).status_code == 201

        def exported() -> bool:
            names = {(n, dict(dims).get("tenantId")) for n, dims in
                     ((e["data"]["baseData"]["metrics"][0]["name"], e["data"]["baseData"]["properties"])
                      for e in ingestion.received() if e["data"]["baseType"] == "MetricData")}
            refused = any("refused 401" in e["data"]["baseData"].get("message", "") for e in ingestion.logs())
            return refused and {("grc.events.accepted", t), ("grc.deadletters.recorded", failing)} <= names

        wait_for(exported, 90, 1.0, f"the {backend} backend's records of every request")
        app.run_function("monitor")  # the timer's logs and gauges too
        wait_for(lambda: any(e["data"]["baseData"]["metrics"][0]["name"] == "grc.retryqueue.messages"
                             for e in ingestion.received() if e["data"]["baseType"] == "MetricData"),
                 60, 1.0, "the monitor's gauges")
    finally:
        app.stop()  # flushes what is still queued
        ingestion.close()
    bodies = b"\n".join(ingestion.raw).decode()
    leaked = {k: m for k, m in marks.items() if m in bodies}
    assert not leaked, f"{backend}: markers in telemetry: {leaked}"
    for e in ingestion.received():
        props = set(e["data"]["baseData"].get("properties") or {})
        allowed = DOCUMENTED_METRIC_KEYS if e["data"]["baseType"] == "MetricData" else DOCUMENTED_LOG_KEYS
        assert props <= allowed, (backend, e["data"]["baseType"], sorted(props - allowed))
