"""The service's own Cosmos DB client (azure-cosmos, async) and a request-charge hook.

The trigger bindings use their own connection (`COSMOS`); this client is for what the service
reads itself (the overdue-assessment query, the change-feed processors' start, /health). A key
locally, managed identity in Azure (empty key). One client per instance (`SharedCosmos`, held by
shared.app.services.Services): the SDK client keeps the account's metadata, connection pool and, with
the identity, a token cache, so one per call would repeat the account read and the token request.
Every response's `x-ms-request-charge` goes to the registered hooks, so RU use can be exported
to metrics/telemetry without touching the callers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from azure.cosmos.aio import ContainerProxy, CosmosClient

from shared.core.settings import Settings
from shared.storage.lazy import CreatedOnce

log = logging.getLogger("grc.cosmos")

ChargeHook = Callable[[str, float], None]  # (operation, request units)
_hooks: list[ChargeHook] = []
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def on_request_charge(hook: ChargeHook) -> ChargeHook:
    """Register a hook (e.g. the metrics exporter); returns it so it can be removed again."""
    _hooks.append(hook)
    return hook


def remove_request_charge_hook(hook: ChargeHook) -> None:
    if hook in _hooks:
        _hooks.remove(hook)


def record_charge(operation: str, container: ContainerProxy) -> float:
    """Read the last response's RU charge from the client and hand it to the hooks."""
    headers: dict[str, Any] = getattr(container.client_connection, "last_response_headers", None) or {}
    try:
        charge = float(headers.get("x-ms-request-charge", 0) or 0)
    except (TypeError, ValueError):
        charge = 0.0
    for hook in _hooks:
        try:
            hook(operation, charge)
        except Exception:
            log.exception("request charge hook failed")
    return charge


def is_local(endpoint: str) -> bool:
    return (urlparse(endpoint).hostname or "") in LOCAL_HOSTS


def cosmos_client(settings: Settings, credential: Any = None) -> CosmosClient:
    """A client with the key, or with `credential` (a token credential) when no key is set."""
    endpoint = settings.cosmos_endpoint
    cred = settings.cosmos_key or credential
    if cred is None:
        raise RuntimeError("set COSMOS_DB_KEY (local) or pass a credential (managed identity)")
    if is_local(endpoint):
        # The local server: self-signed certificate over HTTPS, and no multi-region discovery.
        return CosmosClient(endpoint, cred, connection_verify=False, enable_endpoint_discovery=False)
    return CosmosClient(endpoint, cred)


class SharedCosmos:
    """The instance's one Cosmos client, opened (account read) on first use and kept.

    `credential` gives the instance's managed identity when no key is set. An open that fails (the
    account unreachable) is not kept: the next use tries again."""

    def __init__(self, settings: Settings, credential: Callable[[], Any]) -> None:
        self._settings = settings
        self._credential = credential
        self._client: CreatedOnce[CosmosClient] = CreatedOnce(self._open)
        self.opened = 0  # clients opened by this instance (1 in a steady state)

    async def _open(self) -> CosmosClient:
        cred = None if self._settings.cosmos_key else self._credential()
        client = cosmos_client(self._settings, cred)
        try:
            await client.__aenter__()  # reads the account: endpoints, consistency
        except BaseException:
            await client.close()
            raise
        self.opened += 1
        log.info("Cosmos DB client opened (one per instance; %s)",
                 "key" if self._settings.cosmos_key else "managed identity")
        return client

    async def client(self) -> CosmosClient:
        return await self._client.get()

    async def close(self) -> None:
        client = self._client.forget()
        if client is not None:
            await client.close()
