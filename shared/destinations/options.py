"""Per-destination options inside a stream config (pure models, no I/O).

One class per destination type, joined in `DestinationConfig` by the `type` tag, so a PUT of a
stream config gets the field path of every bad option.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

WireFormat = Literal["native", "cloudevents"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(_Options):
    """How a failed delivery to one destination is retried before it is dead-lettered.

    `inProcessAttempts` quick tries happen inside the request (transient failures only, short
    waits capped at 1 s so a client is not held); then the delivery is parked in the retry queue
    and retried up to `attempts` more times with exponential backoff between
    `backoffSeconds` and `maxBackoffSeconds` (+/- `jitter` as a fraction); each try is bounded
    by `timeoutSeconds`. Non-transient failures skip straight to the dead-letter table.
    """

    attempts: int = Field(5, ge=0, le=50)
    inProcessAttempts: int = Field(2, ge=1, le=10)
    backoffSeconds: float = Field(2.0, ge=0, le=3600)
    maxBackoffSeconds: float = Field(300.0, ge=0, le=7 * 86400)  # a queue message is invisible for at most 7 days
    jitter: float = Field(0.2, ge=0, le=1)
    timeoutSeconds: float = Field(10.0, gt=0, le=300)

    def delay(self, attempt: int, rand: float = 0.5) -> float:
        """Backoff before retry number `attempt` (1-based); `rand` in [0, 1) spreads it by +/- jitter."""
        base = min(self.maxBackoffSeconds, self.backoffSeconds * (2 ** max(0, attempt - 1)))
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))


class RedisStreamOptions(_Options):
    format: WireFormat = "native"
    # Length cap per tenant stream (approximate trim); retention by retentionDays applies too.
    maxLen: int | None = Field(None, ge=100, le=100_000_000)
    # How long a per-event marker makes retried writes idempotent (0 = plain XADD, no marker).
    dedupeSeconds: int = Field(3600, ge=0, le=7 * 86400)


class RedisDestinationConfig(_Options):
    type: Literal["redis"]
    enabled: bool = True
    config: RedisStreamOptions = Field(default_factory=RedisStreamOptions)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class AnalyticsOptions(_Options):
    # Partitions per tenant-hour: one Table partition takes ~2,000 entities/s, so N shards spread
    # one tenant's writes over N partitions; history reads fan out over the N and merge.
    shards: int = Field(4, ge=1, le=32)


class AnalyticsDestinationConfig(_Options):
    type: Literal["analytics"]
    enabled: bool = True
    config: AnalyticsOptions = Field(default_factory=AnalyticsOptions)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


_Union = Annotated[Union[RedisDestinationConfig, AnalyticsDestinationConfig], Field(discriminator="type")]


class DestinationConfig(RootModel[_Union]):
    """`{type, enabled, config}`; `config` is checked against the type's options."""

    @property
    def type(self) -> str:
        return self.root.type

    @property
    def enabled(self) -> bool:
        return self.root.enabled

    @property
    def options(self) -> BaseModel:
        return self.root.config

    @property
    def retry(self) -> RetryPolicy:
        # getattr: a destination model without a `retry` field gets the defaults.
        return getattr(self.root, "retry", None) or RetryPolicy()
