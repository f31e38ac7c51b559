"""What the pipeline answers: a result per event, an outcome per destination, field errors."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DeliveryStatus = Literal["delivered", "failed", "parked"]
EventStatus = Literal["accepted", "filtered", "rejected", "failed", "duplicate"]


class FieldError(BaseModel):
    """One validation error; `pointer` is a JSON Pointer into the request body (RFC 9457 style)."""

    pointer: str
    field: str
    detail: str
    type: str | None = None


class Delivery(BaseModel):
    """Outcome of one event at one destination. A value: destinations may hand the same object to
    several events (one queue message for many), so a new outcome is a new Delivery, never an edit."""

    model_config = ConfigDict(frozen=True)

    destination: str
    status: DeliveryStatus
    ref: str | None = None  # stream entry id, partition:offset, ...
    error: str | None = None
    transient: bool = False


class EventResult(BaseModel):
    index: int
    status: EventStatus
    eventId: str | None = None
    tenantId: str | None = None
    destinations: list[Delivery] = Field(default_factory=list)
    errors: list[FieldError] = Field(default_factory=list)
    reason: str | None = None
    httpStatus: int | None = None  # per-event status code in bulk answers
