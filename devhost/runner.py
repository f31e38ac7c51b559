"""Run function_app.py locally: `python -m devhost [--port 3003] [--function-key KEY]`."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections import defaultdict
from pathlib import Path
from typing import Callable, Protocol

from devhost import invoke as invoke_module
from devhost.admin import Admin
from devhost.app_loader import ROOT, FunctionSpec, load_functions, load_settings
from devhost.cosmos_driver import CosmosDriver
from devhost.host_config import overrides
from devhost.http_driver import HttpDriver
from devhost.queue_driver import LEASE_SECONDS, QueueDriver
from devhost.timer_driver import TimerDriver

log = logging.getLogger("devhost")


class Driver(Protocol):
    trigger_type: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


DriverFactory = Callable[[list[FunctionSpec], argparse.Namespace], Driver]

# Binding type -> driver. Trigger types without a driver are listed at start and not run.
DRIVERS: dict[str, DriverFactory] = {
    "httpTrigger": lambda specs, opts: HttpDriver(
        specs, opts.port, opts.host, set(opts.function_key) if opts.function_key else None
    ),
    "cosmosDBTrigger": lambda specs, opts: CosmosDriver(
        specs, poll_ms=getattr(opts, "feed_poll_ms", None), retry_scale=getattr(opts, "retry_scale", 1.0)
    ),
    "timerTrigger": lambda specs, opts: TimerDriver(specs, getattr(opts, "state_dir", None)),
    "queueTrigger": lambda specs, opts: QueueDriver(
        specs, lease_seconds=getattr(opts, "queue_lease_seconds", None) or LEASE_SECONDS),
}


class Runner:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.drivers: list[Driver] = []
        self.admin = Admin({})

    async def start(self) -> None:
        by_type: dict[str, list[FunctionSpec]] = defaultdict(list)
        for spec in load_functions(self.opts.module):
            by_type[spec.trigger_type].append(spec)
        self.admin = Admin({s.name: t for t, specs in by_type.items() for s in specs},
                           getattr(self.opts, "master_key", None))
        # HTTP, then Cosmos DB triggers, then the rest: locally the Cosmos driver creates the
        # monitored containers (Azure has them before the app starts), which a timer firing at start
        # may query (cosmos_driver.py).
        first = {"httpTrigger": 0, "cosmosDBTrigger": 1}
        for trigger_type, specs in sorted(by_type.items(), key=lambda kv: first.get(kv[0], 2)):
            factory = DRIVERS.get(trigger_type)
            if factory is None:
                log.warning("no local driver for %s: %s not run", trigger_type, [s.name for s in specs])
                continue
            driver = factory(specs, self.opts)
            if isinstance(driver, HttpDriver):
                driver.admin = self.admin
            self.admin.register(driver)
            await driver.start()
            self.drivers.append(driver)
        self.admin.started = True

    async def stop(self) -> None:
        # As the host's drain mode on stop (azure-functions-host PR #7262, "Call EnableDrainModeAsync
        # on ApplicationStopping"): the listeners stop and invocations in flight finish. The non-HTTP
        # drivers go first (what runs finishes), HTTP last: its cleanup closes the listener, then
        # answers every request it took (aiohttp's shutdown waits for handlers), so a SIGTERM cuts no
        # request nor leaves an idempotency claim behind (tests/system/test_app_crash.py).
        await self.admin.stop()
        for driver in reversed(self.drivers):
            await driver.stop()
        from shared.app.services import reset_services  # noqa: PLC0415 - close clients on this loop

        await reset_services()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    ap.add_argument("--settings", type=Path, default=None, help="local.settings.json (default: repo's)")
    ap.add_argument("--port", type=int, default=None, help="HTTP port (default: PORT setting, else 3003)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--module", default="function_app")
    ap.add_argument("--function-key", action="append", default=None,
                    help="require this key on FUNCTION-level routes (x-functions-key or ?code=)")
    ap.add_argument("--master-key", default=None,
                    help="require this key on /admin/* (like Azure's _master key); none: no check, as func start")
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".localdev" / "devhost",
                    help="timer schedule status (useMonitor)")
    ap.add_argument("--feed-poll-ms", type=int, default=None,
                    help="Cosmos change feed poll delay (default: the binding's feedPollDelay, else 1000)")
    ap.add_argument("--retry-scale", type=float, default=1.0,
                    help="multiply retry-policy delays (0 = retry at once; tests)")
    ap.add_argument("--queue-lease-seconds", type=float, default=None,
                    help=f"lease on a running queue message (default {LEASE_SECONDS}, the host's; tests that "
                         "kill storage shorten it so a dequeue lost in the outage comes back sooner)")
    return ap.parse_args(argv)


async def serve(opts: argparse.Namespace) -> None:
    runner = Runner(opts)
    await runner.start()
    stop = asyncio.Event()
    why: list[str] = []

    def stop_for(reason: str) -> None:
        why.append(reason)
        stop.set()

    loop = asyncio.get_running_loop()
    # SIGHUP: the terminal closed, and its shell passed the hangup on to its jobs. Stopped as on Ctrl+C,
    # so that `make run` (localdev/run.py) stops the stand-ins after this process has closed its clients.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop_for, sig.name)
    watch = asyncio.ensure_future(_watch_terminal(stop_for)) if os.isatty(0) else None
    print(f"devhost: serving function_app on http://{opts.host}:{opts.port}", flush=True)
    try:
        await stop.wait()
    finally:
        if watch is not None:
            watch.cancel()
        await runner.stop()
        log.info("stopped (%s)", why[0] if why else "cancelled")


async def _watch_terminal(stop_for: Callable[[str], None], period: float = 1.0) -> None:
    """Started from a terminal: stop when it is gone. A closing terminal signals its session leader
    only; when that is `make` itself (`make run` as a tmux pane's or an IDE's command, no shell in
    between), no signal reaches this process, but its stdin stops being a terminal (hung up)."""
    while True:
        await asyncio.sleep(period)
        if not os.isatty(0):
            stop_for("its terminal closed")
            return


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    load_settings(opts.settings)
    # Read again now that local.settings.json is in the environment: an AzureFunctionsJobHost__
    # setting there applies over host.json, as under `func start` (devhost/host_config.py).
    invoke_module.FUNCTION_TIMEOUT_S = invoke_module.function_timeout()
    if opts.port is None:
        opts.port = int(os.environ.get("PORT", "3003"))
    level = os.environ.get("LOG_LEVEL", "info").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The Azure SDKs log every HTTP request at INFO; keep their warnings only.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger().level))
    for name in overrides():  # what makes this run's host.json differ from the file
        log.info("host.json: %s=%s applies over the file", name, os.environ[name])
    asyncio.run(serve(opts))


