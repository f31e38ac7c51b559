"""Append-only audit trail in an Azure Table: who did what to which target, before and after.

Entity: PartitionKey = tenant, RowKey = `<inverted microsecond timestamp, 16 digits>-<8 hex>`, so a
partition lists newest first and two writes in the same microsecond never collide. Records are only
ever inserted (`create_entity`): this module has no update, upsert or delete, and a RowKey clash is
retried with a new suffix instead of overwriting. In Azure, give the app's identity a role that
cannot delete from the table if tampering by the app itself must be excluded (docs/security.md).

`before` / `after` are stored as JSON through the one chunked-payload codec (shared/storage/payload.py:
`Before`, or `Before_0..n` string properties of at most 64,000 bytes UTF-16 each, the Table limit
being 64 KiB per string), with `BeforeSha256` and `BeforeBytes` of the whole document. Beyond
MAX_PARTS parts (about 192 KB of ASCII JSON per side, keeping the entity under the 1 MiB limit) the
rest is dropped and `BeforeTruncated` set; the hash still proves what the full document was.
Records written before the codec (`Before0..n`, `BeforeParts`) read back as they were.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableClient, TableServiceClient
from pydantic import BaseModel, ConfigDict

from shared.core.answer_cap import json_size
from shared.core.events import UNMAPPED_TENANT, is_tenant_id
from shared.security.principal import Principal
from shared.storage import payload
from shared.storage.capped_query import CappedPage, capped_list
from shared.storage.lazy import LazyTable
from shared.storage.payload import split_utf16

MAX_PARTS = 6  # string properties per side
MAX_FIELD = 1024  # actor, action, target, correlation id: short identifiers, capped
MAX_LIST_LIMIT = 1000
_INVERT_FROM = 10**16 - 1  # microseconds since 1970 stay below this until the year 2286
ROW_KEY = re.compile(r"^\d{16}-[0-9a-f]{8}$")


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    tenantId: str
    at: str
    actor: str
    actorName: str = ""
    authMethod: str = ""
    action: str
    target: str
    correlationId: str = ""
    before: Any = None
    after: Any = None


class AuditPage(BaseModel):
    items: list[AuditRecord]
    continuation: str | None = None
    truncated: bool = False  # fewer than `limit`: the page reached the answer's byte cap


def row_key(now_us: int | None = None) -> str:
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    return f"{_INVERT_FROM - now_us:016d}-{secrets.token_hex(4)}"


def _pack(prefix: str, value: Any) -> dict[str, Any]:
    """`value` as JSON through the one payload codec, with the whole document's hash and size;
    beyond MAX_PARTS string properties the rest is dropped and `{prefix}Truncated` set."""
    doc = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    parts = split_utf16(doc.decode())
    truncated = len(parts) > MAX_PARTS
    stored, _ = payload.encode("".join(parts[:MAX_PARTS]).encode() if truncated else doc, prefix)
    return {f"{prefix}Sha256": hashlib.sha256(doc).hexdigest(), f"{prefix}Bytes": len(doc),
            f"{prefix}Truncated": truncated, **stored}


def _unpack(prefix: str, entity: dict[str, Any]) -> Any:
    if f"{prefix}Parts" in entity:  # a record written before the one codec: {prefix}0..n
        text = "".join(entity.get(f"{prefix}{i}", "") for i in range(int(entity[f"{prefix}Parts"])))
    else:
        raw = payload.decode(entity, prefix) or ""
        text = raw.decode() if isinstance(raw, bytes) else raw
    if entity.get(f"{prefix}Truncated"):
        return {
            "truncated": True,
            "sha256": entity.get(f"{prefix}Sha256"),
            "bytes": entity.get(f"{prefix}Bytes"),
            "preview": text,
        }
    return orjson.loads(text) if text else None


def _partition(tenant: str) -> bool:
    """A tenant's trail, or the one of admin actions on dead letters that name no valid tenant."""
    return is_tenant_id(tenant) or tenant == UNMAPPED_TENANT


def _short(value: str) -> str:
    return value[:MAX_FIELD]


class AuditLog:
    def __init__(self, tables: TableServiceClient, table_name: str) -> None:
        self._table = LazyTable(tables, table_name)

    async def table(self) -> TableClient:
        return await self._table.get()

    async def record(
        self,
        tenant: str,
        actor: Principal | str,
        action: str,
        target: str,
        before: Any,
        after: Any,
        correlation_id: str = "",
    ) -> AuditRecord:
        """Append one record; returns it as `list` would."""
        if not _partition(tenant):
            raise ValueError("invalid tenant id")
        if isinstance(actor, Principal):
            who = {"Actor": _short(actor.subject), "ActorName": _short(actor.name),
                   "AuthMethod": actor.auth_method}
        else:
            who = {"Actor": _short(actor), "ActorName": "", "AuthMethod": ""}
        entity: dict[str, Any] = {
            "PartitionKey": tenant,
            "At": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            **who,
            "Action": _short(action),
            "Target": _short(target),
            "CorrelationId": _short(correlation_id),
            **_pack("Before", before),
            **_pack("After", after),
        }
        for _ in range(3):
            entity["RowKey"] = row_key()
            try:
                # insert only: an existing row is never replaced
                await self._table.call("create_entity", entity)
                break
            except ResourceExistsError:
                continue
        else:
            raise RuntimeError("audit RowKey collided three times")
        return _record(entity)

    async def list(self, tenant: str, limit: int = 100, after: str | None = None) -> AuditPage:
        """Newest first: up to `limit` records and at most the answer's byte cap of them (one at least;
        shared/core/answer_cap.py: a record holds up to ~400 KB). `after` = the `continuation` of the
        previous page (the last RowKey it held; the API signs it as a continuation token,
        shared/storage/pagetokens.py); it can only move within `tenant`'s partition, so it cannot reach
        another tenant's records."""
        if not _partition(tenant):
            raise ValueError("invalid tenant id")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIST_LIMIT}")
        if after is not None and not is_position(after):
            raise ValueError("invalid continuation")
        page: CappedPage[AuditRecord] = CappedPage([], None, False)
        async with self._table.reading() as table:
            page = await capped_list(table, "PartitionKey eq @pk", {"pk": tenant}, limit=limit, after=after,
                                     item=_sized_record)
        return AuditPage(items=page.items, continuation=page.after, truncated=page.truncated)


def is_position(value: Any) -> bool:
    """A position `AuditLog.list` issued: a record's RowKey."""
    return isinstance(value, str) and ROW_KEY.fullmatch(value) is not None


def _sized_record(entity: dict[str, Any]) -> tuple[AuditRecord, int]:
    record = _record(entity)
    return record, json_size(record.model_dump_json())


def _record(entity: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        id=entity["RowKey"],
        tenantId=entity["PartitionKey"],
        at=entity.get("At", ""),
        actor=entity.get("Actor", ""),
        actorName=entity.get("ActorName", ""),
        authMethod=entity.get("AuthMethod", ""),
        action=entity.get("Action", ""),
        target=entity.get("Target", ""),
        correlationId=entity.get("CorrelationId", ""),
        before=_unpack("Before", entity),
        after=_unpack("After", entity),
    )
