"""Azure Storage clients (Tables, Queues): a connection string locally, managed identity in Azure.

Queue clients come from `queue_client` (or `LazyQueue`, which uses it) and nowhere else: they write
and read base64 text, the encoding the Functions queue trigger expects (host.json
`extensions.queues.messageEncoding: "base64"`). A client made by
`QueueServiceClient.get_queue_client(name)` alone does NOT inherit anything of the kind: its
messages would be raw text, and the host moves every one of them to `<queue>-poison` unread.
"""
from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue import QueueMessage, TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.settings import Settings

C = TypeVar("C", TableClient, QueueClient)

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
    """The account's Queue service; make queue clients from it with `queue_client` / `LazyQueue`.
    `credential`: the instance's managed identity (used when no connection string is set)."""
    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.storage_connection_string, **CLIENT_OPTIONS)
    return QueueServiceClient(
        account_url=_account_url(settings, "queue"),
        credential=credential or managed_identity(),
        **CLIENT_OPTIONS,
    )


def queue_client(queues: QueueServiceClient, name: str) -> QueueClient:
    """The one way to get a queue client: messages are base64 text both ways, as the queue trigger
    reads them (and as `devhost.queue_driver` decodes them, like the host)."""
    return queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy(),
                                   message_decode_policy=TextBase64DecodePolicy())


class _CreatedOnce(Generic[C]):
    """A client for a resource (table, queue) that is created, if missing, on first use and once
    per instance; `forget()` after the resource vanished (storage reset) creates it again next time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._client: C | None = None
        self._lock = asyncio.Lock()

    async def _create(self) -> C:
        raise NotImplementedError

    async def get(self) -> C:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._create()
        return self._client

    def forget(self) -> None:
        self._client = None


class LazyTable(_CreatedOnce[TableClient]):
    """A table client whose table is created (if missing) on first use, once per instance."""

    def __init__(self, tables: TableServiceClient, name: str) -> None:
        super().__init__(name)
        self._tables = tables

    async def _create(self) -> TableClient:
        try:
            await self._tables.create_table(self.name)
        except ResourceExistsError:
            pass
        return self._tables.get_table_client(self.name)


class LazyQueue(_CreatedOnce[QueueClient]):
    """A queue (base64 text, see `queue_client`) created if missing on first use, once per instance.

    Infra creates the queues in Azure; Azurite starts empty, and a reset storage account loses
    them: a send that finds the queue gone creates it again and sends once more.
    """

    def __init__(self, queues: QueueServiceClient, name: str) -> None:
        super().__init__(name)
        self._queues = queues

    async def _create(self) -> QueueClient:
        client = queue_client(self._queues, self.name)
        try:
            await client.create_queue()
        except ResourceExistsError:
            pass
        return client

    async def send(self, text: str, visibility_timeout: int | None = None) -> QueueMessage:
        """Enqueue `text` (base64-encoded on the wire), invisible for `visibility_timeout` seconds."""
        queue = await self.get()
        try:
            return await queue.send_message(text, visibility_timeout=visibility_timeout)
        except ResourceNotFoundError:  # the queue was deleted (storage reset): create it again
            self.forget()
            queue = await self.get()
            return await queue.send_message(text, visibility_timeout=visibility_timeout)

    async def depth(self) -> int:
        """Approximate number of messages, visible or not."""
        props = await (await self.get()).get_queue_properties()
        return int(props.approximate_message_count or 0)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
