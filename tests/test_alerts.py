"""Alert conditions (pure), instance memory against cgroup limits, and GET /metrics/{tenantId} with
its `alerts` and `service` sections against the real Redis."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.core.settings import Settings
from shared.observability import alerts, cosmos_usage
from shared.observability.resources import MemoryUsage, cgroup_limit, memory_usage
from shared.observability.tenant_metrics import BatchStats, hist_index, summarize
from tests.functions_client import invoke

SETTINGS = Settings()
KNOWN = {"redis", "kafka"}


def windows(**fields: float) -> dict[str, Any]:
    return {"5m": summarize(dict(fields), 300)}


def test_error_rate_is_the_delivery_failure_share_above_the_threshold() -> None:
    at = alerts.evaluate(windows(**{"d:redis:ok": 95, "d:redis:fail": 5}), None, {}, SETTINGS, KNOWN)
    c = at["conditions"]["errorRate"]
    assert c["value"] == 0.05 and c["threshold"] == 0.05 and c["deliveries"] == 100 and c["firing"] is False
    above = alerts.evaluate(windows(**{"d:redis:ok": 94, "d:redis:fail": 4, "d:redis:park": 2}), None, {},
                            SETTINGS, KNOWN)
    assert above["conditions"]["errorRate"]["value"] == 0.06 and above["firing"] == ["errorRate"]


def test_error_rate_needs_the_minimum_number_of_deliveries() -> None:
    few = alerts.evaluate(windows(**{"d:redis:ok": 15, "d:redis:fail": 4}), None, {}, SETTINGS, KNOWN)
    c = few["conditions"]["errorRate"]
    assert c["value"] > 0.2 and c["deliveries"] == 19 and c["minDeliveries"] == 20 and c["firing"] is False
    enough = alerts.evaluate(windows(**{"d:redis:ok": 16, "d:redis:fail": 4}), None, {}, SETTINGS, KNOWN)
    assert enough["conditions"]["errorRate"]["firing"] is True


def test_processing_delay_is_the_larger_maximum_of_change_feed_delay_and_latency() -> None:
    def hist(prefix: str, ms: float) -> dict[str, float]:
        return {f"{prefix}:{hist_index(ms)}": 1}

    c = alerts.evaluate(windows(**hist("dly", 31_000), **hist("lat", 2_000)), None, {}, SETTINGS,
                        KNOWN)["conditions"]["processingDelay"]
    assert c["firing"] and 31 <= c["value"] <= 34.1 and c["value"] == c["changeFeedDelayMaxSeconds"]
    assert 2 <= c["endToEndLatencyMaxSeconds"] <= 2.2 and c["threshold"] == 30.0
    slow = alerts.evaluate(windows(**hist("lat", 40_000)), None, {}, SETTINGS, KNOWN)
    assert slow["firing"] == ["processingDelay"]
    ok = alerts.evaluate(windows(**hist("dly", 25_000), **hist("lat", 2_000)), None, {}, SETTINGS, KNOWN)
    assert ok["conditions"]["processingDelay"]["firing"] is False
    none = alerts.evaluate(windows(), None, {}, SETTINGS, KNOWN)["conditions"]["processingDelay"]
    assert none["value"] is None and none["firing"] is False


def test_memory_condition_with_its_figures() -> None:
    hot = alerts.evaluate(windows(), MemoryUsage(850, 1000, "cgroup-v2"), {}, SETTINGS, KNOWN)["conditions"]["memory"]
    assert hot["firing"] and hot["value"] == 85.0 and hot["threshold"] == 80.0 and hot["limitSource"] == "cgroup-v2"
    cool = alerts.evaluate(windows(), MemoryUsage(800, 1000, "physical"), {}, SETTINGS, KNOWN)
    assert cool["conditions"]["memory"]["firing"] is False  # exactly 80 % is not above
    custom = Settings(ALERT_MEMORY_PERCENT=50)
    assert alerts.evaluate(windows(), MemoryUsage(600, 1000, "physical"), {}, custom, KNOWN)["firing"] == ["memory"]


def test_failing_destination_by_deliveries_or_health() -> None:
    w = windows(**{"acc": 5, "d:kafka:fail": 3, "d:kafka:park": 1, "d:redis:ok": 5, "d:redis:fail": 1})
    c = alerts.evaluate(w, None, {}, SETTINGS, KNOWN)["conditions"]["failingDestination"]
    assert c["firing"] and c["value"] == ["kafka"] and c["destinations"]["kafka"]["failed"] == 4
    health = {"redis": {"status": "unhealthy", "detail": "TimeoutError"}, "tables": {"status": "unhealthy"}}
    c = alerts.evaluate(windows(acc=1), None, health, SETTINGS, KNOWN)["conditions"]["failingDestination"]
    assert c["value"] == ["redis"] and c["destinations"]["redis"]["healthDetail"] == "TimeoutError"  # tables: not a destination


def test_cgroup_limits(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert cgroup_limit(v2, v1) is None  # neither file
    v2.write_text("max\n")
    assert cgroup_limit(v2, v1) is None
    v2.write_text("536870912\n")
    assert cgroup_limit(v2, v1) == (536870912, "cgroup-v2")
    v2.unlink()
    v1.write_text(str(9223372036854771712))  # v1's "unlimited"
    assert cgroup_limit(v2, v1) is None
    v1.write_text("268435456")
    assert cgroup_limit(v2, v1) == (268435456, "cgroup-v1")
    m = memory_usage(v2, v1)
    assert m.limit_bytes == 268435456 and m.rss_bytes > 0 and m.percent == round(m.rss_bytes * 100 / 268435456, 2)


def test_cosmos_usage_counts_request_charges() -> None:
    cosmos_usage.reset()
    assert cosmos_usage.record_charge({"x-ms-request-charge": "2.5"}, operation="overdue-query") == 2.5
    assert cosmos_usage.record_charge({"X-Ms-Request-Charge": "1.25"}, operation="overdue-query") == 1.25
    assert cosmos_usage.record_charge({}, operation="read") == 0.0
    cosmos_usage.add("read", 3)
    snap = cosmos_usage.snapshot()
    assert snap["requestCharge"] == 6.75 and snap["requests"] == 4
    assert snap["byOperation"] == {"overdue-query": {"requests": 2, "requestCharge": 3.75},
                                   "read": {"requests": 2, "requestCharge": 3.0}}


@pytest.mark.usefixtures("app_services")
async def test_metrics_endpoint_has_alerts_and_service_section(app_services: Any) -> None:
    tenant = f"alert-{uuid.uuid4().hex[:8]}"
    stats = BatchStats()
    ts = stats.tenant(tenant)
    for k, n in {"acc": 90, "fail": 10, "d:redis:ok": 90, "d:kafka:fail": 10, "retry": 4, "dlq": 2}.items():
        ts.count(k, n)
    ts.observe_latency(50.0, 90)
    await app_services.metrics.record(stats)
    status, _, body = await invoke("get_metrics", "GET", f"/metrics/{tenant}", route={"tenantId": tenant})
    assert status == 200
    a = body["alerts"]
    assert set(a["firing"]) == {"errorRate", "failingDestination"}
    assert a["conditions"]["errorRate"]["value"] == 0.1
    assert a["conditions"]["failingDestination"]["value"] == ["kafka"]
    assert a["conditions"]["memory"]["value"] > 0 and a["conditions"]["memory"]["scope"] == "instance"
    w = body["windows"]["5m"]
    assert (w["retries"], w["deadLettered"]) == (4, 2) and "changeFeedDelayMs" in w
    svc = body["service"]
    assert svc["redis"]["usedBytes"] > 0 and svc["redis"]["maxMemoryBytes"] == 1 << 30
    assert svc["redis"]["headroomBytes"] == (1 << 30) - svc["redis"]["usedBytes"]
    assert svc["kafka"] is None  # no Kafka destination built in this instance
    assert {"requestCharge", "requests", "byOperation"} <= set(svc["cosmos"])
    assert svc["instanceMemory"]["rssBytes"] > 0
