"""A tenant whose destination fails slowly has its deliveries to it paused (shared/delivery/breaker.py),
through the dispatcher's real attempt path: they then fail at once, unsent, one probe at a time goes
through after the pause, the retry queue's drain (unguarded) still calls it, and other tenants of the
same destination are not held up.

The dependency is a fake (it sleeps, then fails or delivers); the dispatcher, the retry policy and
the breaker are the production ones, with a shorter slow-failure threshold and a clock the test moves.
"""
from __future__ import annotations

import asyncio
import time
from typing import Sequence

import pytest

from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig
from shared.delivery import breaker
from shared.delivery.dispatch import Dispatcher
from shared.destinations.base import Chunk, DestinationPaused, delivered, failed
from shared.observability.tenant_metrics import BatchStats
from tests.doubles import MemoryDestination, MemoryDestinations
from tests.kafka_helpers import make_event

SLOW = 0.2


class FakeBroker(MemoryDestination):
    """Stands in for a Kafka broker that is down (each call fails every event after `delay`) or up;
    the tenants in `missing_topic` fail slowly even while it is up (a topic that does not exist)."""

    def __init__(self, delay: float) -> None:
        super().__init__("kafka")
        self.delay = delay
        self.up = False
        self.sent: list[str] = []  # tenants whose chunks were sent
        self.missing_topic: set[str] = set()

    @property
    def sends(self) -> int:
        return len(self.publishes)

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]:
        self.publishes.append(list(chunks))
        self.sent += [ch.stream.tenantId for ch in chunks]
        await asyncio.sleep(self.delay)
        return [[delivered(self.type, ev.eventId) if self.up and ch.stream.tenantId not in self.missing_topic
                 else failed(self.type, "KafkaError _MSG_TIMED_OUT", transient=True) for ev in ch.events]
                for ch in chunks]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(tenant: str) -> StreamConfig:
    return StreamConfig.model_validate({"tenantId": tenant, "destinations": [
        {"type": "kafka", "retry": {"timeoutSeconds": 5, "inProcessAttempts": 2, "backoffSeconds": 0.01}}]})


async def calls(dispatch: Dispatcher, tenants: Sequence[str], guarded: bool = True) -> list[list[Delivery]]:
    """One call with a chunk of two events per tenant (as a bulk naming those tenants)."""
    chunks = [(config(t), [make_event(tenant=t) for _ in range(2)]) for t in tenants]
    return await dispatch.deliver_chunks("kafka", chunks, BatchStats(), guarded=guarded)


async def call(dispatch: Dispatcher, guarded: bool = True) -> list[Delivery]:
    [out] = await calls(dispatch, ["tenant-a"], guarded)
    return out


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> tuple[Dispatcher, FakeBroker, Clock]:
    monkeypatch.setattr(breaker, "SLOW_FAILURE_SECONDS", SLOW)
    dep = FakeBroker(delay=SLOW + 0.05)
    dispatch = Dispatcher(MemoryDestinations(dep))
    clock = Clock()
    dispatch.breaker.clock = clock
    return dispatch, dep, clock


async def test_a_slow_failure_pauses_the_destination_and_its_next_calls_fail_at_once(
    setup: tuple[Dispatcher, FakeBroker, Clock],
) -> None:
    dispatch, dep, clock = setup
    first = await call(dispatch)
    # One call only: the in-process retry is not made once the destination is paused.
    assert dep.sends == 1 and all(d.status == "failed" and d.transient for d in first)
    start = time.monotonic()
    second = await call(dispatch)
    assert time.monotonic() - start < 0.05 and dep.sends == 1  # not sent
    assert all(d.status == "failed" and d.transient and d.error and "paused" in d.error for d in second)
    assert "_MSG_TIMED_OUT" in (second[0].error or "")


async def test_after_the_pause_one_probe_goes_through_and_a_delivery_resumes(
    setup: tuple[Dispatcher, FakeBroker, Clock],
) -> None:
    dispatch, dep, clock = setup
    await call(dispatch)
    clock.now += breaker.PAUSE_SECONDS
    dep.up = True
    probe, meanwhile = await asyncio.gather(call(dispatch), call(dispatch))
    # The probe was sent and delivered; the call made while it was in flight was not sent.
    assert [d.status for d in probe] == ["delivered", "delivered"] and dep.sends == 2
    assert all(d.status == "failed" and "paused" in (d.error or "") for d in meanwhile)
    after = await call(dispatch)
    assert [d.status for d in after] == ["delivered", "delivered"] and dep.sends == 3


