"""Backfill throughput beside the live publish rate, and what a running backfill does to live latency.

    python -m bench.backfill [--events 20000] [--seconds 10] [--live-rate 100]

Starts the local stand-ins and the app in the local runner (as the system tier does), then:
1. stores `--events` history events of one tenant through `POST /events/bulk` (destination analytics,
   500 per request);
2. live traffic of another tenant (destinations redis and kafka): single `POST /events` at
   `--live-rate` per second for `--seconds`, latency p50/p99, with no backfill running; then the live
   publish rate of bulks of 500 into the same destinations;
3. the same single events while a backfill of the history into Kafka runs at the throttle the sample
   settings deploy (BACKFILL_EVENTS_PER_SECOND), then the backfill's own rate when it has ended;
4. the app started again with the throttle out of the way (100,000 events/s): the backfill's raw
   rate, and live latency while it runs.
Every live event must be accepted and every backfill must complete.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.system.harness import SAMPLE_SETTINGS, App, Stack, app_env, create_topic, own_stack, start_app, wait_for

STACK = ("redis", "azurite", "cosmos", "kafka")
TYPES = ("RISK_UPDATED", "CONTROL_TESTED", "ASSESSMENT_STARTED", "USER_ACTION")
UNLIMITED = "1000000"  # the API's rate limit, out of the way of the load
UNTHROTTLED = "100000"  # BACKFILL_EVENTS_PER_SECOND's maximum


def history(app: App, tenant: str, n: int, end: datetime) -> float:
    """Store `n` events over the 10 hours before `end`; the bulk publish rate (events/s)."""
    r = app.put(f"/stream-config/{tenant}", json={"destinations": [{"type": "analytics"}]})
    assert r.status_code in (200, 201), r.text
    step = timedelta(hours=10) / n
    t0 = time.perf_counter()
    for first in range(0, n, 500):
        events = [{"tenantId": tenant, "eventType": TYPES[i % 4], "source": "ARCHER_GRC", "action": "UPDATE",
                   "entityId": f"risk-{i % 97}", "entityType": "risk", "eventId": f"h-{i:06d}",
                   "timestamp": (end - timedelta(hours=10) + step * i).isoformat(),
                   "data": {"n": i, "score": i % 25, "status": "open", "owner": "grc-team"}}
                  for i in range(first, min(n, first + 500))]
        r = app.post("/events/bulk", json={"events": events})
        assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text[:300]
    return n / (time.perf_counter() - t0)


def live(app: App, tenant: str, rate: float, seconds: float, stop: threading.Event | None = None) -> list[float]:
    """Single POST /events at `rate`/s for `seconds` or until `stop` is set (one client, paced);
    latencies in ms."""
    headers = app.auth()
    out: list[float] = []
    interval, nxt = 1.0 / rate, time.perf_counter()
    end = nxt + seconds
    while nxt < end and not (stop is not None and stop.is_set()):
        time.sleep(max(0.0, nxt - time.perf_counter()))
        body = {"tenantId": tenant, "eventType": "CONTROL_FAILED", "source": "BACKEND_API", "action": "TEST",
                "entityId": "ctl-7", "data": {"result": "fail", "n": len(out)}}
        t0 = time.perf_counter()
        r = app.client.post("/events", json=body, headers=headers)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 201 and all(d["status"] == "delivered" for d in r.json()["destinations"]), r.text
        nxt += interval
    return out


def bulk_rate(app: App, tenant: str, n: int) -> float:
    """Live bulk publishing into the destination the backfill writes to (500 per request): events/s."""
    headers = app.auth()
    t0 = time.perf_counter()
    for first in range(0, n, 500):
        events = [{"tenantId": tenant, "eventType": TYPES[i % 4], "source": "MCP_SERVER", "action": "UPDATE",
                   "entityId": f"risk-{i % 97}", "entityType": "risk",
                   "data": {"n": i, "score": i % 25, "status": "open", "owner": "grc-team"}}
                  for i in range(first, first + 500)]
        r = app.client.post("/events/bulk", json={"events": events}, headers=headers)
        assert r.status_code == 200 and r.json()["accepted"] == 500, r.text[:300]
    return n / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else values[0]


def backfill(app: App, tenant: str, end: datetime) -> str:
    r = app.post(f"/backfills/{tenant}", json={"from": (end - timedelta(hours=10)).isoformat(),
                                                "to": end.isoformat(), "destination": "kafka"})
    assert r.status_code == 202, r.text
    return str(r.json()["jobId"])


def finished(app: App, tenant: str, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        j = app.get(f"/backfills/{tenant}/{job_id}").json()
        return j if j["state"] in ("completed", "failed", "cancelled") else None

    job = wait_for(done, timeout, 0.5, "backfill ended")
    assert job["state"] == "completed", job
    return job


def measure(stack: Stack, work: Path, args: argparse.Namespace, throttle: str, label: str,
            seed: bool, hist: str, live_t: str, end: datetime) -> dict[str, Any]:
    env = app_env(stack, work / label, SYSTEM_PERFORMANCE_EVENTS="false", BACKFILL_EVENTS_PER_SECOND=throttle,
                  RATE_LIMIT_EVENTS_PER_SECOND=UNLIMITED, RATE_LIMIT_BURST=UNLIMITED)
    app = start_app(env, work / label)
    out: dict[str, Any] = {}
    try:
        if seed:
            out["history"] = history(app, hist, args.events, end)
            live(app, live_t, args.live_rate, 2)  # warm: connections, config caches, producers
            out["alone"] = live(app, live_t, args.live_rate, args.seconds)
            out["bulk"] = bulk_rate(app, live_t, 10_000)
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        create_topic(stack.broker, topic)
        r = app.put(f"/stream-config/{hist}", json={"topics": [topic], "destinations": [
            {"type": "analytics"}, {"type": "kafka"}]})
        assert r.status_code == 200, r.text
        t0 = time.perf_counter()
        job_id = backfill(app, hist, end)
        result: dict[str, Any] = {}
        ended = threading.Event()

        def wait() -> None:
            result.update(finished(app, hist, job_id))
            result["wall"] = args.events / (time.perf_counter() - t0)
            ended.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.5)  # the first chunk is under way
        out["during"] = live(app, live_t, args.live_rate, args.seconds, stop=ended)  # only while it runs
        waiter.join()
        out["job"] = result
    finally:
        app.stop()
    return out


def run(args: argparse.Namespace, work: Path) -> None:
    with own_stack(work / "stack", STACK) as stack:
        hist, live_t = f"bench-hist-{uuid.uuid4().hex[:6]}", f"bench-live-{uuid.uuid4().hex[:6]}"
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        topic = f"bench-live-{uuid.uuid4().hex[:6]}"
        create_topic(stack.broker, topic)
        default = SAMPLE_SETTINGS["BACKFILL_EVENTS_PER_SECOND"]
        # The live tenant's config is stored before the first app starts (the same stack serves both).
        setup = start_app(app_env(stack, work / "setup"), work / "setup")
        try:
            r = setup.put(f"/stream-config/{live_t}", json={"topics": [topic], "destinations": [
                {"type": "redis"}, {"type": "kafka"}]})
            assert r.status_code == 201, r.text
        finally:
            setup.stop()
        throttled = measure(stack, work, args, default, "throttled", True, hist, live_t, end)
        raw = measure(stack, work, args, UNTHROTTLED, "unthrottled", False, hist, live_t, end)
    alone = throttled["alone"]
    print(f"{args.events:,} history events (stored at {throttled['history']:,.0f} events/s through the bulk API, "
          f"destination analytics)")
    print(f"live publish rate, bulk of 500 into redis + kafka: {throttled['bulk']:,.0f} events/s")
    print(f"live latency: single POST /events at {args.live_rate:.0f}/s (one client, destinations redis + kafka), "
          f"{args.seconds:.0f} s or while the backfill runs")
    print(f"{'':>46} | backfill events/s (job / wall) | live p50 ms | live p99 ms | live requests")
    print(f"{'no backfill':>46} | {'':>30} | {pct(alone, 50):>11.1f} | {pct(alone, 99):>11.1f} | {len(alone):>13}")
    for label, res, setting in (("backfill into kafka, default throttle", throttled, default),
                                ("backfill into kafka, throttle off", raw, UNTHROTTLED)):
        lat = res["during"]
        rate = f"{res['job']['progress']['ratePerSecond']:,.0f} / {res['job']['wall']:,.0f}"
        print(f"{label + f' ({int(setting):,}/s)':>46} | {rate:>30} | {pct(lat, 50):>11.1f} | "
              f"{pct(lat, 99):>11.1f} | {len(lat):>13}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--live-rate", type=float, default=100.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
