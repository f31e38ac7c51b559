"""The instance's Redis client (redis.asyncio), shared by destinations, metrics and config versions."""
from __future__ import annotations

from redis.asyncio import Redis
from redis.credentials import CredentialProvider
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.settings import Settings


def tenant_key(tenant_id: str, *parts: str) -> str:
    """Redis-Cluster-safe key: every key of a tenant hashes to one slot via the {tenant} tag."""
    return ":".join(("grc", "{" + tenant_id + "}", *parts))


ENTRA_REDIS_SCOPE = "https://redis.azure.com/.default"


def entra_credentials() -> CredentialProvider:
    """The managed identity's token as Redis credentials (user = the identity's object id),
    renewed before it expires and re-sent on open connections (redis-entraid)."""
    from redis_entraid.cred_provider import create_from_default_azure_credential  # noqa: PLC0415 - Azure only

    return create_from_default_azure_credential((ENTRA_REDIS_SCOPE,))


def create_redis(settings: Settings, credential_provider: CredentialProvider | None = None) -> Redis:
    """`credential_provider` overrides the one REDIS_AUTH chooses (tests pass a fake identity)."""
    if credential_provider is None and settings.redis_auth == "entra":
        credential_provider = entra_credentials()
    return Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        password=None if credential_provider else (settings.redis_password or None),
        credential_provider=credential_provider,
        ssl=settings.redis_ssl,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        # A short retry on connection drops; longer outages surface as failed deliveries.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=False,
        max_connections=64,
    )
