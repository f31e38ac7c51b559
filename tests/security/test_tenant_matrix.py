"""Tenant isolation as a matrix over EVERY route of `ROUTES`, through the registered functions.

The table is iterated, so routes added later are covered without editing this file: a valid request
is built for each route (path tenant; for routes with a body, a body naming the tenant: known bodies
for the documented request schemas, otherwise a minimal valid body generated from /openapi.json).

- no token -> 401 on every protected route (anonymous ones answer without one);
- a token granted tenant A (by claim or by app role) asking for tenant B -> 403 on every
  tenant-scoped route, with B named in the path and/or the body, and nothing of B changes;
- A on A -> neither 401 nor 403 (nor 5xx), and nothing of B shows in the answer even when B is
  smuggled into the query;
- a body naming another tenant than the path -> refused, nothing written for either;
- bulk with events of A and B -> 403 for the whole request, nothing stored for A.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import azure.functions as func
import hypothesis
import hypothesis.errors
import pytest
from hypothesis import Phase

from shared.api.routes import ROUTES, Route, _document
from tests.functions_client import auth_headers, context, registrations

pytestmark = pytest.mark.usefixtures("app_services")

PROTECTED = [r for r in ROUTES if not r.anonymous]
PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _names_tenant(schema: Any, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a schema has a `tenantId` property anywhere (following $refs)."""
    if isinstance(schema, list):
        return any(_names_tenant(s, seen) for s in schema)
    if not isinstance(schema, dict):
        return False
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref not in seen:
        return _names_tenant(_document()["components"]["schemas"][ref.rsplit("/", 1)[-1]], seen | {ref})
    if "tenantId" in (schema.get("properties") or {}):
        return True
    return any(_names_tenant(v, seen) for k, v in schema.items() if k != "$ref")


def _body_tenant_field(route: Route) -> bool:
    """Whether the route's documented request body names a tenant (top level or inside its items)."""
    return bool(route.request_schema) and _names_tenant(
        {"$ref": f"#/components/schemas/{route.request_schema}"}
    )


def tenant_scoped(route: Route) -> bool:
    return "{tenantId}" in route.path or _body_tenant_field(route)


SCOPED = [r for r in PROTECTED if tenant_scoped(r)]
# Routes whose path and body both name a tenant: the body may not point elsewhere.
PATH_AND_BODY = [r for r in SCOPED if "{tenantId}" in r.path and _body_tenant_field(r)]


def ids(route: Route) -> str:
    return route.name


# ---- requests -----------------------------------------------------------------------------------


def event(tenant: str, n: int = 0) -> dict[str, Any]:
    return {
        "tenantId": tenant,
        "eventType": "RISK_CREATED",
        "source": "BACKEND_API",
        "action": "CREATE",
        "entityId": f"risk-{n}",
        "data": {"n": n},
    }


