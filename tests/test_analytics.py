"""Analytics destination against Azurite: keys, transactions, large payloads, history, retention."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.app.services import Services
from shared.core.destination_options import AnalyticsOptions
from shared.core.enrich import enrich, now_iso
from shared.core.events import EventIn
from shared.core.streamconfig import StreamConfig, StreamConfigIn
from shared.destinations import analytics
from shared.destinations.analytics import INDEX_PARTITION, AnalyticsDestination, _Op, transactions
from shared.destinations.base import Chunk, publish_one
from shared.storage import payload

pytestmark = pytest.mark.usefixtures("app_services")


def make_event(tenant: str, ts: datetime, **over: Any):  # type: ignore[no-untyped-def]
    raw: dict[str, Any] = {"tenantId": tenant, "eventType": "RISK_UPDATED", "source": "ARCHER_GRC",
                           "action": "UPDATE", "entityId": "r-1", "entityType": "risk",
                           "data": {"score": 3}, "timestamp": ts.isoformat(), "eventId": str(uuid.uuid4())}
    raw.update(over)
    return enrich(EventIn.model_validate(raw), ingested_at=now_iso())


def tenant() -> str:
    return "an-" + uuid.uuid4().hex[:10]


async def entities(dest: AnalyticsDestination, tenant_id: str) -> list[dict[str, Any]]:
    table = await dest.table()
    return [e async for e in table.query_entities(
        "PartitionKey ge @lo and PartitionKey lt @hi", parameters={"lo": tenant_id + "_", "hi": tenant_id + "`"})]


def test_transactions_split_at_100_ops_and_by_size() -> None:
    ops = [_Op(i, {}, 1000) for i in range(250)]
    assert [len(t) for t in transactions(ops)] == [100, 100, 50]
    big = [_Op(i, {}, 900_000) for i in range(9)]
    assert [len(t) for t in transactions(big)] == [3, 3, 3]  # 3.5 MB per transaction at most


async def test_250_events_in_one_partition_are_all_stored(app_services: Services) -> None:
    t = tenant()
    dest = app_services.analytics
    now = datetime.now(UTC)
    events = [make_event(t, now) for _ in range(250)]
    out = await publish_one(dest, events, AnalyticsOptions(shards=1), StreamConfig(tenantId=t))
    assert [d.status for d in out] == ["delivered"] * 250
    rows = await entities(dest, t)
    assert len(rows) == 250 and len({r["PartitionKey"] for r in rows}) == 1
    # Upsert: writing the same events again (a retry) keeps one entity per event.
    out = await publish_one(dest, events[:120], AnalyticsOptions(shards=1), StreamConfig(tenantId=t))
    assert all(d.status == "delivered" for d in out)
    assert len(await entities(dest, t)) == 250


async def test_keys_spread_over_shards_newest_first(app_services: Services) -> None:
    t = tenant()
    dest = app_services.analytics
    now = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=30)  # all 40 events in one past hour
    events = [make_event(t, now - timedelta(seconds=i)) for i in range(40)]
    await publish_one(dest, events, AnalyticsOptions(shards=4), StreamConfig(tenantId=t))
    rows = await entities(dest, t)
    pks = {r["PartitionKey"] for r in rows}
    assert pks == {f"{t}_{now:%Y%m%d%H}_{shard:02d}" for shard in range(4)}
    for pk in pks:  # inside a partition, RowKey order is newest first
        times = [r["EventTime"] for r in rows if r["PartitionKey"] == pk]
        assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("compress", [False, True])
async def test_payload_over_64_kib_is_kept_without_loss(app_services: Services, compress: bool) -> None:
    t = tenant()
    dest = app_services.analytics
    # ~240 KB of text with non-ASCII (UTF-16 surrogate pairs) and random-ish content.
    data = {f"k{i}": ("é𝄞" + uuid.uuid4().hex) * 2000 for i in range(3)}
    ev = make_event(t, datetime.now(UTC), data=data)
    assert len(ev.to_json()) > 64 * 1024
    out = await publish_one(dest, [ev], AnalyticsOptions(shards=2), StreamConfig(tenantId=t, compressionEnabled=compress))
    assert out[0].status == "delivered", out[0].error
    [row] = await entities(dest, t)
    if compress:
        assert "PayloadGz" in row or "PayloadGz_0" in row
    else:
        assert "Payload_0" in row and int(row["PayloadChunks"]) > 1
    assert payload.load(row) == ev.to_dict()


async def test_history_pages_newest_first_with_filters(app_services: Services) -> None:
    t = tenant()
    dest = app_services.analytics
    now = datetime.now(UTC).replace(microsecond=0)
    events = []
    for i in range(60):  # 60 events 4 minutes apart: 4 hours of data
        kind = {"eventType": "CONTROL_FAILED", "source": "MCP_SERVER", "action": "TEST"} if i % 3 == 0 else {}
        events.append(make_event(t, now - timedelta(minutes=4 * i), **kind))
    out = await publish_one(dest, events, AnalyticsOptions(shards=3), StreamConfig(tenantId=t))
    assert all(d.status == "delivered" for d in out)
    from_ms = int((now - timedelta(hours=6)).timestamp() * 1000)
    to_ms = int(now.timestamp() * 1000)

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await dest.history(t, from_ms=from_ms, to_ms=to_ms, limit=7, after=after)
        pages += 1
        assert len(page.events) <= 7
        seen += [e["eventId"] for e in page.events]
        after = page.next_position
        if after is None:
            break
        assert after["f"] == from_ms
    assert seen == [e.eventId for e in events]  # all of them, once each, newest first
    assert pages == 9

    page = await dest.history(t, from_ms=from_ms, to_ms=to_ms, limit=100, event_type="CONTROL_FAILED",
                              source="MCP_SERVER")
    assert [e["eventId"] for e in page.events] == [e.eventId for e in events[::3]] and page.next_position is None
    # A time range inside one hour, bounds inclusive.
    lo = int((now - timedelta(minutes=40)).timestamp() * 1000)
    hi = int((now - timedelta(minutes=8)).timestamp() * 1000)
    page = await dest.history(t, from_ms=lo, to_ms=hi, limit=100)
    assert [e["eventId"] for e in page.events] == [e.eventId for e in events[2:11]]


async def test_pipeline_honours_batch_size_and_routes_to_analytics(app_services: Services) -> None:
    t = tenant()
    await app_services.configs.write(t, StreamConfigIn.model_validate({
        "destinations": [{"type": "analytics", "config": {"shards": 2}}], "batchSize": 10}))
    dest = app_services.analytics
    chunks: list[int] = []
    real = dest.publish

    async def counting(call):  # type: ignore[no-untyped-def]
        chunks.extend(len(c.events) for c in call)
        return await real(call)

    dest.publish = counting  # type: ignore[method-assign]
    raws = [{"tenantId": t, "eventType": "RISK_CREATED", "source": "FRONTEND_APP", "action": "CREATE",
             "data": {"i": i}} for i in range(25)]
    from shared.delivery.pipeline import PublishContext

    results = await app_services.pipeline.publish_raw(raws, PublishContext())
    assert [r.status for r in results] == ["accepted"] * 25
    assert sorted(chunks) == [5, 10, 10]
    assert len(await entities(dest, t)) == 25


async def test_index_rows_record_tenant_hours(app_services: Services) -> None:
    t = tenant()
    dest = app_services.analytics
    now = datetime.now(UTC)
    await publish_one(dest, [make_event(t, now), make_event(t, now - timedelta(hours=2))], AnalyticsOptions(shards=5),
                       StreamConfig(tenantId=t))
    table = await dest.table()
    rows = [r["RowKey"] async for r in table.query_entities(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
        parameters={"pk": INDEX_PARTITION, "lo": t + "_", "hi": t + "`"})]
    assert rows == sorted([f"{t}_{now - timedelta(hours=2):%Y%m%d%H}_05", f"{t}_{now:%Y%m%d%H}_05"])


async def test_one_call_for_150_tenants_writes_their_index_rows_in_transactions(app_services: Services) -> None:
    dest = app_services.analytics
    now = datetime.now(UTC)
    tenants = [tenant() for _ in range(150)]
    chunks = [Chunk(StreamConfig(tenantId=t), AnalyticsOptions(shards=1), [make_event(t, now), make_event(t, now)])
              for t in tenants]
    table = await dest.table()
    requests: list[str] = []
    original = table.submit_transaction

    async def counting(ops, **kw):  # type: ignore[no-untyped-def]
        requests.append(ops[0][1]["PartitionKey"])
        return await original(ops, **kw)

    table.submit_transaction = counting  # type: ignore[method-assign]
    try:
        out = await dest.publish(chunks)
    finally:
        del table.submit_transaction
    assert [[d.status for d in ds] for ds in out] == [["delivered"] * 2] * 150
    assert requests.count(INDEX_PARTITION) == 2  # 150 new index rows: 100 + 50, not 150 requests
    rows = {r["RowKey"] async for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": INDEX_PARTITION},
                                                            select=["RowKey"])}
    assert {f"{t}_{now:%Y%m%d%H}_01" for t in tenants} <= rows
    assert len(await entities(dest, tenants[-1])) == 2



async def test_the_index_rows_an_instance_remembers_stay_bounded(
        app_services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """One remembered row per tenant-hour grew for the instance's life (months: tens of MB); past
    MAX_INDEXED the memory is forgotten and a tenant-hour's row is upserted once more."""
    monkeypatch.setattr(analytics, "MAX_INDEXED", 5)
    dest = app_services.analytics
    now = datetime.now(UTC)
    tenants = [tenant() for _ in range(12)]
    for t in tenants:
        await publish_one(dest, [make_event(t, now)], AnalyticsOptions(shards=1), StreamConfig(tenantId=t))
        assert len(dest._indexed) <= 5  # noqa: SLF001 - the in-process memory is what is bounded
    table = await dest.table()
    index = table.query_entities("PartitionKey eq @pk", parameters={"pk": INDEX_PARTITION}, select=["RowKey"])
    rows = {r["RowKey"] async for r in index}
    assert {f"{t}_{now:%Y%m%d%H}_01" for t in tenants} <= rows  # every hour still indexed


