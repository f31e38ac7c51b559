"""The health of one dependency, as every check reports it (/health, the monitor pass, destinations)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

HealthState = Literal["healthy", "degraded", "unhealthy"]


@dataclass
class DependencyHealth:
    name: str
    status: HealthState
    latency_ms: float | None = None
    detail: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "latencyMs": self.latency_ms}
        if self.detail:
            out["detail"] = self.detail
        if self.info:
            out.update(self.info)
        return out
