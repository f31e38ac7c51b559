"""Analytics destination: every event of every tenant in one Azure Table (setting ANALYTICS_TABLE).

Key design (docs/analytics.md has the long form):

- PartitionKey = `{tenantId}_{yyyyMMddHH}_{shard:02}`, the event's own timestamp (UTC hour) and
  shard = crc32(eventId) % N (N = the destination's `shards` option). One partition takes about
  2,000 entities/s, so one tenant's writes spread over N partitions per hour; a tenant's data never
  shares a partition with another tenant's, and retention drops whole hour partitions.
- RowKey = `{9999999999999 - epoch_ms:013}_{eventId}`: ascending RowKey order inside a partition is
  newest first, and the eventId makes it unique. Keys come from the event only, so a retried write
  is an upsert of the same entity: idempotent.
- A small index (PartitionKey `~index`, RowKey `{tenantId}_{yyyyMMddHH}_{N:02}`) records which
  tenant-hours hold data with which shard count. History reads list the index for the asked range
  (one query), then read each hour newest first, fanning out over its shards and merging the pages
  by RowKey, in pieces sized by the answer's byte cap (shared/core/answer_cap.py); a page ends at a
  position (hour, last RowKey answered), which the API signs as the continuation token. The
  retention timer reads each tenant's expired tenant-hours from the same index (one RowKey range per
  tenant) and deletes their partitions.
- Payload: the native JSON through the one chunked-payload codec (shared/storage/payload.py): in
  `Payload` (a string property holds 64 KiB = 32 K UTF-16 units), split into `Payload_0..n` when
  longer; gzip binary `PayloadGz` (split likewise, 64,000-byte chunks) when the stream's
  `compressionEnabled` is set or the text would not fit an entity (1 MiB). Type,
  source, action, entity and times are columns too, for server-side filters.
- Writes: entity group transactions per partition, at most 100 operations and under 4 MB each
  (Azurite answers a 101-operation batch with a malformed reply; the SDK does not check), sent by
  shared/storage/table_transactions.py: the SDK's request, without its slow multipart encoder.

Why ~400 lines in one module: writes, history reads and the retention purge share the key design
above (partition and row keys, the tenant-hour index); kept together, a change to the keys cannot
leave one of the three reading or deleting what the others no longer write.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.core import limits
from shared.core.answer_cap import AnswerCap, json_size
from shared.core.budgeted import each_within
from shared.core.destination_options import AnalyticsOptions
from shared.core.events import Event
from shared.core.health import DependencyHealth
from shared.core.hours import hour_of
from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig
from shared.destinations.base import Chunk, delivered, failed
from shared.destinations.own_limit import OwnLimit
from shared.storage import payload, table_transactions
from shared.storage.capped_query import first_rows
from shared.storage.lazy import LazyTable, table_gone

log = logging.getLogger("grc.analytics")

INDEX_PARTITION = "~index"
MAX_TS_MS = 9_999_999_999_999
MAX_BATCH_OPS = 100
MAX_BATCH_BYTES = 3_500_000  # the service's limit is 4 MiB per transaction request; keep headroom
MAX_PAGE_HOURS = 48  # hours with data read by one history page at most
CONCURRENCY = 8
# The retention purge's share of CONCURRENCY: live writes keep the other half while a purge runs.
PURGE_CONCURRENCY = CONCURRENCY // 2
# Index rows an instance remembers having written (one per tenant-hour: a set that grew for as long as
# the instance lived). Past it the set is forgotten and each tenant-hour written next is upserted once
# more (an idempotent MERGE), so memory stays bounded: ~100 bytes a row, ~5 MB.
MAX_INDEXED = 50_000


def event_ms(ev: Event) -> int:
    return int(datetime.fromisoformat(ev.timestamp).timestamp() * 1000)


def shard_of(event_id: str, shards: int) -> int:
    return zlib.crc32(event_id.encode()) % shards


def partition_key(tenant: str, hour: str, shard: int) -> str:
    return f"{tenant}_{hour}_{shard:02d}"


def row_key(ms: int, event_id: str) -> str:
    return f"{MAX_TS_MS - ms:013d}_{event_id}"


def to_entity(ev: Event, shards: int, compress: bool) -> tuple[dict[str, Any], int]:
    ms = event_ms(ev)
    entity: dict[str, Any] = {
        "PartitionKey": partition_key(ev.tenantId, hour_of(ms), shard_of(ev.eventId, shards)),
        "RowKey": row_key(ms, ev.eventId),
        "EventId": ev.eventId,
        "EventType": ev.eventType.value,
        "Source": ev.source.value,
        "Action": ev.action.value,
        "EventTime": ev.timestamp,
        "IngestedAt": ev.ingestedAt,
        "CorrelationId": ev.correlationId,
    }
    if ev.entityId is not None:
        entity["EntityId"] = ev.entityId
    if ev.entityType is not None:
        entity["EntityType"] = ev.entityType
    props, size = payload.encode(ev.to_json(), compress=compress)
    entity.update(props)
    return entity, size + 1024


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, asyncio.TimeoutError, ConnectionError, OSError)):
        return True
    if isinstance(exc, ResourceNotFoundError) or table_gone(exc):
        return True  # table missing (created again by the next try)
    if isinstance(exc, HttpResponseError):
        return exc.status_code is None or exc.status_code in (408, 429) or exc.status_code >= 500
    return False


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    return f"table write failed: {type(exc).__name__}" + (f" {status}" if status else "") + (f" {code}" if code else "")


@dataclass
class _Op:
    index: tuple[int, int]  # (chunk, event) of the publish call
    entity: dict[str, Any]
    size: int


def transactions(ops: Sequence[_Op]) -> list[list[_Op]]:
    """One partition's operations cut into transactions of <= 100 ops and < MAX_BATCH_BYTES."""
    out: list[list[_Op]] = []
    cur: list[_Op] = []
    size = 0
    for op in ops:
        if cur and (len(cur) >= MAX_BATCH_OPS or size + op.size > MAX_BATCH_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(op)
        size += op.size
    if cur:
        out.append(cur)
    return out


# ---- paging -------------------------------------------------------------------------------
# A page ends at a position {"h": hour, "rk": last RowKey or None, "f": from_ms, "t": to_ms}; the API
# hands it to clients as a signed continuation token (shared/storage/pagetokens.py), so a position comes
# back only as this store issued it.

def is_position(state: Any) -> bool:
    return (isinstance(state, dict) and isinstance(state.get("h"), str) and state["h"].isdigit()
            and len(state["h"]) == 10 and (state.get("rk") is None or isinstance(state["rk"], str))
            and isinstance(state.get("f"), int) and isinstance(state.get("t"), int))


@dataclass
class HistoryPage:
    events: list[dict[str, Any]]
    next_position: dict[str, Any] | None  # where the next page starts; None = this was the last
    truncated: bool = False  # fewer than `limit`: the page reached the answer's byte cap


def _q(value: str) -> str:
    return value.replace("'", "''")


class AnalyticsDestination:
    type = "analytics"

    def __init__(self, tables: TableServiceClient, table_name: str) -> None:
        self._table = LazyTable(tables, table_name)
        self._indexed: set[str] = set()  # index rows this instance already wrote
        self._indexed_in: TableClient | None = None  # ... into this table client's table
        self._limit = OwnLimit(CONCURRENCY)

    async def table(self) -> TableClient:
        return await self._table.get()

    # ---- write -----------------------------------------------------------------------

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]:
        """Every chunk's entities, grouped by partition into transactions, submitted CONCURRENCY at a
        time; the new index rows of all tenants go first, in transactions of the one index partition."""
        out: list[list[Delivery | None]] = [[None] * len(ch.events) for ch in chunks]
        by_pk: dict[str, list[_Op]] = {}
        index_rows: set[str] = set()
        for c, ch in enumerate(chunks):
            options: AnalyticsOptions = ch.options  # type: ignore[assignment]
            for i, ev in enumerate(ch.events):
                try:
                    entity, size = to_entity(ev, options.shards, ch.stream.compressionEnabled)
                except Exception as exc:  # noqa: BLE001 - a bad timestamp must not fail the chunk
                    out[c][i] = failed(self.type, f"not storable: {type(exc).__name__}", transient=False)
                    continue
                if size > 1_000_000:
                    out[c][i] = failed(self.type, f"event is {size} bytes even compressed; an entity holds "
                                                  "1 MiB", transient=False)
                    continue
                by_pk.setdefault(entity["PartitionKey"], []).append(_Op((c, i), entity, size))
                hour = entity["PartitionKey"].rsplit("_", 2)[1]
                index_rows.add(f"{ev.tenantId}_{hour}_{options.shards:02d}")
        for attempt in (1, 2):
            try:
                table = await self.table()
                if table is not self._indexed_in:  # the table was created again: its index is empty
                    self._indexed.clear()
                    self._indexed_in = table
                await self._write_index(table, sorted(index_rows - self._indexed))
                break
            except Exception as exc:  # noqa: BLE001 - storage down: every event of the call failed
                if table_gone(exc):
                    self._table.forget()
                    if attempt == 1:
                        continue  # created again by the next self.table()
                error, transient = _describe(exc), is_transient(exc)
                return [[d or failed(self.type, error, transient=transient) for d in row] for row in out]

        groups = [tx for ops in by_pk.values() for tx in transactions(ops)]
        results = await asyncio.gather(*(self._submit(table, tx) for tx in groups))
        for tx, res in zip(groups, results):
            for op, d in zip(tx, res):
                c, i = op.index
                out[c][i] = d
        return [[d for d in row if d is not None] for row in out]

    async def _write_index(self, table: TableClient, rows: list[str]) -> None:
        """New index rows (one per tenant-hour this instance has not written yet): all in the index
        partition, so 100 per transaction rather than one request each."""
        for start in range(0, len(rows), MAX_BATCH_OPS):
            part = rows[start:start + MAX_BATCH_OPS]
            async with self._limit.slot():
                await table.submit_transaction(
                    [("upsert", {"PartitionKey": INDEX_PARTITION, "RowKey": rk}, {"mode": UpdateMode.MERGE})
                     for rk in part])
            if len(self._indexed) + len(part) > MAX_INDEXED:
                self._indexed.clear()
            self._indexed.update(part)

    async def _submit(self, table: TableClient, tx: list[_Op]) -> list[Delivery]:
        async with self._limit.slot():
            try:
                await table_transactions.upsert_all(table, [op.entity for op in tx])
                return [delivered(self.type, f"{op.entity['PartitionKey']}/{op.entity['RowKey']}") for op in tx]
            except Exception as exc:  # noqa: BLE001
                if table_gone(exc):
                    self._table.forget()
                if is_transient(exc) or len(tx) == 1:
                    return [failed(self.type, _describe(exc), transient=is_transient(exc)) for _ in tx]
            # One bad entity fails its whole transaction: write one by one to find it.
            out = []
            for op in tx:
                try:
                    await table.upsert_entity(op.entity, mode=UpdateMode.REPLACE)
                    out.append(delivered(self.type, f"{op.entity['PartitionKey']}/{op.entity['RowKey']}"))
                except Exception as exc:  # noqa: BLE001
                    out.append(failed(self.type, _describe(exc), transient=is_transient(exc)))
            return out

    async def landed(
        self, events: Sequence[Event], options: AnalyticsOptions, stream: StreamConfig
    ) -> list[bool]:
        """Whether each event's entity exists (the keys derive from the event)."""
        out = []
        for ev in events:
            ms = event_ms(ev)
            try:
                pk = partition_key(ev.tenantId, hour_of(ms), shard_of(ev.eventId, options.shards))
                await self._table.call("get_entity", pk, row_key(ms, ev.eventId), select=["RowKey"])
                out.append(True)
            except ResourceNotFoundError:
                out.append(False)
        return out

    # ---- read ------------------------------------------------------------------------

    async def hours(self, tenant: str, from_ms: int, to_ms: int) -> dict[str, int]:
        """hour -> shard count (the largest one written in that hour), for the tenant's hours with data
        from the hour of `from_ms` to the hour of `to_ms`, both included (one query of the index)."""
        lo, hi = f"{tenant}_{hour_of(from_ms)}", f"{tenant}_{hour_of(to_ms)}_~"
        hours: dict[str, int] = {}
        async with self._table.reading() as table:
            async for row in table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi",
                parameters={"pk": INDEX_PARTITION, "lo": lo, "hi": hi}, select=["RowKey"],
            ):
                _, hour, n = row["RowKey"].rsplit("_", 2)
                hours[hour] = max(hours.get(hour, 0), int(n))
        return hours

    async def history(
        self,
        tenant: str,
        *,
        from_ms: int,
        to_ms: int,
        limit: int,
        event_type: str | None = None,
        source: str | None = None,
        after: dict[str, Any] | None = None,
        max_bytes: int = limits.MAX_LIST_RESPONSE_BYTES,
    ) -> HistoryPage:
        """The tenant's events with from_ms <= time <= to_ms, newest first: up to `limit` per page and at
        most the answer's byte cap of them (one at least; shared/core/answer_cap.py), read in pieces
        sized by what was seen; `after` = the previous page's `next_position` (its range then applies),
        which is right after the last event it answered."""
        if after is not None and not is_position(after):
            raise ValueError("not a history position")
        state = after
        if state:
            from_ms, to_ms = state["f"], state["t"]
        # Row keys order times from 1970 to MAX_TS_MS (13 digits): a bound outside them would compare
        # as text against keys of another length and match nothing (`from` before 1970 found no event).
        from_ms, to_ms = max(from_ms, 0), min(to_ms, MAX_TS_MS)
        if from_ms > to_ms:
            return HistoryPage([], None)
        hours = await self.hours(tenant, from_ms, to_ms)
        ordered = sorted((h for h in hours if state is None or h <= state["h"]), reverse=True)
        lo_rk = f"{MAX_TS_MS - to_ms:013d}"
        hi_rk = f"{MAX_TS_MS - from_ms:013d}~"
        events: list[dict[str, Any]] = []
        cap = AnswerCap(max_bytes)

        def at(hour: str, rk: str | None) -> dict[str, Any]:
            return {"h": hour, "rk": rk, "f": from_ms, "t": to_ms}

        async with self._table.reading() as table:
            for n_hour, hour in enumerate(ordered):
                if n_hour >= MAX_PAGE_HOURS:
                    return HistoryPage(events, at(hour, None))
                last = state["rk"] if state and hour == state["h"] else None  # the last row answered
                done = False
                while not done:
                    # One more row than still wanted tells whether another page exists.
                    count = cap.next_read(limit - len(events) + 1, ways=hours[hour])
                    rows, done = await self._read_hour(table, tenant, hour, hours[hour], lo_rk, hi_rk, last,
                                                       count, event_type, source)
                    for row in rows:
                        if len(events) == limit:
                            return HistoryPage(events, at(hour, last))
                        text = payload.decode(row)
                        if text is None:  # no payload: nothing to answer (never written so)
                            last = row["RowKey"]
                            continue
                        if not cap.admit(json_size(text)):
                            return HistoryPage(events, at(hour, last), truncated=True)
                        events.append(orjson.loads(text))
                        last = row["RowKey"]
                    if len(events) == limit and not done:
                        return HistoryPage(events, at(hour, last))
                if len(events) == limit:
                    return HistoryPage(events, at(hour, last) if n_hour + 1 < len(ordered) else None)
        return HistoryPage(events, None)

    async def _read_hour(
        self, table: TableClient, tenant: str, hour: str, shards: int, lo_rk: str, hi_rk: str,
        after: str | None, count: int, event_type: str | None, source: str | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """The hour's next rows after RowKey `after`, newest first, from about `count` rows of each
        shard; and whether they are all its rows left (False: more may follow after the last)."""
        flt = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi"
        params: dict[str, Any] = {"lo": lo_rk, "hi": hi_rk}
        if after is not None:
            flt += " and RowKey gt @after"
            params["after"] = after
        if event_type:
            flt += " and EventType eq @et"
            params["et"] = event_type
        if source:
            flt += " and Source eq @src"
            params["src"] = source
        per_shard = await asyncio.gather(*(
            first_rows(table, flt, {**params, "pk": partition_key(tenant, hour, shard)}, count)
            for shard in range(shards)))
        # Each shard gave its first rows in RowKey order. Merged, they are the hour's next rows only up to
        # the smallest last RowKey of the shards that may hold more: past it such a shard's unread rows
        # could come first. The rows past it are read again by the next call (after the last answered).
        bound = min((rows[-1]["RowKey"] for rows, complete in per_shard if not complete), default=None)
        merged = heapq.merge(*(rows for rows, _ in per_shard), key=lambda e: e["RowKey"])
        if bound is None:
            return list(merged), True
        return [e for e in merged if e["RowKey"] <= bound], False

    async def read_range(
        self, tenant: str, hour: str, shards: int, lo_ms: int, hi_ms: int, cap: int,
    ) -> list[tuple[int, str, dict[str, Any]]] | None:
        """The rows of one tenant-hour with lo_ms <= time < hi_ms, oldest first ((time, eventId)
        order), as (time ms, eventId, row); None when there are more than `cap` (the caller asks for
        a shorter range). A backfill reads with it: RowKeys sort newest first, so the oldest events
        come from reading a short range whole and turning it round (docs/backfill.md)."""
        lo_rk, hi_rk = f"{MAX_TS_MS - (hi_ms - 1):013d}", f"{MAX_TS_MS - lo_ms:013d}~"
        flt = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi"
        over = asyncio.Event()

        async def shard_rows(table: TableClient, shard: int) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            async with self._limit.slot():
                pager = table.query_entities(flt, parameters={"pk": partition_key(tenant, hour, shard), "lo": lo_rk,
                                                              "hi": hi_rk}, results_per_page=1000)
                async for page in pager.by_page():
                    async for e in page:
                        rows.append(e)
                    if over.is_set() or len(rows) > cap:
                        over.set()
                        break
            return rows

        per_shard: list[list[dict[str, Any]]] = []
        async with self._table.reading() as table:
            per_shard = await asyncio.gather(*(shard_rows(table, s) for s in range(shards)))
        if over.is_set() or sum(map(len, per_shard)) > cap:
            return None
        out = []
        for row in (r for rows in per_shard for r in rows):
            inverted, event_id = row["RowKey"].split("_", 1)
            out.append((MAX_TS_MS - int(inverted), event_id, row))
        out.sort(key=lambda x: (x[0], x[1]))
        return out

    # ---- retention -----------------------------------------------------------------------

    async def purge_expired(
        self, retention: Mapping[str, int], *, now: float | None = None, budget_seconds: float = 240.0
    ) -> dict[str, int]:
        """Delete hour partitions older than each tenant's retentionDays (`retention`: tenant ->
        retentionDays, every tenant that can have data: those with a stored config); returns counts.

        Per tenant (random order, PURGE_CONCURRENCY at once) one query of the index lists only its
        expired tenant-hours (a RowKey range ending at the cutoff hour; a tenant's hours are also purged
        PURGE_CONCURRENCY at once, for a backlog), so a run reads what it
        deletes plus a query per tenant, not the whole index: that holds a row per tenant-hour kept
        (~720,000 for 1,000 tenants at 30 days), and listing it every hour took longer than the run's
        budget once tenants x retention grew. Each expired hour's shards are deleted at once, with at
        most PURGE_CONCURRENCY delete transactions in flight, each also taking a slot of the
        destination's own limit: live writes keep at least half of it. `left`: expired tenant-hours
        found and not deleted in time, `unchecked`: tenants not reached in time; both the next run's,
        and a figure that grows run after run says the purge falls behind (docs/analytics.md)."""
        now_ms = int((time.time() if now is None else now) * 1000)
        deadline = time.monotonic() + budget_seconds
        order = list(retention.items())
        random.shuffle(order)  # more tenants than a run can reach: each run reaches a different share
        stats = {"tenants": 0, "hours": 0, "entities": 0, "left": 0, "unchecked": 0}
        in_flight = asyncio.Semaphore(PURGE_CONCURRENCY)

        async def purge_tenant(tenant_days: tuple[str, int]) -> None:
            tenant, days = tenant_days
            # Hours before the cutoff's hour ended by the cutoff: they are the tenant's expired ones.
            before = f"{tenant}_{hour_of(now_ms - days * 86_400_000)}"
            rows = [r["RowKey"] async for r in table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": INDEX_PARTITION, "lo": f"{tenant}_", "hi": before}, select=["RowKey"])]
            stats["tenants"] += 1

            async def purge_hour(rk: str) -> None:
                _, hour, shards = rk.rsplit("_", 2)
                counts = await asyncio.gather(*(
                    self._delete_partition(table, partition_key(tenant, hour, shard), in_flight)
                    for shard in range(int(shards))))
                await table.delete_entity(INDEX_PARTITION, rk)  # last: a run cut short finds the hour again
                self._indexed.discard(rk)
                stats["entities"] += sum(counts)

            purged = await each_within(rows, purge_hour, concurrency=PURGE_CONCURRENCY, deadline=deadline)
            stats["hours"] += purged
            stats["left"] += len(rows) - purged

        async with self._table.reading() as table:  # a table gone is created again, and holds nothing
            # Storage down: raised, and the host's retry policy runs the purge again.
            await each_within(order, purge_tenant, concurrency=PURGE_CONCURRENCY, deadline=deadline)
            stats["unchecked"] = len(order) - stats["tenants"]  # not reached when the table was gone
        return stats

    async def _delete_partition(self, table: TableClient, pk: str, in_flight: asyncio.Semaphore) -> int:
        """Every entity of partition `pk`, a page of keys at a time, its transactions at once."""
        deleted = 0
        pages = table.query_entities("PartitionKey eq @pk", parameters={"pk": pk},
                                     select=["RowKey"]).by_page()
        async for page in pages:  # deleting rows already listed leaves the next page's position alone
            keys = [{"PartitionKey": pk, "RowKey": e["RowKey"]} async for e in page]
            await asyncio.gather(*(self._delete_transaction(table, keys[i:i + MAX_BATCH_OPS], in_flight)
                                   for i in range(0, len(keys), MAX_BATCH_OPS)))
            deleted += len(keys)
        return deleted

    async def _delete_transaction(self, table: TableClient, keys: list[dict[str, str]],
                                  in_flight: asyncio.Semaphore) -> None:
        async with in_flight, self._limit.slot():
            await table_transactions.delete_all(table, keys)  # another purge's deletions count as done

    async def health(self) -> DependencyHealth:
        start = time.perf_counter()
        async with self._table.reading() as table:
            async for _ in table.query_entities("PartitionKey eq @pk", parameters={"pk": INDEX_PARTITION},
                                                results_per_page=1).by_page():
                break
        return DependencyHealth("analytics", "healthy", round((time.perf_counter() - start) * 1000, 2))

    async def close(self) -> None:
        """The table service client is owned by the service container."""
