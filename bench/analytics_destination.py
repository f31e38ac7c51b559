"""Events/s through the analytics destination vs raw Azure Tables transactions of the same entities.

    python -m bench.analytics_destination [--events 6000] [--batch 1000] [--rounds 3]

Starts Azurite on a free port. Both sides write the same entities (the destination's own
`to_entity` of the same events: keys, columns, payload) to the same table, upserts in entity
group transactions of 100 operations per partition, 8 transactions in flight (the destination's
CONCURRENCY): "raw" is `TableClient.submit_transaction` of full 100-entity transactions of one
partition; the destination side is `publish` in calls of `--batch` events (one tenant, as the
pipeline hands it a bulk request's chunks), which groups by partition (4 shards per tenant-hour)
itself and writes the tenant-hour index row first. Rounds alternate sides; medians and the ratio are
printed, with each side's CPU per event: this process's (the client's) and Azurite's (from /proc),
and the load average, since the machine may be shared.

Which side waits for which: the raw side is bound by the client's CPU (the SDK's `submit_transaction`
encodes and parses each transaction with the `email` package, ~350 us per entity against Azurite's
~300 us); the destination writes its transactions with shared/storage/table_transactions.py (the same
request bytes, ~60 us per entity in all), so Azurite's CPU bounds it (docs/performance.md).

Run standalone, the process first applies the service's garbage-collector settings
(`tune_for_throughput`, as function_app.py does at import and `python -m bench` does before its
sections), so both ways of running measure the same process settings; both sides share them.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from bench.cpu import Meter, SideBySide, load
from localdev import services
from shared.app.gc_tuning import tune_for_throughput
from shared.core.destination_options import AnalyticsOptions
from shared.core.enrich import enrich, now_iso
from shared.core.events import Event, EventIn
from shared.core.settings import Settings
from shared.core.streamconfig import StreamConfig
from shared.destinations.analytics import CONCURRENCY, MAX_BATCH_OPS, AnalyticsDestination, to_entity
from shared.destinations.base import Chunk
from shared.storage.clients import CLIENT_OPTIONS


def build_events(n: int, tenant: str) -> list[Event]:
    at = now_iso()
    return [enrich(EventIn.model_validate({
        "tenantId": tenant, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
        "entityId": f"risk-{i}", "entityType": "risk",
        "data": {"score": i % 25, "owner": "alice@example.com", "title": f"Risk {i}", "controls": ["c1", "c2"]},
    }), ingested_at=at) for i in range(n)]


@dataclass
class AnalyticsFigures(SideBySide):
    events: int
    load: str
    raw_cpu: tuple[float, float]  # CPU seconds over all rounds: (this process, Azurite)
    dest_cpu: tuple[float, float]

    def lines(self) -> list[str]:
        per = self.events * len(self.raw_rates) / 1e6

        def cpu(side: str, own: float, azurite: float) -> str:
            return f"{side} CPU per event: {own / per:.0f} us client + {azurite / per:.0f} us Azurite"

        return [*self.rate_lines("raw Azurite 100-entity transactions", "AnalyticsDestination.publish"),
                cpu("raw        ", *self.raw_cpu), cpu("destination", *self.dest_cpu),
                f"ratio destination/raw: {self.ratio:.0%} ({self.events} events per round; load {self.load})"]


async def raw_round(service: TableServiceClient, table_name: str, events: list[Event]) -> float:
    table = service.get_table_client(table_name)
    by_pk: dict[str, list[dict]] = {}
    for ev in events:
        entity, _ = to_entity(ev, AnalyticsOptions().shards, False)
        by_pk.setdefault(entity["PartitionKey"], []).append(entity)
    txs = [ops[i:i + MAX_BATCH_OPS] for ops in by_pk.values() for i in range(0, len(ops), MAX_BATCH_OPS)]
    sem = asyncio.Semaphore(CONCURRENCY)

    async def submit(tx: list[dict]) -> None:
        async with sem:
            await table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in tx])

    start = time.perf_counter()
    await asyncio.gather(*(submit(tx) for tx in txs))
    return len(events) / (time.perf_counter() - start)


async def dest_round(dest: AnalyticsDestination, events: list[Event], batch: int) -> float:
    stream = StreamConfig(tenantId=events[0].tenantId, destinations=[{"type": "analytics"}])  # type: ignore[list-item]
    options = AnalyticsOptions()
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        chunks = [Chunk(stream, options, events[j:j + stream.batchSize])
                  for j in range(i, min(i + batch, len(events)), stream.batchSize)]
        for dels in await dest.publish(chunks):
            assert all(d.status == "delivered" for d in dels), dels[0]
    return len(events) / (time.perf_counter() - start)


async def measure(settings: Settings, azurite_pid: int, events_n: int, batch: int, rounds: int) -> AnalyticsFigures:
    service = TableServiceClient.from_connection_string(settings.storage_connection_string, **CLIENT_OPTIONS)
    name = "bench" + uuid.uuid4().hex[:8]
    await service.create_table(name)
    dest = AnalyticsDestination(service, name)
    await dest.publish([Chunk(StreamConfig(tenantId="warm-tenant"), AnalyticsOptions(),
                              build_events(10, "warm-tenant"))])
    raw_rates, dest_rates = [], []
    raw_cpu, dest_cpu = [0.0, 0.0], [0.0, 0.0]
    for r in range(rounds):  # new events (new rows) every round and side
        events = build_events(events_n, f"raw-{r}")
        with Meter([azurite_pid]) as m:
            raw_rates.append(await raw_round(service, name, events))
        raw_cpu[0] += m.own
        raw_cpu[1] += m.other
        events = build_events(events_n, f"dest-{r}")
        with Meter([azurite_pid]) as m:
            dest_rates.append(await dest_round(dest, events, batch))
        dest_cpu[0] += m.own
        dest_cpu[1] += m.other
    await service.close()
    return AnalyticsFigures(raw_rates, dest_rates, events_n, load(), (raw_cpu[0], raw_cpu[1]),
                            (dest_cpu[0], dest_cpu[1]))


def run(events: int, batch: int, rounds: int) -> AnalyticsFigures:
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        azurite = services.start("azurite", Path(tmp))
        try:
            return asyncio.run(measure(Settings.from_env(azurite.settings), azurite.proc.pid, events, batch, rounds))
        finally:
            services.stop(azurite.proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tune_for_throughput()  # the service's process settings (see the docstring)
    print("\n".join(run(args.events, args.batch, args.rounds).lines()))


if __name__ == "__main__":
    main()
