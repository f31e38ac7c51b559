"""Resource figures of this instance and of Redis, for alerts, /health and the monitor timer.

Memory of the instance: the process's resident set (psutil) against the memory the instance may
use -- the container's cgroup limit when there is one (v2 `memory.max`, v1
`memory.limit_in_bytes`), else the machine's physical memory. Azure Functions on Linux runs each
instance in a container whose cgroup limit is the plan's memory size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from redis.asyncio import Redis

CGROUP_V2 = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
_UNLIMITED_V1 = 1 << 60  # v1 reports "no limit" as a huge page-aligned number


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    rss_bytes: int
    limit_bytes: int
    limit_source: str  # cgroup-v2 | cgroup-v1 | physical

    @property
    def percent(self) -> float:
        return round(self.rss_bytes * 100.0 / self.limit_bytes, 2) if self.limit_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rssBytes": self.rss_bytes, "limitBytes": self.limit_bytes, "limitSource": self.limit_source,
                "percent": self.percent}


def cgroup_limit(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> tuple[int, str] | None:
    """The container's memory limit in bytes, or None when not limited / not in a cgroup."""
    try:
        raw = v2.read_text().strip()
        if raw and raw != "max":
            return int(raw), "cgroup-v2"
        if raw == "max":
            return None
    except (OSError, ValueError):
        pass
    try:
        value = int(v1.read_text().strip())
        if 0 < value < _UNLIMITED_V1:
            return value, "cgroup-v1"
    except (OSError, ValueError):
        pass
    return None


def memory_usage(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> MemoryUsage:
    rss = int(psutil.Process().memory_info().rss)
    physical = int(psutil.virtual_memory().total)
    limit = cgroup_limit(v2, v1)
    if limit is None or limit[0] > physical:  # a limit above the machine's memory does not bind
        return MemoryUsage(rss, physical, "physical")
    return MemoryUsage(rss, limit[0], limit[1])


async def redis_memory(client: Redis) -> dict[str, Any]:
    """Redis memory use and headroom against maxmemory (INFO memory). maxmemory 0 = no limit set."""
    info = await client.info("memory")
    used = int(info.get("used_memory", 0))
    maxmem = int(info.get("maxmemory", 0))
    return {
        "usedBytes": used,
        "maxMemoryBytes": maxmem or None,
        "headroomBytes": max(0, maxmem - used) if maxmem else None,
        "percent": round(used * 100.0 / maxmem, 2) if maxmem else None,
        "policy": _text(info.get("maxmemory_policy")),
    }


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)
