"""shared/observability/telemetry/ against a local ingestion endpoint (the exporter honours IngestionEndpoint),
with the default backend (opencensus); tests/test_telemetry_backends.py runs both backends.

The fake endpoint (tests/system/fakes.py) records every envelope POSTed to /v2.1/track; tests assert
on what really left the process: names, dimensions, values, operation correlation, and that
secrets/payloads did not.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator

import pytest

from shared.core.events import EventType, Source
from shared.core.settings import Settings
from shared.observability import telemetry
from shared.observability.telemetry import BatchTelemetryBuilder, Summary, SystemStats
from tests.system.fakes import FakeIngestion

IKEY = "11111111-2222-3333-4444-555555555555"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
SECRET = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS1kby1ub3QtdXNlLWFueXdoZXJlLTAxMjM0NQ=="


@pytest.fixture()
def ingestion() -> Iterator[tuple[FakeIngestion, str]]:
    sink = FakeIngestion()
    conn = f"InstrumentationKey={IKEY};IngestionEndpoint={sink.base}/"
    try:
        yield sink, conn
    finally:
        telemetry.configure(Settings())  # final export while the endpoint is still up
        sink.close()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # statsbeat would phone Microsoft's endpoint; the env fallback must not leak into tests
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "")  # as local.settings has it
    yield
    telemetry.configure(Settings())  # close whatever a test left configured


def _configure(conn: str, tmp_path: Any, log_level: str = "info", info_sampling: float = 1.0,
               **kw: Any) -> telemetry.Telemetry:
    settings = Settings(APPLICATIONINSIGHTS_CONNECTION_STRING=conn, LOG_LEVEL=log_level,
                        TELEMETRY_INFO_SAMPLING=info_sampling)
    # Metrics leave on flush() only (60 s interval); a log record the exporter's worker already took
    # off its queue leaves within the log interval (opencensus' public flush() cannot hurry it).
    return telemetry.configure(settings, export_interval=kw.pop("export_interval", 60.0),
                               log_export_interval=kw.pop("log_export_interval", 0.5),
                               storage_path=str(tmp_path / "ai-storage"), **kw)


# -- no connection string ----------------------------------------------------------------------


def test_without_connection_string_is_noop_and_starts_no_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    tel = telemetry.configure(Settings())
    assert tel.enabled is False and telemetry.current() is tel
    with telemetry.operation(TRACEPARENT, "EventsPost"):
        tel.on_batch(BatchTelemetryBuilder().accepted("t1", EventType.RISK_CREATED, Source.FRONTEND_APP).build())
        tel.on_system(SystemStats(memory_percent=50.0, destinations_healthy={"redis": True}))
        tel.record("grc.cosmos.request_charge", 3.0)
        tel.log_event(logging.ERROR, "boom", tenantId="t1")
        tel.flush()
    tel.close()
    assert {t.ident for t in threading.enumerate()} == before


def test_configured_threads_stop_on_close_and_reconfigure(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    _, conn = ingestion
    before = {t.ident for t in threading.enumerate()}
    tel = _configure(conn, tmp_path)
    assert tel.enabled and len({t.ident for t in threading.enumerate()} - before) >= 2
    telemetry.configure(Settings())  # replaces and closes the configured one
    deadline = time.monotonic() + 10
    while {t.ident for t in threading.enumerate() if t.is_alive()} - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {t.ident for t in threading.enumerate() if t.is_alive()} - before == set()
    assert all(type(h).__name__ != "AzureLogHandler" for h in logging.getLogger("grc").handlers)


# -- logs ----------------------------------------------------------------------------------------


def test_log_event_carries_dimensions_and_invocation(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    with telemetry.operation(TRACEPARENT, "EventsPost") as op:
        assert telemetry.current_operation() == op and op.trace_id == TRACE_ID
        tel.log_event(logging.WARNING, "destination failed", tenantId="tenant-1",
                      eventType=EventType.CONTROL_FAILED, destination="redis-streams",
                      correlationId="8d0c1f3e-5a1b-4c5d-9e7f-0a1b2c3d4e5f", attempt=2)
    assert telemetry.current_operation() is None
    tel.flush()
    env = sink.wait_for(lambda es: len(es) >= 1)[0]
    assert sink.paths[0].endswith("/v2.1/track")
    assert env["iKey"] == IKEY and env["name"] == "Microsoft.ApplicationInsights.Message"
    base = env["data"]["baseData"]
    assert base["message"] == "destination failed" and base["severityLevel"] == 2
    assert base["properties"]["fileName"].endswith("test_telemetry.py")  # the caller, not the wrapper
    assert {k: base["properties"][k] for k in
            ("tenantId", "eventType", "destination", "correlationId", "attempt", "operation")} == {
        "tenantId": "tenant-1", "eventType": "CONTROL_FAILED", "destination": "redis-streams",
        "correlationId": "8d0c1f3e-5a1b-4c5d-9e7f-0a1b2c3d4e5f", "attempt": "2", "operation": "EventsPost"}
    assert env["tags"]["ai.operation.id"] == TRACE_ID
    assert env["tags"]["ai.operation.parentId"] == SPAN_ID
    assert env["tags"]["ai.operation.name"] == "EventsPost"
    assert env["tags"]["ai.cloud.role"] == "grc-event-streaming"


def test_log_without_operation_has_no_fake_operation_id(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    tel.log_event(logging.INFO, "started", operation="startup")
    tel.flush()
    env = sink.wait_for(lambda es: len(es) >= 1)[0]
    assert "ai.operation.id" not in env["tags"]
    assert env["data"]["baseData"]["properties"]["operation"] == "startup"


def test_invalid_traceparent_mints_a_fresh_operation() -> None:
    with telemetry.operation("garbage", "Timer") as a, telemetry.operation(None, "Timer") as b:
        assert len(a.trace_id) == 32 and len(a.parent_id) == 16 and a.trace_id != b.trace_id
    assert telemetry.parse_traceparent(f"00-{'0' * 32}-{SPAN_ID}-01") is None
    assert telemetry.parse_traceparent(TRACEPARENT.upper()) == (TRACE_ID, SPAN_ID)


def test_no_payload_or_secret_reaches_an_envelope(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    storage_cs = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={SECRET};EndpointSuffix=core.windows.net"
    with telemetry.operation(TRACEPARENT, "EventsPost"):
        tel.log_event(logging.ERROR, f"could not connect with {storage_cs}",
                      tenantId="tenant-1",
                      data={"ssn": "123-45-6789", "title": "payload-marker"},  # not whitelisted
                      password="hunter2-marker",                               # not whitelisted
                      correlationId=storage_cs,                                # whitelisted name, secret value
                      destination=SECRET.rstrip("="),                          # key-like token
                      source="Bearer abc.def.ghi")
        try:
            raise RuntimeError("redis://user:hunter2-marker@cache:6380 rejected token=payload-marker")
        except RuntimeError:
            logging.getLogger("grc.pipeline").exception(
                "delivery crashed", extra={"custom_dimensions": {"tenantId": "tenant-1", "event": {"x": 1}}})
    tel.flush()
    envs = sink.wait_for(lambda es: len(es) >= 2)
    raw = b"".join(sink.raw).decode()
    for leaked in (SECRET, SECRET[:40], "hunter2-marker", "payload-marker", "123-45-6789", "abc.def.ghi",
                   "AccountName=acct;AccountKey=c2"):
        assert leaked not in raw
    msg = next(e for e in envs if e["data"]["baseType"] == "MessageData")["data"]["baseData"]
    assert set(msg["properties"]) == {"process", "module", "fileName", "lineNumber", "level", "logger_name",
                                      "tenantId", "correlationId", "destination", "source", "operation"}
    assert msg["properties"]["correlationId"] == "[redacted]"
    assert msg["properties"]["destination"] == "[redacted]"
    assert "AccountKey=[redacted]" in msg["message"]
    exc = next(e for e in envs if e["data"]["baseType"] == "ExceptionData")["data"]["baseData"]
    assert "event" not in exc["properties"] and exc["properties"]["tenantId"] == "tenant-1"
    assert exc["exceptions"][0]["typeName"] == "RuntimeError"


def test_log_level_setting_is_respected(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path, log_level="WARNING")
    assert logging.getLogger("grc").getEffectiveLevel() == logging.WARNING
    tel.log_event(logging.INFO, "quiet", tenantId="t1")
    logging.getLogger("grc.x").debug("quieter")
    tel.log_event(logging.ERROR, "loud", tenantId="t1")
    tel.flush()
    sink.wait_for(lambda es: len(es) >= 1)
    tel.close()
    assert [e["data"]["baseData"]["message"] for e in sink.logs()] == ["loud"]


def test_an_unknown_log_level_logs_at_info_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="grc"):
        telemetry.configure(Settings(LOG_LEVEL="verbose"))
    assert logging.getLogger("grc").getEffectiveLevel() == logging.INFO
    assert [r.getMessage() for r in caplog.records if "LOG_LEVEL" in r.getMessage()] == [
        "LOG_LEVEL 'verbose' is none of debug, info, warning, error, critical: logging at info"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="grc"):
        telemetry.configure(Settings(LOG_LEVEL="Warning"))  # any case, as before
    assert not [r for r in caplog.records if "LOG_LEVEL" in r.getMessage()]


def test_info_sampling_never_drops_warnings(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path, info_sampling=0.0)
    for i in range(20):
        tel.log_event(logging.INFO, f"batch {i} done", tenantId="t1")
    tel.log_event(logging.WARNING, "slow destination", destination="kafka")
    tel.flush()
    sink.wait_for(lambda es: len(es) >= 1)
    tel.close()
    assert [e["data"]["baseData"]["message"] for e in sink.logs()] == ["slow destination"]


def test_close_flushes_pending_logs_and_metrics(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)  # 60 s interval: only close() can have sent the metric
    tel.log_event(logging.WARNING, "bye", tenantId="t1")
    tel.on_system(SystemStats(memory_percent=42.5))
    tel.close()
    sink.wait_for(lambda es: len(es) >= 2, timeout=5)
    assert sink.logs()[0]["data"]["baseData"]["message"] == "bye"
    assert sink.metrics("grc.instance.memory_percent")[0]["data"]["baseData"]["metrics"][0]["value"] == 42.5


# -- metrics -------------------------------------------------------------------------------------


def _value(env: dict[str, Any]) -> dict[str, Any]:
    return env["data"]["baseData"]["metrics"][0]


def _props(env: dict[str, Any]) -> dict[str, str]:
    return env["data"]["baseData"]["properties"]


def test_batch_counters_are_deltas_with_exact_names_and_dimensions(
        ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    b = BatchTelemetryBuilder()
    b.accepted("t1", EventType.RISK_CREATED, Source.FRONTEND_APP, 2).accepted("t2", EventType.RISK_UPDATED, "MCP_SERVER")
    b.filtered("t1", EventType.RISK_CREATED, Source.FRONTEND_APP)
    b.rejected("t1", "BOGUS", Source.BACKEND_API).delivered("t1", "redis").delivered("t1", "redis")
    b.delivery_failed("t1", "kafka").retry_scheduled("t1", "kafka").deadletter("t1", "kafka")
    with telemetry.operation(TRACEPARENT, "CosmosChanges"):
        tel.on_batch(b.build())
        tel.on_batch(BatchTelemetryBuilder().accepted("t1", EventType.RISK_CREATED, Source.FRONTEND_APP).build())
        tel.on_batch(BatchTelemetryBuilder().failed("t1", EventType.RISK_CREATED, Source.COSMOS_DB).build())
    tel.flush()
    sink.wait_for(lambda es: len(sink.metrics("grc.events.failed")) == 1)

    acc = {(p["tenantId"], p["eventType"], p["source"]): _value(e)["value"]
           for e in sink.metrics("grc.events.accepted") for p in [_props(e)]}
    assert acc == {("t1", "RISK_CREATED", "FRONTEND_APP"): 3.0, ("t2", "RISK_UPDATED", "MCP_SERVER"): 1.0}
    assert _props(sink.metrics("grc.events.filtered")[0]) == {
        "tenantId": "t1", "eventType": "RISK_CREATED", "source": "FRONTEND_APP"}
    assert _props(sink.metrics("grc.deliveries.succeeded")[0]) == {"tenantId": "t1", "destination": "redis"}
    assert _value(sink.metrics("grc.deliveries.succeeded")[0])["value"] == 2.0
    for name in ("grc.deliveries.failed", "grc.retries.scheduled", "grc.deadletters.recorded"):
        assert _props(sink.metrics(name)[0]) == {"tenantId": "t1", "destination": "kafka"}
    # failure-type series carry the invocation; high-volume ones stay aggregated across invocations
    failed = sink.metrics("grc.events.failed")[0]
    assert failed["tags"]["ai.operation.id"] == TRACE_ID and failed["tags"]["ai.operation.parentId"] == SPAN_ID
    assert "ai.operation.id" not in sink.metrics("grc.events.accepted")[0]["tags"]

    # next interval: only what happened since the last export (delta, not cumulative)
    tel.on_batch(BatchTelemetryBuilder().accepted("t1", EventType.RISK_CREATED, Source.FRONTEND_APP, 4).build())
    tel.flush()
    sink.wait_for(lambda es: len(sink.metrics("grc.events.accepted")) == 3)
    assert _value(sink.metrics("grc.events.accepted")[-1])["value"] == 4.0
    tel.flush()  # nothing new -> nothing sent
    assert len(sink.metrics("grc.events.accepted")) == 3


def test_latency_and_delay_are_exported_as_aggregates(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    tel.on_batch(BatchTelemetryBuilder().latency("t1", 10).latency("t1", 30).changefeed_delay("t1", "risks", 1500)
                 .request_charge(2.5).build())
    tel.on_batch(BatchTelemetryBuilder().latency("t1", 20).request_charge(1.5).build())
    tel.flush()
    sink.wait_for(lambda es: len(sink.metrics("grc.cosmos.request_charge")) == 1)
    lat = sink.metrics("grc.latency.end_to_end_ms")[0]
    assert _props(lat) == {"tenantId": "t1"}
    assert lat["time"].endswith("+00:00")
    dp = _value(lat)
    assert (dp["kind"], dp["value"], dp["count"], dp["min"], dp["max"]) == ("Aggregation", 60.0, 3, 10.0, 30.0)
    delay = sink.metrics("grc.changefeed.delay_ms")[0]
    assert _props(delay) == {"tenantId": "t1", "container": "risks"} and _value(delay)["value"] == 1500.0
    assert _value(sink.metrics("grc.cosmos.request_charge")[0])["value"] == 4.0


def test_system_gauges_send_last_value(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    tel.on_system(SystemStats(memory_percent=70.0, redis_memory_percent=12.0,
                              destinations_healthy={"redis": True, "kafka": True}))
    tel.on_system(SystemStats(memory_percent=85.5, kafka_pending_messages=120, kafka_pending_bytes=64000,
                              retry_queue_messages=7, retry_queue_poison_messages=0,
                              destinations_healthy={"kafka": False}))
    tel.flush()
    sink.wait_for(lambda es: len(sink.metrics("grc.kafka.pending_bytes")) == 1)
    assert _value(sink.metrics("grc.retryqueue.messages")[0])["value"] == 7.0
    assert _value(sink.metrics("grc.retryqueue.poison_messages")[0])["value"] == 0.0
    assert _value(sink.metrics("grc.instance.memory_percent")[0])["value"] == 85.5
    assert _value(sink.metrics("grc.redis.memory_percent")[0])["value"] == 12.0
    assert _value(sink.metrics("grc.kafka.pending_messages")[0])["value"] == 120.0
    assert _value(sink.metrics("grc.kafka.pending_bytes")[0])["value"] == 64000.0
    health = {_props(e)["destination"]: _value(e)["value"] for e in sink.metrics("grc.destination.healthy")}
    assert health == {"redis": 1.0, "kafka": 0.0}
    assert _props(sink.metrics("grc.instance.memory_percent")[0]) == {}


def test_periodic_export_thread_sends_without_flush(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path, export_interval=0.3)
    tel.record("grc.deliveries.succeeded", 5, tenantId="t9", destination="tables")
    sink.wait_for(lambda es: len(sink.metrics("grc.deliveries.succeeded")) == 1, timeout=10)
    assert _props(sink.metrics("grc.deliveries.succeeded")[0]) == {"tenantId": "t9", "destination": "tables"}


def test_every_catalogued_metric_is_exported(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path, metrics_per_operation=True)
    with telemetry.operation(TRACEPARENT, "Perf"):
        for name, spec in telemetry.METRICS.items():
            tel.record(name, 1, **{d: f"v-{d}" for d in spec.dims})
    tel.flush()
    envs = sink.wait_for(lambda es: len(es) >= len(telemetry.METRICS))
    assert {_value(e)["name"] for e in envs} == set(telemetry.METRICS)
    assert all(e["tags"]["ai.operation.id"] == TRACE_ID for e in envs)
    assert all(set(_props(e)) == set(telemetry.METRICS[_value(e)["name"]].dims) for e in envs)


def test_record_rejects_unknown_names_and_dimensions(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    _, conn = ingestion
    tel = _configure(conn, tmp_path)
    with pytest.raises(ValueError):
        tel.record("grc.events.bogus", 1, tenantId="t1")
    with pytest.raises(ValueError):
        tel.record("grc.events.accepted", 1, tenantId="t1", eventType="X", source="Y", payload="p")


def test_metric_dimension_values_are_sanitised(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    tel.record("grc.deliveries.failed", 1, tenantId="t1", destination=f"Endpoint=sb://x/;SharedAccessKey={SECRET}")
    tel.flush()
    sink.wait_for(lambda es: len(es) == 1)
    assert _props(sink.metrics("grc.deliveries.failed")[0])["destination"] == "[redacted]"
    assert SECRET[:20] not in b"".join(sink.raw).decode()


def test_series_cap_bounds_memory(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion
    tel = _configure(conn, tmp_path, max_series=3)
    b = BatchTelemetryBuilder()
    for i in range(10):
        b.accepted(f"t{i}", "RISK_CREATED", "FRONTEND_APP")
    tel.on_batch(b.build())
    tel.flush()
    sink.wait_for(lambda es: len(sink.logs()) >= 1)
    assert len(sink.metrics("grc.events.accepted")) == 3
    assert "7 observations dropped" in sink.logs()[0]["data"]["baseData"]["message"]


def test_summary_merge() -> None:
    s = Summary.of(5, 1).merge(Summary.of(9))
    assert (s.count, s.total, s.min, s.max, s.mean) == (3, 15.0, 1.0, 9.0, 5.0)


# -- the pipeline's own per-batch record -------------------------------------------------------


def test_pipeline_stats_translate_to_catalogue_metrics() -> None:
    from shared.observability.tenant_metrics import BatchStats as PipelineStats

    ps = PipelineStats()
    t1 = ps.tenant("t1")  # one source: the type x source split is exact
    for _ in range(3):
        t1.count("acc"), t1.count("t:RISK_CREATED"), t1.count("s:COSMOS_DB")
    t1.count("acc"), t1.count("t:RISK_UPDATED"), t1.count("s:COSMOS_DB")
    t1.count("flt", 2), t1.count("rej"), t1.count("fail")
    t1.count("d:redis:ok", 4), t1.count("d:kafka:park"), t1.count("d:kafka:fail")
    t1.observe_latency(10.0), t1.observe_latency(30.0)
    t1.observe_delay(1500.0)
    t2 = ps.tenant("t2")  # mixed types and sources, but joint keys given
    t2.count("acc", 2), t2.count("t:A"), t2.count("t:B"), t2.count("s:X"), t2.count("s:Y")
    t2.count("acc:A|X"), t2.count("acc:B|Y")
    t1.deadletter("kafka", 2), t1.deadletter("changefeed")  # where each dead letter was given up
    t2.count("dlq")  # one counted without a destination (no writer does that now): "all"

    st = telemetry.from_pipeline_stats(ps, container="risks")
    assert dict(st.deadletters) == {("t1", "kafka"): 2, ("t1", "changefeed"): 1, ("t2", "all"): 1}
    assert dict(st.accepted) == {("t1", "RISK_CREATED", "COSMOS_DB"): 3, ("t1", "RISK_UPDATED", "COSMOS_DB"): 1,
                                 ("t2", "A", "X"): 1, ("t2", "B", "Y"): 1}
    assert dict(st.filtered) == {("t1", "all", "all"): 2}
    assert dict(st.rejected) == {("t1", "all", "all"): 1} and dict(st.failed) == {("t1", "all", "all"): 1}
    assert dict(st.delivered) == {("t1", "redis"): 4}
    assert dict(st.delivery_failed) == {("t1", "kafka"): 2}
    assert dict(st.retries_scheduled) == {("t1", "kafka"): 1}
    lat = st.latency_ms["t1"]
    assert (lat.count, lat.total) == (2, 40.0) and lat.min <= 10.0 <= 30.0 <= lat.max <= 33.0
    delay = st.changefeed_delay_ms[("t1", "risks")]
    assert delay.count == 1 and delay.total == 1500.0


def test_pipeline_hook_exports(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    from shared.observability.tenant_metrics import BatchStats as PipelineStats

    sink, conn = ingestion
    tel = _configure(conn, tmp_path)
    ps = PipelineStats()
    ps.tenant("t1").count("d:redis:ok", 7)
    tel.pipeline_hook(ps, [])
    telemetry.Telemetry().pipeline_hook(ps, [])  # the no-op one accepts the same call
    tel.flush()
    sink.wait_for(lambda es: len(es) == 1)
    assert _value(sink.metrics("grc.deliveries.succeeded")[0])["value"] == 7.0


def test_invocation_takes_trace_and_name_from_a_functions_context() -> None:
    from devhost.invoke import Context, TraceContext

    with telemetry.invocation(Context("changefeed_risks", trace_context=TraceContext(TRACEPARENT))) as op:
        assert (op.trace_id, op.parent_id, op.name) == (TRACE_ID, SPAN_ID, "changefeed_risks")
    with telemetry.invocation(None, "monitor") as op:
        assert op.name == "monitor" and len(op.trace_id) == 32


def test_aad_authentication_string_selects_a_managed_identity_credential() -> None:
    from azure.identity import ManagedIdentityCredential

    assert telemetry.aad_credential("") is None
    assert telemetry.aad_credential("Authorization=Key") is None
    assert isinstance(telemetry.aad_credential("Authorization=AAD"), ManagedIdentityCredential)
    assert isinstance(telemetry.aad_credential("ClientId=1111-2222;Authorization=aad"), ManagedIdentityCredential)


def test_entra_token_is_sent_with_every_post(ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    sink, conn = ingestion

    class FixedToken:  # a TokenCredential (the managed identity's stands in: no Entra ID here)
        scopes: list[tuple[str, ...]] = []

        def get_token(self, *scopes: str, **kw: Any) -> Any:
            from azure.core.credentials import AccessToken

            self.scopes.append(scopes)
            return AccessToken("entra-test-token", int(time.time()) + 3600)

    cred = FixedToken()
    tel = _configure(conn, tmp_path, credential=cred)
    tel.log_event(logging.WARNING, "with a token", tenantId="t1")
    tel.record("grc.cosmos.request_charge", 2.0)
    tel.flush()
    sink.wait_for(lambda es: len(es) >= 2)
    assert sink.authorization and set(sink.authorization) == {"Bearer entra-test-token"}
    assert cred.scopes[0] == ("https://monitor.azure.com//.default",)


def test_a_log_record_leaves_within_the_log_interval_without_flush(
        ingestion: tuple[FakeIngestion, str], tmp_path: Any) -> None:
    """What the exporter's worker holds leaves on its own within the log interval: flush() goes through
    opencensus' public API only, which flushes its queue but cannot hurry a batch the worker took."""
    sink, conn = ingestion
    tel = _configure(conn, tmp_path, log_export_interval=0.5)
    started = time.monotonic()
    tel.log_event(logging.WARNING, "on its own", tenantId="t1")
    sink.wait_for(lambda es: len(es) >= 1, timeout=5)
    assert time.monotonic() - started < 5
    assert sink.logs()[0]["data"]["baseData"]["message"] == "on its own"


def test_the_catalogue_is_plain_data() -> None:
    """What a workbook or drift test reads: names, kinds, dimensions, log fields; no exporter loaded."""
    import subprocess
    import sys

    code = ("import sys; from shared.observability.telemetry import catalogue as c; "
            "print(len(c.METRICS), sorted(c.LOG_STANDARD_FIELDS)[0], 'opencensus' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(telemetry.METRICS)), "fileName", "False"]
    assert all(spec.name == name and spec.kind in ("counter", "summary", "gauge") and spec.description
               for name, spec in telemetry.METRICS.items())
