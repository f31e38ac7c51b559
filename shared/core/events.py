"""The event model (pydantic v2): what a client sends (`EventIn`), what every destination receives
(`Event`), and the vocabulary they share: event types, sources, actions and the one tenant-id rule."""
from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from shared.core import limits
from shared.core.trusted import construct, field_names

SCHEMA_VERSION = "1.0"
SYSTEM_TENANT = "system"
# The reserved partition of dead-lettered change-feed documents that name no valid tenant (not a
# tenant id, so no grant can name it: only admins reach it).
UNMAPPED_TENANT = "_unmapped"

# The one tenant-id rule. The whole value must match: Python's `$` also matches before a final
# newline, so `re.match` would take "acme\n"; `is_tenant_id` uses fullmatch. TENANT_PATTERN is the
# JSON Schema form (ECMA-262, where `$` is the end of the input).
TENANT_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{1,62}[a-z0-9])$"
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,62}[a-z0-9]")
# RFC 3339 date-time (use fullmatch); a missing offset passes here so that EventIn can say what is missing.
RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))?"
)
TENANT_RULE = "3-64 characters: lowercase letters, digits and '-', starting and ending with a letter or digit"


def rfc3339_string(v: Any, name: str = "value") -> Any:
    """A date-time field's raw value: pydantic's lax mode would also read numbers and digit strings
    as Unix seconds; the API documents an RFC 3339 date-time string (datetimes pass for in-process
    callers, None for optional fields)."""
    if v is None or isinstance(v, datetime):
        return v
    if not isinstance(v, str) or not RFC3339_RE.fullmatch(v):
        raise ValueError(date_time_error(v, name))
    return v


def date_time_error(raw: object, name: str) -> str:
    """The one wording of a value that is no date-time: the part that is wrong when it has RFC 3339's
    shape (date_time_problem), else the format expected."""
    problem = date_time_problem(raw) if isinstance(raw, str) else None
    if problem is not None:
        return f"{name} is not a valid date-time: {problem}"
    return f"{name} must be an RFC 3339 date-time string, e.g. 2026-01-31T12:00:00Z"


def parse_rfc3339(raw: str) -> datetime | None:
    """An RFC 3339 date-time string as a datetime (naive when it has no offset, for the caller to
    refuse); None when it is not one. Upper-cased first: RFC 3339 allows a lowercase `t` and `z`,
    which `datetime.fromisoformat` refuses."""
    if not RFC3339_RE.fullmatch(raw):
        return None
    try:
        return datetime.fromisoformat(raw.upper())
    except ValueError:  # e.g. month 13
        return None


def date_time_problem(raw: str) -> str | None:
    """What makes a string of RFC 3339's shape no date-time, in words (pydantic says "unexpected extra
    characters at the end of the input" for an hour of 24 or a minute of 61); None when nothing does."""
    m = RFC3339_RE.fullmatch(raw)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not 1 <= month <= 12:
        return f"month {month:02d} is not 01-12"
    if year == 0 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return f"{raw[:10]} is not a date"
    if hour > 23:
        return f"hour {hour:02d} is not 00-23"
    if minute > 59:
        return f"minute {minute:02d} is not 00-59"
    if second == 60:
        return "second 60 (a leap second) cannot be stored; send :59.999 instead"
    if second > 60:
        return f"second {second:02d} is not 00-59"
    if m.group(7) is not None and (int(m.group(7)) > 23 or int(m.group(8)) > 59):
        return f"offset {raw[-6:]} is not within -23:59..+23:59"
    return None


def is_tenant_id(value: object) -> bool:
    """Whether `value` is a tenant id (a str matching the rule as a whole)."""
    return isinstance(value, str) and TENANT_RE.fullmatch(value) is not None


# The rule as a pattern pydantic-core checks itself (its Rust regex: `$` is the end of the input, as
# in JSON Schema), not a Python validator: a Python call per event of every bulk cost 0.35 us.
# validation.field_errors words its mismatch as TENANT_RULE; tests/test_tenant_ids.py checks that
# this and is_tenant_id agree on every value.
TenantId = Annotated[
    str,
    StringConstraints(pattern=TENANT_PATTERN),
    WithJsonSchema({"type": "string", "pattern": TENANT_PATTERN, "minLength": 3, "maxLength": 64}),
]
CLIENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
ClientIdPattern = re.compile(CLIENT_ID_PATTERN)
ClientId = Annotated[str, StringConstraints(pattern=CLIENT_ID_PATTERN)]


