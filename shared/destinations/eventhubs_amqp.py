"""Event Hubs over AMQP (azure-eventhub aio): the second transport of the "kafka" destination.

Same records as the Kafka transport (topic = event hub, key = partition key, headers = application
properties). One `EventHubProducerClient` per event hub, made lazily and kept: with
EVENTHUBS_CONNECTION_STRING, or with a managed identity (EVENTHUBS_FULLY_QUALIFIED_NAMESPACE +
DefaultAzureCredential). Records are grouped by (event hub, partition key), each group in order
into `EventDataBatch`es created with that partition key; a batch is sent when the next event does
not fit (`add` raises ValueError). Groups go out concurrently, the batches of one group one after
another, and after a failed batch the rest of its group is not sent (so a retry keeps the order).
At most MAX_CONCURRENT_SENDS groups are in flight per sender (one call may carry every tenant of a
batch: a group each). Concurrent calls (requests) may hold the same key: a FIFO lock per (event
hub, key) makes the call that started first send first.
With `compressionEnabled` the body is gzipped and marked `content-encoding: gzip` (AMQP itself has
no compression). `send_batch` returning is the service's acknowledgement.
"""
from __future__ import annotations

import asyncio
import gzip as gziplib
import logging
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Protocol, Sequence

from azure.eventhub import EventData, EventDataBatch
from azure.eventhub.exceptions import AuthenticationError, EventDataError, EventHubError

from shared.core.health import DependencyHealth
from shared.core.settings import Settings
from shared.destinations.event_records import Outcome, Record

log = logging.getLogger("grc.destinations.eventhubs_amqp")

MAX_CONCURRENT_SENDS = 16


class ProducerClient(Protocol):
    """The part of `azure.eventhub.aio.EventHubProducerClient` this module uses."""

    async def create_batch(self, *, partition_key: str | None = None,
                           max_size_in_bytes: int | None = None) -> EventDataBatch: ...

    async def send_batch(self, event_data_batch: EventDataBatch, *, timeout: float | None = None) -> None: ...

    async def get_eventhub_properties(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


ClientFactory = Callable[[str], ProducerClient]  # event hub name -> client


class EventHubsConfigError(Exception):
    pass


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (AuthenticationError, EventDataError, ValueError, TypeError, EventHubsConfigError)):
        return False
    return True  # connection lost, timeouts, send errors (throttling), closed clients


def to_event_data(rec: Record, gzip: bool) -> EventData:
    body = gziplib.compress(rec.value, compresslevel=6, mtime=0) if gzip else rec.value
    ed = EventData(body)
    props: dict[str | bytes, Any] = dict(rec.headers)
    if gzip:
        props["content-encoding"] = "gzip"
    ed.properties = props
    ed.content_type = props.get("content-type", "application/json")
    ed.message_id = props.get("eventId")
    ed.correlation_id = props.get("correlationId")
    return ed


