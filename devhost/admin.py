"""The host's admin API, as far as a developer needs it locally.

- `POST /admin/functions/{name}` with `{"input": "..."}` runs a non-HTTP function now and answers
  202, the Functions host's documented way to run a timer- or queue-triggered function by hand
  ("Manually run a non HTTP-triggered function": the input is a string; locally no master key is
  required; on Azure the `_master` key goes in `x-functions-key`). For a timer the input is
  ignored; for a queue trigger it is the message body.
- `GET /admin/host/status` answers `{"state": "Running"}` once every trigger driver has started.
- `GET /admin/functions` lists the loaded functions with their trigger type.

`/admin/*` is reserved by the host: no app route can shadow it, so it is matched first.
With `--master-key`, admin calls need that key (`x-functions-key` or `?code=`), as in Azure.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from aiohttp import web

from devhost.problems import problem

log = logging.getLogger("devhost.admin")

class ManualRun(Protocol):
    """A driver whose functions can be run by hand."""

    def function_names(self) -> list[str]: ...

    async def run_now(self, name: str, input_: str | None) -> None: ...


class Admin:
    def __init__(self, functions: dict[str, str], master_key: str | None = None) -> None:
        self.functions = functions  # name -> trigger type
        self.master_key = master_key
        self.runners: dict[str, ManualRun] = {}
        self.started = False
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, driver: Any) -> None:
        if hasattr(driver, "run_now") and hasattr(driver, "function_names"):
            for name in driver.function_names():
                self.runners[name.lower()] = driver

    def _authorized(self, request: web.BaseRequest) -> bool:
        if self.master_key is None:
            return True
        return (request.headers.get("x-functions-key") or request.query.get("code")) == self.master_key

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if not self._authorized(request):
            return problem(401, "Unauthorized", "admin APIs need the master key (x-functions-key)")
        path = [p for p in request.path.split("/") if p]
        parts = [p.lower() for p in path]  # the host's admin routes match in any case, as function routes do
        if parts == ["admin", "host", "status"] and request.method == "GET":
            return web.json_response({"state": "Running" if self.started else "Initialized"})
        if parts == ["admin", "functions"] and request.method == "GET":
            return web.json_response([{"name": n, "trigger": t} for n, t in sorted(self.functions.items())])
        if len(parts) == 3 and parts[:2] == ["admin", "functions"]:
            if request.method != "POST":
                return problem(405, "Method Not Allowed", "POST runs the function")
            return await self._run(path[2], request)
        return problem(404, "Not Found", "no such admin API in the local runner")

    async def _run(self, name: str, request: web.BaseRequest) -> web.StreamResponse:
        driver = self.runners.get(name.lower())
        if driver is None:
            if name.lower() in {n.lower() for n in self.functions}:
                return problem(400, "Bad Request", f"{name} cannot be run by hand (HTTP functions are called directly)")
            return problem(404, "Not Found", f"no function named {name}")
        input_: str | None = None
        raw = await request.read()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return problem(400, "Bad Request", 'the body must be JSON: {"input": "..."}')
            value = body.get("input") if isinstance(body, dict) else None
            if value is not None and not isinstance(value, (str, int, float, bool)):
                return problem(400, "Bad Request", "input must be a string, number or boolean")
            input_ = None if value is None else (value if isinstance(value, str) else json.dumps(value))
        canonical = next(n for n in self.functions if n.lower() == name.lower())
        task = asyncio.create_task(driver.run_now(canonical, input_), name=f"admin:{canonical}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        log.info("admin: %s run by hand", canonical)
        return web.Response(status=202)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("admin run %s failed: %r", task.get_name(), task.exception())

    async def stop(self) -> None:
        for task in list(self._tasks):
            try:
                await asyncio.wait_for(task, timeout=30)
            except (TimeoutError, Exception):  # noqa: BLE001 - already logged by _done
                task.cancel()
