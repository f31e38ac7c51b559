"""The change-feed batch path against real Redis and Azurite: events, dedupe, retries, dead letters, replay."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from shared.app.services import Services
from shared.changefeed.processor import ChangeFeedProcessor, RetryBatch
from shared.changefeed.rules import Kind
from shared.core.events import Event
from shared.core.results import EventResult
from shared.core.settings import Settings
from shared.destinations.redis_streams import stream_key
from shared.observability.tenant_metrics import BatchStats


@pytest.fixture
async def services(redis_port: int, storage_connection_string: str) -> AsyncIterator[Services]:
    settings = Settings.model_validate({
        "REDIS_PORT": redis_port,
        "STORAGE_CONNECTION_STRING": storage_connection_string,
        "DEADLETTER_TABLE": f"dl{uuid.uuid4().hex[:8]}",
        "STREAM_CONFIG_TABLE": f"cfg{uuid.uuid4().hex[:8]}",
    })
    svc = Services(settings)
    try:
        yield svc
    finally:
        await svc.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def risk(tenant: str, rid: str, lsn: int, **kw: Any) -> dict[str, Any]:
    d = {"id": rid, "tenantId": tenant, "createdAt": "2026-11-01T10:00:00Z", "updatedAt": "2026-11-01T10:00:00Z",
         "status": "open", "score": 9, "_lsn": lsn, "_ts": int(time.time()) - 2, "_etag": f"e{lsn}"}
    d.update(kw)
    return d


async def stream(services: Services, tenant: str) -> list[dict[str, Any]]:
    entries = await services.redis.xrange(stream_key(tenant))
    return [orjson.loads(fields[b"e"]) for _, fields in entries]


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["eventType"], e["entityId"]) for e in events]


class Flaky:
    """The real pipeline, except that the first `fail_calls` calls fail every event (transiently)."""

    def __init__(self, inner: Any, fail_calls: int) -> None:
        self.inner, self.fail_calls, self.calls = inner, fail_calls, 0

    async def publish_enriched(self, events: Sequence[Event], *, received_at: float | None = None,
                               stats: BatchStats | None = None, policy: Any = None) -> list[EventResult]:
        self.calls += 1
        if self.calls <= self.fail_calls:
            return [EventResult(index=i, status="failed", eventId=e.eventId, tenantId=e.tenantId,
                                reason="destination down") for i, e in enumerate(events)]
        return await self.inner.publish_enriched(events, received_at=received_at, stats=stats, policy=policy)


def with_publisher(proc: ChangeFeedProcessor, publisher: Any) -> ChangeFeedProcessor:
    return ChangeFeedProcessor(state=proc.state, dedupe=proc.dedupe, publisher=publisher,
                               deadletters=proc.deadletters, metrics=proc.metrics)


async def dead_letters(services: Services, tenant: str, **kw: Any) -> list[dict[str, Any]]:
    rows = (await services.deadletters.list(tenant, limit=1000, **kw)).items
    return rows


async def replay(services: Services, tenant: str, ids: list[str] | None = None,
                 **kw: Any) -> tuple[list[dict[str, Any]], Any]:
    from shared.delivery.replay import replay as run

    return await run(services, tenant, ids, **kw)


async def test_batch_becomes_events_in_order_per_entity(services: Services, tenant: str) -> None:
    proc = services.changefeed
    out = await proc.process(Kind.RISKS, "risks", [risk(tenant, "r1", 1), risk(tenant, "r2", 2)])
    assert (out.events, out.published, out.duplicates) == (2, 2, 0)
    later = risk(tenant, "r1", 3, status="mitigated", updatedAt="2026-11-02T10:00:00Z")
    await proc.process(Kind.RISKS, "risks", [later])
    assert kinds(await stream(services, tenant)) == [
        ("RISK_CREATED", "r1"), ("RISK_CREATED", "r2"), ("RISK_UPDATED", "r1"), ("RISK_STATUS_CHANGED", "r1")]


async def test_redelivered_batch_publishes_nothing_twice(services: Services, tenant: str) -> None:
    proc = services.changefeed
    batch = [risk(tenant, "r1", 1), risk(tenant, "r1", 2, status="closed", updatedAt="2026-11-03T00:00:00Z")]
    first = await proc.process(Kind.RISKS, "risks", batch)
    again = await proc.process(Kind.RISKS, "risks", batch)
    assert first.published == 3 and again.published == 0
    # Version 1 is now older than the stored version 2: stale, nothing; version 2's events: duplicates.
    assert (again.stale, again.duplicates) == (1, 2)
    evs = await stream(services, tenant)
    assert kinds(evs) == [("RISK_CREATED", "r1"), ("RISK_UPDATED", "r1"), ("RISK_STATUS_CHANGED", "r1")]
    assert len({e["eventId"] for e in evs}) == 3


async def test_redelivery_after_a_failed_publish_recomputes_the_same_status_change(
    services: Services, tenant: str
) -> None:
    base = services.changefeed
    await base.process(Kind.RISKS, "risks", [risk(tenant, "r1", 1)])
    flaky = with_publisher(base, Flaky(services.pipeline, fail_calls=1))
    change = [risk(tenant, "r1", 2, status="accepted", updatedAt="2026-11-04T00:00:00Z")]
    with pytest.raises(RetryBatch):
        await flaky.process(Kind.RISKS, "risks", change, final_attempt=False)
    assert kinds(await stream(services, tenant)) == [("RISK_CREATED", "r1")]
    # The entity state already holds version 2; the retry still sees "open" as the prior.
    out = await flaky.process(Kind.RISKS, "risks", change, final_attempt=False)
    assert out.published == 2
    evs = await stream(services, tenant)
    assert kinds(evs)[1:] == [("RISK_UPDATED", "r1"), ("RISK_STATUS_CHANGED", "r1")]
    assert evs[2]["data"]["previousStatus"] == "open"


async def test_last_retry_dead_letters_the_events_and_replay_publishes_them_once(
    services: Services, tenant: str
) -> None:
    base = services.changefeed
    down = with_publisher(base, Flaky(services.pipeline, fail_calls=99))
    batch = [risk(tenant, "r1", 1), risk(tenant, "r2", 2)]
    out = await down.process(Kind.RISKS, "risks", batch, final_attempt=True)
    assert out.deadlettered_events == 2 and out.published == 0
    assert await stream(services, tenant) == []
    dead = await dead_letters(services, tenant)
    assert {(d["kind"], d["container"], d["event"]["entityId"]) for d in dead} == {
        ("changefeed-event", "risks", "r1"), ("changefeed-event", "risks", "r2")}
    assert all("last retry" in d["reason"] for d in dead)
    # A redelivery of the same batch: the versions are settled, nothing is published behind the replay.
    again = await base.process(Kind.RISKS, "risks", batch)
    assert again.published == 0 and again.duplicates == 2
    results, _ = await replay(services, tenant)
    assert sorted(r["result"] for r in results) == ["published", "published"]
    assert kinds(await stream(services, tenant)) == [("RISK_CREATED", "r1"), ("RISK_CREATED", "r2")]
    assert await dead_letters(services, tenant) == []
    assert {d["replayResult"] for d in await dead_letters(services, tenant, include_replayed=True)} == {"published"}
    # Replaying again (e.g. two operators) publishes nothing more.
    again, _ = await replay(services, tenant, [d["id"] for d in dead])
    assert {r["result"] for r in again} == {"already replayed"}
    assert (await base.process(Kind.RISKS, "risks", batch)).published == 0
    assert len(await stream(services, tenant)) == 2


async def test_a_dead_lettered_batch_replays_each_entitys_events_in_order(services: Services, tenant: str) -> None:
    base = services.changefeed
    down = with_publisher(base, Flaky(services.pipeline, fail_calls=99))
    await base.process(Kind.RISKS, "risks", [risk(tenant, "r1", 1)])
    change = risk(tenant, "r1", 2, status="mitigated", updatedAt="2026-11-05T00:00:00Z")
    await down.process(Kind.RISKS, "risks", [change], final_attempt=True)
    await replay(services, tenant)
    assert kinds(await stream(services, tenant))[1:] == [("RISK_UPDATED", "r1"), ("RISK_STATUS_CHANGED", "r1")]


async def test_unmappable_documents_are_dead_lettered_with_reason_not_dropped(
    services: Services, tenant: str
) -> None:
    proc = services.changefeed
    no_tenant = {"id": "x1" + tenant, "_lsn": 5, "_ts": 1}
    bad_status = risk(tenant, "r9", 6, status=7)
    out = await proc.process(Kind.RISKS, "risks", [no_tenant, risk(tenant, "r1", 7), bad_status])
    assert out.deadlettered_documents == 2 and out.published == 1
    unmapped = [d for d in await dead_letters(services, "_unmapped")
                if isinstance(d["document"], dict) and d["document"].get("id") == no_tenant["id"]]
    assert len(unmapped) == 1 and "tenantId" in unmapped[0]["reason"] and unmapped[0]["container"] == "risks"
    [mine] = await dead_letters(services, tenant)
    assert mine["kind"] == "changefeed-document" and "status" in mine["reason"] and mine["document"] == bad_status
    # Still unmappable on replay: kept, with one more attempt counted.
    assert [r["result"] for r in (await replay(services, tenant))[0]] == ["failed"]
    [kept] = await dead_letters(services, tenant)
    assert kept["attempts"] == 2 and "status" in (kept["lastError"] or "")


async def test_a_dead_lettered_document_replays(services: Services, tenant: str) -> None:
    await services.deadletters.record_documents("risks", "risks", [(risk(tenant, "r5", 9), "entity state unavailable")])
    assert [r["result"] for r in (await replay(services, tenant))[0]] == ["processed"]
    assert kinds(await stream(services, tenant)) == [("RISK_CREATED", "r5")]
    assert await dead_letters(services, tenant) == []


async def test_a_replay_starts_records_within_its_budget_and_pages_past_those_it_took(
        services: Services, tenant: str) -> None:
    """A call starts no record once its time budget is spent: those are `not attempted`, untouched, and
    the call gives no position past them; a call that took its whole page gives the position after it
    (records failed again there hide none of the rest)."""
    docs = [(risk(tenant, f"r{i}", i), "entity state unavailable") for i in range(5)]
    await services.deadletters.record_documents("risks", "risks", docs)
    results, nxt = await replay(services, tenant, None, budget_seconds=0.0)
    assert [r["result"] for r in results] == ["not attempted"] * 5 and nxt is None
    assert all("replay it again" in r["error"] for r in results)
    assert [(d["attempts"], d["replayed"]) for d in await dead_letters(services, tenant)] == [(1, False)] * 5
    first, nxt = await replay(services, tenant, None, limit=3)
    assert [r["result"] for r in first] == ["processed"] * 3 and nxt is not None
    rest, nxt = await replay(services, tenant, None, limit=3, after=nxt)
    assert [r["result"] for r in rest] == ["processed"] * 2 and nxt is None
    assert {r["id"] for r in first} | {r["id"] for r in rest} == {d["id"] for d in await dead_letters(
        services, tenant, include_replayed=True)}


async def test_an_event_in_flight_elsewhere_is_retried_not_duplicated(services: Services, tenant: str) -> None:
    """Another instance holds the event id's idempotency claim (it is publishing the same change)."""
    from shared.changefeed.rules import map_change
    from shared.delivery.idempotency import idem_key
    from shared.storage.claims import Claims

    proc = services.changefeed
    doc = risk(tenant, "r1", 1)
    [ev] = map_change(Kind.RISKS, "risks", doc, None, ingested_at="2026-01-01T00:00:00.000Z").events
    other = Claims(services.redis)
    assert [c.state for c in await other.take([idem_key(tenant, ev.eventId)], 300)] == ["new"]
    with pytest.raises(RetryBatch):
        await proc.process(Kind.RISKS, "risks", [doc], final_attempt=False)
    assert await stream(services, tenant) == []
    await other.settle([(idem_key(tenant, ev.eventId), None, 0)])  # the other instance gave up
    assert (await proc.process(Kind.RISKS, "risks", [doc], final_attempt=False)).published == 1


