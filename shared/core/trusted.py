"""Pydantic instances built from values the code made itself, without validation: the one way the
hot models (`Event.trusted`, `Delivery.of`, `EventResult.of`) are built per event.

The instance state is what validation would leave: the field dict (every field given), the set of
fields given, no extras, the private attributes. The set is one per model, shared by all its trusted
instances: every field is given, so it is complete, and pydantic only adds a name already in it (an
assignment) or copies it (`model_copy`). The slots are set through their descriptors, a C call each,
rather than `object.__setattr__` by name (docs/performance.md, 2026-12-06 evening: 630 -> 460 ns per
Delivery).
"""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_new = object.__new__  # BaseModel keeps object's __new__
_set_dict = object.__setattr__
_slots = BaseModel.__dict__
_set_fields_set = _slots["__pydantic_fields_set__"].__set__
_set_extra = _slots["__pydantic_extra__"].__set__
_set_private = _slots["__pydantic_private__"].__set__


def field_names(cls: type[BaseModel]) -> set[str]:
    """The shared set of given fields for `cls`'s trusted instances (all of its fields)."""
    return set(cls.model_fields)


def construct(
    cls: type[M], fields: dict[str, Any], names: set[str], private: dict[str, Any] | None = None
) -> M:
    """An instance of `cls` with `fields` (every field, in declaration order for the wire order)."""
    obj = _new(cls)
    _set_dict(obj, "__dict__", fields)
    _set_fields_set(obj, names)
    _set_extra(obj, None)
    _set_private(obj, private)
    return obj
