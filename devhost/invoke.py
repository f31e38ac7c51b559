"""Call a user function the way the worker does: bindings by parameter name, sync ones off the loop."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost.app_loader import ROOT, FunctionSpec
from devhost.host_config import host_config, lookup
from devhost.retry import timespan_seconds

log = logging.getLogger("devhost.invoke")

# Without `functionTimeout` in host.json the host uses its plan's default: 30 minutes on Flex
# Consumption, what infra/ deploys (Azure Functions, "Function app timeout duration").
DEFAULT_FUNCTION_TIMEOUT_S = 30 * 60.0


def function_timeout(path: Path = ROOT / "host.json") -> float | None:
    """host.json's `functionTimeout` in seconds, app settings over it (devhost/host_config.py; None: `-1`,
    unbounded)."""
    value = lookup(host_config(path), "functionTimeout")
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT_S
    if str(value).strip() == "-1":
        return None
    return timespan_seconds(str(value))


FUNCTION_TIMEOUT_S = function_timeout()


class FunctionTimeout(Exception):
    """The invocation ran past `functionTimeout` and was cancelled, as the host cancels it."""


class _Watchdog:
    """Cancels invocations that run past `functionTimeout`. One check a second for all of them, not
    a timer per invocation: a timer handle costs 2-3 us, a single POST's whole invocation about 500."""

    CHECK_S = 1.0

    def __init__(self) -> None:
        self.running: dict[asyncio.Task[Any], float] = {}  # invocation's task -> its deadline
        self.expired: set[asyncio.Task[Any]] = set()
        self._checker: asyncio.Task[None] | None = None

    def watch(self, task: asyncio.Task[Any], timeout: float) -> None:
        self.running[task] = time.monotonic() + timeout
        checker = self._checker
        if checker is None or checker.done() or checker.get_loop() is not task.get_loop():
            self._checker = task.get_loop().create_task(self._check(), name="devhost:functionTimeout")

    def done(self, task: asyncio.Task[Any]) -> None:
        self.running.pop(task, None)
        self.expired.discard(task)

    async def _check(self) -> None:
        while self.running:  # ends when nothing runs; the next invocation starts it again
            await asyncio.sleep(self.CHECK_S)
            now = time.monotonic()
            for task, deadline in list(self.running.items()):
                # A task in `running` waits inside its function (nothing in `invoke` awaits between
                # watch() and the call, or between the call's end and done()): the cancel lands there.
                if now >= deadline and task not in self.expired:
                    self.expired.add(task)
                    task.cancel()


_WATCHDOG = _Watchdog()


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
    task, timeout = asyncio.current_task(), FUNCTION_TIMEOUT_S
    try:
        if spec.is_async:
            call = spec.user_function(**kwargs)
        else:
            call = asyncio.to_thread(spec.user_function, **kwargs)
        if task is not None and timeout is not None:
            _WATCHDOG.watch(task, timeout)
        try:
            result = await call
            if task is not None and task in _WATCHDOG.expired:
                task.uncancel()  # the function swallowed the timeout's cancel and finished: let it
        except asyncio.CancelledError:
            if task is None or task not in _WATCHDOG.expired:
                raise
            task.uncancel()  # the cancel was the timeout's, answered here: the caller's task goes on
            # The host's words. In Azure it then restarts the Python worker process, which ends every
            # other invocation in flight on the instance too (azure-functions-host#8720): the runner
            # cancels this one only, and says so.
            why = (f": Timeout value of {timeout:g} s (host.json functionTimeout) exceeded; in Azure the "
                   "host restarts the worker, ending every invocation in flight")
            log.error("Timeout value of %g s exceeded by function 'Functions.%s' (Id: '%s'). Initiating "
                      "cancellation.", timeout, spec.name, context.invocation_id)
            raise FunctionTimeout(f"{spec.name} ran past functionTimeout ({timeout:g} s)") from None
        finally:
            if task is not None:
                _WATCHDOG.done(task)
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
