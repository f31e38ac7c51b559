"""Application Insights telemetry: structured logs, custom metrics, invocation correlation.

The only module that imports opencensus (retired upstream, see DESIGN.md section 4): a move to
azure-monitor-opentelemetry replaces this file and nothing else.

    tel = telemetry.configure(settings)            # once per process (function_app import time)
    with telemetry.operation(context.trace_context.trace_parent, context.function_name):
        tel.log_event(logging.WARNING, "destination failed", tenantId=t, destination="redis")
        tel.on_batch(builder.build())               # one aggregated record per pipeline batch
    tel.close()                                     # flush (also registered with atexit)

Without a connection string `configure` returns the no-op `Telemetry`: no exporter threads, each
hook is an empty method call. Logs still go to the `grc` logger (and from there to the Functions
host), just not to the Azure handler.

Metrics are aggregated in process and exported as *deltas* once per export interval (default 15 s):
counters send the sum of the interval, summaries (latency, delay) send an App Insights aggregate
(value = sum, count, min, max, so portal "Avg" is a true mean), gauges send the last value. The
opencensus stats/views machinery is not used: its aggregations are cumulative and it deep-copies
every view's data on every record, which costs O(series) per call on the hot path.

Privacy: only whitelisted dimension names reach an envelope, values must look like identifiers
(anything else, or anything resembling a key/connection string, becomes "[redacted]"), and
messages are scrubbed of `Key=...`, `Bearer ...`, URL credentials and long base64 runs.
"""
from __future__ import annotations

import atexit
import contextvars
import logging
import os
import random
import re
import secrets
import threading
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping

if TYPE_CHECKING:  # settings import stays cheap for callers that only want the types
    from shared.core.settings import Settings

__all__ = [
    "BatchStats",
    "BatchStatsBuilder",
    "LOG_DIMENSIONS",
    "METRICS",
    "MetricSpec",
    "Operation",
    "Summary",
    "SystemStats",
    "Telemetry",
    "configure",
    "current",
    "current_operation",
    "from_pipeline_stats",
    "invocation",
    "operation",
    "parse_traceparent",
    "redact",
]

LOGGER_NAME = "grc"
EVENTS_LOGGER = "grc.events"
REDACTED = "[redacted]"

# ---------------------------------------------------------------------------------------------
# Invocation correlation (W3C trace context, as given by context.trace_context.trace_parent)


@dataclass(frozen=True, slots=True)
class Operation:
    """The Functions invocation a log record or metric belongs to.

    `trace_id` becomes `operation_Id`, `parent_id` (the invocation's span id) `operation_ParentId`,
    `name` `operation_Name` -- the same values the host puts on the invocation's request telemetry.
    """

    trace_id: str
    parent_id: str
    name: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-01"


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_current_op: contextvars.ContextVar[Operation | None] = contextvars.ContextVar("grc_operation", default=None)


