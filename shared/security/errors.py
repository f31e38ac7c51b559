"""Security refusals. Each carries the HTTP status and a generic detail for the client.

The detail never says which check failed (signature, audience, expiry, ...): that would help an
attacker tune a forged token. The precise reason goes to the log only, via `reason`.
"""
from __future__ import annotations


class SecurityError(Exception):
    status: int = 500
    title: str = "Error"
    detail: str = "The request was refused."

    def __init__(self, reason: str = "") -> None:
        # `reason` is for logs; never echo it to the client.
        super().__init__(reason or self.detail)
        self.reason = reason


class AuthenticationError(SecurityError):
    """No valid caller identity -> 401 with `WWW-Authenticate: Bearer`."""

    status = 401
    title = "Unauthorized"
    detail = "A valid caller identity is required."
    www_authenticate = 'Bearer error="invalid_token"'

    def __init__(self, reason: str = "", *, credentials_sent: bool = True) -> None:
        super().__init__(reason)
        # RFC 6750 3.1: a request without credentials gets the challenge without an error code.
        if not credentials_sent:
            self.www_authenticate = "Bearer"


class IdentityProviderUnavailable(SecurityError):
    """The signing keys could not be fetched and none are cached -> 503, the client may retry."""

    status = 503
    title = "Service Unavailable"
    detail = "The caller identity cannot be verified right now."
    retry_after_seconds = 30


class AuthMisconfigured(SecurityError):
    """The AUTH_* settings cannot build an authenticator (e.g. AUTH_ISSUER empty) -> 503.

    Not 500: the condition is known and named, not a bug, and the same request succeeds unchanged once
    an operator fixes the settings (App Service restarts the app on a settings change), which is what
    503 Service Unavailable says. Not 401: the caller's credentials are not at fault, and a 401 would
    send clients into refreshing tokens that can never be accepted. Only the routes that need a caller
    identity answer it; /health, change capture, timers and queue triggers keep running.
    """

    status = 503
    title = "Service Unavailable"
    detail = ("Caller authentication is misconfigured on this service, so no caller identity can be "
              "verified; an operator must correct its AUTH_* settings.")
    retry_after_seconds = 60


class TenantForbidden(SecurityError):
    """The identity is valid but not granted the tenant -> 403 (the same answer whether or not the
    tenant exists, so a caller cannot probe for tenants)."""

    status = 403
    title = "Forbidden"
    detail = "The caller is not granted access to this tenant."


class RateLimited(SecurityError):
    """The tenant's token bucket is empty -> 429 with Retry-After."""

    status = 429
    title = "Too Many Requests"
    detail = "The tenant's request rate limit is exceeded; retry after the Retry-After interval."

    def __init__(self, retry_after_seconds: int, reason: str = "") -> None:
        super().__init__(reason)
        self.retry_after_seconds = retry_after_seconds


def response_headers(exc: SecurityError) -> dict[str, str]:
    """The headers an HTTP answer to `exc` must carry."""
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": exc.www_authenticate}
    if isinstance(exc, (RateLimited, IdentityProviderUnavailable, AuthMisconfigured)):
        return {"Retry-After": str(exc.retry_after_seconds)}
    return {}
