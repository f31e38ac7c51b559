"""The monitor timer on synthetic metrics in the real Redis: SYSTEM_PERFORMANCE, DATA_ANOMALY,
tenant-minute idempotency, and the registered timer function.

Synthetic batches are recorded at fixed times in 2001 (each test its own minutes and tenants), so
the passes look only at them, never at tenants other tests made active just now.
"""
from __future__ import annotations

import random
import time
import uuid
from typing import Any, AsyncIterator

import orjson
import pytest
from azure.functions.timer import TimerRequest

from shared.app.services import Services, get_services, reset_services
from shared.core.events import Event
from shared.core.settings import get_settings
from shared.observability import monitor
from shared.observability.tenant_metrics import BatchStats
from shared.storage.redisconn import tenant_key
from tests.functions_client import context, registrations

BASE = 978_307_200  # 2001-01-01T00:00:00Z


def _tenant(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _minute() -> int:
    """A fresh synthetic minute per test (tenant-minute locks are per tenant anyway)."""
    return BASE // 60 + random.randrange(0, 500_000) * 100


@pytest.fixture
async def services(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Services]:
    monkeypatch.setenv("SYSTEM_PERFORMANCE_EVENTS", "true")  # the suite's default is off (conftest)
    get_settings.cache_clear()
    yield get_services()
    await reset_services()
    monkeypatch.undo()
    get_settings.cache_clear()


async def record(services: Services, tenant: str, minute: int, *, accepted: int, failed: int = 0,
                 latency_ms: float = 40.0, system: bool = False, event_type: str = "RISK_UPDATED") -> None:
    stats = BatchStats(system=system)
    ts = stats.tenant(tenant)
    if accepted:
        ts.count("acc", accepted)
        ts.count(f"t:{event_type}", accepted)
        ts.count("s:ARCHER_GRC" if not system else "s:EVENT_STREAMING", accepted)
        ts.count("d:redis:ok", accepted)
        ts.observe_latency(latency_ms, accepted)
    if failed:
        ts.count("fail", failed)
        ts.count("d:redis:fail", failed)
    ts.observe_delay(1500.0)
    await services.metrics.record(stats, now=minute * 60 + 30)


async def stream_events(services: Services, tenant: str) -> list[dict[str, Any]]:
    return [r["event"] for r in reversed((await services.redis_streams.read_recent(tenant, 1000))[0])]


async def test_performance_snapshot_per_active_tenant_without_system_events(services: Services) -> None:
    busy, quiet = _tenant("perf"), _tenant("sysonly")
    m = _minute()
    await record(services, busy, m, accepted=30, failed=2)
    await record(services, busy, m, accepted=1, system=True, event_type="SYSTEM_PERFORMANCE")
    await record(services, quiet, m, accepted=1, system=True, event_type="DATA_ANOMALY")  # never active

    report = await monitor.run_minute(services, now=(m + 1) * 60 + 1)

    assert report.minute == m
    assert [t.tenant for t in report.tenants] == [busy]
    tm = report.tenants[0]
    assert (tm.counts.accepted, tm.counts.failed, tm.counts.processed) == (30, 2, 32)
    [perf] = [e for e in report.events if e.eventType.value == "SYSTEM_PERFORMANCE"]
    assert perf.tenantId == busy and perf.source.value == "EVENT_STREAMING"
    d = perf.data
    assert d["events"] == 32 and d["errorRate"] == 0.0625 and d["eventsPerSecond"] == 0.5
    assert d["latencyMs"]["p50"] is not None and 40 <= d["latencyMs"]["p50"] <= 44
    assert d["changeFeedDelayMs"]["mean"] == 1500.0
    assert d["intervalSeconds"] == 60 and d["intervalStart"].endswith("Z")
    stored = await stream_events(services, busy)
    assert [e["eventType"] for e in stored] == ["SYSTEM_PERFORMANCE"]
    assert await stream_events(services, quiet) == []
    perf_all = orjson.loads(await services.redis.get("grc:service:perf"))
    assert perf_all["tenants"] == 1 and perf_all["changeFeedDelayMsMax"] is not None
    assert report.system is not None and report.system.memory_percent is not None
    assert report.system.destinations_healthy.get("redis") is True


async def test_second_pass_of_the_same_minute_emits_nothing(services: Services) -> None:
    tenant = _tenant("idem")
    m = _minute()
    await record(services, tenant, m, accepted=5)
    first = await monitor.run_minute(services, now=(m + 1) * 60 + 1)
    again = await monitor.run_minute(services, now=(m + 1) * 60 + 30)  # e.g. another instance, past due
    assert [t.tenant for t in first.tenants] == [tenant] and len(first.events) == 1
    assert again.tenants == [] and again.events == [] and again.skipped == [tenant]
    assert len(await stream_events(services, tenant)) == 1
    # the system batch did not mark the tenant active: a minute later it is still "active" only
    # because of its own events (within the lookback), and has zero events of its own then
    later = await monitor.run_minute(services, now=(m + 2) * 60 + 1)
    assert [t.counts.activity for t in later.tenants] == [0] and later.events == []


async def test_event_rate_jump_raises_one_data_anomaly_through_the_registered_timer(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = _tenant("anom")
    m0 = _minute()
    rng = random.Random(7)
    timer = registrations()["monitor"]["fn"]

    async def tick(minute: int) -> list[dict[str, Any]]:
        """The registered timer function, firing just after `minute` ended; the tenant's new system events."""
        before = len(await stream_events(services, tenant))
        monkeypatch.setattr(monitor, "clock", lambda: (minute + 1) * 60 + 1)
        assert await timer(TimerRequest(past_due=False), context("monitor")) is None
        return (await stream_events(services, tenant))[before:]

    for i in range(20):  # baseline: ~100 events a minute
        await record(services, tenant, m0 + i, accepted=100 + rng.randint(-8, 8))
        assert [e["eventType"] for e in await tick(m0 + i)] == ["SYSTEM_PERFORMANCE"], i
    await record(services, tenant, m0 + 20, accepted=400)
    new = await tick(m0 + 20)
    assert sorted(e["eventType"] for e in new) == ["DATA_ANOMALY", "SYSTEM_PERFORMANCE"]
    [anomaly] = [Event.model_validate(e) for e in new if e["eventType"] == "DATA_ANOMALY"]
    assert anomaly.tenantId == tenant and anomaly.action.value == "DETECT"
    assert anomaly.metadata == {"system": True, "operation": "monitor"}  # the timer's invocation
    assert len(anomaly.correlationId) == 32  # its operation (trace) id
    assert anomaly.data["signal"] == "event_rate" and anomaly.data["direction"] == "up"
    assert anomaly.data["value"] == 400 and 90 < anomaly.data["baseline"] < 110 and anomaly.data["z"] > 4
    state = orjson.loads(await services.redis.get(tenant_key(tenant, "anomaly")))
    assert state["lastMinute"] == m0 + 20 and state["baselines"]["event_rate"]["count"] == 21
    stored = [e["eventType"] for e in await stream_events(services, tenant)]
    assert stored.count("DATA_ANOMALY") == 1 and stored.count("SYSTEM_PERFORMANCE") == 21


async def test_error_rate_spike_raises_data_anomaly_and_system_events_do_not_count(services: Services) -> None:
    tenant = _tenant("errs")
    m0 = _minute()
    for i in range(16):
        await record(services, tenant, m0 + i, accepted=100, failed=1)
        # the service's own events that minute: many, all failed -- must not move any baseline
        await record(services, tenant, m0 + i, accepted=0, failed=50, system=True)
        report = await monitor.run_minute(services, now=(m0 + i + 1) * 60 + 1)
        assert not [e for e in report.events if e.eventType.value == "DATA_ANOMALY"], i
    await record(services, tenant, m0 + 16, accepted=80, failed=20)
    report = await monitor.run_minute(services, now=(m0 + 17) * 60 + 1)
    anomalies = [e for e in report.events if e.eventType.value == "DATA_ANOMALY"]
    assert [a.data["signal"] for a in anomalies] == ["error_rate"]
    assert anomalies[0].data["failed"] == 20 and anomalies[0].data["events"] == 100


async def test_registered_timer_function_runs_a_pass(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # real time here: keep the pass from emitting into tenants other tests used just now
    monkeypatch.setenv("SYSTEM_PERFORMANCE_EVENTS", "false")
    get_settings.cache_clear()
    try:
        services = get_services()
        tenant = _tenant("timer")
        m = int(time.time() // 60) - 1
        await record(services, tenant, m, accepted=3)
        fn = registrations()["monitor"]
        assert fn["type"] == "timerTrigger" and fn["schedule"] == "0 * * * * *"
        assert await fn["fn"](TimerRequest(past_due=False), context("monitor")) is None
        state = orjson.loads(await services.redis.get(tenant_key(tenant, "anomaly")))
        assert state["lastMinute"] in (m, m + 1)  # m + 1 if the minute turned meanwhile
        assert state["baselines"]["event_rate"]["count"] == 1
        assert await stream_events(services, tenant) == []  # SYSTEM_PERFORMANCE_EVENTS=false
    finally:
        await reset_services()
        monkeypatch.undo()
        get_settings.cache_clear()


async def test_a_pass_over_many_tenants_reads_tables_once_and_works_in_chunks(
        app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """300 active tenants (10 with a stored config) among 1,300 seen, in chunks of 100: one Table
    query for all their configs, which also stands for the Tables health check."""
    from azure.data.tables.aio import TableServiceClient

    import shared.app.services as services_module
    from shared.core.streamconfig import StreamConfigIn
    from shared.storage.clients import CLIENT_OPTIONS
    from tests.doubles import RequestLog

    log = RequestLog()
    monkeypatch.setattr(services_module, "table_service", lambda s, credential=None: TableServiceClient.from_connection_string(
        s.storage_connection_string, raw_request_hook=log, **CLIENT_OPTIONS))
    monkeypatch.setenv("SYSTEM_PERFORMANCE_EVENTS", "true")
    monkeypatch.setattr(monitor, "CHUNK_TENANTS", 100)
    get_settings.cache_clear()
    services = get_services()
    try:
        m = _minute()
        run = uuid.uuid4().hex[:8]
        active = [f"mon-{run}-{i:04d}" for i in range(300)]
        for start in range(0, 1300, 500):  # 1,000 more tenants seen two hours earlier: not active
            stats = BatchStats()
            for i in range(start, min(start + 500, 1300)):
                stats.tenant(f"old-{run}-{i:04d}").count("acc", 1)
            await services.metrics.record(stats, now=(m - 120) * 60)
        stats = BatchStats()
        for t in active:
            ts = stats.tenant(t)
            ts.count("acc", 4)
            ts.count("t:RISK_UPDATED", 4)
            ts.observe_latency(20.0, 4)
        await services.metrics.record(stats, now=m * 60 + 30)
        for t in active[::30]:
            await services.configs.write(t, StreamConfigIn.model_validate({"retentionDays": 3}))
        await services.configs.table()
        log.requests.clear()

        report = await monitor.run_minute(services, now=(m + 1) * 60 + 1)

        assert sorted(t.tenant for t in report.tenants) == active and report.deferred == []
        assert len(report.events) == 300
        assert log.reads(get_settings().stream_config_table) == 1  # configs and the Tables health: one query
        assert sum(1 for method, _ in log.requests if method == "GET") == 1  # nothing else read from Tables
        assert [e["eventType"] for e in await stream_events(services, active[0])] == ["SYSTEM_PERFORMANCE"]
        assert [e["eventType"] for e in await stream_events(services, active[30])] == ["SYSTEM_PERFORMANCE"]
    finally:
        await reset_services()
        monkeypatch.undo()
        get_settings.cache_clear()


async def test_tenants_left_when_the_budget_is_spent_are_taken_by_a_later_run(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor, "CHUNK_TENANTS", 2)
    monkeypatch.setattr(monitor, "BUDGET_SECONDS", 0.0)
    m = _minute()
    tenants = sorted(_tenant("budget") for _ in range(5))
    for t in tenants:
        await record(services, t, m, accepted=3)
    first = await monitor.run_minute(services, now=(m + 1) * 60 + 1)
    assert [t.tenant for t in first.tenants] == tenants[:2] and first.deferred == tenants[2:]
    monkeypatch.setattr(monitor, "BUDGET_SECONDS", 40.0)
    second = await monitor.run_minute(services, now=(m + 1) * 60 + 20)  # the same minute, again
    assert [t.tenant for t in second.tenants] == tenants[2:] and second.skipped == tenants[:2]


async def test_the_pass_reports_the_retry_queues_depth_and_poison_count(
        app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """grc.retryqueue.messages / poison_messages (the workbook charts their history): the figures of the
    pass's own retry-queue health check, from the real queues."""
    from shared.storage.clients import queue_client

    name = "mon-retries-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("RETRY_QUEUE", name)
    get_settings.cache_clear()
    services = get_services()
    queues = [queue_client(services.queues, name), queue_client(services.queues, name + "-poison")]
    try:
        for q, n in zip(queues, (3, 2)):
            await q.create_queue()
            for i in range(n):
                await q.send_message(f"message {i}")
        report = await monitor.run_minute(services, now=(_minute() + 1) * 60 + 1)
        assert report.system is not None
        assert (report.system.retry_queue_messages, report.system.retry_queue_poison_messages) == (3, 2)
    finally:
        for q in queues:
            await q.delete_queue()
            await q.close()
        await reset_services()
        monkeypatch.undo()
        get_settings.cache_clear()
