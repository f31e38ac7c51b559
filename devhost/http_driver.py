"""HTTP triggers on one port, with the host's routing, method and auth semantics.

Route precedence follows ASP.NET routing as the Functions host uses it: literal segments before
parameters, parameters before a catch-all `{*x}`. Function and admin levels need a key when the
runner is given keys (`--function-key`); like `func start`, no keys means no key check.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web

from devhost.admin import Admin
from devhost.app_loader import FunctionSpec
from devhost.invoke import Context, TraceContext, invoke

log = logging.getLogger("devhost.http")
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the host's default maxRequestLength


@dataclass
class HttpRoute:
    spec: FunctionSpec
    regex: re.Pattern[str]
    methods: frozenset[str]
    auth_level: str
    rank: tuple[int, ...]


def compile_route(template: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    parts: list[str] = []
    rank: list[int] = []
    for seg in template.strip("/").split("/"):
        m = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?(\?)?\}", seg)
        if not m:
            parts.append(re.escape(seg))
            rank.append(0)
        elif m.group(1):
            parts.append(f"(?P<{m.group(2)}>(?s:.*))")  # DOTALL: a %0A in the path still matches
            rank.append(2)
        else:
            parts.append(f"(?P<{m.group(2)}>[^/]+)")
            rank.append(1)
    return re.compile("^/" + "/".join(parts) + "/?$"), tuple(rank)


def build_routes(specs: list[FunctionSpec]) -> list[HttpRoute]:
    routes = []
    for spec in specs:
        t = spec.trigger
        regex, rank = compile_route(t.get("route") or spec.name)
        methods = frozenset(m.upper() for m in (t.get("methods") or ["GET", "POST", "PUT", "PATCH", "DELETE",
                                                                          "HEAD", "OPTIONS"]))
        routes.append(HttpRoute(spec, regex, methods, str(t.get("authLevel", "FUNCTION")).upper(), rank))
    # Most specific first: per-segment rank, then longer templates.
    routes.sort(key=lambda r: (r.rank, -len(r.rank)))
    return routes


class HttpDriver:
    trigger_type = "httpTrigger"

    def __init__(self, specs: list[FunctionSpec], port: int, host: str = "127.0.0.1",
                 function_keys: set[str] | None = None) -> None:
        self.routes = build_routes(specs)
        self.port = port
        self.host = host
        self.function_keys = function_keys
        self.admin: Admin | None = None  # set by the runner: /admin/* is the host's, matched first
        self._runner: web.AppRunner | None = None

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self.routes:
            m = route.regex.fullmatch(path)
            if m and method in route.methods:
                return route, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    def _authorized(self, route: HttpRoute, request: web.Request) -> bool:
        if route.auth_level == "ANONYMOUS" or self.function_keys is None:
            return True
        key = request.headers.get("x-functions-key") or request.query.get("code")
        return key in self.function_keys

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.admin is not None and (request.path == "/admin" or request.path.startswith("/admin/")):
            return await self.admin.handle(request)
        found = self.match(request.method, request.path)
        if found is None:
            return web.Response(status=404)
        route, route_params = found
        if not self._authorized(route, request):
            return web.Response(status=401)
        body = await request.read()
        req = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=dict(request.headers),
            params=dict(request.query),
            route_params=route_params,
            body=body,
        )
        ctx = Context(route.spec.name, trace_context=TraceContext(request.headers.get("traceparent")))
        try:
            resp = await invoke(route.spec, req, ctx)
        except Exception:  # the real host answers 500 with no body
            log.exception("function %s failed", route.spec.name)
            return web.Response(status=500)
        if not isinstance(resp, func.HttpResponse):
            return web.Response(status=204)
        headers: dict[str, Any] = dict(resp.headers)
        headers.pop("Content-Type", None)
        headers.pop("content-type", None)
        ctype = resp.mimetype or "text/plain"
        if resp.charset and not ctype.startswith("application/octet"):
            ctype = f"{ctype}; charset={resp.charset}"
        headers["Content-Type"] = ctype
        return web.Response(status=resp.status_code, body=resp.get_body(), headers=headers)

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:(?s:.*)}", self._handle)  # DOTALL: paths may hold %0A
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("HTTP functions on http://%s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