class EventHubsAmqpSender:
    def __init__(self, settings: Settings, *, client_factory: ClientFactory | None = None) -> None:
        self.settings = settings
        self._timeout = settings.kafka_delivery_timeout_ms / 1000.0
        self._credential: Any = None
        self._factory = client_factory or self._sdk_client
        self._clients: dict[str, ProducerClient] = {}
        self._order: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}  # lock, users
        self._sends = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

    def _sdk_client(self, eventhub: str) -> ProducerClient:
        from azure.eventhub.aio import EventHubProducerClient  # noqa: PLC0415

        if self.settings.eventhubs_connection_string:
            return EventHubProducerClient.from_connection_string(
                self.settings.eventhubs_connection_string, eventhub_name=eventhub)
        ns = self.settings.eventhubs_fully_qualified_namespace
        if not ns:
            raise EventHubsConfigError(
                "Event Hubs over AMQP needs EVENTHUBS_CONNECTION_STRING or EVENTHUBS_FULLY_QUALIFIED_NAMESPACE")
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

            self._credential = DefaultAzureCredential()
        return EventHubProducerClient(ns, eventhub, self._credential)

    def _client(self, eventhub: str) -> ProducerClient:
        client = self._clients.get(eventhub)
        if client is None:
            client = self._clients[eventhub] = self._factory(eventhub)
        return client

    async def send(self, records: Sequence[Record], *, gzip: bool) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(records)
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, rec in enumerate(records):
            groups[(rec.topic, rec.key)].append(i)
        await asyncio.gather(*(self._send_group(hub, key, idx, records, outcomes, gzip)
                               for (hub, key), idx in groups.items()))
        return [o or Outcome(False, "not sent", True) for o in outcomes]

    @asynccontextmanager
    async def _in_order(self, hub: str, key: str) -> AsyncIterator[None]:
        entry = self._order.get((hub, key))
        if entry is None:
            entry = self._order[(hub, key)] = (asyncio.Lock(), [0])
        entry[1][0] += 1
        try:
            async with entry[0]:  # asyncio.Lock wakes waiters first come, first served
                yield
        finally:
            entry[1][0] -= 1
            if entry[1][0] == 0:
                del self._order[(hub, key)]

    async def _send_group(
        self, hub: str, key: str, idx: list[int], records: Sequence[Record],
        outcomes: list[Outcome | None], gzip: bool,
    ) -> None:
        # The key's turn first, then a send slot: a slot is never held while waiting for a turn.
        async with self._in_order(hub, key), self._sends:
            await self._send_in_batches(hub, key, idx, records, outcomes, gzip)

    async def _send_in_batches(
        self, hub: str, key: str, idx: list[int], records: Sequence[Record],
        outcomes: list[Outcome | None], gzip: bool,
    ) -> None:
        pending: list[int] = []  # records in the current batch
        pos = 0
        try:
            client = self._client(hub)
            batch = await client.create_batch(partition_key=key)
            for pos, i in enumerate(idx):  # noqa: B007 - pos tells, on failure, what is left
                ed = to_event_data(records[i], gzip)
                try:
                    batch.add(ed)
                except ValueError:
                    if pending:
                        await client.send_batch(batch, timeout=self._timeout)
                        self._sent(hub, pending, outcomes)
                        pending = []
                        batch = await client.create_batch(partition_key=key)
                    try:
                        batch.add(ed)
                    except ValueError:
                        outcomes[i] = Outcome(False, f"event does not fit in an empty Event Hubs batch "
                                                     f"({batch.max_size_in_bytes} bytes)", False)
                        continue
                pending.append(i)
            pos = len(idx)
            if pending:
                await client.send_batch(batch, timeout=self._timeout)
                self._sent(hub, pending, outcomes)
                pending = []
        except Exception as exc:  # noqa: BLE001 - any SDK failure becomes failed deliveries
            detail = f"{type(exc).__name__}: {str(exc)[:200]}"
            transient = is_transient(exc)
            log.warning("event hub %s: send failed: %s", hub, type(exc).__name__)
            for i in pending:
                outcomes[i] = Outcome(False, detail, transient)
            for i in idx[pos:]:
                if outcomes[i] is None:
                    outcomes[i] = Outcome(False, f"not sent after an earlier failure for this partition key: "
                                                 f"{detail}", transient)

    @staticmethod
    def _sent(hub: str, pending: list[int], outcomes: list[Outcome | None]) -> None:
        for i in pending:
            outcomes[i] = Outcome(True, f"{hub}/amqp")

    async def health(self, eventhub: str, timeout: float) -> DependencyHealth:
        start = time.perf_counter()
        try:
            props = await asyncio.wait_for(self._client(eventhub).get_eventhub_properties(), timeout)
        except (EventHubError, EventHubsConfigError, TimeoutError, OSError) as exc:
            return DependencyHealth("eventhubs", "unhealthy", detail=type(exc).__name__)
        latency = round((time.perf_counter() - start) * 1000, 2)
        return DependencyHealth("eventhubs", "healthy", latency,
                                info={"eventHub": eventhub, "partitions": len(props.get("partition_ids", []))})

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing must not fail shutdown
                log.warning("closing an Event Hubs client failed", exc_info=True)
        if self._credential is not None:
            await self._credential.close()
            self._credential = None
