"""Identity, tenant isolation, rate limit and audit through the one request adapter, with real Redis
and Azurite behind it: every route, every cross-tenant attempt refused."""
from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable

import orjson
import pytest

from shared.api.routes import ROUTES, Route
from shared.app.services import reset_services
from shared.core.settings import Settings, get_settings
from shared.http.adapter import handle
from shared.http.types import ApiRequest, ApiResponse, Headers
from shared.security.identity import mint_dev_token

DEV_KEY = "dev-only-" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_port: int, storage_connection_string: str) -> Callable[..., None]:
    def apply(**extra: str) -> None:
        values = {
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port),
            "STORAGE_CONNECTION_STRING": storage_connection_string,
            "STREAM_CONFIG_TABLE": "cfg" + uuid.uuid4().hex[:8], "AUDIT_TABLE": "aud" + uuid.uuid4().hex[:8],
            "AUTH_MODE": "jwt", "AUTH_DEV_SIGNING_KEY": DEV_KEY,
            **extra,
        }
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    apply()
    return apply


@pytest.fixture
async def app(env: Callable[..., None]) -> AsyncIterator[None]:
    yield
    await reset_services()


def tenants() -> tuple[str, str]:
    n = uuid.uuid4().hex[:8]
    return f"own-{n}", f"foreign-{n}"


def token(tenant_list: list[str] | None = None, roles: list[str] | None = None, subject: str = "svc-a") -> str:
    return mint_dev_token(get_settings(), subject, tenants=tenant_list, roles=roles, name=subject)


def event(tenant: str, n: int = 0) -> dict[str, Any]:
    return {"tenantId": tenant, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE",
            "entityId": f"risk-{n}", "data": {"n": n}}


def request(route: Route, tenant: str, bearer: str | None, other: str | None = None,
            job_id: str = "bf-0000000000000-00000000") -> ApiRequest:
    path = "/" + route.path.replace("{tenantId}", tenant).replace("{jobId}", job_id)
    body: Any = None
    if route.name == "publish_event":
        body = event(tenant)
    elif route.name == "publish_events_bulk":
        # The foreign tenant hides behind a granted one when `other` is given.
        body = {"events": [event(other, 1), event(tenant, 2)] if other else [event(tenant, 1)]}
    elif route.name == "put_stream_config":
        body = {"enabled": True, "batchSize": 50}
    elif route.name == "replay_deadletters":
        body = {}  # replay everything not yet replayed
    elif route.name == "start_backfill":  # the last hour into the default config's destination (redis)
        now = datetime.now(timezone.utc)
        body = {"from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat(), "destination": "redis"}
    headers = {"content-type": "application/json"} if body is not None else {}
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    route_params = {"tenantId": tenant} if "{tenantId}" in route.path else {}
    if "{jobId}" in route.path:
        route_params["jobId"] = job_id
    query = {"q": "vendor access"} if route.name == "search_events" else {}
    return ApiRequest(route.method, path, Headers(headers), query, route_params,
                      orjson.dumps(body) if body is not None else b"")


def handler(route: Route) -> Any:
    return route.handler


def problem(resp: ApiResponse) -> dict[str, Any]:
    assert resp.media_type == "application/problem+json"
    return orjson.loads(resp.body)


PROTECTED = [r for r in ROUTES if not r.anonymous]


def test_every_route_but_health_and_openapi_is_protected() -> None:
    assert {r.name for r in ROUTES if r.anonymous} == {"health", "openapi", "not_matched"}
    assert {"publish_event", "publish_events_bulk", "list_events", "get_metrics", "get_stream_config",
            "put_stream_config", "get_audit"} <= {r.name for r in PROTECTED}


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: r.name)
async def test_no_identity_is_401(route: Route, app: None) -> None:
    own, _ = tenants()
    for bearer in (None, "not-a-token", mint_dev_token(Settings.model_validate({
            "AUTH_DEV_SIGNING_KEY": "another-key-" + "x" * 40}), "svc", tenants=[own])):
        resp = await handle(request(route, own, bearer), route.handler)
        assert resp.status == 401, resp.body
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert problem(resp)["detail"] == "A valid caller identity is required."


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: r.name)
async def test_cross_tenant_is_403(route: Route, app: None) -> None:
    own, foreign = tenants()
    bearer = token([own])
    job_id = "bf-0000000000000-00000000"
    if "{jobId}" in route.path:  # a job of the granted tenant, so that its own call succeeds
        start = next(r for r in ROUTES if r.name == "start_backfill")
        job_id = orjson.loads((await handle(request(start, own, bearer), start.handler)).body)["jobId"]
    resp = await handle(request(route, foreign, bearer, job_id=job_id), route.handler)
    assert resp.status == 403, resp.body
    assert foreign not in problem(resp)["detail"]
    ok = await handle(request(route, own, bearer, job_id=job_id), route.handler)
    assert ok.status in (200, 201, route.success), ok.body


