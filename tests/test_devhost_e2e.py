"""End to end over HTTP: function_app.py served by the local runner, on the real Redis and Azurite."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from localdev import services
from tests.conftest import ROOT
from tests.functions_client import auth_headers

# The original service's README example, byte for byte in body and headers.
ORIGINAL_CURL_BODY = """{
    "tenantId": "test-tenant",
    "eventType": "RISK_CREATED",
    "source": "FRONTEND_APP",
    "action": "CREATE",
    "data": {"test": true}
  }"""


def start_runner(env: dict[str, str], tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = services.free_port()
    log = open(tmp / f"devhost-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port), *extra], cwd=ROOT,
                            env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp / f"devhost-{port}.log").read_text())
        try:
            httpx.get(base + "/health", timeout=1)
            return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    services.stop(proc)
    raise RuntimeError("devhost did not start")


@pytest.fixture(scope="module")
def runner(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, base = start_runner(app_env, tmp_path_factory.mktemp("devhost"))
    yield base
    services.stop(proc)


def test_original_curl_example(runner: str) -> None:
    auth = auth_headers(["test-tenant"])
    r = httpx.post(runner + "/events", content=ORIGINAL_CURL_BODY, headers={"Content-Type": "application/json", **auth})
    assert r.status_code == 201, r.text
    event_id = r.json()["eventId"]
    listed = httpx.get(runner + "/events/test-tenant", params={"limit": 10}, headers=auth).json()
    assert event_id in [e["event"]["eventId"] for e in listed["events"]]


def test_original_curl_example_verbatim_with_make_runs_settings(app_env: dict[str, str], tmp_path: Path) -> None:
    """`make run` uses local.settings.sample.json's AUTH_MODE (jwt+local-open): no token needed locally."""
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert sample["AUTH_MODE"] == "jwt+local-open"
    proc, base = start_runner({**app_env, "AUTH_MODE": sample["AUTH_MODE"]}, tmp_path)
    try:
        r = httpx.post(base + "/events", content=ORIGINAL_CURL_BODY, headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        # A token that is present but bad is still refused: local-open only covers "no credentials".
        r = httpx.get(base + "/events/test-tenant", headers={"Authorization": "Bearer not.a.token"})
        assert r.status_code == 401
    finally:
        services.stop(proc)


def test_routes_methods_and_problem_details_over_http(runner: str) -> None:
    r = httpx.request("PATCH", runner + "/events")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.headers["content-type"].startswith("application/problem+json")
    r = httpx.get(runner + "/nope/nothing")
    assert r.status_code == 404
    r = httpx.get(runner + "/openapi.json")
    assert r.status_code == 200 and "/events/bulk" in r.json()["paths"]
    r = httpx.get(runner + "/health")
    assert r.json()["dependencies"]["redis"]["status"] == "healthy"


def test_bulk_and_metrics_over_http(runner: str) -> None:
    events = [{"tenantId": "e2e-tenant", "eventType": "CONTROL_FAILED", "source": "BACKEND_API",
               "action": "TEST", "entityId": f"c-{i}", "data": {"i": i}} for i in range(50)]
    auth = auth_headers(["e2e-tenant"])
    r = httpx.post(runner + "/events/bulk", json={"events": events}, headers=auth)
    assert r.status_code == 200 and r.json()["accepted"] == 50
    m = httpx.get(runner + "/metrics/e2e-tenant", headers=auth).json()
    assert m["windows"]["1m"]["accepted"] == 50
    assert m["windows"]["1m"]["topSources"][0] == {"name": "BACKEND_API", "count": 50}
    listed = httpx.get(runner + "/events/e2e-tenant", params={"limit": 3}, headers=auth).json()
    assert [e["event"]["data"]["i"] for e in listed["events"]] == [49, 48, 47]  # newest first


def test_function_keys_when_the_runner_requires_them(app_env: dict[str, str], tmp_path: Path) -> None:
    proc, base = start_runner(app_env, tmp_path, "--function-key", "local-test-key")
    try:
        assert httpx.get(base + "/health").status_code == 200  # anonymous
        auth = auth_headers(["e2e-tenant"])
        assert httpx.get(base + "/metrics/e2e-tenant", headers=auth).status_code == 401  # no key
        assert httpx.get(base + "/metrics/e2e-tenant", headers={"x-functions-key": "local-test-key"}).status_code == 401
        assert httpx.get(base + "/metrics/e2e-tenant",
                         headers={"x-functions-key": "local-test-key", **auth}).status_code == 200
        assert httpx.get(base + "/metrics/e2e-tenant", params={"code": "local-test-key"}, headers=auth).status_code == 200
    finally:
        services.stop(proc)


def test_control_characters_in_the_path_reach_the_app(runner: str) -> None:
    """A %0A in a path segment still routes to the function (the app answers 400 for the bad tenant),
    and the catch-all still answers 404 as problem details; not the HTTP server's bare 404."""
    auth = auth_headers()
    r = httpx.get(runner + "/stream-config/a%0Ab", headers=auth)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), r.text
    r = httpx.get(runner + "/no%0Awhere", headers=auth)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json"), r.text
