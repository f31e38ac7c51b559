"""Every setting the service reads, read once from the environment and typed.

Each field's alias is the environment variable (App Setting in Azure, `Values` in
local.settings.json). infra/, local.settings.sample.json and README list the same names;
a test keeps the four in step.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Mapping

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

    # Delivery: analytics table, retry queue, dead letters, idempotency window.
    analytics_table: str = Field("events", alias="ANALYTICS_TABLE")
    retry_queue: str = Field("delivery-retries", alias="RETRY_QUEUE")
    deadletter_table: str = Field("deadletters", alias="DEADLETTER_TABLE")
    idempotency_window_seconds: int = Field(86400, ge=1, alias="IDEMPOTENCY_WINDOW_SECONDS")

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
