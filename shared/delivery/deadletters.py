"""The one dead-letter store: everything that could not be delivered or published, for an operator to
list and replay (GET /deadletters/{tenantId}, POST /deadletters/{tenantId}/replay; replay.py).

One Azure Table (DEADLETTER_TABLE), PartitionKey = tenant, three kinds of record:

- `delivery`: one event at one destination after its retries (the retry queue, retry_queue.py);
  RowKey `{eventId}__{destination}`; replay sends it through that destination again.
- `changefeed-event`: an event of a change that could not be published on the last retry of its
  change-feed batch; RowKey `{eventId}__changefeed`; replay publishes it through the pipeline (its
  idempotency claim keeps that from delivering it twice).
- `changefeed-document`: a change the mapping rules cannot map (no or invalid `id`/`tenantId`,
  wrong field types, too large or deep, no version) or that could not be processed on the last retry
  (the entity state unreachable); RowKey `doc__{container}__{sha256 of the document}`; replay maps
  it again. A document naming no valid tenant is kept under the reserved partition `_unmapped`
  (core.events.UNMAPPED_TENANT), listed and replayed by admins only.

A record is kept the tenant's `retentionDays` after it was dead-lettered, as the tenant's events are
kept no longer anywhere else (`purge_expired`, run hourly by the `purge_deadletters` timer); the
`_unmapped` partition, which has no tenant, keeps the default's 30 days.

RowKeys derive from what is recorded, so writing a record twice (a retried batch) is one row. Each row
holds the kind, reason, attempts, last error, times, replay state and the payload (the event or the
document) through the one chunked-payload codec. Claim-check rows of the retry queue (events too large
for a queue message) share the table under `~payload_` RowKeys, which sort after every record.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.core import limits
from shared.core.budgeted import each_within
from shared.core.events import UNMAPPED_TENANT, Event, is_tenant_id, utc_now_iso
from shared.core.ids import uuid7
from shared.core.streamconfig import (
    DEFAULT_RETENTION_DAYS,
    MIN_RETENTION_DAYS,
    RetentionLookup,
    retention_cutoff,
)
from shared.observability.tenant_metrics import CHANGEFEED
from shared.storage import payload, table_transactions
from shared.storage.capped_query import CappedPage, capped_list
from shared.storage.lazy import LazyTable

RecordKind = Literal["delivery", "changefeed-event", "changefeed-document"]
DELIVERY: RecordKind = "delivery"
CHANGEFEED_EVENT: RecordKind = "changefeed-event"
CHANGEFEED_DOCUMENT: RecordKind = "changefeed-document"

PAYLOAD_PREFIX = "~payload_"  # claim-check rows; "~" sorts after every record
MAX_TEXT = 4000
CONCURRENT_WRITES = 8
CONCURRENT_READS = 8  # point reads of one replay at a time
PURGE_CONCURRENCY = 4  # delete transactions of a purge in flight
MAX_BATCH_OPS = 100  # operations of one Table transaction


# What a Table key may not hold (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model):
# an id with one of these names no record, and is not sent to the table (Azurite answers it with a 500).
_NOT_IN_KEYS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def is_record_id(value: str) -> bool:
    return 0 < len(value.encode("utf-16-le", "surrogatepass")) <= 1024 and not _NOT_IN_KEYS.search(value)


def record_id(event_id: str, destination: str) -> str:
    return f"{event_id}__{destination}"


def document_id(container: str, doc: Any) -> str:
    digest = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return f"doc__{container}__{digest}"


def is_position(value: Any) -> bool:
    """A listing position `list` issued: the last RowKey of a page (a record's, never a payload row's)."""
    return isinstance(value, str) and is_record_id(value) and value < PAYLOAD_PREFIX


_REPLAY_STATE = ("PartitionKey", "RowKey", "Replayed", "ReplayedAt", "ReplayResult")


def _row_bytes(row: Mapping[str, Any]) -> int:
    """About what a row read holds in memory: its text and binary properties (the event, its parts)."""
    return sum(len(v) for v in row.values() if isinstance(v, (str, bytes)))


def _sized_view(row: dict[str, Any]) -> tuple[dict[str, Any], int]:
    view = DeadLetters.view(row)
    return view, len(orjson.dumps(view))


def partition_for(doc: Any) -> str:
    """The tenant a change-feed document names, or the reserved partition of those naming none."""
    tenant = doc.get("tenantId") if isinstance(doc, dict) else None
    return tenant if is_tenant_id(tenant) else UNMAPPED_TENANT


class DeadLetters:
    def __init__(self, tables: TableServiceClient, table_name: str) -> None:
        self._table = LazyTable(tables, table_name)
        self._writes = asyncio.Semaphore(CONCURRENT_WRITES)

    async def table(self) -> TableClient:
        return await self._table.get()

    async def _upsert(self, entity: dict[str, Any]) -> None:
        async with self._writes:
            await self._table.call("upsert_entity", entity, mode=UpdateMode.REPLACE)

    # ---- claim-check payloads of the retry queue ---------------------------------------------

    async def put_payload(self, tenant: str, event: dict[str, Any]) -> str:
        rk = PAYLOAD_PREFIX + uuid7()
        props, _ = payload.dump(event, compress=True)
        await self._upsert({"PartitionKey": tenant, "RowKey": rk, **props})
        return rk

    async def get_payload(self, tenant: str, rk: str) -> dict[str, Any]:
        return payload.load(await self._table.call("get_entity", tenant, rk))

    async def delete_payload(self, tenant: str, rk: str) -> None:
        try:
            await self._table.call("delete_entity", tenant, rk)
        except ResourceNotFoundError:
            pass

    # ---- records ---------------------------------------------------------------------------

    @staticmethod
    def _entity(tenant: str, rid: str, kind: RecordKind, reason: str, attempts: int, last_error: str | None,
                first_failure_at: str, body: Any, **columns: Any) -> dict[str, Any]:
        props, _ = payload.dump(body)
        return {"PartitionKey": tenant, "RowKey": rid, "Id": rid, "Kind": kind, "Reason": reason[:MAX_TEXT],
                "Attempts": attempts, "LastError": (last_error or "")[:MAX_TEXT], "FirstFailureAt": first_failure_at,
                "DeadLetteredAt": columns.pop("at", None) or utc_now_iso(), "Replayed": False,
                **{k: v for k, v in columns.items() if v is not None}, **props}

    async def record_delivery(self, tenant: str, destination: str, event: dict[str, Any], reason: str, *,
                              attempts: int, last_error: str | None, first_failure_at: str) -> dict[str, Any]:
        """A delivery given up on (written twice: one row)."""
        rid = record_id(str(event["eventId"]), destination)
        entity = self._entity(tenant, rid, DELIVERY, reason, attempts, last_error, first_failure_at, event,
                              EventId=str(event["eventId"]), EventType=str(event.get("eventType")),
                              Destination=destination)
        await self._upsert(entity)
        return entity

    async def record_events(self, container: str, entity_kind: str, events: Sequence[Event], reason: str,
                            attempts: int = 1, errors: Mapping[str, str] | None = None) -> list[str]:
        """Change-feed events not published on the last retry, one row each (`errors`: eventId -> the
        last error); `Seq` keeps their order (a replay publishes them in it, so an entity's events stay
        in order)."""
        now = utc_now_iso()
        errors = errors or {}
        entities = [self._entity(ev.tenantId, record_id(ev.eventId, CHANGEFEED), CHANGEFEED_EVENT, reason,
                                 attempts, errors.get(ev.eventId), now, ev.to_dict(), at=now, Seq=seq,
                                 EventId=ev.eventId,
                                 EventType=ev.eventType.value, Container=container, EntityKind=entity_kind)
                    for seq, ev in enumerate(events)]
        await asyncio.gather(*(self._upsert(e) for e in entities))
        return [e["RowKey"] for e in entities]

    async def record_documents(self, container: str, entity_kind: str, items: Sequence[tuple[Any, str]],
                               attempts: int = 1) -> list[str]:
        """Change-feed documents that could not be mapped or processed, each with its reason."""
        now = utc_now_iso()
        entities = [self._entity(partition_for(doc), document_id(container, doc), CHANGEFEED_DOCUMENT, reason,
                                 attempts, None, now, doc, at=now, Seq=seq, Container=container,
                                 EntityKind=entity_kind)
                    for seq, (doc, reason) in enumerate(items)]
        await asyncio.gather(*(self._upsert(e) for e in entities))
        return [e["RowKey"] for e in entities]

    async def list(self, tenant: str, *, limit: int, after: str | None = None,
                   include_replayed: bool = False) -> CappedPage[dict[str, Any]]:
        """One page of the tenant's records in RowKey order: up to `limit`, and at most the answer's
        byte cap of them (one at least; shared/core/answer_cap.py), with the last RowKey answered as
        the position of the next page (the API signs it as a continuation token)."""
        if after is not None and not is_position(after):
            raise ValueError("not a dead-letter position")
        flt = "PartitionKey eq @pk and RowKey lt @payload"
        if not include_replayed:
            flt += " and Replayed eq false"
        page: CappedPage[dict[str, Any]] = CappedPage([], None, False)
        async with self._table.reading() as table:
            page = await capped_list(table, flt, {"pk": tenant, "payload": PAYLOAD_PREFIX}, limit=limit,
                                     after=after, item=_sized_view)
        return page

    async def get(self, tenant: str, rid: str) -> dict[str, Any] | None:
        if not is_record_id(rid):
            return None
        try:
            return await self._table.call("get_entity", tenant, rid)
        except ResourceNotFoundError:
            return None

    async def get_many(self, tenant: str, rids: Sequence[str],
                       max_bytes: int = limits.MAX_LIST_RESPONSE_BYTES) -> list[dict[str, Any] | None]:
        """`get` of each record in order, CONCURRENT_READS at a time, until the rows not yet replayed
        hold `max_bytes` (one group at least): the records of the ids after are not read, and the list
        is that much shorter. A replay names up to 500 records of up to 1 MB each, and 500 MB read
        into one instance's memory would end its worker (shared/core/answer_cap.py). A record already
        replayed is kept as its replay state only and does not count: a call naming the same ids
        again goes on past them."""
        out: list[dict[str, Any] | None] = []
        held = 0
        for start in range(0, len(rids), CONCURRENT_READS):
            if out and held >= max_bytes:
                break
            named = rids[start:start + CONCURRENT_READS]
            group = await asyncio.gather(*(self.get(tenant, rid) for rid in named))
            for row in group:
                if row is not None and row.get("Replayed"):
                    row = {k: row.get(k) for k in _REPLAY_STATE}
                elif row is not None:
                    held += _row_bytes(row)
                out.append(row)
        return out

    async def mark_replayed(self, tenant: str, rid: str, result: str) -> None:
        await self._table.call("update_entity", {"PartitionKey": tenant, "RowKey": rid, "Replayed": True,
                                                 "ReplayedAt": utc_now_iso(), "ReplayResult": result},
                               mode=UpdateMode.MERGE)

    async def failed_again(self, row: dict[str, Any], error: str) -> None:
        """A replay that did not get through: one more attempt counted, with its error."""
        await self._table.call("update_entity", {
            "PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], "Attempts": int(row.get("Attempts") or 0) + 1,
            "LastError": error[:MAX_TEXT]}, mode=UpdateMode.MERGE)

    async def purge_expired(self, retention_of: RetentionLookup, *, now: datetime | None = None,
                            budget_seconds: float = 240.0) -> dict[str, int]:
        """Delete the records dead-lettered more than their tenant's retentionDays ago; returns counts
        (`left`: expired records this run had no time for, the next run's)."""
        at = now or datetime.now(UTC)
        # Nothing dead-lettered within the shortest retention can be due: only older rows are read (the
        # claim-check rows have no DeadLetteredAt, so no filter on it selects them).
        rows: list[tuple[str, str, str]] = []
        async with self._table.reading() as table:
            async for e in table.query_entities("DeadLetteredAt lt @at",
                                                parameters={"at": retention_cutoff(at, MIN_RETENTION_DAYS)},
                                                select=["PartitionKey", "RowKey", "DeadLetteredAt"]):
                rows.append((e["PartitionKey"], e["RowKey"], e["DeadLetteredAt"]))
        tenants = sorted({pk for pk, _, _ in rows if pk != UNMAPPED_TENANT})
        days = await retention_of(tenants) if tenants else {}
        cutoffs = {pk: retention_cutoff(at, days.get(pk, DEFAULT_RETENTION_DAYS)) for pk, _, _ in rows}
        by_partition: dict[str, list[dict[str, str]]] = {}
        for pk, rk, when in rows:
            if when < cutoffs[pk]:
                by_partition.setdefault(pk, []).append({"PartitionKey": pk, "RowKey": rk})
        batches = [keys[i:i + MAX_BATCH_OPS] for keys in by_partition.values()
                   for i in range(0, len(keys), MAX_BATCH_OPS)]
        expired = sum(map(len, batches))
        stats = {"records": 0, "kept": len(rows) - expired, "left": 0}

        async def delete(keys: list[dict[str, str]]) -> None:
            await table_transactions.delete_all(table, keys)  # a replay's row gone meanwhile counts as done
            stats["records"] += len(keys)

        # Storage down: raised, and the host's retry policy runs the purge again.
        await each_within(batches, delete, concurrency=PURGE_CONCURRENCY,
                          deadline=time.monotonic() + budget_seconds)
        stats["left"] = expired - stats["records"]
        return stats

    @staticmethod
    def kind_of(row: dict[str, Any]) -> RecordKind:
        return row.get("Kind") or DELIVERY  # rows written before change-feed records had no Kind

    @classmethod
    def view(cls, row: dict[str, Any]) -> dict[str, Any]:
        kind = cls.kind_of(row)
        out = {
            "id": row["RowKey"], "kind": kind, "eventId": row.get("EventId"), "eventType": row.get("EventType"),
            "destination": row.get("Destination"), "reason": row.get("Reason"), "attempts": row.get("Attempts"),
            "lastError": row.get("LastError"), "firstFailureAt": row.get("FirstFailureAt"),
            "deadLetteredAt": row.get("DeadLetteredAt"), "replayed": bool(row.get("Replayed")),
            "replayedAt": row.get("ReplayedAt"), "replayResult": row.get("ReplayResult"),
        }
        if kind == CHANGEFEED_DOCUMENT:
            out.update(container=row.get("Container"), document=payload.load(row))
        else:
            if kind == CHANGEFEED_EVENT:
                out["container"] = row.get("Container")
            out["event"] = payload.load(row)
        return out
