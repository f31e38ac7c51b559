"""The service's alert conditions, evaluated now (GET /metrics `alerts` block).

The same conditions and numbers drive the Azure Monitor alert rules in infra/ (on the `grc.*`
custom metrics), so what the portal fires on is what /metrics says holds:

| condition | figure (5-min window unless noted) | default threshold | infra rule |
| --- | --- | --- | --- |
| errorRate | (rejected + failed) / processed events of the tenant | > 0.05 (ALERT_ERROR_RATE) | sum(grc.events.failed + rejected) / sum(all) |
| processingDelay | mean end-to-end latency and mean change-feed delay, the larger | > 30 s (ALERT_DELAY_SECONDS) | Average of grc.latency.end_to_end_ms / grc.changefeed.delay_ms > 30000 |
| memory | this instance: process RSS / memory limit (cgroup or physical) | > 80 % (ALERT_MEMORY_PERCENT) | Average of grc.instance.memory_percent (+ the plan's memory metric) |
| failingDestination | a destination with failed > 0 and delivered == 0, or its health check unhealthy | any | grc.deliveries.failed > 0 with grc.deliveries.succeeded == 0; Min of grc.destination.healthy < 1 |

Means, not percentiles, for the delay: an Azure metric alert can aggregate Average/Max but not
p99, and the mean over 5 minutes is the figure both sides can compute exactly. Percentiles are
shown alongside for diagnosis.
"""
from __future__ import annotations

from typing import Any, Mapping

from shared.resources import MemoryUsage
from shared.settings import Settings

WINDOW = "5m"


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
    error_rate = float(w.get("errorRate") or 0.0)
    lat = (w.get("latencyMs") or {})
    dly = (w.get("changeFeedDelayMs") or {})
    lat_s, dly_s = _seconds(lat.get("mean")), _seconds(dly.get("mean"))
    delays = [v for v in (lat_s, dly_s) if v is not None]
    delay = max(delays) if delays else None
    failing = failing_destinations(w, health, known_destinations)
    conditions: dict[str, dict[str, Any]] = {
        "errorRate": {
            "firing": error_rate > settings.alert_error_rate, "value": error_rate,
            "threshold": settings.alert_error_rate, "window": WINDOW,
        },
        "processingDelay": {
            "firing": delay is not None and delay > settings.alert_delay_seconds, "value": delay,
            "threshold": settings.alert_delay_seconds, "unit": "s", "window": WINDOW,
            "endToEndLatencySeconds": lat_s, "changeFeedDelaySeconds": dly_s,
            "endToEndLatencyP99Seconds": _seconds(lat.get("p99")), "changeFeedDelayP99Seconds": _seconds(dly.get("p99")),
        },
        "memory": {
            "firing": memory is not None and memory.percent > settings.alert_memory_percent,
            "value": memory.percent if memory else None, "threshold": settings.alert_memory_percent,
            "unit": "%", "scope": "instance", **({"rssBytes": memory.rss_bytes, "limitBytes": memory.limit_bytes,
                                                   "limitSource": memory.limit_source} if memory else {}),
        },
        "failingDestination": {
            "firing": bool(failing), "value": sorted(failing), "threshold": "failed > 0 and delivered == 0, "
            "or health unhealthy", "window": WINDOW, "destinations": failing,
        },
    }
    return {"firing": [name for name, c in conditions.items() if c["firing"]], "conditions": conditions}
