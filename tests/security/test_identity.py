"""Caller identity: bearer JWTs against a real JWKS endpoint (a local HTTP server standing in for
Entra ID, which does not run here), the development key, and the App Service principal header."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.core.settings import Settings
from shared.security.errors import AuthenticationError, IdentityProviderUnavailable
from shared.security.identity import Authenticator, JwksCache, mint_dev_token
from shared.security.principal import ALL_TENANTS, Principal

AUDIENCE = "api://grc-events-test"
# Generated per test run; dev-only, never a real secret.
DEV_KEY = "dev-only-" + base64.b64encode(__import__("os").urandom(32)).decode()


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY1, KEY2, ROGUE = _rsa(), _rsa(), _rsa()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    d = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**d, "kid": kid, "use": "sig"}


class FakeIdP:
    """openid-configuration + JWKS over real HTTP, counting requests per path."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": [jwk(KEY1, "k1")]}
        self.hits: dict[str, int] = {}
        self.fail = False
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                idp.hits[self.path] = idp.hits.get(self.path, 0) + 1
                if idp.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": idp.issuer, "jwks_uri": idp.issuer + "/discovery/keys"}
                elif self.path == "/discovery/keys":
                    body = idp.jwks
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def key_fetches(self) -> int:
        return self.hits.get("/discovery/keys", 0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdP]:
    server = FakeIdP()
    yield server
    server.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def settings_for(idp: FakeIdP, **overrides: Any) -> Settings:
    base = {
        "AUTH_MODE": "jwt",
        "AUTH_ISSUER": idp.issuer,
        "AUTH_AUDIENCE": AUDIENCE,
        "AUTH_DEV_SIGNING_KEY": "",
    }
    base.update(overrides)
    return Settings.model_validate(base)


@pytest.fixture
def fresh(idp: FakeIdP) -> Iterator[tuple[Authenticator, Clock]]:
    idp.jwks = {"keys": [jwk(KEY1, "k1")]}
    idp.hits.clear()
    idp.fail = False
    clock = Clock()
    settings = settings_for(idp)
    cache = JwksCache(issuer=idp.issuer, ttl=3600, min_refresh=60, clock=clock)
    yield Authenticator(settings, jwks=cache), clock


def rs256(key: rsa.RSAPrivateKey, kid: str, issuer: str, **claims: Any) -> str:
    """A new token every call (its own `jti`): a token already verified is served from the
    authenticator's cache, and these tests are about the checks and the key cache behind it."""
    now = int(time.time())
    payload = {"iss": issuer, "aud": AUDIENCE, "sub": "pairwise-sub", "oid": "oid-123", "iat": now,
               "nbf": now, "exp": now + 600, "name": "svc-a", "jti": uuid.uuid4().hex, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_entra_token_gives_principal_with_grants(fresh: tuple[Authenticator, Clock], idp: FakeIdP) -> None:
    auth, _ = fresh
    token = rs256(KEY1, "k1", idp.issuer, tenants=["acme", "globex"], roles=["Tenant.initech", "Reader"])
    p = await auth.authenticate(bearer(token))
    assert p == Principal(subject="oid-123", name="svc-a", tenants=frozenset({"acme", "globex", "initech"}),
                          roles=frozenset({"Tenant.initech", "Reader"}), auth_method="jwt")
    assert p.grants("acme") and not p.grants("umbrella")


async def test_space_separated_tenant_claim_and_admin_role(fresh: tuple[Authenticator, Clock], idp: FakeIdP) -> None:
    auth, _ = fresh
    p = await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer, tenants="acme  globex BAD_ID")))
    assert p.tenants == frozenset({"acme", "globex"})  # malformed ids never become grants
    admin = await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer, roles=["Events.Admin"])))
    assert admin.tenants == ALL_TENANTS and admin.grants("anything-at-all")


async def test_keys_are_cached(fresh: tuple[Authenticator, Clock], idp: FakeIdP) -> None:
    auth, clock = fresh
    for _ in range(5):
        await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer)))
        clock.t += 10
    assert idp.key_fetches == 1
    assert idp.hits["/.well-known/openid-configuration"] == 1
    clock.t += 3600  # TTL over: the next request refetches
    await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer)))
    assert idp.key_fetches == 2
    assert idp.hits["/.well-known/openid-configuration"] == 1  # jwks_uri is remembered


