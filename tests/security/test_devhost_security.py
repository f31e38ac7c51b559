"""End to end through the local runner: function_app.py's own registrations over real HTTP, with a
function key (host) and a caller identity (app) both required, as in Azure."""
from __future__ import annotations

import base64
import json
import os
import uuid
from typing import AsyncIterator

import httpx
import pytest

from devhost.app_loader import ROOT, load_functions
from devhost.http_driver import HttpDriver
from localdev.services import free_port
from shared.app.services import reset_services
from shared.core.settings import get_settings
from shared.security.identity import mint_dev_token

FUNCTION_KEY = "test-function-key-" + uuid.uuid4().hex
SAMPLE_SETTINGS = ROOT / "local.settings.sample.json"
DEV_KEY = "dev-only-" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
async def base_url(monkeypatch: pytest.MonkeyPatch, redis_port: int,
                   storage_connection_string: str) -> AsyncIterator[str]:
    for k, v in {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port),
                 "STORAGE_CONNECTION_STRING": storage_connection_string,
                 "AUDIT_TABLE": "aud" + uuid.uuid4().hex[:8], "AUTH_MODE": "jwt",
                 "AUTH_DEV_SIGNING_KEY": DEV_KEY,
                 "RETRY_QUEUE": "delivery-retries"}.items():  # %RETRY_QUEUE% in the queue trigger
        monkeypatch.setenv(k, v)
    for k, v in json.loads(SAMPLE_SETTINGS.read_text())["Values"].items():  # %SETTING% names in bindings
        if k not in os.environ:
            monkeypatch.setenv(k, str(v))
    get_settings.cache_clear()
    port = free_port()
    driver = HttpDriver(load_functions("function_app"), port, function_keys={FUNCTION_KEY})
    await driver.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await driver.stop()
        await reset_services()


async def test_function_key_and_identity_are_both_required(base_url: str) -> None:
    tenant = "t-" + uuid.uuid4().hex[:8]
    token = mint_dev_token(get_settings(), "svc-e2e", tenants=[tenant])
    url = f"{base_url}/stream-config/{tenant}"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base_url}/health")).status_code in (200, 503)  # no key, no identity
        assert (await client.get(f"{base_url}/openapi.json")).status_code == 200
        no_key = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert no_key.status_code == 401 and "WWW-Authenticate" not in no_key.headers  # the host's refusal
        no_identity = await client.get(url, headers={"x-functions-key": FUNCTION_KEY})
        assert no_identity.status_code == 401
        assert no_identity.headers["WWW-Authenticate"].startswith("Bearer")
        assert no_identity.headers["Content-Type"].startswith("application/problem+json")
        both = await client.get(url, headers={"x-functions-key": FUNCTION_KEY, "Authorization": f"Bearer {token}"})
        assert both.status_code == 200 and both.json()["tenantId"] == tenant
        other = await client.get(f"{base_url}/audit/someone-else",
                                 headers={"x-functions-key": FUNCTION_KEY, "Authorization": f"Bearer {token}"})
        assert other.status_code == 403
        audit = await client.get(f"{base_url}/audit/{tenant}",
                                 headers={"x-functions-key": FUNCTION_KEY, "Authorization": f"Bearer {token}"})
        assert audit.status_code == 200 and audit.json()["items"] == []