async def test_every_read_of_a_table_deleted_under_it_answers_as_on_an_empty_table(
        app_services: Services) -> None:
    """The table deleted (by hand, or a restart of the in-memory Azurite) after the instance made it:
    history, a backfill's range read, the purge and the health check find nothing and create the table
    again; the next write lands in the new table (system test: tests/system/test_tables_gone.py)."""
    name = "gone" + uuid.uuid4().hex[:12]
    dest = AnalyticsDestination(app_services.tables, name)
    t, now = tenant(), datetime.now(UTC)
    ms, hour = int(now.timestamp() * 1000), now.strftime("%Y%m%d%H")
    ev = make_event(t, now)

    async def write() -> list[str]:
        out = await publish_one(dest, [ev], AnalyticsOptions(shards=1), StreamConfig(tenantId=t))
        return [d.status for d in out]

    assert await write() == ["delivered"]
    await app_services.tables.delete_table(name)
    assert (await dest.history(t, from_ms=ms - 60_000, to_ms=ms + 60_000, limit=10)).events == []
    await app_services.tables.delete_table(name)
    assert await dest.read_range(t, hour, 1, ms - 60_000, ms + 60_000, 100) == []
    await app_services.tables.delete_table(name)
    # The table found gone is created again, empty: nothing to purge, and no tenant left unchecked.
    assert await dest.purge_expired({t: 1}) == {"tenants": 0, "hours": 0, "entities": 0, "left": 0,
                                                "unchecked": 0}
    await app_services.tables.delete_table(name)
    assert (await dest.health()).status == "healthy"
    assert await write() == ["delivered"]
    assert await dest.hours(t, ms, ms) == {hour: 1} and len(await entities(dest, t)) == 1


