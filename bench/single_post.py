"""Single `POST /events` under load: requests/s and latency at N connections, with wrk.

    python -m bench.single_post [--connections 8] [--seconds 10]

wrk (Debian's package; `make bench` installs it when missing) is the load generator because it is
C: an asyncio client would spend about as much CPU per request as the service does, and on a
2-core machine that CPU comes out of the runner's. It runs one thread (`-t1`) with `--connections`
keep-alive connections, each posting the same single event (no eventId: every request is a new
event) as an admin caller; a Lua script sets the method, body and headers. wrk counts non-2xx
answers itself ("Non-2xx or 3xx responses"), and the run fails on any.

Starts the local stand-ins and the runner as the system tier does (or measures a runner given to
`measure`), with the per-tenant rate limit raised for the load (the limiter still runs).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.cpu import Meter, load, speed
from bench.tenant_scaling import bulk, service
from tests.system.harness import App

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class Single:
    connections: int
    seconds: float
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    service_cpu: float  # runner + Redis
    load: str
    speed: str  # bench.cpu.speed() just before and just after the window

    @property
    def us_per_request(self) -> float:
        return self.service_cpu / self.requests * 1e6

    def line(self) -> str:
        return (f"single POST /events, {self.connections} connections, {self.seconds:.0f} s (wrk -t1): "
                f"{self.rate:,.0f} requests/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"{self.us_per_request:.0f} us CPU per request (runner + Redis), non-2xx {self.errors}; "
                f"load {self.load}; machine speed (bench.cpu.speed) {self.speed}")


def _lua(body: bytes, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def _lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, script: Path, connections: int, seconds: float) -> tuple[int, float, float, float, int]:
    """(requests, requests/s, p50 ms, p99 ms, non-2xx answers) of one wrk run."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    out = subprocess.run([exe, "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> tuple[int, float, float, float, int]:
    """(requests, requests/s, p50 ms, p99 ms, non-2xx answers and socket errors) from wrk --latency's output."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    # The "Latency Distribution" lines ("     50%    3.10ms"), anchored at a line's start: the thread
    # stats above them end in percentages too ("... 89.50%"), which an unanchored "50%" also matched.
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return requests, rate, p50, p99, errors


def measure(app: App, pids: list[int], work: Path, connections: int = 8, seconds: float = 10.0,
            warmup: float = 2.0) -> Single:
    event = bulk([f"single-{app.proc.pid}"], 1)["events"][0]
    script = work / "post_event.lua"
    script.write_text(_lua(orjson.dumps(event), app.auth()))
    url = f"{app.base}/events"
    wrk(url, script, connections, warmup)  # warm: connections, config cached, token seen
    before = speed()
    with Meter(pids) as m:
        requests, rate, p50, p99, errors = wrk(url, script, connections, seconds)
    result = Single(connections, seconds, requests, rate, p50, p99, errors, m.other, load(),
                    f"{before:.0f} -> {speed():.0f} ms")
    if errors:
        raise SystemExit(f"{result.line()}: the service answered errors under load")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    with service("bench-single-") as (work, stack, app):
        pids = [app.proc.pid, stack.running["redis"].proc.pid]
        print(measure(app, pids, work, args.connections, args.seconds).line())


if __name__ == "__main__":
    main()