async def test_bulk_with_one_foreign_event_is_refused_whole(app: None) -> None:
    own, foreign = tenants()
    bearer = token([own])
    bulk = next(r for r in ROUTES if r.name == "publish_events_bulk")
    listing = next(r for r in ROUTES if r.name == "list_events")
    resp = await handle(request(bulk, own, bearer, other=foreign), bulk.handler)
    assert resp.status == 403
    # Nothing of the request was written, not even the granted tenant's event.
    listed = await handle(request(listing, own, bearer), listing.handler)
    assert orjson.loads(listed.body)["count"] == 0


async def test_role_grants_and_admin(app: None) -> None:
    own, foreign = tenants()
    listing = next(r for r in ROUTES if r.name == "list_events")
    by_role = await handle(request(listing, own, token(roles=[f"Tenant.{own}"])), listing.handler)
    admin = await handle(request(listing, foreign, token(roles=["Events.Admin"])), listing.handler)
    assert (by_role.status, admin.status) == (200, 200)


async def test_public_routes_need_no_identity(app: None) -> None:
    from shared.api.routes import not_matched, openapi

    doc = await handle(ApiRequest("GET", "/openapi.json", Headers({}), {}, {}), openapi)
    assert doc.status == 200 and "bearer" in orjson.loads(doc.body)["components"]["securitySchemes"]
    missing = await handle(ApiRequest("GET", "/nope", Headers({}), {}, {}), not_matched)
    assert missing.status == 404


async def test_rate_limit_answers_429_with_retry_after(env: Callable[..., None], app: None) -> None:
    env(RATE_LIMIT_EVENTS_PER_SECOND="1", RATE_LIMIT_BURST="3")
    own, _ = tenants()
    bearer = token([own])
    bulk = next(r for r in ROUTES if r.name == "publish_events_bulk")
    single = next(r for r in ROUTES if r.name == "publish_event")
    req = request(bulk, own, bearer)
    req.body = orjson.dumps({"events": [event(own, i) for i in range(3)]})  # costs 3: the whole burst
    assert (await handle(req, bulk.handler)).status == 200
    refused = await handle(request(single, own, bearer), single.handler)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert problem(refused)["status"] == 429


async def test_stream_config_change_is_audited_and_readable(app: None) -> None:
    own, foreign = tenants()
    bearer = token([own], subject="ops-1")
    put = next(r for r in ROUTES if r.name == "put_stream_config")
    audit = next(r for r in ROUTES if r.name == "get_audit")
    first = request(put, own, bearer)
    assert (await handle(first, put.handler)).status == 201
    second = request(put, own, bearer)
    second.body = orjson.dumps({"enabled": False, "batchSize": 10})
    assert (await handle(second, put.handler)).status == 200
    resp = await handle(request(audit, own, bearer), audit.handler)
    body = orjson.loads(resp.body)
    assert resp.status == 200 and body["tenantId"] == own
    newest, oldest = body["items"]
    assert (newest["actor"], newest["action"], newest["target"]) == ("ops-1", "stream-config.put",
                                                                      f"stream-config/{own}")
    assert newest["before"]["enabled"] is True and newest["after"]["enabled"] is False
    assert oldest["before"] is None and oldest["correlationId"] == first.correlation_id
    # Another tenant's trail is closed to this caller and empty of this tenant's records.
    assert (await handle(request(audit, foreign, bearer), audit.handler)).status == 403
    admin = await handle(request(audit, foreign, token(roles=["Events.Admin"])), audit.handler)
    assert orjson.loads(admin.body)["items"] == []