async def test_the_last_attempt_waits_out_the_claims_of_an_instance_that_died(
    services: Services, tenant: str
) -> None:
    """An instance died mid-publish: its claims stay pending for their TTL. Earlier attempts give the
    batch back to the host (RetryBatch); the last one waits for the claims to expire and publishes the
    event once, where giving up would have dead-lettered it."""
    from shared.changefeed.rules import map_change
    from shared.delivery.idempotency import idem_key
    from shared.storage.claims import Claims

    proc = services.changefeed
    assert proc.last_attempt_dedupe.busy_wait_seconds == services.settings.idempotency_pending_seconds + 5
    doc = risk(tenant, "r1", 1)
    [ev] = map_change(Kind.RISKS, "risks", doc, None, ingested_at="2026-01-01T00:00:00.000Z").events
    dead = Claims(services.redis)
    assert [c.state for c in await dead.take([idem_key(tenant, ev.eventId)], 6)] == ["new"]  # never settled
    with pytest.raises(RetryBatch):
        await proc.process(Kind.RISKS, "risks", [doc], final_attempt=False)
    t0 = time.monotonic()
    out = await proc.process(Kind.RISKS, "risks", [doc], final_attempt=True)
    assert (out.published, out.deadlettered_events) == (1, 0)
    assert 1.0 < time.monotonic() - t0 < 15
    assert kinds(await stream(services, tenant)) == [("RISK_CREATED", "r1")]
    assert await dead_letters(services, tenant) == []


