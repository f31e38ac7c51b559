"""The Application Insights backend (opencensus-ext-azure), through its public API only.

The only module that imports opencensus (retired upstream; DESIGN.md section 4). The default
(TELEMETRY_BACKEND=opencensus, the design card's exporter); azuremonitor.py is the OpenTelemetry
one, behind the same `Telemetry` interface, catalogue, aggregation and log filters.

- Logs: an `AzureLogHandler` on the `grc` logger (its documented options: connection string,
  credential, local storage, export interval), the filters of logrecords.py (sampling; the
  invocation, catalogued sanitised dimensions and the standard fields), and a telemetry processor
  (`add_telemetry_processor`, the documented hook on every envelope before it is sent) that sets
  the cloud role and the invocation's operation tags, redacts message and exception texts, and drops
  every property that is not a catalogued log field.
- Metrics: a `MetricsExporter` fed by an opencensus `MetricProducer` of our own that drains the
  interval's aggregates (`AggregatingTelemetry`), on the exporter thread opencensus' own
  `transport.get_exporter_thread` runs. The exporter writes each point's value; what App Insights
  needs beyond it (a summary's count, min and max; the invocation of a correlated series) travels as
  reserved labels that the metrics processor moves into the envelope and removes.
"""
from __future__ import annotations

import atexit
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from opencensus.ext.azure.log_exporter import AzureLogHandler
from opencensus.ext.azure.metrics_exporter import MetricsExporter
from opencensus.metrics import transport
from opencensus.metrics.export.metric import Metric
from opencensus.metrics.export.metric_descriptor import MetricDescriptor, MetricDescriptorType
from opencensus.metrics.export.metric_producer import MetricProducer
from opencensus.metrics.export.point import Point
from opencensus.metrics.export.time_series import TimeSeries
from opencensus.metrics.export.value import ValueDouble
from opencensus.metrics.label_key import LabelKey
from opencensus.metrics.label_value import LabelValue

from shared.observability.telemetry.aggregate import AggregatingTelemetry, Aggregator, SeriesKey
from shared.observability.telemetry.base import LOGGER_NAME
from shared.observability.telemetry.catalogue import METRICS
from shared.observability.telemetry.logrecords import (
    KEPT_LOG_PROPERTIES,
    OP_ID,
    OP_KEYS,
    OP_NAME,
    OP_PARENT,
    ContextFilter,
    InfoSampling,
)
from shared.observability.telemetry.redaction import label, redact

log = logging.getLogger("grc.telemetry")

# Reserved labels a processor turns into envelope fields (and removes); the invocation's are
# logrecords.OP_KEYS, shared with the log records.
_COUNT, _MIN, _MAX = "_grc.count", "_grc.min", "_grc.max"


def _set_operation(envelope: Any, props: dict[str, Any], role: str) -> None:
    """Move the reserved operation properties into the envelope's tags (W3C ids, as the host writes
    them), or remove the operation tags the exporter put on a record of no invocation."""
    tags = envelope.tags
    tags["ai.cloud.role"] = role
    op = {k: props.pop(k, None) for k in OP_KEYS}
    if op[OP_ID] in (None, "null"):  # a label without a value reaches the envelope as "null"
        tags.pop("ai.operation.id", None)
        tags.pop("ai.operation.parentId", None)
        return
    tags["ai.operation.id"] = op[OP_ID]
    tags["ai.operation.parentId"] = op[OP_PARENT]
    tags["ai.operation.name"] = op[OP_NAME]


