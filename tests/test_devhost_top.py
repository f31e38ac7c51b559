"""devhost.top's rendering, without a service: what it shows when the service cannot be reached, and
the alert marks. The view against the running app is tests/system/test_watch.py."""
from __future__ import annotations

import socket
from datetime import datetime

import httpx
from rich.console import Console

from devhost.top import Snapshot, TenantView, fetch, render


def text_of(renderable: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_service_is_shown_not_raised() -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{closed_port()}", timeout=2) as client:
        snap = fetch(client, ["tenant-a"], "1m")
    screen = text_of(render(snap))
    assert "unreachable: ConnectError" in screen
    assert "tenant-a" in screen and "ConnectError" in screen.split("tenant-a", 1)[1]


def test_firing_alerts_and_the_error_rate_against_its_line() -> None:
    window = {"windowSeconds": 60, "accepted": 120, "filtered": 6, "rejected": 3, "failed": 9, "errorRate": 0.0909,
              "retries": 4, "deadLettered": 1, "latencyMs": {"p50": 2.0, "p95": 8.5, "p99": 12.25},
              "changeFeedDelayMs": {"p99": 950.0},
              "destinations": {"kafka": {"delivered": 100, "failed": 2, "parked": 7}}}
    alerts = {"firing": ["errorRate"], "conditions": {
        "errorRate": {"firing": True, "value": 0.0826, "threshold": 0.05},
        "memory": {"firing": False, "value": 41.5, "threshold": 80.0}}}
    snap = Snapshot("http://svc", "1m", datetime(2026, 1, 1, 12, 0, 0),
                    health={"status": "degraded", "dependencies": {
                        "retryQueue": {"status": "degraded", "messages": 7, "poisonMessages": 2}}},
                    tenants=[TenantView("tenant-a", {"windows": {"1m": window}, "alerts": alerts}, "3")])
    screen = text_of(render(snap))
    assert "health degraded (retryQueue degraded)" in screen
    assert "retry queue 7 message(s), poison 2" in screen
    assert "instance memory 41.5 % / 80.0 %" in screen
    row = next(line for line in screen.splitlines() if line.strip().startswith("tenant-a") and "/s" in line)
    for cell in ("120 (2.00/s)", "6 (0.10/s)", "3 (0.05/s)", "9.1 %", "8.3 % / 5.0 %", "2.0/8.5/12.2",
                 "950.0", "1 (stored 3)", "errorRate"):
        assert cell in row, (cell, row)
    dest = next(line for line in screen.splitlines() if "kafka" in line)
    assert dest.split() == ["tenant-a", "kafka", "100", "2", "7"]
