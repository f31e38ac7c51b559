"""Call function_app's registered functions with real `func.HttpRequest` objects."""
from __future__ import annotations

import json
from typing import Any

import azure.functions as func

import function_app
from devhost.invoke import Context, TraceContext
from shared.core.settings import get_settings
from shared.security.identity import mint_dev_token


def auth_headers(tenants: list[str] | None = None, roles: list[str] | None = None) -> dict[str, str]:
    """A caller identity signed with the development key of the test settings; by default a
    platform admin (tenant isolation itself is tested in tests/security/)."""
    roles = ["Events.Admin"] if tenants is None and roles is None else roles
    return {"authorization": "Bearer " + mint_dev_token(get_settings(), "test-client", tenants=tenants, roles=roles)}


def registrations() -> dict[str, dict[str, Any]]:
    function_app.app.functions_bindings = None
    out = {}
    for f in function_app.app.get_functions():
        trig = json.loads(f.get_function_json())["bindings"][0]
        out[f.get_function_name()] = {"fn": f.get_user_function(), **trig}
    return out


def call(name: str, method: str, path: str, body: Any = None, *, route: dict[str, str] | None = None,
         params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    hdrs = {"content-type": "application/json"} if body is not None else {}
    hdrs.update(auth_headers())
    hdrs.update(headers or {})
    return func.HttpRequest(method=method, url=f"http://localhost{path}", headers=hdrs, params=params or {},
                            route_params=route or {}, body=raw)


def context(name: str, traceparent: str | None = None) -> Context:
    """The invocation context the worker passes (function name, W3C trace context)."""
    return Context(name, trace_context=TraceContext(traceparent))


async def invoke(name: str, method: str, path: str, body: Any = None, *, traceparent: str | None = None,
                 **kw: Any) -> tuple[int, dict[str, str], Any]:
    """Run the named function; returns (status, headers, parsed JSON body or None)."""
    resp = await registrations()[name]["fn"](call(name, method, path, body, **kw), context(name, traceparent))
    raw = resp.get_body()
    return resp.status_code, dict(resp.headers), (json.loads(raw) if raw else None)
