"""Time-ordered event ids (UUIDv7, RFC 9562): sortable by creation time, unique across instances."""
from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_seq = 0
_prefix = ""  # the ids' text up to the counter for _last_ms: "tttttttt-tttt-7"
# Random bits come from os.urandom, RANDOM_BLOCK bytes per system call (one call per 500 or so ids),
# not a system call per id: every event takes one or two ids (docs/performance.md). A forked child
# starts with an empty block, so it never repeats its parent's bits.
RANDOM_BLOCK = 4096
_random = b""
_at = 0
# The variant nibble (RFC 9562: binary 10xx) from a random hex digit, keeping its two low bits.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_time_ns = time.time_ns


def _reset_random() -> None:
    global _random, _at
    _random, _at = b"", 0


os.register_at_fork(after_in_child=_reset_random)


def _prefix_of(ms: int) -> str:
    h = "%012x" % ms
    return f"{h[:8]}-{h[8:]}-7"


def uuid7() -> str:
    """UUIDv7 with a 12-bit per-millisecond counter so ids made in one process stay strictly ordered."""
    return uuid7s(1)[0]


def uuid7s(n: int) -> list[str]:
    """`n` UUIDv7s in creation order, made together: a bulk takes one per event, and one at a time they
    cost 1.2 us each (the lock, the clock, the integer formatting), together 0.37 us
    (docs/performance.md, 2026-12-06 night). The text is written from the hex digits of the random
    block and a prefix kept per millisecond, not formatted from a 128-bit integer."""
    global _last_ms, _seq, _prefix, _random, _at
    out: list[str] = []
    append = out.append
    with _lock:
        need = 2 + 8 * n
        if _at + need > len(_random):
            _random, _at = os.urandom(max(RANDOM_BLOCK, need)), 0
        ms = _time_ns() // 1_000_000
        if ms > _last_ms:  # a new millisecond: the counter starts low, leaving room to count up
            _last_ms, _prefix = ms, _prefix_of(ms)
            _seq = (int.from_bytes(_random[_at:_at + 2], "big") & 0x3FF) - 1
            _at += 2
        digits = _random[_at:_at + 8 * n].hex()  # 62 random bits per id: 2 in the variant digit, 60 after
        _at += 8 * n
        seq, prefix, variant = _seq, _prefix, _VARIANT
        for k in range(0, 16 * n, 16):
            seq += 1
            if seq > 0xFFF:  # counter exhausted within one ms: borrow the next millisecond
                _last_ms, seq = _last_ms + 1, 0
                prefix = _prefix = _prefix_of(_last_ms)
            append(f"{prefix}{seq:03x}-{variant[digits[k]]}{digits[k + 1:k + 4]}-{digits[k + 4:k + 16]}")
        _seq = seq
    return out


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
