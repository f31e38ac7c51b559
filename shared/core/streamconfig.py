"""Per-tenant stream configuration (pydantic v2): filters, destinations, retention, batch size."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from shared.core.destination_options import DestinationConfig
from shared.core.events import EventType, Source, TenantId, utc_now_iso

MIN_RETENTION_DAYS = 1  # the shortest retentionDays a config may set
DEFAULT_RETENTION_DAYS = 30  # a tenant's with no stored config, and a record's with no tenant
# tenants -> each one's retentionDays (the retention purges ask the config store, once per run)
RetentionLookup = Callable[[list[str]], Awaitable[dict[str, int]]]


def retention_cutoff(now: datetime, retention_days: int) -> str:
    """The instant, RFC 3339 UTC to the millisecond, before which a tenant's data is past retention."""
    return utc_now_iso(now - timedelta(days=retention_days))


ConditionOp = Literal["eq", "ne", "in", "gt", "gte", "lt", "lte", "exists", "contains", "startsWith"]
CONDITION_OPS: tuple[str, ...] = ConditionOp.__args__  # type: ignore[attr-defined]
ConditionPath = Annotated[str, StringConstraints(pattern=r"^(data|metadata)(\.[^.\s]{1,128}){1,16}$")]


class StreamFilter(BaseModel):
    """Matches when the event's type and source are listed (empty = any) and every condition holds.

    A condition is `{"data.path": value}` (equality) or `{"data.path": {"op": operand}}`.
    """

    model_config = ConfigDict(extra="forbid")

    eventTypes: list[EventType] = Field(default_factory=list, max_length=64)
    sources: list[Source] = Field(default_factory=list, max_length=16)
    conditions: dict[ConditionPath, Any] = Field(default_factory=dict, max_length=32)

    @field_validator("conditions")
    @classmethod
    def _ops(cls, v: dict[str, Any]) -> dict[str, Any]:
        for path, cond in v.items():
            if isinstance(cond, dict):
                if not cond:
                    raise ValueError(f"{path}: empty operator object")
                for op, operand in cond.items():
                    if op not in CONDITION_OPS:
                        raise ValueError(f"{path}: unknown operator {op!r}; use one of {', '.join(CONDITION_OPS)}")
                    if op == "in" and not isinstance(operand, list):
                        raise ValueError(f"{path}: 'in' takes a list")
                    if op == "exists" and not isinstance(operand, bool):
                        raise ValueError(f"{path}: 'exists' takes true or false")
                    if op == "startsWith" and not isinstance(operand, str):
                        raise ValueError(f"{path}: 'startsWith' takes a string")
        return v


def default_destinations() -> list[DestinationConfig]:
    return [DestinationConfig.model_validate({"type": "redis", "enabled": True, "config": {}})]


class StreamConfigIn(BaseModel):
    """The body of PUT /stream-config/{tenantId} (tenantId comes from the path)."""

    model_config = ConfigDict(extra="forbid")

    tenantId: TenantId | None = None
    enabled: bool = True
    topics: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]] = Field(
        default_factory=list, max_length=32
    )
    filters: list[StreamFilter] = Field(default_factory=list, max_length=32)
    destinations: list[DestinationConfig] = Field(default_factory=default_destinations, max_length=8)
    retentionDays: int = Field(DEFAULT_RETENTION_DAYS, ge=MIN_RETENTION_DAYS, le=3650)
    batchSize: int = Field(100, ge=1, le=1000)
    compressionEnabled: bool = False
    # The read-only fields GET answers with, accepted so that a read-modify-write sends back what it
    # read: `version` makes the write conditional on it, the other two are ignored.
    version: int | None = Field(None, ge=0, description=(
        "read-only, set by the service; when sent (as read by GET) the write is conditional on it: it must "
        "equal the stored version (0 when none is stored), else 412, like a stale If-Match"))
    updatedAt: str | None = Field(None, max_length=64, description="read-only, set by the service; ignored on PUT")
    isDefault: bool | None = Field(None, description="read-only, set by the service; ignored on PUT")

    @model_validator(mode="after")
    def _unique_destinations(self) -> "StreamConfigIn":
        seen = [d.type for d in self.destinations]
        dupes = sorted({t for t in seen if seen.count(t) > 1})
        if dupes:
            raise ValueError(f"destination types must be unique; repeated: {', '.join(dupes)}")
        return self


class StreamConfig(StreamConfigIn):
    tenantId: TenantId  # type: ignore[assignment]
    version: int = 0  # type: ignore[assignment]  # stored revision; bumped on each write
    updatedAt: str | None = None
    isDefault: bool = False  # type: ignore[assignment]

    @classmethod
    def default(cls, tenant_id: str) -> "StreamConfig":
        """No stored config: everything passes, to Redis Streams only, kept 30 days."""
        return cls(tenantId=tenant_id, isDefault=True)
