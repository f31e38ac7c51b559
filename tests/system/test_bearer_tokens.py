"""Bad bearer tokens through the running app, on the production validation path (docs/security.md
"1. Identity"; README "API").

The app runs as in Azure: `AUTH_MODE=jwt`, an Entra v2 issuer and an audience, the signing keys
fetched over HTTP from `AUTH_JWKS_URL` (`FakeEntraKeys`: a fake of Entra ID's JWKS endpoint at its
HTTP boundary, RS256 as Entra signs) and no development key (`AUTH_DEV_SIGNING_KEY` empty, as
infra/ deploys it, so HS256 is refused). Promised: every bad token (forged, expired, wrong audience
or issuer, unsigned, HS256, malformed) is the same 401 with `WWW-Authenticate: Bearer
error="invalid_token"` and the one detail "A valid caller identity is required."; the reason goes to
the log only; `exp`/`nbf` allow `AUTH_LEEWAY_SECONDS` (60) of clock skew. A request with no
credentials gets the bare challenge `WWW-Authenticate: Bearer` (README; RFC 6750 3.1).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.system.fakes import FakeEntraKeys
from tests.system.harness import SAMPLE_SETTINGS, App, own_stack_and_app, tenant

ISSUER = f"https://login.microsoftonline.com/{uuid.uuid4()}/v2.0"
AUDIENCE = "api://grc-events"
LEEWAY = 60  # AUTH_LEEWAY_SECONDS, set explicitly below
DETAIL = "A valid caller identity is required."
INVALID_TOKEN = 'Bearer error="invalid_token"'
# Words that would tell a caller which check failed.
REASONS = ("expire", "audience", "issuer", "signature", "algorithm", "alg", "kid", "key", "nbf", "exp",
           "decode", "jwks", "hs256", "rs256", "none")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[App, FakeEntraKeys]]:
    """One app of this module, with Azure's token validation against the fake Entra keys (its own
    stack: one change feed per stack)."""
    work: Path = tmp_path_factory.mktemp("bearer-tokens")
    entra = FakeEntraKeys()
    try:
        with own_stack_and_app(work, ("redis", "azurite", "cosmos"), AUTH_MODE="jwt", AUTH_ISSUER=ISSUER,
                               AUTH_AUDIENCE=AUDIENCE, AUTH_JWKS_URL=entra.jwks_url, AUTH_DEV_SIGNING_KEY="",
                               AUTH_LEEWAY_SECONDS=str(LEEWAY), SYSTEM_PERFORMANCE_EVENTS="false") as (_, app):
            yield app, entra
    finally:
        entra.close()


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _bad_tokens(entra: FakeEntraKeys, t: str) -> dict[str, str]:
    """name -> a token the app must refuse, each wrong in one way only."""
    def claims(**changes: Any) -> dict[str, Any]:
        return {**entra.claims(ISSUER, AUDIENCE, [t]), **changes}

    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = entra.sign(claims())
    head, _, sig = good.split(".")
    public_pem = entra.public_key_pem()
    return {
        "forged signature (another key, the tenant's kid)":
            jwt.encode(claims(), other_key, algorithm="RS256", headers={"kid": entra.kid}),
        "payload edited after signing": f"{head}.{_b64(claims(tenants=[t, 'someone-else']))}.{sig}",
        "expired": entra.sign(claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)),
        "expired just beyond the leeway": entra.sign(claims(iat=now - 600, nbf=now - 600, exp=now - LEEWAY - 30)),
        "not valid yet": entra.sign(claims(nbf=now + 3600, exp=now + 7200)),
        "wrong audience": entra.sign(claims(aud="api://another-app")),
        "wrong issuer": entra.sign(claims(iss=f"https://login.microsoftonline.com/{uuid.uuid4()}/v2.0")),
        "no exp": entra.sign({k: v for k, v in claims().items() if k != "exp"}),
        "unknown kid": jwt.encode(claims(), other_key, algorithm="RS256", headers={"kid": uuid.uuid4().hex}),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims())}.",
        "HS256 with the sample development key (none is set in Azure)":
            jwt.encode(claims(), SAMPLE_SETTINGS["AUTH_DEV_SIGNING_KEY"], algorithm="HS256"),
        "HS256 keyed with the issuer's public key": _hs256(claims(), public_pem),
        "not a JWT": "not-a-token",
    }


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand: PyJWT itself refuses to use a PEM public key as an HMAC secret."""
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _get(app: App, t: str, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    return app.client.get(f"/events/{t}", headers=headers)


def _generic(r: httpx.Response) -> dict[str, Any]:
    """The 401 problem without its correlation id (which differs per request)."""
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    problem = r.json()
    assert problem["correlationId"] == r.headers["x-correlation-id"]
    return {k: v for k, v in problem.items() if k != "correlationId"}


def test_bad_tokens_get_one_generic_401_and_a_token_within_the_leeway_passes(
        deployed: tuple[App, FakeEntraKeys]) -> None:
    app, entra = deployed
    t = tenant("tok")
    now = int(time.time())
    good = entra.sign(entra.claims(ISSUER, AUDIENCE, [t]))
    r = _get(app, t, good)
    assert r.status_code == 200 and r.json()["tenantId"] == t, r.text
    assert entra.fetches >= 1  # the keys came from AUTH_JWKS_URL, as from Entra ID

    # Expired by less than AUTH_LEEWAY_SECONDS: clock skew, accepted (30 s of margin each way).
    skewed = entra.sign({**entra.claims(ISSUER, AUDIENCE, [t]), "iat": now - 600, "nbf": now - 600,
                         "exp": now - LEEWAY + 30})
    r = _get(app, t, skewed)
    assert r.status_code == 200, r.text

    refusals: dict[str, dict[str, Any]] = {}
    for name, token in _bad_tokens(entra, t).items():
        r = _get(app, t, token)
        refusals[name] = _generic(r)
        assert r.headers["www-authenticate"] == INVALID_TOKEN, (name, r.headers)
        said = (r.text + json.dumps({k: v for k, v in r.headers.items() if k != "www-authenticate"})).lower()
        assert not [w for w in REASONS if w in said.replace(t, "")], (name, r.text, r.headers)
    expected = {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": DETAIL,
                "instance": f"/events/{t}"}
    assert {name: p for name, p in refusals.items() if p != expected} == {}

    # No credentials at all: the bare challenge (no error code), the same detail.
    r = _get(app, t, None)
    assert _generic(r) == expected
    assert r.headers["www-authenticate"] == "Bearer", r.headers

    # The precise reason is in the log (never in the answer): expiry and audience named there.
    log = app.log()
    assert "ExpiredSignatureError" in log and "InvalidAudienceError" in log, log[-3000:]
