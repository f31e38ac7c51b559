"""`GET /health` under load: requests/s and latency at N connections, against a runner it starts.

    python -m bench.health [--connections 8] [--seconds 10] [--warmup 2] [--admin]

Starts the local stand-ins (Redis, Azurite, the Cosmos server) and the app in the local runner
(`python -m devhost`, its own process) on free ports, exactly as the system tier does, then keeps
`--connections` keep-alive connections busy with `GET /health` for `--seconds` and prints
requests/s, p50/p99/max latency and the status codes seen. Anonymous callers by default (what a
load balancer or a stranger sends); `--admin` sends an admin token (the detailed answer).

The client runs in this process (one core), the runner in its own: on a 2-core machine the two
share the CPU, so the figure is a floor. The load average before and after is printed, so a run
on a busy machine can be told from a quiet one.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from tests.system.harness import Stack, app_env, bearer, start_app

SERVICES = ("redis", "azurite", "cosmos")


async def _worker(session: aiohttp.ClientSession, url: str, headers: dict[str, str], until: float,
                  latencies: list[float], codes: Counter[int]) -> None:
    while True:
        start = time.perf_counter()
        if start >= until:
            return
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            codes[resp.status] += 1
        latencies.append(time.perf_counter() - start)


async def load(url: str, headers: dict[str, str], connections: int, seconds: float,
               warmup: float) -> tuple[float, list[float], Counter[int]]:
    """(requests/s, latencies in seconds, status counts) of `seconds` of load after `warmup`."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        if warmup > 0:
            await asyncio.gather(*(_worker(session, url, headers, time.perf_counter() + warmup, [], Counter())
                                   for _ in range(connections)))
        latencies: list[float] = []
        codes: Counter[int] = Counter()
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(*(_worker(session, url, headers, until, latencies, codes)
                               for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, latencies, codes


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.health", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--admin", action="store_true", help="send an admin token (detailed answer)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = Stack(work / "stack")
        try:
            stack.start(SERVICES)
            env = app_env(stack, work / "app")
            app = start_app(env, work / "app")
            try:
                headers = bearer(env) if args.admin else {}
                load_before = os.getloadavg()
                rps, lat, codes = asyncio.run(load(f"{app.base}/health", headers, args.connections,
                                                   args.seconds, args.warmup))
                load_after = os.getloadavg()
            finally:
                app.stop()
        finally:
            stack.stop()
    caller = "admin" if args.admin else "anonymous"
    print(f"GET /health ({caller}), {args.connections} connections, {args.seconds:g} s: "
          f"{rps:,.0f} requests/s; p50 {_pct(lat, 0.5) * 1000:.1f} ms, p99 {_pct(lat, 0.99) * 1000:.1f} ms, "
          f"max {max(lat) * 1000:.1f} ms; status {dict(sorted(codes.items()))}")
    print(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