def parse_traceparent(traceparent: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a W3C traceparent, or None when absent or malformed."""
    if not traceparent:
        return None
    m = _TRACEPARENT.fullmatch(traceparent.strip().lower())
    if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1), m.group(2)


@contextmanager
def operation(traceparent: str | None, name: str) -> Iterator[Operation]:
    """Bind every log record and correlated metric in this context to one invocation.

    Without a valid traceparent (local runs, timers on old hosts) a fresh trace id is minted so the
    records of one invocation still group together.
    """
    ids = parse_traceparent(traceparent)
    if ids is None:
        ids = (secrets.token_hex(16), secrets.token_hex(8))
    op = Operation(ids[0], ids[1], name)
    token = _current_op.set(op)
    try:
        yield op
    finally:
        _current_op.reset(token)


def current_operation() -> Operation | None:
    return _current_op.get()


def invocation(context: Any, default_name: str = "invocation") -> AbstractContextManager[Operation]:
    """`operation()` for a Functions invocation context (duck-typed: `trace_context.trace_parent`,
    `function_name`), for triggers other than HTTP (timers, Cosmos DB, queues):

        with telemetry.invocation(context):
            await changefeed.on_change_batch(...)
    """
    trace = getattr(getattr(context, "trace_context", None), "trace_parent", None)
    return operation(trace, getattr(context, "function_name", None) or default_name)


# ---------------------------------------------------------------------------------------------
# Metric catalogue: the alert rules in infra/ fire on these exact names and dimensions.

MetricKind = Literal["counter", "summary", "gauge"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    kind: MetricKind
    dims: tuple[str, ...]
    # Carry the invocation's operation id. Only for rare, failure-type series: correlating the
    # high-volume ones would split each interval's aggregate into one envelope per invocation.
    correlate: bool = False


_EV = ("tenantId", "eventType", "source")
_DEST = ("tenantId", "destination")

METRICS: Mapping[str, MetricSpec] = MappingProxyType({
    "grc.events.accepted": MetricSpec("counter", _EV),
    "grc.events.filtered": MetricSpec("counter", _EV),
    "grc.events.rejected": MetricSpec("counter", _EV, correlate=True),
    "grc.events.failed": MetricSpec("counter", _EV, correlate=True),
    "grc.deliveries.succeeded": MetricSpec("counter", _DEST),
    "grc.deliveries.failed": MetricSpec("counter", _DEST, correlate=True),
    "grc.latency.end_to_end_ms": MetricSpec("summary", ("tenantId",)),
    "grc.changefeed.delay_ms": MetricSpec("summary", ("tenantId", "container")),
    "grc.retries.scheduled": MetricSpec("counter", _DEST, correlate=True),
    "grc.deadletters.recorded": MetricSpec("counter", _DEST, correlate=True),
    "grc.instance.memory_percent": MetricSpec("gauge", ()),
    "grc.destination.healthy": MetricSpec("gauge", ("destination",)),
    "grc.kafka.pending_messages": MetricSpec("gauge", ()),
    "grc.kafka.pending_bytes": MetricSpec("gauge", ()),
    "grc.redis.memory_percent": MetricSpec("gauge", ()),
    "grc.cosmos.request_charge": MetricSpec("counter", ()),
})

# Custom dimensions a log record may carry; anything else is dropped before export.
LOG_DIMENSIONS: frozenset[str] = frozenset({
    "tenantId", "eventType", "source", "destination", "correlationId", "operation",
    "eventId", "container", "errorType", "attempt", "count", "durationMs", "statusCode",
})
# Properties opencensus itself adds to every log envelope.
_HANDLER_PROPERTIES = frozenset({"process", "module", "fileName", "lineNumber", "level"})


# ---------------------------------------------------------------------------------------------
# Hook records


@dataclass(frozen=True, slots=True)
class Summary:
    """count/sum/min/max of a set of observations: what an App Insights aggregate carries."""

    count: int
    total: float
    min: float
    max: float

    @classmethod
    def of(cls, *values: float) -> "Summary":
        if not values:
            raise ValueError("Summary.of needs at least one value")
        return cls(len(values), float(sum(values)), float(min(values)), float(max(values)))

    def merge(self, other: "Summary") -> "Summary":
        return Summary(self.count + other.count, self.total + other.total,
                       min(self.min, other.min), max(self.max, other.max))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


EventKey = tuple[str, str, str]     # (tenantId, eventType, source)
DeliveryKey = tuple[str, str]       # (tenantId, destination)
_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def _empty() -> Any:
    return field(default_factory=lambda: _EMPTY)  # one shared read-only empty mapping


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One aggregated record per pipeline batch (build it with `BatchStatsBuilder`)."""

    accepted: Mapping[EventKey, int] = _empty()
    filtered: Mapping[EventKey, int] = _empty()
    rejected: Mapping[EventKey, int] = _empty()
    failed: Mapping[EventKey, int] = _empty()
    delivered: Mapping[DeliveryKey, int] = _empty()
    delivery_failed: Mapping[DeliveryKey, int] = _empty()
    retries_scheduled: Mapping[DeliveryKey, int] = _empty()
    deadletters: Mapping[DeliveryKey, int] = _empty()
    latency_ms: Mapping[str, Summary] = _empty()                      # tenantId -> end-to-end latency
    changefeed_delay_ms: Mapping[tuple[str, str], Summary] = _empty()  # (tenantId, container)
    request_charge: float = 0.0                                     # Cosmos RU spent by this batch


class BatchStatsBuilder:
    """Cheap per-event counting (dict increments) for the pipeline; `build()` once per batch."""

    __slots__ = ("_c", "_lat", "_delay", "_ru", "_lat_summaries", "_delay_summaries")

    def __init__(self) -> None:
        self._c: dict[str, dict[Any, int]] = {}
        self._lat: dict[str, list[float]] = {}
        self._delay: dict[tuple[str, str], list[float]] = {}
        self._ru = 0.0
        self._lat_summaries: dict[str, Summary] = {}      # already aggregated elsewhere
        self._delay_summaries: dict[tuple[str, str], Summary] = {}

    def _inc(self, field_name: str, key: Any, n: int) -> "BatchStatsBuilder":
        d = self._c.setdefault(field_name, {})
        d[key] = d.get(key, 0) + n
        return self

    def accepted(self, tenant_id: str, event_type: Any, source: Any, n: int = 1) -> "BatchStatsBuilder":
        return self._inc("accepted", (tenant_id, event_type, source), n)

    def filtered(self, tenant_id: str, event_type: Any, source: Any, n: int = 1) -> "BatchStatsBuilder":
        return self._inc("filtered", (tenant_id, event_type, source), n)

    def rejected(self, tenant_id: str, event_type: Any, source: Any, n: int = 1) -> "BatchStatsBuilder":
        return self._inc("rejected", (tenant_id, event_type, source), n)

    def failed(self, tenant_id: str, event_type: Any, source: Any, n: int = 1) -> "BatchStatsBuilder":
        return self._inc("failed", (tenant_id, event_type, source), n)

    def delivered(self, tenant_id: str, destination: str, n: int = 1) -> "BatchStatsBuilder":
        return self._inc("delivered", (tenant_id, destination), n)

    def delivery_failed(self, tenant_id: str, destination: str, n: int = 1) -> "BatchStatsBuilder":
        return self._inc("delivery_failed", (tenant_id, destination), n)

    def retry_scheduled(self, tenant_id: str, destination: str, n: int = 1) -> "BatchStatsBuilder":
        return self._inc("retries_scheduled", (tenant_id, destination), n)

    def deadletter(self, tenant_id: str, destination: str, n: int = 1) -> "BatchStatsBuilder":
        return self._inc("deadletters", (tenant_id, destination), n)

    def latency(self, tenant_id: str, ms: float) -> "BatchStatsBuilder":
        self._lat.setdefault(tenant_id, []).append(ms)
        return self

    def changefeed_delay(self, tenant_id: str, container: str, ms: float) -> "BatchStatsBuilder":
        self._delay.setdefault((tenant_id, container), []).append(ms)
        return self

    def latency_summary(self, tenant_id: str, summary: Summary) -> "BatchStatsBuilder":
        """Latencies already aggregated elsewhere (e.g. a histogram's count/sum)."""
        prev = self._lat_summaries.get(tenant_id)
        self._lat_summaries[tenant_id] = prev.merge(summary) if prev else summary
        return self

    def changefeed_delay_summary(self, tenant_id: str, container: str, summary: Summary) -> "BatchStatsBuilder":
        key = (tenant_id, container)
        prev = self._delay_summaries.get(key)
        self._delay_summaries[key] = prev.merge(summary) if prev else summary
        return self

    def request_charge(self, ru: float) -> "BatchStatsBuilder":
        self._ru += ru
        return self

    def build(self) -> BatchStats:
        counts = {k: MappingProxyType(dict(v)) for k, v in self._c.items()}
        return BatchStats(
            **counts,
            latency_ms=MappingProxyType(_summaries(self._lat, self._lat_summaries)),
            changefeed_delay_ms=MappingProxyType(_summaries(self._delay, self._delay_summaries)),
            request_charge=self._ru,
        )


def _summaries(values: Mapping[Any, list[float]], pre: Mapping[Any, Summary]) -> dict[Any, Summary]:
    out = {k: Summary.of(*v) for k, v in values.items()}
    for k, s in pre.items():
        out[k] = out[k].merge(s) if k in out else s
    return out


@dataclass(frozen=True, slots=True)
class SystemStats:
    """Service-wide gauges, reported by the performance timer / health probe. None = not measured."""

    memory_percent: float | None = None
    kafka_pending_messages: int | None = None
    kafka_pending_bytes: int | None = None
    redis_memory_percent: float | None = None
    destinations_healthy: Mapping[str, bool] = field(default_factory=dict)


_BATCH_COUNTERS: tuple[tuple[str, str], ...] = (
    ("accepted", "grc.events.accepted"),
    ("filtered", "grc.events.filtered"),
    ("rejected", "grc.events.rejected"),
    ("failed", "grc.events.failed"),
    ("delivered", "grc.deliveries.succeeded"),
    ("delivery_failed", "grc.deliveries.failed"),
    ("retries_scheduled", "grc.retries.scheduled"),
    ("deadletters", "grc.deadletters.recorded"),
)


# ---------------------------------------------------------------------------------------------
# Redaction


_SAFE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:@/{}\-]{0,127}")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{40,}={0,2}")
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|InstrumentationKey|"
                r"password|passwd|pwd|secret|token|sig|apikey|api_key|key)(\s*[=:]\s*)([^;&\s,\"']+)"),
     r"\1\2" + REDACTED),
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/\-]+=*"), "Bearer " + REDACTED),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]*:[^/\s@]*@"), r"\1" + REDACTED + "@"),
    (_LONG_TOKEN, REDACTED),
)