async def test_a_probe_that_fails_pauses_again_for_twice_as_long(
    setup: tuple[Dispatcher, FakeBroker, Clock],
) -> None:
    dispatch, dep, clock = setup
    await call(dispatch)
    dep.delay = 0.0  # even a fast failure of a probe: the destination is not back
    clock.now += breaker.PAUSE_SECONDS  # the first pause ends
    length = breaker.PAUSE_SECONDS
    for _ in range(3):
        sent = dep.sends
        await call(dispatch)  # the probe, failing
        assert dep.sends == sent + 1
        length *= 2
        clock.now += length - 0.01
        await call(dispatch)
        assert dep.sends == sent + 1  # still paused: twice as long as the pause before
        clock.now += 0.01
    dep.up = True
    assert [d.status for d in await call(dispatch)] == ["delivered", "delivered"]


async def test_a_fast_failure_is_retried_in_process_and_does_not_pause(
    setup: tuple[Dispatcher, FakeBroker, Clock],
) -> None:
    dispatch, dep, clock = setup
    dep.delay = 0.0  # connection refused: nobody waits
    await call(dispatch)
    assert dep.sends == 2  # both in-process attempts
    await call(dispatch)
    assert dep.sends == 4


async def test_the_drain_calls_a_paused_destination_and_its_delivery_resumes_it(
    setup: tuple[Dispatcher, FakeBroker, Clock],
) -> None:
    dispatch, dep, clock = setup
    await call(dispatch)
    dep.up = True
    drained = await call(dispatch, guarded=False)
    assert [d.status for d in drained] == ["delivered", "delivered"] and dep.sends == 2
    await call(dispatch)
    assert dep.sends == 3  # resumed without waiting for the pause to end


async def test_a_cancelled_probe_does_not_leave_the_destination_paused(
    setup: tuple[Dispatcher, FakeBroker, Clock],
) -> None:
    dispatch, dep, clock = setup
    await call(dispatch)
    clock.now += breaker.PAUSE_SECONDS
    dep.delay = 10.0
    task = asyncio.create_task(call(dispatch))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    dep.delay, dep.up = 0.0, True
    assert [d.status for d in await call(dispatch)] == ["delivered", "delivered"]


async def test_a_tenant_that_fails_slowly_does_not_hold_up_the_others(
    setup: tuple[Dispatcher, FakeBroker, Clock],
) -> None:
    dispatch, dep, clock = setup
    dep.up, dep.missing_topic = True, {"tenant-bad"}
    first = await calls(dispatch, ["tenant-bad", "tenant-b"])  # one call, as a bulk naming both
    assert [d.status for d in first[1]] == ["delivered", "delivered"]
    assert all(d.status == "failed" for d in first[0])
    dep.sent.clear()
    bad, good = await calls(dispatch, ["tenant-bad", "tenant-b"])
    assert dep.sent == ["tenant-b"]  # the paused tenant's chunk was not sent, the other's was
    assert all("paused" in (d.error or "") for d in bad) and [d.status for d in good] == ["delivered"] * 2
    [alone] = await calls(dispatch, ["tenant-c"])
    assert [d.status for d in alone] == ["delivered"] * 2


class SaysPaused(FakeBroker):
    """A destination whose dependency is known not to answer for a while (as the Redis destination
    while the instance sends Redis nothing, storage/redis_unanswered.py): it raises DestinationPaused."""

    def __init__(self) -> None:
        super().__init__(delay=0.0)
        self.paused_for = 3.0

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]:
        self.publishes.append(list(chunks))
        if self.paused_for:
            raise DestinationPaused("the dependency left a call unanswered moments ago", self.paused_for)
        return [[delivered(self.type, ev.eventId) for ev in ch.events] for ch in chunks]


async def test_a_destination_that_says_it_sends_nothing_is_held_and_its_events_fail_at_once() -> None:
    """DestinationPaused: the call's events fail at once, unsent and transient (parked), without the
    in-process retry; the destination's next calls are not made until the time it named has passed,
    except the retry queue's drain (unguarded); then calls go through again."""
    clock = Clock()
    dep = SaysPaused()
    dispatch = Dispatcher(MemoryDestinations(dep))
    dispatch.breaker = breaker.Breaker(clock)
    t0 = time.monotonic()
    out = await calls(dispatch, ["tenant-a", "tenant-b"])
    assert time.monotonic() - t0 < 0.5  # no in-process retry's wait
    assert dep.sends == 1, dep.sends
    assert all(d.status == "failed" and d.transient and (d.error or "").startswith("not sent: ")
               for dels in out for d in dels), out
    clock.now += 2.0  # still held: not called, for any tenant
    out = await calls(dispatch, ["tenant-c"])
    assert dep.sends == 1 and out[0][0].error == "not sent: the dependency left a call unanswered moments ago"
    assert dispatch.breaker.paused("kafka", "tenant-z")
    await call(dispatch, guarded=False)  # the drain still calls (and is told 3 s again)
    assert dep.sends > 1
    dep.paused_for, sent = 0.0, dep.sends
    clock.now += 3.0  # the time it named has passed
    assert not dispatch.breaker.paused("kafka", "tenant-z")
    assert [d.status for d in await call(dispatch)] == ["delivered", "delivered"] and dep.sends == sent + 1
