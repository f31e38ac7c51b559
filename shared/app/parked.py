"""Operator commands for parked change-feed items (settings from the environment / local.settings.json).

    python -m shared.app.parked list acme-bank          # or _unmapped
    python -m shared.app.parked replay acme-bank [--id ROW] [--limit 100]
"""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from shared.app.services import get_services, reset_services


async def _list(tenant: str, limit: int) -> None:
    for item in await get_services().changefeed.parking.list(tenant, limit):
        print(json.dumps(item.summary()))


async def _replay(tenant: str, row: str | None, limit: int) -> None:
    proc = get_services().changefeed
    if row:
        item = await proc.parking.get(tenant, row)
        if item is None:
            raise SystemExit(f"no parked item {tenant}/{row}")
        print(json.dumps({"id": row, "replayed": await proc.replay(item)}))
    else:
        print(json.dumps(await proc.replay_tenant(tenant, limit)))


async def _run(args: argparse.Namespace) -> None:
    try:
        if args.command == "list":
            await _list(args.tenant, args.limit)
        else:
            await _replay(args.tenant, args.id, args.limit)
    finally:
        await reset_services()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m shared.app.parked", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["list", "replay"])
    ap.add_argument("tenant", help="a tenantId, or _unmapped for documents without a valid one")
    ap.add_argument("--id", default=None, help="one parked item (its RowKey)")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--settings", type=Path, default=None, help="load a local.settings.json first")
    args = ap.parse_args(argv)
    if args.settings:  # local.settings.json `Values`; the environment wins
        import os

        for k, v in json.loads(args.settings.read_text())["Values"].items():
            os.environ.setdefault(k, str(v))
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
