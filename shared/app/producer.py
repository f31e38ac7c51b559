"""The producer as a library: what MCP servers and backend services call in-process.

    producer = EventProducer.from_env()
    result = await producer.publish_event({"tenantId": "tenant-123", "eventType": "RISK_UPDATED", ...})
    await producer.close()
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from shared.app.services import Services
from shared.core.events import Event, EventIn
from shared.core.results import EventResult
from shared.core.settings import Settings
from shared.delivery.pipeline import PublishContext
from shared.observability.tenant_metrics import BatchStats


class EventProducer:
    def __init__(self, services: Services, *, owns_services: bool = False) -> None:
        self.services = services
        self._owns = owns_services

    @classmethod
    def from_settings(cls, settings: Settings) -> "EventProducer":
        return cls(Services(settings), owns_services=True)

    @classmethod
    def from_env(cls) -> "EventProducer":
        return cls.from_settings(Settings.from_env())

    async def publish_event(
        self,
        event: Mapping[str, Any] | EventIn,
        *,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> EventResult:
        raw = event.model_dump(exclude_none=True) if isinstance(event, EventIn) else event
        ctx = PublishContext(correlation_id=correlation_id, idempotency_key=idempotency_key)
        return (await self.services.pipeline.publish_raw([raw], ctx))[0]

    async def publish_bulk(
        self, events: Sequence[Mapping[str, Any]], *, correlation_id: str | None = None
    ) -> list[EventResult]:
        ctx = PublishContext(correlation_id=correlation_id, pointer_prefix=("events",))
        return await self.services.pipeline.publish_raw(list(events), ctx)

    async def publish_enriched(
        self, events: Sequence[Event], *, stats: BatchStats | None = None
    ) -> list[EventResult]:
        return await self.services.pipeline.publish_enriched(events, stats=stats)

    async def close(self) -> None:
        if self._owns:
            await self.services.close()

    async def __aenter__(self) -> "EventProducer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
