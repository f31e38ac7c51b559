"""Tenant filters: every operator over dotted data/metadata paths; any-filter-matches semantics."""
from __future__ import annotations

from typing import Any

import pytest

from shared.core.enrich import enrich
from shared.core.events import Event, EventIn
from shared.core.filters import _MISSING, filter_matches, lookup, passes
from shared.core.streamconfig import StreamFilter
from tests.doubles import event_dict, stream_config

DATA: dict[str, Any] = {
    "riskScore": 7,
    "ratio": 0.5,
    "status": "open",
    "name": "R-100 vendor risk",
    "tags": ["pci", "sox"],
    "owner": {"id": "u1", "team": {"name": "sec"}},
    "items": [{"id": "a"}, {"id": "b"}],
    "flag": True,
    "nothing": None,
    "when": "2026-01-31T12:00:00Z",
    "dueAt": "2026-12-01T03:00:00+05:00",
    "precise": "2026-12-01T00:00:00.5Z",
    "day": "2026-11-30",
}
META = {"region": "eu", "userId": "u9"}


def make_event(**over: Any) -> Event:
    raw = event_dict(data=DATA, metadata=META)
    raw.update(over)
    return enrich(EventIn.model_validate(raw), ingested_at="2026-11-27T03:00:00.000Z")


EV = make_event()


def match(conditions: dict[str, Any], ev: Event = EV) -> bool:
    return filter_matches(StreamFilter(conditions=conditions), ev)


def test_lookup_paths() -> None:
    assert lookup(EV, "data.owner.team.name") == "sec"
    assert lookup(EV, "data.items.1.id") == "b"
    assert lookup(EV, "metadata.region") == "eu"
    assert lookup(EV, "data.nothing") is None
    for missing in ("data.absent", "data.items.5.id", "data.items.x", "data.status.sub", "metadata.nope"):
        assert lookup(EV, missing) is _MISSING  # distinct from a present null


@pytest.mark.parametrize("cond,expected", [
    # eq (shorthand and explicit)
    ({"data.status": "open"}, True),
    ({"data.status": "closed"}, False),
    ({"data.riskScore": {"eq": 7}}, True),
    ({"data.riskScore": {"eq": "7"}}, False),
    ({"data.absent": {"eq": None}}, False),
    ({"data.nothing": {"eq": None}}, True),
    ({"data.owner.team.name": "sec"}, True),
    ({"data.items.0.id": "a"}, True),
    ({"data.items.2.id": "a"}, False),
    ({"metadata.region": "eu"}, True),
    ({"metadata.region": "us"}, False),
    # ne: a missing value is "not equal"
    ({"data.status": {"ne": "closed"}}, True),
    ({"data.status": {"ne": "open"}}, False),
    ({"data.absent": {"ne": "x"}}, True),
    # in
    ({"data.status": {"in": ["open", "new"]}}, True),
    ({"data.status": {"in": ["closed"]}}, False),
    ({"data.absent": {"in": [None]}}, False),
    ({"data.tags": {"in": ["pci"]}}, False),
    # ordering, numbers
    ({"data.riskScore": {"gt": 6}}, True),
    ({"data.riskScore": {"gt": 7}}, False),
    ({"data.riskScore": {"gte": 7}}, True),
    ({"data.riskScore": {"gte": 8}}, False),
    ({"data.riskScore": {"lt": 8}}, True),
    ({"data.riskScore": {"lt": 7}}, False),
    ({"data.riskScore": {"lte": 7}}, True),
    ({"data.riskScore": {"lte": 6.9}}, False),
    ({"data.ratio": {"gt": 0.25, "lt": 1}}, True),
    ({"data.riskScore": {"gte": 5, "lte": 6}}, False),  # every operator of a path must hold
    # ordering, strings (ISO timestamps)
    ({"data.when": {"gt": "2026-01-01T00:00:00Z"}}, True),
    ({"data.when": {"lt": "2026-01-01T00:00:00Z"}}, False),
    # RFC 3339 date-times compare as instants, whatever their offsets and fractions (as text they
    # sort apart); no offset = UTC; anything else that is text, in code-point order.
    ({"data.dueAt": {"lt": "2026-12-01T00:00:00Z"}}, True),  # +05:00: 2026-11-30T22:00Z
    ({"data.dueAt": {"gte": "2026-12-01T00:00:00Z"}}, False),
    ({"data.dueAt": {"gte": "2026-11-30T22:00:00.000z"}}, True),  # the same instant, spelt otherwise
    ({"data.dueAt": {"gt": "2026-11-30T21:59:59.999999-00:00"}}, True),
    ({"data.precise": {"gt": "2026-12-01T00:00:00Z"}}, True),  # ...00.5Z: half a second later
    ({"data.precise": {"lte": "2026-12-01T00:00:00"}}, False),  # no offset = UTC
    ({"data.name": {"gt": "R-100"}}, True),
    ({"data.day": {"lt": "2026-12-01T00:00:00Z"}}, True),  # a date alone is text: "2026-11-30" < "2026-12"
    # type mismatches never match
    ({"data.riskScore": {"gt": "5"}}, False),
    ({"data.status": {"gt": 5}}, False),
    ({"data.status": {"lt": 5}}, False),
    ({"data.flag": {"gte": 0}}, False),
    ({"data.riskScore": {"gt": True}}, False),
    ({"data.owner": {"gt": 1}}, False),
    ({"data.absent": {"lt": 100}}, False),
    # bools are not numbers for eq either (True == 1 in Python)
    ({"data.flag": True}, True),
    ({"data.flag": {"eq": False}}, False),
    # exists
    ({"data.owner.id": {"exists": True}}, True),
    ({"data.absent": {"exists": True}}, False),
    ({"data.absent": {"exists": False}}, True),
    ({"data.nothing": {"exists": True}}, True),
    ({"data.items.1": {"exists": True}}, True),
    ({"data.items.2": {"exists": True}}, False),
    # contains: substring, list member, dict key
    ({"data.name": {"contains": "vendor"}}, True),
    ({"data.name": {"contains": "supplier"}}, False),
    ({"data.tags": {"contains": "sox"}}, True),
    ({"data.tags": {"contains": "hipaa"}}, False),
    ({"data.owner": {"contains": "team"}}, True),
    ({"data.name": {"contains": 100}}, False),
    ({"data.riskScore": {"contains": 7}}, False),
    ({"data.absent": {"contains": "x"}}, False),
    # startsWith
    ({"data.name": {"startsWith": "R-"}}, True),
    ({"data.name": {"startsWith": "C-"}}, False),
    ({"data.riskScore": {"startsWith": "7"}}, False),
    ({"data.absent": {"startsWith": ""}}, False),
    # several conditions: all must hold
    ({"data.status": "open", "metadata.region": "eu"}, True),
    ({"data.status": "open", "metadata.region": "us"}, False),
])
def test_operator(cond: dict[str, Any], expected: bool) -> None:
    assert match(cond) is expected


