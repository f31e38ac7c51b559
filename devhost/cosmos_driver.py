"""Cosmos DB triggers, driven from the change feed through the azure-cosmos SDK.

For each cosmosDBTrigger function: read the monitored container's change feed a page at a time
(`maxItemsPerInvocation`), decode the page exactly as the worker does
(`CosmosDBTriggerConverter.decode`), call the function with the binding's retry policy (the
retry context tells the attempt), then store the continuation as a lease document in the lease
container (`{leaseContainerPrefix}{database}.{container}`), as the host does after each batch,
also when the last retry failed. A restart resumes from the lease: nothing replayed, nothing
skipped. A new lease starts from the beginning when `startFromBeginning` is true, else from now.

Like the host's change-feed processor (azure-cosmos .NET SDK v3) when it first initialises a lease
store, the worker creates, once, the marker `{prefix}{host}_{database _rid}_{container _rid}.info` in
the lease container; its `_ts` is when this container's processor started, which the app reads to
tell new documents from old ones (shared/changefeed/leases.py).

One instance, one lease per container (the local server has one physical partition).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosResourceExistsError, CosmosResourceNotFoundError
from azure.functions import meta
from azure.functions.cosmosdb import CosmosDBTriggerConverter

from devhost.app_loader import FunctionSpec
from devhost.invoke import Context, RetryContext, invoke
from devhost.retry import RetryPolicy
from devhost.workers import WorkerTasks

log = logging.getLogger("devhost.cosmos")
_CREATE_LOCK = asyncio.Lock()
DEFAULT_POLL_MS = 1000  # the host's default feedPollDelay is 5 s; locally faster feedback
MONITORED_PARTITION_KEY = "/tenantId"  # the platform's convention (docs/change-capture.md)
OPEN_AT_START_SECONDS = 10.0  # the runner's start waits this long at most for the containers


def connection_settings(name: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """(endpoint, key) from the binding's `connection`: a connection string, or `<name>__accountEndpoint`."""
    env = dict(os.environ) if env is None else env
    value = env.get(name)
    if value:
        parts = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
        endpoint, key = parts.get("AccountEndpoint"), parts.get("AccountKey")
        if endpoint and key:
            return endpoint.rstrip("/"), key
        raise KeyError(f"setting {name} is not a Cosmos connection string (AccountEndpoint=...;AccountKey=...)")
    endpoint = env.get(f"{name}__accountEndpoint")
    if endpoint and env.get("COSMOS_DB_KEY"):
        # Identity-based in Azure; locally the key of the local server stands in for the identity.
        return endpoint.rstrip("/"), env["COSMOS_DB_KEY"]
    raise KeyError(f"no Cosmos connection: set {name} (connection string) or {name}__accountEndpoint")


def decode_batch(items: list[dict[str, Any]]) -> Any:
    """A page of the feed as the worker hands it to the function (a func.DocumentList)."""
    return CosmosDBTriggerConverter.decode(meta.Datum(json.dumps(items), "json"), trigger_metadata={})


