"""storage/payload.py, the one chunked-payload codec: every form it writes reads back unchanged."""
from __future__ import annotations

import os

import orjson
import pytest

from shared.storage import payload


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le"))


@pytest.mark.parametrize("size, form", [(100, "Payload"), (40_000, "Payload_0"), (600_000, "PayloadGz_0")])
def test_each_form_round_trips(size: int, form: str) -> None:
    value = {"text": "".join("é𝄞" + os.urandom(8).hex() for _ in range(size // 20)), "n": 1}
    props, _ = payload.dump(value)
    assert form in props
    assert all(_utf16(v) <= payload.STRING_CHUNK_UTF16_BYTES for k, v in props.items() if isinstance(v, str))
    assert all(len(v) <= payload.BINARY_CHUNK_BYTES for v in props.values() if isinstance(v, bytes))
    assert payload.load(props) == value


def test_compress_on_request_and_other_prefixes() -> None:
    value = {"rules": ["x" * 100] * 50}
    props, size = payload.dump(value, "Before", compress=True)
    assert set(props) == {"BeforeGz"} and size < len(orjson.dumps(value))
    assert payload.load(props, "Before") == value and payload.load(props, "After") is None


def test_split_utf16_keeps_surrogate_pairs() -> None:
    text = "a" + "\U0001F600" * 10
    parts = payload.split_utf16(text, chunk_bytes=6)  # 'a'+half an emoji would cut a pair
    assert "".join(parts) == text
    assert all(len(p.encode("utf-16-le")) <= 6 for p in parts)
    assert payload.split_utf16("") == [""]
