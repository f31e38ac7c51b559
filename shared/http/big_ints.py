"""Integers a JSON body holds that would lose digits: orjson (the body parser) reads an integer outside
its 64-bit range as a float without an error, so `123456789012345678901234567890` would be stored as
`1.2345678901234568e+29`. The service refuses such a body instead of changing the client's data.

orjson holds integers from -2**63 to 2**64 - 1 exactly (and writes them back). Any integer outside
that range has at least 19 digits, so a body with no run of 19 digits has none: that scan (one
`bytes.translate` and a substring search, about 0.2 us per event of a 500-event bulk) is all a usual
body costs. Only a body with such a run (a long integer, a long fraction, digits in a string) is
parsed again, with the standard library, to find the integers and where they are.
"""
from __future__ import annotations

import json
from typing import Any

INT_MIN, INT_MAX = -(2**63), 2**64 - 1
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))  # every digit -> "0", the rest -> " "
_LONG_RUN = b"0" * 19
MAX_REPORTED = 20


class _OutOfRange:
    """Stands in for an integer outside the range while the body is searched."""


_OUT = _OutOfRange()


def _int(text: str) -> Any:
    digits = len(text) - (text[0] == "-")
    if digits < 19:
        return int(text)
    if digits > 20:  # not converted: Python refuses int() of more than 4,300 digits
        return _OUT
    value = int(text)
    return value if INT_MIN <= value <= INT_MAX else _OUT


def out_of_range_ints(body: bytes) -> list[list[str | int]]:
    """Where the body's out-of-range integers are (JSON paths as lists of keys and indices, at most
    MAX_REPORTED, in document order); empty for a body without any. `body` is valid JSON."""
    if _LONG_RUN not in body.translate(_DIGITS):
        return []
    try:
        doc = json.loads(body, parse_int=_int)
    except RecursionError:  # nested deeper than the standard parser goes: name the body
        return [[]]
    found: list[list[str | int]] = []
    stack: list[tuple[Any, list[str | int]]] = [(doc, [])]
    while stack and len(found) < MAX_REPORTED:
        node, path = stack.pop()
        if node is _OUT:
            found.append(path)
        elif isinstance(node, dict):
            stack.extend((v, [*path, k]) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, [*path, i]) for i, v in reversed(list(enumerate(node))))
    return found
