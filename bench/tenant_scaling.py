"""Throughput by number of tenants per request, through the local runner over HTTP.

    python -m bench.tenant_scaling [--requests 4] [--rounds 15] [--events 500]

Starts the local stand-ins and `python -m devhost` (the app as its own process, as the system tier
does), then posts `POST /events/bulk` requests of `--events` events on one connection, the
tenants of each request drawn round-robin from a pool of 1, 10, 100 or 500 tenants (a pool of 500
names 500 tenants in every request). Pools are measured side by side: each round runs every pool
in turn, so machine noise hits all of them; the median per pool is printed with its ratio to the
1-tenant pool. Every result must be `accepted` (a failed or parked delivery is printed and fails
the run). Beside the rate, the CPU the runner and Redis spent per event (from /proc), and this
process's (the HTTP client's): on a machine shared with other work the rate moves with their load,
the CPU per event much less. Each round also writes the 1-tenant pool's events, enriched as the
service stores them, with redis-py's sync pipelined XADD (hiredis) to the same Redis: the floor the
bulk path is compared with (by CPU: runner + Redis against this process + Redis).

Then the cost of a tenant the instance has never seen: the first event of a new tenant versus
the next one of the same tenant (single `POST /events`), and a bulk naming 500 new tenants
versus the same bulk again.

The per-tenant rate limit is raised for the load (the limiter still runs on every request).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.cpu import Meter
from shared.core.enrich import enrich, now_iso
from shared.core.events import EventIn
from tests.system.harness import App, Stack, app_env, app_running, own_stack, start_app

STACK = ("redis", "azurite", "cosmos", "kafka")
POOLS = (1, 10, 100, 500)
TYPES = ("RISK_UPDATED", "CONTROL_TESTED", "ASSESSMENT_STARTED", "USER_ACTION")


def bulk(tenants: list[str], n: int, start: int = 0) -> dict[str, Any]:
    return {"events": [
        {"tenantId": tenants[(start + i) % len(tenants)], "eventType": TYPES[i % 4], "source": "MCP_SERVER",
         "action": "UPDATE", "entityId": f"risk-{i % 500}", "entityType": "risk",
         "data": {"score": i % 25, "status": "open", "owner": "grc-team", "changes": {"score": [3, 4]}},
         "metadata": {"requestId": f"req-{i}", "region": "westeurope"}} for i in range(n)]}


def post_bulk(app: App, body: dict[str, Any] | bytes, headers: dict[str, str]) -> None:
    """One bulk request; every event must come back accepted and delivered. The client's JSON is not
    the service's cost: the body is serialised once beforehand, and the response (500 results) is
    read with orjson (the standard library's parser behind httpx's `json()` took 1.9 us per event of
    a 500-result response against orjson's 0.6, `timeit`; the client is part of the request chain:
    one connection)."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    r = app.client.post("/events/bulk", content=content, headers={**headers, "content-type": "application/json"})
    doc = orjson.loads(r.content)
    if r.status_code != 200 or doc["accepted"] != doc["total"] or any(
            d["status"] != "delivered" for res in doc["results"] for d in res.get("destinations", [])):
        raise SystemExit(f"bulk not fully delivered: HTTP {r.status_code}, "
                         f"{ {k: doc.get(k) for k in ('accepted', 'failed', 'filtered', 'rejected')} }")


def raw_payloads(body: dict[str, Any]) -> list[tuple[str, bytes, bytes, bytes]]:
    """(stream key, type, source, payload) of a bulk's events, enriched as the service would store them."""
    at = now_iso()
    out = []
    for e in body["events"]:
        ev = enrich(EventIn.model_validate(e), ingested_at=at)
        out.append((f"bench:raw:{{{ev.tenantId}}}", ev.eventType.value.encode(), ev.source.value.encode(), ev.to_json()))
    return out


def raw_xadd(client: redis.Redis, payloads: list[tuple[str, bytes, bytes, bytes]]) -> None:
    """redis-py's sync pipeline (hiredis parser and packer) of plain XADDs: the floor a producer
    writing the same payloads to the same streams costs."""
    pipe = client.pipeline(transaction=False)
    for key, t, s, e in payloads:
        pipe.xadd(key, {"t": t, "s": s, "f": b"native", "e": e})
    pipe.execute()


@dataclass
class Side:
    """One column of the side-by-side rounds: events/s per round, CPU seconds over all rounds."""

    rates: list[float] = field(default_factory=list)
    service_cpu: float = 0.0  # runner + Redis (raw: this process + Redis)
    client_cpu: float = 0.0  # this process (the HTTP client; raw: included in service_cpu)
    redis_cpu: float = 0.0  # Redis' share of service_cpu
    events: int = 0

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def us_per_event(self) -> float:
        return self.service_cpu / self.events * 1e6


