"""Tenant ids are matched whole wherever they enter: body, path, token (issue 12, item 1)."""
from __future__ import annotations

import pytest

from tests.system.harness import App, tenant

# Every route with a {tenantId} path parameter, as a client calls it (GET unless a body is given).
TENANT_ROUTES = [
    ("GET", "/events/{t}"), ("GET", "/events/{t}/history"), ("GET", "/deadletters/{t}"),
    ("GET", "/metrics/{t}"), ("GET", "/stream-config/{t}"), ("GET", "/audit/{t}"), ("GET", "/search/{t}?q=risk"),
    ("PUT", "/stream-config/{t}"), ("POST", "/deadletters/{t}/replay"),
    ("POST", "/backfills/{t}"), ("GET", "/backfills/{t}"), ("GET", "/backfills/{t}/bf-0000000000000-00000000"),
    ("DELETE", "/backfills/{t}/bf-0000000000000-00000000"),
]
SUFFIXES = ["%0A", "%0D%0A", "%00", "%20", "%09"]


def _event(t: str) -> dict[str, object]:
    return {"tenantId": t, "eventType": "RISK_CREATED", "source": "FRONTEND_APP", "action": "CREATE", "data": {}}


def _assert_problem(r: object, status: int, pointer: str | None = None) -> None:
    assert r.status_code == status, (r.status_code, r.text)  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    if pointer is not None:
        assert pointer in [e["pointer"] for e in r.json().get("errors", [])], r.text  # type: ignore[attr-defined]


def test_a_body_tenant_with_a_final_newline_is_refused_and_nothing_is_stored(app: App) -> None:
    t = tenant()
    r = app.post("/events", json=_event(t + "\n"))
    _assert_problem(r, 400, "/tenantId")
    bulk = app.post("/events/bulk", json={"events": [_event(t), _event(t + "\n"), _event("\n" + t)]})
    assert bulk.status_code == 200, bulk.text
    assert [x["status"] for x in bulk.json()["results"]] == ["accepted", "rejected", "rejected"]
    listed = app.get(f"/events/{t}", params={"source": "FRONTEND_APP"}).json()  # not the monitor's own
    assert listed["count"] == 1, listed


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_path_tenant_is_matched_whole_on_every_route(app: App, suffix: str) -> None:
    t = tenant()
    for method, template in TENANT_ROUTES:
        path = template.format(t=t + suffix)
        kw = {"json": {}} if method in ("PUT", "POST") else {}
        r = app.request(method, path, **kw)
        _assert_problem(r, 400, "#/path/tenantId")
    # Nothing was written for the tenant the padded id resembles.
    assert app.get(f"/stream-config/{t}").json()["isDefault"] is True


def test_a_granted_tenant_with_a_newline_grants_nothing(app: App) -> None:
    t, other = tenant(), tenant()
    for claim in ([t + "\n"], [f"{other} {t}"], [f"{t}\t"]):
        r = app.get(f"/events/{t}", tenants=claim, roles=[])
        _assert_problem(r, 403)
    # A role item carrying a second role is one (invalid) role, not two.
    r = app.get(f"/events/{other}", tenants=[], roles=[f"Tenant.{t} Events.Admin"])
    _assert_problem(r, 403)
    # The well-formed grant works, and a space-separated string claim still lists several tenants.
    assert app.get(f"/events/{t}", tenants=[t], roles=[]).status_code == 200
    as_string = app.auth(tenants=f"{other} {t}", roles=[])  # type: ignore[arg-type] - a string claim
    assert app.get(f"/events/{t}", headers=as_string, anonymous=True).status_code == 200
    newline_string = app.auth(tenants=f"{other}\n{t}", roles=[])  # type: ignore[arg-type]
    _assert_problem(app.get(f"/events/{t}", headers=newline_string, anonymous=True), 403)