def _processor(role: str, finish: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> Callable[[Any], bool]:
    """A telemetry processor (run on every envelope before it is sent): the cloud role and the
    invocation's operation tags from the reserved properties, then `finish`, the record type's own
    part, gives the properties that are sent."""

    def process(envelope: Any) -> bool:
        base = envelope.data.baseData
        props = dict(base.properties or {})
        _set_operation(envelope, props, role)
        base.properties = finish(base, props)
        return True

    return process


def _finish_log(base: Any, props: dict[str, Any]) -> dict[str, Any]:
    """Messages and exception texts redacted; only catalogued log fields and dimensions kept."""
    if getattr(base, "message", None):
        base.message = redact(base.message)
    for exc in getattr(base, "exceptions", None) or []:
        exc["message"] = redact(str(exc.get("message", "")))
    return {k: v for k, v in props.items() if k in KEPT_LOG_PROPERTIES}


def _finish_metric(base: Any, props: dict[str, Any]) -> dict[str, Any]:
    """A summary's count, min and max (reserved labels) into the data point: an App Insights aggregate."""
    if _COUNT in props:
        point = base.metrics[0]
        point.kind, point.count = "Aggregation", int(props.pop(_COUNT))
        point.min, point.max = float(props.pop(_MIN)), float(props.pop(_MAX))
    return props


class _IntervalProducer(MetricProducer):  # type: ignore[misc]
    """Drains the interval's aggregates into opencensus gauge metrics (one point per series)."""

    def __init__(self, aggregator: Aggregator) -> None:
        self._aggregator = aggregator

    def get_metrics(self) -> list[Metric]:
        now = datetime.now(timezone.utc)  # aware: the envelope time gets an explicit UTC offset
        drained, dropped = self._aggregator.drain()
        if dropped:
            log.warning("metric series cap reached: %d observations dropped this interval", dropped)
        by_name: dict[str, list[tuple[SeriesKey, list[float]]]] = {}
        for key, figures in drained.items():
            by_name.setdefault(key[0], []).append((key, figures))
        return [self._metric(name, series, now) for name, series in by_name.items()]

    @staticmethod
    def _metric(name: str, series: list[tuple[SeriesKey, list[float]]], now: datetime) -> Metric:
        spec = METRICS[name]
        keys = list(spec.dims) + list(OP_KEYS) + ([_COUNT, _MIN, _MAX] if spec.kind == "summary" else [])
        out = []
        for (_, dims, op), (count, total, lo, hi, last) in series:
            value = last if spec.kind == "gauge" else total
            labels = [label(v) for v in dims]
            labels += [None, None, None] if op is None else [op.trace_id, op.parent_id, op.name]
            if spec.kind == "summary":
                labels += [str(int(count)), repr(lo), repr(hi)]
            out.append(TimeSeries([LabelValue(v) for v in labels], [Point(ValueDouble(value), now)], now))
        descriptor = MetricDescriptor(name, spec.description, "1", MetricDescriptorType.GAUGE_DOUBLE,
                                      [LabelKey(k, k) for k in keys])
        return Metric(descriptor, out)


class AppInsightsTelemetry(AggregatingTelemetry):
    def __init__(self, connection_string: str, *, credential: Any, level: int, info_sampling: float,
                 export_interval: float, log_export_interval: float, enable_local_storage: bool,
                 storage_path: str | None, metrics_per_operation: bool | None, max_series: int,
                 role_name: str) -> None:
        super().__init__(max_series=max_series, metrics_per_operation=metrics_per_operation)
        self._closed = False
        options: dict[str, Any] = dict(connection_string=connection_string,
                                       enable_local_storage=enable_local_storage)
        if storage_path:
            options["storage_path"] = storage_path
        if credential is not None:
            options["credential"] = credential  # Entra ID token on every POST to /v2.1/track

        self._handler = AzureLogHandler(export_interval=log_export_interval, **options)
        self._handler.setLevel(level)
        if info_sampling < 1.0:
            self._handler.addFilter(InfoSampling(info_sampling))
        self._handler.addFilter(ContextFilter())
        self._handler.add_telemetry_processor(_processor(role_name, _finish_log))
        logging.getLogger(LOGGER_NAME).addHandler(self._handler)

        self._exporter = MetricsExporter(export_interval=export_interval, enable_standard_metrics=False,
                                         **options)
        self._exporter.add_telemetry_processor(_processor(role_name, _finish_metric))
        self._producer = _IntervalProducer(self.aggregator)  # held: the exporter thread keeps a weak ref
        self._exporter.exporter_thread = transport.get_exporter_thread(
            [self._producer], self._exporter, interval=export_interval)
        atexit.register(self.close)

    def flush(self, timeout: float | None = None) -> None:
        """Export the interval's metrics now, and the log records still queued; records the log
        exporter's worker already holds leave within the log export interval (runtime's
        LOG_EXPORT_SECONDS: opencensus' public flush only flushes its queue)."""
        if self._closed:
            return
        self._exporter.export_metrics(self._producer.get_metrics())  # first: it may log
        self._handler.flush(timeout=5.0 if timeout is None else timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        atexit.unregister(self._exporter.shutdown)
        self._exporter.shutdown()             # one last export, then stops the thread and storage
        self._exporter.exporter_thread.join(5.0)
        logging.getLogger(LOGGER_NAME).removeHandler(self._handler)
        self._handler.close()                 # drains the queue (worker exits after the last batch)
