"""Retries, the retry queue, dead letters and replay, on the real Redis and Azurite.

A failing destination is a Redis Streams destination pointed at a port where nothing listens
(real connection refusals); a failing retry queue is a queue client on such a port.
"""
from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from azure.storage.queue.aio import QueueServiceClient

from localdev import services as localdev_services
from shared.app.services import DESTINATION_FACTORIES, Services
from shared.core.destination_options import RetryPolicy
from shared.core.streamconfig import StreamConfigIn
from shared.delivery.pipeline import PublishContext
from shared.delivery.retry_queue import MAX_MESSAGE_BYTES, RetryMessage
from shared.destinations.base import publish_one
from shared.destinations.redis_streams import stream_key
from shared.observability.telemetry import runtime
from shared.observability.telemetry.aggregate import AggregatingTelemetry
from shared.storage.lazy import LazyQueue
from tests.delivery_helpers import down_redis, drain, isolated_services, receive_raw
from tests.functions_client import invoke

pytestmark = pytest.mark.usefixtures("app_env")

FAST = {"attempts": 2, "inProcessAttempts": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0, "jitter": 0,
        "timeoutSeconds": 2}


def ev(tenant: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"tenantId": tenant, "eventType": "CONTROL_FAILED", "source": "MCP_SERVER",
                            "action": "TEST", "entityId": "ctl-9", "data": {"result": "fail"}}
    base.update(over)
    return base


async def configure(svc: Services, tenant: str, redis_retry: dict[str, Any] | None = None,
                    analytics: bool = True) -> None:
    dests: list[dict[str, Any]] = [{"type": "redis", "retry": redis_retry or FAST}]
    if analytics:
        dests.append({"type": "analytics", "config": {"shards": 2}})
    await svc.configs.write(tenant, StreamConfigIn.model_validate({"destinations": dests}))


def test_retry_horizon_is_the_longest_a_delivery_stays_undecided() -> None:
    p = RetryPolicy(attempts=3, inProcessAttempts=2, backoffSeconds=2, maxBackoffSeconds=5, jitter=0.2,
                    timeoutSeconds=10)
    # 5 tries x 10 s + 1 in-process wait of <= 1 s + backoffs (2, 4, 5) x 1.2 + 3 queue polls x 60 s
    assert p.horizon_seconds() == pytest.approx(50 + 1 + 13.2 + 180)
    assert RetryPolicy().horizon_seconds() <= 3600  # the default Redis dedupe window covers the default policy


def test_backoff_grows_is_capped_and_jittered() -> None:
    p = RetryPolicy(backoffSeconds=2, maxBackoffSeconds=30, jitter=0.2)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]
    assert p.delay(1, rand=0.0) == pytest.approx(1.6) and p.delay(1, rand=0.999999) == pytest.approx(2.4, rel=1e-4)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=-1)


async def test_transient_failure_is_retried_in_process_then_parked_with_backoff(app_env: dict[str, str]) -> None:
    async with isolated_services() as svc:
        t = "rt-" + uuid.uuid4().hex[:8]
        await configure(svc, t, {**FAST, "inProcessAttempts": 3, "backoffSeconds": 5, "maxBackoffSeconds": 5})
        svc.destinations._built["redis"] = down_redis()
        [res] = await svc.pipeline.publish_raw([ev(t)], PublishContext())
        assert res.status == "accepted"  # parked counts as accepted: the event is safe
        by_dest = {d.destination: d for d in res.destinations}
        assert by_dest["redis"].status == "parked" and by_dest["analytics"].status == "delivered"
        snap = await svc.metrics.snapshot(t)
        assert snap["totals"]["retries"] == 2  # 3 in-process attempts = 2 retries
        assert snap["totals"]["destinations"]["redis"]["parked"] == 1
        assert await receive_raw(svc) == []  # invisible for the first backoff (5 s)
        props = await (await svc.retries.queue()).get_queue_properties()
        assert props.approximate_message_count == 1


