"""What a `grc` log record carries to any backend: which records are kept, and with which fields.

Backend-independent `logging.Filter`s that a backend puts on its log handler (they run in the thread
that logs, so they see the invocation):

- `InfoSampling`: a share of debug/info records (TELEMETRY_INFO_SAMPLING); warnings and errors always.
- `ContextFilter`: `record.custom_dimensions` becomes the catalogued, sanitised dimensions, the
  standard fields (`catalogue.LOG_STANDARD_FIELDS`, the same on either backend, so a query of
  `traces` reads the same customDimensions keys) and the invocation as reserved properties
  (`OP_KEYS`), which the backend moves into the envelope's operation tags and removes.

Each backend then keeps only `KEPT_LOG_PROPERTIES` and redacts message and exception texts.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

from shared.observability.telemetry.catalogue import LOG_DIMENSIONS, LOG_STANDARD_FIELDS
from shared.observability.telemetry.context import Operation, current_operation
from shared.observability.telemetry.redaction import clean_dimensions, label

# Reserved properties carrying the invocation from the logging thread to the exporter (then removed).
OP_ID, OP_PARENT, OP_NAME = "_grc.opId", "_grc.opParent", "_grc.opName"
OP_KEYS = (OP_ID, OP_PARENT, OP_NAME)
KEPT_LOG_PROPERTIES = LOG_STANDARD_FIELDS | LOG_DIMENSIONS


def operation_props(op: Operation | None) -> dict[str, str]:
    return {} if op is None else {OP_ID: op.trace_id, OP_PARENT: op.parent_id, OP_NAME: op.name}


class InfoSampling(logging.Filter):
    """Keep a share of debug/info records; warnings and errors always pass."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self._rate = rate

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or random.random() < self._rate


class ContextFilter(logging.Filter):
    """Catalogued, sanitised dimensions, the standard fields and the invocation (reserved properties)
    as `record.custom_dimensions`."""

    def filter(self, record: logging.LogRecord) -> bool:
        op = current_operation()
        dims = getattr(record, "custom_dimensions", None)
        clean: dict[str, Any] = clean_dimensions(dims) if isinstance(dims, Mapping) else {}
        if op is not None:
            clean.setdefault("operation", label(op.name))
            clean.update(operation_props(op))
        # The standard fields, as opencensus' AzureLogHandler names them (it adds them itself; the
        # OpenTelemetry exporter adds `logger_name` itself): both backends send the same keys.
        clean.update(process=record.processName, module=record.module, fileName=record.pathname,
                     lineNumber=record.lineno, level=record.levelname, logger_name=record.name)
        record.custom_dimensions = clean
        return True
