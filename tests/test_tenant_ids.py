"""One tenant-id rule, matched whole, at every place a tenant id enters the service.

The oracle below is written out character by character (no regular expression), so it does not
share the code's regex or its `$` pitfall. Every entry point must agree with it for arbitrary
unicode, and for valid ids with one extra character (a final newline is what `re.match` with `$`
let through).
"""
from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.api.params import tenant_param
from shared.changefeed.rules import Kind, Unmappable, validate
from shared.core.events import UNMAPPED_TENANT as UNMAPPED, EventIn, TenantId, is_tenant_id
from shared.core.streamconfig import StreamConfigIn
from shared.delivery.deadletters import partition_for
from shared.http.types import ApiRequest, Headers, ProblemError
from shared.security.tenants import claim_values, grants_from

ALLOWED = frozenset(string.ascii_lowercase + string.digits + "-")


def oracle(value: str) -> bool:
    return (3 <= len(value) <= 64 and all(c in ALLOWED for c in value)
            and value[0] != "-" and value[-1] != "-")


valid_ids = st.text(alphabet=sorted(ALLOWED), min_size=3, max_size=64).filter(oracle)
near_misses = st.builds(
    lambda t, extra, where: extra + t if where else t + extra,
    valid_ids,
    st.sampled_from(["\n", "\r\n", "\r", " ", "\t", "\x00", "\u2028", "\u0085", "\x0b", "\x0c", "A", "_", "é",
                     "-", "\uff41"]),
    st.booleans(),
)
candidates = st.one_of(st.text(), valid_ids, near_misses)
# The same text in every place: examples any failure shrinks towards.
EXAMPLES = ["acme", "acme\n", "acme\r\n", "\nacme", "ac", "a" * 64, "a" * 65, "-acme", "acme-", "Acme", "ac me"]

_TENANT = TypeAdapter(TenantId)


def _accepted(fn: Any, *errors: type[BaseException]) -> bool:
    try:
        fn()
    except errors:
        return False
    return True


def _path(value: str) -> Any:
    return tenant_param(ApiRequest("GET", "/events/x", Headers(), {}, {"tenantId": value}))


def _event(value: str) -> dict[str, Any]:
    return {"tenantId": value, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE",
            "data": {}}


def _doc(value: str) -> dict[str, Any]:
    return {"id": "r1", "tenantId": value, "_lsn": 1}


def entry_points(value: str) -> dict[str, bool]:
    """Whether each entry point takes `value` as a tenant id."""
    return {
        "is_tenant_id": is_tenant_id(value),
        "model TenantId": _accepted(lambda: _TENANT.validate_python(value), ValidationError),
        "EventIn.tenantId": _accepted(lambda: EventIn.model_validate(_event(value)), ValidationError),
        "EventIn from JSON": _accepted(
            lambda: EventIn.model_validate_json(json.dumps(_event(value))), ValidationError),
        "StreamConfigIn.tenantId": _accepted(lambda: StreamConfigIn.model_validate({"tenantId": value}),
                                             ValidationError),
        "path parameter": _accepted(lambda: _path(value), ProblemError),
        "tenants claim (array item)": grants_from(claim_values([value]), [], "Events.Admin") == {value},
        "tenants claim (string)": value in grants_from(claim_values(value), [], "Events.Admin"),
        "Tenant.<id> app role": grants_from([], claim_values([f"Tenant.{value}"]), "Events.Admin") == {value},
        "Cosmos document": _accepted(lambda: validate(Kind.RISKS, _doc(value)), Unmappable),
        "dead-letter partition": partition_for(_doc(value)) == value and value != UNMAPPED,
    }


@settings(max_examples=400, deadline=None)
@given(candidates)
@example("acme\n")
@example("bb\n")
def test_every_entry_point_takes_exactly_the_valid_ids(value: str) -> None:
    expected = oracle(value)
    got = entry_points(value)
    wrong = {name: ok for name, ok in got.items() if ok != expected}
    assert not wrong, f"{value!r} (valid: {expected}) taken differently by {wrong}"


@pytest.mark.parametrize("value", EXAMPLES)
def test_examples(value: str) -> None:
    assert set(entry_points(value).values()) == {oracle(value)}, entry_points(value)


def test_a_string_claim_is_split_on_spaces_only() -> None:
    assert grants_from(claim_values("acme globex"), [], "Events.Admin") == {"acme", "globex"}
    assert grants_from(claim_values("acme\nglobex"), [], "Events.Admin") == frozenset()


def test_no_regex_in_the_service_is_matched_by_prefix() -> None:
    """`pattern.match(...)` with a pattern ending in `$` takes a final newline; every regex check in
    the service and the runner uses fullmatch (or search, where a part is looked for)."""
    root = Path(__file__).resolve().parent.parent
    offenders = [f"{p.relative_to(root)}:{n}" for d in ("shared", "devhost") for p in sorted((root / d).rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"(?<!self)\.match\(", line)]
    offenders += [f"function_app.py:{n}" for n, line in enumerate((root / "function_app.py").read_text().splitlines(), 1)
                  if re.search(r"(?<!self)\.match\(", line)]
    assert not offenders, offenders