async def test_claims_that_cannot_be_checked_fail_closed(services: Services, tenant: str) -> None:
    """Redis unreachable for the idempotency claims: the batch is retried, not published unchecked."""
    from shared.delivery.idempotency import Claim

    class Unreachable:
        async def claim(self, events: Sequence[Event]) -> list[Claim]:
            return [Claim("unchecked") for _ in events]

        async def settle(self, *a: Any, **k: Any) -> None:
            raise AssertionError("nothing was claimed")

    real = services.pipeline.idempotency
    services.pipeline.idempotency = Unreachable()  # type: ignore[assignment]
    try:
        with pytest.raises(RetryBatch):
            await services.changefeed.process(Kind.RISKS, "risks", [risk(tenant, "r1", 1)], final_attempt=False)
    finally:
        services.pipeline.idempotency = real
    assert await stream(services, tenant) == []
    assert (await services.changefeed.process(Kind.RISKS, "risks", [risk(tenant, "r1", 1)])).published == 1


async def test_stale_version_yields_nothing(services: Services, tenant: str) -> None:
    proc = services.changefeed
    await proc.process(Kind.RISKS, "risks", [risk(tenant, "r1", 5)])
    out = await proc.process(Kind.RISKS, "risks", [risk(tenant, "r1", 3, status="closed")])
    assert out.stale == 1 and out.events == 0


