"""shared/vector/retention.py on the real local index (sqlite-vec): each configured tenant's documents
older than its retentionDays are purged, within a time budget."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.core.streamconfig import StreamConfig, retention_cutoff
from shared.vector.base import IndexSpec, VectorDoc
from shared.vector.retention import purge_expired, uses_vectors
from shared.vector.sqlite_index import SqliteVecIndex

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def doc(tenant: str, n: int, days_ago: float) -> VectorDoc:
    at = (NOW - timedelta(days=days_ago)).isoformat(timespec="milliseconds")
    return VectorDoc(event_id=f"e{n}", tenant_id=tenant, event_type="RISK_UPDATED", source="ARCHER_GRC",
                     timestamp=at, text="risk", vector=[1.0, 0.0, 0.0, 0.0], model_id="m")


def config(tenant: str, days: int, vector: bool = True) -> StreamConfig:
    return StreamConfig.model_validate({"tenantId": tenant, "retentionDays": days,
                                        "destinations": [{"type": "vector", "enabled": vector}]})


def test_the_cutoff_is_retention_days_before_now_in_utc_to_the_millisecond() -> None:
    assert retention_cutoff(NOW, 30) == "2026-11-07T12:00:00.000Z"


def test_only_configs_naming_the_vector_destination_mean_an_index() -> None:
    assert not uses_vectors({"t-a": StreamConfig.default("t-a")})
    # a tenant that turned the destination off still has documents
    assert uses_vectors({"t-a": StreamConfig.default("t-a"), "t-b": config("t-b", 1, vector=False)})


async def test_each_tenant_keeps_its_own_retention(tmp_path: Path) -> None:
    index = SqliteVecIndex(str(tmp_path / "v.db"), IndexSpec("m", 4))
    await index.open()
    try:
        await index.upsert([doc("short", 1, 2), doc("short", 2, 0.5), doc("long", 3, 2), doc("long", 4, 40),
                            doc("unconfigured", 5, 400)])
        configs = {"short": config("short", 1), "long": config("long", 30)}
        assert await purge_expired(index, configs, now=NOW, budget_seconds=-1) == \
            {"tenants": 0, "documents": 0, "left": 2}  # out of time before the first: the next run does it
        assert await purge_expired(index, configs, now=NOW) == {"tenants": 2, "documents": 2, "left": 0}
        left = [await index.count(t) for t in ("short", "long", "unconfigured")]
        assert left == [1, 1, 1]
    finally:
        await index.close()
