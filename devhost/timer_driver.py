"""Timer triggers: NCRONTAB (`sec min hour day month day-of-week`) or a TimeSpan (`hh:mm:ss`).

Like the host: `runOnStartup` fires once at start; with `useMonitor` the last and next
occurrences are kept (here in `<state dir>/timers/<function>.json`), and an occurrence missed
while the runner was down fires at start with `past_due=True`. A fire that starts more than a
second after its occurrence is also `past_due`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.app_loader import FunctionSpec
from devhost.invoke import Context, RetryContext, invoke
from devhost.retry import RetryPolicy, timespan_seconds
from devhost.workers import WorkerTasks

log = logging.getLogger("devhost.timer")


class Schedule:
    """The next occurrence after a moment (UTC, as WEBSITE_TIME_ZONE is unset).

    NCRONTAB is cron with a leading seconds field; croniter parses it (`second_at_beginning`), with
    cron's rule that a restricted day-of-month and day-of-week match when either does, as NCRONTAB's.
    """

    def __init__(self, expr: str) -> None:
        self.expr = expr.strip()
        self.interval: float | None = None
        if re.fullmatch(r"(\d+\.)?\d{1,2}:\d{2}:\d{2}(\.\d+)?", self.expr):
            self.interval = timespan_seconds(self.expr)
            if self.interval <= 0:
                raise ValueError("a TimeSpan schedule must be positive")
            return
        if len(self.expr.split()) != 6:
            raise ValueError(f"NCRONTAB needs 6 fields (sec min hour day month dow): {expr!r}")
        if not croniter.is_valid(self.expr, second_at_beginning=True):
            raise ValueError(f"not a valid NCRONTAB expression: {expr!r}")

    def next_after(self, after: datetime) -> datetime:
        if self.interval is not None:
            return after + timedelta(seconds=self.interval)
        nxt: datetime = croniter(self.expr, after, second_at_beginning=True).get_next(datetime)
        return nxt


class TimerWorker:
    def __init__(self, spec: FunctionSpec, state_dir: Path | None) -> None:
        self.spec = spec
        self.schedule = Schedule(str(spec.trigger["schedule"]))
        self.run_on_startup = bool(spec.trigger.get("runOnStartup", False))
        self.use_monitor = bool(spec.trigger.get("useMonitor", True)) and state_dir is not None
        self.status_file = (state_dir / "timers" / f"{spec.name}.json") if state_dir else None
        self.retry = RetryPolicy.from_setting(spec.settings.get("retry"))
        self.invocations = 0

    def _status(self) -> dict[str, Any]:
        if self.use_monitor and self.status_file and self.status_file.exists():
            try:
                return json.loads(self.status_file.read_text())
            except ValueError:
                return {}
        return {}

    def _save(self, last: datetime, nxt: datetime) -> None:
        if self.use_monitor and self.status_file:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            self.status_file.write_text(json.dumps({"Last": last.isoformat(), "Next": nxt.isoformat(),
                                                    "LastUpdated": datetime.now(UTC).isoformat()}))

    async def fire(self, past_due: bool, last: datetime | None, nxt: datetime) -> None:
        status = {"Last": last.isoformat() if last else None, "Next": nxt.isoformat()}
        req = TimerRequest(past_due=past_due, schedule_status=status,
                           schedule={"AdjustForDST": False})
        max_retries = self.retry.max_retry_count if self.retry else 0
        attempt = 0
        while True:
            self.invocations += 1
            try:
                await invoke(self.spec, req, Context(self.spec.name,
                                                     retry_context=RetryContext(attempt, max_retries)))
                return
            except Exception:
                log.exception("%s failed (attempt %d)", self.spec.name, attempt + 1)
                if self.retry is None or 0 <= max_retries <= attempt:
                    return
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1

    async def run(self, stopping: asyncio.Event) -> None:
        now = datetime.now(UTC)
        status = self._status()
        missed = status.get("Next") and datetime.fromisoformat(status["Next"]) < now
        nxt = self.schedule.next_after(now)
        if missed or self.run_on_startup:
            last = datetime.fromisoformat(status["Last"]) if status.get("Last") else None
            await self.fire(bool(missed), last, nxt)
            self._save(now, nxt)
        elif not status:
            self._save(now, nxt)
        while not stopping.is_set():
            wait = (nxt - datetime.now(UTC)).total_seconds()
            if wait > 0:
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=wait)
                    return
                except TimeoutError:
                    pass
            fired_at = datetime.now(UTC)
            following = self.schedule.next_after(max(fired_at, nxt))
            await self.fire((fired_at - nxt).total_seconds() > 1.0, nxt, following)
            self._save(nxt, following)
            nxt = following


class TimerDriver:
    trigger_type = "timerTrigger"

    def __init__(self, specs: list[FunctionSpec], state_dir: Path | None) -> None:
        self.workers = [TimerWorker(s, state_dir) for s in specs]
        self._workers = WorkerTasks("timer")

    async def start(self) -> None:
        for w in self.workers:
            self._workers.spawn(w.spec.name, w.run)
            log.info("timer %s: %s", w.spec.name, w.schedule.expr)
            if w.schedule.interval is not None:
                # Runs here as the host's timer extension runs it, but Azure supports a TimeSpan schedule
                # only on an App Service plan (the timer trigger's docs): the host refuses it on Windows
                # Consumption ("is not a valid CRON expression", CoreExtensionsScriptBindingProvider),
                # and infra/ deploys Flex Consumption.
                log.warning("timer %s: the TimeSpan schedule %r runs locally, but Azure supports TimeSpan "
                            "schedules only on an App Service plan (infra/ deploys Flex Consumption): use "
                            "NCRONTAB, e.g. '0 */5 * * * *'", w.spec.name, w.schedule.expr)

    def function_names(self) -> list[str]:
        return [w.spec.name for w in self.workers]

    async def run_now(self, name: str, input_: str | None) -> None:
        """Run by hand (admin API): not past due; the schedule and its status are left as they are."""
        worker = next(w for w in self.workers if w.spec.name == name)
        await worker.fire(False, None, worker.schedule.next_after(datetime.now(UTC)))

    async def stop(self) -> None:
        await self._workers.stop()
