"""What the telemetry hooks take: one aggregated record per pipeline batch, service-wide gauges.

The pipeline keeps one per-batch record of its own (`tenant_metrics.BatchStats`, written to Redis);
`from_pipeline_stats` translates it into a `BatchTelemetry` in the catalogue's terms, so both sinks
count from the same record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from shared.observability.telemetry.catalogue import ALL


@dataclass(frozen=True, slots=True)
class Summary:
    """count/sum/min/max of a set of observations: what a summary metric exports per interval."""

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
class BatchTelemetry:
    """One aggregated record per pipeline batch, in the catalogue's terms (build it with
    `BatchTelemetryBuilder`; `from_pipeline_stats` makes one from the pipeline's own counters)."""

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


class BatchTelemetryBuilder:
    """Cheap per-event counting (dict increments) for the pipeline; `build()` once per batch."""

    __slots__ = ("_c", "_lat", "_delay", "_ru", "_lat_summaries", "_delay_summaries")

    def __init__(self) -> None:
        self._c: dict[str, dict[Any, int]] = {}
        self._lat: dict[str, list[float]] = {}
        self._delay: dict[tuple[str, str], list[float]] = {}
        self._ru = 0.0
        self._lat_summaries: dict[str, Summary] = {}      # already aggregated elsewhere
        self._delay_summaries: dict[tuple[str, str], Summary] = {}

    def _inc(self, field_name: str, key: Any, n: int) -> "BatchTelemetryBuilder":
        d = self._c.setdefault(field_name, {})
        d[key] = d.get(key, 0) + n
        return self

    def accepted(self, tenant_id: str, event_type: Any, source: Any, n: int = 1) -> "BatchTelemetryBuilder":
        return self._inc("accepted", (tenant_id, event_type, source), n)

    def filtered(self, tenant_id: str, event_type: Any, source: Any, n: int = 1) -> "BatchTelemetryBuilder":
        return self._inc("filtered", (tenant_id, event_type, source), n)

    def rejected(self, tenant_id: str, event_type: Any, source: Any, n: int = 1) -> "BatchTelemetryBuilder":
        return self._inc("rejected", (tenant_id, event_type, source), n)

    def failed(self, tenant_id: str, event_type: Any, source: Any, n: int = 1) -> "BatchTelemetryBuilder":
        return self._inc("failed", (tenant_id, event_type, source), n)

    def delivered(self, tenant_id: str, destination: str, n: int = 1) -> "BatchTelemetryBuilder":
        return self._inc("delivered", (tenant_id, destination), n)

    def delivery_failed(self, tenant_id: str, destination: str, n: int = 1) -> "BatchTelemetryBuilder":
        return self._inc("delivery_failed", (tenant_id, destination), n)

    def retry_scheduled(self, tenant_id: str, destination: str, n: int = 1) -> "BatchTelemetryBuilder":
        return self._inc("retries_scheduled", (tenant_id, destination), n)

    def deadletter(self, tenant_id: str, destination: str, n: int = 1) -> "BatchTelemetryBuilder":
        return self._inc("deadletters", (tenant_id, destination), n)

    def latency(self, tenant_id: str, ms: float) -> "BatchTelemetryBuilder":
        self._lat.setdefault(tenant_id, []).append(ms)
        return self

    def changefeed_delay(self, tenant_id: str, container: str, ms: float) -> "BatchTelemetryBuilder":
        self._delay.setdefault((tenant_id, container), []).append(ms)
        return self

    def latency_summary(self, tenant_id: str, summary: Summary) -> "BatchTelemetryBuilder":
        """Latencies already aggregated elsewhere (e.g. a histogram's count/sum)."""
        prev = self._lat_summaries.get(tenant_id)
        self._lat_summaries[tenant_id] = prev.merge(summary) if prev else summary
        return self

    def changefeed_delay_summary(self, tenant_id: str, container: str, summary: Summary) -> "BatchTelemetryBuilder":
        key = (tenant_id, container)
        prev = self._delay_summaries.get(key)
        self._delay_summaries[key] = prev.merge(summary) if prev else summary
        return self

    def request_charge(self, ru: float) -> "BatchTelemetryBuilder":
        self._ru += ru
        return self

    def build(self) -> BatchTelemetry:
        counts = {k: MappingProxyType(dict(v)) for k, v in self._c.items()}
        return BatchTelemetry(
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
    retry_queue_messages: int | None = None          # the monitor pass's retry-queue check
    retry_queue_poison_messages: int | None = None
    destinations_healthy: Mapping[str, bool] = field(default_factory=dict)


def from_pipeline_stats(stats: Any, *, container: str = ALL) -> BatchTelemetry:
    """Translate `tenant_metrics.BatchStats` (per tenant: counters `acc`, `flt`, `rej`, `fail`, `t:<TYPE>`,
    `s:<SOURCE>`, `d:<dest>:ok|fail|park`, `retry`, `dlq` and `dlq:<dest>`; log-scale latency/delay
    histograms) into the telemetry record, so the pipeline keeps one per-batch record for both sinks.
    Dead letters carry their destination (`changefeed` for the change feed's own).

    eventType/source of a counter: exact from optional joint keys `<counter>:<TYPE>|<SOURCE>`
    (e.g. `acc:RISK_CREATED|COSMOS_DB`) when the pipeline writes them; for `acc` without them, exact
    when the tenant's batch has one source (or one type), else source "all"; otherwise "all".
    Latency/delay: count and sum exact, min/max the bounds of the outermost histogram buckets.
    """
    from shared.observability.tenant_metrics import HIST_BASE_MS, hist_upper  # noqa: PLC0415 - configured telemetry only

    def lower(idx: int) -> float:
        return HIST_BASE_MS if idx <= 0 else hist_upper(idx - 1)

    b = BatchTelemetryBuilder()
    adders = {"acc": b.accepted, "flt": b.filtered, "rej": b.rejected, "fail": b.failed}
    for tenant, ts in stats.tenants.items():
        c: Mapping[str, int] = ts.counters
        types: dict[str, int] = {}
        sources: dict[str, int] = {}
        joint: dict[str, dict[str, int]] = {}
        dead: dict[str, int] = {}  # dead letters per destination (`dlq:<dest>`)
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
            elif head == "dlq":
                dead[rest] = n
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
        # Dead letters counted without a destination (none today): "all".
        for dest, n in dead.items():
            b.deadletter(tenant, dest, n)
        if c.get("dlq", 0) > sum(dead.values()):
            b.deadletter(tenant, ALL, c["dlq"] - sum(dead.values()))
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
