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
