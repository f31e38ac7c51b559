"""Per-tenant stream configuration (pydantic v2): filters, destinations, retention, batch size."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

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
ORDERING_OPS = ("gt", "gte", "lt", "lte")
ConditionPath = Annotated[str, StringConstraints(pattern=r"^(data|metadata)(\.[^.\s]{1,128}){1,16}$")]


def _condition(cond: Any) -> Any:
    """One condition's value: a plain value (equality) or an object of operators. Checked per value,
    so an error's path names the condition (/filters/0/conditions/data.score), not the whole map."""
    if isinstance(cond, dict):
        if not cond:
            raise ValueError("empty operator object")
        for op, operand in cond.items():
            if op not in CONDITION_OPS:
                raise ValueError(f"unknown operator {op!r}; use one of {', '.join(CONDITION_OPS)}")
            if op == "in" and not isinstance(operand, list):
                raise ValueError("'in' takes a list")
            if op == "exists" and not isinstance(operand, bool):
                raise ValueError("'exists' takes true or false")
            if op == "startsWith" and not isinstance(operand, str):
                raise ValueError("'startsWith' takes a string")
    return cond


class StreamFilter(BaseModel):
    """Matches when the event's type and source are listed (empty = any) and every condition holds.

    A condition is `{"data.path": value}` (equality) or `{"data.path": {"op": operand}}`.
    """

    model_config = ConfigDict(extra="forbid")

    eventTypes: list[EventType] = Field(default_factory=list, max_length=64)
    sources: list[Source] = Field(default_factory=list, max_length=16)
    conditions: dict[ConditionPath, Annotated[Any, AfterValidator(_condition)]] = Field(
        default_factory=dict, max_length=32)


def unorderable_operands(filters: list[StreamFilter]) -> list[tuple[tuple[Any, ...], str]]:
    """Ordering conditions whose operand is neither a number nor a string, as (location, detail): ordering
    compares numbers with numbers and strings with strings only (core/filters.py), so such a condition
    never holds. Refused on PUT, not by the model: a config stored before this check must still load
    (and route, its condition never holding)."""
    out: list[tuple[tuple[Any, ...], str]] = []
    for i, f in enumerate(filters):
        for path, cond in f.conditions.items():
            for op, operand in (cond.items() if isinstance(cond, dict) else ()):
                orderable = isinstance(operand, (int, float, str)) and not isinstance(operand, bool)
                if op in ORDERING_OPS and not orderable:
                    out.append((("filters", i, "conditions", path), f"{op!r} takes a number or a string"))
    return out


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

    @field_validator("destinations")
    @classmethod
    def _unique_destinations(cls, v: list[DestinationConfig]) -> list[DestinationConfig]:
        # On the field, not the model, so the error points at /destinations (a model's error has no path)
        # and names the entries, which a client needs to find the repeat in a long list.
        at: dict[str, list[int]] = {}
        for i, d in enumerate(v):
            at.setdefault(d.type, []).append(i)
        dupes = [f"{t!r} at {', '.join(map(str, idx))}" for t, idx in at.items() if len(idx) > 1]
        if dupes:
            raise ValueError(f"destination types must be unique; repeated: {'; '.join(dupes)}")
        return v


class StreamConfig(StreamConfigIn):
    tenantId: TenantId  # type: ignore[assignment]
    version: int = 0  # type: ignore[assignment]  # stored revision; bumped on each write
    updatedAt: str | None = None
    isDefault: bool = False  # type: ignore[assignment]

    @classmethod
    def default(cls, tenant_id: str) -> "StreamConfig":
        """No stored config: everything passes, to Redis Streams only, kept 30 days."""
        return cls(tenantId=tenant_id, isDefault=True)
