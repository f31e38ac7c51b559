"""How much of a single `POST /events` is the local runner's own cost, and how much the app's.

    python -m bench.runner_share [--rounds 3] [--seconds 5]

Serves, on one stack, the service (`function_app.py`, as bench/single_post.py does) and the runner's
floor (`bench/floor_app.py`: the same route answering a fixed 201, nothing else) in two runners, and
drives each with wrk (8 connections, the same request) in alternating rounds, so machine noise hits
both. Prints each side's requests/s and the runner process's CPU per request (/proc), medians over the
rounds, and the app's share: what the service costs above the floor. In Azure the floor's part is
the Functions host's (HTTP, in .NET) and the Python worker's (gRPC, the Functions types); only the
app's share is code of this repository.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import orjson

from bench import single_post
from bench.cpu import Meter, load
from bench.tenant_scaling import bench_env, bulk, service
from tests.system.harness import App, app_running


def _round(app: App, script: Path, connections: int, seconds: float) -> tuple[float, float]:
    """(requests/s, runner CPU us per request) of one wrk window."""
    with Meter([app.proc.pid]) as m:
        requests, rate, _, _, errors = single_post.wrk(f"{app.base}/events", script, connections, seconds)
    if errors:
        raise SystemExit(f"{app.base}: {errors} non-2xx answers or socket errors under load")
    return rate, m.other / requests * 1e6


def measure(service: App, floor: App, work: Path, rounds: int, seconds: float, connections: int = 8) -> str:
    event = bulk([f"share-{service.proc.pid}"], 1)["events"][0]
    script = work / "post_event.lua"
    script.write_text(single_post._lua(orjson.dumps(event), service.auth()))
    for app in (service, floor):  # warm: connections, config cached, token seen
        single_post.wrk(f"{app.base}/events", script, connections, 2)
    sides: dict[str, list[tuple[float, float]]] = {"service": [], "floor": []}
    for _ in range(rounds):
        sides["service"].append(_round(service, script, connections, seconds))
        sides["floor"].append(_round(floor, script, connections, seconds))
    rate = {k: statistics.median(r for r, _ in v) for k, v in sides.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in sides.items()}
    app_us = cpu["service"] - cpu["floor"]
    return "\n".join([
        f"single POST /events, {connections} connections, {rounds} x {seconds:.0f} s alternating (wrk -t1); "
        f"load {load()}",
        f"  service (function_app.py): {rate['service']:,.0f} requests/s, runner CPU "
        f"{cpu['service']:.0f} us per request",
        f"  runner floor (bench/floor_app.py): {rate['floor']:,.0f} requests/s, runner CPU "
        f"{cpu['floor']:.0f} us per request",
        f"  the app's share: {app_us:.0f} us per request ({app_us / cpu['service']:.0%} of the runner "
        f"process's CPU); the runner's own: {cpu['floor'] / cpu['service']:.0%}",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with service("bench-share-") as (work, stack, app), \
            app_running(bench_env(stack, work / "floor"), work / "floor",
                        "--module", "bench.floor_app") as floor:
        print(measure(app, floor, work, args.rounds, args.seconds))


if __name__ == "__main__":
    main()
