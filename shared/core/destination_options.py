"""Per-destination options inside a stream config (pure models, no I/O).

One class per destination type, joined in `DestinationConfig` by the `type` tag, so a PUT of a
stream config gets the field path of every bad option.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints, ValidationInfo, field_validator

from shared.core.events import EventType, Source

WireFormat = Literal["native", "cloudevents"]

# Slack over KAFKA_DELIVERY_TIMEOUT_MS for a Kafka delivery report to come back (the destination
# waits that long for it); a Kafka attempt's timeoutSeconds must exceed both together.
KAFKA_REPORT_GRACE_SECONDS = 5.0
# The queue trigger polls an idle queue at least this often (host.json maxPollingInterval, default
# 00:01:00): a queued retry can start up to this long after its message became visible.
QUEUE_POLL_MAX_SECONDS = 60.0
# In-process retries wait at most this long between tries (shared.delivery.pipeline keeps to it).
IN_PROCESS_MAX_DELAY_SECONDS = 1.0


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(_Options):
    """How a failed delivery to one destination is retried before it is dead-lettered.

    `inProcessAttempts` quick tries happen inside the request (transient failures only, short
    waits capped at 1 s so a client is not held); then the delivery is parked in the retry queue
    and retried up to `attempts` more times with exponential backoff between
    `backoffSeconds` and `maxBackoffSeconds` (+/- `jitter` as a fraction); each try is bounded
    by `timeoutSeconds` of the dependency not answering (a try queued behind the destination's own
    limit on requests in flight waits while the dependency answers: destinations/own_limit.py).
    Non-transient failures skip straight to the dead-letter table.
    """

    attempts: int = Field(8, ge=0, le=50)  # 2, 4, ... 256 s: about 8.5 min before a dead letter
    inProcessAttempts: int = Field(2, ge=1, le=10)
    backoffSeconds: float = Field(2.0, ge=0, le=3600)
    maxBackoffSeconds: float = Field(300.0, ge=0, le=7 * 86400)  # a queue message is invisible for at most 7 days
    jitter: float = Field(0.2, ge=0, le=1)
    timeoutSeconds: float = Field(10.0, gt=0, le=300)

    def delay(self, attempt: int, rand: float = 0.5) -> float:
        """Backoff before retry number `attempt` (1-based); `rand` in [0, 1) spreads it by +/- jitter."""
        base = min(self.maxBackoffSeconds, self.backoffSeconds * (2 ** max(0, attempt - 1)))
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))

    def horizon_seconds(self) -> float:
        """The longest a delivery can stay undecided, from its first try to its last retry (then it is
        delivered or dead-lettered): every try's timeout, the in-process waits, each queue backoff at
        its jitter maximum, and the queue trigger's poll interval per queued retry."""
        tries = self.inProcessAttempts + self.attempts
        waits = (self.inProcessAttempts - 1) * IN_PROCESS_MAX_DELAY_SECONDS
        backoffs = sum(self.delay(n, rand=1.0) for n in range(1, self.attempts + 1))
        return tries * self.timeoutSeconds + waits + backoffs + self.attempts * QUEUE_POLL_MAX_SECONDS


class RedisStreamOptions(_Options):
    """The tenant's stream is the store of *recent* events (history is the analytics table), and
    the deployed Redis evicts nothing: it is bounded by default, by length and by age, so its memory
    has a ceiling (docs/capacity.md)."""

    format: WireFormat = "native"
    # Length cap per tenant stream (approximate trim: at most one 100-entry node above it); null = none.
    # 10,000 is also how far a filtered GET /events scans.
    maxLen: int | None = Field(10_000, ge=100, le=100_000_000)
    # Age cap of the entries (approximate MINID trim); never kept longer than retentionDays either.
    # 6 hours: at 100 events/s the whole Redis footprint levels off within a 6 GB cache's 80 % alert
    # line however many tenants share the rate (docs/capacity.md).
    retentionHours: int = Field(6, ge=1, le=3650 * 24)
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


TopicName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]


