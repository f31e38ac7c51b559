"""function_app.py through its real registrations, with real func.HttpRequest objects."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import function_app
from shared.api.routes import ROUTES
from tests.functions_client import call, context, registrations

pytestmark = pytest.mark.usefixtures("app_services")


def test_every_route_is_one_function_with_its_method_and_auth_level() -> None:
    regs = registrations()
    for r in ROUTES:
        reg = regs[r.name]
        assert reg["type"] == "httpTrigger"
        assert reg["route"] == r.path
        assert reg["methods"] == list(r.methods)
        assert reg["authLevel"] == ("ANONYMOUS" if r.anonymous else "FUNCTION"), r.name
    assert regs["not_matched"]["route"] == "{*path}" and regs["not_matched"]["authLevel"] == "ANONYMOUS"
    assert {"health", "openapi", "not_matched"} == {r.name for r in ROUTES if r.anonymous}
    http = {name for name, reg in regs.items() if reg["type"] == "httpTrigger"}
    assert http == {r.name for r in ROUTES}  # every HTTP function comes from the table, and only from it


def test_host_json_prefix_and_bundle() -> None:
    host = json.loads((Path(function_app.__file__).parent / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"


async def test_publish_then_read_back_through_registered_functions() -> None:
    regs = registrations()
    event = {"tenantId": "fa-tenant", "eventType": "RISK_CREATED", "source": "FRONTEND_APP", "action": "CREATE",
             "entityId": "risk-1", "entityType": "risk", "data": {"score": 12}}
    resp = await regs["publish_event"]["fn"](call("publish_event", "POST", "/events", event,
                                                   headers={"x-correlation-id": "corr-1"}), context("publish_event"))
    assert resp.status_code == 201
    body = json.loads(resp.get_body())
    assert body["status"] == "accepted" and body["correlationId"] == "corr-1"
    assert body["destinations"][0]["destination"] == "redis" and body["destinations"][0]["status"] == "delivered"
    assert resp.headers["x-correlation-id"] == "corr-1"

    resp = await regs["list_events"]["fn"](call("list_events", "GET", "/events/fa-tenant",
                                                 route={"tenantId": "fa-tenant"}, params={"limit": "5"}), context("list_events"))
    listed = json.loads(resp.get_body())
    assert resp.status_code == 200
    assert listed["events"][0]["event"]["eventId"] == body["eventId"]
    assert listed["events"][0]["event"]["correlationId"] == "corr-1"


async def test_bad_event_gets_problem_details_with_field_paths() -> None:
    regs = registrations()
    resp = await regs["publish_event"]["fn"](call("publish_event", "POST", "/events",
                                                   {"tenantId": "X", "eventType": "NOPE", "data": []}), context("publish_event"))
    assert resp.status_code == 400
    assert resp.mimetype == "application/problem+json"
    problem = json.loads(resp.get_body())
    fields = {e["field"] for e in problem["errors"]}
    assert {"tenantId", "eventType", "source", "action", "data"} <= fields
    assert all(e["pointer"].startswith("/") for e in problem["errors"])


async def test_fallback_answers_405_with_allow_and_404() -> None:
    regs = registrations()
    resp = await regs["not_matched"]["fn"](call("not_matched", "DELETE", "/stream-config/t-1"), context("not_matched"))
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "PUT"}
    resp = await regs["not_matched"]["fn"](call("not_matched", "GET", "/nowhere"), context("not_matched"))
    assert resp.status_code == 404 and json.loads(resp.get_body())["status"] == 404


async def test_openapi_documents_every_route() -> None:
    regs = registrations()
    resp = await regs["openapi"]["fn"](call("openapi", "GET", "/openapi.json"), context("openapi"))
    doc = json.loads(resp.get_body())
    for r in ROUTES:
        if r.documented:
            assert r.method.lower() in doc["paths"]["/" + r.path], r.name
    assert "/{*path}" not in doc["paths"]
    assert "EventIn" in doc["components"]["schemas"]