async def test_change_feed_delay_goes_to_tenant_metrics(services: Services, tenant: str) -> None:
    proc = services.changefeed
    await proc.process(Kind.RISKS, "risks", [risk(tenant, "r1", 1, _ts=int(time.time()) - 40)])
    snap = await services.metrics.snapshot(tenant)
    delay = snap["windows"]["1m"]["changeFeedDelayMs"]
    assert delay["mean"] is not None and delay["mean"] >= 39_000
    assert snap["totals"]["accepted"] == 1


async def test_duplicates_are_counted_in_metrics(services: Services, tenant: str) -> None:
    proc = services.changefeed
    batch = [risk(tenant, "r1", 1)]
    await proc.process(Kind.RISKS, "risks", batch)
    await proc.process(Kind.RISKS, "risks", batch)
    assert (await services.metrics.snapshot(tenant))["totals"]["duplicates"] == 1


async def test_state_store_down_on_last_retry_dead_letters_documents(services: Services, tenant: str) -> None:
    base = services.changefeed

    class Down:
        async def swap(self, *a: Any, **k: Any) -> Any:
            raise ConnectionError("redis down")

    proc = ChangeFeedProcessor(state=Down(), dedupe=base.dedupe, publisher=services.pipeline,  # type: ignore[arg-type]
                               deadletters=base.deadletters, metrics=None)
    with pytest.raises(RetryBatch):
        await proc.process(Kind.RISKS, "risks", [risk(tenant, "r1", 1)], final_attempt=False)
    out = await proc.process(Kind.RISKS, "risks", [risk(tenant, "r1", 1)], final_attempt=True)
    assert out.deadlettered_documents == 1
    [dead] = await dead_letters(services, tenant)
    assert "entity state unavailable" in dead["reason"]
    assert [r["result"] for r in (await replay(services, tenant))[0]] == ["processed"]  # the real state store
    assert kinds(await stream(services, tenant)) == [("RISK_CREATED", "r1")]