def redact(text: str) -> str:
    """Scrub anything that looks like a credential from free text (log messages, exceptions)."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _label(value: Any) -> str:
    """A dimension value fit for an envelope: an identifier-like string or "[redacted]"."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool | int | float):
        return str(value)
    if not isinstance(value, str) or not _SAFE_VALUE.fullmatch(value) or redact(value) != value:
        return REDACTED
    return value


def _clean_dimensions(dims: Mapping[str, Any]) -> dict[str, str]:
    return {k: _label(v) for k, v in dims.items() if k in LOG_DIMENSIONS and v is not None}


# ---------------------------------------------------------------------------------------------
# Adapter for the pipeline's own per-batch record (shared.observability.tenant_metrics.BatchStats, written to Redis)

ALL = "all"  # dimension value when the pipeline record does not say (e.g. a rejected event's type)


def from_pipeline_stats(stats: Any, *, container: str = ALL) -> BatchStats:
    """Translate `shared.observability.tenant_metrics.BatchStats` (per tenant: Counter of `acc`, `flt`, `rej`, `fail`,
    `t:<TYPE>`, `s:<SOURCE>`, `d:<dest>:ok|fail|park`, `retry`, `dlq`, log-scale latency/delay
    histograms) into the telemetry record, so the pipeline keeps one per-batch record for both sinks.

    eventType/source of a counter: exact from optional joint keys `<counter>:<TYPE>|<SOURCE>`
    (e.g. `acc:RISK_CREATED|COSMOS_DB`) when the pipeline writes them; for `acc` without them, exact
    when the tenant's batch has one source (or one type), else source "all"; otherwise "all".
    Latency/delay: count and sum exact, min/max the bounds of the outermost histogram buckets.
    """
    from shared.observability.tenant_metrics import (  # lazy: only configured telemetry pays
        HIST_BASE_MS,
        hist_upper,
    )

    def lower(idx: int) -> float:
        return HIST_BASE_MS if idx <= 0 else hist_upper(idx - 1)

    b = BatchStatsBuilder()
    adders = {"acc": b.accepted, "flt": b.filtered, "rej": b.rejected, "fail": b.failed}
    for tenant, ts in stats.tenants.items():
        c: Mapping[str, int] = ts.counters
        types: dict[str, int] = {}
        sources: dict[str, int] = {}
        joint: dict[str, dict[str, int]] = {}
        for k, n in c.items():  # one pass over the tenant's counters
            if not n:
                continue
            head, sep, rest = k.partition(":")
            if not sep:
                continue
            if head == "t":
                types[rest] = n
            elif head == "s":
                sources[rest] = n
            elif head == "d":
                dest, _, outcome = rest.partition(":")
                if outcome == "ok":
                    b.delivered(tenant, dest, n)
                else:  # a parked delivery failed its first attempt and was scheduled for retry
                    b.delivery_failed(tenant, dest, n)
                    if outcome == "park":
                        b.retry_scheduled(tenant, dest, n)
            elif head in adders:
                joint.setdefault(head, {})[rest] = n
        for kind, add in adders.items():
            if kind in joint:
                for pair, n in joint[kind].items():
                    et, _, src = pair.partition("|")
                    add(tenant, et or ALL, src or ALL, n)
            elif c.get(kind):
                if kind == "acc" and len(sources) == 1:
                    (src,) = sources
                    for et, n in types.items():
                        add(tenant, et, src, n)
                elif kind == "acc" and len(types) == 1:
                    (et,) = types
                    for src, n in sources.items():
                        add(tenant, et, src, n)
                elif kind == "acc" and types:
                    for et, n in types.items():
                        add(tenant, et, ALL, n)
                else:
                    add(tenant, ALL, ALL, c[kind])
        if c.get("dlq"):
            b.deadletter(tenant, ALL, c["dlq"])
        for hist, total, add_summary in ((ts.latency, ts.latency_sum_ms, "latency"),
                                         (ts.delay, ts.delay_sum_ms, "delay")):
            n = sum(hist.values())
            if n:
                summary = Summary(n, float(total), lower(min(hist)), hist_upper(max(hist)))
                if add_summary == "latency":
                    b.latency_summary(tenant, summary)
                else:
                    b.changefeed_delay_summary(tenant, container, summary)
    return b.build()


