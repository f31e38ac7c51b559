"""The one destination protocol: publish a batch, report health, close.

A destination gets the events of one tenant that passed the tenant's filters, in order, and
returns one `Delivery` per event, in the same order. It never raises for a delivery problem:
a failed event is a `Delivery(status="failed", transient=...)` so the pipeline can retry or park
it. Destinations hold their own clients and are shared by all invocations of an instance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel

from shared.models import Delivery, Event, StreamConfig

HealthState = Literal["healthy", "degraded", "unhealthy"]


@dataclass
class DependencyHealth:
    name: str
    status: HealthState
    latency_ms: float | None = None
    detail: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "latencyMs": self.latency_ms}
        if self.detail:
            out["detail"] = self.detail
        if self.info:
            out.update(self.info)
        return out


@runtime_checkable
class Destination(Protocol):
    type: str

    async def publish(
        self, events: Sequence[Event], options: BaseModel, stream: StreamConfig
    ) -> list[Delivery]: ...

    async def health(self) -> DependencyHealth: ...

    async def close(self) -> None: ...


def delivered(dest: str, ref: str | None = None) -> Delivery:
    return Delivery(destination=dest, status="delivered", ref=ref)


def failed(dest: str, error: str, *, transient: bool) -> Delivery:
    return Delivery(destination=dest, status="failed", error=error, transient=transient)
