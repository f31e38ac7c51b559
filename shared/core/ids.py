"""Time-ordered event ids (UUIDv7, RFC 9562): sortable by creation time, unique across instances."""
from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_seq = 0
# Random bits come from os.urandom, RANDOM_BLOCK bytes per system call (one call per 512 ids), not a
# system call per id: every event takes one or two ids (docs/performance.md). A forked child starts
# with an empty block, so it never repeats its parent's bits.
RANDOM_BLOCK = 4096
_random = b""
_at = 0
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)
_RAND_MASK = (1 << 62) - 1


def _reset_random() -> None:
    global _random, _at
    _random, _at = b"", 0


os.register_at_fork(after_in_child=_reset_random)


def uuid7() -> str:
    """UUIDv7 with a 12-bit per-millisecond counter so ids made in one process stay strictly ordered."""
    global _last_ms, _seq, _random, _at
    with _lock:
        if _at + 10 > len(_random):
            _random, _at = os.urandom(RANDOM_BLOCK), 0
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _seq = ms, int.from_bytes(_random[_at:_at + 2], "big") & 0x3FF  # leave room to count up
            _at += 2
        else:
            _seq += 1
            if _seq > 0xFFF:  # counter exhausted within one ms: borrow the next millisecond
                _last_ms, _seq = _last_ms + 1, 0
            ms = _last_ms
        rand = int.from_bytes(_random[_at:_at + 8], "big") & _RAND_MASK
        _at += 8
        value = (ms << 80) | (_seq << 64) | _VERSION_VARIANT | rand
    h = "%032x" % value
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