async def test_drain_requeues_then_dead_letters_with_system_error_and_no_loop(
        app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # What telemetry gets (the configured backends export exactly these aggregates; test_telemetry.py)
    recorded = AggregatingTelemetry(max_series=1000, metrics_per_operation=False)
    monkeypatch.setattr(runtime, "_current", recorded)
    async with isolated_services() as svc:
        t = "rt-" + uuid.uuid4().hex[:8]
        await configure(svc, t)
        svc.destinations._built["redis"] = down_redis()
        big = ev(t, data={"blob": "x" * (MAX_MESSAGE_BYTES + 1000)})  # travels by claim check
        results = await svc.pipeline.publish_raw([ev(t), big], PublishContext())
        assert [r.status for r in results] == ["accepted", "accepted"]
        msgs = await receive_raw(svc)
        parsed = [RetryMessage.model_validate_json(m.content) for m in msgs]
        assert sorted(p.payloadRef is not None for p in parsed) == [False, True]
        assert all(p.attempt == 1 and p.destination == "redis" and p.lastError for p in parsed)
        for m in msgs:  # back to visible for the drain
            await (await svc.retries.queue()).update_message(m, pop_receipt=m.pop_receipt, visibility_timeout=0)

        counts = await drain(svc)
        # 2 events x (attempt 1 -> requeue, attempt 2 -> dead letter). The SYSTEM_ERRORs (one for the
        # batch's failure, one per dead letter) are system events: never parked, so no loop.
        assert counts == {"processed": 4, "errors": 0}
        status, _, body = await invoke("list_deadletters", "GET", f"/deadletters/{t}", route={"tenantId": t})
        assert status == 200 and body["count"] == 2
        originals = body["deadLetters"]
        assert all(d["eventType"] == "CONTROL_FAILED" for d in originals)
        for d in originals:
            assert d["destination"] == "redis" and d["reason"] == "retries exhausted" and d["attempts"] == 2
            assert "redis unavailable" in d["lastError"] and d["replayed"] is False
        assert {d["event"]["eventId"] for d in originals} == {r.eventId for r in results}
        assert any(len(d["event"]["data"].get("blob", "")) > MAX_MESSAGE_BYTES for d in originals)
        # A SYSTEM_ERROR per dead letter reached analytics (the healthy destination).
        page = await svc.analytics.history(t, from_ms=0, to_ms=2**41, limit=50, event_type="SYSTEM_ERROR")
        notices = [e for e in page.events if e["data"].get("deadLetterId")]
        assert sorted(e["data"]["sampleEventIds"][0] for e in notices) == sorted(r.eventId for r in results)
        assert all(e["data"]["destination"] == "redis" and e["data"]["attempts"] == 2 for e in notices)
        snap = await svc.metrics.snapshot(t)
        assert snap["totals"]["deadLettered"] == 2
        # ... and to telemetry, under the destination that gave up (the workbook's per-destination chart)
        series, _ = recorded.aggregator.drain()
        dead = {dims: figures[1] for (name, dims, _), figures in series.items() if name == "grc.deadletters.recorded"}
        assert dead == {(t, "redis"): 2.0}

        # Replay once Redis is back: delivered, marked, and no longer listed by default.
        del svc.destinations._built["redis"]
        ids = [d["id"] for d in originals]
        status, _, body = await invoke("replay_deadletters", "POST", f"/deadletters/{t}/replay", {"ids": ids},
                                       route={"tenantId": t})
        assert status == 200 and body["counts"] == {"delivered": 2}
        series, _ = recorded.aggregator.drain()  # replayed deliveries count as delivered in telemetry too
        assert series[("grc.deliveries.succeeded", (t, "redis"), None)][1] == 2.0
        entries = [orjson.loads(f[b"e"]) for _, f in await svc.redis.xrange(stream_key(t))]
        assert sorted(e["eventId"] for e in entries if e["eventType"] != "SYSTEM_ERROR") == sorted(
            r.eventId for r in results)
        status, _, body = await invoke("list_deadletters", "GET", f"/deadletters/{t}", route={"tenantId": t})
        assert body["count"] == 0
        status, _, body = await invoke("list_deadletters", "GET", f"/deadletters/{t}", route={"tenantId": t},
                                       params={"includeReplayed": "true", "limit": "1"})
        assert body["count"] == 1 and body["continuationToken"]
        status, _, body2 = await invoke("list_deadletters", "GET", f"/deadletters/{t}", route={"tenantId": t},
                                        params={"includeReplayed": "true", "continuationToken": body["continuationToken"]})
        assert body2["count"] == 1
        replayed = [d for d in body["deadLetters"] + body2["deadLetters"] if d["replayed"]]
        assert {d["replayResult"] for d in replayed} == {"delivered"} and len(replayed) == 2
        status, _, body = await invoke("replay_deadletters", "POST", f"/deadletters/{t}/replay", {"ids": ids},
                                       route={"tenantId": t})
        assert body["counts"] == {"already replayed": 2}
        # Both replays are in the tenant's audit trail: who, when, which ids, the result per record.
        status, _, trail = await invoke("get_audit", "GET", f"/audit/{t}", route={"tenantId": t})
        replays = [r for r in trail["items"] if r["action"] == "deadletters.replay"]
        assert [r["after"]["counts"] for r in replays] == [{"already replayed": 2}, {"delivered": 2}]  # newest first
        assert all(r["actor"] == "test-client" and r["at"] and r["before"] == {"ids": ids} for r in replays)
        assert sorted(x["id"] for x in replays[1]["after"]["results"]) == sorted(ids)


async def test_replay_of_all_requeues_when_the_destination_still_fails(app_env: dict[str, str]) -> None:
    async with isolated_services() as svc:
        t = "rt-" + uuid.uuid4().hex[:8]
        await configure(svc, t, {**FAST, "attempts": 1}, analytics=False)
        svc.destinations._built["redis"] = down_redis()
        await svc.pipeline.publish_raw([ev(t)], PublishContext())
        for m in await receive_raw(svc):
            await (await svc.retries.queue()).update_message(m, pop_receipt=m.pop_receipt, visibility_timeout=0)
        await drain(svc)
        status, _, body = await invoke("replay_deadletters", "POST", f"/deadletters/{t}/replay", {},
                                       route={"tenantId": t})
        assert status == 200 and body["counts"] == {"requeued": 1}  # system notices are never parked
        [msg] = [RetryMessage.model_validate_json(m.content) for m in await receive_raw(svc)]
        assert msg.event is not None and msg.event["eventType"] == "CONTROL_FAILED"
        assert msg.attempt == 1 and msg.replayOf


async def test_non_transient_failure_is_dead_lettered_without_retries(app_env: dict[str, str]) -> None:
    async with isolated_services() as svc:
        t = "rt-" + uuid.uuid4().hex[:8]
        await configure(svc, t)
        factory = DESTINATION_FACTORIES.pop("analytics")  # a deployment without the analytics destination
        try:
            [res] = await svc.pipeline.publish_raw([ev(t)], PublishContext())
            assert res.status == "accepted"
            assert {d.destination: d.status for d in res.destinations} == {"redis": "delivered", "analytics": "parked"}
            [m] = await receive_raw(svc)
            assert RetryMessage.model_validate_json(m.content).transient is False
            await (await svc.retries.queue()).update_message(m, pop_receipt=m.pop_receipt, visibility_timeout=0)
            await drain(svc)
        finally:
            DESTINATION_FACTORIES["analytics"] = factory
        rows = (await svc.deadletters.list(t, limit=10)).items
        [orig] = [r for r in rows if r["eventType"] == "CONTROL_FAILED"]
        assert orig["reason"] == "non-transient error" and orig["attempts"] == 1
        assert "not available" in orig["lastError"]
        docs = [orjson.loads(f[b"e"]) for _, f in await svc.redis.xrange(stream_key(t))]
        assert docs[0]["eventType"] == "CONTROL_FAILED"  # then the SYSTEM_ERRORs reached Redis
        [notice] = [d for d in docs if d["eventType"] == "SYSTEM_ERROR" and d["data"].get("deadLetterId")]
        assert notice["data"]["destination"] == "analytics" and notice["data"]["attempts"] == 1


async def test_503_when_the_retry_queue_cannot_be_written(app_env: dict[str, str]) -> None:
    async with isolated_services() as svc:
        t = "rt-" + uuid.uuid4().hex[:8]
        await configure(svc, t, analytics=False)
        svc.destinations._built["redis"] = down_redis()
        dead = localdev_services.azurite_connection_string(*(localdev_services.free_port() for _ in range(3)))
        dead_queues = QueueServiceClient.from_connection_string(dead, retry_total=0)
        svc.retries._queue = LazyQueue(dead_queues, svc.settings.retry_queue)
        status, headers, body = await invoke("publish_event", "POST", "/events", ev(t, eventId="must-retry-1"))
        assert status == 503 and headers["Retry-After"]
        assert body["destinations"][0]["status"] == "failed"
        await dead_queues.close()
        # Nothing was acknowledged, so the idempotency marker is gone: the client's retry goes through.
        svc.retries._queue = LazyQueue(svc.queues, svc.settings.retry_queue)
        del svc.destinations._built["redis"]
        status, _, body = await invoke("publish_event", "POST", "/events", ev(t, eventId="must-retry-1"))
        assert status == 201 and body["status"] == "accepted"


async def test_timeout_per_attempt_is_a_transient_failure(app_env: dict[str, str]) -> None:
    """A destination that never answers (a listening socket that does not speak) times out."""
    import asyncio

    from redis.asyncio import Redis

    from shared.destinations.redis_streams import RedisStreamsDestination

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 20)
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with isolated_services() as svc:
        t = "rt-" + uuid.uuid4().hex[:8]
        await configure(svc, t, {**FAST, "timeoutSeconds": 0.3, "inProcessAttempts": 1}, analytics=False)
        svc.destinations._built["redis"] = RedisStreamsDestination(Redis(port=port, socket_timeout=10))
        [res] = await svc.pipeline.publish_raw([ev(t)], PublishContext())
        assert res.destinations[0].status == "parked"
        [m] = await receive_raw(svc)
        assert "no answer within 0.3 s" in (RetryMessage.model_validate_json(m.content).lastError or "")
    server.close()