async def test_rotation_refetches_once_on_unknown_kid(fresh: tuple[Authenticator, Clock], idp: FakeIdP) -> None:
    auth, clock = fresh
    await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer)))
    assert idp.key_fetches == 1
    clock.t += 120
    idp.jwks = {"keys": [jwk(KEY2, "k2")]}  # the IdP rolled its key
    p = await auth.authenticate(bearer(rs256(KEY2, "k2", idp.issuer)))
    assert p.subject == "oid-123"
    assert idp.key_fetches == 2


async def test_unknown_kid_refetch_is_rate_limited(fresh: tuple[Authenticator, Clock], idp: FakeIdP) -> None:
    auth, clock = fresh
    await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer)))
    for i in range(20):  # an attacker sprays made-up key ids
        with pytest.raises(AuthenticationError):
            await auth.authenticate(bearer(rs256(ROGUE, f"made-up-{i}", idp.issuer)))
    assert idp.key_fetches == 1
    clock.t += 61
    with pytest.raises(AuthenticationError):
        await auth.authenticate(bearer(rs256(ROGUE, "made-up-x", idp.issuer)))
    assert idp.key_fetches == 2


async def test_last_good_keys_survive_an_idp_outage(fresh: tuple[Authenticator, Clock], idp: FakeIdP) -> None:
    auth, clock = fresh
    await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer)))
    idp.fail = True
    clock.t += 4000
    p = await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer)))
    assert p.subject == "oid-123"
    assert idp.key_fetches == 2  # it tried, failed, kept the old keys


async def test_no_keys_at_all_is_unavailable_not_unauthorized(fresh: tuple[Authenticator, Clock], idp: FakeIdP) -> None:
    auth, _ = fresh
    idp.fail = True
    with pytest.raises(IdentityProviderUnavailable) as err:
        await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer)))
    assert err.value.status == 503


def _none_token(issuer: str) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(
        {"iss": issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 600, "tenants": ["acme"]}) + "."


def _hs256_with_public_key(issuer: str) -> str:
    pem = KEY1.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    payload = {"iss": issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 600}
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT","kid":"k1"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
    import hashlib
    import hmac
    sig = hmac.new(pem, header + b"." + body, hashlib.sha256).digest()
    return (header + b"." + body + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode()


BAD_TOKENS = {
    "expired": lambda iss: rs256(KEY1, "k1", iss, exp=int(time.time()) - 3600),
    "not yet valid": lambda iss: rs256(KEY1, "k1", iss, nbf=int(time.time()) + 3600),
    "wrong audience": lambda iss: rs256(KEY1, "k1", iss, aud="api://someone-else"),
    "wrong issuer": lambda iss: rs256(KEY1, "k1", "https://login.microsoftonline.com/evil/v2.0"),
    "forged signature": lambda iss: rs256(ROGUE, "k1", iss),
    "alg none": _none_token,
    "hs256 with the rsa public key": _hs256_with_public_key,
    "no exp": lambda iss: rs256(KEY1, "k1", iss, exp=None),
    "no sub": lambda iss: rs256(KEY1, "k1", iss, sub=None),
    "no aud": lambda iss: rs256(KEY1, "k1", iss, aud=None),
    "no kid": lambda iss: jwt.encode({"iss": iss, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
                                     KEY1, algorithm="RS256"),
    "ps256 not allowed": lambda iss: jwt.encode({"iss": iss, "aud": AUDIENCE, "sub": "x",
                                                 "exp": int(time.time()) + 60}, KEY1, algorithm="PS256",
                                                headers={"kid": "k1"}),
    "tampered payload": lambda iss: (lambda t: t.split(".")[0] + "." + base64.urlsafe_b64encode(
        json.dumps({"iss": iss, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60,
                    "roles": ["Events.Admin"]}).encode()).rstrip(b"=").decode() + "." + t.split(".")[2])(
        rs256(KEY1, "k1", iss)),
    "garbage": lambda iss: "not-a-token",
    "three garbage parts": lambda iss: "a.b.c",
    "jwe shape": lambda iss: "a.b.c.d.e",
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_with_one_generic_detail(
    case: str, fresh: tuple[Authenticator, Clock], idp: FakeIdP
) -> None:
    auth, _ = fresh
    with pytest.raises(AuthenticationError) as err:
        await auth.authenticate(bearer(BAD_TOKENS[case](idp.issuer)))
    assert err.value.status == 401
    assert err.value.detail == AuthenticationError.detail  # the client never learns which check failed
    assert err.value.www_authenticate.startswith("Bearer")


async def test_expired_within_leeway_is_accepted(fresh: tuple[Authenticator, Clock], idp: FakeIdP) -> None:
    auth, _ = fresh
    p = await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer, exp=int(time.time()) - 20)))
    assert p.subject == "oid-123"


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer " + "a" * 20000 + ".b.c"},
])
async def test_missing_or_malformed_authorization(headers: dict[str, str], fresh: tuple[Authenticator, Clock]) -> None:
    auth, _ = fresh
    with pytest.raises(AuthenticationError):
        await auth.authenticate(headers)