@pytest.mark.parametrize("cond", [
    {"data.flag": {"eq": 1}},
    {"data.flag": 1},
    {"data.flag": {"in": [1, 2]}},
    {"data.riskScore": {"eq": True}},
    {"data.zero": {"eq": False}},
    {"data.zero": {"in": [False]}},
    {"data.bits": {"contains": True}},
])
def test_bools_and_numbers_are_different_json_values(cond: dict[str, Any]) -> None:
    # Python says True == 1; in JSON a boolean never equals a number.
    ev = make_event(data={**DATA, "riskScore": 1, "zero": 0, "bits": [1, 0]})
    assert match(cond, ev) is False


def test_bool_and_number_negations() -> None:
    ev = make_event(data={**DATA, "zero": 0})
    assert match({"data.flag": {"ne": 1}}, ev) is True
    assert match({"data.zero": {"ne": False}}, ev) is True
    assert match({"data.zero": {"eq": 0.0}}, ev) is True  # 0 and 0.0 are the same JSON number
    assert match({"data.bits": {"contains": 1}}, make_event(data={"bits": [1, 0]})) is True


def test_event_types_and_sources() -> None:
    assert filter_matches(StreamFilter(eventTypes=["RISK_UPDATED", "RISK_CREATED"]), EV)
    assert not filter_matches(StreamFilter(eventTypes=["CONTROL_FAILED"]), EV)
    assert filter_matches(StreamFilter(sources=["ARCHER_GRC"]), EV)
    assert not filter_matches(StreamFilter(sources=["FRONTEND_APP"]), EV)
    assert not filter_matches(StreamFilter(eventTypes=["RISK_UPDATED"], sources=["FRONTEND_APP"]), EV)
    assert not filter_matches(StreamFilter(eventTypes=["RISK_UPDATED"], conditions={"data.riskScore": {"gt": 9}}), EV)
    assert filter_matches(StreamFilter(), EV)  # an empty filter matches everything


def test_no_filters_means_everything_passes() -> None:
    assert passes(stream_config(), EV)


def test_any_filter_matches() -> None:
    cfg = stream_config(filters=[{"eventTypes": ["CONTROL_FAILED"]}, {"conditions": {"data.riskScore": {"gte": 7}}}])
    assert passes(cfg, EV)
    assert not passes(cfg, make_event(data={"riskScore": 3}))
    assert passes(cfg, make_event(eventType="CONTROL_FAILED", data={"riskScore": 3}))


def test_disabled_stream_passes_nothing() -> None:
    assert not passes(stream_config(enabled=False), EV)
    assert not passes(stream_config(enabled=False, filters=[{}]), EV)
