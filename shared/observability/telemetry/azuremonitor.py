"""The OpenTelemetry backend: Microsoft's Azure Monitor OpenTelemetry distro (azure-monitor-opentelemetry).

TELEMETRY_BACKEND=opentelemetry. Behind the same `Telemetry` interface as the opencensus backend
(appinsights.py), with the same catalogue, per-interval aggregation (aggregate.py) and log filters
(logrecords.py), so the same metric names, dimensions and log fields reach the same tables. The
only module that imports opentelemetry or azure.monitor (an import-linter contract).

- Logs: the distro's one entry point, `configure_azure_monitor()` (what the Functions docs put in
  function_app.py), with `logger_name="grc"`: its LoggerProvider, AzureMonitorLogExporter and batch
  processor, and a LoggingHandler on the `grc` logger, on which this module puts the log filters.
  A log record processor of ours (`log_record_processors`, run before the distro's exporting one)
  keeps only catalogued fields, redacts the message and exception texts, and sets the invocation's
  trace and span ids (operation_Id, operation_ParentId). Off: the distro's tracing (the Functions
  host writes the `requests`; the app makes no spans), its live metrics (the host's already run)
  and performance counters, and every auto-instrumentation (each Redis, HTTP or Azure SDK call
  would become a dependency record: host.json has enableDependencyTracking false for the same
  reason).
- Metrics: the interval's aggregates, as OpenTelemetry metric data (counters: delta `Sum` points;
  summaries: delta `Histogram` points with count, sum, min and max; gauges: `Gauge` points), handed
  to the distro's `AzureMonitorMetricExporter` (its OpenTelemetry `MetricExporter.export`) by an
  exporter thread of ours each interval. Not through OpenTelemetry instruments on a MeterProvider:
  latency and delay arrive pre-aggregated per batch (count and sum from the pipeline's histogram),
  which a Histogram instrument cannot take (it records single values), and a synchronous Gauge
  repeats its last value at every export where the catalogue's gauges are sent when observed.
  The exporter sets no operation on metric records, so this backend does not split the
  failure-type series per invocation (`MetricSpec.correlate` is opencensus-only).

The distro sets OpenTelemetry's global providers, which a process can set once (as the Functions
worker does with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY, which must stay unset: this module
configures the distro itself): this backend is configured once per process; a second time raises.
"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from azure.monitor.opentelemetry import configure_azure_monitor
from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter
from opentelemetry._logs import get_logger_provider
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)

from shared.observability.telemetry.aggregate import AggregatingTelemetry, SeriesKey
from shared.observability.telemetry.base import LOGGER_NAME
from shared.observability.telemetry.catalogue import METRICS
from shared.observability.telemetry.logrecords import (
    KEPT_LOG_PROPERTIES,
    OP_ID,
    OP_KEYS,
    OP_PARENT,
    ContextFilter,
    InfoSampling,
)
from shared.observability.telemetry.redaction import label, redact

log = logging.getLogger("grc.telemetry")

# The distro's auto-instrumentations (its documented `instrumentation_options` names), all off.
INSTRUMENTATIONS = ("azure_sdk", "django", "fastapi", "flask", "httpx", "httpx2", "psycopg2", "requests",
                    "urllib", "urllib3")
# Resource detectors the distro runs (OTEL_EXPERIMENTAL_RESOURCE_DETECTORS; its default adds
# azure_vm, which asks the VM metadata endpoint and is skipped on App Service / Functions anyway).
RESOURCE_DETECTORS = "azure_app_service"
_SCOPE = InstrumentationScope("grc")
_configured = False
_configure_lock = threading.Lock()


class _LogFields(LogRecordProcessor):
    """Runs in the thread that logs, before the distro's exporting processor: the record's
    attributes become the catalogued fields `ContextFilter` put in `custom_dimensions`, the
    invocation its trace and span ids, and texts are redacted."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        rec = log_record.log_record
        attrs = rec.attributes or {}
        dims = attrs.get("custom_dimensions")
        dims = dict(dims) if isinstance(dims, Mapping) else {}
        op = {k: dims.pop(k, None) for k in OP_KEYS}
        if op[OP_ID] and op[OP_PARENT]:
            rec.trace_id, rec.span_id = int(str(op[OP_ID]), 16), int(str(op[OP_PARENT]), 16)
        kept: dict[str, Any] = {k: v for k, v in dims.items() if k in KEPT_LOG_PROPERTIES}
        if EXCEPTION_TYPE in attrs:  # the exporter makes an `exceptions` record of these
            kept[EXCEPTION_TYPE] = str(attrs[EXCEPTION_TYPE])
            for key in (EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE):
                if key in attrs:
                    kept[key] = redact(str(attrs[key]))
        rec.attributes = kept
        if isinstance(rec.body, str):
            rec.body = redact(rec.body)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _metrics_data(drained: Mapping[SeriesKey, list[float]], resource: Resource) -> MetricsData | None:
    """The interval's aggregates as OpenTelemetry metric data (delta: each interval its own figures)."""
    now = time.time_ns()
    by_name: dict[str, list[tuple[tuple[str, ...], list[float]]]] = {}
    for (name, dims, _op), figures in drained.items():
        by_name.setdefault(name, []).append((dims, figures))
    metrics = []
    for name, series in by_name.items():
        spec = METRICS[name]
        points: list[Any] = []
        for dims, (count, total, lo, hi, last) in series:
            attributes = {d: label(v) for d, v in zip(spec.dims, dims)}
            if spec.kind == "summary":
                # App Insights keeps count, sum, min and max of a histogram point (not its buckets)
                points.append(HistogramDataPoint(
                    attributes=attributes, start_time_unix_nano=now, time_unix_nano=now, count=int(count),
                    sum=total, bucket_counts=[int(count)], explicit_bounds=[], min=lo, max=hi))
            else:
                points.append(NumberDataPoint(attributes=attributes, start_time_unix_nano=now, time_unix_nano=now,
                                              value=last if spec.kind == "gauge" else total))
        if spec.kind == "summary":
            data: Any = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.DELTA)
        elif spec.kind == "gauge":
            data = Gauge(data_points=points)
        else:
            data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.DELTA, is_monotonic=True)
        metrics.append(Metric(name=name, description=spec.description, unit="1", data=data))
    if not metrics:
        return None
    scope = ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url="")
    return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")])


