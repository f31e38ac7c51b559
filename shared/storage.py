"""Azure Storage clients (Tables, Queues): a connection string locally, managed identity in Azure."""
from __future__ import annotations

import asyncio
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from shared.settings import Settings

# The request path has its own retries (destination retry policies, the retry queue, the client's
# retry on 503): the SDK's own retries stay short and a dead endpoint fails in seconds, not minutes.
CLIENT_OPTIONS: dict[str, float] = {"retry_total": 2, "retry_backoff_factor": 0.3, "retry_backoff_max": 2,
                                    "connection_timeout": 5, "read_timeout": 30}


def managed_identity() -> Any:
    """A new async credential for the managed identity (Azure). An instance builds one and shares it
    (shared.services.Services.identity): each credential keeps its own token cache and, for IMDS, its
    own HTTP session, so one per client would multiply calls to the token endpoint."""
    from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - only in Azure

    return DefaultAzureCredential()


def _account_url(settings: Settings, service: str) -> str:
    """The account's endpoint for the managed identity (no connection string set)."""
    if not settings.storage_account_name:
        raise RuntimeError("set STORAGE_CONNECTION_STRING (local) or STORAGE_ACCOUNT_NAME (managed identity)")
    return f"https://{settings.storage_account_name}.{service}.core.windows.net"


def table_service(settings: Settings, credential: Any = None) -> TableServiceClient:
    """`credential`: the instance's managed identity (used when no connection string is set)."""
    if settings.storage_connection_string:
        return TableServiceClient.from_connection_string(settings.storage_connection_string, **CLIENT_OPTIONS)
    return TableServiceClient(
        endpoint=_account_url(settings, "table"),
        credential=credential or managed_identity(),
        **CLIENT_OPTIONS,
    )


def queue_service(settings: Settings, credential: Any = None) -> QueueServiceClient:
    """Queue client whose messages are base64 text, the Functions queue trigger's default encoding.
    `credential`: the instance's managed identity (used when no connection string is set)."""
    policies: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy(),
                                "message_decode_policy": TextBase64DecodePolicy(), **CLIENT_OPTIONS}
    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.storage_connection_string, **policies)
    return QueueServiceClient(
        account_url=_account_url(settings, "queue"),
        credential=credential or managed_identity(),
        **policies,
    )


class LazyTable:
    """A table client whose table is created (if missing) on first use, once per instance."""

    def __init__(self, tables: TableServiceClient, name: str) -> None:
        self._tables = tables
        self.name = name
        self._client: TableClient | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> TableClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    try:
                        await self._tables.create_table(self.name)
                    except ResourceExistsError:
                        pass
                    self._client = self._tables.get_table_client(self.name)
        return self._client
