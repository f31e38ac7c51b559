"""REDIS_AUTH=entra: the client authenticates with an Entra ID token as (object id, token).

No Entra ID is reachable here: `FakeIdentityProvider` stands in for the managed identity at the
redis-py identity-provider boundary (what redis-entraid wraps in Azure). The server is the real
local Redis with an ACL user named by the object id and the token as its password, which is how
Azure Managed Redis checks a token; a wrong token is refused.
"""
from __future__ import annotations

import time
import uuid
from typing import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.auth.idp import IdentityProviderInterface
from redis.auth.token import SimpleToken, TokenInterface
from redis.auth.token_manager import RetryPolicy, TokenManagerConfig
from redis.exceptions import AuthenticationError, ResponseError
from redis_entraid.cred_provider import EntraIdCredentialsProvider

from shared.core.settings import Settings
from shared.storage.redisconn import create_redis, entra_credentials


class FakeIdentityProvider(IdentityProviderInterface):
    """Hands out a fixed token for one object id (a stand-in for DefaultAzureCredential)."""

    def __init__(self, oid: str, token: str) -> None:
        self.oid, self.token, self.requests = oid, token, 0

    def request_token(self, force_refresh: bool = False) -> TokenInterface:
        self.requests += 1
        now_ms = time.time() * 1000
        return SimpleToken(self.token, now_ms + 3_600_000, now_ms, {"oid": self.oid})


def provider(idp: FakeIdentityProvider) -> EntraIdCredentialsProvider:
    return EntraIdCredentialsProvider(idp, TokenManagerConfig(0.7, 0, 1000, RetryPolicy(3, 10)))


@pytest.fixture
async def acl_user(redis: Redis) -> AsyncIterator[tuple[str, str]]:
    oid, token = str(uuid.uuid4()), "tok-" + uuid.uuid4().hex
    await redis.acl_setuser(oid, enabled=True, passwords=[f"+{token}"], keys=["*"], commands=["+@all"])
    yield oid, token
    await redis.acl_deluser(oid)


async def test_entra_token_authenticates_as_the_identity(redis_port: int, acl_user: tuple[str, str]) -> None:
    oid, token = acl_user
    idp = FakeIdentityProvider(oid, token)
    settings = Settings(REDIS_PORT=redis_port, REDIS_AUTH="entra", REDIS_PASSWORD="ignored-with-entra")
    client = create_redis(settings, credential_provider=provider(idp))
    try:
        assert await client.ping() is True
        assert (await client.acl_whoami()) in (oid, oid.encode())
        assert idp.requests >= 1
    finally:
        await client.aclose()


async def test_a_token_the_server_does_not_accept_is_refused(redis_port: int, acl_user: tuple[str, str]) -> None:
    oid, _ = acl_user
    client = create_redis(Settings(REDIS_PORT=redis_port, REDIS_AUTH="entra"),
                          credential_provider=provider(FakeIdentityProvider(oid, "forged-token")))
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            await client.ping()
    finally:
        await client.aclose()


def test_entra_mode_builds_the_redis_entraid_provider_for_the_redis_scope() -> None:
    settings = Settings(REDIS_AUTH="entra")
    client = create_redis(settings)  # DefaultAzureCredential is built, not called, until a connection
    kwargs = client.connection_pool.connection_kwargs
    assert isinstance(kwargs["credential_provider"], EntraIdCredentialsProvider)
    assert kwargs.get("password") is None
    assert isinstance(entra_credentials(), EntraIdCredentialsProvider)


def test_key_mode_uses_the_password() -> None:
    client = create_redis(Settings(REDIS_AUTH="key", REDIS_PASSWORD="local-key"))
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["password"] == "local-key" and kwargs.get("credential_provider") is None