async def test_the_purge_deletes_many_hours_at_once_and_partitions_of_many_pages(
        app_services: Services) -> None:
    """Twelve expired tenant-hours (more than CONCURRENCY run at once), one of them 2,500 events in one
    partition (three pages of keys, deleted while the listing goes on), and a recent hour kept."""
    name = "purge" + uuid.uuid4().hex[:12]
    dest = AnalyticsDestination(app_services.tables, name)
    now = datetime.now(UTC)
    old, tenants = now - timedelta(days=3), [tenant() for _ in range(12)]
    for i, t in enumerate(tenants):
        events = [make_event(t, old) for _ in range(2_500 if i == 0 else 3)]
        events.append(make_event(t, now))  # within retention
        out = await publish_one(dest, events, AnalyticsOptions(shards=1 if i == 0 else 2),
                                StreamConfig(tenantId=t))
        assert {d.status for d in out} == {"delivered"}

    retention = {t: 1 for t in tenants}
    stats = await dest.purge_expired(retention)
    assert stats == {"tenants": 12, "hours": 12, "entities": 2_500 + 11 * 3, "left": 0, "unchecked": 0}, stats
    for t in tenants:
        assert len(await entities(dest, t)) == 1  # the recent event only
    table = await dest.table()
    index = {e["RowKey"] async for e in table.query_entities("PartitionKey eq @pk",
                                                               parameters={"pk": INDEX_PARTITION})}
    assert index == {f"{t}_{now:%Y%m%d%H}_{1 if i == 0 else 2:02d}" for i, t in enumerate(tenants)}
    assert await dest.purge_expired(retention) == {"tenants": 12, "hours": 0, "entities": 0, "left": 0,
                                                   "unchecked": 0}
    await app_services.tables.delete_table(name)


