"""`make bench`: every figure of the publish path and its targets (issue 13), side by side in one run.

    python -m bench [--rounds 12] [--seconds 10]

1. In process: validate -> enrich -> filter -> Redis against redis-py's async pipelined XADD of the
   same payloads (bench/publish_path.py).
2. Through the local runner over HTTP (the app as its own process, on the local stand-ins):
   bulks of 500 events by tenants per request (1, 10, 100, 500) beside redis-py's sync pipelined
   XADD (hiredis) of the same payloads (bench/tenant_scaling.py); single `POST /events` at 8
   connections with wrk (bench/single_post.py); the runner's resident memory after all of it
   (more than 100,000 events).
3. The Kafka destination against raw confluent-kafka produce + flush (bench/kafka_destination.py).
4. The analytics destination against raw Azurite 100-entity transactions (bench/analytics_destination.py).
5. The monitor pass for 10,000 tenants seen, 1,000 active (bench/monitor_pass.py).

Each side of a ratio is measured in the same run, rounds alternating, with the load average printed
beside it: the machine is shared, so a wall-clock ratio moves with other work; where the client and
the server compete for the cores the CPU-time ratio is printed too. Each section also prints the
machine's speed (bench/cpu.py `speed`: CPU ms of a fixed pure-Python loop), which the load average
does not show: the same code's CPU per request moves with it. The summary at the end lists each
target, the figure, and whether it is met. It takes about a minute; CI does not run it.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import analytics_destination, kafka_destination, monitor_pass, publish_path, single_post, tenant_scaling
from bench.cpu import load, rss_mb, speed
from shared.app.gc_tuning import tune_for_throughput
from tests.system.harness import Stack, start_app

RSS_EVENTS = 100_000
KAFKA_ROUNDS = 7


def section(title: str) -> None:
    print(f"\n== {title} (load average {load()}; machine speed (bench.cpu.speed) {speed():.0f} ms)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12, help="rounds of the tenant-scaling bench")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of wrk load")
    args = ap.parse_args()
    tune_for_throughput()  # the in-process side runs with the app's process settings
    rows: list[tuple[str, str, str, bool, str]] = []  # target, figure, wanted, met, load

    section("1. in-process publish path")
    pp = publish_path.run(20_000, 1000, 5)
    print("\n".join(pp.lines()))
    rows.append(("in-process pipeline / raw async pipelined XADD", f"{pp.ratio:.0%} ({pp.cpu_ratio:.0%} by CPU)",
                 ">= 50 %", pp.ratio >= 0.5, load()))

    section("2. through the local runner over HTTP")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        stack = Stack(work / "stack").start(tenant_scaling.STACK)
        try:
            app = start_app(tenant_scaling.bench_env(stack, work / "app"), work / "app")
            try:
                rss_start = rss_mb(app.proc.pid)[0]
                pids = [app.proc.pid, stack.running["redis"].proc.pid]
                sc = tenant_scaling.measure(app, stack, 4, args.rounds, 500, 20)
                print("\n".join(sc.lines(20)))
                rows.append(("bulk, 500 tenants per request / 1 tenant", f"{sc.ratio(500):.0%} "
                             f"({sc.cpu_ratio(500):.0%} by CPU)", ">= 70 %", sc.ratio(500) >= 0.7, load()))
                one, raw = sc.pools[1], sc.raw
                rows.append(("bulk through the runner / raw sync pipelined XADD (hiredis)",
                             f"{one.rate / raw.rate:.0%} ({raw.us_per_event / one.us_per_event:.0%} by CPU)",
                             ">= 30 %", one.rate / raw.rate >= 0.3, load()))
                single = single_post.measure(app, pids, work, 8, args.seconds)
                print(single.line())
                rows.append(("single POST /events, 8 connections", f"{single.rate:,.0f} req/s, p99 "
                             f"{single.p99_ms:.1f} ms", ">= 2,000 req/s, p99 <= 15 ms",
                             single.rate >= 2000 and single.p99_ms <= 15, f"{single.load}; {single.speed}"))
                events = (sum(s.events for s in sc.pools.values()) + 4 * 500 + 2 * 20 + 2 * 500
                          + single.requests)
                rss, peak = rss_mb(app.proc.pid)
                maps = Path(f"/proc/{app.proc.pid}/maps").read_text()
                model = "loaded" if "onnxruntime" in maps else "not loaded (no vector destination, no /search)"
                print(f"runner RSS after {events:,} events: {rss:.0f} MB (peak {peak:.0f} MB; {rss_start:.0f} MB "
                      f"when it started); the local embedder's model: {model}")
                rows.append((f"runner RSS after {events:,} events", f"{rss:.0f} MB", "<= 250 MB", rss <= 250
                             and events >= RSS_EVENTS, load()))
            finally:
                app.stop()
                failures = tenant_scaling.delivery_failures(app)
                if failures:
                    print(f"runner log: {len(failures)} delivery failure line(s), e.g. {failures[0][:200]}")
        finally:
            stack.stop()

    section("3. Kafka destination")
    # 7 rounds, not 3: raw produce + flush swings 1.6-2.2x between rounds on this machine (the broker's
    # and the other core's state), and a median of 3 such rounds moved the ratio by +-0.1 for the same
    # code (docs/performance.md, Kafka section).
    kf = kafka_destination.run(rounds=KAFKA_ROUNDS)
    print("\n".join(kf.lines()))
    rows.append(("Kafka destination / raw produce + flush", f"{kf.ratio:.0%}", ">= 50 %", kf.ratio >= 0.5, kf.load))

    section("4. analytics destination")
    an = analytics_destination.run(6000, 1000, 3)
    print("\n".join(an.lines()))
    rows.append(("analytics destination / raw 100-entity transactions", f"{an.ratio:.0%}", ">= 80 %",
                 an.ratio >= 0.8, an.load))

    section("5. monitor pass")
    mp = monitor_pass.run()
    print("\n".join(mp.lines()))
    rows.append(("monitor pass, 10,000 seen / 1,000 active", f"{mp.seconds:.2f} s, {mp.table_gets} Table read(s)",
                 "<= 10 s, <= 1 Table query", mp.seconds <= 10 and mp.table_gets <= 1, load()))

    print(f"\n== summary (load average now {load()}; machine speed {speed():.0f} ms; 2 cores)")
    width = max(len(r[0]) for r in rows)
    print(f"{'target':<{width}} | {'measured':<28} | {'wanted':<28} | met | load (1/5/15 min)")
    for name, figure, wanted, met, at in rows:
        print(f"{name:<{width}} | {figure:<28} | {wanted:<28} | {'yes' if met else 'NO ':<3} | {at}")


if __name__ == "__main__":
    main()
