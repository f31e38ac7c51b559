"""Call a user function the way the worker does: bindings by parameter name, sync ones off the loop."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from devhost.app_loader import FunctionSpec

log = logging.getLogger("devhost.invoke")


@dataclass
class TraceContext:
    trace_parent: str | None = None
    trace_state: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class RetryContext:
    retry_count: int = 0
    max_retry_count: int = 0
    exception: Any = None


@dataclass
class Context:
    """Duck-typed `azure.functions.Context` (the real one is built by the worker only)."""

    function_name: str
    invocation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_directory: str = "."
    trace_context: TraceContext = field(default_factory=TraceContext)
    retry_context: RetryContext = field(default_factory=RetryContext)
    thread_local_storage: Any = None


async def invoke(spec: FunctionSpec, trigger_value: Any, context: Context | None = None) -> Any:
    """Run the function once. Non-HTTP invocations end with the host's own log line,
    `Executed 'Functions.<name>' (Succeeded|Failed, Id=<invocation id>, Duration=<ms>ms)`, so a run by
    hand, a timer or a queue message shows in the log whether it finished and how."""
    context = context or Context(spec.name)
    kwargs: dict[str, Any] = {spec.trigger["name"]: trigger_value}
    if spec.takes_context:
        kwargs["context"] = context
    started = time.perf_counter()
    outcome, why = "Failed", ""
    try:
        if spec.is_async:
            result = await spec.user_function(**kwargs)
        else:
            result = await asyncio.to_thread(spec.user_function, **kwargs)
        outcome = "Succeeded"
        return result
    except asyncio.CancelledError:
        # The runner stopping (or a caller's timeout) cancelled it: no traceback follows, so the
        # line says why it failed.
        why = ": cancelled before it finished"
        raise
    finally:
        if spec.trigger_type != "httpTrigger":  # HTTP: the response status says it
            (log.info if outcome == "Succeeded" else log.error)(
                "Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)%s", spec.name, outcome,
                context.invocation_id, (time.perf_counter() - started) * 1000, why)
