"""When each container's change-feed processor started: the creation of its lease store.

The rules need it to tell a new document from an old one seen for the first time (rules.Change.is_create):
the feed says neither, and a document created and edited between two polls arrives once, edited.

Where it comes from, in Azure: the Functions host's Cosmos DB trigger (extension 4.x) runs the
azure-cosmos .NET SDK v3 change-feed processor, with the function's `lease_container_prefix` as
the processor's lease prefix. When that processor first initialises its lease store it creates, once
(create, never replaced), a marker document `{prefix}{account host}_{database _rid}_{container _rid}.info`
in the lease container, beside the lease documents it checkpoints (those are rewritten all the time:
their `_ts` says nothing about the start). So the marker's `_ts` is when this container's processor
started; it changes only when the leases are reset (deleted), which starts a new processor from
the beginning. The local runner (devhost/cosmos_driver.py) writes the same marker.

The lookup matches the prefix and the `_{database _rid}_{container _rid}.info` suffix (not the host,
which the trigger's connection spells), takes the newest, and is cached per instance (FOUND_TTL;
MISSING_TTL when there is none yet or the read failed: the rules then fall back to the document's own
times, rules.Change.is_create).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.changefeed.rules import Kind
from shared.storage.cosmosdb import SharedCosmos

log = logging.getLogger("grc.changefeed")

# The Cosmos DB triggers' lease prefixes (function_app.py registers them; one per monitored container).
LEASE_PREFIXES: dict[Kind, str] = {kind: f"{kind.value}-" for kind in Kind}
INFO_SUFFIX = ".info"
FOUND_TTL = 600.0
MISSING_TTL = 30.0
QUERY = "SELECT c.id, c._ts FROM c WHERE STARTSWITH(c.id, @prefix)"


def container_of(settings: Any, kind: Kind) -> str:
    """The monitored container of `kind` (its COSMOS_*_CONTAINER setting)."""
    return {
        Kind.RISKS: settings.cosmos_risks_container,
        Kind.CONTROLS: settings.cosmos_controls_container,
        Kind.ASSESSMENTS: settings.cosmos_assessments_container,
        Kind.COMPLIANCE: settings.cosmos_compliance_container,
        Kind.POLICIES: settings.cosmos_policies_container,
    }[kind]


def marker_id(prefix: str, host: str, database_rid: str, container_rid: str) -> str:
    """The id of the lease store's marker document, as the SDK's processor names it."""
    return f"{prefix}{host}_{database_rid}_{container_rid}{INFO_SUFFIX}"


class FeedStarts:
    """`await starts.started(kind)`: when that container's processor started (UTC), or None."""

    def __init__(self, cosmos: SharedCosmos, database: str, lease_container: str,
                 containers: Mapping[Kind, str], clock: Callable[[], float] = time.monotonic) -> None:
        self._cosmos = cosmos
        self._database = database
        self._lease_container = lease_container
        self._containers = containers
        self._clock = clock
        self._cache: dict[Kind, tuple[datetime | None, float]] = {}

    async def started(self, kind: Kind) -> datetime | None:
        hit = self._cache.get(kind)
        if hit is not None and self._clock() < hit[1]:
            return hit[0]
        try:
            value = await self._lookup(kind)
        except Exception as exc:  # noqa: BLE001 - the rules fall back to the document's own times
            log.warning("change-feed start of %s unknown: %s", kind.value, type(exc).__name__)
            value = None
        self._cache[kind] = (value, self._clock() + (FOUND_TTL if value else MISSING_TTL))
        return value

    async def _lookup(self, kind: Kind) -> datetime | None:
        client = await self._cosmos.client()
        db = client.get_database_client(self._database)
        db_rid = (await db.read())["_rid"]
        container_rid = (await db.get_container_client(self._containers[kind]).read())["_rid"]
        suffix = f"_{db_rid}_{container_rid}{INFO_SUFFIX}"
        leases = db.get_container_client(self._lease_container)
        stamps = [doc["_ts"] async for doc in leases.query_items(
            QUERY, parameters=[{"name": "@prefix", "value": LEASE_PREFIXES[kind]}])
            if str(doc.get("id", "")).endswith(suffix) and isinstance(doc.get("_ts"), (int, float))]
        return datetime.fromtimestamp(max(stamps), UTC) if stamps else None