async def test_a_large_document_is_dead_lettered_whole(services: Services, tenant: str) -> None:
    import os

    big = risk(tenant, "r1", 1, blob=os.urandom(150_000).hex())  # 300 kB, incompressible-ish
    await services.deadletters.record_documents("risks", "risks", [(big, "test")])
    [dead] = await dead_letters(services, tenant)
    assert dead["document"] == big


async def test_a_retried_batch_dead_letters_its_unmappable_documents_once(services: Services, tenant: str) -> None:
    base = services.changefeed
    flaky = with_publisher(base, Flaky(services.pipeline, fail_calls=1))
    batch = [risk(tenant, "r1", 1), risk(tenant, "bad", 2, status=["x"])]
    with pytest.raises(RetryBatch):
        await flaky.process(Kind.RISKS, "risks", batch, final_attempt=False)
    assert await dead_letters(services, tenant) == []  # not settled yet: nothing dead-lettered
    out = await flaky.process(Kind.RISKS, "risks", batch, final_attempt=False)
    assert (out.published, out.deadlettered_documents) == (1, 1)
    assert len(await dead_letters(services, tenant)) == 1
    totals = (await services.metrics.snapshot(tenant))["totals"]
    assert totals["rejected"] == 1 and totals["deadLettered"] == 1 and totals["accepted"] == 1


async def test_replay_from_the_beginning_after_markers_expired_publishes_nothing(
    services: Services, tenant: str
) -> None:
    proc = services.changefeed
    batch = [risk(tenant, "r1", 1), risk(tenant, "r2", 2)]
    await proc.process(Kind.RISKS, "risks", batch)
    async for key in services.redis.scan_iter(match=f"grc:{{{tenant}}}:idem:*"):
        await services.redis.delete(key)  # the dedupe window has passed
    out = await proc.process(Kind.RISKS, "risks", batch)
    assert (out.settled, out.published, out.duplicates) == (2, 0, 2)
    assert len(await stream(services, tenant)) == 2


async def test_dead_letters_down_on_the_last_retry_raises_and_names_each_change(
    services: Services, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    base = services.changefeed

    class TableDown:
        async def record_documents(self, *a: Any, **k: Any) -> Any:
            raise ConnectionError("table down")

        record_events = record_documents

    proc = ChangeFeedProcessor(state=base.state, dedupe=base.dedupe,
                               publisher=Flaky(services.pipeline, fail_calls=99),
                               deadletters=TableDown(), metrics=None)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError), caplog.at_level("ERROR", logger="grc.changefeed"):
        await proc.process(Kind.RISKS, "risks", [risk(tenant, "r1", 41, secret="do-not-log")], final_attempt=True)
    lost = [r.getMessage() for r in caplog.records if "LOST" in r.getMessage()]
    assert len(lost) == 1 and f"{tenant}/r1@lsn:41" in lost[0] and "do-not-log" not in lost[0]
