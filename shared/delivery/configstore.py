"""Per-tenant stream configs in an Azure Table, cached per instance.

Entity: PartitionKey = tenantId, RowKey = "streamconfig", `Config` = the JSON document (the
chunked-payload codec's properties, shared/storage/payload.py: a config of a 256 KiB body does not
fit one 64 KiB string property), `Version` = a counter bumped on every write. The Table's ETag
is the HTTP ETag (If-Match gives optimistic concurrency). Each write also bumps
`grc:{tenant}:cfgver` in Redis; instances compare that number (one MGET per batch, for all tenants
of the batch) with the one their cached copy was read at, so a change is seen by every instance on
its next batch. If Redis cannot be read, a cached copy younger than STREAM_CONFIG_CACHE_SECONDS is
used; no copy is used longer than that.

Configs not in the cache (tenants this instance has not seen, or whose copy is stale) are read in
ONE Table query per batch, however many tenants it names: up to MAX_OR_TENANTS by their keys, more
as the key range from the lowest to the highest of them (the stored configs in that range come
back, the others are skipped). A tenant with no stored config gets the default, and that answer is
cached like any other (a negative entry), so a new tenant costs one batched read, not one per event.

When that read fails, or a page of it takes longer than STORAGE_READ_SECONDS (Table storage down or
hanging: the SDK's own read timeout and retries take about 31 s), tenants whose cached copy is merely old --
its version still the one Redis holds, or Redis unreadable -- keep it (stale if error), and the read is tried
again after STALE_RETRY_SECONDS, not by every batch meanwhile. Events keep flowing to the
destinations during a Tables outage. A tenant with no copy, or whose config Redis says has changed,
cannot be routed: the read's error is raised (the batch answers 503).
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.data.tables.aio import TableClient, TableServiceClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.core.entity_tags import EntityTags
from shared.core.events import utc_now_iso
from shared.core.limits import STORAGE_READ_SECONDS
from shared.core.streamconfig import StreamConfig, StreamConfigIn
from shared.storage import payload
from shared.storage.lazy import LazyTable
from shared.storage.redisconn import TenantKeys, pipelined

ROW_KEY = "streamconfig"
_VERSION_KEYS = TenantKeys(("cfgver",))  # tenant -> (grc:{tenant}:cfgver,)
# Azure Tables allows at most 15 discrete comparisons in a $filter: RowKey plus 14 PartitionKeys.
# (https://learn.microsoft.com/rest/api/storageservices/querying-tables-and-entities)
MAX_OR_TENANTS = 14
UNCONDITIONAL_WRITE_ATTEMPTS = 8  # an unconditional write that keeps losing races: 412 after these
# Configs cached per instance (one per tenant named, "no config" included): past it the cache is
# cleared and refilled on demand, as the other per-tenant caches are, so naming ever new tenants
# cannot grow an instance's memory for its whole life.
MAX_CACHED_CONFIGS = 10_000
STALE_RETRY_SECONDS = 5.0  # after a failed read, cached copies are used this long before the next try

log = logging.getLogger("grc.pipeline")


class PreconditionFailed(Exception):
    """If-Match / If-None-Match did not hold."""


class ChangedConcurrently(PreconditionFailed):
    """Another write came between this write's read and its conditional write."""


class WriteOutcomeUnknown(Exception):
    """The store gave the write no answer (the request went out; the SDK gave up on the reply, or the
    store timed out): it may have been applied. The cause is the store's error."""


def _no_answer(exc: Exception) -> bool:
    if isinstance(exc, ServiceResponseError):  # sent, and no valid reply
        return True
    return isinstance(exc, HttpResponseError) and (exc.status_code or 0) in (408, 500, 502, 503, 504)


@dataclass
class _Cached:
    config: StreamConfig
    etag: str | None
    version: int
    fetched_at: float


