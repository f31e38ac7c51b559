"""Append-only audit trail against real Azurite Tables."""
from __future__ import annotations

import hashlib
import uuid
from typing import AsyncIterator

import orjson
import pytest
from azure.data.tables.aio import TableServiceClient

from shared.security.audit import MAX_PARTS, AuditLog, row_key
from shared.security.principal import Principal
from shared.storage.payload import STRING_CHUNK_UTF16_BYTES as CHUNK_UTF16_BYTES


@pytest.fixture
async def audit(storage_connection_string: str) -> AsyncIterator[AuditLog]:
    async with TableServiceClient.from_connection_string(storage_connection_string) as tables:
        yield AuditLog(tables, "audit" + uuid.uuid4().hex[:8])


def tenant() -> str:
    return "t-" + uuid.uuid4().hex[:12]


ACTOR = Principal(subject="oid-1", name="ops@contoso.com", tenants=frozenset({"acme"}), auth_method="jwt")


async def test_record_and_list_newest_first(audit: AuditLog) -> None:
    t = tenant()
    for i in range(3):
        await audit.record(t, ACTOR, "stream-config.put", f"stream-config/{t}", {"v": i}, {"v": i + 1}, f"c-{i}")
    page = await audit.list(t)
    assert [r.before for r in page.items] == [{"v": 2}, {"v": 1}, {"v": 0}]
    first = page.items[0]
    assert (first.actor, first.actorName, first.authMethod, first.action, first.correlationId, first.after) == \
        ("oid-1", "ops@contoso.com", "jwt", "stream-config.put", "c-2", {"v": 3})
    assert first.at.endswith("Z") and first.tenantId == t
    assert page.continuation is None


async def test_tenants_are_separate_partitions(audit: AuditLog) -> None:
    a, b = tenant(), tenant()
    await audit.record(a, "svc-a", "replay", "dlq/1", None, {"n": 1})
    await audit.record(b, "svc-b", "replay", "dlq/2", None, {"n": 2})
    assert [r.actor for r in (await audit.list(a)).items] == ["svc-a"]
    assert [r.actor for r in (await audit.list(b)).items] == ["svc-b"]


async def test_paging_with_continuation(audit: AuditLog) -> None:
    t = tenant()
    for i in range(7):
        await audit.record(t, "svc", "admin", "x", None, i)
    seen: list[int] = []
    cont: str | None = None
    pages = 0
    while True:
        page = await audit.list(t, limit=3, after=cont)
        seen += [r.after for r in page.items]
        pages += 1
        cont = page.continuation
        if cont is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1, 0] and pages == 3


async def test_bad_input_is_rejected(audit: AuditLog) -> None:
    with pytest.raises(ValueError):
        await audit.list(tenant(), after="' or PartitionKey ne '")
    with pytest.raises(ValueError):
        await audit.list(tenant(), limit=0)
    with pytest.raises(ValueError):
        await audit.record("Not A Tenant", "svc", "a", "t", None, None)


async def test_append_only_never_overwrites(audit: AuditLog, storage_connection_string: str) -> None:
    t = tenant()
    rec = await audit.record(t, "svc", "admin", "x", None, {"first": True})
    table = await audit.table()
    from azure.core.exceptions import ResourceExistsError
    with pytest.raises(ResourceExistsError):  # the insert-only call the module uses refuses an existing row
        await table.create_entity({"PartitionKey": t, "RowKey": rec.id, "Action": "tamper"})
    assert (await audit.list(t)).items[0].after == {"first": True}
    assert not any(hasattr(audit, m) for m in ("update", "upsert", "delete"))


async def test_large_documents_are_split_and_round_trip(audit: AuditLog) -> None:
    t = tenant()
    big = {"rules": ["x" * 1000 + str(i) for i in range(150)], "emoji": "\U0001F600" * 20000}  # ~230 KB
    rec = await audit.record(t, "svc", "stream-config.put", "cfg", big, {"small": 1})
    assert rec.before == big
    stored = (await audit.list(t)).items[0]
    assert stored.before == big and stored.after == {"small": 1}
    entity = await (await audit.table()).get_entity(t, rec.id)
    parts = [entity[f"Before_{i}"] for i in range(entity["BeforeChunks"])]
    assert len(parts) > 1
    assert all(len(p.encode("utf-16-le")) <= CHUNK_UTF16_BYTES for p in parts)


async def test_oversized_documents_are_truncated_with_hash(audit: AuditLog) -> None:
    t = tenant()
    huge = {"blob": "y" * 600_000}
    doc = orjson.dumps(huge, option=orjson.OPT_SORT_KEYS)
    rec = await audit.record(t, "svc", "stream-config.put", "cfg", huge, None)
    stored = (await audit.list(t)).items[0]
    assert stored.id == rec.id and stored.after is None
    assert stored.before["truncated"] is True
    assert stored.before["sha256"] == hashlib.sha256(doc).hexdigest()
    assert stored.before["bytes"] == len(doc)
    assert len(stored.before["preview"]) == MAX_PARTS * CHUNK_UTF16_BYTES // 2
    assert doc.decode().startswith(stored.before["preview"])


async def test_records_written_before_the_payload_codec_read_back(audit: AuditLog) -> None:
    """Before0..n + BeforeParts (the audit trail's own layout until the one codec) still read."""
    t = tenant()
    rec = await audit.record(t, ACTOR, "stream-config.put", "cfg", None, None)
    legacy = {"PartitionKey": t, "RowKey": row_key(), "At": rec.at, "Actor": "old", "Action": "x", "Target": "y",
              "BeforeParts": 2, "Before0": '{"rules":["a",', "Before1": '"b"]}', "BeforeTruncated": False,
              "AfterParts": 1, "After0": "null", "AfterTruncated": False}
    await (await audit.table()).create_entity(legacy)
    listed = {r.id: r for r in (await audit.list(t)).items}
    assert listed[legacy["RowKey"]].before == {"rules": ["a", "b"]} and listed[legacy["RowKey"]].after is None


def test_row_keys_sort_newest_first() -> None:
    older, newer = row_key(1_700_000_000_000_000), row_key(1_700_000_000_000_001)
    assert newer < older and len(newer) == 25
