"""The instance's Redis client (redis.asyncio), shared by destinations, metrics and config versions."""
from __future__ import annotations

import asyncio
import math
from typing import Any, Sequence

import hiredis
from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.commands.core import AsyncScript
from redis.credentials import CredentialProvider
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
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
                     extra: Sequence[Sequence[Any]] = ()) -> list[Any]:
    """Many calls of one Lua script, `(keys, args)` each, in one round trip.

    A pipeline of EVALSHA (see `pipelined`). On NOSCRIPT (Redis restarted or failed over) the
    script is loaded and only those calls are sent again. Each call's keys must share one hash slot
    (the tenant's tag), so a pipeline may mix tenants on Redis Cluster. `extra` commands go in the
    same round trip (their errors raise). Replies come in call order; a call that failed in Redis
    (a script error) has its `ResponseError` as reply. Connection errors raise.
    """
    sha = script.sha
    replies = await pipelined(client, [("EVALSHA", sha, len(k), *k, *a) for k, a in calls] + list(extra))
    for error in replies[len(calls):]:
        if isinstance(error, ResponseError):
            raise error
    replies = replies[:len(calls)]
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        script.sha = await client.script_load(script.script)
        again = await pipelined(client, [("EVALSHA", script.sha, len(calls[i][0]), *calls[i][0], *calls[i][1])
                                         for i in missing])
        for i, r in zip(missing, again):
            replies[i] = r
    return replies


async def pipelined(client: Redis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Commands in one round trip, raw replies (no redis-py response callbacks), a `ResponseError`
    in place of each command Redis refused. For pipelines naming hundreds of tenants: commands are
    packed by hiredis' C packer and the replies read under ONE deadline (the socket timeout),
    where redis-py's pipeline packs every argument in Python and arms a timer per reply -- a
    few times the cost, all of it per tenant. The client's retry policy and pool apply as usual.
    """
    if not commands:
        return []
    payload = b"".join(hiredis.pack_command(tuple(c)) for c in commands)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        return await conn.retry.call_with_retry(lambda: _round_trip(conn, payload, len(commands)),
                                                lambda _error: conn.disconnect())
    finally:
        await pool.release(conn)


async def _round_trip(conn: Connection, payload: bytes, n: int) -> list[Any]:
    out: list[Any] = []
    try:
        await conn.send_packed_command(payload)
        async with asyncio.timeout(conn.socket_timeout):
            for _ in range(n):
                try:
                    # math.inf: no timer per reply (redis-py's documented "block" value); the
                    # deadline above bounds the whole read, and a read cut short drops the connection.
                    out.append(await conn.read_response(timeout=math.inf))
                except ResponseError as exc:
                    out.append(exc)
    except TimeoutError as exc:
        raise RedisTimeoutError(f"no reply within {conn.socket_timeout} s") from exc
    return out
