"""The telemetry catalogue: every custom metric (name, kind, dimensions) and every log field.

Data only (no exporter, no I/O): the backends export exactly these names, and the alert rules in
infra/ and any dashboard or workbook query them, so anything that reads telemetry can import this
module and check itself against it.

- `METRICS`: name -> `MetricSpec`. A counter sends the sum of an export interval (a delta), a
  summary an aggregate (sum as the value, with count, min and max, so a portal "Avg" is a true
  mean), a gauge the last value of the interval.
- `LOG_DIMENSIONS`: the custom dimensions a log record may carry; anything else is dropped before
  export.
- `LOG_STANDARD_FIELDS`: the fields every exported log record carries besides them.
- `emitted()`: all of it as the tables a query reads (`customMetrics`, `traces`, `exceptions`) and
  the customDimensions each can carry; the operations workbook in infra/workbooks/ and the alert
  rules are checked against it (tests/test_infra_workbook.py), so they cannot name a metric,
  dimension or table the code does not emit.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping

MetricKind = Literal["counter", "summary", "gauge"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: MetricKind
    dims: tuple[str, ...]
    description: str
    # Carry the invocation's operation id. Only for rare, failure-type series: correlating the
    # high-volume ones would split each interval's aggregate into one record per invocation.
    correlate: bool = False


_EV = ("tenantId", "eventType", "source")
_DEST = ("tenantId", "destination")

_SPECS = (
    MetricSpec("grc.events.accepted", "counter", _EV, "events accepted (every destination delivered or parked)"),
    MetricSpec("grc.events.filtered", "counter", _EV, "events filtered out by the tenant's stream config"),
    MetricSpec("grc.events.rejected", "counter", _EV, "events refused by validation", correlate=True),
    MetricSpec("grc.events.failed", "counter", _EV, "events neither delivered nor parked", correlate=True),
    MetricSpec("grc.deliveries.succeeded", "counter", _DEST, "deliveries that reached the destination"),
    MetricSpec("grc.deliveries.failed", "counter", _DEST, "deliveries that failed (parked or not)",
               correlate=True),
    MetricSpec("grc.latency.end_to_end_ms", "summary", ("tenantId",), "receipt to last delivery, ms"),
    MetricSpec("grc.changefeed.delay_ms", "summary", ("tenantId", "container"),
               "change-feed delay (now - document _ts), ms: the processing-delay alert's metric"),
    MetricSpec("grc.retries.scheduled", "counter", _DEST, "failed deliveries queued for retry", correlate=True),
    MetricSpec("grc.deadletters.recorded", "counter", _DEST, "dead letters written", correlate=True),
    MetricSpec("grc.instance.memory_percent", "gauge", (), "this instance's memory against its limit, %"),
    MetricSpec("grc.destination.healthy", "gauge", ("destination",), "1 when the destination's check passes"),
    MetricSpec("grc.kafka.pending_messages", "gauge", (), "messages awaiting a Kafka delivery report"),
    MetricSpec("grc.kafka.pending_bytes", "gauge", (), "bytes awaiting a Kafka delivery report"),
    MetricSpec("grc.redis.memory_percent", "gauge", (), "Redis memory against maxmemory, %"),
    MetricSpec("grc.cosmos.request_charge", "counter", (), "request units of the service's own Cosmos DB calls"),
    MetricSpec("grc.retryqueue.messages", "gauge", (), "messages in the retry queue (deliveries awaiting a retry)"),
    MetricSpec("grc.retryqueue.poison_messages", "gauge", (),
               "messages in the retry queue's poison queue (retries the drain gave up on)"),
)

METRICS: Mapping[str, MetricSpec] = MappingProxyType({s.name: s for s in _SPECS})

# Custom dimensions a log record may carry; anything else is dropped before export.
LOG_DIMENSIONS: frozenset[str] = frozenset({
    "tenantId", "eventType", "source", "destination", "correlationId", "operation",
    "eventId", "container", "errorType", "attempt", "count", "durationMs", "statusCode",
})

# What every exported log record carries besides its dimensions (telemetry/logrecords.py), on either
# backend: opencensus' AzureLogHandler names the first five, the OpenTelemetry exporter `logger_name`.
LOG_STANDARD_FIELDS: frozenset[str] = frozenset({"process", "module", "fileName", "lineNumber", "level",
                                                 "logger_name"})

# Where the pipeline's record does not say (e.g. a rejected event's type): the dimension value.
ALL = "all"


# Where the records land, with either backend (tests/test_telemetry_backends.py): metric data points in
# `customMetrics`, log records in `traces`, log records with exception info in `exceptions`.
METRICS_TABLE = "customMetrics"
LOG_TABLES = ("traces", "exceptions")


@dataclass(frozen=True)
class Catalogue:
    metrics: Mapping[str, tuple[str, ...]]      # metric name -> its customDimensions
    tables: Mapping[str, frozenset[str]]        # table -> every customDimensions key it can carry

    def dimensions(self, table: str, metric_names: frozenset[str] | None = None) -> frozenset[str]:
        """The customDimensions a query of `table` may read; for `customMetrics`, those of the named
        metrics only (all metrics' when none is named)."""
        if table == METRICS_TABLE and metric_names:
            return frozenset(d for name in metric_names for d in self.metrics.get(name, ()))
        return self.tables.get(table, frozenset())


def emitted() -> Catalogue:
    """What the code emits, by the table a query reads it from."""
    metrics = MappingProxyType({name: tuple(spec.dims) for name, spec in METRICS.items()})
    tables = {METRICS_TABLE: frozenset(d for dims in metrics.values() for d in dims)}
    tables.update({t: frozenset(LOG_DIMENSIONS) for t in LOG_TABLES})
    return Catalogue(metrics, MappingProxyType(tables))
