"""Tenant isolation through the running app, from outside (README "API" and "Security";
docs/security.md "2. Tenant grants").

Promised: a caller granted tenant A gets 403 on any read or write for tenant B, with the same
generic problem detail whether B exists or not (nothing of B's in the answer); a bulk naming a tenant
not granted is refused whole and nothing of it is stored.

Every operation of `GET /openapi.json` whose path has `{tenantId}` is called with A's token on B's
path (the operations are read from the document, so a new route fails here until it has a request),
each with a request that is valid for a granted caller (the same requests on A's own path succeed at
the end of the test), so a missing check answers 2xx, 404 or 409, never 403. The two operations scoped
by the body (`POST /events`, `POST /events/bulk`) are called with bodies naming B. B and A each have
events, a stream config (hence an audit record) and a completed backfill job beforehand; read back as
admin, nothing of theirs has changed afterwards. Both ways of granting A are tried: the `tenants`
claim and the `Tenant.A` app role.

No operation with `{tenantId}` is admin-only. One value of a path is: `GET /deadletters/_unmapped`
(dead letters naming no valid tenant) answers admins only, and a tenant's caller gets 403 there.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import httpx

from tests.system.harness import App, tenant, wait_for

SOURCE = "FRONTEND_APP"  # the monitor's SYSTEM_* events come from elsewhere: reads filter on this one
CONFIG = {"destinations": [{"type": "redis"}, {"type": "analytics"}, {"type": "vector"}]}
FORBIDDEN = "The caller is not granted access to this tenant."

Request = tuple[str, str, dict[str, str], Any]  # method, path, query, JSON body (None: no body)


def _event(t: str, n: int, marker: str) -> dict[str, Any]:
    return {"tenantId": t, "eventType": "RISK_CREATED", "source": SOURCE, "action": "CREATE",
            "entityType": "risk", "entityId": f"risk-{marker}-{n}", "data": {"title": f"ransomware {marker}"}}


def _backfill_body() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat(), "destination": "redis"}


# operationId -> (the request for tenant t and its backfill job, the statuses a granted caller gets).
# cancel_backfill on a completed job is 409 for a granted caller: not 403 either.
OPERATIONS: dict[str, tuple[Callable[[str, str], Request], set[int]]] = {
    "list_events": (lambda t, job: ("GET", f"/events/{t}", {"limit": "1000"}, None), {200}),
    "event_history": (lambda t, job: ("GET", f"/events/{t}/history", {}, None), {200}),
    "list_deadletters": (lambda t, job: ("GET", f"/deadletters/{t}", {}, None), {200}),
    "replay_deadletters": (lambda t, job: ("POST", f"/deadletters/{t}/replay", {}, {}), {200}),
    "start_backfill": (lambda t, job: ("POST", f"/backfills/{t}", {}, _backfill_body()), {202}),
    "list_backfills": (lambda t, job: ("GET", f"/backfills/{t}", {}, None), {200}),
    "get_backfill": (lambda t, job: ("GET", f"/backfills/{t}/{job}", {}, None), {200}),
    "cancel_backfill": (lambda t, job: ("DELETE", f"/backfills/{t}/{job}", {}, None), {409}),
    "get_metrics": (lambda t, job: ("GET", f"/metrics/{t}", {}, None), {200}),
    "get_stream_config": (lambda t, job: ("GET", f"/stream-config/{t}", {}, None), {200}),
    "put_stream_config": (lambda t, job: ("PUT", f"/stream-config/{t}", {}, {**CONFIG, "tenantId": t}), {200}),
    "get_audit": (lambda t, job: ("GET", f"/audit/{t}", {}, None), {200}),
    "search_events": (lambda t, job: ("GET", f"/search/{t}", {"q": "ransomware"}, None), {200}),
}
# Protected operations scoped by the tenants their body names, not by the path.
BODY_SCOPED = {"publish_event", "publish_events_bulk"}


def _operations(app: App) -> dict[str, tuple[str, str]]:
    """operationId -> (method, path) of every operation in the running app's /openapi.json."""
    r = app.get("/openapi.json", anonymous=True)
    assert r.status_code == 200, r.text
    return {op["operationId"]: (method.upper(), path) for path, item in r.json()["paths"].items()
            for method, op in item.items() if isinstance(op, dict) and "operationId" in op}


def _call(app: App, req: Request, **who: Any) -> httpx.Response:
    method, path, query, body = req
    kw: dict[str, Any] = {"params": query}
    if body is not None:
        kw["json"] = body
    return app.request(method, path, **kw, **who)


def _assert_forbidden(r: httpx.Response, foreign: str, secrets: list[str], what: str) -> None:
    """403 problem details with the generic detail, and nothing of the foreign tenant's in it."""
    assert r.status_code == 403, (what, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), (what, r.headers)
    problem = r.json()
    assert (problem["status"], problem["title"], problem["detail"]) == (403, "Forbidden", FORBIDDEN), (what, problem)
    # `instance` echoes the path the caller sent (it may hold B's id, which the caller wrote itself);
    # nothing else may name B or hold any of B's data.
    assert problem["instance"] == r.request.url.path, (what, problem)
    rest = json.dumps({k: v for k, v in problem.items() if k != "instance"}) + str(dict(r.headers))
    assert not [s for s in [foreign, *secrets] if s in rest], (what, problem, r.headers)
    assert not {"etag", "location"} & set(r.headers), (what, r.headers)  # no version or job of B's


