"""Throughput of the local Cosmos server through the azure-cosmos SDK (single client thread).

    python bench/cosmos_local.py [--docs 5000] [--page 100] [--https]

Reports upserts/s and change-feed docs/s (from the beginning, page size --page).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

from azure.cosmos import CosmosClient, PartitionKey

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from localdev import services  # noqa: E402
from localdev.services import LOCAL_COSMOS_KEY  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--page", type=int, default=100)
    ap.add_argument("--https", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")

    with tempfile.TemporaryDirectory() as tmp:
        running = services.start("cosmos-https" if args.https else "cosmos", Path(tmp))
        try:
            scheme = "https" if args.https else "http"
            client = CosmosClient(
                running.settings["COSMOS_DB_ENDPOINT"],
                credential=LOCAL_COSMOS_KEY,
                connection_verify=False,
                enable_endpoint_discovery=False,
            )
            db = client.create_database_if_not_exists("bench")
            c = db.create_container_if_not_exists("events", partition_key=PartitionKey("/tenantId"))
            payload = "x" * 400  # roughly a small GRC event

            t0 = time.perf_counter()
            for i in range(args.docs):
                c.upsert_item({"id": f"e{i}", "tenantId": f"t{i % 16}", "seq": i, "body": payload})
            write_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            n = sum(
                1 for _ in c.query_items_change_feed(start_time="Beginning", max_item_count=args.page)
            )
            read_s = time.perf_counter() - t0
            assert n == args.docs, (n, args.docs)

            print(f"{scheme}, {args.docs} docs, page {args.page}")
            print(f"upserts/s: {args.docs / write_s:,.0f}")
            print(f"change feed docs/s: {n / read_s:,.0f}")
        finally:
            services.stop(running.proc)


if __name__ == "__main__":
    main()