async def test_dev_key_tokens(idp: FakeIdP) -> None:
    settings = settings_for(idp, AUTH_DEV_SIGNING_KEY=DEV_KEY)
    auth = Authenticator(settings)
    token = mint_dev_token(settings, "local-dev", tenants=["acme"], name="dev")
    p = await auth.authenticate({"authorization": f"bearer {token}"})  # header and scheme case-insensitive
    assert (p.subject, p.tenants, p.auth_method) == ("local-dev", frozenset({"acme"}), "dev-jwt")
    # The same token is worthless where no dev key is configured (Azure).
    with pytest.raises(AuthenticationError):
        await Authenticator(settings_for(idp)).authenticate(bearer(token))
    # ... and a token signed with another HS256 key is refused.
    other = jwt.encode(jwt.decode(token, options={"verify_signature": False}), "x" * 40, algorithm="HS256")
    with pytest.raises(AuthenticationError):
        await auth.authenticate(bearer(other))


def test_short_dev_key_is_a_configuration_error(idp: FakeIdP) -> None:
    with pytest.raises(ValueError):
        Authenticator(settings_for(idp, AUTH_DEV_SIGNING_KEY="short"))


def client_principal(claims: list[tuple[str, str]], **extra: Any) -> str:
    body = {
        "auth_typ": "aad",
        "claims": [{"typ": t, "val": v} for t, v in claims],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        **extra,
    }
    return base64.b64encode(json.dumps(body).encode()).decode()


