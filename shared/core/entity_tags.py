"""`If-Match` / `If-None-Match` values (RFC 9110 section 13.1): `*`, or a list of entity tags.

The ETags we hand out are the storage's own (Azure Tables gives weak ones, `W/"datetime'...'"`), and
each changes with every write of the entity, so we compare them by their opaque tag, `W/` ignored (the
weak comparison, RFC 9110 section 8.8.3.2). Strict strong comparison would make every `If-Match` fail,
since no ETag we give out is strong.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# An entity tag, `W/"..."` or `"..."` (etagc: any visible character but `"`), and a list of them.
_OPAQUE = r'"[\x21\x23-\x7e\x80-\xff]*"'
_TAG = re.compile(_OPAQUE)
_LIST = re.compile(rf"\s*(?:W/)?{_OPAQUE}\s*(?:,\s*(?:W/)?{_OPAQUE}\s*)*,?\s*")


@dataclass(frozen=True)
class EntityTags:
    """A parsed `If-Match` / `If-None-Match`: `any` for `*`, else the listed opaque tags."""
    any: bool
    tags: frozenset[str] = frozenset()

    def matches(self, etag: str | None) -> bool:
        """Whether the current ETag (None: nothing stored) is named: `*` names any stored entity."""
        if etag is None:
            return False
        return self.any or _opaque(etag) in self.tags


def parse_entity_tags(value: str) -> EntityTags:
    """`*` or a comma-separated list of entity tags; ValueError for anything else (an unquoted ETag,
    say), so that the caller can say which header is wrong rather than answer a puzzling 412."""
    text = value.strip()
    if text == "*":
        return EntityTags(any=True)
    if not text:
        raise ValueError("must not be empty")
    if _LIST.fullmatch(text) is None:
        raise ValueError('must be * or one or more entity tags as the ETag header gives them, '
                         'e.g. W/"datetime\'...\'" (quoted, comma-separated)')
    return EntityTags(any=False, tags=frozenset(_TAG.findall(text)))


def _opaque(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag
