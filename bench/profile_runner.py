"""Where the runner's time goes per event: py-spy samples of the local runner under load, by stage.

    python -m bench.profile_runner [--seconds 15] [--rate 250] [--keep DIR]

Starts the local stand-ins and the runner as the system tier does (bench/tenant_scaling.py's settings:
the per-tenant rate limit raised, the limiter still running), then, while `py-spy record` samples the
runner's process, drives one workload at a time:

- bulk, 1 tenant: bulks of 500 events of one tenant, no client eventId (no idempotency record);
- bulk, 1 tenant, client eventIds: the same with an eventId per event (idempotency claim and settle);
- bulk, 500 tenants: bulks of 500 events naming 500 tenants (every per-tenant cost is paid per event);
- single POST: `POST /events` from wrk at 8 connections (bench/single_post.py).

Each sample is given to the stage of its deepest frame that belongs to one (STAGES, in that order per
frame); Redis client frames count toward the stage that made the call, and Redis client work with no
caller in its stack (a round trip shared by small calls of one loop iteration runs in a task of its
own; a socket write resumed from the loop shows no caller) has a line of its own. A stage's
microseconds per event are its share of the samples times the runner's CPU per event (/proc, over the
same window): py-spy samples wall-clock time of a busy process, so shares are what it measures, the
CPU figure what they are scaled by. `--keep` keeps py-spy's raw files (flamegraph input).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import single_post
from bench.cpu import Meter, load
from bench.tenant_scaling import bulk, post_bulk, service
from tests.system.harness import App

# (stage, does this frame belong to it?) -- frames look like "func (path/file.py:line)".
STAGES: list[tuple[str, Callable[[str], bool]]] = [
    ("validation (EventIn, shape and tenant checks)",
     lambda f: any(k in f for k in ("BaseModel.model_validate", "validate_event_in", "EventIn", "check_shape",
                                    "_shaped", "is_tenant_id", "core/validation.py"))),
    ("enrichment (ids, timestamps, the Event)",
     lambda f: "core/enrich.py" in f or "core/ids.py" in f or "Event.trusted" in f),
    ("event JSON (Event.to_json / encode)", lambda f: "Event.to_json" in f or "Event.encode" in f),
    ("request body parse (orjson)", lambda f: "read_json" in f),
    ("idempotency (claim, settle)", lambda f: "delivery/idempotency.py" in f),
    ("stream config + filters",
     lambda f: "configstore.py" in f or "core/filters.py" in f or "route_for" in f),
    ("Redis destination (append script per tenant chunk)",
     lambda f: "redis_streams.py" in f or "Dispatcher." in f),
    ("metrics (per-tenant counters, write-behind) + failure hook",
     lambda f: "tenant_metrics.py" in f or "system_events.py" in f),
    ("authentication + rate limit", lambda f: "shared/security/" in f or "admit" in f),
    ("results + response body",
     lambda f: any(k in f for k in ("result_body", "delivery_body", "core/results.py", "http/types.py",
                                    "destinations/base.py"))),
    ("pipeline bookkeeping (grouping by tenant, outcomes)",
     lambda f: "delivery/pipeline.py" in f or "api/events.py" in f),
    ("request adapter (shared/http, the runner's invoke)",
     lambda f: "shared/http/" in f or "devhost/http_driver.py" in f or "devhost/invoke.py" in f),
    ("local runner's background work (queue and change-feed polling, timers)",
     lambda f: any(k in f for k in ("devhost/queue_driver.py", "devhost/cosmos_driver.py", "devhost/timer",
                                    "concurrent/futures", "threading.py"))),
    ("HTTP server (aiohttp; the Functions host in Azure)", lambda f: "aiohttp/" in f and "client" not in f),
]
# Redis client frames with no stage above them: a round trip shared by small calls of one loop
# iteration runs in a task of its own, and a socket write resumed from the loop shows no caller.
SHARED_REDIS = "Redis socket writes and shared round trips (small calls of one loop iteration)"
LOOP = "event loop (epoll, callbacks)"
_LINE = re.compile(r":\d+\)$")


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):  # deepest first
        for name, belongs in STAGES:
            if belongs(frame):
                return name
    if any("storage/redisconn.py" in f or "redis/asyncio" in f for f in frames):
        return SHARED_REDIS
    if any("asyncio/" in f or "selectors.py" in f for f in frames):
        return LOOP
    return "other (native code without a Python frame, GC)"


def stages(raw: Path) -> tuple[Counter[str], int]:
    """Samples per stage of a py-spy raw (collapsed stacks) file, and the total."""
    out: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        if not line.strip():  # py-spy can end a file with a blank line
            continue
        stack, _, n = line.rpartition(" ")
        out[stage_of([_LINE.sub(")", f) for f in stack.split(";") if f])] += int(n)
    return out, sum(out.values())


@dataclass
class Profile:
    name: str
    unit: str  # "event" or "request"
    rate: float  # units per second over the window
    cpu_us: float  # the runner's CPU per unit
    samples: Counter[str]
    total: int
    load: str

    def lines(self) -> list[str]:
        out = [f"\n{self.name}: {self.rate:,.0f} {self.unit}s/s, runner {self.cpu_us:.1f} us CPU per "
               f"{self.unit}, {self.total} samples (load {self.load})",
               f"| stage | share | us per {self.unit} |", "|---|---|---|"]
        for stage, n in self.samples.most_common():
            out.append(f"| {stage} | {n / self.total:.0%} | {n / self.total * self.cpu_us:.1f} |")
        return out


def _py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("py-spy is not installed: pip install -r requirements-dev.txt")
    return exe


def record(pid: int, seconds: float, rate: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([_py_spy(), "record", "-p", str(pid), "-d", str(round(seconds)), "-r", str(rate),
                             "-f", "raw", "-o", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_bulks(app: App, name: str, body: Callable[[int], bytes], seconds: float, rate: int,
                  out: Path) -> Profile:
    """`body(n)`: the n-th request's body (n = 0 warms up: tenants seen, configs cached)."""
    headers = app.auth()
    post_bulk(app, body(0), headers)
    spy = record(app.proc.pid, seconds, rate, out)
    sent = 0
    with Meter([app.proc.pid]) as m:
        while spy.poll() is None:
            sent += 1
            post_bulk(app, body(sent), headers)
    events = sent * 500
    samples, total = stages(out)
    return Profile(name, "event", events / m.wall, m.other / events * 1e6, samples, total, load())


