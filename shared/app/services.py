"""The instance's long-lived clients and components, one set per event loop.

Functions instances are reused across invocations, so clients are built once and kept; they are
bound to the event loop that made them (the Functions worker has one; tests get a new loop per
test), hence one container per running loop.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Callable

from shared.changefeed.leases import FeedStarts, container_of
from shared.changefeed.processor import ChangeFeedProcessor
from shared.changefeed.rules import Kind
from shared.changefeed.state import EntityState
from shared.core.backfill import sub_batch_size
from shared.core.per_loop import PerLoop
from shared.core.settings import Settings, get_settings
from shared.delivery.backfill_store import BackfillStore
from shared.delivery.configstore import ConfigStore
from shared.delivery.deadletters import CHANGEFEED_DOCUMENT, CHANGEFEED_EVENT, DeadLetters
from shared.delivery.idempotency import DedupePolicy, IdempotencyStore
from shared.delivery.pipeline import Pipeline
from shared.delivery.replay import Replayer
from shared.delivery.retry_queue import RetryQueue
from shared.destinations.analytics import AnalyticsDestination
from shared.destinations.base import Destination
from shared.destinations.kafka import KafkaDestination
from shared.destinations.kafka_readback import KafkaReadBack
from shared.destinations.redis_streams import RedisStreamsDestination
from shared.destinations.vector import VectorQueueDestination
from shared.observability import service_stats
from shared.observability.system_events import DestinationFailureHook
from shared.observability.tenant_metrics import TenantMetrics
from shared.security.audit import AuditLog
from shared.security.ratelimit import RateLimiter
from shared.storage.clients import managed_identity, queue_service, table_service
from shared.storage.cosmosdb import SharedCosmos
from shared.storage.lazy import LazyQueue
from shared.storage.pagetokens import PageTokens
from shared.storage.redisconn import create_redis

DestinationFactory = Callable[["Services"], Destination]

# type -> factory; a destination is built the first time a tenant's config routes to it.
DESTINATION_FACTORIES: dict[str, DestinationFactory] = {
    "redis": lambda s: RedisStreamsDestination(s.redis),
    "analytics": lambda s: AnalyticsDestination(s.tables, s.settings.analytics_table),
    "kafka": lambda s: KafkaDestination(s.settings),
    "vector": lambda s: VectorQueueDestination(s.settings, s.queues),
}


class DestinationRegistry:
    def __init__(self, services: "Services") -> None:
        self._services = services
        self._built: dict[str, Destination] = {}

    def get(self, type_: str) -> Destination | None:
        dest = self._built.get(type_)
        if dest is None:
            factory = DESTINATION_FACTORIES.get(type_)
            if factory is None:
                return None
            dest = self._built[type_] = factory(self._services)
        return dest

    def built(self) -> dict[str, Destination]:
        return dict(self._built)

    async def close(self) -> None:
        for dest in self._built.values():
            await dest.close()
        self._built.clear()


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._identity: Any = None
        self.redis = create_redis(settings)
        self.tables = table_service(settings, self.storage_credential())
        self.configs = ConfigStore(self.tables, settings.stream_config_table, self.redis,
                                   settings.stream_config_cache_seconds)
        self.metrics = TenantMetrics(self.redis, settings.metrics_flush_ms / 1000.0)
        self.destinations = DestinationRegistry(self)
        self.queues = queue_service(settings, self.storage_credential())
        # One Cosmos client for the instance: the overdue timer, the feed-start lookup and /health.
        self.cosmos = SharedCosmos(settings, self.identity)
        self.deadletters = DeadLetters(self.tables, settings.deadletter_table)
        self.retries = RetryQueue(self.queues, settings.retry_queue, self.deadletters)
        self.idempotency = IdempotencyStore(self.redis, settings.idempotency_window_seconds,
                                            pending_seconds=settings.idempotency_pending_seconds)
        self.pipeline = Pipeline(self.configs, self.destinations, self.metrics, parker=self.retries,
                                 idempotency=self.idempotency)
        self.ratelimit = RateLimiter(self.redis, rate=settings.rate_limit_events_per_second,
                                     burst=settings.rate_limit_burst)
        self.audit = AuditLog(self.tables, settings.audit_table)
        # Backfills (docs/backfill.md): jobs and slots, the chunk queue, the per-tenant throttle (a
        # token bucket of its own, so a backfill never spends the tenant's API rate limit).
        self.backfills = BackfillStore(self.tables, settings.backfill_table)
        self.backfill_queue = LazyQueue(self.queues, settings.backfill_queue)
        rate = settings.backfill_events_per_second
        self.backfill_throttle = RateLimiter(self.redis, rate=rate, burst=max(int(rate), sub_batch_size(rate)),
                                             name="backfill")
        # Observability hooks (after metrics): App Insights counters of the batch and the instance's
        # memory gauge (no-op without a connection string), then the error log and SYSTEM_ERROR
        # event per tenant and failed destination (ignores system batches).
        self.pipeline.hooks.append(service_stats.telemetry_hook)
        self.failure_hook = DestinationFailureHook(self.pipeline, background=True)
        self.pipeline.hooks.append(self.failure_hook)

    def identity(self) -> Any:
        """The instance's one async managed-identity credential (Azure), built on first use and shared by
        Tables, Queues and Cosmos DB: one token cache, not one token request per client or call."""
        if self._identity is None:
            self._identity = managed_identity()
        return self._identity

    def storage_credential(self) -> Any:
        """The identity for Storage clients, or None when a connection string is set (locally)."""
        return None if self.settings.storage_connection_string else self.identity()

    @cached_property
    def page_tokens(self) -> PageTokens:
        """The continuation-token codec (built on first use: only paged reads need PAGE_TOKEN_KEY)."""
        return PageTokens.from_settings(self.settings)

    @cached_property
    def changefeed(self) -> ChangeFeedProcessor:
        """The change-feed processor (built on first use: only the Cosmos DB triggers need it)."""
        s = self.settings
        starts = FeedStarts(self.cosmos, s.cosmos_database, s.cosmos_lease_container,
                            {kind: container_of(s, kind) for kind in Kind}) if s.cosmos_endpoint else None
        return ChangeFeedProcessor(
            state=EntityState(self.redis, s.changefeed_state_ttl_days * 86_400),
            dedupe=DedupePolicy(s.changefeed_dedup_ttl_hours * 3_600, compact=True, strict=True),
            publisher=self.pipeline,
            deadletters=self.deadletters,
            metrics=self.metrics,
            feed_started=starts.started if starts else None,
            pending_seconds=s.idempotency_pending_seconds,
        )

    @cached_property
    def kafka_readback(self) -> KafkaReadBack:
        """Reads back what the Kafka destination wrote (a backfill resumed after a crash)."""
        return KafkaReadBack(self.settings)

    @property
    def replayers(self) -> dict[str, Replayer]:
        """How dead letters of kinds other than `delivery` are replayed (delivery/replay.py)."""
        return {CHANGEFEED_EVENT: self.changefeed.replay_dead_letter,
                CHANGEFEED_DOCUMENT: self.changefeed.replay_dead_letter}

    @property
    def overdue_dedupe(self) -> DedupePolicy:
        """An overdue event (one per assessment and due date) is claimed as long as the entity state."""
        return DedupePolicy(self.settings.changefeed_state_ttl_days * 86_400, compact=True, strict=True)

    @property
    def redis_streams(self) -> RedisStreamsDestination:
        dest = self.destinations.get("redis")
        assert isinstance(dest, RedisStreamsDestination)
        return dest

    @property
    def analytics(self) -> AnalyticsDestination:
        dest = self.destinations.get("analytics")
        assert isinstance(dest, AnalyticsDestination)
        return dest

    async def close(self) -> None:
        await self.failure_hook.drain()  # SYSTEM_ERROR notices still in flight
        try:
            await self.metrics.close()  # counts still waiting for the write-behind flush
        except Exception:  # noqa: BLE001 - closing must not fail shutdown (Redis may be gone)
            pass
        await self.destinations.close()
        if "kafka_readback" in self.__dict__:
            await self.kafka_readback.close()
        await self.backfill_queue.close()
        await self.tables.close()
        await self.queues.close()
        await self.cosmos.close()
        await self.redis.aclose()
        if self._identity is not None:
            await self._identity.close()


_per_loop: PerLoop[Services] = PerLoop()


def get_services() -> Services:
    return _per_loop.get(lambda: Services(get_settings()))


async def reset_services() -> None:
    """Close this loop's services and forget the cached settings (tests that change the environment)."""
    await _per_loop.discard()
    get_settings.cache_clear()
