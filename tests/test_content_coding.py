"""Request bodies with a content coding (shared/http/content_coding.py): gzip is decoded within the
body limit, anything else refused."""
from __future__ import annotations

import gzip

import pytest

from shared.http.content_coding import decoded_body
from shared.http.types import ProblemError

BODY = b'{"events": [{"a": 1}]}'


@pytest.mark.parametrize("header", [None, "", "identity", " Identity "])
def test_no_coding_leaves_the_body_as_it_is(header: str | None) -> None:
    assert decoded_body(BODY, header, 100) is BODY


@pytest.mark.parametrize("header", ["gzip", "GZIP", "x-gzip", "identity, gzip"])
def test_gzip_is_decoded(header: str) -> None:
    assert decoded_body(gzip.compress(BODY), header, 100) == BODY


def test_every_member_of_a_gzip_file_and_every_gzip_applied_is_decoded() -> None:
    assert decoded_body(gzip.compress(BODY[:5]) + gzip.compress(BODY[5:]), "gzip", 100) == BODY
    assert decoded_body(gzip.compress(gzip.compress(BODY)), "gzip, gzip", 100) == BODY


def test_the_limit_is_on_the_decoded_body() -> None:
    assert decoded_body(gzip.compress(BODY), "gzip", len(BODY)) == BODY
    with pytest.raises(ProblemError) as err:
        decoded_body(gzip.compress(BODY), "gzip", len(BODY) - 1)
    assert err.value.status == 413 and err.value.extensions["maxBytes"] == len(BODY) - 1
    with pytest.raises(ProblemError) as err:  # the second member takes it over the limit
        decoded_body(gzip.compress(BODY) * 2, "gzip", len(BODY) + 1)
    assert err.value.status == 413


@pytest.mark.parametrize("data", [BODY, gzip.compress(BODY)[:-10], gzip.compress(BODY) + b"junk", b""])
def test_a_body_that_is_not_gzip_is_a_400(data: bytes) -> None:
    with pytest.raises(ProblemError) as err:
        decoded_body(data, "gzip", 100)
    assert err.value.status == 400 and "gzip" in str(err.value)


@pytest.mark.parametrize("header", ["br", "deflate", "compress", "gzip, br", "zstd"])
def test_another_coding_is_a_415_naming_gzip(header: str) -> None:
    with pytest.raises(ProblemError) as err:
        decoded_body(gzip.compress(BODY), header, 100)
    assert err.value.status == 415 and err.value.headers == {"Accept-Encoding": "gzip"}