class ConfigStore:
    def __init__(
        self, tables: TableServiceClient, table_name: str, redis: Redis, cache_seconds: float
    ) -> None:
        self._table = LazyTable(tables, table_name)
        self._redis = redis
        self._ttl = cache_seconds
        self._cache: dict[str, _Cached] = {}

    async def table(self) -> TableClient:
        return await self._table.get()

    def reading(self) -> AbstractAsyncContextManager[TableClient]:
        """The table for a query (`LazyTable.reading`: a table gone reads as empty)."""
        return self._table.reading()

    async def read(self, tenant_id: str) -> tuple[StreamConfig, str | None]:
        """Straight from the table (no cache): the config and its ETag, or the default and None."""
        try:
            entity = await self._table.call("get_entity", tenant_id, ROW_KEY)
        except ResourceNotFoundError:
            return StreamConfig.default(tenant_id), None
        return _config(entity), entity.metadata.get("etag")

    async def write(
        self,
        tenant_id: str,
        body: StreamConfigIn,
        *,
        if_match: EntityTags | None = None,
        if_none_match: EntityTags | None = None,
    ) -> tuple[StreamConfig, str, StreamConfig | None]:
        """Create or replace; returns (new config, new ETag, previous config or None). A `version` in
        the body must equal the stored one (0: none stored), checked in the same conditional write."""
        # A write its client made unconditional (no If-Match, If-None-Match or version) that loses the
        # race with another is made again on what that one stored: a 412 would name a precondition
        # the client never sent. The version still moves on by one per write.
        unconditional = if_match is None and if_none_match is None and body.version is None
        for _ in range(UNCONDITIONAL_WRITE_ATTEMPTS - 1 if unconditional else 0):
            try:
                return await self._write(tenant_id, body, if_match, if_none_match)
            except ChangedConcurrently:
                pass  # made again, on what the other write stored
        return await self._write(tenant_id, body, if_match, if_none_match)

    async def _write(
        self, tenant_id: str, body: StreamConfigIn, if_match: EntityTags | None,
        if_none_match: EntityTags | None,
    ) -> tuple[StreamConfig, str, StreamConfig | None]:
        previous, etag = await self.read(tenant_id)
        existed = etag is not None
        if if_none_match is not None and if_none_match.matches(etag):
            raise PreconditionFailed("a stream config exists for this tenant" if if_none_match.any else
                                     "the stored stream config is one If-None-Match names")
        if if_match is not None and not if_match.matches(etag):
            raise PreconditionFailed("no stream config is stored for this tenant" if not existed else
                                     "the stream config was changed since it was read")
        stored_version = previous.version if existed else 0
        if body.version is not None and body.version != stored_version:
            raise PreconditionFailed(f"the body was read at version {body.version}; the stored version is "
                                     f"{stored_version}")
        config = StreamConfig(
            **body.model_dump(exclude={"tenantId", "version", "updatedAt", "isDefault"}),
            tenantId=tenant_id,
            version=(previous.version + 1) if existed else 1,
            updatedAt=utc_now_iso(),
        )
        entity = {
            "PartitionKey": tenant_id,
            "RowKey": ROW_KEY,
            **payload.encode(config.model_dump_json().encode(), "Config")[0],
            "Version": config.version,
        }
        try:
            if existed:
                meta = await self._table.call("update_entity", entity, mode="replace", etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
            else:
                meta = await self._table.call("create_entity", entity)
        # (not found: the config read was deleted since, with its table or alone)
        except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError) as exc:
            raise ChangedConcurrently("the stream config was changed concurrently") from exc
        except Exception as exc:
            # The instances re-read the config on their next batch (harmless if nothing was written):
            # without an answer the store may still have applied the write.
            await self._changed(tenant_id)
            if _no_answer(exc):
                log.error("stream config of %s: the write of version %d has no answer (%s); it may be "
                          "applied", tenant_id, config.version, type(exc).__name__)
                raise WriteOutcomeUnknown(f"the write of version {config.version} has no answer") from exc
            raise
        new_etag = meta.get("etag") if isinstance(meta, dict) else None
        await self._changed(tenant_id)
        return config, new_etag or "", (previous if existed else None)

    async def _changed(self, tenant_id: str) -> None:
        """Every instance's copy of the tenant's config is out of date (the version bump in Redis)."""
        try:
            await self._redis.incr(_VERSION_KEYS[tenant_id][0])
        except RedisError:
            pass  # instances fall back to the cache TTL
        self._cache.pop(tenant_id, None)

    async def get_many(self, tenant_ids: Iterable[str]) -> dict[str, StreamConfig]:
        """Configs for the tenants of a batch, from the cache when still current."""
        return (await self._get_many(tenant_ids))[0]

    async def prefetch(self, tenant_ids: Iterable[str]) -> bool:
        """Bring the tenants' configs into the cache (at most one Table query); whether one ran and
        answered."""
        return (await self._get_many(tenant_ids))[1]

    async def _get_many(self, tenant_ids: Iterable[str]) -> tuple[dict[str, StreamConfig], bool]:
        tenants = list(dict.fromkeys(tenant_ids))
        now = time.monotonic()
        versions: list[int | None]
        try:
            # MGET across tenants' slots: allowed by Azure Managed Redis' Enterprise clustering policy
            # (https://learn.microsoft.com/azure/redis/best-practices-client-libraries, multi-key commands).
            [raw] = await pipelined(self._redis, [("MGET", *(_VERSION_KEYS[t][0] for t in tenants))])
            if isinstance(raw, RedisError):
                raise raw
            versions = [int(v) if v else 0 for v in raw]
        except RedisError:
            versions = [None] * len(tenants)
        out: dict[str, StreamConfig] = {}
        missing: dict[str, int | None] = {}
        cache, oldest = self._cache, now - self._ttl  # once per tenant of every batch: locals
        for t, ver in zip(tenants, versions):
            c = cache.get(t)
            # The TTL bounds every cached copy: a write whose version bump failed (Redis blip)
            # would otherwise stay invisible to instances that still read the old version.
            if c is not None and c.fetched_at > oldest and (ver is None or c.version == ver):
                out[t] = c.config
            else:
                missing[t] = ver
        if missing:
            try:
                async with asyncio.timeout(STORAGE_READ_SECONDS) as deadline:
                    stored = await self._read_many(list(missing), deadline)
            except Exception as exc:  # noqa: BLE001 - any failed or late read: stale if error, else raised
                self._stale_if_error(missing, out, exc)
                return out, False  # no answer: the monitor's health check probes Tables itself
            if len(self._cache) + len(missing) > MAX_CACHED_CONFIGS:
                self._cache.clear()
            for t, ver in missing.items():
                config, etag = stored.get(t) or (StreamConfig.default(t), None)
                # Version 0 = never written; a failed version read caches under the TTL rule.
                self._cache[t] = _Cached(config, etag, ver if ver is not None else -1, now)
                out[t] = config
        return out, bool(missing)

    def _stale_if_error(
        self, missing: dict[str, int | None], out: dict[str, StreamConfig], exc: Exception
    ) -> None:
        """The Table read failed: every missing tenant whose cached copy is still the current version
        (as far as Redis says) keeps it for STALE_RETRY_SECONDS more; else `exc` is raised."""
        kept: list[tuple[str, _Cached]] = []
        for t, ver in missing.items():
            c = self._cache.get(t)
            if c is None or (ver is not None and c.version != ver):
                raise exc
            kept.append((t, c))
        until = time.monotonic() - self._ttl + STALE_RETRY_SECONDS  # from now: the read may have taken long
        for t, c in kept:
            c.fetched_at = until
            out[t] = c.config
        log.warning("stream configs unavailable (%s): %d tenant(s) routed on their cached config",
                    type(exc).__name__, len(kept))

    async def _read_many(
        self, tenants: list[str], deadline: asyncio.Timeout
    ) -> dict[str, tuple[StreamConfig, str | None]]:
        """The stored configs of `tenants` (absent: none stored), in one query (see the module doc).
        Each page of the answer has STORAGE_READ_SECONDS: a range of many tenants' configs may take
        many pages, a Table service that stops answering fails the read."""
        ordered = sorted(tenants)
        params: dict[str, str] = {"rk": ROW_KEY}
        if len(ordered) <= MAX_OR_TENANTS:
            params.update({f"p{i}": t for i, t in enumerate(ordered)})
            # (spaces around the parentheses: the SDK finds @names between blanks)
            keys = " or ".join(f"PartitionKey eq @p{i}" for i in range(len(ordered)))
            flt = f"RowKey eq @rk and ( {keys} )"
        else:
            params.update(lo=ordered[0], hi=ordered[-1])
            flt = "PartitionKey ge @lo and PartitionKey le @hi and RowKey eq @rk"
        wanted = set(tenants)
        out: dict[str, tuple[StreamConfig, str | None]] = {}
        loop = asyncio.get_running_loop()
        async with self.reading() as table:
            # (every property: a long config's text is in several, shared/storage/payload.py)
            pages = table.query_entities(flt, parameters=params).by_page()
            async for page in pages:
                async for entity in page:
                    t = entity["PartitionKey"]
                    if t in wanted:
                        out[t] = (_config(entity), entity.metadata.get("etag"))
                deadline.reschedule(loop.time() + STORAGE_READ_SECONDS)  # the next page has its own time
        return out

    async def get(self, tenant_id: str) -> StreamConfig:
        return (await self.get_many([tenant_id]))[tenant_id]

    async def stored(self) -> dict[str, StreamConfig]:
        """Every stored config, by tenant (one scan of the table, uncached): for the hourly jobs that
        apply each configured tenant's settings, never for the event path."""
        out: dict[str, StreamConfig] = {}
        async with self.reading() as table:
            async for entity in table.query_entities("RowKey eq @rk", parameters={"rk": ROW_KEY}):
                out[entity["PartitionKey"]] = _config(entity)
        return out


def _config(entity: Mapping[str, Any]) -> StreamConfig:
    """The config a stored entity holds (in one property, or in chunks: `payload.encode`)."""
    return StreamConfig.model_validate_json(payload.decode(entity, "Config") or "")


def config_json(config: StreamConfig) -> bytes:
    return orjson.dumps(config.model_dump(mode="json"))
