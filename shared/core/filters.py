"""Per-tenant stream filters: an event passes when any filter matches (no filters = all pass)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.core.events import Event, parse_rfc3339, utc_instant
from shared.core.streamconfig import StreamConfig, StreamFilter

_MISSING = object()


def lookup(event: Event, path: str) -> Any:
    """Resolve a dotted path rooted at `data` or `metadata`; list indices are allowed (`data.items.0`)."""
    root, *parts = path.split(".")
    node: Any = event.data if root == "data" else event.metadata
    for part in parts:
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        # An index is ASCII digits: str.isdigit() also takes "²", which int() refuses (a ValueError
        # for every event of the tenant), and "٣", which is no index a client wrote.
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _same(a: Any, b: Any) -> bool:
    """JSON equality: a boolean never equals a number (Python says True == 1)."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _instant(text: str) -> datetime | None:
    """An RFC 3339 date-time as a UTC instant (no offset = UTC), else None. As text, one instant has
    many spellings that sort apart: `2026-12-01T03:00:00+05:00` is before `2026-12-01T00:00:00Z`, and
    `...00.5Z` sorts before `...00Z`. Fractions beyond microseconds are dropped (datetime's precision)."""
    if len(text) < 19 or text[10] not in "Tt":  # not a date-time: no parse attempted
        return None
    dt = parse_rfc3339(text)
    if dt is None:
        return None
    try:
        return utc_instant(dt)
    except ValueError:  # no UTC date-time (0001-01-01T00:00:00+01:00): compared as text
        return None


def _compare(op: str, value: Any, operand: Any) -> bool:
    if op == "exists":
        return (value is not _MISSING) == bool(operand)
    if value is _MISSING:
        return op == "ne"
    try:
        if op == "eq":
            return _same(value, operand)
        if op == "ne":
            return not _same(value, operand)
        if op == "in":
            return any(_same(value, o) for o in operand)
        if op == "contains":
            if isinstance(value, str):
                return isinstance(operand, str) and operand in value
            if isinstance(value, list):
                return any(_same(v, operand) for v in value)
            return isinstance(value, dict) and operand in value
        if op == "startsWith":
            return isinstance(value, str) and value.startswith(operand)
        # Ordering only between numbers, or between strings: two RFC 3339 date-times as instants,
        # other strings in code-point order.
        if isinstance(value, bool) or isinstance(operand, bool):
            return False
        numeric = isinstance(value, (int, float)) and isinstance(operand, (int, float))
        if not numeric:
            if not (isinstance(value, str) and isinstance(operand, str)):
                return False
            at, bound = _instant(value), _instant(operand)
            if at is not None and bound is not None:
                value, operand = at, bound
        if op == "gt":
            return bool(value > operand)
        if op == "gte":
            return bool(value >= operand)
        if op == "lt":
            return bool(value < operand)
        if op == "lte":
            return bool(value <= operand)
    except TypeError:
        return False
    raise ValueError(f"unknown operator {op}")


def filter_matches(f: StreamFilter, event: Event) -> bool:
    if f.eventTypes and event.eventType not in f.eventTypes:
        return False
    if f.sources and event.source not in f.sources:
        return False
    for path, cond in f.conditions.items():
        value = lookup(event, path)
        if isinstance(cond, dict):
            if not all(_compare(op, value, operand) for op, operand in cond.items()):
                return False
        elif not _compare("eq", value, cond):
            return False
    return True


def passes(config: StreamConfig, event: Event) -> bool:
    if not config.enabled:
        return False
    return not config.filters or any(filter_matches(f, event) for f in config.filters)
