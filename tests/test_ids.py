"""UUIDv7 event ids: strictly increasing in one process, RFC 9562 version/variant, embedded time."""
from __future__ import annotations

import time
import uuid

from shared.core.ids import uuid7, uuid7_time_ms, uuid7s


def test_strictly_increasing_over_many_ids() -> None:
    ids = [uuid7() for _ in range(50_000)]  # far more than 4096 per ms: exercises counter rollover
    assert len(set(ids)) == len(ids)
    assert all(a < b for a, b in zip(ids, ids[1:]))  # string order == creation order
    ints = [uuid.UUID(i).int for i in ids]
    assert all(a < b for a, b in zip(ints, ints[1:]))


def test_version_and_variant_bits() -> None:
    for value in (uuid7() for _ in range(1000)):
        u = uuid.UUID(value)
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert len(value) == 36 and value == value.lower()


def test_time_extraction_matches_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    # The counter may borrow a millisecond ahead when a ms overflows; allow that one ms.
    assert before <= uuid7_time_ms(value) <= after + 1


def test_time_extraction_of_a_known_value() -> None:
    ms = 1_700_000_000_123
    value = str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62)))
    assert uuid7_time_ms(value) == ms


def test_batches_continue_the_order_and_keep_the_bits() -> None:
    """uuid7s (a bulk's ids, made together) and uuid7 share one sequence: ids made in any mix of the
    two are strictly increasing, a batch longer than a millisecond's counter borrows the next one, and
    every id is a canonical UUIDv7 whose 62 random bits vary (all four variant digits occur)."""
    ids = [uuid7(), *uuid7s(3), uuid7(), *uuid7s(10_000), *uuid7s(1), *uuid7s(0), uuid7()]
    assert len(ids) == 10_007 and len(set(ids)) == len(ids)
    assert all(a < b for a, b in zip(ids, ids[1:]))
    for value in ids:
        u = uuid.UUID(value)
        assert (u.version, u.variant, str(u)) == (7, uuid.RFC_4122, value)
    assert {value[19] for value in ids} == set("89ab")
    assert len({value[24:] for value in ids}) == len(ids)
    ms = [uuid7_time_ms(v) for v in ids]
    assert ms[-1] - ms[0] >= 10_000 // 4096  # the 10,000-id batch borrowed milliseconds ahead
