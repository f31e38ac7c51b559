"""Parked change-feed items in an Azure Table: nothing the feed delivered is dropped.

Two kinds of rows:
- `document`: a change the rules cannot map (no tenantId, malformed) or could not process
  (state store down on the last retry); replay maps it again.
- `events`: mapped events that could not be published after the last retry; replay publishes
  them again (same ids, so through the dedup markers nothing is published twice).

Row: PartitionKey = tenant (`_unmapped` when the document names no valid tenant), RowKey = a
UUIDv7 (time-ordered), `Kind`, `Container`, `EntityKind`, `Reason`, `Attempts`, `Count`,
`ParkedAt`, `LastError`, and the payload as gzip'd JSON in binary properties `P0..Pn` (a string
property holds only 64 KiB; an entity 1 MiB, so events are split across rows when needed).
"""
from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.core.events import Event, is_tenant_id, utc_now_iso
from shared.core.ids import uuid7
from shared.storage.lazy import LazyTable

UNMAPPED = "_unmapped"
CHUNK_BYTES = 60_000  # binary property limit is 64 KiB
MAX_CHUNKS = 15  # ~900 KB of compressed payload per row, under the 1 MiB entity limit
MAX_REASON = 1024


class ParkingError(RuntimeError):
    """The item is too large to park even alone."""


@dataclass
class ParkedItem:
    partition: str
    row: str
    kind: str  # document | events
    container: str
    entity_kind: str
    reason: str
    attempts: int
    count: int
    parked_at: str
    last_error: str | None
    payload: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {
            "tenantId": self.partition, "id": self.row, "kind": self.kind, "container": self.container,
            "reason": self.reason, "attempts": self.attempts, "count": self.count,
            "parkedAt": self.parked_at, "lastError": self.last_error,
        }


def partition_for(doc: Any) -> str:
    tenant = doc.get("tenantId") if isinstance(doc, dict) else None
    return tenant if is_tenant_id(tenant) else UNMAPPED


def _pack(items: Sequence[dict[str, Any]]) -> list[bytes]:
    blob = gzip.compress(orjson.dumps(list(items)), compresslevel=6)
    chunks = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)]
    if len(chunks) > MAX_CHUNKS:
        raise ParkingError(f"payload of {len(blob)} compressed bytes exceeds one table row")
    return chunks


def _unpack(entity: dict[str, Any]) -> list[dict[str, Any]]:
    parts, i = [], 0
    while f"P{i}" in entity:
        value = entity[f"P{i}"]
        parts.append(value if isinstance(value, bytes) else bytes(value))
        i += 1
    return orjson.loads(gzip.decompress(b"".join(parts))) if parts else []


class ParkingStore:
    def __init__(self, tables: TableServiceClient, table_name: str) -> None:
        self._table = LazyTable(tables, table_name)

    async def table(self) -> TableClient:
        return await self._table.get()

    async def _put(self, partition: str, kind: str, container: str, entity_kind: str, reason: str,
                   items: Sequence[dict[str, Any]], attempts: int) -> str:
        chunks = _pack(items)
        row = uuid7()
        entity: dict[str, Any] = {
            "PartitionKey": partition, "RowKey": row, "Kind": kind, "Container": container,
            "EntityKind": entity_kind, "Reason": reason[:MAX_REASON], "Attempts": attempts,
            "Count": len(items), "ParkedAt": utc_now_iso(),
        }
        entity.update({f"P{i}": c for i, c in enumerate(chunks)})
        await (await self.table()).create_entity(entity)
        return row

    async def park_documents(self, container: str, entity_kind: str,
                             items: Sequence[tuple[Any, str]], attempts: int = 1) -> list[str]:
        """One row per document, each with its own reason."""
        rows = []
        for doc, reason in items:
            rows.append(await self._put(partition_for(doc), "document", container, entity_kind, reason,
                                        [doc], attempts))
        return rows

    async def park_events(self, container: str, entity_kind: str, events: Sequence[Event], reason: str,
                          attempts: int = 1) -> list[str]:
        """One row per tenant (split when large), events in their original order."""
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for ev in events:
            by_tenant.setdefault(ev.tenantId, []).append(ev.to_dict())
        rows = []
        for tenant, items in by_tenant.items():
            rows += await self._put_split(tenant, container, entity_kind, reason, items, attempts)
        return rows

    async def _put_split(self, tenant: str, container: str, entity_kind: str, reason: str,
                         items: list[dict[str, Any]], attempts: int) -> list[str]:
        try:
            return [await self._put(tenant, "events", container, entity_kind, reason, items, attempts)]
        except ParkingError:
            if len(items) == 1:
                raise
            mid = len(items) // 2
            return (await self._put_split(tenant, container, entity_kind, reason, items[:mid], attempts)
                    + await self._put_split(tenant, container, entity_kind, reason, items[mid:], attempts))

    async def list(self, tenant: str, limit: int = 100) -> list[ParkedItem]:
        """Oldest first, within one tenant (or `_unmapped`)."""
        table = await self.table()
        out: list[ParkedItem] = []
        async for entity in table.query_entities("PartitionKey eq @pk", parameters={"pk": tenant},
                                                 results_per_page=min(limit, 1000)):
            out.append(_item(entity))
            if len(out) >= limit:
                break
        return out

    async def get(self, tenant: str, row: str) -> ParkedItem | None:
        try:
            return _item(await (await self.table()).get_entity(tenant, row))
        except ResourceNotFoundError:
            return None

    async def delete(self, tenant: str, row: str) -> None:
        await (await self.table()).delete_entity(tenant, row)

    async def failed_again(self, item: ParkedItem, error: str) -> None:
        entity = {"PartitionKey": item.partition, "RowKey": item.row, "Attempts": item.attempts + 1,
                  "LastError": error[:MAX_REASON]}
        await (await self.table()).update_entity(entity, mode=UpdateMode.MERGE)


def _item(entity: dict[str, Any]) -> ParkedItem:
    return ParkedItem(
        partition=entity["PartitionKey"], row=entity["RowKey"], kind=entity.get("Kind", ""),
        container=entity.get("Container", ""), entity_kind=entity.get("EntityKind", ""),
        reason=entity.get("Reason", ""), attempts=int(entity.get("Attempts", 0)),
        count=int(entity.get("Count", 0)), parked_at=entity.get("ParkedAt", ""),
        last_error=entity.get("LastError"), payload=_unpack(entity),
    )
