"""Entities/s deleted by the analytics retention purge vs raw Azure Tables delete transactions.

    python -m bench.analytics_purge [--tenants 8] [--events 1000] [--rounds 3] [--index-tenants 20]
                                    [--index-hours 720]

Starts Azurite on a free port. Every round writes, for each side, `--tenants` expired tenant-hours of
`--events` events each (the destination's own entities and index rows: 4 shards per tenant-hour, an
hour 40 days old, retentionDays 30), then deletes them all:

- "raw, sequential": list each partition's RowKeys and delete them with the SDK's
  `submit_transaction`, 100 per transaction, one request at a time: what `purge_expired` did before
  2026-12-07;
- "raw, 8 in flight": the same SDK transactions, CONCURRENCY (8) in flight;
- "purge_expired": the destination's purge (each tenant's expired index rows read, tenant-hours and
  their shards at once, each transaction through shared/storage/table_transactions.py,
  PURGE_CONCURRENCY (4) in flight: half the destination's limit, the other half left to live writes).

Then finding the expired hours in an index at scale (`--index-tenants` x `--index-hours` kept
tenant-hours, default 20 x 720: 30 days of hourly writes; Azurite's writes slow as one partition
grows, and 100 tenants took 13 minutes to write): the whole index listed, what the purge before
2026-12-07 read every run before deleting anything, against `purge_expired`'s one range query per
tenant.

Sides alternate within each round; medians, ratios and each side's CPU per entity (this process's and
Azurite's) are printed with the load average. On Azurite, single-threaded and on the same two cores,
the store's CPU bounds all sides; in Azure, where a transaction's round trip is the wait, the requests
in flight count for more.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from azure.data.tables.aio import TableClient, TableServiceClient

from bench.analytics_destination import build_events
from bench.cpu import Meter, load, per_round
from localdev import services
from shared.app.gc_tuning import tune_for_throughput
from shared.core.hours import hour_of
from shared.core.settings import Settings
from shared.destinations.analytics import (
    CONCURRENCY,
    INDEX_PARTITION,
    MAX_BATCH_OPS,
    AnalyticsDestination,
    partition_key,
    to_entity,
)
from shared.storage import table_transactions
from shared.storage.clients import CLIENT_OPTIONS

SHARDS = 4
AGE_DAYS = 40
RETENTION_DAYS = 30
SIDES = ("raw, sequential", "raw, 8 in flight", "purge_expired")


@dataclass
class Side:
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=lambda: [0.0, 0.0])  # this process, Azurite
    entities: int = 0


async def fill(table: TableClient, side: str, tenants: int, events: int) -> tuple[list[str], int]:
    """Expired tenant-hours of `side`: their entities and index rows; returns the partitions and the count."""
    at = time.time() - AGE_DAYS * 86_400
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))
    by_pk: dict[str, list[dict]] = {}
    index: list[str] = []
    for t in range(tenants):
        tenant = f"{side.split(',')[0].replace('_', '-')}-{uuid.uuid4().hex[:6]}-{t}"
        for ev in build_events(events, tenant):
            entity, _ = to_entity(ev.model_copy(update={"timestamp": stamp}), SHARDS, False)
            by_pk.setdefault(entity["PartitionKey"], []).append(entity)
        index.append(f"{tenant}_{hour_of(int(at * 1000))}_{SHARDS:02d}")
    sem = asyncio.Semaphore(CONCURRENCY)

    async def write(tx: list[dict]) -> None:
        async with sem:
            await table_transactions.upsert_all(table, tx)

    await asyncio.gather(*(write(ops[i:i + MAX_BATCH_OPS]) for ops in by_pk.values()
                           for i in range(0, len(ops), MAX_BATCH_OPS)))
    for i in range(0, len(index), MAX_BATCH_OPS):
        await table.submit_transaction([("upsert", {"PartitionKey": INDEX_PARTITION, "RowKey": rk})
                                        for rk in index[i:i + MAX_BATCH_OPS]])
    assert sorted(by_pk) == sorted(partition_key(*rk.rsplit("_", 2)[:2], s)
                                   for rk in index for s in range(SHARDS))
    return sorted(by_pk), tenants * events


async def raw_purge(table: TableClient, partitions: list[str], in_flight: int) -> None:
    sem = asyncio.Semaphore(in_flight)

    async def delete(pk: str, keys: list[str]) -> None:
        async with sem:
            await table.submit_transaction([("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in keys])

    for pk in partitions:
        keys = [e["RowKey"] async for e in table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": pk}, select=["RowKey"])]
        await asyncio.gather(*(delete(pk, keys[i:i + MAX_BATCH_OPS])
                               for i in range(0, len(keys), MAX_BATCH_OPS)))


async def measure(settings: Settings, azurite_pid: int, tenants: int, events: int,
                  rounds: int) -> dict[str, Side]:
    service = TableServiceClient.from_connection_string(settings.storage_connection_string, **CLIENT_OPTIONS)
    name = "purge" + uuid.uuid4().hex[:8]
    dest = AnalyticsDestination(service, name)
    table = await dest.table()

    out = {side: Side() for side in SIDES}
    for _ in range(rounds):
        for side in SIDES:
            partitions, n = await fill(table, side, tenants, events)
            with Meter([azurite_pid]) as m:
                if side == "purge_expired":
                    tenant_days = dict.fromkeys({pk.rsplit('_', 2)[0] for pk in partitions}, RETENTION_DAYS)
                    stats = await dest.purge_expired(tenant_days)
                    assert (stats["entities"], stats["hours"]) == (n, tenants), stats
                else:
                    await raw_purge(table, partitions, 1 if side == "raw, sequential" else CONCURRENCY)
            left = [e async for e in table.query_entities(
                "PartitionKey ne @pk", parameters={"pk": INDEX_PARTITION}, select=["RowKey"])]
            assert not left, f"{side}: {len(left)} entities left"
            if side != "purge_expired":  # the raw sides list no index: drop it for the next side's run
                for e in [e async for e in table.query_entities("PartitionKey eq @pk",
                                                                parameters={"pk": INDEX_PARTITION})]:
                    await table.delete_entity(INDEX_PARTITION, e["RowKey"])
            out[side].rates.append(n / m.wall)
            out[side].cpu[0] += m.own
            out[side].cpu[1] += m.other
            out[side].entities += n
    await service.delete_table(name)
    await service.close()
    return out


def lines(sides: dict[str, Side], tenants: int, events: int) -> list[str]:
    width = max(map(len, SIDES)) + 1
    median = {s: statistics.median(v.rates) for s, v in sides.items()}
    out = []
    for s, v in sides.items():
        per = v.entities / 1e6
        out.append(f"{s + ':':<{width}} {median[s]:,.0f} entities/s ({per_round(v.rates)}); CPU per entity "
                   f"{v.cpu[0] / per:.0f} us client + {v.cpu[1] / per:.0f} us Azurite")
    ours = median["purge_expired"]
    out.append(f"ratio purge_expired / raw 8 in flight: {ours / median['raw, 8 in flight']:.0%}; "
               f"/ raw sequential (the purge before): {ours / median['raw, sequential']:.0%} "
               f"({tenants} tenant-hours x {events} events per round; load {load()})")
    return out


async def index_scale(settings: Settings, azurite_pid: int, tenants: int, hours: int) -> list[str]:
    """What a run reads to find the expired hours when the index holds `hours` kept tenant-hours of
    each of `tenants` tenants (an hourly writer, retention 30 days) and none has expired: the whole
    index listed (what the purge before 2026-12-07 read, every run, before deleting anything) against
    `purge_expired` (a query of each tenant's expired range, each empty here). The deletions that
    follow are the same work either way (measured above)."""
    service = TableServiceClient.from_connection_string(settings.storage_connection_string, **CLIENT_OPTIONS)
    name = "purgeix" + uuid.uuid4().hex[:8]
    dest = AnalyticsDestination(service, name)
    table = await dest.table()
    now_ms = int(time.time() * 1000)
    names = [f"ix-{uuid.uuid4().hex[:6]}-{t}" for t in range(tenants)]
    kept = [f"{n}_{hour_of(now_ms - h * 3_600_000)}_{SHARDS:02d}" for n in names for h in range(hours)]
    sem = asyncio.Semaphore(2)  # Azurite slows as one partition grows: 8 at once timed out at 70,000 rows

    async def write(rows: list[str]) -> None:
        async with sem:
            await table_transactions.upsert_all(table, [{"PartitionKey": INDEX_PARTITION, "RowKey": rk}
                                                        for rk in rows])

    await asyncio.gather(*(write(kept[i:i + MAX_BATCH_OPS]) for i in range(0, len(kept), MAX_BATCH_OPS)))
    with Meter([azurite_pid]) as listing:
        listed = [e["RowKey"] async for e in table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": INDEX_PARTITION}, select=["RowKey"])]
    with Meter([azurite_pid]) as ranges:
        stats = await dest.purge_expired(dict.fromkeys(names, RETENTION_DAYS))
    assert len(listed) == len(kept) and stats["tenants"] == tenants and stats["hours"] == 0, stats
    await service.delete_table(name)
    await service.close()
    return [f"finding the expired hours in an index of {len(listed):,} rows ({tenants} tenants x {hours} "
            f"hours kept, none expired): the whole index listed (the purge before) {listing.wall:.2f} s, "
            f"{(listing.own + listing.other) * 1e3:.0f} ms CPU (client + Azurite); purge_expired, one range "
            f"query per tenant, {ranges.wall:.2f} s, {(ranges.own + ranges.other) * 1e3:.0f} ms CPU: "
            f"{listing.wall / ranges.wall:.0f}x less time (load {load()})"]


def run(tenants: int, events: int, rounds: int, index_tenants: int, index_hours: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="bench-purge-") as tmp:
        azurite = services.start("azurite", Path(tmp))
        try:
            settings = Settings.from_env(azurite.settings)
            sides = asyncio.run(measure(settings, azurite.proc.pid, tenants, events, rounds))
            scale = asyncio.run(index_scale(settings, azurite.proc.pid, index_tenants, index_hours))
        finally:
            services.stop(azurite.proc)
    return lines(sides, tenants, events) + scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenants", type=int, default=8)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--index-tenants", type=int, default=20)
    ap.add_argument("--index-hours", type=int, default=720)
    args = ap.parse_args()
    tune_for_throughput()
    print("\n".join(run(args.tenants, args.events, args.rounds, args.index_tenants, args.index_hours)))


if __name__ == "__main__":
    main()
