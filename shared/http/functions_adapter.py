"""The only module of `shared` that knows Azure Functions types: HttpRequest in, HttpResponse out."""
from __future__ import annotations

from urllib.parse import urlsplit

import azure.functions as func

from shared.http.adapter import Handler, handle
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


async def serve(req: func.HttpRequest, handler: Handler, context: func.Context | None = None) -> func.HttpResponse:
    name = getattr(context, "function_name", None) if context is not None else None
    return to_http_response(await handle(to_api_request(req, context), handler, name))
