"""The per-tenant rate limit, from outside (README 'Routes' and 'Security', docs/security.md '3. Rate limit').

An app of its own with a slow refill (0.2 tokens/s: no test can outlast a bucket by accident) and a
burst of 10: over the tenant's rate -> 429 problem details with a whole-second Retry-After, another
tenant unaffected; a bulk naming an exhausted tenant and a fresh one refused whole, the fresh
tenant's events not stored and its tokens kept; Redis stopped by PID -> requests pass (the Redis
delivery parked, docs/delivery.md 'Outages'), never 429.
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterator

import httpx
import pytest

from tests.system.harness import App, Stack, own_stack_and_app, tenant, wait_for

RATE, BURST = 0.2, 10


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App]]:
    with own_stack_and_app(tmp_path_factory.mktemp("ratelimit"), ("redis", "azurite", "cosmos"),
                           RATE_LIMIT_EVENTS_PER_SECOND=str(RATE), RATE_LIMIT_BURST=str(BURST),
                           SYSTEM_PERFORMANCE_EVENTS="false") as running:
        yield running


def _event(t: str, n: int = 0) -> dict[str, Any]:
    return {"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
            "entityId": f"r-{n}", "data": {"n": n}}


def _bulk(app: App, events: list[dict[str, Any]], tenants: list[str]) -> httpx.Response:
    return app.post("/events/bulk", json={"events": events}, tenants=tenants)


def _assert_throttled(r: httpx.Response) -> int:
    """A 429 problem details with an integer Retry-After; the seconds."""
    assert r.status_code == 429, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), dict(r.headers)
    assert r.json()["status"] == 429
    retry_after = r.headers.get("retry-after", "")
    assert retry_after.isdigit(), dict(r.headers)
    # Whole seconds until the tokens are there: one token at 0.2/s is 5 s (never 0, never a fraction).
    assert 1 <= int(retry_after) <= math.ceil(BURST / RATE), retry_after
    return int(retry_after)


def _stream_length(stack: Stack, t: str) -> int:
    """What the app stored in the tenant's Redis stream, read directly (a GET would cost a token)."""
    with stack.redis() as r:
        return int(r.xlen(f"grc:{{{t}}}:events"))


def test_over_the_rate_is_429_with_retry_after_and_another_tenant_still_passes(limited: tuple[Stack, App]) -> None:
    stack, app = limited
    busy, other = tenant("rl"), tenant("rl")
    r = _bulk(app, [_event(busy, i) for i in range(BURST)], [busy])
    assert r.status_code == 200 and {e["status"] for e in r.json()["results"]} == {"accepted"}, r.text
    refused = app.post("/events", json=_event(busy, 99), tenants=[busy])
    retry_after = _assert_throttled(refused)
    # One event: one token, 5 s at 0.2/s (less what refilled since the bulk, on a slow machine).
    assert math.ceil(1 / RATE) - 1 <= retry_after <= math.ceil(1 / RATE), retry_after
    assert _stream_length(stack, busy) == BURST  # the refused event was not delivered
    # Reads are tenant-scoped requests too (cost 1): refused alike.
    _assert_throttled(app.get(f"/events/{busy}", tenants=[busy]))
    # Another tenant's bucket is its own.
    assert app.post("/events", json=_event(other), tenants=[other]).status_code == 201
    assert app.get(f"/events/{other}", tenants=[other]).status_code == 200


def test_a_bulk_naming_an_exhausted_tenant_is_refused_whole_and_the_other_keeps_its_tokens(
        limited: tuple[Stack, App]) -> None:
    stack, app = limited
    exhausted, fresh = tenant("rl"), tenant("rl")
    assert _bulk(app, [_event(exhausted, i) for i in range(BURST)], [exhausted]).status_code == 200
    mixed = [_event(exhausted, 50)] + [_event(fresh, i) for i in range(BURST)]
    retry_after = _assert_throttled(_bulk(app, mixed, [exhausted, fresh]))
    assert _stream_length(stack, fresh) == 0 and _stream_length(stack, exhausted) == BURST  # nothing of it stored
    # The client does as told and waits Retry-After, then sends the fresh tenant's events alone: its
    # whole burst is still there (the refused request spent none of it; at 0.2/s the wait refills 1).
    time.sleep(retry_after)
    r = _bulk(app, [_event(fresh, i) for i in range(BURST)], [fresh])
    assert r.status_code == 200, (r.status_code, r.text)
    assert _stream_length(stack, fresh) == BURST


def test_with_redis_down_requests_pass_instead_of_429(limited: tuple[Stack, App]) -> None:
    stack, app = limited
    t = tenant("rl")
    assert _bulk(app, [_event(t, i) for i in range(BURST)], [t]).status_code == 200
    _assert_throttled(app.post("/events", json=_event(t, 1), tenants=[t]))  # its bucket is empty
    stack.down("redis")
    try:
        # The limit fails open: the event is accepted and its Redis delivery parked for the retry queue.
        for n in range(3):
            r = app.post("/events", json=_event(t, 100 + n), tenants=[t])
            assert r.status_code == 201, (r.status_code, r.text)
            assert [(d["destination"], d["status"]) for d in r.json()["destinations"]] == [("redis", "parked")]
        assert "rate limit" in app.log() and "not applied" in app.log()  # logged, as promised
    finally:
        stack.up("redis")
    # Redis is back (empty: this stand-in keeps no data): the app serves and limits again.
    wait_for(lambda: app.post("/events", json=_event(t, 200), tenants=[t]).status_code == 201, 30,
             what="POST accepted once Redis is back")
