"""The service's alert conditions, evaluated now (GET /metrics `alerts` block).

They are the conditions of the log alert rules in infra/modules/alerts.bicep (docs: infra/alerts.md),
computed from the same counts the `grc.*` custom metrics carry, with the same thresholds
(ALERT_* settings = the bicep parameters), so what the portal fires on is what /metrics says holds:

| condition | figure (5-min window) | threshold | infra rule |
| --- | --- | --- | --- |
| errorRate | failed (incl. parked) / all deliveries of the tenant, when it had >= 20 | > ALERT_ERROR_RATE (0.05) | grc.deliveries.failed / (succeeded + failed), min 20 |
| processingDelay | the larger of the max change-feed delay and the max end-to-end latency | > ALERT_DELAY_SECONDS (30) | max(valueMax) of grc.changefeed.delay_ms |
| memory | this instance: process RSS / its memory limit (cgroup or physical) | > ALERT_MEMORY_PERCENT (80) | max(valueMax) of grc.instance.memory_percent per instance |
| failingDestination | failed > 0 and delivered == 0, or its health check unhealthy | any | the same, from grc.deliveries.* and grc.destination.healthy |

Maxima come from the log-scale histograms (the upper bound of the highest bucket), exactly the
`valueMax` the telemetry module exports for these summaries.
"""
from __future__ import annotations

from typing import Any, Mapping

from shared.core.settings import Settings
from shared.observability.resources import MemoryUsage

WINDOW = "5m"
# alerts.bicep `errorRateMinDeliveries`: 1 failure out of 2 deliveries pages no one.
ERROR_RATE_MIN_DELIVERIES = 20


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)


def failing_destinations(window: Mapping[str, Any], health: Mapping[str, Mapping[str, Any]],
                         known: set[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dest, c in (window.get("destinations") or {}).items():
        bad = int(c.get("failed", 0)) + int(c.get("parked", 0))
        if bad > 0 and int(c.get("delivered", 0)) == 0:
            out[dest] = {"failed": bad, "delivered": 0, "reason": "no successful delivery in the window"}
    for name, rec in health.items():
        if name in known and rec.get("status") == "unhealthy":
            entry = out.setdefault(name, {})
            entry["health"] = "unhealthy"
            entry.setdefault("reason", "health check unhealthy")
            if rec.get("detail"):
                entry["healthDetail"] = rec["detail"]
    return out


def evaluate(windows: Mapping[str, Any], memory: MemoryUsage | None, health: Mapping[str, Mapping[str, Any]],
             settings: Settings, known_destinations: set[str]) -> dict[str, Any]:
    """The `alerts` block: each condition with its figure, threshold and whether it holds now."""
    w = windows.get(WINDOW) or {}
    dests = (w.get("destinations") or {}).values()
    deliveries = sum(int(d.get("delivered", 0)) + int(d.get("failed", 0)) + int(d.get("parked", 0)) for d in dests)
    error_rate = float(w.get("deliveryErrorRate") or 0.0)
    lat = w.get("latencyMs") or {}
    dly = w.get("changeFeedDelayMs") or {}
    lat_s, dly_s = _seconds(lat.get("max")), _seconds(dly.get("max"))
    delays = [v for v in (lat_s, dly_s) if v is not None]
    delay = max(delays) if delays else None
    failing = failing_destinations(w, health, known_destinations)
    conditions: dict[str, dict[str, Any]] = {
        "errorRate": {
            "firing": deliveries >= ERROR_RATE_MIN_DELIVERIES and error_rate > settings.alert_error_rate,
            "value": error_rate, "threshold": settings.alert_error_rate, "window": WINDOW,
            "deliveries": deliveries, "minDeliveries": ERROR_RATE_MIN_DELIVERIES,
            "eventErrorRate": w.get("errorRate"),  # rejected + failed events / processed (not alerted on)
        },
        "processingDelay": {
            "firing": delay is not None and delay > settings.alert_delay_seconds, "value": delay,
            "threshold": settings.alert_delay_seconds, "unit": "s", "window": WINDOW,
            "changeFeedDelayMaxSeconds": dly_s, "endToEndLatencyMaxSeconds": lat_s,
            "changeFeedDelayP99Seconds": _seconds(dly.get("p99")), "endToEndLatencyP99Seconds": _seconds(lat.get("p99")),
        },
        "memory": {
            "firing": memory is not None and memory.percent > settings.alert_memory_percent,
            "value": memory.percent if memory else None, "threshold": settings.alert_memory_percent,
            "unit": "%", "scope": "instance", **({"rssBytes": memory.rss_bytes, "limitBytes": memory.limit_bytes,
                                                   "limitSource": memory.limit_source} if memory else {}),
        },
        "failingDestination": {
            "firing": bool(failing), "value": sorted(failing),
            "threshold": "failed > 0 and delivered == 0, or health unhealthy", "window": WINDOW,
            "destinations": failing,
        },
    }
    return {"firing": [name for name, c in conditions.items() if c["firing"]], "conditions": conditions}