class AzureMonitorTelemetry(AggregatingTelemetry):
    def __init__(self, connection_string: str, *, credential: Any, level: int, info_sampling: float,
                 export_interval: float, log_export_interval: float, enable_local_storage: bool,
                 storage_path: str | None, max_series: int, role_name: str) -> None:
        global _configured
        super().__init__(max_series=max_series, metrics_per_operation=False)
        with _configure_lock:
            if _configured:
                raise RuntimeError("the OpenTelemetry telemetry backend is configured once per process (the "
                                   "distro sets OpenTelemetry's process-wide providers)")
            _configured = True
        self._closed = False
        self._export_lock = threading.Lock()
        # The distro's own tracing and metrics pipelines (no keyword turns them off; these standard
        # OpenTelemetry settings do): no spans of ours, and our metrics go through our exporter below.
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
        os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", RESOURCE_DETECTORS)
        # The distro's batch log processor waits this long for a partial batch (its own default: 5 s).
        os.environ.setdefault("OTEL_BLRP_SCHEDULE_DELAY", str(int(log_export_interval * 1000)))
        options: dict[str, Any] = dict(connection_string=connection_string, credential=credential,
                                       disable_offline_storage=not enable_local_storage)
        if storage_path:
            options["storage_directory"] = storage_path
        # ai.cloud.role, and ai.cloud.roleInstance the host name as opencensus sends it (on App Service
        # the distro's detector would take WEBSITE_INSTANCE_ID; elsewhere the SDK a per-process id)
        self._resource = Resource.create({"service.name": role_name, "service.instance.id": socket.gethostname()})

        grc = logging.getLogger(LOGGER_NAME)
        before = set(grc.handlers)
        configure_azure_monitor(
            **options, logger_name=LOGGER_NAME, resource=self._resource, log_record_processors=[_LogFields()],
            enable_live_metrics=False, enable_performance_counters=False,
            instrumentation_options={name: {"enabled": False} for name in INSTRUMENTATIONS})
        self._logs = get_logger_provider()
        self._handlers = [h for h in grc.handlers if h not in before]
        for handler in self._handlers:
            handler.setLevel(level)
            if info_sampling < 1.0:
                handler.addFilter(InfoSampling(info_sampling))
            handler.addFilter(ContextFilter())

        self._exporter = AzureMonitorMetricExporter(**options)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(export_interval,), name="grc-metrics-export",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._export_metrics()

    def _export_metrics(self) -> None:
        with self._export_lock:  # the exporter thread and flush() never send one interval twice
            drained, dropped = self.aggregator.drain()
            if dropped:
                log.warning("metric series cap reached: %d observations dropped this interval", dropped)
            data = _metrics_data(drained, self._resource)
            if data is not None:
                self._exporter.export(data)

    def flush(self, timeout: float | None = None) -> None:
        """Export the interval's metrics now, then every log record emitted so far (the SDK's
        force_flush waits for them)."""
        if self._closed:
            return
        self._export_metrics()  # first: it may log
        self._logs.force_flush(int((5.0 if timeout is None else timeout) * 1000))  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        atexit.unregister(self.close)
        self._stop.set()
        self._thread.join(5.0)
        self._exporter.shutdown()
        grc = logging.getLogger(LOGGER_NAME)
        for handler in self._handlers:
            grc.removeHandler(handler)
        self._logs.shutdown()  # type: ignore[attr-defined]  # the SDK LoggerProvider: its batch worker
