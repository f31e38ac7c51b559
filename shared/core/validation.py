"""pydantic errors -> field errors with a JSON Pointer and a dotted path (RFC 9457 `errors`)."""
from __future__ import annotations

from typing import Any, Sequence

from pydantic import ValidationError

from shared.core.events import TENANT_PATTERN, TENANT_RULE, date_time_error, date_time_problem
from shared.core.results import FieldError

_UNION_TAGS = frozenset({"redis", "kafka", "analytics", "vector"})
# pydantic's errors for a string of RFC 3339's shape that is no date-time (e.g. hour 24)
_DATE_TIME_ERRORS = frozenset({"datetime_from_date_parsing", "datetime_parsing"})


def _clean(loc: Sequence[Any]) -> list[Any]:
    """Drop discriminated-union tags (`destinations.0.redis.config` -> `destinations.0.config`)."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and part in _UNION_TAGS and i > 0 and isinstance(loc[i - 1], int):
            continue
        out.append(part)
    return out


def pointer(loc: Sequence[Any]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in loc) if loc else ""


def dotted(loc: Sequence[Any]) -> str:
    s = ""
    for p in loc:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s or "(body)"


def field_errors(exc: ValidationError, prefix: Sequence[Any] = ()) -> list[FieldError]:
    errors: list[FieldError] = []
    # The input is read only to word a date-time's error; it is never put in the error.
    for err in exc.errors(include_url=False):
        loc = [*prefix, *_clean(err["loc"])]
        raw = err.get("input")
        if err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == TENANT_PATTERN:
            msg = f"tenantId must be {TENANT_RULE}"  # the rule in words, not the regular expression
        elif err["type"] in _DATE_TIME_ERRORS and isinstance(raw, str) and date_time_problem(raw):
            msg = date_time_error(raw, str(loc[-1]) if loc else "value")
        else:
            msg = err["msg"].removeprefix("Value error, ")
        if loc and loc[-1] == "[key]":  # pydantic's mark for a member's name: no JSON Pointer step
            loc.pop()
            msg = f"member name: {msg}"
        errors.append(FieldError(pointer=pointer(loc), field=dotted(loc), detail=msg, type=err["type"]))
    return errors


def field_error(loc: Sequence[Any], detail: str, type_: str | None = None) -> FieldError:
    """One error at `loc` (a path into the body) found by a check of our own, not by pydantic."""
    return FieldError(pointer=pointer(loc), field=dotted(loc), detail=detail, type=type_)