def _setup(app: App, t: str) -> str:
    """A tenant with a stream config, three events and a completed backfill job; the job's id."""
    r = app.put(f"/stream-config/{t}", json=CONFIG)
    assert r.status_code == 201, r.text
    r = app.post("/events/bulk", json={"events": [_event(t, n, t) for n in range(3)]})
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    r = app.post(f"/backfills/{t}", json=_backfill_body())
    assert r.status_code == 202, r.text
    job = r.json()["jobId"]
    wait_for(lambda: app.get(f"/backfills/{t}/{job}").json()["state"] == "completed", 90, 0.5,
             f"backfill {job} of {t} completed")
    return job


def _state(app: App, t: str) -> dict[str, Any]:
    """What an admin reads of a tenant: its events, stream config (and ETag), audit, jobs, dead letters."""
    events = app.get(f"/events/{t}", params={"limit": "1000", "source": SOURCE})
    config = app.get(f"/stream-config/{t}")
    reads = {"events": events, "config": config, "audit": app.get(f"/audit/{t}"),
             "backfills": app.get(f"/backfills/{t}"), "deadletters": app.get(f"/deadletters/{t}")}
    for name, r in reads.items():
        assert r.status_code == 200, (name, r.status_code, r.text)
    return {**{name: r.json() for name, r in reads.items()}, "etag": config.headers["etag"]}


def test_a_tenant_caller_gets_403_on_every_operation_for_another_tenant(app: App) -> None:
    a, b = tenant("iso-a"), tenant("iso-b")
    jobs = {a: _setup(app, a), b: _setup(app, b)}
    before = {a: _state(app, a), b: _state(app, b)}
    assert before[b]["events"]["count"] == 3 and before[b]["audit"]["items"], before[b]
    secrets = [jobs[b], f"ransomware {b}", before[b]["etag"]]

    operations = _operations(app)
    tenant_ops = {op for op, (_, path) in operations.items() if "{tenantId}" in path}
    assert tenant_ops == set(OPERATIONS), f"operations with {{tenantId}} and no request here: {tenant_ops ^ set(OPERATIONS)}"
    assert BODY_SCOPED <= set(operations)
    for op in tenant_ops:  # the request matches the document's method and path
        method, path = OPERATIONS[op][0]("{tenantId}", "{jobId}")[:2]
        assert (method, path) == operations[op], (op, operations[op])

    callers = {"tenants claim": {"tenants": [a]}, "Tenant.A app role": {"roles": [f"Tenant.{a}"]}}
    for how, who in callers.items():
        for op, (request, _) in sorted(OPERATIONS.items()):
            _assert_forbidden(_call(app, request(b, jobs[b]), **who), b, secrets, f"{how}: {op} on B's path")
        # The tenant's own id in the body of a write on B's path changes nothing.
        put = ("PUT", f"/stream-config/{b}", {}, {**CONFIG, "tenantId": a})
        _assert_forbidden(_call(app, put, **who), b, secrets, f"{how}: PUT B's config naming A")
        # Body-scoped writes naming B.
        _assert_forbidden(app.post("/events", json=_event(b, 9, "foreign"), **who), b, secrets, f"{how}: POST /events")
        _assert_forbidden(app.post("/events/bulk", json={"events": [_event(b, 9, "foreign")]}, **who), b, secrets,
                          f"{how}: bulk naming only B")
        # A bulk of A's and B's events is refused whole: A's own events are not stored either.
        mixed = [_event(a, 7, "mixed"), _event(b, 8, "mixed"), _event(a, 9, "mixed")]
        _assert_forbidden(app.post("/events/bulk", json={"events": mixed}, **who), b, secrets, f"{how}: bulk of A+B")
        # The admin-only partition of dead letters that name no valid tenant.
        r = app.get("/deadletters/_unmapped", **who)
        assert r.status_code == 403 and r.json()["detail"] == FORBIDDEN, (how, r.text)

    # A config body naming B on A's own path is refused (the path scopes the config) and writes nothing.
    r = app.put(f"/stream-config/{a}", tenants=[a], json={**CONFIG, "tenantId": b})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), r.text
    assert [e["pointer"] for e in r.json()["errors"]] == ["/tenantId"], r.text

    # Read as admin: nothing of either tenant changed.
    after = {a: _state(app, a), b: _state(app, b)}
    for t in (a, b):
        for part in before[t]:
            assert after[t][part] == before[t][part], (t, part, before[t][part], after[t][part])

    # The same requests on A's own path are valid: a missing check on B's path would have answered these.
    for op, (request, granted) in sorted(OPERATIONS.items()):
        r = _call(app, request(a, jobs[a]), tenants=[a])
        assert r.status_code in granted, (op, r.status_code, r.text)
        assert b not in r.text, (op, r.text)
    r = app.post("/events/bulk", tenants=[a], json={"events": [_event(a, 7, "mixed"), _event(a, 9, "mixed")]})
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
