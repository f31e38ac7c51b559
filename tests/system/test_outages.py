"""A dependency down: every route answers 503 with Retry-After (problem details), or serves what it
can without it; never a 500.

Redis, then Azurite, of the breakable stack is stopped by PID; each operation of the app's own
/openapi.json is called (a route added later is in the list without editing this test, and must
get an entry in EXPECTED). /health keeps its own document as the 503 body, with Retry-After.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from tests.system.harness import App, Stack, tenant

# operation -> the status while (Redis down, Azurite down). 503 = the route needs that dependency.
EXPECTED: dict[tuple[str, str], tuple[int, int]] = {
    ("GET", "/health"): (503, 503),
    ("GET", "/openapi.json"): (200, 200),
    ("POST", "/events"): (201, 503),  # Redis down: the Redis delivery is parked, the event is safe
    ("POST", "/events/bulk"): (200, 503),
    ("GET", "/events/{tenantId}"): (503, 200),  # recent events live in Redis
    ("GET", "/events/{tenantId}/history"): (200, 503),  # history lives in the analytics table
    ("GET", "/deadletters/{tenantId}"): (200, 503),
    ("POST", "/deadletters/{tenantId}/replay"): (200, 503),
    ("GET", "/metrics/{tenantId}"): (503, 200),
    ("GET", "/stream-config/{tenantId}"): (200, 503),
    ("PUT", "/stream-config/{tenantId}"): (201, 503),  # a new tenant each time: created
    ("GET", "/audit/{tenantId}"): (200, 503),
    ("GET", "/search/{tenantId}"): (200, 200),  # the local vector index is a file
    ("POST", "/backfills/{tenantId}"): (202, 503),  # jobs, slots and chunks live in Tables and Queues
    ("GET", "/backfills/{tenantId}"): (200, 503),
    ("GET", "/backfills/{tenantId}/{jobId}"): (404, 503),  # a well-formed id of no job
    ("DELETE", "/backfills/{tenantId}/{jobId}"): (404, 503),
}
NO_JOB = "bf-0000000000000-00000000"


def _event(t: str) -> dict[str, Any]:
    return {"tenantId": t, "eventType": "RISK_UPDATED", "source": "FRONTEND_APP", "action": "UPDATE", "data": {"n": 1}}


def _call(app: App, method: str, template: str, t: str) -> httpx.Response:
    path = template.replace("{tenantId}", t).replace("{jobId}", NO_JOB)
    kw: dict[str, Any] = {}
    if template == "/events":
        kw["json"] = _event(t)
    elif template == "/events/bulk":
        kw["json"] = {"events": [_event(t), _event(t)]}
    elif template == "/backfills/{tenantId}" and method == "POST":
        now = datetime.now(timezone.utc)
        kw["json"] = {"from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat(), "destination": "redis"}
    elif template.endswith("/replay"):
        kw["json"] = {}
    elif method == "PUT":
        kw["json"] = {"destinations": [{"type": "redis"}, {"type": "analytics"}]}
    elif template.startswith("/search/"):
        kw["params"] = {"q": "risk"}
    return app.request(method, path, tenants=None if template in ("/health", "/openapi.json") else [t],
                       anonymous=template in ("/health", "/openapi.json"), **kw)


def _sweep(app: App, t: str, column: int) -> dict[tuple[str, str], tuple[int, float]]:
    """Call every operation once; check each answer's form. Returns the statuses and times."""
    seen: dict[tuple[str, str], tuple[int, float]] = {}
    for (method, template), expected in EXPECTED.items():
        started = time.monotonic()
        r = _call(app, method, template, t)
        took = time.monotonic() - started
        seen[(method, template)] = (r.status_code, took)
        assert r.status_code != 500, (method, template, r.text)
        if r.status_code == 503:
            assert r.headers.get("retry-after", "").isdigit(), (method, template, dict(r.headers))
            if template != "/health":
                assert r.headers["content-type"].startswith("application/problem+json"), (method, template)
                assert r.json()["status"] == 503 and "correlationId" in r.json()
    assert {k: v[0] for k, v in seen.items()} == {k: v[column] for k, v in EXPECTED.items()}
    return seen


def test_every_route_answers_503_with_retry_after_while_a_dependency_is_down(breakable: tuple[Stack, App]) -> None:
    stack, app = breakable
    documented = {(m.upper(), p) for p, ops in app.get("/openapi.json", anonymous=True).json()["paths"].items()
                  for m in ops if m.upper() in ("GET", "POST", "PUT", "DELETE", "PATCH")}
    assert documented == set(EXPECTED), "a route without an expectation here (or one gone)"
    for column, name in enumerate(("redis-durable", "azurite-durable")):
        t = tenant("down")
        stack.down(name)
        try:
            seen = _sweep(app, t, column)
        finally:
            stack.up(name)
        slowest = max(took for _, took in seen.values())
        print(f"{name} down: " + ", ".join(f"{m} {p} {s}" for (m, p), (s, _) in seen.items())
              + f"; slowest answer {slowest:.1f} s")
        assert slowest < 15, seen  # an outage is answered promptly, not after long SDK retries
