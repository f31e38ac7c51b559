"""Who is calling: the App Service Authentication principal or a bearer JWT, as a `Principal`.

Two sources, chosen by AUTH_MODE (docs/security.md):
- `X-MS-CLIENT-PRINCIPAL` (base64 JSON `{auth_typ, claims:[{typ,val}], name_typ, role_typ}`), set by
  App Service Authentication after it validated the caller. Trusted only when AUTH_MODE says that
  module runs in front of the app: without it anyone can send the header.
- `Authorization: Bearer <JWT>` validated here with PyJWT: RS256 against the issuer's JWKS (Entra ID),
  or HS256 against AUTH_DEV_SIGNING_KEY (local development only; never used when empty). The
  algorithm decides the key source, and each source has exactly one algorithm, so an RSA public key
  can never be used as an HMAC secret (RFC 8725 2.1) and `alg: none` has no key at all.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import time
from typing import Any, Callable, Literal, Mapping

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.core.settings import Settings
from shared.security.errors import AuthMisconfigured, AuthenticationError, IdentityProviderUnavailable
from shared.security.principal import ALL_TENANTS, AuthMethod, Principal
from shared.security.tenants import claim_values, grants_from

log = logging.getLogger(__name__)

PRINCIPAL_HEADER = "x-ms-client-principal"
MAX_PRINCIPAL_HEADER = 32 * 1024
MAX_BEARER = 16 * 1024
MIN_DEV_KEY_BYTES = 32  # HS256 wants a key at least as long as its output (RFC 7518 3.2)
MAX_JWKS_BYTES = 1024 * 1024
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
# Tokens verified lately, so a caller that sends the same token on every request (a service with a
# token valid for an hour) pays for PyJWT's decode and signature check once, not on every single
# POST /events (docs/performance.md). Keyed by the whole token string, so
# only the very same bytes hit; a hit still checks `exp` (with the leeway), and an entry is
# re-verified after VERIFIED_TOKEN_SECONDS (shorter than the JWKS cache, which already keeps a
# rotated-out key that long). Failures are never cached.
VERIFIED_TOKENS = 1024
VERIFIED_TOKEN_SECONDS = 300.0
# Compact JWS: three base64url parts (a JWE has five and is refused).
_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")

# Claim types App Service uses after its default claim mapping, beside the short JWT names.
_OID = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
_SUB = ("sub", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier")
_ROLE = ("roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_NAME = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")


class JwksCache:
    """The issuer's signing keys by `kid`, cached for `ttl` seconds.

    An unknown `kid` refetches once (key rotation), but never more often than every `min_refresh`
    seconds, so tokens with made-up key ids cannot turn this into a request flood on the IdP.
    When a refresh fails the last good keys stay in use.
    """

    def __init__(
        self,
        *,
        jwks_url: str = "",
        issuer: str = "",
        ttl: float = 3600.0,
        min_refresh: float = 60.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not jwks_url and not issuer:
            raise ValueError("JwksCache needs a jwks_url or an issuer")
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, Any] | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.fetches = 0  # JWKS documents fetched (for tests and logs)

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def key(self, kid: str) -> Any:
        """The public key for `kid`; AuthenticationError if the issuer does not publish it."""
        if self._keys is None or self._clock() - self._fetched_at >= self._ttl:
            await self._refresh(reason="expired")
        if self._keys is not None and kid in self._keys:
            return self._keys[kid]
        await self._refresh(reason="unknown kid")
        if self._keys is not None and kid in self._keys:
            return self._keys[kid]
        if self._keys is None:
            raise IdentityProviderUnavailable("no signing keys could be fetched")
        raise AuthenticationError("unknown key id")

    async def _refresh(self, reason: str) -> None:
        seen = self._attempted_at
        async with self._get_lock():
            if self._attempted_at != seen:
                return  # another request refreshed (or tried to) while this one waited
            if self._clock() - self._attempted_at < self._min_refresh:
                return
            self._attempted_at = self._clock()
            try:
                keys = await self._fetch()
            except Exception as exc:  # network, JSON, key format: keep the last good keys
                log.warning("JWKS refresh (%s) failed: %s", reason, type(exc).__name__)
                return
            self._keys, self._fetched_at = keys, self._clock()

    async def _fetch(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            url = self._jwks_url
            if not url:
                meta = await _get_json(client, self._issuer.rstrip("/") + "/.well-known/openid-configuration")
                url = meta.get("jwks_uri")
                if not isinstance(url, str) or not url:
                    raise ValueError("openid-configuration has no jwks_uri")
                self._jwks_url = url  # the metadata names it; no need to read it again
            doc = await _get_json(client, url)
        self.fetches += 1
        keys: dict[str, Any] = {}
        for jwk in doc.get("keys", []) if isinstance(doc, dict) else []:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
                continue
            kid = jwk.get("kid")
            if not isinstance(kid, str):
                continue
            try:
                keys[kid] = jwt.PyJWK(jwk, algorithm="RS256").key
            except jwt.PyJWTError:
                log.warning("JWKS key %s skipped: not a usable RSA key", kid)
        if not keys:
            raise ValueError("JWKS holds no usable RSA signing key")
        return keys


async def _get_json(client: httpx.AsyncClient, url: str) -> Any:
    resp = await client.get(url, headers={"Accept": "application/json"})
    resp.raise_for_status()
    if len(resp.content) > MAX_JWKS_BYTES:
        raise ValueError("identity metadata too large")
    return resp.json()


_AUTH_SETTING = {"mode": "AUTH_MODE", "leeway_seconds": "AUTH_LEEWAY_SECONDS",
                 "jwks_cache_seconds": "AUTH_JWKS_CACHE_SECONDS",
                 "jwks_min_refresh_seconds": "AUTH_JWKS_MIN_REFRESH_SECONDS"}


class AuthOptions(BaseModel):
    """The typed AUTH_* settings, validated when an authenticator is built (see `Settings.auth_mode`)."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["jwt", "appservice", "jwt+appservice", "jwt+local-open"]
    leeway_seconds: float = Field(ge=0)
    jwks_cache_seconds: float = Field(gt=0)
    jwks_min_refresh_seconds: float = Field(ge=0)

    @classmethod
    def of(cls, settings: Settings) -> "AuthOptions":
        """ValueError naming each bad setting (its message only: values never reach the log)."""
        try:
            return cls(mode=settings.auth_mode, leeway_seconds=settings.auth_leeway_seconds,
                       jwks_cache_seconds=settings.auth_jwks_cache_seconds,
                       jwks_min_refresh_seconds=settings.auth_jwks_min_refresh_seconds)
        except ValidationError as exc:
            problems = [f"{_AUTH_SETTING.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()]
            raise ValueError("; ".join(problems)) from None


class Authenticator:
    """Turns request headers into a Principal, or raises AuthenticationError (-> 401).

    Construction raises ValueError when the AUTH_* settings cannot work (see `get_authenticator`)."""

    def __init__(self, settings: Settings, *, jwks: JwksCache | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._now = now  # wall clock: token times are epoch seconds
        self._verified: dict[str, tuple[Principal, float, float]] = {}  # token -> (principal, exp, verified at)
        self._options = options = AuthOptions.of(settings)
        self._issuers = settings.auth_issuers()
        self._audiences = settings.auth_audiences()
        self._use_jwt = "jwt" in options.mode.split("+")
        self._use_appservice = "appservice" in options.mode.split("+")
        # `make run` only: a caller without credentials acts as a local admin, as under `func start`,
        # so the original curl example works verbatim. Refused where App Service runs the app.
        self._local_open = "local-open" in options.mode.split("+")
        if self._local_open and os.environ.get("WEBSITE_INSTANCE_ID"):
            raise ValueError("AUTH_MODE local-open is for the local runner only and is refused in Azure")
        dev_key = settings.auth_dev_signing_key.encode()
        if dev_key and len(dev_key) < MIN_DEV_KEY_BYTES:
            raise ValueError(f"AUTH_DEV_SIGNING_KEY must be at least {MIN_DEV_KEY_BYTES} bytes")
        self._dev_key = dev_key
        if self._use_jwt and not (self._issuers and self._audiences):
            raise ValueError("AUTH_ISSUER and AUTH_AUDIENCE are required for bearer tokens")
        self._jwks = jwks or JwksCache(
            jwks_url=settings.auth_jwks_url,
            issuer=self._issuers[0] if self._issuers else "",
            ttl=options.jwks_cache_seconds,
            min_refresh=options.jwks_min_refresh_seconds,
        )

    @property
    def jwks(self) -> JwksCache:
        return self._jwks

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        h = {k.lower(): v for k, v in headers.items()}
        if self._use_appservice and h.get(PRINCIPAL_HEADER):
            return self._from_client_principal(h)
        if self._use_jwt and h.get("authorization"):
            return await self._from_bearer(h["authorization"])
        if self._local_open and not h.get("authorization") and not h.get(PRINCIPAL_HEADER):
            return Principal(subject="local-open", name="local development caller", tenants=ALL_TENANTS,
                             auth_method="local-open")
        raise AuthenticationError("no credentials", credentials_sent=False)

    # -- bearer JWT ---------------------------------------------------------------------------
    async def _from_bearer(self, authorization: str) -> Principal:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_BEARER or not _JWS.fullmatch(token):
            raise AuthenticationError("malformed authorization header")
        hit = self._verified.get(token)
        if hit is not None:
            principal, exp, verified_at = hit
            now = self._now()
            if now >= exp + self._options.leeway_seconds:  # PyJWT's own test: expired, whatever else holds
                del self._verified[token]
                raise AuthenticationError("token refused: ExpiredSignatureError")
            if now - verified_at < VERIFIED_TOKEN_SECONDS:
                return principal
            del self._verified[token]  # verified too long ago: check the signature and claims again
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"malformed token header: {type(exc).__name__}") from None
        alg = header.get("alg")
        method: AuthMethod
        if alg == "HS256" and self._dev_key:
            key: Any = self._dev_key
            method = "dev-jwt"
        elif alg == "RS256":
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise AuthenticationError("token has no key id")
            key = await self._jwks.key(kid)
            method = "jwt"
        else:
            raise AuthenticationError(f"algorithm not allowed: {str(alg)[:16]}")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],  # one algorithm per key source, chosen above from the allow-list
                audience=self._audiences,
                issuer=self._issuers,
                leeway=self._options.leeway_seconds,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"token refused: {type(exc).__name__}") from None
        principal = self._principal(claims, roles=claim_values(claims.get("roles")), method=method)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (principal, float(claims["exp"]), self._now())
        return principal

    def _principal(self, claims: Mapping[str, Any], roles: list[str], method: AuthMethod) -> Principal:
        # Entra: `oid` is the caller's stable object id across apps; `sub` is per application.
        subject = next((claims[c] for c in ("oid", "sub") if isinstance(claims.get(c), str)), "")
        if not subject:
            raise AuthenticationError("token has no subject")
        name = next(
            (claims[c] for c in ("name", "preferred_username", "appid", "azp") if isinstance(claims.get(c), str)),
            "",
        )
        grants = grants_from(
            claim_values(claims.get(self._settings.auth_tenant_claim)), roles, self._settings.auth_admin_role
        )
        return Principal(subject=subject, name=name, tenants=grants, roles=frozenset(roles), auth_method=method)

    # -- App Service Authentication -------------------------------------------------------------
    def _from_client_principal(self, h: Mapping[str, str]) -> Principal:
        raw = h[PRINCIPAL_HEADER].strip()
        if len(raw) > MAX_PRINCIPAL_HEADER:
            raise AuthenticationError("client principal too large")
        try:
            data = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True))
        except (binascii.Error, ValueError):
            raise AuthenticationError("malformed client principal") from None
        if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
            raise AuthenticationError("malformed client principal")
        by_type: dict[str, list[str]] = {}
        for c in data["claims"]:
            if isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str):
                by_type.setdefault(c["typ"], []).append(c["val"])

        def first(types: tuple[str, ...]) -> str:
            return next((by_type[t][0] for t in types if by_type.get(t)), "")

        role_types = _ROLE + ((data["role_typ"],) if isinstance(data.get("role_typ"), str) else ())
        name_types = ((data["name_typ"],) if isinstance(data.get("name_typ"), str) else ()) + _NAME
        # One claim entry per role: each value whole (never split, so no value can smuggle a second role).
        roles = sorted({v for t in set(role_types) for v in by_type.get(t, [])})
        subject = first(_OID) or first(_SUB) or h.get("x-ms-client-principal-id", "")
        if not subject:
            raise AuthenticationError("client principal has no subject")
        name = first(name_types) or h.get("x-ms-client-principal-name", "")
        tenant_claim = [t for v in by_type.get(self._settings.auth_tenant_claim, []) for t in claim_values(v)]
        grants = grants_from(tenant_claim, roles, self._settings.auth_admin_role)
        return Principal(
            subject=subject, name=name, tenants=grants, roles=frozenset(roles), auth_method="appservice"
        )