# ---------------------------------------------------------------------------------------------
# The no-op implementation (also the interface)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def _level(name: str) -> int:
    return _LEVELS.get(name.strip().lower(), logging.INFO)


class Telemetry:
    """No-op telemetry: the interface, and what runs without a connection string."""

    enabled: bool = False

    def __init__(self) -> None:
        self._events = logging.getLogger(EVENTS_LOGGER)

    def log_event(self, level: int, message: str, **dims: Any) -> None:
        """A structured log line. Only `LOG_DIMENSIONS` names are kept; values are sanitised."""
        if self._events.isEnabledFor(level):
            self._events.log(level, message, extra={"custom_dimensions": _clean_dimensions(dims)},
                             stacklevel=2)  # file/line of the caller, not of this wrapper

    def on_batch(self, stats: BatchStats) -> None:
        """Counters and latencies of one pipeline batch."""

    def on_system(self, stats: SystemStats) -> None:
        """Service-wide gauges (memory, Kafka producer queue, Redis memory, destination health)."""

    def pipeline_hook(self, stats: Any, results: Any = None) -> None:
        """A `shared.delivery.pipeline.BatchHook`: `on_batch(from_pipeline_stats(stats))`."""

    def record(self, name: str, value: float, **dims: Any) -> None:
        """One observation of a catalogued metric (prefer the two hooks above)."""

    def operation(self, traceparent: str | None, name: str) -> AbstractContextManager[Operation]:
        return operation(traceparent, name)

    def flush(self, timeout: float | None = None) -> None:
        """Export what is queued now (tests, end of a long invocation)."""

    def close(self) -> None:
        """Flush and stop exporter threads; idempotent."""