async def test_a_write_that_landed_despite_a_failure_is_not_dead_lettered(app_env: dict[str, str]) -> None:
    """attempts 0: no queue retries; the drain still asks the destination whether the write landed."""
    from shared.core.enrich import enrich, now_iso
    from shared.core.events import EventIn

    async with isolated_services() as svc:
        t = "rt-" + uuid.uuid4().hex[:8]
        await configure(svc, t, {**FAST, "attempts": 0, "inProcessAttempts": 1}, analytics=False)
        svc.destinations._built["redis"] = down_redis()
        results = await svc.pipeline.publish_raw([ev(t, eventId="landed-1"), ev(t, eventId="lost-1")],
                                                 PublishContext())
        assert [r.destinations[0].status for r in results] == ["parked", "parked"]
        del svc.destinations._built["redis"]
        # The first write did land (as when a connection drops after the command ran).
        config = await svc.configs.get(t)
        first = enrich(EventIn.model_validate(ev(t, eventId="landed-1")), ingested_at=now_iso())
        await publish_one(svc.redis_streams, [first], config.destinations[0].options, config)
        for m in await receive_raw(svc):
            await (await svc.retries.queue()).update_message(m, pop_receipt=m.pop_receipt, visibility_timeout=0)
        # Redis is back for the drain; with attempts 0 it makes no new attempt, it only checks.
        await drain(svc)
        rows = (await svc.deadletters.list(t, limit=10)).items
        assert [r["eventId"] for r in rows if r["eventType"] == "CONTROL_FAILED"] == ["lost-1"]
        assert rows[0]["reason"] == "retries exhausted" and rows[0]["attempts"] == 0