@dataclass
class Lease:
    id: str
    continuation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class FeedWorker:
    """One trigger function: its feed, its lease, its invocations."""

    def __init__(self, spec: FunctionSpec, client: CosmosClient, *, poll_ms: int | None,
                 sleep: Callable[[float], Any] = asyncio.sleep, retry_scale: float = 1.0) -> None:
        t = spec.trigger
        self.spec = spec
        self.client = client
        self.database = str(t["databaseName"])
        self.container_name = str(t["containerName"])
        self.lease_container_name = str(t.get("leaseContainerName") or "leases")
        self.lease_database = str(t.get("leaseDatabaseName") or self.database)
        self.prefix = str(t.get("leaseContainerPrefix") or "")
        self.max_items = int(t.get("maxItemsPerInvocation") or 100)
        self.from_beginning = bool(t.get("startFromBeginning", False))
        self.poll_s = (poll_ms if poll_ms is not None else int(t.get("feedPollDelay") or DEFAULT_POLL_MS)) / 1000
        self.retry = RetryPolicy.from_setting(spec.settings.get("retry"))
        self.sleep = sleep
        self.retry_scale = retry_scale
        self.lease_id = f"{self.prefix}{self.database}.{self.container_name}"
        self.container: ContainerProxy | None = None
        self.leases: ContainerProxy | None = None
        self.opened = False
        self.invocations = 0
        self.failed_batches = 0

    async def open(self) -> None:
        # The workers share databases and the lease container: create them one at a time
        # (create-if-not-exists is read-then-create, so two at once can collide).
        async with _CREATE_LOCK:
            db = await self.client.create_database_if_not_exists(self.database)
            # The monitored container must exist in Azure; the in-memory local server starts empty.
            self.container = await db.create_container_if_not_exists(
                self.container_name, partition_key=PartitionKey(MONITORED_PARTITION_KEY))
            lease_db = await self.client.create_database_if_not_exists(self.lease_database)
            self.leases = await lease_db.create_container_if_not_exists(
                self.lease_container_name, partition_key=PartitionKey("/id"))
            await self.mark_lease_store(db)
            self.opened = True

    async def mark_lease_store(self, db: Any) -> None:
        """Create the lease store's `.info` marker unless it exists (create only, never replaced)."""
        assert self.container is not None and self.leases is not None
        host = urlparse(str(self.client.client_connection.url_connection)).hostname or ""
        db_rid = (await db.read())["_rid"]
        container_rid = (await self.container.read())["_rid"]
        marker = f"{self.prefix}{host}_{db_rid}_{container_rid}.info"
        try:
            await self.leases.create_item({"id": marker})
            log.info("%s: lease store initialised (%s)", self.spec.name, marker)
        except CosmosResourceExistsError:
            pass

    async def read_lease(self) -> Lease:
        assert self.leases is not None
        try:
            doc = await self.leases.read_item(self.lease_id, partition_key=self.lease_id)
        except CosmosResourceNotFoundError:
            return Lease(self.lease_id)
        return Lease(self.lease_id, doc.get("ContinuationToken"), doc)

    async def write_lease(self, continuation: str) -> None:
        assert self.leases is not None
        await self.leases.upsert_item({
            "id": self.lease_id, "ContinuationToken": continuation, "Owner": "devhost",
            "LeaseToken": "0", "FeedRange": {"min": "", "max": "FF"},
            "timestamp": datetime.now(UTC).isoformat(), "function": self.spec.name,
        })

    async def read_page(self, continuation: str | None) -> tuple[list[dict[str, Any]], str | None]:
        assert self.container is not None
        if continuation:
            feed = self.container.query_items_change_feed(continuation=continuation, max_item_count=self.max_items)
        else:
            start = "Beginning" if self.from_beginning else "Now"
            feed = self.container.query_items_change_feed(start_time=start, max_item_count=self.max_items)
        pager = feed.by_page()
        try:
            page = await pager.__anext__()
            items = [d async for d in page]
        except StopAsyncIteration:
            items = []
        # An empty read from "now" has no page continuation; the headers carry it.
        token = pager.continuation_token or self.container.client_connection.last_response_headers.get("etag")
        return items, token or continuation

    async def deliver(self, items: list[dict[str, Any]]) -> bool:
        """Call the function with the host's retry semantics; True when an attempt succeeded."""
        max_retries = self.retry.max_retry_count if self.retry else 0
        attempt = 0
        while True:
            ctx = Context(self.spec.name, retry_context=RetryContext(attempt, max_retries))
            self.invocations += 1
            try:
                await invoke(self.spec, decode_batch(items), ctx)
                return True
            except Exception as exc:  # noqa: BLE001 - the host logs and retries any failure
                last = self.retry is None or (0 <= max_retries <= attempt)
                log.warning("%s failed (attempt %d of %s): %s: %s", self.spec.name, attempt + 1,
                            "∞" if max_retries < 0 else max_retries + 1, type(exc).__name__, exc)
                if last:
                    self.failed_batches += 1
                    log.error("%s: batch of %d given up after the last retry; the lease advances",
                              self.spec.name, len(items))
                    return False
                assert self.retry is not None
                await self.sleep(self.retry.delay(attempt) * self.retry_scale)
                attempt += 1

    async def step(self, continuation: str | None) -> tuple[str | None, int]:
        """One poll: (the continuation to read from next, number of changes delivered).

        The lease is written after a batch, as the SDK's processor checkpoints after the batch it
        dispatched, and on the first poll of a new lease (its start pinned, so a restart skips nothing);
        not after an empty page. The local server has one LSN for the account, so each lease write was
        a change every other container's next poll saw: five lease writes a second, forever, with no
        document changing (the idle runner's largest cost)."""
        items, token = await self.read_page(continuation)
        if items:
            await self.deliver(items)
        if token and token != continuation and (items or continuation is None):
            await self.write_lease(token)
        return token, len(items)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set() and not self.opened:  # opened at start unless Cosmos was not up
            try:
                await self.open()
                break
            except Exception as exc:  # noqa: BLE001 - e.g. the local server not started yet
                log.warning("%s: Cosmos DB not reachable (%s); retrying in 5 s", self.spec.name, type(exc).__name__)
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=5)
                except TimeoutError:
                    pass
        if stopping.is_set():
            return
        lease = await self.read_lease()
        token = lease.continuation
        log.info("%s: %s/%s from %s", self.spec.name, self.database, self.container_name,
                 "its lease" if token else ("the beginning" if self.from_beginning else "now"))
        while not stopping.is_set():
            try:
                token, n = await self.step(token)
            except Exception:
                log.exception("%s: change feed read failed", self.spec.name)
                n = 0
            if n == 0:
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=self.poll_s)
                except TimeoutError:
                    pass