def aad_credential(authentication_string: str) -> Any:
    """The managed-identity credential an `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` of the Functions
    host's form asks for (`Authorization=AAD[;ClientId=<id>]`), else None (instrumentation key)."""
    parts = dict(p.split("=", 1) for p in authentication_string.split(";") if "=" in p)
    fields = {k.strip().lower(): v.strip() for k, v in parts.items()}
    if fields.get("authorization", "").lower() != "aad":
        return None
    from azure.identity import ManagedIdentityCredential  # noqa: PLC0415 - only in Azure

    return ManagedIdentityCredential(client_id=fields.get("clientid") or None)


_NOOP = Telemetry()
_current: Telemetry = _NOOP
_current_lock = threading.Lock()


def current() -> Telemetry:
    """The telemetry set up by the last `configure` (the no-op one before that)."""
    return _current


def configure(
    settings: "Settings",
    *,
    export_interval: float = 15.0,
    enable_local_storage: bool = True,
    storage_path: str | None = None,
    metrics_per_operation: bool | None = None,
    max_series: int = 10_000,
    role_name: str | None = None,
    credential: Any = None,
) -> Telemetry:
    """Set up telemetry from settings and make it `current()`; closes the previous one.

    `metrics_per_operation`: None = only the failure-type series carry the operation id (see
    `MetricSpec.correlate`), True = every series (costly: one envelope per series per invocation),
    False = none. `max_series` bounds the series held per export interval (extra ones are dropped).
    `credential` (a TokenCredential) overrides the one APPLICATIONINSIGHTS_AUTHENTICATION_STRING asks for.
    """
    global _current
    logging.getLogger(LOGGER_NAME).setLevel(_level(settings.log_level))
    conn = settings.appinsights_connection_string.strip()
    with _current_lock:
        previous, _current = _current, _NOOP
        previous.close()
        if conn:
            if credential is None:
                credential = aad_credential(settings.appinsights_authentication_string)
            _current = _AppInsightsTelemetry(
                conn, credential=credential, level=_level(settings.log_level),
                info_sampling=settings.telemetry_info_sampling,
                export_interval=export_interval,
                enable_local_storage=enable_local_storage, storage_path=storage_path,
                metrics_per_operation=metrics_per_operation, max_series=max_series,
                role_name=role_name or os.environ.get("WEBSITE_SITE_NAME") or "grc-event-streaming",
            )
        return _current


