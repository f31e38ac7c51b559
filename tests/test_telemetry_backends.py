"""Both telemetry backends (TELEMETRY_BACKEND=opencensus | opentelemetry) put the same names in the
same tables and columns, so the workbook and the alert rules read either.

Each backend runs tests/telemetry_scenario.py in a process of its own (the OpenTelemetry backend is
configured once per process, as in a Functions worker) against a fake ingestion endpoint (the
connection string's IngestionEndpoint; tests/system/fakes.py). What each POSTed is reduced to what
a KQL query reads: the table, the metric name and its customDimensions (names and values), the
customMetrics columns (value, valueCount, valueMin, valueMax; valueSum is value), and for log
records the message, severity and customDimensions keys.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.core.settings import Settings
from shared.observability.telemetry.catalogue import LOG_STANDARD_FIELDS, METRICS, emitted
from tests.system.fakes import FakeIngestion
from tests.telemetry_scenario import SECRET, TRACEPARENT

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("opencensus", "opentelemetry")
TRACE_ID, SPAN_ID = TRACEPARENT.split("-")[1:3]
TABLE = {"MetricData": "customMetrics", "MessageData": "traces", "ExceptionData": "exceptions"}


class Run:
    def __init__(self, sink: FakeIngestion, report: dict[str, Any]) -> None:
        self.envelopes = sink.received()
        self.posts = [json.loads(body) for body in sink.raw]  # each POST's envelopes, in arrival order
        self.raw, self.authorization, self.report = b"".join(sink.raw), list(sink.authorization), report

    def logs(self) -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e["data"]["baseType"] in ("MessageData", "ExceptionData")]

    def metrics(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e["data"]["baseType"] == "MetricData"
                and e["data"]["baseData"]["metrics"][0]["name"] == name]


def scenario(backend: str, storage: Path, *flags: str, tls: bool = False, environment: str | None = None) -> Run:
    """The scenario's telemetry as received; `tls`: the endpoint speaks https with a throwaway
    certificate the scenario's process trusts (REQUESTS_CA_BUNDLE, read by both SDKs' transport);
    `environment`: the APPLICATIONINSIGHTS_CONNECTION_STRING variable instead of the setting's value."""
    sink = FakeIngestion(tls_dir=storage if tls else None)
    try:
        conn = f"InstrumentationKey=11111111-2222-3333-4444-555555555555;IngestionEndpoint={sink.base}/"
        # The process environment carries the connection string, as the Functions host's app settings do
        # (the distro's exporters read it from there too); never the suite's own local default ("").
        env = {**os.environ, "APPLICATIONINSIGHTS_CONNECTION_STRING": conn if environment is None else environment}
        if tls:
            env["REQUESTS_CA_BUNDLE"] = str(storage / "fake.crt")
        done = subprocess.run([sys.executable, "-m", "tests.telemetry_scenario", backend, conn, str(storage), *flags],
                              cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        return Run(sink, report)
    finally:
        sink.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return {b: scenario(b, tmp_path_factory.mktemp(b), "--wait-log") for b in BACKENDS}


def kql_rows(envelopes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What KQL reads of each record (timestamps aside), sorted: a multiset, so a series sent twice
    or not at all shows."""
    rows: list[tuple[Any, ...]] = []
    for e in envelopes:
        kind, base = e["data"]["baseType"], e["data"]["baseData"]
        if kind == "MetricData":
            m = base["metrics"][0]
            value = float(m["value"])  # the service fills count 1, min = max = value when absent
            rows.append((TABLE[kind], m["name"], tuple(sorted(base["properties"].items())), value,
                         int(m.get("count", 1)), float(m.get("min", value)), float(m.get("max", value))))
        elif kind == "MessageData":
            rows.append((TABLE[kind], base["message"], base["severityLevel"], tuple(sorted(base["properties"]))))
        else:
            rows.append((TABLE[kind], base["exceptions"][0]["typeName"], base["severityLevel"],
                         tuple(sorted(base["properties"]))))
    return sorted(rows, key=repr)


def test_both_backends_put_the_same_names_in_the_same_tables_and_columns(runs: dict[str, Run]) -> None:
    for backend in BACKENDS:  # no requests, dependencies or anything else (the scenario made HTTP calls)
        assert {e["data"]["baseType"] for e in runs[backend].envelopes} == set(TABLE), backend
    census, otel = (kql_rows(runs[b].envelopes) for b in BACKENDS)
    assert census == otel
    # ... and they are the catalogue's (what tests/test_infra_workbook.py checks the workbook against)
    cat = emitted()
    metrics = [r for r in otel if r[0] == "customMetrics"]
    assert {r[1] for r in metrics} == set(METRICS)
    assert all(tuple(k for k, _ in r[2]) == tuple(sorted(cat.metrics[r[1]])) for r in metrics)
    for table in ("traces", "exceptions"):
        keys = {k for r in otel if r[0] == table for k in r[3]}
        assert keys and keys <= cat.tables[table] | LOG_STANDARD_FIELDS, keys
        assert LOG_STANDARD_FIELDS <= keys


def test_counters_are_deltas_summaries_aggregates_gauges_last_values(runs: dict[str, Run]) -> None:
    for backend in BACKENDS:
        run = runs[backend]
        accepted = [e["data"]["baseData"]["metrics"][0]["value"] for e in run.metrics("grc.events.accepted")]
        assert accepted == [2.0, 4.0], backend  # per interval; the empty flush between sent nothing
        [lat] = [e["data"]["baseData"]["metrics"][0] for e in run.metrics("grc.latency.end_to_end_ms")]
        assert (lat["value"], lat["count"], lat["min"], lat["max"]) == (40.0, 2, 10.0, 30.0), backend
        [mem] = run.metrics("grc.instance.memory_percent")
        assert mem["data"]["baseData"]["metrics"][0]["value"] == 85.5
        health = {e["data"]["baseData"]["properties"]["destination"]: e["data"]["baseData"]["metrics"][0]["value"]
                  for e in run.metrics("grc.destination.healthy")}
        assert health == {"redis": 1.0, "kafka": 0.0}


def test_log_records_carry_the_invocation(runs: dict[str, Run]) -> None:
    for backend in BACKENDS:
        logs = runs[backend].logs()
        [warning] = [e for e in logs if e["data"]["baseData"].get("message", "").startswith("destination failed")]
        tags, props = warning["tags"], warning["data"]["baseData"]["properties"]
        assert (tags["ai.operation.id"], tags["ai.operation.parentId"]) == (TRACE_ID, SPAN_ID), backend
        assert props["operation"] == "EventsPost" and props["tenantId"] == "tenant-1"
        assert tags["ai.cloud.role"] == "grc-event-streaming"
        [started] = [e for e in logs if e["data"]["baseData"].get("message") == "started"]
        # Outside an invocation: no operation (opencensus); the OpenTelemetry exporter writes zeros.
        assert started["tags"].get("ai.operation.id") == {"opencensus": None, "opentelemetry": "0" * 32}[backend]
        # operation_Name: opencensus sets it; the OpenTelemetry exporter has no field for it on a log
        # record (the `operation` dimension names the function on both).
        assert warning["tags"].get("ai.operation.name") == {"opencensus": "EventsPost", "opentelemetry": None}[backend]


def test_a_log_record_leaves_within_the_log_interval_without_flush(runs: dict[str, Run]) -> None:
    """The scenario logs one record, waits 3.5 s, then goes on: the record came in a POST of its own."""
    for backend in BACKENDS:
        first = runs[backend].posts[0]
        assert [e["data"]["baseData"].get("message") for e in first] == ["on its own"], backend


def test_no_payload_or_secret_leaves_either_backend(runs: dict[str, Run]) -> None:
    for backend in BACKENDS:
        raw = runs[backend].raw.decode()
        for leaked in (SECRET, SECRET[:40], "hunter2-marker", "payload-marker"):
            assert leaked not in raw, (backend, leaked)
        [exc] = [e for e in runs[backend].logs() if e["data"]["baseType"] == "ExceptionData"]
        assert "event" not in exc["data"]["baseData"]["properties"]
        assert exc["data"]["baseData"]["exceptions"][0]["typeName"] == "RuntimeError"


def test_each_backend_stops_cleanly_and_sends_nothing_elsewhere(runs: dict[str, Run]) -> None:
    for backend in BACKENDS:
        report = runs[backend].report
        assert report["enabled"] and report["threads_left"] == [], (backend, report)
        assert report["handlers_left"] == [] and report["blocked"] == [], (backend, report)
    assert runs["opencensus"].report["second_configure"] == "ok"
    assert "once per process" in runs["opentelemetry"].report["second_configure"]
    assert runs["opentelemetry"].report["type"] == "AzureMonitorTelemetry"


@pytest.mark.parametrize("backend", BACKENDS)
def test_entra_token_and_info_sampling(backend: str, tmp_path: Path) -> None:
    """APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD gives the exporter the managed
    identity's credential (tests/test_telemetry.py); a fake TokenCredential stands in for it here:
    every POST carries its token, asked for Azure Monitor's scope, over https (azure-core, under the
    OpenTelemetry exporter, refuses to send a token over http). TELEMETRY_INFO_SAMPLING=0 keeps
    warnings and errors only."""
    run = scenario(backend, tmp_path, "--entra", "--info-sampling", "0", tls=True)
    assert run.authorization and set(run.authorization) == {"Bearer entra-test-token"}
    assert run.report["token_scopes"][0] == ["https://monitor.azure.com//.default"]
    messages = sorted(e["data"]["baseData"].get("message", "")[:18] for e in run.logs()
                      if e["data"]["baseType"] == "MessageData")
    assert messages == ["destination failed"]
    assert len([e for e in run.logs() if e["data"]["baseType"] == "ExceptionData"]) == 1


def test_the_backend_setting_takes_one_of_two_values() -> None:
    assert Settings().telemetry_backend == "opencensus"
    assert Settings(TELEMETRY_BACKEND="opentelemetry").telemetry_backend == "opentelemetry"
    with pytest.raises(ValidationError):
        Settings(TELEMETRY_BACKEND="zipkin")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_blank_connection_string_in_the_environment_stops_neither_backend(backend: str, tmp_path: Path) -> None:
    """The local runner puts local.settings.json's blank value into the environment; both exporters
    also parse the variable (the OpenTelemetry one raised on it) and the setting reaches them anyway."""
    run = scenario(backend, tmp_path, environment="")
    assert run.metrics("grc.events.accepted"), backend
