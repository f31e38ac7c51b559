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

    health_timeout_seconds: float = Field(2.0, alias="HEALTH_TIMEOUT_SECONDS")

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
    # Change-feed path: last-known entity snapshots, dedup markers, parked items.
    changefeed_state_ttl_days: int = Field(400, alias="CHANGEFEED_STATE_TTL_DAYS", ge=1)
    changefeed_dedup_ttl_hours: int = Field(168, alias="CHANGEFEED_DEDUP_TTL_HOURS", ge=1)
    changefeed_parked_table: str = Field("parked", alias="CHANGEFEED_PARKED_TABLE")
    overdue_schedule: str = Field("0 */5 * * * *", alias="OVERDUE_SCHEDULE")  # NCRONTAB, timer binding

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
