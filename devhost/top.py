"""A terminal view of the running service for `make run` users (no portal locally): `make watch`.

    python -m devhost.top [--url http://127.0.0.1:3003] [--interval 2] [--window 1m] TENANT [TENANT ...]

Every `--interval` seconds it reads what the service itself exposes over HTTP -- `GET /metrics/{t}`
per tenant, `GET /deadletters/{t}` (how many are stored), `GET /health` -- and redraws the same
figures the Azure Monitor workbook shows (infra/workbooks/): per tenant accepted / filtered /
rejected (count and per second), failed, error rate, latency p50/p95/p99, change-feed delay,
retries, dead letters and the alert conditions that hold; per destination delivered / failed /
parked; service-wide the retry queue's depth and poison count, Redis and instance memory.

Under `make run` (AUTH_MODE=jwt+local-open) a call without a token acts as an admin, so nothing is
needed; against a service that checks tokens give one with `--token` (an admin token sees the
service-wide figures, a tenant's token only its tenants) and `--function-key` where the host checks
keys. It only reads: no route, setting or state of the service changes for it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

WINDOWS = ("1m", "5m", "1h")
DEADLETTER_PAGE = 1000  # the route's largest page: "1000+" beyond it


@dataclass
class TenantView:
    tenant: str
    metrics: dict[str, Any] | None = None
    deadletters: str = "-"
    error: str | None = None


@dataclass
class Snapshot:
    url: str
    window: str
    taken: datetime
    health: dict[str, Any] | None = None
    health_error: str | None = None
    tenants: list[TenantView] = field(default_factory=list)


def _problem(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}"
    detail = body.get("title") or body.get("detail") if isinstance(body, dict) else None
    return f"HTTP {r.status_code} {detail or ''}".strip()


def fetch(client: httpx.Client, tenants: list[str], window: str) -> Snapshot:
    """One read of everything the view shows; a failed call is shown, never raised."""
    snap = Snapshot(str(client.base_url), window, datetime.now())
    try:
        r = client.get("/health")  # 503 still carries the body (Redis or Tables unhealthy)
        snap.health = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        snap.health_error = f"{type(exc).__name__}: {exc}"
    for t in tenants:
        view = TenantView(t)
        snap.tenants.append(view)
        path = quote(t, safe="")
        try:
            r = client.get(f"/metrics/{path}")
            if r.status_code != 200:
                view.error = _problem(r)
                continue
            view.metrics = r.json()
            d = client.get(f"/deadletters/{path}", params={"limit": DEADLETTER_PAGE})
            if d.status_code == 200:
                body = d.json()
                view.deadletters = f"{body['count']}{'+' if body.get('continuationToken') else ''}"
        except (httpx.HTTPError, ValueError) as exc:
            view.error = f"{type(exc).__name__}: {exc}"
    return snap


# ---- rendering ------------------------------------------------------------------------------

def _num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _count_rate(n: int, seconds: int) -> str:
    return f"{n} ({n / seconds:.2f}/s)"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def _condition(alerts: dict[str, Any], name: str) -> dict[str, Any]:
    return (alerts.get("conditions") or {}).get(name) or {}


def tenant_table(snap: Snapshot) -> Table:
    t = Table(title=f"Tenants (window {snap.window})", box=box.SIMPLE_HEAD, expand=False)
    for col, justify in (("tenant", "left"), ("accepted", "right"), ("filtered", "right"),
                         ("rejected", "right"), ("failed", "right"), ("err rate", "right"),
                         ("deliv. err 5m", "right"), ("p50/p95/p99 ms", "right"),
                         ("cf delay p99 ms", "right"), ("retries", "right"), ("dead letters", "right"),
                         ("alerts", "left")):
        t.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for v in snap.tenants:
        if v.metrics is None:
            t.add_row(v.tenant, Text(v.error or "?", style="red"), *[""] * 10)
            continue
        w = v.metrics["windows"].get(snap.window) or {}
        secs = int(w.get("windowSeconds") or 60)
        alerts = v.metrics.get("alerts") or {}
        err = _condition(alerts, "errorRate")
        lat = w.get("latencyMs") or {}
        dly = w.get("changeFeedDelayMs") or {}
        firing = alerts.get("firing") or []
        deliv = Text(f"{_pct(err.get('value'))} / {_pct(err.get('threshold'))}",
                     style="bold red" if err.get("firing") else "")
        t.add_row(
            v.tenant,
            _count_rate(w.get("accepted", 0), secs),
            _count_rate(w.get("filtered", 0), secs),
            _count_rate(w.get("rejected", 0), secs),
            str(w.get("failed", 0)),
            _pct(w.get("errorRate")),
            deliv,
            f"{_num(lat.get('p50'))}/{_num(lat.get('p95'))}/{_num(lat.get('p99'))}",
            _num(dly.get("p99")),
            str(w.get("retries", 0)),
            f"{w.get('deadLettered', 0)} (stored {v.deadletters})",
            Text(", ".join(firing) or "none", style="bold red" if firing else "green"),
        )
    return t


def destination_table(snap: Snapshot) -> Table:
    t = Table(title=f"Destinations (window {snap.window})", box=box.SIMPLE_HEAD, expand=False)
    for col in ("tenant", "destination", "delivered", "failed", "parked"):
        t.add_column(col, justify="left" if col in ("tenant", "destination") else "right", no_wrap=True)
    for v in snap.tenants:
        if v.metrics is None:
            continue
        dests = (v.metrics["windows"].get(snap.window) or {}).get("destinations") or {}
        for name, d in sorted(dests.items()):
            t.add_row(v.tenant, name, str(d.get("delivered", 0)),
                      Text(str(d.get("failed", 0)), style="red" if d.get("failed") else ""),
                      Text(str(d.get("parked", 0)), style="yellow" if d.get("parked") else ""))
    return t


def service_lines(snap: Snapshot) -> Text:
    out = Text()
    out.append(f"{snap.url}  ", style="bold")
    out.append(f"{snap.taken:%H:%M:%S}  ")
    if snap.health is None:
        out.append(f"unreachable: {snap.health_error}", style="bold red")
        return out
    status = snap.health.get("status", "?")
    out.append(f"health {status}", style="green" if status == "healthy" else "bold red")
    deps = snap.health.get("dependencies") or {}
    bad = [n for n, d in deps.items() if d.get("status") != "healthy"]
    if bad:
        out.append(" (" + ", ".join(f"{n} {deps[n].get('status')}" for n in bad) + ")", style="yellow")
    rq = deps.get("retryQueue") or {}
    if "messages" in rq:  # admins get the figures
        out.append(f"\nretry queue {rq['messages']} message(s), poison {rq.get('poisonMessages', 0)}",
                   style="bold red" if rq.get("poisonMessages") else "")
    redis = deps.get("redis") or {}
    if "memoryPercent" in redis:
        out.append(f"   redis memory {redis['memoryPercent']} %")
    memory = next((_condition(v.metrics.get("alerts") or {}, "memory")
                   for v in snap.tenants if v.metrics), {})
    if memory.get("value") is not None:
        out.append(f"   instance memory {memory['value']} % / {memory.get('threshold')} %",
                   style="bold red" if memory.get("firing") else "")
    return out


def render(snap: Snapshot) -> Group:
    return Group(service_lines(snap), tenant_table(snap), destination_table(snap))


# ---- the command ----------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devhost.top", description=__doc__.split("\n\n")[0])
    p.add_argument("tenants", nargs="+", metavar="TENANT", help="tenant ids to show")
    p.add_argument("--url", default=os.environ.get("WATCH_URL", f"http://127.0.0.1:{os.environ.get('PORT', '3003')}"))
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--window", choices=WINDOWS, default="1m", help="metrics window (default 1m)")
    p.add_argument("--token", default=os.environ.get("WATCH_TOKEN", ""), help="bearer token (not needed under make run)")
    p.add_argument("--function-key", default=os.environ.get("WATCH_FUNCTION_KEY", ""), help="x-functions-key")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headers = {}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    if args.function_key:
        headers["x-functions-key"] = args.function_key
    console = Console()
    with httpx.Client(base_url=args.url, headers=headers, timeout=max(args.interval, 5.0)) as client:
        if args.once:
            console.print(render(fetch(client, args.tenants, args.window)))
            return 0
        try:
            with Live(render(fetch(client, args.tenants, args.window)), console=console,
                      screen=True, auto_refresh=False) as live:
                while True:
                    time.sleep(args.interval)
                    live.update(render(fetch(client, args.tenants, args.window)), refresh=True)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
