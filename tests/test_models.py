"""Event model and stream-config validation, with the field paths a client gets back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from shared.core import limits
from shared.core.events import Action, EventIn, EventType, Source
from shared.core.streamconfig import StreamConfig, StreamConfigIn
from shared.core.validation import field_errors
from tests.doubles import event_dict

ORIGINAL_EVENT_TYPES = {
    "RISK_CREATED", "RISK_UPDATED", "RISK_STATUS_CHANGED", "RISK_DELETED",
    "CONTROL_CREATED", "CONTROL_UPDATED", "CONTROL_TESTED", "CONTROL_FAILED",
    "ASSESSMENT_STARTED", "ASSESSMENT_COMPLETED", "ASSESSMENT_OVERDUE",
    "COMPLIANCE_GAP_DETECTED", "COMPLIANCE_STATUS_CHANGED", "POLICY_VIOLATION",
    "SYSTEM_ERROR", "SYSTEM_PERFORMANCE", "DATA_ANOMALY", "USER_ACTION",
}


def errors_of(model: type, body: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return [e.model_dump() for e in field_errors(info.value)]


def fields_of(model: type, body: Any) -> set[str]:
    return {e["field"] for e in errors_of(model, body)}


# ---- event types, sources, actions ---------------------------------------------------------


def test_event_type_enum_is_exactly_the_original_set() -> None:
    assert {e.value for e in EventType} == ORIGINAL_EVENT_TYPES


@pytest.mark.parametrize("event_type", sorted(ORIGINAL_EVENT_TYPES))
def test_every_event_type_is_accepted(event_type: str) -> None:
    ev = EventIn.model_validate(event_dict(eventType=event_type))
    assert ev.eventType is EventType(event_type)


@pytest.mark.parametrize("source", [s.value for s in Source])
def test_every_source_is_accepted(source: str) -> None:
    assert EventIn.model_validate(event_dict(source=source)).source.value == source


@pytest.mark.parametrize("action", [a.value for a in Action])
def test_every_action_is_accepted(action: str) -> None:
    assert EventIn.model_validate(event_dict(action=action)).action.value == action


@pytest.mark.parametrize("field,value", [("eventType", "RISK_EXPLODED"), ("eventType", "risk_updated"),
                                         ("source", "EXCEL"), ("action", "PATCH")])
def test_unknown_enum_values_are_refused_with_their_field(field: str, value: str) -> None:
    errs = errors_of(EventIn, event_dict(**{field: value}))
    assert [e["field"] for e in errs] == [field]
    assert errs[0]["pointer"] == f"/{field}"


# ---- tenantId -------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["abc", "tenant-123", "a1b", "0-9", "a" * 64, "x-y-z"])
def test_valid_tenant_ids(tenant: str) -> None:
    assert EventIn.model_validate(event_dict(tenantId=tenant)).tenantId == tenant


@pytest.mark.parametrize(
    "tenant",
    ["ab", "a" * 65, "Tenant-123", "tenant_123", "-tenant", "tenant-", "ten ant", "tenänt", "", "{t}"],
)
def test_invalid_tenant_ids_get_a_clear_message(tenant: str) -> None:
    errs = errors_of(EventIn, event_dict(tenantId=tenant))
    assert [e["field"] for e in errs] == ["tenantId"]
    assert "3-64 characters" in errs[0]["detail"]
    assert "lowercase" in errs[0]["detail"]
    assert not errs[0]["detail"].startswith("Value error")


def test_tenant_id_must_be_a_string() -> None:
    assert fields_of(EventIn, event_dict(tenantId=123)) == {"tenantId"}


# ---- required fields, objects, extras -------------------------------------------------------


@pytest.mark.parametrize("missing", ["tenantId", "eventType", "source", "action", "data"])
def test_required_fields(missing: str) -> None:
    errs = errors_of(EventIn, event_dict(**{missing: None}))
    assert [(e["field"], e["type"]) for e in errs] == [(missing, "missing")]


def test_optional_fields_may_be_omitted() -> None:
    ev = EventIn.model_validate(event_dict(entityId=None, entityType=None))
    assert ev.entityId is None and ev.metadata == {} and ev.timestamp is None


def test_all_errors_are_reported_at_once() -> None:
    body = {"tenantId": "X", "eventType": "NOPE", "source": "ARCHER_GRC", "action": "UPDATE"}
    assert fields_of(EventIn, body) == {"tenantId", "eventType", "data"}


@pytest.mark.parametrize("field", ["data", "metadata"])
@pytest.mark.parametrize("value", [[1, 2], "text", 5, True])
def test_data_and_metadata_must_be_objects(field: str, value: Any) -> None:
    assert fields_of(EventIn, event_dict(**{field: value})) == {field}


def test_data_from_an_in_process_caller_any_mapping_str_keys_at_every_level() -> None:
    """Parsed JSON is taken as it is; a Mapping that is not a dict is copied into one (as pydantic's
    dict validation did); a key that is not a str, at any depth, is a field error, not a TypeError
    in the shape check or the serialiser later."""
    from types import MappingProxyType  # noqa: PLC0415

    parsed = {"score": 3}
    assert EventIn.model_validate(event_dict(data=parsed)).data is parsed
    ev = EventIn.model_validate(event_dict(data=MappingProxyType({"score": 3})))
    assert type(ev.data) is dict and ev.data == {"score": 3}
    for data in ({1: "x"}, {"nested": {"ok": [{2: "y"}]}}):
        errs = errors_of(EventIn, event_dict(data=data))
        assert [(e["field"], e["type"]) for e in errs] == [("data", "value_error")]
        assert "keys must be strings" in errs[0]["detail"]


def test_data_null_is_refused() -> None:
    body = event_dict()
    body["data"] = None
    assert fields_of(EventIn, body) == {"data"}


def test_extra_fields_are_refused() -> None:
    errs = errors_of(EventIn, event_dict(priority="high"))
    assert [(e["field"], e["type"]) for e in errs] == [("priority", "extra_forbidden")]


def test_nested_error_paths_use_pointer_and_dotted_forms() -> None:
    errs = errors_of(EventIn, event_dict(entityType="9bad"))
    assert errs[0]["pointer"] == "/entityType"
    errs = field_errors(_validation_error(EventIn, event_dict(tenantId="X")), prefix=("events", 3))
    assert errs[0].pointer == "/events/3/tenantId"
    assert errs[0].field == "events[3].tenantId"


def _validation_error(model: type, body: Any) -> ValidationError:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


# ---- shape limits ---------------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        node = {"n": node}
    return node


def test_nesting_depth_limit() -> None:
    EventIn.model_validate(event_dict(data=_nested(limits.MAX_DEPTH)))
    errs = errors_of(EventIn, event_dict(data=_nested(limits.MAX_DEPTH + 1)))
    assert errs[0]["field"] == "data" and "nested deeper" in errs[0]["detail"]


def test_nesting_depth_counts_lists_too() -> None:
    node: Any = 1
    for _ in range(limits.MAX_DEPTH + 1):
        node = [node]
    assert fields_of(EventIn, event_dict(metadata={"x": node})) == {"metadata"}


def test_field_count_limit() -> None:
    EventIn.model_validate(event_dict(data={f"k{i}": i for i in range(limits.MAX_FIELDS)}))
    errs = errors_of(EventIn, event_dict(data={"a": list(range(limits.MAX_FIELDS)), "b": 1}))
    assert "more than" in errs[0]["detail"]


def test_key_length_limit() -> None:
    EventIn.model_validate(event_dict(data={"k" * limits.MAX_KEY_LENGTH: 1}))
    errs = errors_of(EventIn, event_dict(data={"x": {"k" * (limits.MAX_KEY_LENGTH + 1): 1}}))
    assert errs[0]["field"] == "data" and "key longer" in errs[0]["detail"]


def test_string_length_limit_in_objects_and_lists() -> None:
    EventIn.model_validate(event_dict(data={"s": "x" * limits.MAX_STRING_LENGTH}))
    assert fields_of(EventIn, event_dict(data={"s": "x" * (limits.MAX_STRING_LENGTH + 1)})) == {"data"}
    assert fields_of(EventIn, event_dict(metadata={"l": ["x" * (limits.MAX_STRING_LENGTH + 1)]})) == {"metadata"}


# ---- timestamp, client ids --------------------------------------------------------------------


def test_timestamp_needs_an_offset() -> None:
    errs = errors_of(EventIn, event_dict(timestamp="2026-01-31T12:00:00"))
    assert errs[0]["field"] == "timestamp" and "offset" in errs[0]["detail"]


@pytest.mark.parametrize("ts", ["2026-01-31T12:00:00Z", "2026-01-31T14:00:00+02:00", "2020-02-29T00:00:00.123-05:00"])
def test_timestamps_with_offsets_are_accepted(ts: str) -> None:
    assert EventIn.model_validate(event_dict(timestamp=ts)).timestamp is not None


def test_timestamp_in_the_future_within_skew_is_accepted() -> None:
    ts = (datetime.now(timezone.utc) + timedelta(seconds=limits.MAX_CLOCK_SKEW_SECONDS - 60)).isoformat()
    assert EventIn.model_validate(event_dict(timestamp=ts)).timestamp is not None


def test_timestamp_too_far_in_the_future_is_refused() -> None:
    ts = (datetime.now(timezone.utc) + timedelta(seconds=limits.MAX_CLOCK_SKEW_SECONDS + 60)).isoformat()
    errs = errors_of(EventIn, event_dict(timestamp=ts))
    assert errs[0]["field"] == "timestamp" and "future" in errs[0]["detail"]


def test_timestamp_garbage_is_refused() -> None:
    assert fields_of(EventIn, event_dict(timestamp="yesterday")) == {"timestamp"}


@pytest.mark.parametrize("value", ["evt-1", "01J0ABC:x.y_z", "a" * 128, "0190f2b8-5a3e-7c1d-8e2f-123456789abc"])
def test_client_ids_accepted(value: str) -> None:
    ev = EventIn.model_validate(event_dict(eventId=value, correlationId=value))
    assert ev.eventId == value and ev.correlationId == value


@pytest.mark.parametrize("value", ["", "a" * 129, "has space", "slash/id", "new\nline", "ünï"])
def test_client_ids_refused(value: str) -> None:
    assert fields_of(EventIn, event_dict(eventId=value, correlationId=value)) == {"eventId", "correlationId"}


# ---- stream config ------------------------------------------------------------------------------


def test_stream_config_defaults() -> None:
    cfg = StreamConfigIn.model_validate({})
    assert cfg.enabled is True and cfg.filters == [] and cfg.retentionDays == 30 and cfg.batchSize == 100
    assert [d.type for d in cfg.destinations] == ["redis"]
    default = StreamConfig.default("tenant-123")
    assert default.isDefault and default.version == 0 and default.tenantId == "tenant-123"


def test_stream_config_full_body_is_accepted() -> None:
    cfg = StreamConfigIn.model_validate({
        "enabled": True,
        "topics": ["grc.risk"],
        "filters": [{"eventTypes": ["RISK_UPDATED"], "sources": ["ARCHER_GRC"],
                     "conditions": {"data.riskScore": {"gte": 5}, "metadata.region": "eu",
                                    "data.tags": {"contains": "pci"}, "data.owner": {"exists": True},
                                    "data.name": {"startsWith": "R-"}, "data.level": {"in": [1, 2]}}}],
        "destinations": [{"type": "redis", "enabled": True, "config": {"format": "cloudevents", "maxLen": 1000}}],
        "retentionDays": 7,
        "batchSize": 500,
    })
    assert cfg.destinations[0].options.format == "cloudevents"  # type: ignore[attr-defined]
    assert cfg.filters[0].conditions["data.riskScore"] == {"gte": 5}


def test_an_unknown_condition_operator_has_the_condition_path() -> None:
    errs = errors_of(StreamConfigIn, {"filters": [{}, {"conditions": {"data.score": {"between": [1, 2]}}}]})
    assert [e["field"] for e in errs] == ["filters[1].conditions.data.score"]
    assert errs[0]["pointer"] == "/filters/1/conditions/data.score"
    assert "between" in errs[0]["detail"] and "startsWith" in errs[0]["detail"]


@pytest.mark.parametrize("cond,needle", [
    ({"in": 5}, "'in' takes a list"),
    ({"exists": "yes"}, "'exists' takes true or false"),
    ({"startsWith": 1}, "'startsWith' takes a string"),
    ({}, "empty operator object"),
])
def test_condition_operand_types(cond: dict[str, Any], needle: str) -> None:
    errs = errors_of(StreamConfigIn, {"filters": [{"conditions": {"data.x": cond}}]})
    assert [(e["pointer"], e["detail"]) for e in errs] == [("/filters/0/conditions/data.x", needle)]


def test_every_bad_condition_is_named_not_only_the_first() -> None:
    errs = errors_of(StreamConfigIn, {"filters": [{"conditions": {"data.a": {"in": 1}, "data.b": 2,
                                                                   "metadata.c": {"exists": 1}}}]})
    assert [e["pointer"] for e in errs] == ["/filters/0/conditions/data.a", "/filters/0/conditions/metadata.c"]


@pytest.mark.parametrize("path", ["riskScore", "body.x", "data", "data..x", "data.a b", "metadata."])
def test_condition_paths_must_be_rooted_in_data_or_metadata(path: str) -> None:
    errs = errors_of(StreamConfigIn, {"filters": [{"conditions": {path: 1}}]})
    assert errs and all(e["field"].startswith("filters[0].conditions") for e in errs)
    # The member whose name is wrong, as a JSON Pointer (pydantic's "[key]" step is no pointer step).
    assert all(e["pointer"] == "/filters/0/conditions/" + path.replace("~", "~0").replace("/", "~1")
               and e["detail"].startswith("member name: ") for e in errs), errs


def test_filter_event_types_and_sources_are_checked() -> None:
    fields = fields_of(StreamConfigIn, {"filters": [{"eventTypes": ["RISK_UPDATED", "NOPE"], "sources": ["X"]}]})
    assert fields == {"filters[0].eventTypes[1]", "filters[0].sources[0]"}


def test_destination_option_errors_have_paths_without_the_union_tag() -> None:
    errs = errors_of(StreamConfigIn, {"destinations": [{"type": "redis", "config": {"format": "xml", "maxLen": 5}}]})
    assert {e["field"] for e in errs} == {"destinations[0].config.format", "destinations[0].config.maxLen"}
    assert {e["pointer"] for e in errs} == {"/destinations/0/config/format", "/destinations/0/config/maxLen"}
    assert all(".redis" not in e["field"] and "/redis/" not in e["pointer"] for e in errs)


def test_unknown_destination_option_is_refused() -> None:
    errs = errors_of(StreamConfigIn, {"destinations": [{"type": "redis", "config": {"stream": "x"}}]})
    assert [(e["field"], e["type"]) for e in errs] == [("destinations[0].config.stream", "extra_forbidden")]


def test_unknown_destination_type_is_refused() -> None:
    errs = errors_of(StreamConfigIn, {"destinations": [{"type": "smtp"}]})
    assert errs[0]["field"] == "destinations[0]" and errs[0]["type"] == "union_tag_invalid"


def test_duplicate_destination_types_are_refused() -> None:
    errs = errors_of(StreamConfigIn, {"destinations": [{"type": "redis"}, {"type": "redis", "enabled": False}]})
    # The error points at the list and names the entries (a model-level error would have no path).
    assert [(e["pointer"], e["field"]) for e in errs] == [("/destinations", "destinations")]
    assert errs[0]["detail"] == "destination types must be unique; repeated: 'redis' at 0, 1"


@pytest.mark.parametrize("field,bad,good", [("retentionDays", [0, 3651], [1, 3650]), ("batchSize", [0, 1001], [1, 1000])])
def test_numeric_bounds(field: str, bad: list[int], good: list[int]) -> None:
    for v in good:
        assert getattr(StreamConfigIn.model_validate({field: v}), field) == v
    for v in bad:
        assert fields_of(StreamConfigIn, {field: v}) == {field}


def test_stream_config_extra_fields_and_tenant_rule() -> None:
    assert fields_of(StreamConfigIn, {"retention": 3}) == {"retention"}
    assert fields_of(StreamConfigIn, {"tenantId": "Bad_Tenant"}) == {"tenantId"}


@pytest.mark.parametrize("ts", [0, 1_700_000_000, 1.7e9, True, "1700000000", "2026-01-31 12:00:00Z", "2026-01-31"])
def test_timestamp_must_be_an_rfc3339_string(ts: object) -> None:
    """The API documents a date-time string; pydantic's lax mode alone would read numbers as Unix seconds."""
    assert fields_of(EventIn, event_dict(timestamp=ts)) == {"timestamp"}


