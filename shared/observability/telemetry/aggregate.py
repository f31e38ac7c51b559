"""In-process aggregation of the catalogue's metrics, exported as deltas once per interval.

A backend that exports per interval subclasses `AggregatingTelemetry` and drains `self.aggregator`
when it exports. Counters add up to the interval's sum, summaries (latency, delay) to count, sum,
min and max, gauges keep the last value. Observations are merged per series under one lock (a dict
update per series, whatever the number of events), so the hot path does not grow with the series
held; `max_series` bounds what an interval holds (the rest is dropped and counted).

Why not the opencensus stats/views machinery: its aggregations are cumulative (App Insights wants
the interval's figures) and it copies every view's data on each record, O(series) per call.
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

from shared.observability.telemetry.base import Telemetry
from shared.observability.telemetry.catalogue import METRICS, MetricSpec
from shared.observability.telemetry.context import Operation, current_operation
from shared.observability.telemetry.records import BatchTelemetry, SystemStats, from_pipeline_stats

SeriesKey = tuple[str, tuple[str, ...], Operation | None]  # (metric, dimension values, invocation)
Observation = tuple[SeriesKey, float, int, float, float]  # (series, sum, count, min, max)

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


class Aggregator:
    """Per-interval, thread-safe aggregation: series -> [count, sum, min, max, last]."""

    def __init__(self, max_series: int) -> None:
        self._lock = threading.Lock()
        self._series: dict[SeriesKey, list[float]] = {}
        self._max = max_series
        self.dropped = 0

    def add_many(self, items: list[Observation]) -> None:
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

    def drain(self) -> tuple[dict[SeriesKey, list[float]], int]:
        """(series of the interval, number of observations dropped by the series cap)."""
        with self._lock:
            out, self._series = self._series, {}
            dropped, self.dropped = self.dropped, 0
        return out, dropped


class AggregatingTelemetry(Telemetry):
    """The metric hooks, aggregated per interval; a subclass exports what `aggregator.drain()` gives.

    `metrics_per_operation`: None = only the failure-type series carry the invocation
    (`MetricSpec.correlate`), True = every series (costly: one record per series per invocation),
    False = none.
    """

    enabled = True

    def __init__(self, *, max_series: int, metrics_per_operation: bool | None) -> None:
        super().__init__()
        self.aggregator = Aggregator(max_series)
        self._per_op = metrics_per_operation

    def _op_for(self, spec: MetricSpec) -> Operation | None:
        per_op = spec.correlate if self._per_op is None else self._per_op
        return current_operation() if per_op else None

    def on_batch(self, stats: BatchTelemetry) -> None:
        items: list[Observation] = []
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
            self.aggregator.add_many(items)

    def pipeline_hook(self, stats: Any, results: Any = None) -> None:
        self.on_batch(from_pipeline_stats(stats))

    def on_system(self, stats: SystemStats) -> None:
        items: list[Observation] = []
        for name, value in (("grc.instance.memory_percent", stats.memory_percent),
                            ("grc.kafka.pending_messages", stats.kafka_pending_messages),
                            ("grc.kafka.pending_bytes", stats.kafka_pending_bytes),
                            ("grc.redis.memory_percent", stats.redis_memory_percent),
                            ("grc.retryqueue.messages", stats.retry_queue_messages),
                            ("grc.retryqueue.poison_messages", stats.retry_queue_poison_messages)):
            if value is not None:
                v = float(value)
                items.append(((name, (), None), v, 1, v, v))
        for dest, healthy in stats.destinations_healthy.items():
            v = 1.0 if healthy else 0.0
            items.append((("grc.destination.healthy", (dest,), None), v, 1, v, v))
        if items:
            self.aggregator.add_many(items)

    def record(self, name: str, value: float, **dims: Any) -> None:
        spec = METRICS.get(name)
        if spec is None:
            raise ValueError(f"unknown metric {name!r}")
        if set(dims) != set(spec.dims):
            raise ValueError(f"{name} takes dimensions {spec.dims}, got {tuple(dims)}")
        v = float(value)
        key = tuple(dims[d] for d in spec.dims)
        self.aggregator.add_many([((name, key, self._op_for(spec)), v, 1, v, v)])