def backfill(tenant: str) -> dict[str, Any]:
    """The last hour into the default config's one destination (redis): a valid request."""
    now = datetime.now(timezone.utc)
    return {"from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat(), "destination": "redis"}


KNOWN_BODIES = {
    "EventIn": lambda t: event(t),
    "BackfillRequest": backfill,
    "BulkRequest": lambda t: {"events": [event(t, 1), event(t, 2)]},
    "StreamConfigIn": lambda t: {"tenantId": t, "enabled": True, "batchSize": 50},
}


def _strategy(route: Route) -> Any:
    """Valid requests for the route, generated from its OpenAPI operation."""
    import schemathesis  # noqa: PLC0415
    from schemathesis import GenerationMode  # noqa: PLC0415

    operation = schemathesis.openapi.from_dict(_document())["/" + route.path][route.method]
    return operation.as_strategy(generation_mode=GenerationMode.POSITIVE)


def query_for(route: Route) -> dict[str, str]:
    """The smallest valid values of the route's required query parameters (e.g. `q` of /search)."""
    if not route.required_query:
        return {}
    settings = hypothesis.settings(database=None, derandomize=True, phases=[Phase.generate, Phase.shrink])
    case = hypothesis.find(_strategy(route), lambda _: True, settings=settings)
    return {k: str(v) for k, v in (case.query or {}).items() if k in route.required_query}


def _generated_body(route: Route) -> Any:
    """A minimal valid body for a request schema this file does not know yet (a route added later)."""
    strategy = _strategy(route)
    settings = hypothesis.settings(database=None, derandomize=True, phases=[Phase.generate, Phase.shrink])
    if _body_tenant_field(route):  # the smallest body that still names a tenant somewhere
        try:
            return hypothesis.find(
                strategy, lambda c: '"tenantId"' in json.dumps(c.body), settings=settings
            ).body
        except hypothesis.errors.NoSuchExample:
            pass
    return hypothesis.find(strategy, lambda _: True, settings=settings).body


def _name_tenant(value: Any, tenant: str) -> Any:
    """Every `tenantId` in the body (at any depth) names `tenant`; a top-level one is added if documented."""
    if isinstance(value, dict):
        return {k: tenant if k == "tenantId" else _name_tenant(v, tenant) for k, v in value.items()}
    if isinstance(value, list):
        return [_name_tenant(v, tenant) for v in value]
    return value


def body_for(route: Route, tenant: str) -> Any:
    if not route.request_schema:
        return None
    known = KNOWN_BODIES.get(route.request_schema)
    if known is not None:
        return known(tenant)
    body = _name_tenant(_generated_body(route), tenant)
    props = _document()["components"]["schemas"][route.request_schema].get("properties", {})
    if isinstance(body, dict) and "tenantId" in props:
        body["tenantId"] = tenant
    return body


def path_for(route: Route, tenant: str) -> tuple[str, dict[str, str]]:
    params = {
        name: tenant if name == "tenantId" else f"probe-{name.lower()}"
        for name in PATH_PARAM.findall(route.path)
    }
    return "/" + PATH_PARAM.sub(lambda m: params[m.group(1)], route.path), params


_FUNCTIONS: dict[str, Any] = {}


async def call(
    route: Route,
    *,
    path_tenant: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """The route's registered function with exactly these headers (no default identity)."""
    if not _FUNCTIONS:
        _FUNCTIONS.update(registrations())
    assert route.name in _FUNCTIONS, (
        f"{route.name} is in the route table but not registered in function_app.py"
    )
    path, route_params = path_for(route, path_tenant)
    params = {**query_for(route), **(params or {})}
    hdrs = dict(headers or {})
    if body is not None:
        hdrs["content-type"] = "application/json"
    req = func.HttpRequest(
        method=route.method,
        url=f"http://localhost{path}",
        headers=hdrs,
        params=params,
        route_params=route_params,
        body=json.dumps(body).encode() if body is not None else b"",
    )
    resp = await _FUNCTIONS[route.name]["fn"](req, context(route.name))
    raw = resp.get_body()
    ctype = resp.headers.get("content-type") or resp.mimetype or ""
    parsed = json.loads(raw) if raw and "json" in ctype else raw
    return resp.status_code, {"content-type": ctype, **dict(resp.headers)}, parsed


def by_name(name: str) -> Route:
    return next(r for r in ROUTES if r.name == name)


async def state_of(tenant: str) -> dict[str, Any]:
    """What is stored for a tenant, read as a platform admin: events, stream config, audit trail."""
    admin = auth_headers()
    out: dict[str, Any] = {}
    _, _, listed = await call(
        by_name("list_events"), path_tenant=tenant, headers=admin, params={"limit": "1000"}
    )
    out["events"] = sorted(e["event"]["eventId"] for e in listed["events"])
    _, hdrs, config = await call(by_name("get_stream_config"), path_tenant=tenant, headers=admin)
    out["config"] = (hdrs.get("ETag"), config)
    _, _, audit = await call(
        by_name("get_audit"), path_tenant=tenant, headers=admin, params={"limit": "1000"}
    )
    out["audit"] = [i["id"] for i in audit["items"]]
    return out


def fresh_tenants() -> tuple[str, str]:
    n = uuid.uuid4().hex[:10]
    return f"tenant-a-{n}", f"tenant-b-{n}"


async def seeded_victim() -> str:
    """Tenant B with data of every kind, written as an admin, so that a leak or a change would show."""
    _, victim = fresh_tenants()
    admin = auth_headers()
    assert (await call(by_name("publish_event"), path_tenant=victim, body=event(victim, 9), headers=admin))[
        0
    ] == 201
    status, _, _ = await call(
        by_name("put_stream_config"),
        path_tenant=victim,
        headers=admin,
        body={"tenantId": victim, "enabled": True, "batchSize": 7},
    )
    assert status == 201
    return victim


GRANTS = {
    "claim": lambda t: auth_headers([t], roles=[]),
    "app-role": lambda t: auth_headers(roles=[f"Tenant.{t}"]),
}


def forged_app_service_admin() -> dict[str, str]:
    """An X-MS-CLIENT-PRINCIPAL claiming the admin role: only App Service may set it, so under
    AUTH_MODE=jwt the app must ignore it."""
    principal = {
        "auth_typ": "aad",
        "claims": [{"typ": "roles", "val": "Events.Admin"}],
        "name_typ": "name",
        "role_typ": "roles",
    }
    return {"x-ms-client-principal": base64.b64encode(json.dumps(principal).encode()).decode()}


def assert_problem(status: int, headers: dict[str, str], body: Any, expected: int, *secrets: str) -> None:
    assert status == expected, (status, body)
    assert headers["content-type"].startswith("application/problem+json")
    assert body["status"] == expected
    for s in secrets:  # `instance` echoes the caller's own path; nothing else may name the tenant
        assert s not in json.dumps({k: v for k, v in body.items() if k != "instance"}), (
            "refusal names the tenant"
        )


# ---- the matrix ---------------------------------------------------------------------------------


def test_the_matrix_covers_the_route_table() -> None:
    """Every route is registered, every protected route is tenant-scoped (so it can be isolated), and
    the known routes are all in the matrix."""
    registered = set(registrations())
    assert {r.name for r in ROUTES} <= registered
    assert not [r.name for r in PROTECTED if r not in SCOPED], "protected routes with no tenant scope"
    assert {
        "publish_event",
        "publish_events_bulk",
        "list_events",
        "get_metrics",
        "get_stream_config",
        "put_stream_config",
        "get_audit",
    } <= {r.name for r in SCOPED}


@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_no_token_is_401(route: Route) -> None:
    own, _ = fresh_tenants()
    status, headers, body = await call(route, path_tenant=own, body=body_for(route, own))
    if route.anonymous:
        assert status not in (401, 403) and status < 500, (status, body)
        return
    assert_problem(status, headers, body, 401)
    assert headers["WWW-Authenticate"].startswith("Bearer")
    # A forged App Service principal is no identity either.
    status, headers, body = await call(
        route, path_tenant=own, body=body_for(route, own), headers=forged_app_service_admin()
    )
    assert_problem(status, headers, body, 401)


@pytest.mark.parametrize("grant", sorted(GRANTS))
@pytest.mark.parametrize("route", SCOPED, ids=ids)
async def test_tenant_a_asking_for_tenant_b_is_403(route: Route, grant: str) -> None:
    own, _ = fresh_tenants()
    victim = await seeded_victim()
    before = await state_of(victim)
    token_a = {**GRANTS[grant](own), **forged_app_service_admin()}
    # B in the path and in the body (where the route has one).
    status, headers, body = await call(
        route, path_tenant=victim, body=body_for(route, victim), headers=token_a
    )
    assert_problem(status, headers, body, 403, victim)
    if "{tenantId}" in route.path and route.request_schema:
        # B in the path, A in the body: the path decides.
        status, headers, body = await call(
            route, path_tenant=victim, body=body_for(route, own), headers=token_a
        )
        assert_problem(status, headers, body, 403, victim)
    assert await state_of(victim) == before, "a refused request changed the other tenant's data"


@pytest.mark.parametrize("route", PROTECTED, ids=ids)
async def test_tenant_a_on_tenant_a_is_admitted_and_sees_nothing_of_b(route: Route) -> None:
    own, _ = fresh_tenants()
    victim = await seeded_victim()
    status, _, body = await call(
        route,
        path_tenant=own,
        body=body_for(route, own),
        headers=auth_headers([own]),
        params={"tenantId": victim},
    )  # B smuggled into the query
    assert status not in (401, 403) and status < 500, (status, body)
    if PATH_PARAM.findall(route.path) in ([], ["tenantId"]):  # nothing to look up: the request is valid
        assert 200 <= status < 300, (status, body)
    assert victim not in json.dumps(body, default=str), "the answer names another tenant"


@pytest.mark.parametrize("route", PATH_AND_BODY, ids=ids)
async def test_a_body_naming_another_tenant_than_the_path_is_refused(route: Route) -> None:
    """Granted A and B: a request on A's path whose body names B must not touch B (nor A)."""
    own, _ = fresh_tenants()
    victim = await seeded_victim()
    before = (await state_of(own), await state_of(victim))
    both = auth_headers([own, victim], roles=[])
    status, headers, body = await call(route, path_tenant=own, body=body_for(route, victim), headers=both)
    assert status in (400, 403, 422), (status, body)
    assert headers["content-type"].startswith("application/problem+json")
    assert (await state_of(own), await state_of(victim)) == before


@pytest.mark.parametrize("body_tenants", [("own", "victim"), ("victim", "own")])
async def test_bulk_with_tenants_a_and_b_is_refused_whole(body_tenants: tuple[str, str]) -> None:
    own, _ = fresh_tenants()
    victim = await seeded_victim()
    names = {"own": own, "victim": victim}
    before = await state_of(victim)
    bulk = by_name("publish_events_bulk")
    events = [event(names[t], i) for i, t in enumerate(body_tenants * 3)]
    status, headers, body = await call(
        bulk, path_tenant=own, body={"events": events}, headers=auth_headers([own])
    )
    assert_problem(status, headers, body, 403, victim)
    assert (await state_of(own))["events"] == [], "part of a refused bulk request was stored"
    assert await state_of(victim) == before
    # The same events of A alone go through: the refusal was about B, not the body.
    ok = [e for e in events if e["tenantId"] == own]
    status, _, body = await call(bulk, path_tenant=own, body={"events": ok}, headers=auth_headers([own]))
    assert status == 200 and body["accepted"] == len(ok)
    assert len((await state_of(own))["events"]) == len(ok)


async def test_single_event_for_b_stores_nothing() -> None:
    own, _ = fresh_tenants()
    victim = await seeded_victim()
    before = await state_of(victim)
    status, headers, body = await call(
        by_name("publish_event"), path_tenant=own, body=event(victim), headers=auth_headers([own])
    )
    assert_problem(status, headers, body, 403, victim)
    assert await state_of(victim) == before


SERVICE_WIDE = {"instanceMemory", "kafka", "redis", "cosmos", "streamProcessing"}


@pytest.mark.parametrize("grant", sorted(GRANTS))
async def test_service_wide_figures_go_to_admins_only(grant: str) -> None:
    """GET /metrics/{tenantId}: a tenant's caller gets its tenant's figures; the whole service's (all
    tenants' stream processing, Redis memory, Kafka lag, the instance's memory) only an admin gets."""
    own, victim = fresh_tenants()
    route = by_name("get_metrics")
    for headers in (GRANTS[grant](own), auth_headers([own, victim], roles=[])):
        status, _, body = await call(route, path_tenant=own, headers=headers)
        assert status == 200, body
        assert "service" not in body, "service-wide figures answered to a tenant's caller"
        assert "memory" not in body["alerts"]["conditions"] and "memory" not in body["alerts"]["firing"]
        assert {"errorRate", "processingDelay", "failingDestination"} <= set(body["alerts"]["conditions"])
        assert "windows" in body and "totals" in body
    status, _, body = await call(route, path_tenant=own, headers=auth_headers())
    assert status == 200 and SERVICE_WIDE <= set(body["service"]), body
    assert "memory" in body["alerts"]["conditions"]
