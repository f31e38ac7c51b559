"""Every setting the service reads, read once from the environment and typed.

Each field's alias is the environment variable (App Setting in Azure, `Values` in
local.settings.json). infra/, local.settings.sample.json and README list the same names;
a test keeps the four in step.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    port: int = Field(3003, alias="PORT")
    log_level: str = Field("info", alias="LOG_LEVEL")
    # Empty = telemetry off (no exporter threads). Its IngestionEndpoint decides where data goes.
    appinsights_connection_string: str = Field(
        "", alias="APPLICATIONINSIGHTS_CONNECTION_STRING", repr=False
    )
    # "Authorization=AAD" (optionally ";ClientId=<user-assigned identity>"): telemetry is sent with an
    # Entra ID token of the managed identity, as the Functions host does (needed when the
    # Application Insights resource has local authentication disabled). Empty: instrumentation key.
    appinsights_authentication_string: str = Field("", alias="APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
    # Which exporter sends the telemetry (same metric names, dimensions and log fields either way;
    # docs/observability.md): "opencensus" (opencensus-ext-azure, the design card's, retired upstream)
    # or "opentelemetry" (Microsoft's Azure Monitor OpenTelemetry distro, the supported path).
    telemetry_backend: Literal["opencensus", "opentelemetry"] = Field("opencensus", alias="TELEMETRY_BACKEND")
    # Share of debug/info log records exported to App Insights (warnings and errors: always all).
    telemetry_info_sampling: float = Field(1.0, ge=0.0, le=1.0, alias="TELEMETRY_INFO_SAMPLING")

    redis_host: str = Field("127.0.0.1", alias="REDIS_HOST")
    redis_port: int = Field(6379, alias="REDIS_PORT")
    redis_password: str = Field("", alias="REDIS_PASSWORD", repr=False)
    redis_ssl: bool = Field(False, alias="REDIS_SSL")
    # "key": REDIS_PASSWORD (an access key; local Redis); "entra": the managed identity's Entra ID
    # token (Azure Managed Redis with access keys disabled), refreshed in the background.
    redis_auth: Literal["key", "entra"] = Field("key", alias="REDIS_AUTH")

    # Storage for stream configs (and later analytics, retries): a connection string locally,
    # an account name (managed identity) in Azure.
    storage_connection_string: str = Field("", alias="STORAGE_CONNECTION_STRING", repr=False)
    storage_account_name: str = Field("", alias="STORAGE_ACCOUNT_NAME")
    stream_config_table: str = Field("streamconfigs", alias="STREAM_CONFIG_TABLE")
    stream_config_cache_seconds: float = Field(30.0, alias="STREAM_CONFIG_CACHE_SECONDS")

    # Delivery: analytics table, retry queue, dead letters, idempotency window.
    analytics_table: str = Field("events", alias="ANALYTICS_TABLE")
    retry_queue: str = Field("delivery-retries", alias="RETRY_QUEUE")
    deadletter_table: str = Field("deadletters", alias="DEADLETTER_TABLE")
    idempotency_window_seconds: int = Field(86400, ge=1, alias="IDEMPOTENCY_WINDOW_SECONDS")
    # How long an eventId's claim stays "in flight" when its owner never settles it (the instance died
    # mid-publish); a repeat meanwhile answers 409, a change-feed batch waits for it. Longer than a publish.
    idempotency_pending_seconds: int = Field(300, ge=5, le=3600, alias="IDEMPOTENCY_PENDING_SECONDS")
    # Kafka destination: any Kafka broker, or Event Hubs' Kafka endpoint (<namespace>:9093).
    kafka_broker: str = Field("127.0.0.1:9092", alias="KAFKA_BROKER")
    # plaintext | sasl-plain (Event Hubs connection string) | oauth (managed identity, OAUTHBEARER)
    kafka_security: Literal["plaintext", "sasl-plain", "oauth"] = Field("plaintext", alias="KAFKA_SECURITY")
    kafka_default_topic: str = Field("grc-events", alias="KAFKA_DEFAULT_TOPIC")
    # librdkafka message.timeout.ms: a delivery report (success or error) comes within this.
    kafka_delivery_timeout_ms: int = Field(30_000, ge=1_000, le=900_000, alias="KAFKA_DELIVERY_TIMEOUT_MS")
    # How often producer statistics (queued messages/bytes = producer lag) are refreshed.
    kafka_stats_interval_ms: int = Field(15_000, ge=0, le=3_600_000, alias="KAFKA_STATS_INTERVAL_MS")
    # librdkafka linger.ms: how long a producer waits for more records before a batch goes. Every
    # publish waits for its acknowledgements, so this adds to each request's latency (see kafka.py).
    kafka_linger_ms: int = Field(1, ge=0, le=1_000, alias="KAFKA_LINGER_MS")
    eventhubs_connection_string: str = Field("", alias="EVENTHUBS_CONNECTION_STRING", repr=False)
    # Managed identity: the namespace host, e.g. grc-prod.servicebus.windows.net.
    eventhubs_fully_qualified_namespace: str = Field("", alias="EVENTHUBS_FULLY_QUALIFIED_NAMESPACE")
    # Transport of the "kafka" destination when its options do not say: kafka | amqp.
    eventhubs_transport: Literal["kafka", "amqp"] = Field("kafka", alias="EVENTHUBS_TRANSPORT")

    health_timeout_seconds: float = Field(2.0, alias="HEALTH_TIMEOUT_SECONDS")
    # /health runs its checks at most once per this many seconds per instance (0: every call).
    health_cache_seconds: float = Field(5.0, ge=0, le=300, alias="HEALTH_CACHE_SECONDS")
    # Observability (docs/observability.md). The alert rules in infra/ use the same numbers.
    alert_error_rate: float = Field(0.05, ge=0, le=1, alias="ALERT_ERROR_RATE")
    alert_delay_seconds: float = Field(30.0, gt=0, alias="ALERT_DELAY_SECONDS")
    alert_memory_percent: float = Field(80.0, gt=0, le=100, alias="ALERT_MEMORY_PERCENT")
    # A dependency answering slower than this is "degraded" in /health.
    health_degraded_ms: float = Field(1000.0, gt=0, alias="HEALTH_DEGRADED_MS")
    # Tenants with events in this many recent minutes get a per-minute performance/anomaly pass.
    monitor_lookback_minutes: int = Field(60, ge=1, le=60, alias="MONITOR_LOOKBACK_MINUTES")
    # SYSTEM_PERFORMANCE events per tenant per minute (off: custom metrics and DATA_ANOMALY only).
    system_performance_events: bool = Field(True, alias="SYSTEM_PERFORMANCE_EVENTS")
    # Per-tenant metrics are merged per instance and written at most this long after a batch
    # (0: every batch writes before it returns); shared/observability/tenant_metrics.py, "Write-behind".
    metrics_flush_ms: int = Field(1000, ge=0, le=5000, alias="METRICS_FLUSH_MS")

    # Cosmos DB: the service's own SDK calls (overdue query). Key empty = managed identity.
    # The trigger bindings read their own connection setting, `COSMOS` (a connection string
    # locally) or `COSMOS__accountEndpoint` (identity in Azure); the names below are also the
    # bindings' `%SETTING%` references.
    cosmos_endpoint: str = Field("http://127.0.0.1:8081", alias="COSMOS_DB_ENDPOINT")
    cosmos_key: str = Field("", alias="COSMOS_DB_KEY", repr=False)
    cosmos_database: str = Field("grc", alias="COSMOS_DB_DATABASE")
    cosmos_risks_container: str = Field("risks", alias="COSMOS_RISKS_CONTAINER")
    cosmos_controls_container: str = Field("controls", alias="COSMOS_CONTROLS_CONTAINER")
    cosmos_assessments_container: str = Field("assessments", alias="COSMOS_ASSESSMENTS_CONTAINER")
    cosmos_compliance_container: str = Field("compliance", alias="COSMOS_COMPLIANCE_CONTAINER")
    cosmos_policies_container: str = Field("policies", alias="COSMOS_POLICIES_CONTAINER")
    cosmos_lease_container: str = Field("leases", alias="COSMOS_LEASE_CONTAINER")
    # Change-feed path: last-known entity snapshots; how long an event's idempotency claim is kept.
    changefeed_state_ttl_days: int = Field(400, alias="CHANGEFEED_STATE_TTL_DAYS", ge=1)
    changefeed_dedup_ttl_hours: int = Field(168, alias="CHANGEFEED_DEDUP_TTL_HOURS", ge=1)
    overdue_schedule: str = Field("0 */5 * * * *", alias="OVERDUE_SCHEDULE")  # NCRONTAB, timer binding

    # Caller identity (docs/security.md). AUTH_MODE: "jwt" validates a bearer token in the app;
    # "appservice" trusts X-MS-CLIENT-PRINCIPAL, which only App Service Authentication in front of
    # the app may set (it strips the header from outside requests); "jwt+appservice" takes either.
    # "+local-open" (local runner only, refused in Azure): no credentials = a local admin caller.
    # The AUTH_* values are validated when the authenticator is built (shared/security/identity.py
    # AuthOptions), not here: a bad one then refuses the protected routes (503) while change capture,
    # timers, queue triggers and /health keep running. Hence plain strings for the mode and numbers.
    auth_mode: str = Field("jwt", alias="AUTH_MODE")
    # Comma-separated lists: Entra v1 and v2 tokens carry different issuers; the audience may be
    # the app ID URI or the client id.
    auth_issuer: str = Field("https://grc-events.localhost/dev", alias="AUTH_ISSUER")
    auth_audience: str = Field("api://grc-events", alias="AUTH_AUDIENCE")
    # Empty: read jwks_uri from the first issuer's /.well-known/openid-configuration.
    auth_jwks_url: str = Field("", alias="AUTH_JWKS_URL")
    # HS256 key for local development only (the local runner and tests mint tokens with it);
    # empty in Azure, where it is never used.
    auth_dev_signing_key: str = Field("", alias="AUTH_DEV_SIGNING_KEY", repr=False)
    auth_tenant_claim: str = Field("tenants", alias="AUTH_TENANT_CLAIM")
    auth_admin_role: str = Field("Events.Admin", alias="AUTH_ADMIN_ROLE")
    auth_leeway_seconds: str = Field("60", alias="AUTH_LEEWAY_SECONDS")
    auth_jwks_cache_seconds: str = Field("3600", alias="AUTH_JWKS_CACHE_SECONDS")
    # Fewest seconds between two JWKS fetches caused by unknown key ids (tokens an attacker mints).
    auth_jwks_min_refresh_seconds: str = Field("60", alias="AUTH_JWKS_MIN_REFRESH_SECONDS")

    # Per-tenant token bucket in Redis, shared by all instances; one event costs one token.
    rate_limit_events_per_second: float = Field(1000.0, alias="RATE_LIMIT_EVENTS_PER_SECOND", ge=0)
    rate_limit_burst: int = Field(5000, alias="RATE_LIMIT_BURST", ge=1)

    # Backfills (docs/backfill.md): job records and slots, the chunk queue (queue trigger
    # `run_backfill`), the per-tenant throttle shared by every instance, concurrent jobs per tenant.
    backfill_table: str = Field("backfills", alias="BACKFILL_TABLE")
    backfill_queue: str = Field("backfill-chunks", alias="BACKFILL_QUEUE")
    backfill_events_per_second: float = Field(500.0, gt=0, le=100_000, alias="BACKFILL_EVENTS_PER_SECOND")
    backfill_max_concurrent_jobs: int = Field(2, ge=1, le=20, alias="BACKFILL_MAX_CONCURRENT_JOBS")

    audit_table: str = Field("audit", alias="AUDIT_TABLE")
    # HMAC key of continuation tokens (shared/storage/pagetokens.py): the same on every instance, >= 32 bytes.
    page_token_key: str = Field("", alias="PAGE_TOKEN_KEY", repr=False)

    def auth_issuers(self) -> list[str]:
        return [i.strip() for i in self.auth_issuer.split(",") if i.strip()]

    def auth_audiences(self) -> list[str]:
        return [a.strip() for a in self.auth_audience.split(",") if a.strip()]

    # Vector search (issue 8). Local: sqlite-vec + the offline MiniLM; Azure: AI Search + Azure OpenAI.
    vector_backend: Literal["sqlite", "azure-search"] = Field("sqlite", alias="VECTOR_BACKEND")
    vector_sqlite_path: str = Field(".localdev/vector.db", alias="VECTOR_SQLITE_PATH")
    vector_queue: str = Field("vector-index", alias="VECTOR_QUEUE")
    vector_search_max_k: int = Field(50, ge=1, le=1000, alias="VECTOR_SEARCH_MAX_K")
    azure_search_endpoint: str = Field("", alias="AZURE_SEARCH_ENDPOINT")
    azure_search_index: str = Field("grc-events", alias="AZURE_SEARCH_INDEX")
    azure_search_api_key: str = Field("", alias="AZURE_SEARCH_API_KEY", repr=False)  # empty: managed identity
    # Re-rank hybrid results with AI Search's semantic ranker (Basic tier and up, enabled on the service).
    azure_search_semantic_ranker: bool = Field(False, alias="AZURE_SEARCH_SEMANTIC_RANKER")
    embedding_backend: Literal["local", "azure-openai"] = Field("local", alias="EMBEDDING_BACKEND")
    embedding_dimensions: int = Field(0, ge=0, le=4096, alias="EMBEDDING_DIMENSIONS")  # 0: the model's own
    embedding_batch_size: int = Field(64, ge=1, le=2048, alias="EMBEDDING_BATCH_SIZE")
    local_tokenizer_path: str = Field(
        ".localdev/models/all-MiniLM-L6-v2/tokenizer.json", alias="LOCAL_TOKENIZER_PATH"
    )
    azure_openai_endpoint: str = Field("", alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_deployment: str = Field("text-embedding-3-small", alias="AZURE_OPENAI_DEPLOYMENT")
    azure_openai_model: str = Field("text-embedding-3-small", alias="AZURE_OPENAI_MODEL")
    azure_openai_api_version: str = Field("2024-10-21", alias="AZURE_OPENAI_API_VERSION")
    azure_openai_api_key: str = Field("", alias="AZURE_OPENAI_API_KEY", repr=False)  # empty: managed identity
    # Client id of a user-assigned managed identity; empty: the system-assigned one.
    azure_client_id: str = Field("", alias="AZURE_CLIENT_ID")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        names = {f.alias for f in cls.model_fields.values() if f.alias}
        return cls.model_validate({k: v for k, v in env.items() if k in names})

    @classmethod
    def env_names(cls) -> list[str]:
        return sorted(f.alias for f in cls.model_fields.values() if f.alias)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
