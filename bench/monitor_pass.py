"""How long the per-minute monitor pass and /health's checks take against real Redis and Azurite.

    python -m bench.monitor_pass [--seen 10000] [--active 1000] [--configs 100]

Records metrics for `--seen` tenants: `--active` of them in the minute looked at, the others an
hour and a half earlier (seen, in the activity index, but outside the lookback), and stores a
stream config for `--configs` of the active ones. Then times `monitor.run_minute` on a fresh
instance (no config cached: the worst case) -- per-tenant lock, counters, anomaly state, one
SYSTEM_PERFORMANCE per active tenant through the pipeline to Redis Streams -- and counts the
requests it sends to Azure Tables; then `run_checks` (Redis, Tables, Queues). Starts its own services.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.data.tables.aio import TableServiceClient

import shared.app.services as services_module
from localdev import services
from shared.app.services import Services
from shared.core.settings import Settings
from shared.core.streamconfig import StreamConfigIn
from shared.observability import monitor
from shared.observability.health import run_checks
from shared.observability.tenant_metrics import BatchStats
from shared.storage.clients import CLIENT_OPTIONS


class TableRequests:
    """Counts the HTTP requests the instance's Table client sends (an SDK `raw_request_hook`)."""

    def __init__(self) -> None:
        self.gets = 0
        self.other = 0

    def __call__(self, request: Any) -> None:
        if request.http_request.method == "GET":
            self.gets += 1
        else:
            self.other += 1


async def seed(settings: Settings, minute: int, args: argparse.Namespace) -> list[str]:
    s = Services(settings)
    try:
        tenants = [f"bench-{i:05d}" for i in range(args.seen)]
        active = tenants[: args.active]
        for start in range(0, args.seen, 500):
            stats = BatchStats()
            for t in tenants[start:start + 500]:
                ts = stats.tenant(t)
                ts.count("acc", 100)
                ts.count("t:RISK_UPDATED", 100)
                ts.count("d:redis:ok", 100)
                ts.observe_latency(30.0, 100)
            at = minute * 60 + 30 if start < args.active else (minute - 90) * 60
            await s.metrics.record(stats, now=at)
        for t in active[: args.configs]:
            await s.configs.write(t, StreamConfigIn.model_validate({"retentionDays": 7}))
        return active
    finally:
        await s.close()


@dataclass
class MonitorFigures:
    seen: int
    active: int
    seconds: float
    table_gets: int
    health_median_ms: float
    health_max_ms: float
    health_runs: int

    def lines(self) -> list[str]:
        return [f"monitor pass: {self.seen:,} tenants seen, {self.active:,} active: {self.seconds:.2f} s "
                f"({self.seconds / self.active * 1000:.2f} ms per active tenant); Table reads in the pass: "
                f"{self.table_gets}",
                f"health checks (redis, tables, queues): median {self.health_median_ms:.1f} ms, "
                f"max {self.health_max_ms:.1f} ms over {self.health_runs} runs"]


async def measure(args: argparse.Namespace, settings: Settings) -> MonitorFigures:
    minute = 978_307_200 // 60  # 2001: only this run's tenants are in that minute
    active = await seed(settings, minute, args)
    requests = TableRequests()
    services_module.table_service = lambda st, credential=None: TableServiceClient.from_connection_string(  # type: ignore[assignment]
        st.storage_connection_string, raw_request_hook=requests, **CLIENT_OPTIONS)
    s = Services(settings)  # a fresh instance: nothing cached
    await s.redis.ping()
    await s.configs.table()
    requests.gets = requests.other = 0
    start = time.perf_counter()
    report = await monitor.run_minute(s, now=(minute + 1) * 60 + 1)
    elapsed = time.perf_counter() - start
    gets = requests.gets
    assert len(report.tenants) == len(active) and len(report.events) == len(active), report
    health = []
    for _ in range(20):
        t0 = time.perf_counter()
        await run_checks(s)
        health.append((time.perf_counter() - t0) * 1000)
    await s.close()
    return MonitorFigures(args.seen, len(active), elapsed, gets, statistics.median(health), max(health), len(health))


def run(seen: int = 10_000, active: int = 1_000, configs: int = 100) -> MonitorFigures:
    """Start Redis and Azurite, measure, stop them."""
    args = argparse.Namespace(seen=seen, active=active, configs=configs)
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        work = Path(tmp)
        redis = services.start("redis", work / "redis")
        azurite = services.start("azurite", work / "azurite")
        try:
            return asyncio.run(measure(args, Settings.from_env({**redis.settings, **azurite.settings})))
        finally:
            services.stop(redis.proc)
            services.stop(azurite.proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seen", type=int, default=10_000)
    ap.add_argument("--active", type=int, default=1_000)
    ap.add_argument("--configs", type=int, default=100)
    args = ap.parse_args()
    print("\n".join(run(args.seen, args.active, args.configs).lines()))


if __name__ == "__main__":
    main()
