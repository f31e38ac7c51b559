"""The analytics store's hour (`yyyyMMddHH`, UTC): the unit it partitions, indexes and purges by,
and the unit a backfill walks through (docs/analytics.md, docs/backfill.md)."""
from __future__ import annotations

from datetime import UTC, datetime

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def hour_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%d%H")


def hour_start_ms(hour: str) -> int:
    return int(datetime.strptime(hour, "%Y%m%d%H").replace(tzinfo=UTC).timestamp() * 1000)
