"""Publish-path benchmark: bulk batches through validate -> enrich -> filter -> Redis Streams,
beside redis-py's pipelined XADD of the same payloads on the same server, in the same run.

    python -m bench.publish_path [--events 20000] [--batch 1000] [--rounds 3]

Rounds alternate (raw, pipeline, raw, pipeline, ...) so machine noise hits both; the median of
each is reported with the ratio. Starts its own Redis and Azurite on free ports.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

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


async def raw_xadd(client: Redis, key: str, payloads: list[tuple[str, str, bytes]], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(payloads), batch):
        pipe = client.pipeline(transaction=False)
        for t, s, e in payloads[i:i + batch]:
            pipe.xadd(key, {"t": t, "s": s, "f": "native", "e": e})
        await pipe.execute()
    return len(payloads) / (time.perf_counter() - start)


async def through_pipeline(producer: EventProducer, events: list[dict[str, object]], batch: int) -> float:
    pipeline = producer.services.pipeline
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        results = await pipeline.publish_raw(events[i:i + batch], PublishContext(pointer_prefix=("events",)))
        assert all(r.status == "accepted" for r in results), results[0]
    return len(events) / (time.perf_counter() - start)


async def run(args: argparse.Namespace, settings: Settings) -> None:
    events = make_events(args.events, "bench-tenant")
    ingested = now_iso()
    payloads = [(ev.eventType.value, ev.source.value, ev.to_json())
                for ev in (enrich(EventIn.model_validate(e), ingested_at=ingested) for e in events)]
    raw_client = Redis(host=settings.redis_host, port=settings.redis_port)
    producer = EventProducer.from_settings(settings)
    await through_pipeline(producer, events[: args.batch], args.batch)  # warm: config cached, table created
    raw_rates, pipe_rates = [], []
    for _ in range(args.rounds):
        await raw_client.delete("bench:raw")
        raw_rates.append(await raw_xadd(raw_client, "bench:raw", payloads, args.batch))
        pipe_rates.append(await through_pipeline(producer, events, args.batch))
    await producer.close()
    await raw_client.aclose()
    raw, pipe = statistics.median(raw_rates), statistics.median(pipe_rates)
    size = sum(len(p[2]) for p in payloads) / len(payloads)
    print(f"events: {args.events} per round, batches of {args.batch}, {args.rounds} rounds, "
          f"{size:.0f} bytes per enriched event")
    print(f"raw redis-py pipelined XADD : {raw:>10,.0f} events/s  (rounds: {', '.join(f'{r:,.0f}' for r in raw_rates)})")
    print(f"validate->enrich->filter->Redis: {pipe:>7,.0f} events/s  (rounds: {', '.join(f'{r:,.0f}' for r in pipe_rates)})")
    print(f"ratio pipeline/raw: {pipe / raw:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tune_for_throughput()  # the app's process settings (function_app.py does the same at import)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    redis = services.start("redis", work / "redis")
    azurite = services.start("azurite", work / "azurite")
    try:
        settings = Settings.from_env({**redis.settings, **azurite.settings})
        asyncio.run(run(args, settings))
    finally:
        services.stop(redis.proc)
        services.stop(azurite.proc)


if __name__ == "__main__":
    main()
