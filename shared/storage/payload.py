"""The one chunked-payload codec: a JSON document kept in Azure Table properties.

A string property holds 64 KiB (32 K UTF-16 code units), a binary property 64 KiB, an entity 1 MiB.
`encode(raw, prefix)` picks the smallest form that fits:

- `{P}`: the text in one string property;
- `{P}_0` .. `{P}_n` and `{P}Chunks`: the text in several, never splitting a surrogate pair;
- `{P}Gz`, or `{P}Gz_0` .. `{P}Gz_n` and `{P}Chunks`: gzip'd (64,000-byte chunks), when the caller
  asks (`compress`) or when the text would not fit an entity.

`decode(entity, prefix)` reads any of them back; `dump` / `load` do the same for a value (JSON). Users: the analytics table and the dead letters
(prefix `Payload`), the audit trail (`Before`, `After`).
"""
from __future__ import annotations

import gzip
from collections.abc import Mapping
from typing import Any

import orjson

STRING_CHUNK_UTF16_BYTES = 64_000  # a string property holds 64 KiB of UTF-16
BINARY_CHUNK_BYTES = 64_000
MAX_TEXT_UTF16_BYTES = 900_000  # above this the text would not fit a 1 MiB entity: gzip instead


def split_utf16(text: str, chunk_bytes: int = STRING_CHUNK_UTF16_BYTES) -> list[str]:
    """Split so each part is at most `chunk_bytes` in UTF-16, never inside a surrogate pair."""
    if text.isascii():
        step = chunk_bytes // 2
        return [text[i:i + step] for i in range(0, len(text), step)] or [""]
    raw = text.encode("utf-16-le")
    parts: list[str] = []
    start = 0
    while start < len(raw):
        end = min(start + chunk_bytes - chunk_bytes % 2, len(raw))
        if end < len(raw) and 0xD800 <= int.from_bytes(raw[end - 2:end], "little") <= 0xDBFF:
            end -= 2  # do not cut between a high and a low surrogate
        parts.append(raw[start:end].decode("utf-16-le"))
        start = end
    return parts or [""]


def utf16_size(text: str) -> int:
    return 2 * len(text) if text.isascii() else len(text.encode("utf-16-le"))


def encode(raw: bytes, prefix: str = "Payload", *, compress: bool = False) -> tuple[dict[str, Any], int]:
    """The properties holding `raw` (UTF-8 JSON), and about how many request bytes they take."""
    if not compress:
        text = raw.decode()
        size = utf16_size(text)
        if size <= STRING_CHUNK_UTF16_BYTES:
            return {prefix: text}, len(raw)
        if size <= MAX_TEXT_UTF16_BYTES:
            chunks = split_utf16(text)
            props: dict[str, Any] = {f"{prefix}_{i}": c for i, c in enumerate(chunks)}
            props[f"{prefix}Chunks"] = len(chunks)
            return props, len(raw)
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    size = len(gz) * 4 // 3 + 64  # base64 on the wire
    if len(gz) <= BINARY_CHUNK_BYTES:
        return {f"{prefix}Gz": gz}, size
    parts = [gz[i:i + BINARY_CHUNK_BYTES] for i in range(0, len(gz), BINARY_CHUNK_BYTES)]
    props = {f"{prefix}Gz_{i}": p for i, p in enumerate(parts)}
    props[f"{prefix}Chunks"] = len(parts)
    return props, size


def decode(entity: Mapping[str, Any], prefix: str = "Payload") -> str | bytes | None:
    """The JSON text `encode` stored under `prefix` (str or bytes, as orjson.loads takes), or None."""
    if prefix in entity:
        return entity[prefix]
    if f"{prefix}Gz" in entity:
        return gzip.decompress(bytes(entity[f"{prefix}Gz"]))
    n = entity.get(f"{prefix}Chunks")
    if n is None:
        return None
    if f"{prefix}Gz_0" in entity:
        return gzip.decompress(b"".join(bytes(entity[f"{prefix}Gz_{i}"]) for i in range(int(n))))
    return "".join(entity[f"{prefix}_{i}"] for i in range(int(n)))


def dump(value: Any, prefix: str = "Payload", *, compress: bool = False) -> tuple[dict[str, Any], int]:
    """`encode` of `value` as JSON."""
    return encode(orjson.dumps(value), prefix, compress=compress)


def load(entity: Mapping[str, Any], prefix: str = "Payload") -> Any:
    """The value `dump` stored under `prefix`, or None when there is none."""
    text = decode(entity, prefix)
    return None if text is None else orjson.loads(text)
