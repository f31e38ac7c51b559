"""Stream config store on the real Azurite Table + Redis: defaults, ETags, cross-instance freshness."""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import AsyncIterator, Callable

import pytest
from azure.data.tables.aio import TableServiceClient
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.core.entity_tags import parse_entity_tags as tags
from shared.core.streamconfig import StreamConfigIn
from shared.delivery import configstore
from shared.delivery.configstore import ConfigStore, PreconditionFailed, WriteOutcomeUnknown
from shared.storage.redisconn import tenant_key
from tests.doubles import RequestLog

TABLE = f"cfgtest{uuid.uuid4().hex[:8]}"


def body(**over: object) -> StreamConfigIn:
    return StreamConfigIn.model_validate({"retentionDays": 7, **over})


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def make_store(storage_connection_string: str, redis_port: int) -> AsyncIterator[Callable[..., ConfigStore]]:
    """Builds independent "instances": each its own table client, Redis client and cache."""
    closers: list = []

    def make(*, redis_port_: int | None = None, cache_seconds: float = 30.0) -> ConfigStore:
        tables = TableServiceClient.from_connection_string(storage_connection_string)
        if redis_port_ is None:
            redis = Redis(port=redis_port)
        else:  # unreachable Redis, failing at once
            redis = Redis(port=redis_port_, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        closers.extend([tables.close, redis.aclose])
        return ConfigStore(tables, TABLE, redis, cache_seconds)

    yield make
    for close in closers:
        await close()


@pytest.fixture
def tenant() -> str:
    return f"cfg-{uuid.uuid4().hex[:12]}"


async def test_default_when_none_stored(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    store = make_store()
    config, etag = await store.read(tenant)
    assert etag is None and config.isDefault and config.version == 0 and config.tenantId == tenant
    assert config.enabled and config.filters == [] and [d.type for d in config.destinations] == ["redis"]
    assert (await store.get(tenant)).isDefault


async def test_create_then_replace_bumps_version(make_store: Callable[..., ConfigStore], tenant: str,
                                                 redis_port: int) -> None:
    store = make_store()
    created, etag1, previous = await store.write(tenant, body())
    assert previous is None  # 201 Created
    assert created.version == 1 and not created.isDefault and created.retentionDays == 7 and created.updatedAt
    assert etag1
    stored, read_etag = await store.read(tenant)
    assert read_etag == etag1 and stored.version == 1 and stored.retentionDays == 7

    replaced, etag2, previous = await store.write(tenant, body(retentionDays=9, enabled=False))
    assert previous is not None and previous.version == 1 and previous.retentionDays == 7  # 200 OK
    assert replaced.version == 2 and etag2 != etag1
    stored, _ = await store.read(tenant)
    assert stored.retentionDays == 9 and stored.enabled is False

    r = Redis(port=redis_port)
    try:
        assert int(await r.get(tenant_key(tenant, "cfgver"))) == 2
    finally:
        await r.aclose()


async def test_tenant_in_body_is_replaced_by_the_path(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    config, _, _ = await make_store().write(tenant, body(tenantId="someone-else"))
    assert config.tenantId == tenant


async def test_if_match(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    store = make_store()
    _, etag, _ = await store.write(tenant, body())
    with pytest.raises(PreconditionFailed):
        await store.write(tenant, body(batchSize=5),
                          if_match=tags('W/"datetime\'2000-01-01T00%3A00%3A00Z\'"'))
    assert (await store.read(tenant))[0].batchSize == 100  # the refused write changed nothing
    updated, etag2, _ = await store.write(tenant, body(batchSize=5), if_match=tags(etag))
    assert updated.batchSize == 5
    with pytest.raises(PreconditionFailed):  # the old ETag is now stale
        await store.write(tenant, body(batchSize=6), if_match=tags(etag))
    await store.write(tenant, body(batchSize=7), if_match=tags("*"))
    assert (await store.read(tenant))[0].batchSize == 7


async def test_what_get_answers_can_be_put_back_and_its_version_is_checked(
        make_store: Callable[..., ConfigStore], tenant: str) -> None:
    """A read-modify-write sends back the read-only fields GET answers with: `version` makes the write
    conditional (0 = none stored), `updatedAt` and `isDefault` are ignored."""
    store = make_store()
    read, _ = await store.read(tenant)  # the default: version 0, isDefault true
    round_trip = StreamConfigIn.model_validate_json(read.model_dump_json(), strict=True)
    first, _, previous = await store.write(tenant, round_trip)
    assert previous is None and first.version == 1 and first.isDefault is False and first.updatedAt != read.updatedAt
    stale = round_trip  # still says version 0
    with pytest.raises(PreconditionFailed, match="version 0; the stored version is 1"):
        await store.write(tenant, stale)
    edited = StreamConfigIn.model_validate({**first.model_dump(mode="json"), "batchSize": 7,
                                            "updatedAt": "1999-01-01T00:00:00Z", "isDefault": True})
    second, _, _ = await store.write(tenant, edited)
    assert (second.version, second.batchSize, second.isDefault) == (2, 7, False)
    assert second.updatedAt != "1999-01-01T00:00:00Z"
    with pytest.raises(PreconditionFailed):
        await store.write(tenant, edited)  # read at 1, stored 2
    assert (await store.write(tenant, body(batchSize=9)))[0].version == 3  # no version: unconditional


async def test_if_match_star_needs_an_existing_config(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    with pytest.raises(PreconditionFailed):
        await make_store().write(tenant, body(), if_match=tags("*"))
    assert (await make_store().read(tenant))[1] is None


async def test_if_none_match_star(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    store = make_store()
    _, _, previous = await store.write(tenant, body(), if_none_match=tags("*"))
    assert previous is None
    with pytest.raises(PreconditionFailed):
        await store.write(tenant, body(batchSize=3), if_none_match=tags("*"))
    assert (await store.read(tenant))[0].batchSize == 100


async def test_if_match_names_several_etags_and_if_none_match_an_etag(
        make_store: Callable[..., ConfigStore], tenant: str) -> None:
    """RFC 9110: If-Match holds when the stored ETag is any one listed (compared without `W/`: ours are
    weak); If-None-Match naming the stored ETag refuses the write."""
    store = make_store()
    # Nothing stored: an If-None-Match naming an ETag holds.
    _, etag, _ = await store.write(tenant, body(), if_none_match=tags('"never-this"'))
    with pytest.raises(PreconditionFailed, match="If-None-Match names"):
        await store.write(tenant, body(batchSize=2), if_none_match=tags(f'"other", {etag}'))
    _, etag2, _ = await store.write(tenant, body(batchSize=3), if_match=tags(f'"stale", {etag}'))
    with pytest.raises(PreconditionFailed, match="changed since it was read"):
        await store.write(tenant, body(batchSize=4), if_match=tags(f'"stale", {etag}'))
    strong = etag2.removeprefix("W/")  # a client that dropped the weak marker still names it
    assert (await store.write(tenant, body(batchSize=5), if_match=tags(strong)))[0].batchSize == 5


async def test_lost_update_is_refused_between_instances(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    a, b = make_store(), make_store()
    _, etag, _ = await a.write(tenant, body())
    await b.write(tenant, body(batchSize=11), if_match=tags(etag))
    with pytest.raises(PreconditionFailed):
        await a.write(tenant, body(batchSize=12), if_match=tags(etag))
    assert (await a.read(tenant))[0].batchSize == 11


async def test_write_on_one_instance_is_seen_by_another_on_its_next_batch(
    make_store: Callable[..., ConfigStore], tenant: str
) -> None:
    a = make_store(cache_seconds=3600)  # a long TTL: only the Redis version can make b reload
    b = make_store(cache_seconds=3600)
    other = f"{tenant}-x"
    first = await b.get_many([tenant, other])
    assert first[tenant].isDefault and first[other].isDefault
    again = await b.get_many([tenant, other])
    assert again[tenant] is first[tenant]  # served from the cache while the version is unchanged

    await a.write(tenant, body(retentionDays=3))
    after = await b.get_many([tenant, other])
    assert after[tenant].retentionDays == 3 and after[tenant].version == 1 and not after[tenant].isDefault
    assert after[other] is first[other]  # an unchanged tenant stays cached

    await a.write(tenant, body(retentionDays=4))
    assert (await b.get(tenant)).retentionDays == 4


async def test_a_write_whose_answer_is_lost_still_has_every_instance_read_the_config_again(
    make_store: Callable[..., ConfigStore], tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store applies the write but its answer never comes (the SDK gives up: a timeout, a dropped
    connection; stood in for here by the table client raising after the real call). The write raises,
    and the config version is bumped all the same: another instance sees the config on its next batch,
    not when its cached copy expires (an hour here)."""
    from azure.core.exceptions import ServiceResponseError
    from azure.data.tables.aio import TableClient

    a = make_store(cache_seconds=3600)
    b = make_store(cache_seconds=3600)
    assert (await b.get(tenant)).isDefault  # cached on b
    real_create = TableClient.create_entity

    async def answer_lost(self: TableClient, *args: object, **kwargs: object) -> object:
        await real_create(self, *args, **kwargs)
        raise ServiceResponseError("the connection was closed before the answer")

    monkeypatch.setattr(TableClient, "create_entity", answer_lost)
    with pytest.raises(WriteOutcomeUnknown) as raised:
        await a.write(tenant, body(retentionDays=2))
    assert isinstance(raised.value.__cause__, ServiceResponseError)
    seen = await b.get(tenant)
    assert not seen.isDefault and seen.retentionDays == 2 and seen.version == 1


async def test_redis_unavailable_uses_the_cache_ttl(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    writer = make_store()
    port = dead_port()
    long_ttl = make_store(redis_port_=port, cache_seconds=3600)
    no_ttl = make_store(redis_port_=port, cache_seconds=0)
    await writer.write(tenant, body(retentionDays=5))
    assert (await long_ttl.get(tenant)).retentionDays == 5  # loaded from the table although Redis is down
    assert (await no_ttl.get(tenant)).retentionDays == 5

    await writer.write(tenant, body(retentionDays=6))
    assert (await long_ttl.get(tenant)).retentionDays == 5  # cached copy younger than the TTL: still used
    assert (await no_ttl.get(tenant)).retentionDays == 6    # TTL passed: read again


async def test_write_succeeds_when_redis_is_down(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    store = make_store(redis_port_=dead_port())
    config, etag, _ = await store.write(tenant, body(batchSize=42))
    assert etag and config.batchSize == 42
    assert (await make_store().read(tenant))[0].batchSize == 42


async def test_failed_version_bump_is_bounded_by_the_ttl(make_store: Callable[..., ConfigStore], tenant: str) -> None:
    """A write whose Redis version bump failed is still seen once the reader's TTL has passed."""
    blind_writer = make_store(redis_port_=dead_port())
    reader_no_ttl = make_store(cache_seconds=0)
    reader_long = make_store(cache_seconds=3600)
    assert (await reader_no_ttl.get(tenant)).isDefault and (await reader_long.get(tenant)).isDefault
    await blind_writer.write(tenant, body(batchSize=77))  # cfgver unchanged in Redis
    assert (await reader_long.get(tenant)).isDefault      # within its TTL: the documented staleness bound
    assert (await reader_no_ttl.get(tenant)).batchSize == 77


@pytest.fixture
async def counted(storage_connection_string: str, redis_port: int) -> AsyncIterator[tuple[ConfigStore, RequestLog]]:
    log = RequestLog()
    tables = TableServiceClient.from_connection_string(storage_connection_string, raw_request_hook=log)
    redis = Redis(port=redis_port)
    try:
        yield ConfigStore(tables, TABLE, redis, 30.0), log
    finally:
        await tables.close()
        await redis.aclose()


async def test_never_seen_tenants_are_read_in_one_query_and_cached(
        make_store: Callable[..., ConfigStore], counted: tuple[ConfigStore, RequestLog]) -> None:
    writer = make_store()
    run = uuid.uuid4().hex[:8]
    tenants = [f"cfgm-{run}-{i:03d}" for i in range(500)]
    stored = tenants[::25]  # 20 of them have a config; the others get the default
    for i, t in enumerate(stored):
        await writer.write(t, body(retentionDays=1 + i))
    await writer.write(f"cfgm-{run}-0005x", body(retentionDays=99))  # in the key range, not in the batch
    store, log = counted
    await store.table()  # the table client exists (created once per instance)
    log.requests.clear()
    got = await store.get_many(tenants)
    assert log.reads(TABLE) == 1  # one query for 500 tenants
    assert [got[t].retentionDays for t in stored] == [1 + i for i in range(len(stored))]
    assert all(got[t].isDefault for t in tenants if t not in stored)
    assert set(got) == set(tenants)
    log.requests.clear()
    again = await store.get_many(tenants)  # every answer cached, "no config" included
    assert log.requests == [] and again == got


async def test_the_cache_stays_bounded_however_many_tenants_are_named(
        make_store: Callable[..., ConfigStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tenant ever named stayed cached for the instance's life; past MAX_CACHED_CONFIGS the cache
    is cleared and refilled on demand."""
    monkeypatch.setattr(configstore, "MAX_CACHED_CONFIGS", 30)
    store = make_store()
    run = uuid.uuid4().hex[:8]
    for start in range(0, 100, 20):
        got = await store.get_many([f"cfgb-{run}-{i:03d}" for i in range(start, start + 20)])
        assert len(got) == 20 and len(store._cache) <= 30  # noqa: SLF001 - its size is what is bounded


async def test_a_few_tenants_are_read_by_key_in_one_query(
        make_store: Callable[..., ConfigStore], counted: tuple[ConfigStore, RequestLog]) -> None:
    run = uuid.uuid4().hex[:8]
    await make_store().write(f"a-{run}", body(retentionDays=3))
    store, log = counted
    await store.table()
    log.requests.clear()
    got = await store.get_many([f"a-{run}", f"m-{run}", f"z-{run}"])
    assert log.reads(TABLE) == 1
    assert got[f"a-{run}"].retentionDays == 3 and got[f"m-{run}"].isDefault and got[f"z-{run}"].isDefault


class FreezableProxy:
    """A TCP proxy in front of Azurite's Table endpoint: `frozen` makes it accept connections and
    never answer (what a hanging Table service looks like to the SDK). The fault is in the network;
    the SDK, Azurite and the store are the real ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.frozen:
            await asyncio.Event().wait()  # holds the connection, says nothing
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    while self.frozen:
                        await asyncio.sleep(3600)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def hanging_tables(storage_connection_string: str, redis_port: int,
                         monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[ConfigStore, FreezableProxy]]:
    """A store whose Table endpoint goes through a FreezableProxy; the request-path bound at 1 s, the
    next read tried 0.5 s after a failed one (shorter than the failed read took)."""
    monkeypatch.setattr(configstore, "STORAGE_READ_SECONDS", 1.0)
    monkeypatch.setattr(configstore, "STALE_RETRY_SECONDS", 0.5)
    table_port = int(storage_connection_string.split("TableEndpoint=")[1].split(";")[0].rsplit(":", 1)[1].split("/")[0])
    proxy = FreezableProxy(table_port)
    port = await proxy.start()
    conn = storage_connection_string.replace(f":{table_port}/", f":{port}/")
    tables = TableServiceClient.from_connection_string(conn)
    redis = Redis(port=redis_port)
    store = ConfigStore(tables, TABLE, redis, cache_seconds=0.2)
    yield store, proxy
    proxy.frozen = False
    await tables.close()
    await redis.aclose()
    await proxy.close()


async def test_a_hanging_table_leaves_cached_configs_in_use(
        hanging_tables: tuple[ConfigStore, FreezableProxy], tenant: str) -> None:
    store, proxy = hanging_tables
    await store.write(tenant, body(retentionDays=3))
    assert (await store.get(tenant)).retentionDays == 3  # cached
    await asyncio.sleep(0.3)  # past the cache TTL: the next batch reads the table again
    proxy.frozen = True
    t0 = time.monotonic()
    assert (await store.get(tenant)).retentionDays == 3  # the read timed out; the cached copy is used
    assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    assert (await store.get(tenant)).retentionDays == 3  # no second wait within STALE_RETRY_SECONDS
    assert time.monotonic() - t0 < 0.2
    assert not await store.prefetch([tenant])  # no query answered: the monitor probes Tables itself


async def test_a_hanging_table_fails_tenants_with_no_current_copy(
        hanging_tables: tuple[ConfigStore, FreezableProxy], tenant: str, redis_port: int) -> None:
    store, proxy = hanging_tables
    await store.write(tenant, body(retentionDays=3))
    await store.get(tenant)
    await asyncio.sleep(0.3)
    proxy.frozen = True
    with pytest.raises(TimeoutError):  # never seen: nothing to route on
        await store.get_many([tenant, f"{tenant}-new"])
    redis = Redis(port=redis_port)
    await redis.incr(tenant_key(tenant, "cfgver"))  # another instance changed the config meanwhile
    await redis.aclose()
    with pytest.raises(TimeoutError):  # the cached copy is known to be old: not used
        await store.get(tenant)