class EventType(str, Enum):
    RISK_CREATED = "RISK_CREATED"
    RISK_UPDATED = "RISK_UPDATED"
    RISK_STATUS_CHANGED = "RISK_STATUS_CHANGED"
    RISK_DELETED = "RISK_DELETED"
    CONTROL_CREATED = "CONTROL_CREATED"
    CONTROL_UPDATED = "CONTROL_UPDATED"
    CONTROL_TESTED = "CONTROL_TESTED"
    CONTROL_FAILED = "CONTROL_FAILED"
    ASSESSMENT_STARTED = "ASSESSMENT_STARTED"
    ASSESSMENT_COMPLETED = "ASSESSMENT_COMPLETED"
    ASSESSMENT_OVERDUE = "ASSESSMENT_OVERDUE"
    COMPLIANCE_GAP_DETECTED = "COMPLIANCE_GAP_DETECTED"
    COMPLIANCE_STATUS_CHANGED = "COMPLIANCE_STATUS_CHANGED"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    SYSTEM_PERFORMANCE = "SYSTEM_PERFORMANCE"
    DATA_ANOMALY = "DATA_ANOMALY"
    USER_ACTION = "USER_ACTION"


SYSTEM_EVENT_TYPES = frozenset(
    {EventType.SYSTEM_ERROR, EventType.SYSTEM_PERFORMANCE, EventType.DATA_ANOMALY}
)


class Source(str, Enum):
    FRONTEND_APP = "FRONTEND_APP"
    MCP_SERVER = "MCP_SERVER"
    ARCHER_GRC = "ARCHER_GRC"
    BACKEND_API = "BACKEND_API"
    COSMOS_DB = "COSMOS_DB"
    EVENT_STREAMING = "EVENT_STREAMING"  # the service's own system events


