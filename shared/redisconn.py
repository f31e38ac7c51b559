"""The instance's Redis client (redis.asyncio), shared by destinations, metrics and config versions."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.credentials import CredentialProvider
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.settings import Settings


def tenant_key(tenant_id: str, *parts: str) -> str:
    """Redis-Cluster-safe key: every key of a tenant hashes to one slot via the {tenant} tag."""
    return ":".join(("grc", "{" + tenant_id + "}", *parts))


ENTRA_REDIS_SCOPE = "https://redis.azure.com/.default"
MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 5.0


def entra_credentials() -> CredentialProvider:
    """The managed identity's token as Redis credentials (user = the identity's object id),
    renewed before it expires and re-sent on open connections (redis-entraid)."""
    from redis_entraid.cred_provider import create_from_default_azure_credential  # noqa: PLC0415 - Azure only

    return create_from_default_azure_credential((ENTRA_REDIS_SCOPE,))


def create_redis(settings: Settings, credential_provider: CredentialProvider | None = None) -> Redis:
    """`credential_provider` overrides the one REDIS_AUTH chooses (tests pass a fake identity)."""
    if credential_provider is None and settings.redis_auth == "entra":
        credential_provider = entra_credentials()
    # A blocking pool: when every connection is busy (a burst of concurrent requests) a command
    # waits up to POOL_WAIT_SECONDS for one, where redis-py's default pool raises
    # MaxConnectionsError at once -- a failure of the service's own making.
    pool = BlockingConnectionPool(
        connection_class=SSLConnection if settings.redis_ssl else Connection,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        host=settings.redis_host,
        port=settings.redis_port,
        password=None if credential_provider else (settings.redis_password or None),
        credential_provider=credential_provider,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        # A short retry on connection drops; longer outages surface as failed deliveries.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=False,
    )
    # The provider is passed again so the client registers the pool for token re-authentication.
    client = Redis(connection_pool=pool, credential_provider=credential_provider)
    client.auto_close_connection_pool = True  # the client owns its pool (what Redis.from_pool does)
    return client


async def run_script(client: Redis, script: AsyncScript,
                     calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
                     then: Callable[[Pipeline], None] | None = None) -> list[Any]:
    """Many calls of one Lua script, `(keys, args)` each, in one round trip.

    A pipeline of EVALSHA: redis-py's own pipeline would first send SCRIPT EXISTS (a second round
    trip on every call). On NOSCRIPT (Redis restarted or failed over) the script is loaded and only
    those calls are sent again. Each call's keys must share one hash slot (the tenant's tag), so a
    pipeline may mix tenants on Redis Cluster. `then` may queue more commands on the same
    pipeline (their errors raise). Replies come in call order; a call that failed in Redis (a
    script error) has its `ResponseError` as reply. Connection errors raise.
    """
    if not calls and then is None:
        return []
    replies = await _evalsha(client, script, calls, then)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        script.sha = await client.script_load(script.script)
        again = await _evalsha(client, script, [calls[i] for i in missing], None)
        for i, r in zip(missing, again):
            replies[i] = r
    return replies


async def _evalsha(client: Redis, script: AsyncScript, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
                   then: Callable[[Pipeline], None] | None) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    if then is not None:
        then(pipe)
    replies = await pipe.execute(raise_on_error=False)
    for extra in replies[len(calls):]:
        if isinstance(extra, Exception):
            raise extra
    return replies[:len(calls)]