def test_timestamp_may_be_a_datetime_in_process() -> None:
    """The producer library hands validated models back in (model_dump keeps datetimes)."""
    ts = datetime(2026, 1, 31, 12, tzinfo=timezone.utc)
    assert EventIn.model_validate(event_dict(timestamp=ts)).timestamp == ts


@pytest.mark.parametrize(("ts", "words"), [
    ("2026-13-01T00:00:00Z", "month 13 is not 01-12"),
    ("2026-02-29T00:00:00Z", "2026-02-29 is not a date"),
    ("0000-01-01T00:00:00Z", "0000-01-01 is not a date"),
    ("2026-12-07T24:00:00Z", "hour 24 is not 00-23"),
    ("2026-12-07T18:61:00Z", "minute 61 is not 00-59"),
    ("2016-12-31T23:59:60Z", "second 60 (a leap second) cannot be stored"),
    ("2026-12-07T18:00:61Z", "second 61 is not 00-59"),
    ("2026-12-07T18:00:00-24:00", "offset -24:00 is not within"),
    ("2026-12-07T18:00:00+05:60", "offset +05:60 is not within"),
])
def test_a_date_time_of_the_right_shape_that_is_no_time_names_the_wrong_part(ts: str, words: str) -> None:
    with pytest.raises(ValidationError) as exc:
        EventIn.model_validate(event_dict(timestamp=ts))
    [error] = field_errors(exc.value)
    assert error.pointer == "/timestamp"
    assert error.detail.startswith(f"timestamp is not a valid date-time: {words}"), error.detail


def test_date_time_problem_finds_none_in_valid_times() -> None:
    from shared.core.events import date_time_problem

    for ts in ("2024-02-29T23:59:59.999999Z", "2026-12-07t00:00:00+23:59", "2026-12-07T18:00:00",
               "0001-01-01T00:00:00Z"):
        assert date_time_problem(ts) is None, ts
    assert date_time_problem("not a time") is None  # not of the shape: the caller's own message says so
