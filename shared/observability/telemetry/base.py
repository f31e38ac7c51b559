"""The telemetry interface, and the no-op implementation that runs without a connection string.

Every backend subclasses `Telemetry` (see `aggregate.py` and `appinsights.py`). The no-op one starts
no thread and each hook is an empty call; logs still go to the `grc` logger (and from there to the
Functions host), just not to an exporter.
"""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

from shared.observability.telemetry.context import Operation, operation
from shared.observability.telemetry.records import BatchTelemetry, SystemStats
from shared.observability.telemetry.redaction import clean_dimensions

LOGGER_NAME = "grc"
EVENTS_LOGGER = "grc.events"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def log_level(name: str) -> int:
    """LOG_LEVEL's level; INFO for a name it does not know (`known_log_level` tells)."""
    return _LEVELS.get(name.strip().lower(), logging.INFO)


def known_log_level(name: str) -> bool:
    return name.strip().lower() in _LEVELS


class Telemetry:
    """No-op telemetry: the interface, and what runs without a connection string."""

    enabled: bool = False

    def __init__(self) -> None:
        self._events = logging.getLogger(EVENTS_LOGGER)

    def log_event(self, level: int, message: str, **dims: Any) -> None:
        """A structured log line. Only catalogued dimension names are kept; values are sanitised."""
        if self._events.isEnabledFor(level):
            self._events.log(level, message, extra={"custom_dimensions": clean_dimensions(dims)},
                             stacklevel=2)  # file/line of the caller, not of this wrapper

    def on_batch(self, stats: BatchTelemetry) -> None:
        """Counters and latencies of one pipeline batch."""

    def on_system(self, stats: SystemStats) -> None:
        """Service-wide gauges (memory, Kafka producer queue, Redis memory, destination health)."""

    def pipeline_hook(self, stats: Any, results: Any = None) -> None:
        """A pipeline `BatchHook`: `on_batch(from_pipeline_stats(stats))`."""

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
