"""The one create-once helper: a resource made on first use, once per instance, under a lock.

`CreatedOnce(make)` runs `make()` the first time `get()` is awaited (concurrent callers wait for that
one run; a run that raises is not kept, so the next `get()` tries again) and hands the same object out
after that; `forget()` drops it, so the next `get()` makes it again (a table or queue that vanished
when the storage account was reset, a client to reopen).

`LazyTable` and `LazyQueue` are the Storage resources on it: created if missing on first use (infra
creates them in Azure; Azurite starts empty), and created again when a call finds them gone (someone
deleted the table; the local Azurite, which keeps its data in memory, restarted). A table's users go
through `call` (one request, made again on the new table) or `reading` (a query, which then finds
what the new, empty table holds): a table gone is never an error of the route that meets it.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.storage.clients import queue_client

T = TypeVar("T")


class CreatedOnce(Generic[T]):
    def __init__(self, make: Callable[[], Awaitable[T]]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = asyncio.Lock()

    @property
    def value(self) -> T | None:
        """What `get()` made, if it has (without making it)."""
        return self._value

    async def get(self) -> T:
        if self._value is None:
            async with self._lock:
                if self._value is None:
                    self._value = await self._make()
        return self._value

    def forget(self) -> T | None:
        """Drop what was made (returned, e.g. to close it); the next `get()` makes it again."""
        value, self._value = self._value, None
        return value


def table_gone(exc: BaseException) -> bool:
    """A 404 that says the table itself is missing, not one of its entities (a single request's
    ResourceNotFoundError, or a transaction's TableTransactionError)."""
    return isinstance(exc, HttpResponseError) and exc.status_code == 404 and \
        "TableNotFound" in str(getattr(exc, "error_code", "")) + str(exc)


class LazyTable(CreatedOnce[TableClient]):
    """A table client whose table is created (if missing) on first use, once per instance."""

    def __init__(self, tables: TableServiceClient, name: str) -> None:
        super().__init__(self._create)
        self.name = name
        self._tables = tables

    async def _create(self) -> TableClient:
        try:
            await self._tables.create_table(self.name)
        except ResourceExistsError:
            pass
        return self._tables.get_table_client(self.name)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`table.<method>(...)`; a table gone since it was made (storage reset) is created again and
        the call made once more."""
        table = await self.get()
        try:
            return await getattr(table, method)(*args, **kwargs)
        except HttpResponseError as exc:
            if not table_gone(exc):
                raise  # an entity that is not there (the caller's answer), or another failure
            self.forget()
            return await getattr(await self.get(), method)(*args, **kwargs)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[TableClient]:
        """The table, for a query read in the `async with` block. A query that finds the table gone
        creates it again and ends the block there, without an error: the new table is empty, so
        what the block has read so far (nothing, unless the table went mid-read) is the answer."""
        table = await self.get()
        try:
            yield table
        except HttpResponseError as exc:
            if not table_gone(exc):
                raise
            self.forget()
            await self.get()


class LazyQueue(CreatedOnce[QueueClient]):
    """A queue (base64 text, see `clients.queue_client`) created if missing on first use, once per
    instance; a send that finds the queue gone creates it again and sends once more."""

    def __init__(self, queues: QueueServiceClient, name: str) -> None:
        super().__init__(self._create)
        self.name = name
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
        """Approximate number of messages, visible or not; a queue found gone is created again (and
        is empty), as `send` does, rather than reported as a failing dependency."""
        try:
            props = await (await self.get()).get_queue_properties()
        except ResourceNotFoundError:
            self.forget()
            await self.get()
            return 0
        return int(props.approximate_message_count or 0)

    async def close(self) -> None:
        client = self.forget()
        if client is not None:
            await client.close()
