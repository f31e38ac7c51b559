"""The one destination protocol: publish a batch, report health, close.

A publish call carries the work of a whole batch for this destination: `Chunk`s, each the events
of one tenant that passed the tenant's filters, in order, with the tenant's stream config and
its options for this destination. Chunks of any number of tenants go in one call, so a batch
naming a thousand tenants costs the destination one call (one Redis pipeline, one produce-and-
flush), not a thousand. The destination returns, per chunk, one `Delivery` per event in the same
order. Chunks of the same tenant are applied in list order (a stream keeps request order);
whatever concurrency a destination uses inside a call is bounded by the destination itself.

It never raises for a delivery problem: a failed event is a `Delivery(status="failed",
transient=...)` so the pipeline can retry or park it. Destinations hold their own clients and
are shared by all invocations of an instance.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel

from shared.core.events import Event
from shared.core.health import DependencyHealth
from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig


class Chunk(NamedTuple):
    """One tenant's events for one destination, with the tenant's config and destination options."""

    stream: StreamConfig
    options: BaseModel
    events: Sequence[Event]


class DestinationPaused(Exception):
    """Raised by `publish` when the destination sends nothing for `seconds` yet (its dependency is
    known not to answer): nothing of the call was sent, so its events fail at once and are parked
    without the in-process retries, and the dispatcher holds the destination's calls meanwhile."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seconds = seconds


@runtime_checkable
class Destination(Protocol):
    type: str

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]: ...

    async def health(self) -> DependencyHealth: ...

    async def close(self) -> None: ...


async def publish_one(
    dest: Destination, events: Sequence[Event], options: BaseModel, stream: StreamConfig
) -> list[Delivery]:
    """One tenant's events through `dest.publish` (a single chunk)."""
    return (await dest.publish([Chunk(stream, options, events)]))[0]


def delivered(dest: str, ref: str | None = None) -> Delivery:
    return Delivery.of(dest, "delivered", ref)


def failed(dest: str, error: str, *, transient: bool) -> Delivery:
    return Delivery.of(dest, "failed", None, error, transient)


def failed_all(dest: str, chunks: Sequence[Chunk], error: str, *,
               transient: bool = True) -> list[list[Delivery]]:
    """Every event of each chunk failed with `error` (a call that broke off, or was never made)."""
    return [[failed(dest, error, transient=transient) for _ in ch.events] for ch in chunks]