@dataclass
class Scaling:
    pools: dict[int, Side]
    raw: Side
    requests: int
    rounds: int
    events: int
    first_ms: float = 0.0
    next_ms: float = 0.0
    cold_bulk_ms: float = 0.0
    warm_bulk_ms: float = 0.0

    def ratio(self, pool: int) -> float:
        return self.pools[pool].rate / self.pools[1].rate

    def cpu_ratio(self, pool: int) -> float:
        return self.pools[1].us_per_event / self.pools[pool].us_per_event

    def lines(self, samples: int) -> list[str]:
        out = [f"bulk of {self.events} events per request, {self.requests} requests per pool and round, "
               f"{self.rounds} rounds, one connection",
               f"{'tenants in pool':>16} | {'events/s':>9} | ratio to 1 tenant | us CPU/event, runner+Redis (ratio) "
               f"| of which Redis | client us/event | rounds (events/s)"]
        for p, side in self.pools.items():
            out.append(f"{p:>16} | {side.rate:>9,.0f} | {self.ratio(p):>17.0%} | {side.us_per_event:>19.1f} "
                       f"({self.cpu_ratio(p):>4.0%}){'':>8} | {side.redis_cpu / side.events * 1e6:>14.1f} | "
                       f"{side.client_cpu / side.events * 1e6:>15.1f} | " + ", ".join(f"{r:,.0f}" for r in side.rates))
        raw = self.raw
        out.append(f"{'raw sync XADD':>16} | {raw.rate:>9,.0f} | {'':>17} | {raw.us_per_event:>19.1f} "
                   f"(client + Redis)      | {raw.redis_cpu / raw.events * 1e6:>14.1f} | {'':>15} | "
                   + ", ".join(f"{r:,.0f}" for r in raw.rates))
        one = self.pools[1]
        out.append(f"bulk through the runner (1 tenant) / raw sync pipelined XADD (hiredis) of the same payloads: "
                   f"{one.rate / raw.rate:.1%} wall-clock, {raw.us_per_event / one.us_per_event:.1%} by CPU")
        out.append(f"never-seen tenant, single POST /events (median of {samples}): first event {self.first_ms:.1f} ms, "
                   f"next event {self.next_ms:.1f} ms, first costs {self.first_ms - self.next_ms:+.1f} ms")
        out.append(f"bulk naming {self.events} never-seen tenants: {self.cold_bulk_ms:.0f} ms; the same tenants "
                   f"again: {self.warm_bulk_ms:.0f} ms "
                   f"({(self.cold_bulk_ms - self.warm_bulk_ms) / self.events:+.2f} ms per new tenant)")
        return out


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
        app = start_app(bench_env(stack, work / "app"), work / "app")
        try:
            scaling = measure(app, stack, args.requests, args.rounds, args.events, args.samples)
            print("\n".join(scaling.lines(args.samples)))
        finally:
            app.stop()
            failures = delivery_failures(app)
            if failures:
                print(f"runner log: {len(failures)} delivery failure line(s), e.g. {failures[0][:200]}")
    finally:
        stack.stop()


@contextmanager
def service(prefix: str, *args: str) -> Iterator[tuple[Path, Stack, App]]:
    """A temporary folder, the stand-ins (STACK) and the service in the runner (`args`) on bench_env's
    settings, all gone on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        with own_stack(work / "stack", STACK) as stack, \
                app_running(bench_env(stack, work / "app"), work / "app", *args) as app:
            yield work, stack, app


def bench_env(stack: Stack, work: Path) -> dict[str, str]:
    """The app's settings for load: the per-tenant rate limit raised (the limiter still runs on every request)."""
    return app_env(stack, work, RATE_LIMIT_EVENTS_PER_SECOND="1000000", RATE_LIMIT_BURST="1000000")


def delivery_failures(app: App) -> list[str]:
    return [ln for ln in app.log().splitlines() if "failed" in ln and "event(s)" in ln]


def measure(app: App, stack: Stack, requests: int, rounds: int, events: int, samples: int) -> Scaling:
    headers = app.auth()  # an admin identity (every tenant); minted once, reused
    pids = [app.proc.pid, stack.running["redis"].proc.pid]
    redis_pid = stack.running["redis"].proc.pid
    pools = {p: [f"pool{p}-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(p)] for p in POOLS}
    bodies = {p: [orjson.dumps(bulk(tenants, events, start=r * events)) for r in range(requests)]
              for p, tenants in pools.items()}
    raw_calls = [raw_payloads(bulk(pools[1], events, start=r * events)) for r in range(requests)]
    raw_client = stack.redis()
    for p in pools:  # warm: every tenant seen once, connections open
        post_bulk(app, bodies[p][0], headers)
    raw_xadd(raw_client, raw_calls[0])
    sides = {p: Side() for p in POOLS}
    raw = Side()
    for _ in range(rounds):
        for p in POOLS:
            side = sides[p]
            with Meter(pids) as m, Meter([redis_pid]) as r:
                for body in bodies[p]:
                    post_bulk(app, body, headers)
            side.rates.append(requests * events / m.wall)
            side.service_cpu += m.other
            side.client_cpu += m.own
            side.redis_cpu += r.other
            side.events += requests * events
        with Meter([redis_pid]) as m:
            for call in raw_calls:
                raw_xadd(raw_client, call)
        raw.rates.append(requests * events / m.wall)
        raw.service_cpu += m.cpu
        raw.redis_cpu += m.other
        raw.events += requests * events
    raw_client.close()
    scaling = Scaling(sides, raw, requests, rounds, events)
    scaling.first_ms, scaling.next_ms = first_event_cost(app, headers, samples)
    scaling.cold_bulk_ms, scaling.warm_bulk_ms = new_tenants_bulk(app, headers, events)
    return scaling


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