# Per settings object: its Authenticator, or why none can be built (the ValueError's message).
_authenticators: dict[int, tuple[Settings, Authenticator | str]] = {}


def get_authenticator(settings: Settings) -> Authenticator:
    """One Authenticator (and so one JWKS cache) per settings object, for the life of the worker.

    Built on the first request that needs a caller identity, never with the service container: when
    the AUTH_* settings cannot work (AUTH_ISSUER empty, an unknown AUTH_MODE, ...), the reason is
    logged once at ERROR and every protected route raises AuthMisconfigured (503), while the Cosmos DB
    triggers, timers, queue triggers and /health, which need no caller identity, keep running."""
    hit = _authenticators.get(id(settings))
    if hit is None or hit[0] is not settings:
        built: Authenticator | str
        try:
            built = Authenticator(settings)
        except ValueError as exc:
            built = str(exc)
            log.error("caller authentication is misconfigured (%s): protected routes answer 503 until the "
                      "AUTH_* settings are corrected", built)
        hit = (settings, built)
        _authenticators[id(settings)] = hit
    if isinstance(hit[1], str):
        raise AuthMisconfigured(hit[1])
    return hit[1]


async def authenticate(headers: Mapping[str, str], settings: Settings) -> Principal:
    return await get_authenticator(settings).authenticate(headers)


def mint_dev_token(
    settings: Settings,
    subject: str,
    *,
    tenants: list[str] | None = None,
    roles: list[str] | None = None,
    name: str = "",
    ttl_seconds: int = 3600,
    now: float | None = None,
    **extra: Any,
) -> str:
    """An HS256 token signed with AUTH_DEV_SIGNING_KEY, for the local runner and tests only."""
    if not settings.auth_dev_signing_key:
        raise ValueError("AUTH_DEV_SIGNING_KEY is empty: development tokens are disabled")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": settings.auth_issuers()[0],
        "aud": settings.auth_audiences()[0],
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    if name:
        claims["name"] = name
    if tenants is not None:
        claims[settings.auth_tenant_claim] = tenants
    if roles is not None:
        claims["roles"] = roles
    claims.update(extra)
    return jwt.encode(claims, settings.auth_dev_signing_key, algorithm="HS256")
