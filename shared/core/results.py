"""What the pipeline answers: a result per event, an outcome per destination, field errors.

`Delivery.of` and `EventResult.of` build values the pipeline and the destinations made themselves
(statuses from the Literal, ints, strs) without pydantic's validation: they are built per event
and destination, ten thousand times a second, and validating what the code just made is work
with no finding (docs/performance.md). Anything from outside goes through the models.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.core.trusted import construct, field_names

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

    @classmethod
    def of(cls, destination: str, status: DeliveryStatus, ref: str | None = None, error: str | None = None,
           transient: bool = False) -> "Delivery":
        """A Delivery the code made (see the module doc), equal to the validated one."""
        return construct(cls, {"destination": destination, "status": status, "ref": ref, "error": error,
                                "transient": transient}, _DELIVERY_FIELDS)


class EventResult(BaseModel):
    index: int
    status: EventStatus
    eventId: str | None = None
    tenantId: str | None = None
    destinations: list[Delivery] = Field(default_factory=list)
    errors: list[FieldError] = Field(default_factory=list)
    reason: str | None = None
    httpStatus: int | None = None  # per-event status code in bulk answers

    @classmethod
    def of(cls, index: int, status: EventStatus, eventId: str | None = None, tenantId: str | None = None,
           destinations: list[Delivery] | None = None, reason: str | None = None,
           httpStatus: int | None = None) -> "EventResult":
        """A result the pipeline made (see the module doc), equal to the validated one."""
        return construct(cls, {"index": index, "status": status, "eventId": eventId, "tenantId": tenantId,
                                "destinations": [] if destinations is None else destinations, "errors": [],
                                "reason": reason, "httpStatus": httpStatus}, _RESULT_FIELDS)


_DELIVERY_FIELDS = field_names(Delivery)
_RESULT_FIELDS = field_names(EventResult)
