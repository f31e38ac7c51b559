"""Segments of a large batch (shared/delivery/segments.py): whole chunks only, every event once,
and, through the pipeline, the same destination chunks as an unsegmented batch, in request order."""
from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from shared.core.enrich import enrich, now_iso
from shared.core.events import EventIn
from shared.core.streamconfig import StreamConfig
from shared.delivery import pipeline as pipeline_module
from shared.delivery.pipeline import SEGMENT_EVENTS, PublishContext
from shared.delivery.segments import Segments
from shared.delivery.pipeline import Pipeline
from tests.doubles import MemoryConfigs, MemoryDestination, MemoryDestinations, event_dict, stream_config

CTX = PublishContext(pointer_prefix=("events",))


def make(configs: MemoryConfigs, dest: MemoryDestination) -> Pipeline:
    return Pipeline(configs, MemoryDestinations(dest))


def events(tenants: list[str]) -> list:
    at = now_iso()
    return [enrich(EventIn.model_validate(event_dict(tenantId=t, entityId=f"{t}-{i}")), ingested_at=at)
            for i, t in enumerate(tenants)]


def configs(*tenants: str, batch: int = 100) -> dict[str, StreamConfig]:
    return {t: StreamConfig.default(t).model_copy(update={"batchSize": batch}) for t in tenants}


def segments(tenants: list[str], batch: int = 100) -> Segments:
    return Segments(Counter(tenants), configs(*set(tenants), batch=batch), 100)


def feed(seg: Segments, tenants: list[str], rejected: frozenset[int] = frozenset()) -> list[list[int]]:
    """Indexes of each segment handed out while feeding, then the rest."""
    out = []
    for i, ev in enumerate(events(tenants)):
        part = seg.skip(tenants[i]) if i in rejected else seg.add(i, ev)
        if part is not None:
            out.append([j for j, _ in part])
    out.append([j for j, _ in seg.rest()])
    return out


def test_one_tenant_segments_at_every_full_chunk() -> None:
    tenants = ["tenant-a"] * 250
    parts = feed(segments(tenants), tenants)
    assert parts == [list(range(100)), list(range(100, 200)), list(range(200, 250))]


def test_a_tenant_per_event_completes_a_chunk_with_every_event() -> None:
    tenants = [f"tenant-{i:03d}" for i in range(250)]
    parts = feed(segments(tenants), tenants)
    assert [len(p) for p in parts] == [100, 100, 50]
    assert sorted(i for p in parts for i in p) == list(range(250))


def test_tenants_spread_over_the_batch_complete_at_its_end() -> None:
    """Ten tenants, round robin, 30 events each (below batchSize): a tenant's chunk is complete at
    its last event only, so no chunk is split between segments."""
    tenants = [f"tenant-{i % 10}" for i in range(300)]
    parts = feed(segments(tenants), tenants)
    assert [len(p) for p in parts] == [120, 120, 60]  # tenants 0-3 complete at 290-293, 4-7 at 294-297
    for part in parts:
        per_tenant = Counter(tenants[i] for i in part)
        assert set(per_tenant.values()) == {30}


def test_a_rejected_last_item_completes_its_tenants_chunk() -> None:
    tenants = ["tenant-a"] * 3 + [f"tenant-{i:03d}" for i in range(99)]
    parts = feed(segments(tenants), tenants, rejected=frozenset({2}))
    assert parts == [[0, 1] + list(range(3, 101)), [101]]


def test_rest_is_in_batch_order_and_holds_uncounted_tenants() -> None:
    tenants = ["tenant-a", "tenant-b", "tenant-a"]
    seg = Segments({"tenant-a": 3}, configs("tenant-a", "tenant-b"), 100)  # tenant-b not counted
    assert [seg.add(i, ev) for i, ev in enumerate(events(tenants))] == [None] * 3
    assert [i for i, _ in seg.rest()] == [0, 1, 2]


