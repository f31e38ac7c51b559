"""How long the per-minute monitor pass and /health's checks take against real Redis and Azurite.

    python -m bench.monitor_pass [--tenants 500]

Records one synthetic batch per tenant in one minute, then times `monitor.run_minute` over it
(per-tenant lock, counters, anomaly state, one SYSTEM_PERFORMANCE per tenant through the
pipeline to Redis Streams) and `run_checks` (Redis, Tables, Queues). Starts its own services.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from localdev import services
from shared import monitor
from shared.api.health import run_checks
from shared.metrics import BatchStats
from shared.services import Services
from shared.settings import Settings


async def run(args: argparse.Namespace, settings: Settings) -> None:
    s = Services(settings)
    minute = 978_307_200 // 60  # 2001: only this run's tenants are in that minute
    tenants = [f"bench-{i:05d}" for i in range(args.tenants)]
    for t in tenants:
        stats = BatchStats()
        ts = stats.tenant(t)
        ts.count("acc", 100)
        ts.count("t:RISK_UPDATED", 100)
        ts.count("d:redis:ok", 100)
        ts.observe_latency(30.0, 100)
        await s.metrics.record(stats, now=minute * 60 + 30)
    await run_checks(s)  # warm: clients connected, tables/queues reachable
    start = time.perf_counter()
    report = await monitor.run_minute(s, now=(minute + 1) * 60 + 1)
    elapsed = time.perf_counter() - start
    assert len(report.tenants) == args.tenants and len(report.events) == args.tenants, report
    health = []
    for _ in range(20):
        t0 = time.perf_counter()
        await run_checks(s)
        health.append((time.perf_counter() - t0) * 1000)
    await s.close()
    print(f"monitor pass: {args.tenants} tenants, {len(report.events)} SYSTEM_PERFORMANCE events: "
          f"{elapsed:.2f} s ({elapsed / args.tenants * 1000:.2f} ms per tenant)")
    print(f"health checks (redis, tables, queues): median {statistics.median(health):.1f} ms, "
          f"max {max(health):.1f} ms over {len(health)} runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenants", type=int, default=500)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    redis = services.start("redis", work / "redis")
    azurite = services.start("azurite", work / "azurite")
    try:
        asyncio.run(run(args, Settings.from_env({**redis.settings, **azurite.settings})))
    finally:
        services.stop(redis.proc)
        services.stop(azurite.proc)


if __name__ == "__main__":
    main()