class KafkaRoute(_Options):
    """Sends to `topic` the events whose type and source are listed (an empty list matches any)."""

    topic: TopicName
    # Plain strings checked against the event vocabulary (the values clients send).
    eventTypes: list[Annotated[str, StringConstraints(pattern=r"^[A-Z_]{1,64}$")]] = Field(
        default_factory=list, max_length=64)
    sources: list[Annotated[str, StringConstraints(pattern=r"^[A-Z_]{1,64}$")]] = Field(
        default_factory=list, max_length=16)

    @field_validator("eventTypes", "sources")
    @classmethod
    def _known(cls, v: list[str], info: ValidationInfo) -> list[str]:
        enum = EventType if info.field_name == "eventTypes" else Source
        unknown = [x for x in v if x not in enum.__members__]
        if unknown:
            raise ValueError(f"unknown {info.field_name}: {', '.join(unknown)}")
        return v


class KafkaOptions(_Options):
    # native: the event JSON as the value; cloudevents: CloudEvents Kafka binding, binary mode
    # (ce_* headers, the event's data as the value).
    format: WireFormat = "native"
    # Message key (= Event Hubs partition key): tenantId keeps one tenant's events in order;
    # entityId (falls back to tenantId when absent) keeps order per entity and spreads load.
    key: Literal["tenantId", "entityId"] = "tenantId"
    # Per-topic matches; topics are the stream config's `topics` plus any named here.
    routes: list[KafkaRoute] = Field(default_factory=list, max_length=32)
    # None: the EVENTHUBS_TRANSPORT setting decides.
    transport: Literal["kafka", "amqp"] | None = None


class KafkaRetryPolicy(RetryPolicy):
    """A Kafka attempt must outlast the producer's delivery timeout (KAFKA_DELIVERY_TIMEOUT_MS): cut
    short, a message still queued in librdkafka could land after the retry and be delivered twice.
    So its default attempt timeout is 60 s, also when a config gives a `retry` block without one."""

    timeoutSeconds: float = Field(60.0, gt=0, le=300)


class KafkaDestinationConfig(_Options):
    type: Literal["kafka"]
    enabled: bool = True
    config: KafkaOptions = Field(default_factory=KafkaOptions)
    retry: KafkaRetryPolicy = Field(default_factory=KafkaRetryPolicy)


class VectorOptions(_Options):
    """No options yet: what is indexed (the text template) and where (VECTOR_* settings) are
    service-wide, so one index and one embedder serve every tenant."""


class VectorDestinationConfig(_Options):
    """Semantic search (docs/vector-search.md): events are queued, then embedded and indexed."""

    type: Literal["vector"]
    enabled: bool = True
    config: VectorOptions = Field(default_factory=VectorOptions)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


_Union = Annotated[
    Union[RedisDestinationConfig, KafkaDestinationConfig, AnalyticsDestinationConfig, VectorDestinationConfig],
    Field(discriminator="type"),
]


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


def delivery_window_problems(destinations: Sequence[DestinationConfig],
                             kafka_delivery_timeout_ms: int) -> list[tuple[tuple[Any, ...], str]]:
    """What makes a config's delivery guarantees untrue (docs/delivery.md), as (location, detail):

    - Redis: the per-event marker that makes a retried write idempotent must outlive the retries
      (`dedupeSeconds` >= the retry horizon), or be off on purpose (0).
    - Kafka: an attempt cut short by `timeoutSeconds` while the producer still holds the message
      (up to KAFKA_DELIVERY_TIMEOUT_MS + the report grace) could land after its retry: twice.
    """
    out: list[tuple[tuple[Any, ...], str]] = []
    for i, dest in enumerate(destinations):
        root, retry = dest.root, dest.retry
        if isinstance(root, RedisDestinationConfig):
            window, horizon = root.config.dedupeSeconds, retry.horizon_seconds()
            if window and window < horizon:
                out.append((("destinations", i, "config", "dedupeSeconds"),
                            f"{window} s does not cover this destination's retry horizon of {horizon:.0f} s "
                            f"(tries x timeoutSeconds + backoffs + queue polling): raise it (at most "
                            f"{7 * 86400}), shorten the retry policy, or set 0 to turn deduplication off"))
        elif isinstance(root, KafkaDestinationConfig):
            needed = kafka_delivery_timeout_ms / 1000 + KAFKA_REPORT_GRACE_SECONDS
            if retry.timeoutSeconds <= needed:
                out.append((("destinations", i, "retry", "timeoutSeconds"),
                            f"{retry.timeoutSeconds:g} s must exceed KAFKA_DELIVERY_TIMEOUT_MS "
                            f"({kafka_delivery_timeout_ms} ms) + {KAFKA_REPORT_GRACE_SECONDS:g} s for the delivery "
                            f"report, i.e. be more than {needed:g} s: a send cut short could land after its retry"))
    return out
