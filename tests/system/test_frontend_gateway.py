"""README 'From a browser frontend': the original description's frontend example (`fetch` of the relative
path `/api/event-streaming/events`) works through a same-origin gateway that maps that prefix onto the
app and adds the function key; the app itself answers no CORS, so a page on another origin cannot call
it directly (nor hold its function key).

The gateway here is a few lines of aiohttp standing in for whatever fronts the platform's web app
(API Management, Front Door, a backend-for-frontend, a dev server's proxy): it strips the prefix, adds
`x-functions-key` and passes the user's `Authorization` through. The app runs in the local runner with
function keys enforced (`--function-key`), as the host enforces them in Azure.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.system.harness import App, own_stack_and_app, tenant

FUNCTION_KEY = "gateway-test-function-key"
PREFIX = "/api/event-streaming"
ORIGIN = "https://grc.example.com"  # the platform's web app, on another origin than the Function App
# The body of the original description's "Frontend Integration" example, as the page sends it.
FRONTEND_EVENT = {"eventType": "USER_ACTION", "source": "FRONTEND_APP", "action": "UPDATE",
                  "entityId": "risk-42", "entityType": "risk",
                  "data": {"action": "risk_updated", "changes": {"score": [3, 4]}}}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    work: Path = tmp_path_factory.mktemp("frontend-gateway")
    with own_stack_and_app(work, ("redis", "azurite"), "--function-key", FUNCTION_KEY) as (_, app):
        yield app


@pytest.fixture
async def gateway(keyed: App) -> AsyncIterator[str]:
    """`{PREFIX}/{path}` -> the app's `/{path}`, the function key added, the caller's headers kept."""
    client = httpx.AsyncClient(base_url=keyed.base, timeout=30)

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type", "x-correlation-id")}
        headers["x-functions-key"] = FUNCTION_KEY
        r = await client.request(request.method, "/" + request.match_info["tail"], params=request.query,
                                 headers=headers, content=await request.read())
        return web.Response(status=r.status_code, body=r.content,
                            headers={"Content-Type": r.headers.get("content-type", "application/json")})

    server = web.Application()
    server.router.add_route("*", PREFIX + "/{tail:.*}", forward)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await client.aclose()


async def test_the_frontend_example_works_verbatim_through_a_same_origin_gateway(keyed: App,
                                                                                 gateway: str) -> None:
    t = tenant("front")
    user = keyed.auth(tenants=[t])  # the signed-in user's token, granted the tenant
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as page:
        sent = await page.post(f"{PREFIX}/events", headers={"Content-Type": "application/json", **user},
                               content=json.dumps({"tenantId": t, **FRONTEND_EVENT}))
        assert sent.status_code == 201, sent.text
        event_id = sent.json()["eventId"]
        got = await page.get(f"{PREFIX}/events/{t}", headers=user)
        assert got.status_code == 200, got.text
        # Its one event (the monitor may add a SYSTEM_PERFORMANCE one at a minute's turn).
        [stored] = [e["event"] for e in got.json()["events"] if e["event"]["eventType"] == "USER_ACTION"]
        assert stored["eventId"] == event_id and stored["data"] == FRONTEND_EVENT["data"], stored
        # The gateway adds the key, not an identity: without the user's token the app says 401.
        anonymous = await page.post(f"{PREFIX}/events", headers={"Content-Type": "application/json"},
                                    content=json.dumps({"tenantId": t, **FRONTEND_EVENT}))
        assert anonymous.status_code == 401, anonymous.text
        other = keyed.auth(tenants=[tenant("other")])  # a user of another tenant
        foreign = await page.post(f"{PREFIX}/events", headers={"Content-Type": "application/json", **other},
                                  content=json.dumps({"tenantId": t, **FRONTEND_EVENT}))
        assert foreign.status_code == 403, foreign.text


def test_a_page_on_another_origin_gets_no_cors_answer_and_no_way_in_without_the_key(keyed: App) -> None:
    t = tenant("cors")
    # The browser's preflight for a JSON POST with a bearer token: no Access-Control-Allow-Origin, so
    # the browser never sends the request.
    preflight = keyed.client.options("/events", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert not any(h.lower().startswith("access-control-") for h in preflight.headers), preflight.headers
    assert preflight.status_code in (401, 404, 405), preflight.status_code
    # A simple request the browser would send without a preflight: answered, but with no CORS header
    # the page cannot read it; without the function key it is refused before the app.
    direct = keyed.client.get(f"/events/{t}", headers={"Origin": ORIGIN, **keyed.auth(tenants=[t])})
    assert direct.status_code == 401, direct.text
    assert not any(h.lower().startswith("access-control-") for h in direct.headers), direct.headers
    keyed_call = keyed.client.get(f"/events/{t}", headers={
        "Origin": ORIGIN, "x-functions-key": FUNCTION_KEY, **keyed.auth(tenants=[t])})
    assert keyed_call.status_code == 200, keyed_call.text
    assert not any(h.lower().startswith("access-control-") for h in keyed_call.headers), keyed_call.headers
    # Nor does the deployment turn on the platform's CORS (siteConfig.cors) in front of the app.
    infra = Path(__file__).resolve().parents[2] / "infra"
    templates = sorted(infra.rglob("*.bicep"))
    assert templates and not [p.name for p in templates if "cors" in p.read_text().lower()], templates
