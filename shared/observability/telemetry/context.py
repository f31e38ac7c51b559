"""Invocation correlation: which Functions invocation a log record or metric belongs to.

The W3C trace context the host gives each invocation (`context.trace_context.trace_parent`) is
bound to the running task with `operation()` / `invocation()`; a backend reads `current_operation()`
and sets `operation_Id` (the trace id), `operation_ParentId` (the invocation's span id) and
`operation_Name` (the function name): the same values the host puts on the invocation's request
telemetry, so the app's records sit under the host's request.
"""
from __future__ import annotations

import contextvars
import re
import secrets
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True, slots=True)
class Operation:
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
            await jobs.on_change_batch(...)
    """
    trace = getattr(getattr(context, "trace_context", None), "trace_parent", None)
    return operation(trace, getattr(context, "function_name", None) or default_name)