_STAMP = b"@@@@@@@@"


def bulk_bodies(tenants: list[str], client_ids: bool) -> Callable[[int], bytes]:
    """Bodies of 500 events, in turns of 5. With `client_ids`, every request's eventIds are new (each
    is a first delivery, never a duplicate however many requests the window takes): one body whose ids
    hold a stamp, replaced by the request's number."""
    if client_ids:
        body = bulk(tenants, 500)
        run = uuid.uuid4().hex[:12]
        for i, e in enumerate(body["events"]):
            e["eventId"] = f"{_STAMP.decode()}-{run}-{i:03d}"
        template = orjson.dumps(body)
        return lambda n: template.replace(_STAMP, b"%08d" % n)
    bodies = [orjson.dumps(bulk(tenants, 500, start=r * 500)) for r in range(5)]
    return lambda n: bodies[n % len(bodies)]


def run(seconds: float, rate: int, keep: Path | None) -> list[Profile]:
    with service("bench-profile-") as (work, _, app):
        raw = keep or work
        raw.mkdir(parents=True, exist_ok=True)
        one = [f"prof-{uuid.uuid4().hex[:8]}"]
        many = [f"prof{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(500)]
        out = [
            profile_bulks(app, "bulk, 1 tenant", bulk_bodies(one, False), seconds, rate,
                          raw / "bulk-1.txt"),
            profile_bulks(app, "bulk, 1 tenant, client eventIds", bulk_bodies(one, True),
                          seconds, rate, raw / "bulk-ids.txt"),
            profile_bulks(app, "bulk, 500 tenants per request", bulk_bodies(many, False), seconds,
                          rate, raw / "bulk-500.txt"),
        ]
        warmup = 2.0
        spy = record(app.proc.pid, seconds + warmup, rate, raw / "single.txt")
        # measured with the runner's pid only: its CPU per request over wrk's measured run
        single = single_post.measure(app, [app.proc.pid], work, 8, seconds, warmup)
        spy.wait()
        samples, total = stages(raw / "single.txt")
        out.append(Profile("single POST /events, 8 connections (wrk)", "request", single.rate,
                           single.us_per_request, samples, total, load()))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="py-spy window per workload")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--keep", type=Path, help="keep py-spy's raw files in this directory")
    args = ap.parse_args()
    print(f"py-spy record of the local runner, {args.seconds:.0f} s per workload, {args.rate} samples/s; "
          f"load average {load()}")
    for p in run(args.seconds, args.rate, args.keep):
        print("\n".join(p.lines()))


if __name__ == "__main__":
    main()
