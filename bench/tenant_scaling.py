"""Throughput by number of tenants per request, through the local runner over HTTP.

    python -m bench.tenant_scaling [--requests 4] [--rounds 15] [--events 500]

Starts the local stand-ins and `python -m devhost` (the app as its own process, as the system tier
does), then posts `POST /events/bulk` requests of `--events` events on one connection, the
tenants of each request drawn round-robin from a pool of 1, 10, 100 or 500 tenants (a pool of 500
names 500 tenants in every request). Pools are measured side by side: each round runs every pool
in turn, so machine noise hits all of them; the median per pool is printed with its ratio to the
1-tenant pool. Every result must be `accepted` (a failed or parked delivery is printed and fails
the run). Beside the rate, the CPU the runner and Redis spent per 1,000 events (from /proc): on a
machine shared with other work the rate moves with their load, the CPU per event much less.

Then the cost of a tenant the instance has never seen: the first event of a new tenant versus
the next one of the same tenant (single `POST /events`), and a bulk naming 500 new tenants
versus the same bulk again.

The per-tenant rate limit is raised for the load (the limiter still runs on every request).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.system.harness import App, Stack, app_env, start_app

STACK = ("redis", "azurite", "cosmos", "kafka")
POOLS = (1, 10, 100, 500)
TYPES = ("RISK_UPDATED", "CONTROL_TESTED", "ASSESSMENT_STARTED", "USER_ACTION")


def bulk(tenants: list[str], n: int, start: int = 0) -> dict[str, Any]:
    return {"events": [
        {"tenantId": tenants[(start + i) % len(tenants)], "eventType": TYPES[i % 4], "source": "MCP_SERVER",
         "action": "UPDATE", "entityId": f"risk-{i % 500}", "entityType": "risk",
         "data": {"score": i % 25, "status": "open", "owner": "grc-team", "changes": {"score": [3, 4]}},
         "metadata": {"requestId": f"req-{i}", "region": "westeurope"}} for i in range(n)]}


def post_bulk(app: App, body: dict[str, Any], headers: dict[str, str]) -> None:
    r = app.client.post("/events/bulk", json=body, headers=headers)
    doc = r.json()
    if r.status_code != 200 or doc["accepted"] != len(body["events"]) or any(
            d["status"] != "delivered" for res in doc["results"] for d in res.get("destinations", [])):
        raise SystemExit(f"bulk not fully delivered: HTTP {r.status_code}, "
                         f"{ {k: doc.get(k) for k in ('accepted', 'failed', 'filtered', 'rejected')} }")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pool_rate(app: App, tenants: list[str], requests: int, events: int, headers: dict[str, str],
              pids: list[int]) -> tuple[float, float]:
    """events/s, and the CPU seconds (runner + Redis) the requests took."""
    bodies = [bulk(tenants, events, start=r * events) for r in range(requests)]
    c0, t0 = cpu_seconds(pids), time.perf_counter()
    for body in bodies:
        post_bulk(app, body, headers)
    return requests * events / (time.perf_counter() - t0), cpu_seconds(pids) - c0


def first_event_cost(app: App, headers: dict[str, str], samples: int) -> tuple[float, float]:
    """Median latency (ms) of the first event of a never-seen tenant, and of its next event."""
    first, nxt = [], []
    for _ in range(samples):
        t = f"new-{uuid.uuid4().hex[:12]}"
        body = bulk([t], 1)["events"][0]
        for bucket in (first, nxt):
            t0 = time.perf_counter()
            r = app.client.post("/events", json=body, headers=headers)
            bucket.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 201, r.text
    return statistics.median(first), statistics.median(nxt)


def new_tenants_bulk(app: App, headers: dict[str, str], events: int) -> tuple[float, float]:
    """ms for a bulk naming `events` never-seen tenants, and for the same tenants again."""
    tenants = [f"new-{uuid.uuid4().hex[:12]}" for _ in range(events)]
    out = []
    for _ in range(2):
        t0 = time.perf_counter()
        post_bulk(app, bulk(tenants, events), headers)
        out.append((time.perf_counter() - t0) * 1000)
    return out[0], out[1]


def run(args: argparse.Namespace, work: Path) -> None:
    stack = Stack(work / "stack").start(STACK)
    try:
        env = app_env(stack, work / "app", RATE_LIMIT_EVENTS_PER_SECOND="1000000", RATE_LIMIT_BURST="1000000")
        app = start_app(env, work / "app")
        try:
            measure(app, args, [app.proc.pid, stack.running["redis"].proc.pid])
        finally:
            app.stop()
            failures = [ln for ln in app.log().splitlines() if "failed" in ln and "event(s)" in ln]
            if failures:
                print(f"runner log: {len(failures)} delivery failure line(s), e.g. {failures[0][:200]}")
    finally:
        stack.stop()


def measure(app: App, args: argparse.Namespace, pids: list[int]) -> None:
    headers = app.auth()  # an admin identity (every tenant); minted once, reused
    pools = {p: [f"pool{p}-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(p)] for p in POOLS}
    for p, tenants in pools.items():  # warm: every tenant seen once, connections open
        post_bulk(app, bulk(tenants, args.events), headers)
    rates: dict[int, list[float]] = {p: [] for p in POOLS}
    cpus: dict[int, list[float]] = {p: [] for p in POOLS}
    for _ in range(args.rounds):
        for p, tenants in pools.items():
            rate, cpu = pool_rate(app, tenants, args.requests, args.events, headers, pids)
            rates[p].append(rate)
            cpus[p].append(cpu)
    # CPU per 1,000 events over all rounds (/proc counts in clock ticks: one round is too short).
    per_k = {p: sum(cpus[p]) * 1000 / (args.rounds * args.requests * args.events / 1000) for p in POOLS}
    base, base_cpu = statistics.median(rates[1]), per_k[1]
    print(f"bulk of {args.events} events per request, {args.requests} requests per pool and round, "
          f"{args.rounds} rounds, one connection")
    print(f"{'tenants in pool':>16} | {'tenants/request':>15} | {'events/s':>9} | ratio to 1 tenant | "
          f"CPU ms per 1,000 events (ratio) | rounds (events/s)")
    for p in POOLS:
        med, cpu = statistics.median(rates[p]), per_k[p]
        print(f"{p:>16} | {min(p, args.events):>15} | {med:>9,.0f} | {med / base:>17.0%} | "
              f"{cpu:>8.1f} ({base_cpu / cpu:>4.0%}){'':>16} | " + ", ".join(f"{r:,.0f}" for r in rates[p]))
    first, nxt = first_event_cost(app, headers, args.samples)
    print(f"never-seen tenant, single POST /events (median of {args.samples}): first event {first:.1f} ms, "
          f"next event {nxt:.1f} ms, first costs {first - nxt:+.1f} ms")
    cold, warm = new_tenants_bulk(app, headers, args.events)
    print(f"bulk naming {args.events} never-seen tenants: {cold:.0f} ms; the same tenants again: {warm:.0f} ms "
          f"({(cold - warm) / args.events:+.2f} ms per new tenant)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tenants-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
