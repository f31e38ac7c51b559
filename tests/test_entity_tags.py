"""If-Match / If-None-Match values (RFC 9110 section 13.1): `*` or a list of entity tags."""
from __future__ import annotations

import pytest

from shared.core.entity_tags import parse_entity_tags

AZURE = 'W/"datetime\'2026-12-07T18%3A18%3A01.3071596Z\'"'  # what Azure Tables (and Azurite) give


def test_star_names_any_stored_entity_and_nothing_when_none_is_stored() -> None:
    tags = parse_entity_tags(" * ")
    assert tags.any and tags.matches(AZURE) and not tags.matches(None)


@pytest.mark.parametrize("header", [AZURE, f'"a", {AZURE}', f'{AZURE} , "b",', f' W/"x",{AZURE}'])
def test_a_list_matches_when_any_tag_does(header: str) -> None:
    assert parse_entity_tags(header).matches(AZURE)


def test_the_weak_marker_is_ignored_on_either_side() -> None:
    assert parse_entity_tags(AZURE.removeprefix("W/")).matches(AZURE)
    assert parse_entity_tags('W/"v1"').matches('"v1"')
    assert not parse_entity_tags('"v1"').matches('"v2"') and not parse_entity_tags('"v1"').matches(None)


@pytest.mark.parametrize("header", ["", "abc", "W/abc", '"a" "b"', '"a"x', 'W/ "a"', '"unterminated', ", "])
def test_anything_else_is_refused_with_a_reason(header: str) -> None:
    with pytest.raises(ValueError, match="entity tags|empty"):
        parse_entity_tags(header)
