"""Publish-path benchmark: bulk batches through validate -> enrich -> filter -> Redis Streams,
beside redis-py's pipelined XADD of the same payloads on the same server, in the same run.

    python -m bench.publish_path [--events 20000] [--batch 1000] [--rounds 5]

Rounds alternate (raw, pipeline, raw, pipeline, ...) so machine noise hits both; the median of
each is reported with the ratio, and beside it the CPU each side spent (this process plus Redis,
over all rounds): on a machine whose cores other work shares, the CPU ratio moves much less than
the wall-clock one. Starts its own Redis and Azurite on free ports.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from bench.cpu import Meter, SideBySide, load, per_round
from localdev import services
from shared.app.gc_tuning import tune_for_throughput
from shared.app.producer import EventProducer
from shared.core.enrich import enrich, now_iso
from shared.core.events import EventIn
from shared.core.settings import Settings
from shared.delivery.pipeline import PublishContext


def make_events(n: int, tenant: str) -> list[dict[str, object]]:
    types = ["RISK_UPDATED", "CONTROL_TESTED", "ASSESSMENT_STARTED", "USER_ACTION"]
    return [{"tenantId": tenant, "eventType": types[i % 4], "source": "MCP_SERVER", "action": "UPDATE",
             "entityId": f"risk-{i % 500}", "entityType": "risk",
             "data": {"score": i % 25, "status": "open", "owner": "grc-team", "changes": {"score": [3, 4]}},
             "metadata": {"requestId": f"req-{i}", "region": "westeurope"}} for i in range(n)]


async def raw_xadd(client: Redis, key: str, payloads: list[tuple[str, str, bytes]], batch: int) -> None:
    for i in range(0, len(payloads), batch):
        pipe = client.pipeline(transaction=False)
        for t, s, e in payloads[i:i + batch]:
            pipe.xadd(key, {"t": t, "s": s, "f": "native", "e": e})
        await pipe.execute()


async def through_pipeline(producer: EventProducer, events: list[dict[str, object]], batch: int) -> None:
    pipeline = producer.services.pipeline
    for i in range(0, len(events), batch):
        results = await pipeline.publish_raw(events[i:i + batch], PublishContext(pointer_prefix=("events",)))
        assert all(r.status == "accepted" for r in results), results[0]


@dataclass
class Figures(SideBySide):
    events: int  # per round
    rounds: int
    raw_cpu: float  # CPU seconds over all rounds: this process + Redis
    pipe_cpu: float
    event_bytes: float

    @property
    def cpu_ratio(self) -> float:
        """Events per CPU-second through the pipeline over the same for raw XADD."""
        return self.raw_cpu / self.pipe_cpu

    def lines(self) -> list[str]:
        per = self.events * self.rounds
        return [
            f"raw redis-py pipelined XADD    : {self.raw:>9,.0f} events/s, {self.raw_cpu / per * 1e6:5.1f} us "
            f"CPU/event ({per_round(self.raw_rates)})",
            f"validate->enrich->filter->Redis: {self.ours:>9,.0f} events/s, {self.pipe_cpu / per * 1e6:5.1f} us "
            f"CPU/event ({per_round(self.our_rates)})",
            f"ratio pipeline/raw: {self.ratio:.1%} wall-clock, {self.cpu_ratio:.1%} by CPU "
            f"({self.event_bytes:.0f} bytes per enriched event)",
        ]


async def measure(settings: Settings, redis_pid: int, events_n: int = 20_000, batch: int = 1000,
                  rounds: int = 5) -> Figures:
    events = make_events(events_n, "bench-tenant")
    ingested = now_iso()
    payloads = [(ev.eventType.value, ev.source.value, ev.to_json())
                for ev in (enrich(EventIn.model_validate(e), ingested_at=ingested) for e in events)]
    raw_client = Redis(host=settings.redis_host, port=settings.redis_port)
    producer = EventProducer.from_settings(settings)
    await through_pipeline(producer, events[:batch], batch)  # warm: config cached, table created
    raw_rates, pipe_rates = [], []
    raw_cpu = pipe_cpu = 0.0
    for _ in range(rounds):
        await raw_client.delete("bench:raw")
        with Meter([redis_pid]) as m:
            await raw_xadd(raw_client, "bench:raw", payloads, batch)
        raw_rates.append(events_n / m.wall)
        raw_cpu += m.cpu
        with Meter([redis_pid]) as m:
            await through_pipeline(producer, events, batch)
        pipe_rates.append(events_n / m.wall)
        pipe_cpu += m.cpu
    await producer.close()
    await raw_client.aclose()
    size = sum(len(p[2]) for p in payloads) / len(payloads)
    return Figures(raw_rates, pipe_rates, events_n, rounds, raw_cpu, pipe_cpu, size)


def run(events: int, batch: int, rounds: int) -> Figures:
    """Start Redis and Azurite, measure, stop them."""
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    redis = services.start("redis", work / "redis")
    azurite = services.start("azurite", work / "azurite")
    try:
        settings = Settings.from_env({**redis.settings, **azurite.settings})
        return asyncio.run(measure(settings, redis.proc.pid, events, batch, rounds))
    finally:
        services.stop(redis.proc)
        services.stop(azurite.proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tune_for_throughput()  # the app's process settings (function_app.py does the same at import)
    before = load()
    figures = run(args.events, args.batch, args.rounds)
    print(f"events: {args.events} per round, batches of {args.batch}, {args.rounds} rounds; "
          f"load average {before} -> {load()}")
    print("\n".join(figures.lines()))


if __name__ == "__main__":
    main()
