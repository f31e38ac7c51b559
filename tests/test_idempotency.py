"""Idempotent publishing on the real Redis: repeats get the original result and are not delivered again."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from shared.app.services import Services
from shared.core.destination_options import RedisStreamOptions
from shared.core.enrich import enrich, now_iso
from shared.core.events import EventIn
from shared.core.streamconfig import StreamConfig
from shared.delivery.idempotency import IdempotencyStore, idem_key
from shared.delivery.pipeline import PublishContext
from shared.destinations.base import publish_one
from shared.destinations.redis_streams import stream_key
from shared.storage.claims import PENDING
from tests.delivery_helpers import down_redis, isolated_services
from tests.functions_client import invoke

pytestmark = pytest.mark.usefixtures("app_services")


def ev(tenant: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"tenantId": tenant, "eventType": "RISK_UPDATED", "source": "BACKEND_API",
                            "action": "UPDATE", "entityId": "r-7", "data": {"score": 9}}
    base.update(over)
    return base


def tenant() -> str:
    return "idem-" + uuid.uuid4().hex[:8]


async def stream_ids(svc: Services, t: str) -> list[str]:
    """The tenant's events in its stream, without the per-batch SYSTEM_ERROR notices of failures."""
    docs = [orjson.loads(f[b"e"]) for _, f in await svc.redis.xrange(stream_key(t))]
    return [d["eventId"] for d in docs if d["eventType"] != "SYSTEM_ERROR"]


async def test_repeat_gets_the_original_result_and_is_not_delivered_again(app_services: Services) -> None:
    t = tenant()
    [first] = await app_services.pipeline.publish_raw([ev(t, eventId="evt-1")], PublishContext())
    # The same event again, with its own timestamp and correlationId (a retry): a duplicate.
    [again] = await app_services.pipeline.publish_raw(
        [ev(t, eventId="evt-1", timestamp="2026-01-31T12:00:00Z", correlationId="retry-2")], PublishContext())
    assert first.status == "accepted" and again.status == "duplicate"
    assert again.eventId == "evt-1" and again.httpStatus == 200
    assert [d.ref for d in again.destinations] == [d.ref for d in first.destinations]
    assert await stream_ids(app_services, t) == ["evt-1"]
    snap = await app_services.metrics.snapshot(t)
    assert snap["totals"]["duplicates"] == 1 and snap["totals"]["accepted"] == 1
    # Another tenant may use the same id.
    other = tenant()
    [res] = await app_services.pipeline.publish_raw([ev(other, eventId="evt-1")], PublishContext())
    assert res.status == "accepted"


async def test_an_id_reused_for_a_different_event_is_refused_not_dropped_as_a_duplicate(
    app_services: Services,
) -> None:
    t = tenant()
    [first] = await app_services.pipeline.publish_raw([ev(t, eventId="evt-1")], PublishContext())
    assert first.status == "accepted"
    for change in ({"data": {"score": 10}}, {"eventType": "RISK_DELETED"}, {"metadata": {"k": "v"}},
                   {"entityId": "other"}):
        [res] = await app_services.pipeline.publish_raw([ev(t, eventId="evt-1", **change)], PublishContext())
        assert res.status == "rejected" and res.httpStatus == 422, (change, res)
        assert [(e.pointer, e.type) for e in res.errors] == [("/eventId", "id_reused")]
    # In a bulk: the event refused names its index; the same id twice for two events in one request
    # refuses the second; the unchanged repeat is still a duplicate.
    bulk = [ev(t, eventId="evt-1", data={"score": 10}), ev(t, eventId="evt-2"),
            ev(t, eventId="evt-2", data={"x": 1}), ev(t, eventId="evt-1")]
    out = await app_services.pipeline.publish_raw(bulk, PublishContext(pointer_prefix=("events",)))
    assert [r.status for r in out] == ["rejected", "accepted", "rejected", "duplicate"]
    assert [e.pointer for e in out[0].errors] == ["/events/0/eventId"]
    assert [e.pointer for e in out[2].errors] == ["/events/2/eventId"]
    assert await stream_ids(app_services, t) == ["evt-1", "evt-2"]  # nothing of the refused ones
    snap = await app_services.metrics.snapshot(t)
    assert snap["totals"]["rejected"] == 6 and snap["totals"]["duplicates"] == 1