async def test_bad_continuation_is_400(app: None) -> None:
    own, _ = tenants()
    audit = next(r for r in ROUTES if r.name == "get_audit")
    req = request(audit, own, token([own]))
    req.query = {"continuation": "x' or true"}
    resp = await handle(req, audit.handler)
    assert resp.status == 400 and problem(resp)["errors"][0]["field"] == "continuation"


async def test_malformed_tenant_is_403_for_others_and_400_for_admins(app: None) -> None:
    own, _ = tenants()
    listing = next(r for r in ROUTES if r.name == "list_events")
    assert (await handle(request(listing, "Not_A_Tenant", token([own])), listing.handler)).status == 403
    admin = await handle(request(listing, "Not_A_Tenant", token(roles=["Events.Admin"])), listing.handler)
    assert admin.status == 400 and problem(admin)["errors"][0]["field"] == "tenantId"


# A bad AUTH_* setting refuses the protected routes only: the authenticator is built where HTTP needs
# it, not with the service container the change feed, timers, queues and /health share (issue 17).
BAD_AUTH = {
    "issuer-empty": {"AUTH_ISSUER": ""},
    "audience-blank": {"AUTH_AUDIENCE": " , "},
    "mode-unknown": {"AUTH_MODE": "jwt+oops"},
    "leeway-not-a-number": {"AUTH_LEEWAY_SECONDS": "one minute"},
    "dev-key-too-short": {"AUTH_DEV_SIGNING_KEY": "short"},
}


@pytest.mark.parametrize("bad", BAD_AUTH.values(), ids=list(BAD_AUTH))
async def test_bad_auth_settings_answer_503_on_protected_routes_and_nothing_else_stops(
        bad: dict[str, str], env: Callable[..., None], app: None, caplog: pytest.LogCaptureFixture) -> None:
    from shared.app.jobs import on_change_batch
    from shared.app.services import get_services
    from shared.changefeed.rules import Kind
    from shared.destinations.redis_streams import stream_key

    env(**bad)
    own, _ = tenants()
    for route in PROTECTED:
        for bearer in (None, "not-a-token"):
            resp = await handle(request(route, own, bearer), route.handler)
            assert resp.status == 503, (route.name, resp.status, resp.body)
            assert resp.headers["Retry-After"] == "60"
            body = problem(resp)
            assert body["status"] == 503 and "misconfigured" in body["detail"] and "AUTH_*" in body["detail"]
            assert all(v not in body["detail"] for v in bad.values() if v.strip())
    # Logged once, at ERROR, with the setting named (not per request).
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "misconfigured" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert any(name in errors[0].getMessage() for name in bad), errors[0].getMessage()
    # /health and change capture run on the same service container.
    health = next(r for r in ROUTES if r.name == "health")
    ok = await handle(ApiRequest("GET", "/health", Headers({}), {}, {}), health.handler)
    assert ok.status == 200, ok.body
    doc = {"id": "r1", "tenantId": own, "status": "open", "createdAt": "2026-11-01T00:00:00Z",
           "updatedAt": "2026-11-01T00:00:00Z", "_lsn": 1, "_ts": 1_790_000_000, "_etag": '"1"'}
    out = await on_change_batch(Kind.RISKS, [doc], retry_count=0, max_retry_count=5)
    assert out.published == 1
    entries = await get_services().redis.xrange(stream_key(own))
    assert [orjson.loads(f[b"e"])["eventType"] for _, f in entries] == ["RISK_CREATED"]


async def test_fixed_auth_settings_serve_again(env: Callable[..., None], app: None) -> None:
    """The refusal belongs to the settings object: new settings (a restart in Azure) build a new one."""
    listing = next(r for r in ROUTES if r.name == "list_events")
    own, _ = tenants()
    env(AUTH_AUDIENCE="")
    assert (await handle(request(listing, own, None), listing.handler)).status == 503
    await reset_services()
    env(AUTH_AUDIENCE="api://grc-events")  # corrected: a new Settings object
    assert (await handle(request(listing, own, token([own])), listing.handler)).status == 200