class Action(str, Enum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    STATUS_CHANGE = "STATUS_CHANGE"
    TEST = "TEST"
    DETECT = "DETECT"
    NOTIFY = "NOTIFY"


def _shaped(value: Any) -> dict[str, Any]:
    """`data` and `metadata`: a JSON object within the shape limits. One Python call in place of
    pydantic's dict validation (a copy of every event's dict) and a validator after it; parsed JSON
    is taken as it is, another mapping (an in-process caller's) is copied into a dict."""
    if type(value) is not dict:
        if not isinstance(value, Mapping):
            raise PydanticCustomError("dict_type", "Input should be a valid dictionary")
        value = dict(value)
    check_shape(value)
    return value


def check_shape(value: Any) -> None:
    """Bound nesting, key length, string length and field count of free-form JSON.

    Iterative, with exact-type checks (parsed JSON holds plain dicts, lists and strs): it runs on
    every event's `data` and `metadata`, so it is on the publish hot path.
    """
    max_depth, max_key, max_str = limits.MAX_DEPTH, limits.MAX_KEY_LENGTH, limits.MAX_STRING_LENGTH
    fields = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        fields += len(node)
        if type(node) is dict:
            for k, v in node.items():
                if type(k) is not str:  # parsed JSON has none; an in-process caller's dict may
                    raise ValueError(f"keys must be strings, not {type(k).__name__}")
                if len(k) > max_key:
                    raise ValueError(f"key longer than {max_key} characters")
                t = type(v)
                if t is dict or t is list:
                    stack.append((v, depth + 1))
                elif t is str and len(v) > max_str:
                    raise ValueError(f"string longer than {max_str} characters at key {k!r}")
        else:
            for v in node:
                t = type(v)
                if t is dict or t is list:
                    stack.append((v, depth + 1))
                elif t is str and len(v) > max_str:
                    raise ValueError(f"string longer than {max_str} characters")
    if fields > limits.MAX_FIELDS:
        raise ValueError(f"more than {limits.MAX_FIELDS} fields")


JsonObject = Annotated[dict[str, Any], PlainValidator(_shaped, json_schema_input_type=dict[str, Any])]


class EventIn(BaseModel):
    """An event as a client sends it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    tenantId: TenantId
    eventType: EventType
    source: Source
    action: Action
    entityId: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    entityType: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")] | None = None
    data: JsonObject
    metadata: JsonObject = Field(default_factory=dict)
    eventId: ClientId | None = None
    timestamp: datetime | None = None
    correlationId: ClientId | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _rfc3339(cls, v: Any) -> Any:
        return rfc3339_string(v, "timestamp")

    @field_validator("timestamp")
    @classmethod
    def _not_future(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            raise ValueError("timestamp needs a time zone offset (RFC 3339), e.g. 2026-01-31T12:00:00Z")
        try:
            v = to_utc(v)  # normalised here, where an unrepresentable time is a field error
        except ValueError as exc:
            raise ValueError(f"timestamp {exc}") from None
        if v - datetime.now(timezone.utc) > timedelta(seconds=limits.MAX_CLOCK_SKEW_SECONDS):
            raise ValueError(f"timestamp is more than {limits.MAX_CLOCK_SKEW_SECONDS} s in the future")
        return v


_validate_event_in = EventIn.__pydantic_validator__.validate_python


def validate_event_in(raw: Any) -> EventIn:
    """`EventIn.model_validate(raw)`: the same pydantic-core validator and errors, without pydantic's
    Python wrapper, whose keyword defaults cost 0.2 us of 2.6 per event of every bulk."""
    return _validate_event_in(raw)


class Event(BaseModel):
    """An enriched event: what every destination receives."""

    model_config = ConfigDict(extra="forbid")

    eventId: str
    tenantId: str
    eventType: EventType
    source: Source
    action: Action
    entityId: str | None = None
    entityType: str | None = None
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)
    timestamp: str
    ingestedAt: str
    schemaVersion: str = SCHEMA_VERSION
    correlationId: str

    _json: bytes | None = PrivateAttr(default=None)

    @classmethod
    def trusted(cls, fields: dict[str, Any]) -> "Event":
        """Build from values already validated (EventIn + enrichment) without re-validating.

        The hot path of every publish: pydantic's `model_construct` walks the field table per call,
        this sets the same instance state directly. `fields`: every field, in declaration order (the
        wire order), in a dict of the caller's making that becomes the instance's own. A dict, not
        keyword arguments: matching thirteen keywords per event cost 0.2 us (docs/performance.md).
        """
        return construct(cls, fields, _EVENT_FIELDS, {"_json": None})

    def to_json(self) -> bytes:
        """The native wire format, serialised once and shared by every destination.

        The instance's field dict as it is (orjson writes the enums' values): the same bytes as
        `orjson.dumps(self.to_dict())`, without building that dict per event."""
        private = self.__pydantic_private__
        cached = private.get("_json") if private is not None else None
        if cached is None:
            fields = self.__dict__
            cached = orjson.dumps(fields if tuple(fields) == _WIRE_ORDER else self.to_dict())
            if private is not None:
                private["_json"] = cached  # direct: BaseModel.__setattr__ is slow on the hot path
        return cached

    def to_dict(self) -> dict[str, Any]:
        return {
            "eventId": self.eventId,
            "tenantId": self.tenantId,
            "eventType": self.eventType.value,
            "source": self.source.value,
            "action": self.action.value,
            "entityId": self.entityId,
            "entityType": self.entityType,
            "data": self.data,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
            "ingestedAt": self.ingestedAt,
            "schemaVersion": self.schemaVersion,
            "correlationId": self.correlationId,
        }

    def to_cloudevent(self) -> dict[str, Any]:
        """CloudEvents 1.0 structured-mode view (JSON event format)."""
        ce: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.eventId,
            "source": f"/tenants/{self.tenantId}/sources/{self.source.value}",
            "type": f"com.grc.{self.eventType.value}",
            "time": self.timestamp,
            "datacontenttype": "application/json",
            "tenantid": self.tenantId,
            "correlationid": self.correlationId,
            "action": self.action.value,
            "schemaversion": self.schemaVersion,
            "data": {"data": self.data, "metadata": self.metadata, "ingestedAt": self.ingestedAt},
        }
        if self.entityType or self.entityId:
            ce["subject"] = f"{self.entityType or 'entity'}/{self.entityId or ''}"
        return ce

    def encode(self, wire_format: str) -> bytes:
        if wire_format == "cloudevents":
            return orjson.dumps(self.to_cloudevent())
        return self.to_json()


_EVENT_FIELDS = field_names(Event)
# The wire format's key order (to_dict): the field order, which is also the order `trusted` is given.
_WIRE_ORDER = tuple(Event.model_fields)


def to_utc(dt: datetime) -> datetime:
    """An aware date-time as UTC. ValueError when UTC falls outside years 1-9999, which Python's
    datetime cannot hold: `0001-01-01T00:00:00+01:00` or `9999-12-31T23:59:59-01:00` are valid RFC 3339
    but have no UTC date-time (converting them raised OverflowError, a 500)."""
    try:
        return dt.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is out of range: in UTC it falls outside years 1-9999") from None


def utc_instant(dt: datetime) -> datetime:
    """`dt` as UTC, a naive one taken as UTC (the platform's convention for a time written without
    an offset). ValueError as `to_utc`."""
    return to_utc(dt) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def utc_now_iso(now: datetime | None = None) -> str:
    n = now or datetime.now(timezone.utc)
    return n.isoformat(timespec="milliseconds").replace("+00:00", "Z")