async def test_idempotency_key_header_and_bulk_repeats() -> None:
    t = tenant()
    status, _, body = await invoke("publish_event", "POST", "/events", ev(t), headers={"idempotency-key": "ik-1"})
    assert status == 201 and body["status"] == "accepted"
    status, _, again = await invoke("publish_event", "POST", "/events", ev(t), headers={"idempotency-key": "ik-1"})
    assert status == 200 and again["status"] == "duplicate" and again["eventId"] == "ik-1"
    assert again["destinations"][0]["ref"] == body["destinations"][0]["ref"]

    events = [ev(t, eventId="b-1"), ev(t, eventId="b-2"), ev(t, eventId="b-1"), ev(t, eventId="ik-1"), ev(t)]
    status, _, bulk = await invoke("publish_events_bulk", "POST", "/events/bulk", {"events": events})
    assert status == 200
    assert [r["status"] for r in bulk["results"]] == ["accepted", "accepted", "duplicate", "duplicate", "accepted"]
    assert bulk["duplicate"] == 2 and bulk["accepted"] == 3


async def test_generated_ids_are_not_stored(app_services: Services) -> None:
    t = tenant()
    [res] = await app_services.pipeline.publish_raw([ev(t)], PublishContext())
    assert res.status == "accepted"
    assert await app_services.redis.exists(idem_key(t, str(res.eventId))) == 0


