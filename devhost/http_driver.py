"""HTTP triggers on one port, with the host's routing, method and auth semantics.

Route precedence follows ASP.NET routing as the Functions host uses it: literal segments before
parameters, parameters before a catch-all `{*x}`; literal segments match in any case (its
RoutePatternMatcher compares them OrdinalIgnoreCase: `/EVENTS/t` is `/events/{tenantId}`, the
parameter's value kept as sent) and a trailing slash is ignored. Function and admin levels need a key when the
runner is given keys (`--function-key`); like `func start`, no keys means no key check.

Requests the HTTP server refuses before any function runs answer problem details, as the app's own
errors do: header limits of the host's web server (Kestrel's documented defaults, below) give 431
(headers) or 414 (request line), a malformed request (CR, LF or NUL inside a header, a bad header
name or method) 400. aiohttp's parser raises those before a handler or middleware could see the
request; its protocol's `handle_error` builds the answer, so the server uses a protocol that
overrides it (`ProblemRequestHandler`).
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import azure.functions as func
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from yarl import URL

from devhost.admin import Admin
from devhost.app_loader import FunctionSpec
from devhost.invoke import Context, TraceContext, invoke
from devhost.problems import problem

log = logging.getLogger("devhost.http")
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the host's default maxRequestLength
# Kestrel's defaults (KestrelServerLimits): MaxRequestLineSize 8,192 bytes (414), MaxRequestHeadersTotalSize
# 32,768 bytes and MaxRequestHeaderCount 100 (431). One header may be as long as all of them together.
MAX_REQUEST_LINE_BYTES = 8192
MAX_HEADERS_TOTAL_BYTES = 32768
MAX_HEADER_COUNT = 100
_REASON = re.compile(r"\A[A-Za-z][A-Za-z ]{0,79}")


def refusal(exc: BaseException | None, status: int) -> tuple[int, str, str]:
    """(status, title, detail) for a request the server refuses before routing it. The detail names
    the rule broken, never the request's own bytes."""
    if isinstance(exc, LineTooLong):
        if exc.args[1:2] == (MAX_REQUEST_LINE_BYTES,):  # the parser's limit tells which line it was
            return 414, "URI Too Long", f"the request line is longer than {MAX_REQUEST_LINE_BYTES} bytes"
        return 431, "Request Header Fields Too Large", \
            f"a request header is longer than {MAX_HEADERS_TOTAL_BYTES} bytes"
    if isinstance(exc, BadHttpMessage):
        # The parser's own words only (its messages go on to quote the offending bytes).
        words = _REASON.search(exc.message or "")
        reason = words.group(0).strip() if words else "malformed request"
        if reason == "Too many headers received":
            return 431, "Request Header Fields Too Large", f"more than {MAX_HEADER_COUNT} request headers"
        return 400, "Bad Request", f"the request is not valid HTTP/1.1: {reason}"
    if status >= 500:
        return status, HTTPStatus(status).phrase, "the request could not be processed"
    return status, HTTPStatus(status).phrase, "the request is not valid HTTP/1.1"


class ProblemRequestHandler(RequestHandler):
    """aiohttp's HTTP/1.1 protocol, answering what it refuses itself with problem details."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, BadHttpMessage):
            log.info("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
        else:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        code, title, detail = refusal(exc, status)
        resp = problem(code, title, detail)
        resp.force_close()  # the stream is out of step after a parse error: as aiohttp does
        return resp


class ProblemServer(web.Server):
    """aiohttp's low-level server with ProblemRequestHandler as its protocol."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(handler, request_factory=self._request, loop=loop, **kwargs)
        self._protocol_kwargs = kwargs
        self._protocol_loop = loop

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, self._protocol_loop,
                               client_max_size=MAX_REQUEST_BYTES)

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._protocol_loop, **self._protocol_kwargs)


