"""Telemetry: structured logs, the catalogue's custom metrics, invocation correlation.

    tel = telemetry.configure(settings)            # once per process (function_app import time)
    with telemetry.invocation(context):            # or telemetry.operation(traceparent, name)
        tel.log_event(logging.WARNING, "destination failed", tenantId=t, destination="redis")
        tel.on_batch(builder.build())               # one aggregated record per pipeline batch
    tel.close()                                     # flush (also registered with atexit)

Split by job: `catalogue` (names, dimensions, log fields: data only), `context` (the invocation),
`redaction` (what may leave the process), `records` (what the hooks take), `base` (the interface
and the no-op), `aggregate` (per-interval deltas), `logrecords` (the log filters), two backends
chosen by TELEMETRY_BACKEND -- `appinsights` (opencensus, the only module that imports it) and
`azuremonitor` (the Azure Monitor OpenTelemetry distro, the only one that imports opentelemetry) --
and `runtime` (configure / current).
"""
from shared.observability.telemetry.base import Telemetry, aad_credential
from shared.observability.telemetry.catalogue import ALL, LOG_DIMENSIONS, METRICS, MetricSpec
from shared.observability.telemetry.context import (
    Operation,
    current_operation,
    invocation,
    operation,
    parse_traceparent,
)
from shared.observability.telemetry.records import (
    BatchTelemetry,
    BatchTelemetryBuilder,
    Summary,
    SystemStats,
    from_pipeline_stats,
)
from shared.observability.telemetry.redaction import redact
from shared.observability.telemetry.runtime import configure, current

__all__ = [
    "ALL",
    "BatchTelemetry",
    "BatchTelemetryBuilder",
    "LOG_DIMENSIONS",
    "METRICS",
    "MetricSpec",
    "Operation",
    "Summary",
    "SystemStats",
    "Telemetry",
    "aad_credential",
    "configure",
    "current",
    "current_operation",
    "from_pipeline_stats",
    "invocation",
    "operation",
    "parse_traceparent",
    "redact",
]
