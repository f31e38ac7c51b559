"""The only module of `shared` that knows Azure Functions types: HttpRequest in, HttpResponse out,
and the route table registered as HTTP functions (`http_functions`)."""
from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import azure.functions as func

from shared.http.adapter import Handler, handle
from shared.http.routing import Route
from shared.http.types import ApiRequest, ApiResponse, Headers


def to_api_request(req: func.HttpRequest, context: func.Context | None = None) -> ApiRequest:
    traceparent = None
    if context is not None and getattr(context, "trace_context", None) is not None:
        traceparent = context.trace_context.trace_parent
    return ApiRequest(
        method=req.method.upper(),
        path=urlsplit(req.url).path or "/",
        headers=Headers(dict(req.headers)),
        query=dict(req.params),
        route=dict(req.route_params),
        body=req.get_body() or b"",
        traceparent=traceparent or req.headers.get("traceparent"),
    )


def to_http_response(resp: ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(body=resp.body, status_code=resp.status, headers=resp.headers,
                             mimetype=resp.media_type, charset="utf-8")


async def serve(req: func.HttpRequest, handler: Handler, context: func.Context | None = None,
                deadline: float | None = None, completes: bool = False) -> func.HttpResponse:
    name = getattr(context, "function_name", None) if context is not None else None
    return to_http_response(await handle(to_api_request(req, context), handler, name, deadline, completes))


def http_functions(routes: Sequence[Route]) -> func.Blueprint:
    """A blueprint with one HTTP function per route, for `app.register_functions` (the Azure Functions
    Python samples group HTTP functions in blueprints): each is named after its route, so each shows on
    its own in the portal and in Application Insights, and each serves its handler through the one
    request adapter. Auth level: ANONYMOUS for the anonymous routes, else FUNCTION (a function key)."""
    bp = func.Blueprint()
    for route in routes:
        bp.function_name(route.name)(
            bp.route(route=route.path, methods=list(route.methods),
                     auth_level=func.AuthLevel.ANONYMOUS if route.anonymous else func.AuthLevel.FUNCTION)(
                _function(route)))
    return bp


def _function(route: Route) -> object:
    handler, deadline, completes = route.handler, route.deadline, route.completes

    # The worker binds the trigger to the parameter named `req` (the route decorator's default) and
    # passes the invocation context to a parameter named `context`.
    async def function(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return await serve(req, handler, context, deadline, completes)

    function.__name__ = function.__qualname__ = route.name
    return function
