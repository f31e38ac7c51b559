"""Time-ordered event ids (UUIDv7, RFC 9562): sortable by creation time, unique across instances."""
from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def uuid7() -> str:
    """UUIDv7 with a 12-bit per-millisecond counter so ids made in one process stay strictly ordered."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _seq = ms, int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        else:
            _seq += 1
            if _seq > 0xFFF:  # counter exhausted within one ms: borrow the next millisecond
                _last_ms, _seq = _last_ms + 1, 0
            ms = _last_ms
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    return str(uuid.UUID(int=value))


def uuid7_time_ms(value: str) -> int:
    return uuid.UUID(value).int >> 80


def derived_uuid(ms: int, *parts: str) -> str:
    """A deterministic, time-prefixed id (UUIDv8, RFC 9562 section 5.8).

    The top 48 bits are `ms` (as in UUIDv7, so ids still sort by time); the rest is a SHA-256 of
    `parts`. The same inputs always give the same id: a change re-delivered by the Cosmos change
    feed maps to the events it mapped to the first time, so downstream dedup by id works.
    """
    import hashlib  # noqa: PLC0415 - rarely used here

    digest = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:10], "big")
    rand_a = (digest >> 68) & 0xFFF
    rand_b = digest & ((1 << 62) - 1)
    value = ((ms & ((1 << 48) - 1)) << 80) | (0x8 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))
