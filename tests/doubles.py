"""In-memory test doubles that implement the pipeline's real protocols (no mocks).

`MemoryDestination` is a `Destination`, `MemoryConfigs` a `ConfigSource`, `MemoryParker` a `Parker`,
`SpyMetrics` a `TenantMetrics` that keeps what it was asked to record; `RoundTrips` a real Redis
client that counts its round trips; `RequestLog` records an Azure SDK client's requests.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

from pydantic import BaseModel
from redis.asyncio import Connection, ConnectionPool, Redis

from shared.core.events import Event
from shared.core.health import DependencyHealth
from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig
from shared.delivery.pipeline import Failure
from shared.destinations.base import Chunk, Destination, delivered, failed
from shared.observability.tenant_metrics import BatchStats, TenantMetrics


def event_dict(**over: Any) -> dict[str, Any]:
    """A valid client event; keyword arguments override fields (None removes one)."""
    raw: dict[str, Any] = {
        "tenantId": "tenant-123",
        "eventType": "RISK_UPDATED",
        "source": "ARCHER_GRC",
        "action": "UPDATE",
        "entityId": "rec-1",
        "entityType": "risk",
        "data": {"riskScore": 7, "status": "open"},
    }
    for k, v in over.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return raw


def stream_config(tenant: str = "tenant-123", **over: Any) -> StreamConfig:
    body: dict[str, Any] = {"tenantId": tenant, "destinations": [{"type": "redis"}]}
    body.update(over)
    return StreamConfig.model_validate(body)


class MemoryDestination:
    """Stores delivered events; `fail_ids` fail (transient), `raise_exc` makes publish raise.
    `calls` holds each chunk's events, `publishes` each publish call's chunks."""

    def __init__(self, type_: str = "redis", *, fail_ids: Iterable[str] = (), raise_exc: Exception | None = None):
        self.type = type_
        self.fail_ids = set(fail_ids)
        self.raise_exc = raise_exc
        self.calls: list[list[Event]] = []
        self.publishes: list[list[Chunk]] = []
        self.options_seen: list[BaseModel] = []
        self.stored: list[Event] = []
        self.closed = False

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]:
        self.publishes.append(list(chunks))
        for ch in chunks:
            self.calls.append(list(ch.events))
            self.options_seen.append(ch.options)
        if self.raise_exc is not None:
            raise self.raise_exc
        return [self._store(ch.events) for ch in chunks]

    def _store(self, events: Sequence[Event]) -> list[Delivery]:
        out: list[Delivery] = []
        for ev in events:
            if ev.eventId in self.fail_ids:
                out.append(failed(self.type, "injected failure", transient=True))
            else:
                self.stored.append(ev)
                out.append(delivered(self.type, f"mem-{len(self.stored)}"))
        return out

    async def health(self) -> DependencyHealth:
        return DependencyHealth(self.type, "healthy", 0.0)

    async def close(self) -> None:
        self.closed = True


class MemoryDestinations:
    """A `DestinationLookup` over a dict."""

    def __init__(self, *dests: Destination) -> None:
        self.by_type = {d.type: d for d in dests}

    def get(self, type_: str) -> Destination | None:
        return self.by_type.get(type_)


class MemoryConfigs:
    """A `ConfigSource`: stored configs, else the default; `raise_exc` simulates storage failure."""

    def __init__(self, *configs: StreamConfig, raise_exc: Exception | None = None) -> None:
        self.configs = {c.tenantId: c for c in configs}
        self.raise_exc = raise_exc
        self.calls: list[list[str]] = []

    async def get_many(self, tenant_ids: Iterable[str]) -> dict[str, StreamConfig]:
        tenants = list(tenant_ids)
        self.calls.append(tenants)
        if self.raise_exc is not None:
            raise self.raise_exc
        return {t: self.configs.get(t) or StreamConfig.default(t) for t in tenants}


class MemoryParker:
    """A `Parker` keeping failures; `raise_exc` simulates a retry store that is down."""

    def __init__(self, raise_exc: Exception | None = None, answers: Sequence[bool] | None = None) -> None:
        self.parked: list[Failure] = []
        self.raise_exc = raise_exc
        self.answers = answers  # per failure, whether it was parked (default: all)

    async def park(self, failures: Sequence[Failure]) -> list[bool]:
        if self.raise_exc is not None:
            raise self.raise_exc
        answers = list(self.answers) if self.answers is not None else [True] * len(failures)
        self.parked.extend(f for f, ok in zip(failures, answers) if ok)
        return answers


class SpyMetrics(TenantMetrics):
    """TenantMetrics that records the batches it was given instead of writing to Redis."""

    def __init__(self) -> None:
        self.batches: list[BatchStats] = []

    async def record(self, stats: BatchStats, now: float | None = None) -> None:
        self.batches.append(stats)

    async def flush(self) -> None:
        """Nothing is pending: every batch is kept as it came."""


class RoundTrips:
    """A real Redis client (`.client`) whose connections count round trips: the first write of one
    is sent with the connection's health check (redis-py's commands and pipelines, and the
    service's `pipelined`, which writes a long pipeline in several slices and checks only once)."""

    def __init__(self, port: int) -> None:
        self.count = 0
        counter = self

        class _Counting(Connection):
            async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                if check_health:
                    counter.count += 1
                await super().send_packed_command(command, check_health)

        self.client = Redis(connection_pool=ConnectionPool(connection_class=_Counting, port=port))

    async def warm(self) -> None:
        """Connect (the handshake is sent too) and start counting from zero."""
        await self.client.ping()
        self.count = 0


class RequestLog:
    """A `raw_request_hook` for Azure SDK clients (a real client, its requests recorded): the method
    and path of every HTTP request it sends, e.g. to count Table reads."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: Any) -> None:
        http = request.http_request
        self.requests.append((http.method, urlsplit(http.url).path))

    def reads(self, table: str) -> int:
        """GETs of entities of `table` (queries and point reads), not of table metadata."""
        return sum(1 for m, p in self.requests if m == "GET" and p.rsplit("/", 1)[-1].startswith(table + "("))
