"""System events through the pipeline, and the guards that keep them from feeding back into themselves."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.core.events import EventType, Source
from shared.core.results import EventResult
from shared.core.streamconfig import StreamConfig, StreamFilter
from shared.delivery.pipeline import Pipeline, PublishContext
from shared.observability.system_events import (
    DestinationFailureHook,
    destination_failures,
    emit_system_error,
    is_system_event,
)
from shared.observability.tenant_metrics import BatchStats
from tests.doubles import MemoryConfigs, MemoryDestination, MemoryDestinations, MemoryParker, SpyMetrics, event_dict


@dataclass
class DestCfg:
    """Duck-typed DestinationConfig (the union holds only `redis` on this branch)."""

    type: str
    enabled: bool = True
    options: Any = None


def two_dest_config(tenant: str, batch_size: int = 2, filters: list[Any] | None = None) -> StreamConfig:
    return StreamConfig.model_construct(tenantId=tenant, enabled=True, filters=filters or [],
                                        destinations=[DestCfg("redis"), DestCfg("kafka")],
                                        batchSize=batch_size, retentionDays=30)


def setup(*configs: StreamConfig, kafka_down: bool = True, parker: MemoryParker | None = None,
          background: bool = False) -> tuple[Pipeline, MemoryDestination, MemoryDestination, SpyMetrics]:
    redis = MemoryDestination("redis")
    kafka = MemoryDestination("kafka", raise_exc=ConnectionError("broker down") if kafka_down else None)
    metrics = SpyMetrics()
    pipe = Pipeline(MemoryConfigs(*configs), MemoryDestinations(redis, kafka), metrics, parker)
    pipe.hooks.append(DestinationFailureHook(pipe, background=background))
    return pipe, redis, kafka, metrics


def system_errors(dest: MemoryDestination) -> list[Any]:
    return [ev for ev in dest.stored if ev.eventType is EventType.SYSTEM_ERROR]


async def test_failing_destination_gives_one_system_error_per_tenant_destination_batch() -> None:
    pipe, redis, kafka, metrics = setup(two_dest_config("tenant-a"), two_dest_config("tenant-b"))
    items = [event_dict(tenantId="tenant-a") for _ in range(5)] + [event_dict(tenantId="tenant-b") for _ in range(3)]
    results = await pipe.publish_raw(items, PublishContext())
    assert {r.status for r in results} == {"failed"}  # kafka failed and nothing parks
    notices = system_errors(redis)
    assert sorted((n.tenantId, n.data["destination"], n.data["count"]) for n in notices) == [
        ("tenant-a", "kafka", 5), ("tenant-b", "kafka", 3)]
    a = next(n for n in notices if n.tenantId == "tenant-a")
    assert a.source is Source.EVENT_STREAMING and a.action.value == "NOTIFY"
    assert a.data["error"] == "destination error: ConnectionError"
    assert set(a.data["sampleEventIds"]) == {r.eventId for r in results[:5]}
    # the notices themselves failed at kafka (however often a retry policy tried them)...
    tried = {e.eventId for call in kafka.calls for e in call if is_system_event(e)}
    assert tried == {n.eventId for n in notices}
    # ...and raised nothing further: two SYSTEM_ERRORs in all, recorded as one system batch
    assert len(notices) == 2
    assert [b.system for b in metrics.batches] == [False, True]
    assert metrics.batches[1].tenants["tenant-a"].counters["fail"] == 1


async def test_parked_deliveries_are_reported_with_their_count() -> None:
    pipe, redis, _, _ = setup(two_dest_config("tenant-p"), parker=MemoryParker())
    results = await pipe.publish_raw([event_dict(tenantId="tenant-p") for _ in range(3)], PublishContext())
    assert {r.status for r in results} == {"accepted"}  # parked for retry = accepted
    [notice] = system_errors(redis)
    assert notice.data["count"] == 3 and notice.data["parked"] == 3 and notice.data["failed"] == 0


async def test_a_failing_system_error_yields_none() -> None:
    pipe, redis, kafka, metrics = setup(two_dest_config("tenant-s"))
    result = await emit_system_error(pipe, "tenant-s", "kafka", "retries exhausted", ["e-1", "e-2"],
                                     extra={"deadLetterId": "dl-1"})
    assert result is not None and result.status == "failed"  # kafka refused it
    [stored] = redis.stored
    assert {e.eventId for c in kafka.calls for e in c} == {stored.eventId}  # no notice about the notice
    assert stored.data["deadLetterId"] == "dl-1" and stored.data["count"] == 2
    assert [b.system for b in metrics.batches] == [True]


async def test_filtered_system_event_creates_nothing() -> None:
    only_risks = [StreamFilter(eventTypes=[EventType.RISK_UPDATED])]
    pipe, redis, kafka, _ = setup(two_dest_config("tenant-f", filters=only_risks))
    result = await emit_system_error(pipe, "tenant-f", "kafka", "down", ["e-1"])
    assert result is not None and result.status == "filtered"
    assert redis.calls == [] and kafka.calls == []


async def test_hook_ignores_system_batches_even_with_failures() -> None:
    pipe, redis, _, _ = setup(two_dest_config("tenant-g"))
    failed = EventResult.model_validate({"index": 0, "status": "failed", "eventId": "x", "tenantId": "tenant-g",
                                         "destinations": [{"destination": "kafka", "status": "failed",
                                                           "error": "boom"}]})
    hook = DestinationFailureHook(pipe)
    system = BatchStats(system=True, failed_deliveries=1)
    system.tenant("tenant-g").count("d:kafka:fail")
    await hook(system, [failed])
    assert redis.calls == []
    await hook(BatchStats(), [failed])  # the batch says no delivery failed: the results are not scanned
    assert redis.calls == []
    stats = BatchStats(failed_deliveries=1)
    stats.tenant("tenant-g").count("d:kafka:fail")
    await hook(stats, [failed])
    assert len(system_errors(redis)) == 1


async def test_background_hook_publishes_after_the_batch_returns() -> None:
    pipe, redis, _, _ = setup(two_dest_config("tenant-h"), background=True)
    await pipe.publish_raw([event_dict(tenantId="tenant-h")], PublishContext())
    hook = pipe.hooks[-1]
    assert isinstance(hook, DestinationFailureHook)
    await hook.drain()
    assert len(system_errors(redis)) == 1


def test_destination_failures_groups_and_samples() -> None:
    results = [EventResult.model_validate({
        "index": i, "status": "failed", "eventId": f"e-{i}", "tenantId": "t-1",
        "destinations": [{"destination": "kafka", "status": "parked" if i % 2 else "failed", "error": "x"},
                         {"destination": "redis", "status": "delivered"}]}) for i in range(25)]
    out = destination_failures(results)
    assert list(out) == [("t-1", "kafka")]
    f = out[("t-1", "kafka")]
    assert (f.count, f.parked, f.failed, len(f.event_ids)) == (25, 12, 13, 10)


def test_is_system_event() -> None:
    assert is_system_event({"eventType": "DATA_ANOMALY"})
    assert is_system_event({"eventType": "SYSTEM_PERFORMANCE"})
    assert not is_system_event({"eventType": "RISK_CREATED"})


async def test_system_events_are_never_parked_so_no_retry_loop_can_start() -> None:
    parker = MemoryParker()
    pipe, redis, kafka, _ = setup(two_dest_config("tenant-q"), parker=parker)
    await pipe.publish_raw([event_dict(tenantId="tenant-q")], PublishContext())
    assert [f.event.eventType for f in parker.parked] == [EventType.RISK_UPDATED]  # the client's event only
    [notice] = system_errors(redis)
    assert notice.data["parked"] == 1
    # the notice failed at kafka too: not parked, so no retry/dead-letter path can raise another one
    assert notice.eventId in {e.eventId for c in kafka.calls for e in c}
    assert all(f.event.eventId != notice.eventId for f in parker.parked)
    result = await emit_system_error(pipe, "tenant-q", "kafka", "dead-lettered", ["e-9"])
    assert result is not None and result.status == "failed" and len(parker.parked) == 1
