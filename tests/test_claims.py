"""storage/claims.py, the one dedupe primitive, against the real Redis."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.storage.claims import PENDING, Claims
from tests.doubles import RoundTrips


@pytest.fixture
async def trips(redis_port: int) -> AsyncIterator[RoundTrips]:
    counted = RoundTrips(redis_port)
    yield counted
    await counted.client.aclose()


def _keys(n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"grc:{{t-{run}-{i}}}:claim:x" for i in range(n)]  # a different tenant (hash slot) each


async def test_take_new_busy_held_and_release(trips: RoundTrips) -> None:
    claims = Claims(trips.client)
    a, b = _keys(2)
    assert [t.state for t in await claims.take([a, b], 60)] == ["new", "new"]
    assert await trips.client.get(a) == PENDING and 0 < await trips.client.ttl(a) <= 60
    assert [t.state for t in await claims.take([a], 60)] == ["busy"]  # another owner in flight
    await claims.settle([(a, b"done", 3600), (b, None, 0)])  # a settled, b released
    held, again = await claims.take([a, b], 60)
    assert held == ("held", b"done") and again.state == "new"
    assert 3500 < await trips.client.ttl(a) <= 3600


async def test_a_resumable_value_is_taken_over_with_what_it_held(trips: RoundTrips) -> None:
    claims = Claims(trips.client, resumable=b"partial:")
    [k] = _keys(1)
    await claims.take([k], 60)
    await claims.settle([(k, b"partial:[1,2]", 3600)])
    assert await claims.take([k], 60) == [("resume", b"[1,2]")]
    assert await trips.client.get(k) == b"pending:[1,2]"  # owned again, what it held kept
    assert [t.state for t in await claims.take([k], 60)] == ["busy"]
    # A kind without a resumable prefix treats every settled value as final.
    await Claims(trips.client).settle([(k, b"partial:[3]", 60)])
    assert (await Claims(trips.client).take([k], 60))[0].state == "held"


async def test_a_dead_owner_frees_the_claim_when_its_pending_ttl_ends(trips: RoundTrips) -> None:
    claims = Claims(trips.client)
    [k] = _keys(1)
    await claims.take([k], 1)
    deadline = asyncio.get_running_loop().time() + 10
    while (await claims.take([k], 1))[0].state == "busy":
        assert asyncio.get_running_loop().time() < deadline, "the pending claim never expired"
        await asyncio.sleep(0.2)


async def test_many_tenants_keys_in_one_round_trip_each_way(trips: RoundTrips) -> None:
    claims = Claims(trips.client)
    keys = _keys(300)
    await claims.take(keys[:1], 60)  # the script is loaded once per server
    await trips.warm()
    taken = await claims.take(keys, 60)
    assert trips.count == 1 and [t.state for t in taken] == ["busy"] + ["new"] * 299
    await trips.warm()
    await claims.settle((k, b"ok", 60) for k in keys)
    assert trips.count == 1