class CosmosDriver:
    trigger_type = "cosmosDBTrigger"

    def __init__(self, specs: list[FunctionSpec], *, poll_ms: int | None = None, retry_scale: float = 1.0) -> None:
        self.specs = specs
        self.poll_ms = poll_ms
        self.retry_scale = retry_scale
        self.clients: dict[tuple[str, str], CosmosClient] = {}
        self.workers: list[FeedWorker] = []
        self._workers = WorkerTasks("cosmos", stop_timeout=10)

    def _client(self, connection: str) -> CosmosClient:
        endpoint, key = connection_settings(connection)
        client = self.clients.get((endpoint, key))
        if client is None:
            client = self.clients[(endpoint, key)] = CosmosClient(
                endpoint, key, connection_verify=False, enable_endpoint_discovery=False)
        return client

    async def start(self) -> None:
        for spec in self.specs:
            worker = FeedWorker(spec, self._client(str(spec.trigger["connection"])), poll_ms=self.poll_ms,
                                retry_scale=self.retry_scale)
            self.workers.append(worker)
        # The monitored containers exist before the app starts in Azure (Bicep); the local server
        # starts empty. Create them before any other trigger runs (the runner starts this driver
        # first): a timer whose occurrence was missed fires at start and queries them (the overdue
        # check answered 404 at every `make run` after a pause). Best effort: a server not up yet
        # leaves it to each worker, which retries.
        try:
            async with asyncio.timeout(OPEN_AT_START_SECONDS):
                for worker in self.workers:
                    await worker.open()
        except Exception as exc:  # noqa: BLE001 - e.g. the local server not started yet
            log.warning("Cosmos DB containers not opened at start (%s); the triggers retry",
                        type(exc).__name__)
        for worker in self.workers:
            self._workers.spawn(worker.spec.name, worker.run)
        log.info("Cosmos DB triggers: %s", ", ".join(s.name for s in self.specs))

    async def stop(self) -> None:
        await self._workers.stop()
        for client in self.clients.values():
            await client.close()
        self.clients.clear()
