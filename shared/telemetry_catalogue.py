"""What the service sends to Application Insights, as read-only data: the tables, the custom metrics
with their dimensions, the dimensions of log records.

The names come from `shared.telemetry`'s own catalogue (`METRICS`, `LOG_DIMENSIONS`), never copied;
this module adds only what that catalogue leaves implicit: which table each kind of record lands in.
Queries written elsewhere (the operations workbook in infra/workbooks/, the alert rules) are checked
against it (tests/test_infra_workbook.py), so they cannot name a metric, dimension or table the code
does not emit.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from shared.telemetry import LOG_DIMENSIONS, METRICS

# Where the exporter's records land (opencensus-ext-azure): metric data points in `customMetrics`,
# log records in `traces`, log records with exception info in `exceptions`.
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
    """The catalogue of what the code emits, read from `shared.telemetry`."""
    metrics = MappingProxyType({name: tuple(spec.dims) for name, spec in METRICS.items()})
    tables = {METRICS_TABLE: frozenset(d for dims in metrics.values() for d in dims)}
    tables.update({t: frozenset(LOG_DIMENSIONS) for t in LOG_TABLES})
    return Catalogue(metrics, MappingProxyType(tables))