async def test_concurrent_identical_requests_deliver_once(app_services: Services) -> None:
    t = tenant()
    results = await asyncio.gather(*(app_services.pipeline.publish_raw([ev(t, eventId="same")], PublishContext())
                                     for _ in range(5)))
    statuses = sorted(r[0].status for r in results)
    assert statuses == ["accepted", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert await stream_ids(app_services, t) == ["same"]


async def test_in_flight_elsewhere_answers_409(app_services: Services) -> None:
    t = tenant()
    await app_services.redis.set(idem_key(t, "busy-1"), PENDING, ex=30)  # another instance is publishing it
    app_services.pipeline.idempotency = IdempotencyStore(app_services.redis, 60, wait_seconds=0.2)
    status, headers, body = await invoke("publish_event", "POST", "/events", ev(t, eventId="busy-1"))
    assert status == 409 and headers["Retry-After"] == "1" and body["eventId"] == "busy-1"
    assert await stream_ids(app_services, t) == []


async def test_failed_event_releases_its_id_so_a_retry_goes_through(app_env: dict[str, str]) -> None:
    async with isolated_services() as svc:
        t = tenant()
        svc.destinations._built["redis"] = down_redis()
        svc.pipeline.parker = None  # nothing can park it: the event fails
        [res] = await svc.pipeline.publish_raw([ev(t, eventId="retry-me")], PublishContext())
        assert res.status == "failed"
        assert await svc.redis.exists(idem_key(t, "retry-me")) == 0
        del svc.destinations._built["redis"]
        [res] = await svc.pipeline.publish_raw([ev(t, eventId="retry-me")], PublishContext())
        assert res.status == "accepted"
        assert await stream_ids(svc, t) == ["retry-me"]


async def test_window_setting_sets_the_ttl(app_services: Services) -> None:
    t = tenant()
    await app_services.pipeline.publish_raw([ev(t, eventId="ttl-1")], PublishContext())
    ttl = await app_services.redis.ttl(idem_key(t, "ttl-1"))
    assert app_services.settings.idempotency_window_seconds - 5 <= ttl <= app_services.settings.idempotency_window_seconds


async def test_redis_down_fails_open(app_env: dict[str, str]) -> None:
    """The idempotency store unreachable: events still flow (destinations dedupe on their own)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from localdev import services as localdev_services

    async with isolated_services() as svc:
        t = tenant()
        dead = Redis(port=localdev_services.free_port(), retry=Retry(NoBackoff(), 0))
        svc.pipeline.idempotency = IdempotencyStore(dead, 60)
        [res] = await svc.pipeline.publish_raw([ev(t, eventId="open-1")], PublishContext())
        assert res.status == "accepted"
        await dead.aclose()


async def test_redis_stream_write_is_idempotent_on_event_id(app_services: Services) -> None:
    """A retried write after an unknown outcome does not append a second entry."""
    t = tenant()
    event = enrich(EventIn.model_validate(ev(t, eventId="w-1")), ingested_at=now_iso())
    dest = app_services.redis_streams
    [a] = await publish_one(dest, [event], RedisStreamOptions(), StreamConfig(tenantId=t))
    [b] = await publish_one(dest, [event], RedisStreamOptions(), StreamConfig(tenantId=t))
    assert a.status == b.status == "delivered" and a.ref == b.ref
    assert await stream_ids(app_services, t) == ["w-1"]
    [c] = await publish_one(dest, [event], RedisStreamOptions(dedupeSeconds=0), StreamConfig(tenantId=t))
    assert c.ref != a.ref and len(await stream_ids(app_services, t)) == 2


async def test_retry_after_a_failure_skips_destinations_that_already_have_the_event(app_env: dict[str, str]) -> None:
    from shared.app.services import DESTINATION_FACTORIES
    from shared.core.streamconfig import StreamConfigIn

    async with isolated_services() as svc:
        t = tenant()
        await svc.configs.write(t, StreamConfigIn.model_validate({"destinations": [
            {"type": "redis", "config": {"dedupeSeconds": 0}},  # no destination-side dedupe: skipping shows
            {"type": "analytics"}]}))
        svc.pipeline.parker = None
        factory = DESTINATION_FACTORIES.pop("analytics")
        try:
            [first] = await svc.pipeline.publish_raw([ev(t, eventId="part-1")], PublishContext())
        finally:
            DESTINATION_FACTORIES["analytics"] = factory
        assert first.status == "failed"
        assert {d.destination: d.status for d in first.destinations} == {"redis": "delivered", "analytics": "failed"}
        raw = await svc.redis.get(idem_key(t, "part-1"))
        assert raw is not None and raw.startswith(b"partial:")
        # Another event under that id is refused, not resumed with its own content, and the record
        # is put back as it was (not left pending), for the first event's retry below.
        [refused] = await svc.pipeline.publish_raw([ev(t, eventId="part-1", data={"score": 99})],
                                                   PublishContext())
        assert refused.status == "rejected" and refused.httpStatus == 422, refused
        assert await svc.redis.get(idem_key(t, "part-1")) == raw
        [again] = await svc.pipeline.publish_raw([ev(t, eventId="part-1")], PublishContext())
        assert again.status == "accepted"
        by_dest = {d.destination: d for d in again.destinations}
        assert by_dest["redis"].ref == first.destinations[0].ref and by_dest["analytics"].status == "delivered"
        assert await stream_ids(svc, t) == ["part-1"]  # not appended a second time
        [third] = await svc.pipeline.publish_raw([ev(t, eventId="part-1")], PublishContext())
        assert third.status == "duplicate"


async def test_claims_of_a_thousand_tenants_are_one_round_trip(redis_port: int) -> None:
    from tests.doubles import RoundTrips

    trips = RoundTrips(redis_port)
    try:
        store = IdempotencyStore(trips.client, 60)
        ingested = now_iso()
        events = [enrich(EventIn.model_validate(ev(tenant(), eventId=f"e-{i}")), ingested_at=ingested)
                  for i in range(1000)]
        await store.claim(events[:1])  # the script is loaded once per server
        await trips.warm()
        claims = await store.claim(events[1:])
        assert [c.state for c in claims] == ["new"] * 999 and trips.count == 1
    finally:
        await trips.client.aclose()
