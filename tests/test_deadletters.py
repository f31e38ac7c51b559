"""The one dead-letter store (delivery/deadletters.py) through the HTTP functions."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from shared.core import limits
from shared.core.enrich import enrich, now_iso
from shared.core.events import EventIn, utc_now_iso
from shared.delivery.deadletters import DeadLetters, is_record_id
from tests.doubles import event_dict
from tests.functions_client import invoke

pytestmark = pytest.mark.usefixtures("app_services")


# The last: 300 characters, 1,200 bytes of UTF-16 (a key holds 1 KiB).
@pytest.mark.parametrize("rid", ["ÿP/T}", "a#b", "what?", "C\n", "\x16", "\U0001D11E" * 300])
async def test_an_id_no_table_key_can_hold_is_not_found_never_an_outage(rid: str) -> None:
    """Found by the fuzz test: such an id sent to the table made Azurite answer 500 (read as a 503)."""
    assert not is_record_id(rid)
    tenant = f"dl-{uuid.uuid4().hex[:8]}"
    status, _, body = await invoke("replay_deadletters", "POST", f"/deadletters/{tenant}/replay", {"ids": [rid]},
                                   route={"tenantId": tenant})
    assert status == 200 and body["results"] == [{"id": rid, "result": "not found"}]


async def _dead_letter(services: object, tenant: str) -> str:
    """A delivery to Redis given up on: its record id."""
    ev = enrich(EventIn.model_validate(event_dict(tenantId=tenant)), ingested_at=now_iso())
    entity = await services.deadletters.record_delivery(  # type: ignore[attr-defined]
        tenant, "redis", ev.to_dict(), "test", attempts=3, last_error="redis unavailable",
        first_failure_at=utc_now_iso())
    return str(entity["RowKey"])


async def test_a_replay_that_cannot_read_its_records_in_time_answers_503_and_changes_nothing(
        app_services: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Table store hangs (a read that never answers stands in for it here; the system tier freezes
    Azurite): 503 with Retry-After within the read deadline, nothing replayed, nothing audited. Then,
    with the store answering, the same replay goes through once."""
    tenant = f"dl-{uuid.uuid4().hex[:8]}"
    rid = await _dead_letter(app_services, tenant)
    monkeypatch.setattr(limits, "STORAGE_READ_SECONDS", 0.3)
    real_get = DeadLetters.get

    async def hanging_get(self: DeadLetters, tenant_id: str, record: str) -> object:
        await asyncio.sleep(30)
        return await real_get(self, tenant_id, record)

    monkeypatch.setattr(DeadLetters, "get", hanging_get)
    started = time.monotonic()
    replay = f"/deadletters/{tenant}/replay"
    status, headers, body = await invoke("replay_deadletters", "POST", replay, {"ids": [rid]},
                                         route={"tenantId": tenant})
    assert status == 503 and int(headers["Retry-After"]) > 0, body
    assert "nothing was replayed" in body["detail"], body
    assert time.monotonic() - started < 2.0
    monkeypatch.setattr(DeadLetters, "get", real_get)
    status, _, listed = await invoke("list_deadletters", "GET", f"/deadletters/{tenant}",
                                     route={"tenantId": tenant})
    assert status == 200 and [d["id"] for d in listed["deadLetters"]] == [rid]  # still waiting, not replayed
    status, _, trail = await invoke("get_audit", "GET", f"/audit/{tenant}", route={"tenantId": tenant})
    assert status == 200 and trail["items"] == []
    status, _, body = await invoke("replay_deadletters", "POST", replay, {"ids": [rid, rid]},
                                   route={"tenantId": tenant})
    assert status == 200 and body["results"] == [{"id": rid, "result": "delivered"}], body


async def test_the_purge_deletes_records_past_their_tenants_retention_within_its_budget(
        app_services: object) -> None:
    """Records older than the tenant's retentionDays go; another tenant's (a longer retention) and the
    retry queue's claim-check rows stay; a run out of time leaves the rest for the next one."""
    from datetime import UTC, datetime, timedelta

    store = DeadLetters(app_services.tables, "dlpurge" + uuid.uuid4().hex[:10])  # type: ignore[attr-defined]
    short, long_ = f"dl-{uuid.uuid4().hex[:8]}", f"dl-{uuid.uuid4().hex[:8]}"
    for t in (short, long_):
        for _ in range(3):
            ev = enrich(EventIn.model_validate(event_dict(tenantId=t)), ingested_at=now_iso())
            await store.record_delivery(t, "redis", ev.to_dict(), "test", attempts=3, last_error="down",
                                        first_failure_at=utc_now_iso())
    claim = await store.put_payload(short, event_dict(tenantId=short))
    now = datetime.now(UTC) + timedelta(days=5)  # the records are five days old

    async def retention(tenants: list[str]) -> dict[str, int]:
        return {short: 2, long_: 30}

    out_of_time = await store.purge_expired(retention, now=now, budget_seconds=-1)
    assert out_of_time == {"records": 0, "kept": 3, "left": 3}
    assert await store.purge_expired(retention, now=now) == {"records": 3, "kept": 3, "left": 0}
    assert (await store.list(short, limit=10)).items == []
    assert len((await store.list(long_, limit=10)).items) == 3
    assert (await store.get_payload(short, claim))["tenantId"] == short  # not a record: never purged
    await app_services.tables.delete_table(store._table.name)  # type: ignore[attr-defined]
