"""The process's telemetry: `configure(settings)` once per worker process, `current()` anywhere.

Telemetry is process-wide (exporter threads, a handler on the `grc` logger), unlike the service
container, which is per event loop. Without a connection string `configure` sets the no-op
`Telemetry`; with one, the backend TELEMETRY_BACKEND names: `opencensus` (appinsights.py, the
default) or `opentelemetry` (azuremonitor.py, the Azure Monitor OpenTelemetry distro; once per
process). Each backend is imported only when chosen.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from shared.observability.telemetry.base import (LOGGER_NAME, Telemetry, aad_credential, known_log_level,
                                                 log_level)

# A partial batch of log records waits at most this long before it is sent (either backend).
LOG_EXPORT_SECONDS = 2.0

if TYPE_CHECKING:  # settings import stays cheap for callers that only want the types
    from shared.core.settings import Settings

_NOOP = Telemetry()
_current: Telemetry = _NOOP
_lock = threading.Lock()


def current() -> Telemetry:
    """The telemetry set up by the last `configure` (the no-op one before that)."""
    return _current


def configure(
    settings: "Settings",
    *,
    export_interval: float = 15.0,
    log_export_interval: float | None = None,
    enable_local_storage: bool = True,
    storage_path: str | None = None,
    metrics_per_operation: bool | None = None,
    max_series: int = 10_000,
    role_name: str | None = None,
    credential: Any = None,
) -> Telemetry:
    """Set up telemetry from settings and make it `current()`; closes the previous one.

    `export_interval`: seconds between metric exports (each sends the interval's deltas).
    `log_export_interval`: the longest a log record waits for its batch (default: the smaller of
    `export_interval` and LOG_EXPORT_SECONDS). `metrics_per_operation`: see `AggregatingTelemetry`
    (opencensus only). `max_series` bounds the series held per export interval (extra ones are
    dropped). `credential` (a TokenCredential) overrides the one
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING asks for.
    """
    global _current
    logging.getLogger(LOGGER_NAME).setLevel(log_level(settings.log_level))
    if not known_log_level(settings.log_level):  # a typo must not pass for a choice
        logging.getLogger(LOGGER_NAME).warning(
            "LOG_LEVEL %r is none of debug, info, warning, error, critical: logging at info",
            settings.log_level)
    conn = settings.appinsights_connection_string.strip()
    with _lock:
        previous, _current = _current, _NOOP
        previous.close()
        if conn:
            # Both exporters also parse the environment variable themselves, and both raise on a blank
            # one (local.settings.json's "" value, put into the environment by the local runner): the
            # setting is passed to them explicitly, so a blank variable is dropped.
            if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "x").strip():
                del os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"]
            if credential is None:
                credential = aad_credential(settings.appinsights_authentication_string)
            options: dict[str, Any] = dict(
                credential=credential, level=log_level(settings.log_level),
                info_sampling=settings.telemetry_info_sampling, export_interval=export_interval,
                log_export_interval=log_export_interval or min(export_interval, LOG_EXPORT_SECONDS),
                enable_local_storage=enable_local_storage, storage_path=storage_path, max_series=max_series,
                role_name=role_name or os.environ.get("WEBSITE_SITE_NAME") or "grc-event-streaming")
            if settings.telemetry_backend == "opentelemetry":
                from shared.observability.telemetry.azuremonitor import (  # noqa: PLC0415 - only when chosen
                    AzureMonitorTelemetry,
                )

                _current = AzureMonitorTelemetry(conn, **options)
            else:
                from shared.observability.telemetry.appinsights import (  # noqa: PLC0415 - only when chosen
                    AppInsightsTelemetry,
                )

                _current = AppInsightsTelemetry(conn, metrics_per_operation=metrics_per_operation, **options)
        return _current
