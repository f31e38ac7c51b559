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

    redis_host: str = Field("127.0.0.1", alias="REDIS_HOST")
    redis_port: int = Field(6379, alias="REDIS_PORT")
    redis_password: str = Field("", alias="REDIS_PASSWORD", repr=False)
    redis_ssl: bool = Field(False, alias="REDIS_SSL")

    # Storage for stream configs (and later analytics, retries): a connection string locally,
    # an account name (managed identity) in Azure.
    storage_connection_string: str = Field("", alias="STORAGE_CONNECTION_STRING", repr=False)
    storage_account_name: str = Field("", alias="STORAGE_ACCOUNT_NAME")
    stream_config_table: str = Field("streamconfigs", alias="STREAM_CONFIG_TABLE")
    stream_config_cache_seconds: float = Field(30.0, alias="STREAM_CONFIG_CACHE_SECONDS")

    # Kafka destination: any Kafka broker, or Event Hubs' Kafka endpoint (<namespace>:9093).
    kafka_broker: str = Field("127.0.0.1:9092", alias="KAFKA_BROKER")
    # plaintext | sasl-plain (Event Hubs connection string) | oauth (managed identity, OAUTHBEARER)
    kafka_security: Literal["plaintext", "sasl-plain", "oauth"] = Field("plaintext", alias="KAFKA_SECURITY")
    kafka_default_topic: str = Field("grc-events", alias="KAFKA_DEFAULT_TOPIC")
    # librdkafka message.timeout.ms: a delivery report (success or error) comes within this.
    kafka_delivery_timeout_ms: int = Field(30_000, ge=1_000, le=900_000, alias="KAFKA_DELIVERY_TIMEOUT_MS")
    # How often producer statistics (queued messages/bytes = producer lag) are refreshed.
    kafka_stats_interval_ms: int = Field(15_000, ge=0, le=3_600_000, alias="KAFKA_STATS_INTERVAL_MS")
    eventhubs_connection_string: str = Field("", alias="EVENTHUBS_CONNECTION_STRING", repr=False)
    # Managed identity: the namespace host, e.g. grc-prod.servicebus.windows.net.
    eventhubs_fully_qualified_namespace: str = Field("", alias="EVENTHUBS_FULLY_QUALIFIED_NAMESPACE")
    # Transport of the "kafka" destination when its options do not say: kafka | amqp.
    eventhubs_transport: Literal["kafka", "amqp"] = Field("kafka", alias="EVENTHUBS_TRANSPORT")

    health_timeout_seconds: float = Field(2.0, alias="HEALTH_TIMEOUT_SECONDS")

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