# ---------------------------------------------------------------------------------------------
# The Application Insights implementation (opencensus-ext-azure)

_SeriesKey = tuple[str, tuple[str, ...], Operation | None]


class _Aggregator:
    """Per-interval, thread-safe aggregation: key -> [count, sum, min, max, last]."""

    def __init__(self, max_series: int) -> None:
        self._lock = threading.Lock()
        self._series: dict[_SeriesKey, list[float]] = {}
        self._max = max_series
        self.dropped = 0

    def add_many(self, items: list[tuple[_SeriesKey, float, int, float, float]]) -> None:
        """items: (key, sum, count, min, max)."""
        with self._lock:
            series = self._series
            for key, total, count, lo, hi in items:
                s = series.get(key)
                if s is None:
                    if len(series) >= self._max:
                        self.dropped += 1
                        continue
                    # last value (gauges): a single observation's value, else the batch max
                    series[key] = [count, total, lo, hi, total if count == 1 else hi]
                else:
                    s[0] += count
                    s[1] += total
                    s[2] = min(s[2], lo)
                    s[3] = max(s[3], hi)
                    s[4] = total if count == 1 else hi

    def drain(self) -> tuple[dict[_SeriesKey, list[float]], int]:
        """(series of the interval, number of observations dropped by the series cap)."""
        with self._lock:
            out, self._series = self._series, {}
            dropped, self.dropped = self.dropped, 0
        return out, dropped