APP_SERVICE_CLAIMS = [
    ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid-app"),
    ("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "ops@contoso.com"),
    ("http://schemas.microsoft.com/ws/2008/06/identity/claims/role", "Tenant.acme"),
    ("http://schemas.microsoft.com/ws/2008/06/identity/claims/role", "Reader"),
    ("tenants", "globex initech"),
]


async def test_app_service_principal_is_trusted_only_when_configured(idp: FakeIdP) -> None:
    headers = {"X-MS-CLIENT-PRINCIPAL": client_principal(APP_SERVICE_CLAIMS)}
    with pytest.raises(AuthenticationError):  # AUTH_MODE=jwt: anyone could have sent that header
        await Authenticator(settings_for(idp)).authenticate(headers)
    p = await Authenticator(settings_for(idp, AUTH_MODE="appservice")).authenticate(headers)
    assert p == Principal(subject="oid-app", name="ops@contoso.com",
                          tenants=frozenset({"acme", "globex", "initech"}),
                          roles=frozenset({"Tenant.acme", "Reader"}), auth_method="appservice")


async def test_jwt_plus_appservice_accepts_either(idp: FakeIdP, fresh: tuple[Authenticator, Clock]) -> None:
    auth = Authenticator(settings_for(idp, AUTH_MODE="jwt+appservice"), jwks=fresh[0].jwks)
    a = await auth.authenticate({"x-ms-client-principal": client_principal(APP_SERVICE_CLAIMS)})
    b = await auth.authenticate(bearer(rs256(KEY1, "k1", idp.issuer)))
    assert (a.auth_method, b.auth_method) == ("appservice", "jwt")
    # In appservice-only mode a bearer token alone is not enough: the platform validates tokens.
    with pytest.raises(AuthenticationError):
        await Authenticator(settings_for(idp, AUTH_MODE="appservice")).authenticate(
            bearer(rs256(KEY1, "k1", idp.issuer)))


@pytest.mark.parametrize("value", [
    "!!!not base64!!!",
    base64.b64encode(b"not json").decode(),
    base64.b64encode(b'["a list"]').decode(),
    base64.b64encode(b'{"auth_typ":"aad"}').decode(),
    client_principal([("tenants", "acme")]),  # no subject at all
])
async def test_malformed_app_service_principal(value: str, idp: FakeIdP) -> None:
    with pytest.raises(AuthenticationError):
        await Authenticator(settings_for(idp, AUTH_MODE="appservice")).authenticate({"X-MS-CLIENT-PRINCIPAL": value})


async def test_app_service_admin_role_and_header_fallbacks(idp: FakeIdP) -> None:
    value = client_principal([("roles", "Events.Admin")])
    p = await Authenticator(settings_for(idp, AUTH_MODE="appservice")).authenticate(
        {"X-MS-CLIENT-PRINCIPAL": value, "X-MS-CLIENT-PRINCIPAL-ID": "id-from-header",
         "X-MS-CLIENT-PRINCIPAL-NAME": "name-from-header"})
    assert (p.subject, p.name, p.tenants) == ("id-from-header", "name-from-header", ALL_TENANTS)


async def test_devtoken_cli_mints_a_token_the_app_accepts(
    idp: FakeIdP, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from shared.security import devtoken

    for k, v in {"AUTH_ISSUER": idp.issuer, "AUTH_AUDIENCE": AUDIENCE, "AUTH_DEV_SIGNING_KEY": DEV_KEY}.items():
        monkeypatch.setenv(k, v)
    devtoken.main(["--settings", str(tmp_path / "none.json"), "--tenant", "acme", "--subject", "me"])
    token = capsys.readouterr().out.strip()
    p = await Authenticator(settings_for(idp, AUTH_DEV_SIGNING_KEY=DEV_KEY)).authenticate(bearer(token))
    assert (p.subject, p.tenants) == ("me", frozenset({"acme"}))
    monkeypatch.setenv("AUTH_DEV_SIGNING_KEY", "")
    with pytest.raises(ValueError):
        devtoken.main(["--settings", str(tmp_path / "none.json"), "--tenant", "acme"])


def test_local_open_is_refused_in_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.core.settings import Settings
    from shared.security.identity import Authenticator

    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    with pytest.raises(ValueError, match="local-open"):
        Authenticator(Settings(AUTH_MODE="jwt+local-open"))


class WallClock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def _counting_decode(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = jwt.decode

    def decode(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("shared.security.identity.jwt.decode", decode)
    return calls


async def test_a_verified_token_is_not_decoded_again_until_it_expires(
        idp: FakeIdP, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.security.identity import VERIFIED_TOKEN_SECONDS

    idp.jwks = {"keys": [jwk(KEY1, "k1")]}
    wall = WallClock()
    auth = Authenticator(settings_for(idp, AUTH_LEEWAY_SECONDS="30"), now=wall)
    calls = _counting_decode(monkeypatch)
    exp = int(wall.t) + 3 * VERIFIED_TOKEN_SECONDS
    token = rs256(KEY1, "k1", idp.issuer, exp=exp, tenants=["acme"])
    first = await auth.authenticate(bearer(token))
    assert await auth.authenticate(bearer(token)) == first and calls == [1]  # the second from the cache
    wall.t += VERIFIED_TOKEN_SECONDS + 1  # verified too long ago: checked again
    assert await auth.authenticate(bearer(token)) == first and calls == [1, 1]
    wall.t = exp + 31  # past exp and the leeway: refused, cached or not
    with pytest.raises(AuthenticationError):
        await auth.authenticate(bearer(token))


async def test_only_the_same_token_bytes_hit_the_cache(idp: FakeIdP, monkeypatch: pytest.MonkeyPatch) -> None:
    idp.jwks = {"keys": [jwk(KEY1, "k1")]}
    auth = Authenticator(settings_for(idp))
    token = rs256(KEY1, "k1", idp.issuer)
    await auth.authenticate(bearer(token))
    head, payload, sig = token.split(".")
    forged_payload = base64.urlsafe_b64encode(json.dumps({
        **jwt.decode(token, options={"verify_signature": False}), "roles": ["Events.Admin"]}).encode()).rstrip(b"=")
    for bad in (f"{head}.{forged_payload.decode()}.{sig}",  # the cached token's signature on other claims
                f"{head}.{payload}.{sig[:-2]}AA"):  # the cached token's claims, another signature
        with pytest.raises(AuthenticationError):
            await auth.authenticate(bearer(bad))


async def test_the_verified_token_cache_is_bounded(idp: FakeIdP, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.security.identity as identity

    monkeypatch.setattr(identity, "VERIFIED_TOKENS", 3)
    idp.jwks = {"keys": [jwk(KEY1, "k1")]}
    auth = Authenticator(settings_for(idp))
    tokens = [rs256(KEY1, "k1", idp.issuer, sub=f"caller-{i}", oid=None) for i in range(5)]
    for t in tokens:
        await auth.authenticate(bearer(t))
    assert list(auth._verified) == tokens[2:]  # the oldest went first
