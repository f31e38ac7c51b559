"""Change-feed path benchmark: batches of changed documents -> mapping -> entity state -> dedup ->
pipeline -> Redis Streams, then the same batches re-delivered (all duplicates).

    python -m bench.changefeed_path [--docs 10000] [--batch 100] [--tenants 4]

Documents are controls with a new failing test (3 events each: UPDATED, TESTED, FAILED), seen once
before, so every rule path with a prior snapshot runs. Starts its own Redis and Azurite.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from localdev import services
from shared.app.services import Services
from shared.changefeed.rules import Kind
from shared.core.settings import Settings


def docs(n: int, tenants: int, lsn0: int, result: str) -> list[dict[str, Any]]:
    ts = int(time.time())
    return [{"id": f"c{i}", "tenantId": f"bench-{i % tenants}", "name": "Backup restore", "framework": "SOC2",
             "status": "effective", "createdAt": "2026-01-01T00:00:00Z", "updatedAt": f"2026-02-{1 + lsn0 % 27:02d}T00:00:00Z",
             "lastTest": {"result": result, "testedAt": f"2026-02-{1 + lsn0 % 27:02d}T00:00:00Z"},
             "_lsn": lsn0 + i, "_ts": ts, "_etag": f"e{lsn0 + i}"} for i in range(n)]


async def run(args: argparse.Namespace, settings: dict[str, str]) -> None:
    svc = Services(Settings.model_validate(settings))
    proc = svc.changefeed
    try:
        seed = docs(args.docs, args.tenants, 1, "pass")
        for i in range(0, len(seed), args.batch):
            await proc.process(Kind.CONTROLS, "controls", seed[i:i + args.batch])
        changed = docs(args.docs, args.tenants, 10 * args.docs, "fail")
        for label in ("changes", "re-delivered"):
            events = 0
            start = time.perf_counter()
            for i in range(0, len(changed), args.batch):
                out = await proc.process(Kind.CONTROLS, "controls", changed[i:i + args.batch])
                events += out.published
            secs = time.perf_counter() - start
            print(f"{label:>13}: {args.docs / secs:8,.0f} docs/s  {events / secs:8,.0f} events/s published "
                  f"({events} events, batch {args.batch})")
    finally:
        await svc.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--tenants", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        running = [services.start(n, Path(tmp) / n) for n in ("redis", "azurite")]
        try:
            settings: dict[str, str] = {}
            for r in running:
                settings.update(r.settings)
            asyncio.run(run(args, settings))
        finally:
            for r in running:
                services.stop(r.proc)


if __name__ == "__main__":
    main()