async def test_a_purge_out_of_time_leaves_the_rest_for_the_next_run(app_services: Services) -> None:
    name = "purge" + uuid.uuid4().hex[:12]
    dest = AnalyticsDestination(app_services.tables, name)
    t, old = tenant(), datetime.now(UTC) - timedelta(days=3)
    out = await publish_one(dest, [make_event(t, old) for _ in range(5)], AnalyticsOptions(shards=1),
                            StreamConfig(tenantId=t))
    assert {d.status for d in out} == {"delivered"}

    retention = {t: 1}
    assert await dest.purge_expired(retention, budget_seconds=-1) == {"tenants": 0, "hours": 0, "entities": 0,
                                                                      "left": 0, "unchecked": 1}
    assert len(await entities(dest, t)) == 5  # untouched, and its index row still lists it
    assert await dest.purge_expired(retention) == {"tenants": 1, "hours": 1, "entities": 5, "left": 0,
                                                   "unchecked": 0}
    assert await entities(dest, t) == []
    await app_services.tables.delete_table(name)


async def test_the_purge_reads_each_tenants_expired_hours_only_and_cuts_at_the_hour_that_ended(
        app_services: Services) -> None:
    """retentionDays 1 at 10:30: the hour 09:00-10:00 of the day before ended by the cutoff and goes, the
    hour 10:00-11:00 holds an event younger than the cutoff and stays. Tenants whose ids start alike
    ("xyz", "xyz-b", "xyzb") keep their own data: a tenant's index range never reaches another's. A
    tenant not given (no stored config) is not touched, and a configured one with no data costs a query."""
    name = "purge" + uuid.uuid4().hex[:12]
    dest = AnalyticsDestination(app_services.tables, name)
    now = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)
    base = f"p{uuid.uuid4().hex[:6]}"
    ours, longer, prefixed, unlisted = base, f"{base}-b", f"{base}b", f"{base}-c"
    for t in (ours, longer, prefixed, unlisted):
        events = [make_event(t, datetime(2026, 12, 4, 9, 59, tzinfo=UTC)),
                  make_event(t, datetime(2026, 12, 4, 10, 1, tzinfo=UTC))]
        out = await publish_one(dest, events, AnalyticsOptions(shards=2), StreamConfig(tenantId=t))
        assert {d.status for d in out} == {"delivered"}
    retention = {ours: 1, longer: 2, prefixed: 2, f"{base}-none": 1}
    stats = await dest.purge_expired(retention, now=now.timestamp())
    assert stats == {"tenants": 4, "hours": 1, "entities": 1, "left": 0, "unchecked": 0}, stats
    assert [e["EventTime"] for e in await entities(dest, ours)] == ["2026-12-04T10:01:00.000Z"]
    for t in (longer, prefixed, unlisted):
        assert len(await entities(dest, t)) == 2, t
    assert await dest.hours(ours, 0, 2**41) == {"2026120410": 2}
    await app_services.tables.delete_table(name)