class _AppInsightsTelemetry(Telemetry):
    enabled = True

    def __init__(self, connection_string: str, *, credential: Any, level: int, info_sampling: float,
                 export_interval: float,
                 enable_local_storage: bool, storage_path: str | None,
                 metrics_per_operation: bool | None, max_series: int, role_name: str) -> None:
        super().__init__()
        from opencensus.ext.azure.log_exporter import AzureLogHandler
        from opencensus.ext.azure.metrics_exporter import MetricsExporter
        from opencensus.metrics import transport

        # opencensus also parses the env var and raises on a blank one (local.settings "" value)
        if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "x").strip():
            del os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"]
        self._role = role_name
        self._per_op = metrics_per_operation
        self._agg = _Aggregator(max_series)
        self._closed = False
        options: dict[str, Any] = dict(
            connection_string=connection_string, export_interval=export_interval,
            enable_local_storage=enable_local_storage, enable_standard_metrics=False,
        )
        if storage_path:
            options["storage_path"] = storage_path
        if credential is not None:
            options["credential"] = credential  # Entra ID token on every POST to /v2.1/track

        role = role_name

        class _LogHandler(AzureLogHandler):  # type: ignore[misc]
            def log_record_to_envelope(self, record: logging.LogRecord) -> Any:
                env = super().log_record_to_envelope(record)
                _finish_envelope(env, getattr(record, "grc_operation", None), role)
                base = env.data.baseData
                if getattr(base, "message", None):
                    base.message = redact(base.message)
                for exc in getattr(base, "exceptions", None) or []:
                    exc["message"] = redact(str(exc.get("message", "")))
                props = base.properties or {}
                base.properties = {k: v for k, v in props.items()
                                   if k in _HANDLER_PROPERTIES or k in LOG_DIMENSIONS}
                return env

        class _Exporter(MetricsExporter):  # type: ignore[misc]
            def metric_to_envelopes(self, metric: Any) -> list[Any]:
                return [_metric_envelope(self, metric.descriptor.name, ts, role) for ts in metric.time_series]

        self._handler = _LogHandler(**options)
        self._handler.setLevel(level)
        if info_sampling < 1.0:
            self._handler.addFilter(_InfoSampling(info_sampling))
        self._handler.addFilter(_ContextFilter())
        logging.getLogger(LOGGER_NAME).addHandler(self._handler)

        self._exporter = _Exporter(**options)
        self._producer = _DeltaProducer(self._agg)
        self._exporter.exporter_thread = transport.get_exporter_thread(
            [self._producer], self._exporter, interval=export_interval)
        atexit.register(self.close)

    # -- metrics hooks ------------------------------------------------------------------------

    def _op_for(self, spec: MetricSpec) -> Operation | None:
        per_op = spec.correlate if self._per_op is None else self._per_op
        return _current_op.get() if per_op else None

    def on_batch(self, stats: BatchStats) -> None:
        items: list[tuple[_SeriesKey, float, int, float, float]] = []
        for attr, name in _BATCH_COUNTERS:
            counts: Mapping[Any, int] = getattr(stats, attr)
            if counts:
                op = self._op_for(METRICS[name])
                for key, n in counts.items():
                    if n:
                        items.append(((name, key, op), float(n), 1, float(n), float(n)))
        for name, summaries in (("grc.latency.end_to_end_ms", stats.latency_ms),
                                ("grc.changefeed.delay_ms", stats.changefeed_delay_ms)):
            if summaries:
                op = self._op_for(METRICS[name])
                for key, s in summaries.items():
                    key_t = key if isinstance(key, tuple) else (key,)
                    items.append(((name, key_t, op), s.total, s.count, s.min, s.max))
        if stats.request_charge:
            ru = stats.request_charge
            items.append((("grc.cosmos.request_charge", (), None), ru, 1, ru, ru))
        if items:
            self._agg.add_many(items)

    def pipeline_hook(self, stats: Any, results: Any = None) -> None:
        self.on_batch(from_pipeline_stats(stats))

    def on_system(self, stats: SystemStats) -> None:
        items: list[tuple[_SeriesKey, float, int, float, float]] = []
        for name, value in (("grc.instance.memory_percent", stats.memory_percent),
                            ("grc.kafka.pending_messages", stats.kafka_pending_messages),
                            ("grc.kafka.pending_bytes", stats.kafka_pending_bytes),
                            ("grc.redis.memory_percent", stats.redis_memory_percent)):
            if value is not None:
                v = float(value)
                items.append(((name, (), None), v, 1, v, v))
        for dest, healthy in stats.destinations_healthy.items():
            v = 1.0 if healthy else 0.0
            items.append((("grc.destination.healthy", (dest,), None), v, 1, v, v))
        if items:
            self._agg.add_many(items)

    def record(self, name: str, value: float, **dims: Any) -> None:
        spec = METRICS.get(name)
        if spec is None:
            raise ValueError(f"unknown metric {name!r}")
        if set(dims) != set(spec.dims):
            raise ValueError(f"{name} takes dimensions {spec.dims}, got {tuple(dims)}")
        v = float(value)
        key = tuple(dims[d] for d in spec.dims)
        self._agg.add_many([((name, key, self._op_for(spec)), v, 1, v, v)])

    # -- lifecycle ----------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._exporter.export_metrics(self._producer.get_metrics())  # first: it may log
        # Not AzureLogHandler.flush: it returns at once when the queue is empty, even while the
        # worker still holds records it dequeued and waits out the export interval with them.
        from opencensus.common.schedule import QueueEvent

        wait = 5.0 if timeout is None else timeout
        done = QueueEvent("flush")
        self._handler._queue.put(done, block=True, timeout=wait)
        done.wait(wait)

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