def test_drain_function_is_a_queue_trigger_on_the_retry_queue() -> None:
    """The local runner drives it (devhost's queue driver) with the queue resolved from %RETRY_QUEUE%."""
    import os

    from devhost import runner
    from devhost.app_loader import load_functions

    specs = {s.name: s for s in load_functions("function_app")}
    drain_spec = specs["drain_retries"]
    assert drain_spec.trigger_type == "queueTrigger" and "queueTrigger" in runner.DRIVERS
    assert drain_spec.trigger["queueName"] == os.environ["RETRY_QUEUE"]
    assert drain_spec.trigger["connection"] == "STORAGE_CONNECTION_STRING"
    assert specs["purge_analytics"].trigger_type == "timerTrigger"
    # Both retention purges: hourly, apart, a failed run retried by the host's policy (not an hour later).
    purges = [specs["purge_analytics"], specs["purge_vectors"]]
    assert [p.trigger["schedule"] for p in purges] == ["0 17 * * * *", "0 47 * * * *"]
    assert purges[0].settings["retry"] == purges[1].settings["retry"] and purges[0].settings["retry"]


async def test_health_reports_the_retry_queue_depth_and_poison_messages(app_env: dict[str, str]) -> None:
    async with isolated_services(health_cache_seconds=0) as svc:  # each call checks afresh
        t = "rt-" + uuid.uuid4().hex[:8]
        await configure(svc, t, analytics=False)
        svc.destinations._built["redis"] = down_redis()
        await svc.pipeline.publish_raw([ev(t)], PublishContext())
        _, _, body = await invoke("health", "GET", "/health")
        rq = body["dependencies"]["retryQueue"]
        assert rq["status"] == "healthy" and rq["messages"] == 1 and rq["poisonMessages"] == 0
        poison = svc.queues.get_queue_client(svc.settings.retry_queue + "-poison")
        await poison.create_queue()
        await poison.send_message("{}")
        _, _, body = await invoke("health", "GET", "/health")
        assert body["dependencies"]["retryQueue"]["status"] == "degraded"  # others may be down here
        await poison.delete_queue()
        await poison.close()
