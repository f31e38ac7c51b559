"""Security promises of README.md ('API', 'Security') and docs/security.md that no other system test
proved, checked from outside the running app: HTTP (with and without the runner's function keys),
Redis and Azure Tables as an operator reads them, and a fake Entra ID issuer at its HTTP boundary
(discovery document and JWKS).

Beside the session app (AUTH_MODE=jwt with the development key, as the suite runs), three apps of this
module share one stack of their own (Redis, Azurite, the Cosmos server; Kafka's settings point at a
closed port), as three instances of one deployment would:
- `easyauth`: AUTH_MODE=appservice behind function keys (`--function-key`), a slow rate limit (0.2
  tokens/s, burst 5);
- `both`: AUTH_MODE=jwt+appservice, the rate limit off (RATE_LIMIT_EVENTS_PER_SECOND=0, burst 3);
- `open`: AUTH_MODE=jwt+local-open (make run's), with a PAGE_TOKEN_KEY of its own.
Tests that need other settings (bearer keys from a discovery document; AUTH_* settings that cannot
work) start an app of their own on that stack.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from azure.data.tables import TableClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.system.harness import App, Stack, app_env, own_stack, start_app, tenant, wait_for

PROBLEM = "application/problem+json"
DETAIL_401 = "A valid caller identity is required."
DETAIL_403 = "The caller is not granted access to this tenant."
DETAIL_MISCONFIGURED = ("Caller authentication is misconfigured on this service, so no caller identity can "
                        "be verified; an operator must correct its AUTH_* settings.")
INVALID_TOKEN = 'Bearer error="invalid_token"'
FUNCTION_KEY = f"fk-{uuid.uuid4().hex}"
OPEN_PAGE_TOKEN_KEY = f"open-app-page-token-key-{uuid.uuid4().hex}"
EASYAUTH_RATE, EASYAUTH_BURST = 0.2, 5
OID_TYPE = "http://schemas.microsoft.com/identity/claims/objectidentifier"
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
JOB_ID = "bf-0000000000000-00000000"
# Every runner log of this module: the secrets check reads them all.
MODULE_LOGS: list[Path] = []


# -- helpers ------------------------------------------------------------------------------------------

def client_principal(oid: str, tenants: tuple[str, ...] = (), roles: tuple[str, ...] = (),
                     name: str = "Easy Auth caller") -> dict[str, str]:
    """The `X-MS-CLIENT-PRINCIPAL` header App Service Authentication sets: base64 JSON with one claim
    per value (docs/security.md '1. Identity')."""
    claims = [{"typ": OID_TYPE, "val": oid}, {"typ": "name", "val": name}]
    claims += [{"typ": "tenants", "val": t} for t in tenants]
    claims += [{"typ": ROLE_TYPE, "val": r} for r in roles]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": ROLE_TYPE}
    return {"x-ms-client-principal": base64.b64encode(json.dumps(doc).encode()).decode()}


def dev_token(env: dict[str, str], drop: tuple[str, ...] = (), **claims: Any) -> str:
    """An HS256 token signed with the app's development key, each one distinct (`jti`)."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": env["AUTH_ISSUER"].split(",")[0].strip(),
                            "aud": env["AUTH_AUDIENCE"].split(",")[0].strip(), "sub": "doc-promises",
                            "iat": now, "nbf": now, "exp": now + 600, "jti": uuid.uuid4().hex}
    body.update(claims)
    for name in drop:
        body.pop(name, None)
    return jwt.encode(body, env["AUTH_DEV_SIGNING_KEY"], algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_401(r: httpx.Response, challenge: str, what: object = "") -> None:
    """The app's 401: problem details, the one generic detail, the given challenge."""
    assert r.status_code == 401, (what, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith(PROBLEM), (what, r.headers)
    assert r.json()["detail"] == DETAIL_401, (what, r.text)
    assert r.headers["www-authenticate"] == challenge, (what, r.headers)


def assert_403(r: httpx.Response, what: object = "") -> dict[str, Any]:
    assert r.status_code == 403, (what, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith(PROBLEM), (what, r.headers)
    body: dict[str, Any] = r.json()
    assert body["detail"] == DETAIL_403, (what, body)
    return body


def operations(app: App, headers: dict[str, str] | None = None) -> dict[str, tuple[str, str, bool]]:
    """operationId -> (method, path with {tenantId}/{jobId}, protected) from the app's /openapi.json."""
    r = app.client.get("/openapi.json", headers=headers or {})
    assert r.status_code == 200, r.text
    return {op["operationId"]: (method.upper(), path, "security" in op)
            for path, item in r.json()["paths"].items() for method, op in item.items()
            if isinstance(op, dict) and "operationId" in op}


def filled(path: str, t: str) -> str:
    return path.replace("{tenantId}", t).replace("{jobId}", JOB_ID)


def redis_event(t: str, n: int = 0) -> dict[str, Any]:
    return {"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
            "entityId": f"risk-{n}", "data": {"n": n}}


def compact(value: Any) -> bytes:
    """A JSON document as one canonical text: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def utf16_bytes(text: str) -> int:
    return len(text.encode("utf-16-le"))


# -- apps of this module ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The module's stand-ins (no Kafka; Cosmos so that the runner's change feed settles and stops)."""
    with own_stack(tmp_path_factory.mktemp("security-stack"), ("redis", "azurite", "cosmos")) as stack:
        yield stack


def start(stack: Stack, work: Path, *args: str, **overrides: str) -> App:
    app = start_app(app_env(stack, work, SYSTEM_PERFORMANCE_EVENTS="false", **overrides), work, *args)
    MODULE_LOGS.append(app.log_path)
    return app


@pytest.fixture(scope="module")
def apps(own: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, App]]:
    work = tmp_path_factory.mktemp("security-apps")
    running: dict[str, App] = {}
    try:
        running["easyauth"] = start(own, work / "easyauth", "--function-key", FUNCTION_KEY,
                                    AUTH_MODE="appservice", RATE_LIMIT_EVENTS_PER_SECOND=str(EASYAUTH_RATE),
                                    RATE_LIMIT_BURST=str(EASYAUTH_BURST))
        running["both"] = start(own, work / "both", AUTH_MODE="jwt+appservice",
                                RATE_LIMIT_EVENTS_PER_SECOND="0", RATE_LIMIT_BURST="3", LOG_LEVEL="debug")
        running["open"] = start(own, work / "open", AUTH_MODE="jwt+local-open",
                                PAGE_TOKEN_KEY=OPEN_PAGE_TOKEN_KEY)
        yield running
    finally:
        for app in running.values():
            app.stop()


def easy(app: App, method: str, path: str, principal: dict[str, str] | None = None,
         **kw: Any) -> httpx.Response:
    """A request to the `easyauth` app as App Service forwards it: the function key, and the principal
    Easy Auth validated (if any)."""
    headers = {"x-functions-key": FUNCTION_KEY, **(principal or {}), **kw.pop("headers", {})}
    return app.client.request(method, path, headers=headers, **kw)


# -- identity (session app: AUTH_MODE=jwt) -------------------------------------------------------------

def test_every_protected_operation_needs_a_caller_identity_and_a_client_principal_is_none(app: App) -> None:
    """README 'API': "Every route but `/health` and `/openapi.json` needs a function key (host) and a
    caller identity (app): 401 + `WWW-Authenticate: Bearer` without one". docs/security.md '1.
    Identity': under `jwt` (the default) `X-MS-CLIENT-PRINCIPAL` is "ignored" ("Locally anyone can
    send the header, which is why the default is `jwt`")."""
    t, other = tenant("idn"), tenant("idn")
    ops = operations(app)
    assert {op for op, (_, _, protected) in ops.items() if not protected} == {"health", "openapi"}, ops
    forged_admin = client_principal("forged-oid", roles=("Events.Admin",))
    for op, (method, path, protected) in sorted(ops.items()):
        url = filled(path, t)
        if not protected:
            assert app.client.request(method, url).status_code == 200, op
            continue
        kw: dict[str, Any] = {"json": {}} if method in ("POST", "PUT") else {}
        assert_401(app.client.request(method, url, **kw), "Bearer", op)
        assert_401(app.client.request(method, url, headers=forged_admin, **kw), "Bearer", f"{op} + principal")
    # Beside a real token the header changes nothing either: the token's grant alone counts.
    headers = {**forged_admin, **bearer(dev_token(app.env, tenants=[t]))}
    r = app.client.get(f"/metrics/{t}", headers=headers)
    assert r.status_code == 200 and "service" not in r.json(), r.text[:300]  # no admin figures
    assert_403(app.client.get(f"/events/{other}", headers=headers), "principal beside a tenant token")


def test_required_claims_refused_algorithms_and_token_shapes_are_one_generic_401(app: App) -> None:
    """docs/security.md '1. Identity': "`iss`, `aud`, `exp`, `sub` are required; `exp`/`nbf` are
    checked with `AUTH_LEEWAY_SECONDS` (60) of clock skew" and "`alg: none`, PS256/ES256, JWE (five
    parts), oversize headers are refused"; "Every bad token (...) is the same 401 with
    `WWW-Authenticate: Bearer error="invalid_token"`". Each token below is a good one but for the one
    thing named (the good one is served)."""
    env, t = app.env, tenant("clm")
    leeway = int(env["AUTH_LEEWAY_SECONDS"])
    claims = {"tenants": [t]}
    assert app.client.get(f"/events/{t}", headers=bearer(dev_token(env, **claims))).status_code == 200
    # A not-before within the leeway is clock skew: served.
    skewed = dev_token(env, nbf=int(time.time()) + leeway // 2, **claims)
    assert app.client.get(f"/events/{t}", headers=bearer(skewed)).status_code == 200
    now = int(time.time())
    good = {"iss": env["AUTH_ISSUER"], "aud": env["AUTH_AUDIENCE"], "sub": "doc-promises", "iat": now,
            "nbf": now, "exp": now + 600, **claims}
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    jwe = ".".join([part({"alg": "RSA-OAEP", "enc": "A256GCM"}), "a" * 40, "b" * 16, "c" * 40, "d" * 22])
    refused = {
        "no sub": dev_token(env, drop=("sub",), oid=str(uuid.uuid4()), **claims),
        "no iss": dev_token(env, drop=("iss",), **claims),
        "no aud": dev_token(env, drop=("aud",), **claims),
        "not before, beyond the leeway": dev_token(env, nbf=now + leeway + 60, **claims),
        "ES256": jwt.encode(good, ec_key, algorithm="ES256", headers={"kid": "ec-1"}),
        "PS256": jwt.encode(good, rsa_key, algorithm="PS256", headers={"kid": "ps-1"}),
        "JWE (five parts)": jwe,
        "oversize (over 16 KiB, signed with the right key)": dev_token(env, pad="x" * 17_000, **claims),
    }
    for name, token in refused.items():
        assert_401(app.client.get(f"/events/{t}", headers=bearer(token)), INVALID_TOKEN, name)


def test_a_remembered_token_still_expires_and_a_refusal_is_not_remembered(app: App) -> None:
    """docs/security.md '1. Identity': "A token once verified is remembered per worker (...): only the
    very same token string hits, `exp` (with the leeway) is still checked on every request, failures
    are never remembered". A token expiring (leeway included) 5 s from now is served, then refused
    once that moment passed; one valid only from 5 s from now is refused, then served."""
    env, t = app.env, tenant("mem")
    leeway = int(env["AUTH_LEEWAY_SECONDS"])
    now = int(time.time())
    expiring = dev_token(env, tenants=[t], iat=now - 600, nbf=now - 600, exp=now - leeway + 5)
    early = dev_token(env, tenants=[t], nbf=now + leeway + 5)
    assert app.client.get(f"/events/{t}", headers=bearer(expiring)).status_code == 200
    assert_401(app.client.get(f"/events/{t}", headers=bearer(early)), INVALID_TOKEN, "not yet valid")
    time.sleep(max(0.0, now + 7 - time.time()))
    assert_401(app.client.get(f"/events/{t}", headers=bearer(expiring)), INVALID_TOKEN,
               "expired since it was verified")
    r = app.client.get(f"/events/{t}", headers=bearer(early))
    assert r.status_code == 200, ("a refusal was remembered", r.status_code, r.text)


def test_malformed_or_wildcard_grants_widen_nothing_and_403_does_not_tell_whether_a_tenant_exists(
        app: App) -> None:
    """docs/security.md '2. Tenant grants': "Values that are not valid tenant ids are ignored, so a
    malformed or wildcard-looking grant never widens access" and "`authorize(principal, tenant)` raises
    `TenantForbidden` -> **403** with the same detail whether the tenant exists or not"."""
    env = app.env
    existing, never, own_t = tenant("grt"), tenant("grt"), tenant("grt")
    assert app.put(f"/stream-config/{existing}", json={"batchSize": 7}).status_code == 201
    assert app.post("/events", json=redis_event(existing)).status_code == 201
    grants: dict[str, dict[str, Any]] = {
        'tenants ["*"]': {"tenants": ["*"]},
        'tenants "*"': {"tenants": "*"},
        'tenants [".*"]': {"tenants": [".*"]},
        'tenants ["Events.Admin"]': {"tenants": ["Events.Admin"]},
        'roles ["Tenant.*"]': {"roles": ["Tenant.*"]},
        'roles ["events.admin"] (another case)': {"roles": ["events.admin"]},
        'roles ["Events.Admin "] (a trailing space)': {"roles": ["Events.Admin "]},
        f'tenants ["{own_t}"]': {"tenants": [own_t]},
    }
    for name, claims in grants.items():
        headers = bearer(dev_token(env, **claims))
        answers = []
        for target in (existing, never):
            body = assert_403(app.client.get(f"/events/{target}", headers=headers), (name, target))
            answers.append({k: v for k, v in body.items() if k not in ("instance", "correlationId")})
        assert answers[0] == answers[1], (name, answers)
        r = app.client.get(f"/metrics/{existing}", headers=headers)
        assert r.status_code == 403 and existing not in json.dumps(
            {k: v for k, v in r.json().items() if k != "instance"}), (name, r.text)


# -- audit trail (session app) ---------------------------------------------------------------------------

ROW_KEY = re.compile(r"^(\d{16})-[0-9a-f]{8}$")


def audit_entities(stack: Stack, env: dict[str, str], t: str) -> list[dict[str, Any]]:
    with TableClient.from_connection_string(stack.storage, env["AUDIT_TABLE"]) as table:
        return list(table.query_entities("PartitionKey eq @t", parameters={"t": t}))


def test_the_audit_trail_is_appended_as_documented_and_names_the_caller(app: App, stack: Stack) -> None:
    """docs/security.md '4. Audit trail': "appends to the table `AUDIT_TABLE` (`audit`): PartitionKey =
    tenant, RowKey = inverted microsecond timestamp + random suffix, so `list(tenant, limit,
    continuation)` returns newest first. Only `create_entity` is used (never update/upsert/delete".
    '1. Identity': "The `Principal`: `subject` (Entra `oid`, else `sub`), `name`, (...) `auth_method`
    (`jwt`, `dev-jwt`, `appservice`)": the audit record's actor. Read as an operator reads the table."""
    env, t = app.env, tenant("aud")
    oid = str(uuid.uuid4())
    with_oid = bearer(dev_token(env, tenants=[t], oid=oid, sub="per-app-subject", name="Audit Tester"))
    r = app.client.put(f"/stream-config/{t}", json={"batchSize": 11}, headers=with_oid)
    assert r.status_code == 201, r.text
    [first] = audit_entities(stack, env, t)
    for size in (12, 13):
        r = app.client.put(f"/stream-config/{t}", json={"batchSize": size}, headers=with_oid)
        assert r.status_code == 200, r.text
    by_sub = bearer(dev_token(env, tenants=[t], sub="only-a-subject"))
    assert app.client.put(f"/stream-config/{t}", json={"batchSize": 14}, headers=by_sub).status_code == 200

    entities = audit_entities(stack, env, t)
    assert len(entities) == 4, entities  # one record per change, none replaced
    again = next(e for e in entities if e["RowKey"] == first["RowKey"])
    assert again.metadata["etag"] == first.metadata["etag"] and dict(again) == dict(first), (first, again)
    for e in entities:
        m = ROW_KEY.fullmatch(e["RowKey"])
        assert m, e["RowKey"]
        at = datetime.fromisoformat(e["At"].replace("Z", "+00:00"))
        at_us = int(at.timestamp()) * 1_000_000 + at.microsecond
        assert abs((10**16 - 1 - int(m.group(1))) - at_us) < 2_000_000, (e["RowKey"], e["At"])
    items = app.client.get(f"/audit/{t}", headers=by_sub).json()["items"]
    assert [i["id"] for i in items] == sorted(e["RowKey"] for e in entities)  # newest first
    assert [i["after"]["batchSize"] for i in items] == [14, 13, 12, 11]
    assert [(i["actor"], i["actorName"], i["authMethod"]) for i in items] == [
        ("only-a-subject", "", "dev-jwt")] + [(oid, "Audit Tester", "dev-jwt")] * 3, items


def test_large_before_and_after_are_split_then_truncated_keeping_hash_and_size(app: App,
                                                                               stack: Stack) -> None:
    """docs/security.md '4. Audit trail': "`before`/`after` JSON is split into parts of at most 64,000
    bytes UTF-16 (...), up to 6 parts per side; beyond that it is truncated and marked, with the
    SHA-256 and byte length of the whole document kept." A replay's `before` is the ids asked for
    (README: replays are audited): ids with accents and astral characters (4 bytes in UTF-16)."""
    env, t = app.env, tenant("big")
    medium = [f"{i:03d}-" + "é🔒ab" * 74 for i in range(100)]  # about 75,000 bytes UTF-16
    large = [f"{i:03d}-" + "a" * 494 + "é🔒" for i in range(500)]  # about 500,000 bytes UTF-16
    for ids in (medium, large):  # UTF-8 as it is: the large body stays under the 256 KiB replay limit
        r = app.post(f"/deadletters/{t}/replay", content=compact({"ids": ids}), tenants=[t],
                     headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["counts"] == {"not found": len(ids)}, r.text[:300]

    entities = sorted(audit_entities(stack, env, t), key=lambda e: e["RowKey"], reverse=True)  # oldest first
    assert len(entities) == 2, entities
    for entity, ids in zip(entities, (medium, large)):
        for side in ("Before", "After"):
            parts = [v for k, v in entity.items() if k.startswith(side) and isinstance(v, str)
                     and k != f"{side}Sha256"]
            assert 2 <= len(parts) <= 6, (side, len(parts))
            assert max(utf16_bytes(p) for p in parts) <= 64_000, (side, [utf16_bytes(p) for p in parts])
        doc = compact({"ids": ids})
        assert (entity["BeforeSha256"], entity["BeforeBytes"]) == (hashlib.sha256(doc).hexdigest(), len(doc))

    medium_item, large_item = app.get(f"/audit/{t}", tenants=[t]).json()["items"][::-1]
    assert medium_item["before"] == {"ids": medium}  # split, read back whole
    assert [r["id"] for r in medium_item["after"]["results"]] == medium
    doc = compact({"ids": large})
    before = large_item["before"]
    assert before["truncated"] is True, str(before)[:300]
    assert (before["sha256"], before["bytes"]) == (hashlib.sha256(doc).hexdigest(), len(doc))
    assert doc.decode().startswith(before["preview"]) and 6 * 64_000 - 12 <= utf16_bytes(before["preview"]) \
        <= 6 * 64_000
    assert large_item["after"]["truncated"] is True, str(large_item["after"])[:300]


# -- function keys and App Service Authentication (`easyauth`) ---------------------------------------------

def test_function_keys_guard_every_route_but_health_and_openapi_and_are_no_identity(
        apps: dict[str, App]) -> None:
    """README 'API': "Every route but `/health` and `/openapi.json` is at the FUNCTION auth level (a
    function key in Azure: `x-functions-key` header or `?code=`)". docs/security.md 'Layers of a
    request': "The key only proves the caller may reach the app; it is not an identity." The runner
    enforces the auth level each function registered, as the host does; the host's refusal is a bare
    401, the app's a problem with `WWW-Authenticate`."""
    app = apps["easyauth"]
    t = tenant("key")
    ops = operations(app)  # anonymous: no key
    for op, (method, path, protected) in sorted(ops.items()):
        url = filled(path, t)
        kw: dict[str, Any] = {"json": {}} if method in ("POST", "PUT") else {}
        if not protected:
            assert app.client.request(method, url, **kw).status_code == 200, op
            continue
        wrong = (({}, {}), ({"x-functions-key": "not-the-key"}, {}), ({}, {"code": "not-the-key"}))
        for headers, params in wrong:
            r = app.client.request(method, url, headers=headers, params=params, **kw)
            assert r.status_code == 401, (op, headers, params, r.status_code, r.text)
            assert not r.headers.get("content-type", "").startswith(PROBLEM), (op, r.text)
            assert "www-authenticate" not in r.headers, (op, r.headers)  # the host's, not the app's
        # The key reaches the app, which still wants a caller identity.
        for headers, params in (({"x-functions-key": FUNCTION_KEY}, {}), ({}, {"code": FUNCTION_KEY})):
            r = app.client.request(method, url, headers=headers, params=params, **kw)
            assert_401(r, "Bearer", (op, headers, params))
    # An unknown path is answered by the public fallback, with or without a key.
    assert app.client.get("/no-such-route").status_code == 404
    r = easy(app, "GET", f"/events/{t}", client_principal("key-caller", tenants=(t,)))
    assert r.status_code == 200 and r.json()["tenantId"] == t, r.text


def test_app_service_mode_trusts_the_client_principal_and_ignores_bearer_tokens(apps: dict[str, App]) -> None:
    """docs/security.md '1. Identity', `AUTH_MODE` table: `appservice`: `X-MS-CLIENT-PRINCIPAL`
    "trusted", `Authorization: Bearer` "ignored"; grants from "the claim `AUTH_TENANT_CLAIM` (...) App
    Service passes one claim per value" and "Entra **app roles** `Tenant.<tenantId>`"; the audit
    record names the caller (`auth_method` `appservice`)."""
    app = apps["easyauth"]
    a, b, c = tenant("eas"), tenant("eas"), tenant("eas")
    oid = str(uuid.uuid4())
    principal = client_principal(oid, tenants=(a,), roles=(f"Tenant.{c}",), name="Easy Auth Tester")
    for t in (a, c):
        r = easy(app, "GET", f"/events/{t}", principal)
        assert r.status_code == 200 and r.json()["tenantId"] == t, r.text
    assert_403(easy(app, "GET", f"/events/{b}", principal), "not granted b")
    admin_token = bearer(dev_token(app.env, roles=["Events.Admin"]))  # valid under jwt: ignored here
    assert_401(easy(app, "GET", f"/events/{b}", headers=admin_token), "Bearer", "a bearer token alone")
    assert_403(easy(app, "GET", f"/events/{b}", principal, headers=admin_token), "principal + admin bearer")
    assert_401(easy(app, "GET", f"/events/{a}", headers={"x-ms-client-principal": "not base64 json!"}),
               INVALID_TOKEN, "a malformed principal")
    assert easy(app, "PUT", f"/stream-config/{a}", principal, json={"batchSize": 9}).status_code == 201
    [record] = easy(app, "GET", f"/audit/{a}", principal).json()["items"]
    assert (record["actor"], record["actorName"], record["authMethod"]) == (oid, "Easy Auth Tester",
                                                                             "appservice")


def test_a_request_costing_more_than_the_burst_needs_a_full_bucket_and_empties_it(
        apps: dict[str, App], own: Stack) -> None:
    """docs/security.md '3. Rate limit': "A token bucket per tenant in Redis, `grc:{tenant}:ratelimit`"
    and "A request costing more than the burst needs a full bucket and empties it." (burst 5, 0.2
    tokens/s: a bulk of 8 events)."""
    app = apps["easyauth"]
    full, used = tenant("brs"), tenant("brs")
    caller = client_principal("burst-caller", tenants=(full, used))
    bulk = EASYAUTH_BURST + 3
    r = easy(app, "POST", "/events/bulk", caller,
             json={"events": [redis_event(full, i) for i in range(bulk)]})
    assert r.status_code == 200 and r.json()["accepted"] == bulk, r.text[:300]
    with own.redis() as redis:
        assert redis.type(f"grc:{{{full}}}:ratelimit") == b"hash"
    r = easy(app, "POST", "/events", caller, json=redis_event(full, 99))
    assert r.status_code == 429 and r.headers["retry-after"].isdigit(), (r.status_code, r.text)  # emptied

    assert easy(app, "POST", "/events", caller, json=redis_event(used, 0)).status_code == 201
    r = easy(app, "POST", "/events/bulk", caller,
             json={"events": [redis_event(used, i) for i in range(1, bulk + 1)]})
    assert r.status_code == 429, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    assert 1 <= int(r.headers["retry-after"]) <= math.ceil(EASYAUTH_BURST / EASYAUTH_RATE), r.headers
    with own.redis() as redis:
        assert redis.xlen(f"grc:{{{used}}}:events") == 1  # nothing of the refused bulk stored
        assert redis.xlen(f"grc:{{{full}}}:events") == bulk


REFUSING_KAFKA = {"type": "kafka", "config": {"transport": "amqp"},
                  "retry": {"inProcessAttempts": 1, "attempts": 1, "backoffSeconds": 1,
                            "maxBackoffSeconds": 1, "jitter": 0, "timeoutSeconds": 40}}


def test_a_failing_destinations_health_goes_to_admins_and_its_own_tenants_only(apps: dict[str, App]) -> None:
    """docs/security.md '2. Tenant grants': "`GET /metrics/{tenantId}` answers a tenant's caller with
    its tenant's windows, totals and the alert conditions of its own deliveries"; README 'Metrics': "a
    destination's failed health check only for a destination it delivers to". Kafka over AMQP with no
    Event Hubs: its health check fails; a tenant that delivers to Redis only is not told."""
    app = apps["easyauth"]
    kafka_user, redis_only = tenant("fdh"), tenant("fdh")
    admin = client_principal("fdh-admin", roles=("Events.Admin",))
    r = easy(app, "PUT", f"/stream-config/{kafka_user}", admin,
             json={"destinations": [{"type": "redis"}, REFUSING_KAFKA]})
    assert r.status_code == 201, r.text
    assert easy(app, "POST", "/events", admin, json=redis_event(kafka_user)).status_code == 201
    assert easy(app, "POST", "/events", admin, json=redis_event(redis_only)).status_code == 201

    def kafka_unhealthy() -> bool:
        deps = easy(app, "GET", "/health", admin).json()["dependencies"]
        return any(name.startswith("kafka") and d["status"] == "unhealthy" for name, d in deps.items())

    wait_for(kafka_unhealthy, 20, 0.5, "the Kafka destination's health check failing")

    def failing(t: str, who: dict[str, str]) -> dict[str, Any]:
        r = easy(app, "GET", f"/metrics/{t}", who)
        assert r.status_code == 200, r.text
        return dict(r.json()["alerts"]["conditions"]["failingDestination"])

    mine = failing(redis_only, client_principal("fdh-tenant", tenants=(redis_only,)))
    assert mine["firing"] is False and "kafka" not in json.dumps(mine["value"]), mine
    assert "kafka" in json.dumps(failing(redis_only, admin)["value"]), "admins see every destination"
    theirs = failing(kafka_user, client_principal("fdh-kafka", tenants=(kafka_user,)))
    assert theirs["firing"] is True and "kafka" in json.dumps(theirs["value"]), theirs


# -- jwt+appservice (`both`) --------------------------------------------------------------------------------

def test_jwt_plus_appservice_tries_the_principal_first_then_validates_bearer_tokens(
        apps: dict[str, App]) -> None:
    """docs/security.md, `AUTH_MODE` table: `jwt+appservice`: `X-MS-CLIENT-PRINCIPAL` "trusted, tried
    first", `Authorization: Bearer` "validated in the app"; the admin role `AUTH_ADMIN_ROLE` grants
    every tenant; "Role values are taken whole"."""
    app = apps["both"]
    a, b = tenant("bth"), tenant("bth")
    principal_a = client_principal("both-a", tenants=(a,))
    token_b = bearer(dev_token(app.env, tenants=[b]))
    # Both sent: the principal decides (granted a, not b); a bad token beside it is not even read.
    assert app.client.get(f"/events/{a}", headers={**principal_a, **token_b}).status_code == 200
    assert_403(app.client.get(f"/events/{b}", headers={**principal_a, **token_b}), "principal first")
    assert app.client.get(f"/events/{a}", headers={**principal_a, **bearer("not.a.token")}).status_code == 200
    # No principal: the bearer token is validated.
    assert app.client.get(f"/events/{b}", headers=token_b).status_code == 200
    assert_401(app.client.get(f"/events/{b}", headers=bearer("not.a.token")), INVALID_TOKEN, "bad bearer")
    assert_401(app.client.get(f"/events/{b}"), "Bearer", "nothing")
    # The admin role through the principal: every tenant and the service-wide figures.
    admin = client_principal("both-admin", roles=("Events.Admin",))
    r = app.client.get(f"/metrics/{b}", headers=admin)
    assert r.status_code == 200 and "service" in r.json(), r.text[:300]
    smuggled = client_principal("both-smuggler", roles=(f"Tenant.{a} Events.Admin",))
    assert_403(app.client.get(f"/events/{a}", headers=smuggled), "one role value, not two")


def test_a_rate_limit_of_zero_refuses_nothing(apps: dict[str, App]) -> None:
    """docs/security.md '3. Rate limit': "`RATE_LIMIT_EVENTS_PER_SECOND` (1000, `0` disables)": with 0
    and a burst of 3, bulks of 10 events for one tenant pass one after another."""
    app = apps["both"]
    t = tenant("off")
    caller = client_principal("off-caller", tenants=(t,))
    for n in range(4):
        events = [redis_event(t, 10 * n + i) for i in range(10)]
        r = app.client.post("/events/bulk", headers=caller, json={"events": events})
        assert r.status_code == 200 and r.json()["accepted"] == 10, (n, r.status_code, r.text[:300])
    assert app.client.get(f"/events/{t}", headers=caller, params={"limit": "100"}).json()["count"] == 40


# -- jwt+local-open (`open`) and page tokens across instances ---------------------------------------------

def test_local_open_makes_a_request_without_credentials_a_local_admin_and_checks_every_token(
        apps: dict[str, App]) -> None:
    """README 'Security': "Locally, `make run` uses `AUTH_MODE=jwt+local-open`: a request without
    credentials acts as a local admin (...); a request that carries a token is checked exactly as in
    Azure." docs/security.md: `X-MS-CLIENT-PRINCIPAL` "ignored" in that mode. README 'Health': "any
    caller under `make run`'s local-open mode also gets `latencyMs`, details and figures"."""
    app = apps["open"]
    a, b = tenant("opn"), tenant("opn")
    r = app.client.get(f"/metrics/{a}")
    assert r.status_code == 200 and "service" in r.json(), r.text[:300]
    assert app.client.get("/deadletters/_unmapped").status_code == 200  # admins only
    health = app.client.get("/health").json()
    assert all("latencyMs" in d for d in health["dependencies"].values()) and health["checkedAt"], health
    # A token is checked as in Azure: a tenant's grant, not an admin's; a bad token is refused.
    token_a = bearer(dev_token(app.env, tenants=[a]))
    assert app.client.get(f"/events/{a}", headers=token_a).status_code == 200
    assert "service" not in app.client.get(f"/metrics/{a}", headers=token_a).json()
    assert_403(app.client.get(f"/events/{b}", headers=token_a), "a tenant's token under local-open")
    now = int(time.time())
    expired = bearer(dev_token(app.env, roles=["Events.Admin"], iat=now - 7200, nbf=now - 7200,
                               exp=now - 3600))
    assert_401(app.client.get(f"/events/{a}", headers=expired), INVALID_TOKEN, "expired admin token")
    assert_401(app.client.get(f"/events/{a}", headers=bearer("not.a.token")), INVALID_TOKEN, "bad token")
    # An App Service principal is not trusted here: it neither grants nor turns into the local admin.
    r = app.client.get(f"/events/{b}", headers=client_principal("open-forged", tenants=(a,)))
    assert r.status_code == 401, (r.status_code, r.text)


def test_continuation_tokens_are_signed_with_page_token_key_the_same_on_every_instance(
        apps: dict[str, App]) -> None:
    """README 'API': paged reads "return a continuation token: the store's position, signed
    (HMAC-SHA256 with `PAGE_TOKEN_KEY`, the same on every instance)". A token one instance issued
    pages on at another with the same key (the same tables behind both); an instance with another key
    answers 400 naming the parameter."""
    t = tenant("pgk")
    caller = client_principal("pages-caller", tenants=(t,))
    issuer, same_key, other_key = apps["both"], apps["easyauth"], apps["open"]
    for size in (21, 22):
        r = issuer.client.put(f"/stream-config/{t}", headers=caller, json={"batchSize": size})
        assert r.status_code in (200, 201), r.text
    page = issuer.client.get(f"/audit/{t}", headers=caller, params={"limit": "1"}).json()
    assert page["items"][0]["after"]["batchSize"] == 22 and page["continuation"], page
    r = easy(same_key, "GET", f"/audit/{t}", caller,
             params={"limit": "1", "continuation": page["continuation"]})
    assert r.status_code == 200, r.text
    assert [i["after"]["batchSize"] for i in r.json()["items"]] == [21], r.text
    r = other_key.client.get(f"/audit/{t}", params={"limit": "1", "continuation": page["continuation"]})
    assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert [e["field"] for e in r.json()["errors"]] == ["continuation"], r.text


# -- bearer keys from the issuer's discovery document (an app of its own) --------------------------------

class FakeIssuer:
    """An Entra-like issuer at its HTTP boundary: `<issuer>/.well-known/openid-configuration` names the
    JWKS; RSA signing keys can be added (rotation); `failing` answers 500 to everything."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.failing = False
        self.metadata_served = self.jwks_served = self.failed = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                status, body = outer.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.issuer = f"{self.base}/{uuid.uuid4()}/v2.0"
        self.add_key()

    def answer(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            if self.failing:
                self.failed += 1
                return 500, b"{}"
            if path == self.issuer[len(self.base):] + "/.well-known/openid-configuration":
                self.metadata_served += 1
                meta = {"issuer": self.issuer, "jwks_uri": f"{self.base}/discovery/keys"}
                return 200, json.dumps(meta).encode()
            if path == "/discovery/keys":
                self.jwks_served += 1
                keys = [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid,
                         "use": "sig", "alg": "RS256"} for kid, k in self.keys.items()]
                return 200, json.dumps({"keys": keys}).encode()
            return 404, b"{}"

    def add_key(self) -> str:
        kid = uuid.uuid4().hex
        with self._lock:
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def token(self, kid: str, audience: str, tenants: list[str], **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": audience, "sub": "rs256-caller", "oid": str(uuid.uuid4()),
                "iat": now, "nbf": now, "exp": now + 600, "tenants": tenants, **claims}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def fetch_attempts(self) -> int:
        with self._lock:
            return self.metadata_served + self.jwks_served + self.failed

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


JWKS_CACHE_SECONDS, JWKS_MIN_REFRESH_SECONDS = 6, 2


def test_bearer_keys_come_from_the_discovery_document_are_cached_refreshed_at_most_so_often_and_rotate(
        own: Stack, tmp_path: Path) -> None:
    """docs/security.md '1. Identity': "**RS256 only** against the issuer's JWKS: `AUTH_JWKS_URL`, or when
    empty the `jwks_uri` of `<first issuer>/.well-known/openid-configuration`. Keys are cached
    `AUTH_JWKS_CACHE_SECONDS` (3600). A token with an unknown `kid` (key rotation) refetches the set
    once, but never more often than every `AUTH_JWKS_MIN_REFRESH_SECONDS` (60), so made-up key ids
    cannot flood the IdP. When a refresh fails the last good keys stay in use; if no key was ever
    fetched the answer is 503." Also: "`AUTH_AUDIENCE` (comma-separated (...))" and "a multi-tenant
    app's `{tenantid}` issuer template is not accepted". Cache 6 s, refresh at most every 2 s here."""
    idp = FakeIssuer()
    client_id = str(uuid.uuid4())
    app = None
    try:
        idp.failing = True
        app = start(own, tmp_path, AUTH_MODE="jwt", AUTH_JWKS_URL="", AUTH_DEV_SIGNING_KEY="",
                    AUTH_ISSUER=f"{idp.issuer},https://login.microsoftonline.com/{{tenantid}}/v2.0",
                    AUTH_AUDIENCE=f"api://grc-events,{client_id}",
                    AUTH_JWKS_CACHE_SECONDS=str(JWKS_CACHE_SECONDS),
                    AUTH_JWKS_MIN_REFRESH_SECONDS=str(JWKS_MIN_REFRESH_SECONDS))
        t = tenant("jwk")
        [k1] = idp.keys

        def get(token: str) -> httpx.Response:
            return app.client.get(f"/events/{t}", headers=bearer(token))

        # The issuer has never answered: no key to check against, 503 (not a 401 blaming the caller).
        first = idp.token(k1, "api://grc-events", [t])
        r = get(first)
        assert r.status_code == 503 and r.headers["retry-after"].isdigit(), (r.status_code, r.text)
        assert r.headers["content-type"].startswith(PROBLEM) and idp.failed >= 1
        idp.failing = False
        wait_for(lambda: get(first).status_code == 200, 15, 0.3, "served once the issuer answers")
        assert idp.metadata_served >= 1 and idp.jwks_served == 1  # found through the discovery document

        # Cached: more tokens with the same key, both audiences, fetch nothing.
        for audience in ("api://grc-events", client_id, "api://grc-events", client_id):
            assert get(idp.token(k1, audience, [t])).status_code == 200, audience
        assert idp.jwks_served == 1
        # The template is a fixed string, not any Entra tenant's issuer.
        another_entra_tenant = f"https://login.microsoftonline.com/{uuid.uuid4()}/v2.0"
        other_tenant = idp.token(k1, client_id, [t], iss=another_entra_tenant)
        assert_401(get(other_tenant), INVALID_TOKEN, "an issuer matching the {tenantid} template")

        # Made-up key ids: refused, and the IdP asked at most once per AUTH_JWKS_MIN_REFRESH_SECONDS.
        attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        before, t0 = idp.fetch_attempts(), time.monotonic()
        for _ in range(25):
            claims = {"iss": idp.issuer, "aud": client_id, "sub": "x", "exp": int(time.time()) + 600,
                      "tenants": [t]}
            made_up = jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": uuid.uuid4().hex})
            assert_401(get(made_up), INVALID_TOKEN, "unknown kid")
        elapsed = time.monotonic() - t0
        assert idp.fetch_attempts() - before <= 1 + math.ceil(elapsed / JWKS_MIN_REFRESH_SECONDS), (
            idp.fetch_attempts() - before, elapsed)

        # Key rotation: a token signed with a key published since is served after one refetch.
        k2 = idp.add_key()
        served = idp.jwks_served
        rotated = idp.token(k2, client_id, [t])
        wait_for(lambda: get(rotated).status_code == 200, 15, 0.3, "a token of the new key served")
        assert idp.jwks_served > served and get(idp.token(k1, client_id, [t])).status_code == 200

        # The issuer fails once the cache has expired: the last good keys stay in use.
        idp.failing = True
        failed = idp.failed
        time.sleep(JWKS_CACHE_SECONDS + 0.5)
        assert get(idp.token(k2, client_id, [t])).status_code == 200
        assert idp.failed > failed, "no refresh was attempted after the cache expired"
        assert "JWKS refresh (expired) failed" in app.log()
    finally:
        if app is not None:
            app.stop()
        idp.close()


# -- AUTH_* settings that cannot work (an app of its own each) ---------------------------------------------

SHORT_DEV_KEY = f"short-{uuid.uuid4().hex[:12]}"  # 19 bytes; a secret all the same
UNUSABLE = {
    "AUTH_AUDIENCE empty": ({"AUTH_AUDIENCE": ""}, "AUTH_AUDIENCE"),
    "unknown AUTH_MODE": ({"AUTH_MODE": "entra-id"}, "AUTH_MODE"),
    "leeway not a number": ({"AUTH_LEEWAY_SECONDS": "one minute"}, "AUTH_LEEWAY_SECONDS"),
    "dev key under 32 bytes": ({"AUTH_DEV_SIGNING_KEY": SHORT_DEV_KEY}, "AUTH_DEV_SIGNING_KEY"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_an_unusable_auth_setting_answers_503_naming_the_setting_once_in_the_log(
        case: str, own: Stack, tmp_path: Path) -> None:
    """docs/security.md '1. Identity': "When they cannot work (`AUTH_ISSUER` or `AUTH_AUDIENCE` empty, an
    unknown `AUTH_MODE`, a leeway that is not a number, a dev key under 32 bytes, `local-open` in
    Azure), the reason is logged once at ERROR and every protected route answers **503** `Retry-After:
    60` with the problem detail "Caller authentication is misconfigured (...)"" (the system test of
    AUTH_ISSUER empty and local-open in Azure is test_auth_misconfigured.py); /health still answers.
    The short dev key itself is not logged (docs/security.md '5.': secrets "never reach logs")."""
    overrides, setting = UNUSABLE[case]
    app = start(own, tmp_path, **overrides)
    try:
        t = tenant("cfg")
        some_token = bearer(jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "k" * 32,
                                       algorithm="HS256"))
        for method, path, body in (("GET", f"/events/{t}", None), ("POST", "/events", redis_event(t)),
                                   ("GET", f"/audit/{t}", None)):
            for headers in ({}, some_token):
                r = app.client.request(method, path, json=body, headers=headers)
                assert r.status_code == 503, (case, method, path, r.status_code, r.text)
                assert r.headers["retry-after"] == "60" and r.headers["content-type"].startswith(PROBLEM)
                assert r.json()["detail"] == DETAIL_MISCONFIGURED, r.text
        assert app.client.get("/health").status_code == 200
        lines = [line for line in app.log().splitlines() if "caller authentication is misconfigured" in line]
        assert len(lines) == 1 and " ERROR " in lines[0] and setting in lines[0], (case, lines)
        assert SHORT_DEV_KEY not in app.log(), "the development key is in the log"
    finally:
        app.stop()


# -- secrets (last: reads the logs of every app above) -------------------------------------------------------

def test_secrets_and_tokens_never_reach_the_logs(app: App, apps: dict[str, App]) -> None:
    """docs/security.md '5. Transport and secrets': "Secrets come only from settings (...) and are
    `repr=False` in `Settings`, so they never reach logs"; README 'Settings': `PAGE_TOKEN_KEY` "never
    logged"; '1. Identity': "the precise reason is logged, never returned" (the reason, not the
    token). The `both` app logs at debug; tokens good, expired and forged go to it first."""
    both = apps["both"]
    t = tenant("sec")
    now = int(time.time())
    tokens = [dev_token(both.env, tenants=[t]),
              dev_token(both.env, tenants=[t], iat=now - 7200, nbf=now - 7200, exp=now - 3600),
              dev_token(both.env, tenants=[t]).rsplit(".", 1)[0] + ".Zm9yZ2Vk"]
    statuses = [both.client.get(f"/events/{t}", headers=bearer(tok)).status_code for tok in tokens]
    assert statuses == [200, 401, 401], statuses
    principal = client_principal(f"sec-{uuid.uuid4().hex}", tenants=(t,))
    assert both.client.get(f"/events/{t}", headers=principal).status_code == 200
    env = both.env
    account_key = re.search(r"AccountKey=([^;]+)", env["STORAGE_CONNECTION_STRING"])
    secrets = {"AUTH_DEV_SIGNING_KEY": env["AUTH_DEV_SIGNING_KEY"], "PAGE_TOKEN_KEY": env["PAGE_TOKEN_KEY"],
               "PAGE_TOKEN_KEY (open app)": OPEN_PAGE_TOKEN_KEY, "COSMOS_DB_KEY": env["COSMOS_DB_KEY"],
               "the short development key": SHORT_DEV_KEY, "the function key": FUNCTION_KEY,
               "the storage account key": account_key.group(1) if account_key else "",
               **{f"bearer token {n}": tok for n, tok in enumerate(tokens)},
               **{f"signature of bearer token {n}": tok.rsplit(".", 1)[1] for n, tok in enumerate(tokens)},
               "client principal": principal["x-ms-client-principal"]}
    assert all(secrets.values()), [k for k, v in secrets.items() if not v]
    time.sleep(0.5)  # the runner's log is written by another process
    logs = {p.name: p.read_text(errors="replace") for p in {app.log_path, *MODULE_LOGS} if p.exists()}
    leaked = {(name, what) for name, text in logs.items() for what, value in secrets.items() if value in text}
    assert not leaked, leaked