@pytest.mark.parametrize("seed", range(6))
async def test_segmented_batches_make_the_same_chunks_in_request_order(seed: int) -> None:
    """Random tenants, batch sizes and invalid items: the destination gets the same chunks (as
    (tenant, events) in order per tenant) with segments as in one segment, each event once."""
    rnd = random.Random(seed)
    names = [f"tenant-{i:02d}" for i in range(rnd.choice([1, 3, 40, 300]))]
    cfgs = [stream_config(t, batchSize=rnd.choice([1, 7, 100])) for t in names]
    items = []
    for n in range(rnd.randint(SEGMENT_EVENTS + 1, 1000)):
        body = event_dict(tenantId=rnd.choice(names), entityId=f"e-{n}")
        if rnd.random() < 0.03:
            body["eventType"] = "NOT_A_TYPE"
        items.append(body)

    async def chunks(segment: int) -> tuple[list[tuple[str, tuple[str, ...]]], list[str]]:
        pipeline_module.SEGMENT_EVENTS = segment
        dest = MemoryDestination("redis")
        pipe = make(MemoryConfigs(*cfgs), dest)
        res = await pipe.publish_raw(items, CTX)
        made = [(c.stream.tenantId, tuple(e.entityId for e in c.events)) for call in dest.publishes for c in call]
        return made, [r.status for r in res]

    try:
        whole, whole_status = await chunks(10**9)
        split, split_status = await chunks(SEGMENT_EVENTS)
    finally:
        pipeline_module.SEGMENT_EVENTS = SEGMENT_EVENTS
    assert split_status == whole_status
    assert Counter(split) == Counter(whole)
    for t in names:  # a tenant's chunks reach the destination in request order
        assert [c for c in split if c[0] == t] == [c for c in whole if c[0] == t]


class SlowDestination(MemoryDestination):
    """Each call takes 30 loop turns; records how many events were enriched when it started and ended."""

    def __init__(self, enriched: list[int]) -> None:
        super().__init__("redis")
        self.enriched = enriched
        self.spans: list[tuple[int, int]] = []

    async def publish(self, chunks):  # type: ignore[no-untyped-def]
        start = len(self.enriched)
        for _ in range(30):
            await asyncio.sleep(0)
        self.spans.append((start, len(self.enriched)))
        return await super().publish(chunks)


async def test_the_next_segment_is_validated_while_one_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    enriched: list[int] = []
    real = pipeline_module.enrich

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        enriched.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(pipeline_module, "enrich", counting)
    dest = SlowDestination(enriched)
    pipe = make(MemoryConfigs(stream_config("tenant-a")), dest)
    res = await pipe.publish_raw([event_dict(tenantId="tenant-a") for _ in range(500)], CTX)
    assert {r.status for r in res} == {"accepted"}
    assert len(dest.spans) == 5
    assert dest.spans[0][1] > dest.spans[0][0]  # events were validated while the first call ran


async def test_a_small_batch_is_one_segment() -> None:
    dest = MemoryDestination("redis")
    pipe = make(MemoryConfigs(stream_config("tenant-a")), dest)
    await pipe.publish_raw([event_dict(tenantId="tenant-a") for _ in range(SEGMENT_EVENTS)], CTX)
    assert len(dest.publishes) == 1


async def test_from_the_first_client_id_on_the_rest_goes_in_one_segment() -> None:
    dest = MemoryDestination("redis")
    pipe = make(MemoryConfigs(stream_config("tenant-a", batchSize=50)), dest)
    items = [event_dict(tenantId="tenant-a", entityId=f"e-{i}") for i in range(300)]
    items[150]["eventId"] = "client-id-1"
    res = await pipe.publish_raw(items, CTX)
    assert {r.status for r in res} == {"accepted"}
    # chunks of 50: segments of two chunks at 100 and (none at 150: the client id), then the rest
    assert [len(call) for call in dest.publishes] == [2, 4]
    assert [e.entityId for e in dest.stored] == [f"e-{i}" for i in range(300)]