def joined(values: Any) -> dict[str, str]:
    """A multi-valued mapping (headers, query) as the host hands it to the worker: each name once, its
    values joined with "," (ASP.NET's StringValues.ToString())."""
    out: dict[str, str] = {}
    for key in values.keys():
        if key not in out:
            out[key] = ",".join(values.getall(key))
    return out


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
            parts.append(f"(?i:{re.escape(seg)})")  # literals match in any case, as in ASP.NET routing
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


_ENCODED_SLASH = re.compile("%2f", re.IGNORECASE)


def routing_path(request: web.BaseRequest) -> str:
    """The path as the host routes it: percent-decoded (as aiohttp's `request.path` is) but for `%2F`,
    which Kestrel leaves encoded. Decoded, it would split a segment in two: `/events/t%2Fhistory`
    would reach the history function, where the host passes `t%2Fhistory` to `/events/{tenantId}`."""
    parts = _ENCODED_SLASH.split(request.rel_url.raw_path)
    return "%2F".join(URL.build(path="/" + part, encoded=True).path[1:] for part in parts)


class HttpDriver:
    trigger_type = "httpTrigger"

    def __init__(self, specs: list[FunctionSpec], port: int, host: str = "127.0.0.1",
                 function_keys: set[str] | None = None) -> None:
        self.routes = build_routes(specs)
        self.port = port
        self.host = host
        self.function_keys = function_keys
        self.admin: Admin | None = None  # set by the runner: /admin/* is the host's, matched first
        self._runner: web.ServerRunner | None = None

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self.routes:
            m = route.regex.fullmatch(path)
            if m and method in route.methods:
                return route, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    def _authorized(self, route: HttpRoute, request: web.BaseRequest) -> bool:
        if route.auth_level == "ANONYMOUS" or self.function_keys is None:
            return True
        key = request.headers.get("x-functions-key") or request.query.get("code")
        return key in self.function_keys

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        total = sum(len(k) + len(v) + 4 for k, v in request.raw_headers)  # "name: value\r\n"
        if total > MAX_HEADERS_TOTAL_BYTES:
            return problem(431, "Request Header Fields Too Large",
                           f"the request headers total more than {MAX_HEADERS_TOTAL_BYTES} bytes")
        try:
            length = request.content_length
        except ValueError:  # more digits than int() takes (4,300): Kestrel refuses such a length
            return problem(400, "Bad Request", "the request is not valid HTTP/1.1: Content-Length")
        lowered = request.path.lower()
        if self.admin is not None and (lowered == "/admin" or lowered.startswith("/admin/")):
            return await self.admin.handle(request)
        found = self.match(request.method, routing_path(request))
        if found is None:
            return web.Response(status=404)
        route, route_params = found
        if not self._authorized(route, request):
            return web.Response(status=401)
        # As the host's ToRpcHttp (azure-functions-host, GrpcMessageConversionExtensions.cs) hands a
        # request to the Python worker: values joined, header names lower-cased, no query parameter
        # whose value is empty (the worker asks for no nullable values), and a body only when the
        # request has a Content-Length above 0 (a chunked body never reaches the function).
        headers, params = joined(request.headers), joined(request.query)
        req = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers={k.lower(): v for k, v in headers.items()},
            params={k: v for k, v in params.items() if v},
            route_params=route_params,
            body=await request.read() if length else b"",
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
        # Every path comes to `_handle` (it routes itself, %0A in paths included). A body comes to the
        # function as it came over the wire, as the host hands it over: no content coding undone
        # (aiohttp would gunzip it, and the app would take locally what it must decode in Azure).
        server = ProblemServer(self._handle, access_log=None, max_line_size=MAX_REQUEST_LINE_BYTES,
                               max_field_size=MAX_HEADERS_TOTAL_BYTES, max_headers=MAX_HEADER_COUNT,
                               auto_decompress=False)
        self._runner = web.ServerRunner(server)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("HTTP functions on http://%s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