class _InfoSampling(logging.Filter):
    """Keep a share of debug/info records; warnings and errors always pass."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self._rate = rate

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or random.random() < self._rate


class _ContextFilter(logging.Filter):
    """Runs in the logging thread: attach the invocation and whitelist/sanitise dimensions."""

    def filter(self, record: logging.LogRecord) -> bool:
        op = _current_op.get()
        dims = getattr(record, "custom_dimensions", None)
        clean = _clean_dimensions(dims) if isinstance(dims, Mapping) else {}
        if op is not None:
            record.traceId = op.trace_id
            record.spanId = op.parent_id
            record.grc_operation = op
            clean.setdefault("operation", _label(op.name))
        record.custom_dimensions = clean
        return True


def _finish_envelope(env: Any, op: Operation | None, role: str) -> None:
    tags = env.tags
    tags["ai.cloud.role"] = role
    if op is None:
        tags.pop("ai.operation.id", None)
        tags.pop("ai.operation.parentId", None)
        return
    tags["ai.operation.id"] = op.trace_id
    tags["ai.operation.parentId"] = op.parent_id  # W3C form, as the host writes it
    tags["ai.operation.name"] = op.name


def _agg_value(value: float, count: int, lo: float, hi: float, kind: MetricKind) -> Any:
    """An opencensus ValueDouble that also carries the App Insights aggregate fields."""
    from opencensus.metrics.export.value import ValueDouble

    v = ValueDouble(value)
    v.count, v.min, v.max, v.kind = count, lo, hi, kind
    return v


class _DeltaProducer:
    """opencensus MetricProducer: drains the aggregator into gauge Metrics once per interval."""

    def __init__(self, agg: _Aggregator) -> None:
        self._agg = agg

    def get_metrics(self) -> list[Any]:
        from opencensus.metrics.export.metric import Metric
        from opencensus.metrics.export.metric_descriptor import MetricDescriptor, MetricDescriptorType
        from opencensus.metrics.export.point import Point
        from opencensus.metrics.export.time_series import TimeSeries
        from opencensus.metrics.label_key import LabelKey
        from opencensus.metrics.label_value import LabelValue

        by_name: dict[str, list[Any]] = {}
        now = datetime.now(timezone.utc)  # aware: the envelope time gets an explicit UTC offset
        drained, dropped = self._agg.drain()
        if dropped:
            logging.getLogger("grc.telemetry").warning(
                "metric series cap reached: %d observations dropped this interval", dropped)
        for (name, key, op), (count, total, lo, hi, last) in drained.items():
            kind = METRICS[name].kind
            if kind == "gauge":
                value = _agg_value(last, 1, last, last, kind)
            elif kind == "counter":
                value = _agg_value(total, 1, total, total, kind)
            else:
                value = _agg_value(total, int(count), lo, hi, kind)
            labels = [LabelValue(_label(v)) for v in key]
            ts = TimeSeries(labels, [Point(value, now)], now)
            ts.grc_operation = op  # read back by _metric_envelope
            by_name.setdefault(name, []).append(ts)
        metrics = []
        for name, series in by_name.items():
            desc = MetricDescriptor(name, name, "1", MetricDescriptorType.GAUGE_DOUBLE,
                                    [LabelKey(d, d) for d in METRICS[name].dims])
            metrics.append(Metric(desc, series))
        return metrics


def _metric_envelope(exporter: Any, name: str, ts: Any, role: str) -> Any:
    from opencensus.ext.azure.common.protocol import DataPoint

    point = ts.points[0]
    v = point.value
    dp = DataPoint(ns=name, name=name, value=v.value)
    if v.kind == "summary":
        dp.kind, dp.count, dp.min, dp.max = "Aggregation", v.count, v.min, v.max
    dims = METRICS[name].dims
    props = {d: lv.value for d, lv in zip(dims, ts.label_values)}
    env = exporter._create_envelope(dp, point.timestamp, props)
    _finish_envelope(env, getattr(ts, "grc_operation", None), role)
    return env
