"""The host's function retry policies (`@app.retry`): fixed_delay and exponential_backoff."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def timespan_seconds(value: str | None) -> float:
    """`hh:mm:ss[.fff]` or `d.hh:mm:ss` (.NET TimeSpan) -> seconds."""
    if not value:
        return 0.0
    days = 0
    if value.count(":") == 2 and "." in value.split(":")[0]:
        d, value = value.split(".", 1)
        days = int(d)
    h, m, s = value.split(":")
    return days * 86_400 + int(h) * 3600 + int(m) * 60 + float(s)


@dataclass(frozen=True)
class RetryPolicy:
    strategy: str
    max_retry_count: int  # -1 = forever
    delay_s: float = 0.0
    minimum_s: float = 0.0
    maximum_s: float = 0.0

    @classmethod
    def from_setting(cls, setting: dict[str, Any] | None) -> RetryPolicy | None:
        if not setting:
            return None
        return cls(
            strategy=str(setting.get("strategy", "fixed_delay")).lower(),
            max_retry_count=int(setting.get("max_retry_count", 0)),
            delay_s=timespan_seconds(setting.get("delay_interval")),
            minimum_s=timespan_seconds(setting.get("minimum_interval")),
            maximum_s=timespan_seconds(setting.get("maximum_interval")),
        )

    def delay(self, retry_index: int) -> float:
        """Seconds before retry number `retry_index + 1`."""
        if self.strategy in ("exponential_backoff", "exponentialbackoff"):
            return min(self.maximum_s or float("inf"), self.minimum_s * (2 ** retry_index))
        return self.delay_s
