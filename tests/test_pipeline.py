"""The pipeline with in-memory protocol doubles, and once with the real Redis + Azurite wiring."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator

import orjson
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from shared.app.services import Services
from shared.core.results import Delivery, EventResult
from shared.core.settings import Settings
from shared.core.streamconfig import StreamConfig
from shared.delivery.pipeline import Pipeline, PublishContext
from shared.destinations.base import failed
from shared.destinations.redis_streams import stream_key
from shared.observability.tenant_metrics import BatchStats
from tests.doubles import (
    MemoryConfigs,
    MemoryDestination,
    MemoryDestinations,
    MemoryParker,
    SpyMetrics,
    event_dict,
    stream_config,
)

CTX = PublishContext(correlation_id="corr-1", pointer_prefix=("events",))


@dataclass
class DestCfg:
    """Duck-typed DestinationConfig: the union holds only `redis` so far, so configs with a second
    destination type are built with `model_construct` (the pipeline reads type/enabled/options)."""

    type: str
    enabled: bool = True
    options: Any = None


def multi_dest_config(*dests: DestCfg, tenant: str = "tenant-123", batch_size: int = 100) -> StreamConfig:
    return StreamConfig.model_construct(tenantId=tenant, enabled=True, filters=[], destinations=list(dests),
                                        batchSize=batch_size, retentionDays=30)


def make(configs: MemoryConfigs | None = None, *dests: MemoryDestination, parker: MemoryParker | None = None,
         metrics: SpyMetrics | None = None) -> tuple[Pipeline, SpyMetrics]:
    m = metrics or SpyMetrics()
    pipe = Pipeline(configs or MemoryConfigs(), MemoryDestinations(*(dests or (MemoryDestination(),))), m, parker)
    return pipe, m


async def test_mixed_bulk_results_in_request_order() -> None:
    dest = MemoryDestination()
    configs = MemoryConfigs(stream_config("tenant-b", filters=[{"eventTypes": ["CONTROL_FAILED"]}]))
    pipe, _ = make(configs, dest)
    items = [
        event_dict(),                                       # 0 accepted (default config)
        event_dict(tenantId="BAD"),                         # 1 rejected
        event_dict(tenantId="tenant-b"),                    # 2 filtered
        "not an object",                                    # 3 rejected
        event_dict(tenantId="tenant-b", eventType="CONTROL_FAILED"),  # 4 accepted
        event_dict(eventType="NOPE"),                       # 5 rejected
    ]
    res = await pipe.publish_raw(items, CTX)
    assert [r.index for r in res] == list(range(6))
    assert [r.status for r in res] == ["accepted", "rejected", "filtered", "rejected", "accepted", "rejected"]
    assert [r.httpStatus for r in res] == [201, 400, 200, 400, 201, 400]
    assert res[1].errors[0].pointer == "/events/1/tenantId" and res[1].tenantId is None
    assert res[3].errors[0].pointer == "/events/3"
    assert res[5].errors[0].field == "events[5].eventType" and res[5].tenantId == "tenant-123"
    assert res[2].reason == "no filter matched" and res[2].destinations == []
    assert res[0].destinations[0].status == "delivered" and res[0].destinations[0].destination == "redis"
    assert [e.eventId for e in dest.stored] == [res[0].eventId, res[4].eventId]
    assert {e.correlationId for e in dest.stored} == {"corr-1"}


async def test_each_tenant_config_fetched_once_per_batch() -> None:
    configs = MemoryConfigs()
    pipe, _ = make(configs)
    await pipe.publish_raw([event_dict(), event_dict(tenantId="tenant-b"), event_dict()], CTX)
    assert len(configs.calls) == 1 and sorted(configs.calls[0]) == ["tenant-123", "tenant-b"]


async def test_per_destination_outcomes_and_disabled_destination_skipped() -> None:
    a, b, c = MemoryDestination("redis"), MemoryDestination("kafka", fail_ids={"e2"}), MemoryDestination("vector")
    cfg = multi_dest_config(DestCfg("redis"), DestCfg("kafka"), DestCfg("vector", enabled=False))
    pipe, spy = make(MemoryConfigs(cfg), a, b, c)
    res = await pipe.publish_raw([event_dict(eventId="e1"), event_dict(eventId="e2")], CTX)
    assert [(d.destination, d.status) for d in res[0].destinations] == [("redis", "delivered"), ("kafka", "delivered")]
    assert [(d.destination, d.status) for d in res[1].destinations] == [("redis", "delivered"), ("kafka", "failed")]
    assert [r.status for r in res] == ["accepted", "failed"]
    assert c.calls == []  # disabled destination never called
    counters = spy.batches[0].tenants["tenant-123"].counters
    assert counters["d:redis:ok"] == 2 and counters["d:kafka:ok"] == 1 and counters["d:kafka:fail"] == 1


async def test_only_disabled_destinations_means_accepted_without_deliveries() -> None:
    a = MemoryDestination("redis")
    pipe, _ = make(MemoryConfigs(stream_config(destinations=[{"type": "redis", "enabled": False}])), a)
    res = await pipe.publish_raw([event_dict()], CTX)
    assert res[0].status == "accepted" and res[0].destinations == [] and a.calls == []


async def test_destination_options_are_passed() -> None:
    dest = MemoryDestination()
    cfg = stream_config(destinations=[{"type": "redis", "config": {"format": "cloudevents", "maxLen": 500}}])
    pipe, _ = make(MemoryConfigs(cfg), dest)
    await pipe.publish_raw([event_dict()], CTX)
    assert dest.options_seen[0].format == "cloudevents" and dest.options_seen[0].maxLen == 500  # type: ignore[attr-defined]


@pytest.mark.parametrize("batch_size,n,expected", [(3, 10, [3, 3, 3, 1]), (100, 10, [10]), (1, 3, [1, 1, 1]), (5, 5, [5])])
async def test_chunking_by_batch_size(batch_size: int, n: int, expected: list[int]) -> None:
    dest = MemoryDestination()
    pipe, _ = make(MemoryConfigs(stream_config(batchSize=batch_size)), dest)
    res = await pipe.publish_raw([event_dict(entityId=f"e{i}") for i in range(n)], CTX)
    assert [len(c) for c in dest.calls] == expected
    assert [e.entityId for e in dest.stored] == [f"e{i}" for i in range(n)]  # order kept across chunks
    assert all(r.status == "accepted" for r in res)


async def test_failed_delivery_without_parker_is_failed() -> None:
    dest = MemoryDestination(fail_ids={"bad-1"})
    pipe, spy = make(MemoryConfigs(), dest)
    res = await pipe.publish_raw([event_dict(eventId="ok-1"), event_dict(eventId="bad-1")], CTX)
    assert [r.status for r in res] == ["accepted", "failed"]
    assert res[1].httpStatus == 503 and res[1].destinations[0].status == "failed"
    assert res[1].destinations[0].transient is True and "could not be parked" in (res[1].reason or "")
    c = spy.batches[0].tenants["tenant-123"].counters
    assert c["acc"] == 1 and c["fail"] == 1 and c["d:redis:fail"] == 1 and c["d:redis:ok"] == 1


async def test_failed_delivery_with_parker_is_parked_and_accepted() -> None:
    dest = MemoryDestination(fail_ids={"bad-1"})
    parker = MemoryParker()
    pipe, spy = make(MemoryConfigs(), dest, parker=parker)
    res = await pipe.publish_raw([event_dict(eventId="ok-1"), event_dict(eventId="bad-1")], CTX)
    assert [r.status for r in res] == ["accepted", "accepted"]
    assert res[1].destinations[0].status == "parked"
    assert [(f.event.eventId, f.destination) for f in parker.parked] == [("bad-1", "redis")]
    assert parker.parked[0].stream.tenantId == "tenant-123"
    assert spy.batches[0].tenants["tenant-123"].counters["d:redis:park"] == 1


class OneMessageDestination(MemoryDestination):
    """As the vector destination does: the events of one queue message share one Delivery object."""

    async def publish(self, chunks: Any) -> list[list[Delivery]]:
        shared = failed(self.type, "enqueue failed: ServiceRequestError", transient=True)
        return [[shared] * len(ch.events) for ch in chunks]


async def test_parking_one_of_two_events_that_share_a_delivery_changes_that_event_only() -> None:
    parker = MemoryParker(answers=[True, False])
    pipe, spy = make(MemoryConfigs(), OneMessageDestination("redis"), parker=parker)
    res = await pipe.publish_raw([event_dict(eventId="a-1"), event_dict(eventId="b-1")], CTX)
    assert [r.destinations[0].status for r in res] == ["parked", "failed"]
    assert [r.status for r in res] == ["accepted", "failed"]  # b-1 was not parked: not acknowledged
    c = spy.batches[0].tenants["tenant-123"].counters
    assert c["d:redis:park"] == 1 and c["d:redis:fail"] == 1 and c["acc"] == 1 and c["fail"] == 1


def test_a_delivery_is_a_value() -> None:
    d = failed("redis", "down", transient=True)
    with pytest.raises(ValidationError):
        d.status = "parked"  # type: ignore[misc]
    assert d.model_copy(update={"status": "parked"}).status == "parked" and d.status == "failed"


async def test_parker_that_raises_leaves_the_event_failed() -> None:
    dest = MemoryDestination(fail_ids={"bad-1"})
    pipe, _ = make(MemoryConfigs(), dest, parker=MemoryParker(raise_exc=ConnectionError("queue down")))
    res = await pipe.publish_raw([event_dict(eventId="ok-1"), event_dict(eventId="bad-1")], CTX)
    assert [r.status for r in res] == ["accepted", "failed"]
    assert res[1].destinations[0].status == "failed"


async def test_destination_that_raises_fails_only_its_deliveries() -> None:
    ok, boom = MemoryDestination("redis"), MemoryDestination("kafka", raise_exc=RuntimeError("bug"))
    pipe, _ = make(MemoryConfigs(multi_dest_config(DestCfg("redis"), DestCfg("kafka"))), ok, boom)
    res = await pipe.publish_raw([event_dict(), event_dict()], CTX)
    assert [r.status for r in res] == ["failed", "failed"]
    for r in res:
        good, bad = r.destinations
        assert good.destination == "redis" and good.status == "delivered"
        assert bad.destination == "kafka" and bad.status == "failed" and bad.transient is True
        assert bad.error == "destination error: RuntimeError"
    assert len(ok.stored) == 2


async def test_destination_that_raises_is_parked_like_any_failure() -> None:
    parker = MemoryParker()
    boom = MemoryDestination("redis", raise_exc=OSError("socket"))
    pipe, _ = make(MemoryConfigs(), boom, parker=parker)
    res = await pipe.publish_raw([event_dict()], CTX)
    assert res[0].status == "accepted" and res[0].destinations[0].status == "parked" and len(parker.parked) == 1


async def test_chunking_per_destination() -> None:
    a, b = MemoryDestination("redis"), MemoryDestination("kafka")
    pipe, _ = make(MemoryConfigs(multi_dest_config(DestCfg("redis"), DestCfg("kafka"), batch_size=4)), a, b)
    await pipe.publish_raw([event_dict() for _ in range(9)], CTX)
    assert [len(c) for c in a.calls] == [4, 4, 1] and [len(c) for c in b.calls] == [4, 4, 1]


class OverlapDestination(MemoryDestination):
    """Counts publish calls in flight, yielding to the loop inside each call."""

    def __init__(self) -> None:
        super().__init__("redis")
        self.active = 0
        self.max_active = 0

    async def publish(self, chunks):  # type: ignore[no-untyped-def]
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.active -= 1
        return await super().publish(chunks)


async def test_all_tenants_of_a_batch_go_in_one_call_in_order() -> None:
    dest = OverlapDestination()
    pipe, _ = make(MemoryConfigs(stream_config("tenant-a", batchSize=2), stream_config("tenant-b", batchSize=2)), dest)
    items = [event_dict(tenantId=t, entityId=f"{t}-{i}") for i in range(6) for t in ("tenant-a", "tenant-b")]
    await pipe.publish_raw(items, CTX)
    assert len(dest.publishes) == 1 and dest.max_active == 1  # one call for both tenants' six chunks
    assert [len(c.events) for c in dest.publishes[0]] == [2] * 6
    for t in ("tenant-a", "tenant-b"):
        assert [e.entityId for e in dest.stored if e.tenantId == t] == [f"{t}-{i}" for i in range(6)]


async def test_a_thousand_tenants_make_one_call_per_destination() -> None:
    a, b = OverlapDestination(), MemoryDestination("kafka")
    cfgs = [multi_dest_config(DestCfg("redis"), DestCfg("kafka"), tenant=f"tenant-{i:04d}") for i in range(1000)]
    pipe, _ = make(MemoryConfigs(*cfgs), a, b)
    res = await pipe.publish_raw([event_dict(tenantId=f"tenant-{i:04d}") for i in range(1000)], CTX)
    assert {r.status for r in res} == {"accepted"}
    assert len(a.publishes) == 1 and len(b.publishes) == 1 and len(a.publishes[0]) == 1000


async def test_tenants_with_different_retry_policies_go_in_separate_calls() -> None:
    dest = OverlapDestination()
    slow = StreamConfig.model_validate({"tenantId": "tenant-s", "destinations": [
        {"type": "redis", "retry": {"timeoutSeconds": 30}}]})
    pipe, _ = make(MemoryConfigs(stream_config("tenant-a"), stream_config("tenant-b"), slow), dest)
    await pipe.publish_raw([event_dict(tenantId=t) for t in ("tenant-a", "tenant-s", "tenant-b")], CTX)
    assert sorted(len(p) for p in dest.publishes) == [1, 2] and dest.max_active == 1


async def test_unknown_destination_type_is_failed_not_transient() -> None:
    pipe = Pipeline(MemoryConfigs(), MemoryDestinations(), SpyMetrics())  # nothing registered
    res = await pipe.publish_raw([event_dict()], CTX)
    d = res[0].destinations[0]
    assert res[0].status == "failed" and d.status == "failed" and d.transient is False
    assert "not available" in (d.error or "")


async def test_config_source_raising_fails_with_reason() -> None:
    spy = SpyMetrics()
    dest = MemoryDestination()
    pipe = Pipeline(MemoryConfigs(raise_exc=TimeoutError()), MemoryDestinations(dest), spy)
    res = await pipe.publish_raw([event_dict(), event_dict(tenantId="X")], CTX)
    assert [r.status for r in res] == ["failed", "rejected"]
    assert res[0].reason == "stream configuration unavailable" and res[0].httpStatus == 503
    assert res[0].eventId and dest.calls == []
    assert spy.batches[0].tenants["tenant-123"].counters["fail"] == 1


async def test_disabled_stream_filters_everything() -> None:
    dest = MemoryDestination()
    pipe, spy = make(MemoryConfigs(stream_config(enabled=False)), dest)
    res = await pipe.publish_raw([event_dict(), event_dict()], CTX)
    assert {r.status for r in res} == {"filtered"} and res[0].reason == "stream disabled for tenant"
    assert dest.calls == [] and spy.batches[0].tenants["tenant-123"].counters["flt"] == 2


async def test_metrics_recorded_once_per_batch_with_counts() -> None:
    spy = SpyMetrics()
    cfg = stream_config("tenant-b", filters=[{"sources": ["FRONTEND_APP"]}])
    pipe = Pipeline(MemoryConfigs(cfg), MemoryDestinations(MemoryDestination()), spy)
    items = [event_dict(), event_dict(eventType="RISK_CREATED"), event_dict(tenantId="tenant-b"),
             event_dict(tenantId="tenant-b", source="FRONTEND_APP"), event_dict(tenantId="tenant-123", data=[1]),
             event_dict(tenantId="UPPER")]
    await pipe.publish_raw(items, CTX)
    assert len(spy.batches) == 1
    stats: BatchStats = spy.batches[0]
    a, b = stats.tenants["tenant-123"], stats.tenants["tenant-b"]
    assert a.counters["acc"] == 2 and a.counters["rej"] == 1 and a.counters["d:redis:ok"] == 2
    assert a.counters["t:RISK_UPDATED"] == 1 and a.counters["t:RISK_CREATED"] == 1 and a.counters["s:ARCHER_GRC"] == 2
    assert sum(a.latency.values()) == 2
    assert b.counters["flt"] == 1 and b.counters["acc"] == 1 and b.counters["s:FRONTEND_APP"] == 1
    assert set(stats.tenants) == {"tenant-123", "tenant-b"}  # the invalid tenant id is not counted anywhere
    await pipe.publish_raw([event_dict()], CTX)
    assert len(spy.batches) == 2


async def test_metrics_failure_never_fails_the_publish() -> None:
    class Broken(SpyMetrics):
        async def record(self, stats: BatchStats, now: float | None = None) -> None:
            raise ConnectionError("redis down")

    pipe = Pipeline(MemoryConfigs(), MemoryDestinations(MemoryDestination()), Broken())
    assert (await pipe.publish_raw([event_dict()], CTX))[0].status == "accepted"


async def test_hooks_get_stats_and_results_and_may_fail() -> None:
    seen: list[tuple[BatchStats, list[EventResult]]] = []

    def bad(stats: BatchStats, results: object) -> None:
        raise ValueError("hook bug")

    pipe = Pipeline(MemoryConfigs(), MemoryDestinations(MemoryDestination()), None,
                    hooks=[bad, lambda s, r: seen.append((s, list(r)))])
    res = await pipe.publish_raw([event_dict()], CTX)
    assert len(seen) == 1 and seen[0][1] == res


async def test_idempotency_key_used_for_single_event() -> None:
    dest = MemoryDestination()
    pipe, _ = make(MemoryConfigs(), dest)
    res = await pipe.publish_raw([event_dict()], PublishContext(idempotency_key="idem-42"))
    assert res[0].eventId == "idem-42" == dest.stored[0].eventId


async def test_publish_enriched_routes_prebuilt_events() -> None:
    from shared.core.enrich import enrich
    from shared.core.events import EventIn

    dest = MemoryDestination()
    pipe, spy = make(MemoryConfigs(), dest)
    evs = [enrich(EventIn.model_validate(event_dict()), ingested_at="2026-11-27T03:00:00.000Z") for _ in range(3)]
    res = await pipe.publish_enriched(evs)
    assert [r.eventId for r in res] == [e.eventId for e in evs] and len(spy.batches) == 1


# ---- the real wiring: Redis + Azurite ---------------------------------------------------------


@pytest.fixture
async def services(redis_port: int, storage_connection_string: str) -> AsyncIterator[Services]:
    s = Services(Settings(REDIS_PORT=redis_port, STORAGE_CONNECTION_STRING=storage_connection_string,
                          STREAM_CONFIG_TABLE="pipelinetest"))
    try:
        yield s
    finally:
        await s.close()


class TestRealServices:
    async def test_bulk_through_redis_and_table_config(self, services: Services, redis_port: int) -> None:
        from shared.core.streamconfig import StreamConfigIn

        tenant = "pipe-real-1"
        await services.configs.write(tenant, StreamConfigIn.model_validate(
            {"filters": [{"eventTypes": ["RISK_UPDATED"]}], "batchSize": 2,
             "destinations": [{"type": "redis", "config": {"format": "cloudevents"}}]}))
        items = [event_dict(tenantId=tenant, entityId=f"r{i}") for i in range(5)]
        items.insert(2, event_dict(tenantId=tenant, eventType="CONTROL_TESTED"))
        items.append(event_dict(tenantId=tenant, data="x"))
        res = await services.pipeline.publish_raw(items, CTX)
        assert [r.status for r in res] == ["accepted"] * 2 + ["filtered"] + ["accepted"] * 3 + ["rejected"]
        refs = [r.destinations[0].ref for r in res if r.status == "accepted"]
        assert all(ref and "-" in ref for ref in refs) and refs == sorted(refs, key=lambda x: tuple(map(int, x.split("-"))))

        raw = Redis(port=redis_port)
        try:
            entries = await raw.xrange(stream_key(tenant))
            assert [e[0].decode() for e in entries] == refs
            docs = [orjson.loads(f[b"e"]) for _, f in entries]
            assert [d["subject"] for d in docs] == [f"risk/r{i}" for i in range(5)]
            assert {d["specversion"] for d in docs} == {"1.0"}
            await services.metrics.flush()  # written behind (METRICS_FLUSH_MS): what another instance sees
            total = await raw.hgetall(f"grc:{{{tenant}}}:m:total")
            assert int(total[b"acc"]) == 5 and int(total[b"flt"]) == 1 and int(total[b"rej"]) == 1
            assert int(total[b"d:redis:ok"]) == 5
        finally:
            await raw.aclose()

    async def test_redis_down_gives_failed_transient(self, storage_connection_string: str) -> None:
        # A port nothing listens on: the destination reports failure; the retry queue parks it
        # (accepted); with no parker the event is `failed`.
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        svc = Services(Settings(REDIS_PORT=port, STORAGE_CONNECTION_STRING=storage_connection_string,
                                STREAM_CONFIG_TABLE="pipelinetest", STREAM_CONFIG_CACHE_SECONDS=0,
                                RETRY_QUEUE="pipeline-test-retries"))
        try:
            parked = await svc.pipeline.publish_raw([event_dict(tenantId="pipe-real-2")], CTX)
            svc.pipeline.parker = None
            res = await svc.pipeline.publish_raw([event_dict(tenantId="pipe-real-2")], CTX)
            await (await svc.retries.queue()).delete_queue()
        finally:
            await svc.close()
        assert parked[0].status == "accepted" and parked[0].destinations[0].status == "parked"
        assert res[0].status == "failed"
        d = res[0].destinations[0]
        assert d.status == "failed" and d.transient is True and "redis unavailable" in (d.error or "")
