"""The instance's Redis client (redis.asyncio), shared by destinations, metrics and config versions."""
from __future__ import annotations

import asyncio
import copy
import math
from itertools import chain, islice
from typing import Any, Callable, Iterable, Iterator, Sequence

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.commands.core import AsyncScript
from redis.credentials import CredentialProvider
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.core.settings import Settings
from shared.storage.redis_unanswered import Unanswered


def tenant_key(tenant_id: str, *parts: str) -> str:
    """Redis-Cluster-safe key: every key of a tenant hashes to one slot via the {tenant} tag."""
    tagged = "grc:" + "{" + tenant_id + "}"  # concatenation, not a join of a new tuple (per tenant of every batch)
    return tagged + ":" + ":".join(parts) if parts else tagged


MAX_CACHED_TENANT_KEYS = 10_000
Reply = Callable[[Any], Any]  # what a caller keeps of one reply (pipelined's `each_reply`)


class TenantKeys(dict):  # type: ignore[type-arg]
    """tenant -> its keys, `tenant_key(tenant, *suffix)` for each suffix given, made once per tenant
    instead of once per tenant of every batch (a batch naming 500 tenants made them 500 times);
    bounded: cleared when MAX_CACHED_TENANT_KEYS tenants are held."""

    def __init__(self, *suffixes: tuple[str, ...]) -> None:
        super().__init__()
        self._suffixes = suffixes

    def __missing__(self, tenant: str) -> tuple[str, ...]:
        if len(self) >= MAX_CACHED_TENANT_KEYS:
            self.clear()
        out = self[tenant] = tuple(tenant_key(tenant, *s) for s in self._suffixes)
        return out


ENTRA_REDIS_SCOPE = "https://redis.azure.com/.default"
MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 5.0
SEND_SLICE = 64  # commands per socket write of a pipeline
FIRST_SLICE = 8  # commands of a long pipeline's first write: Redis starts on them while the rest are built


def entra_credentials() -> CredentialProvider:
    """The managed identity's token as Redis credentials (user = the identity's object id),
    renewed before it expires and re-sent on open connections (redis-entraid)."""
    from redis_entraid.cred_provider import create_from_default_azure_credential  # noqa: PLC0415 - Azure only

    return create_from_default_azure_credential((ENTRA_REDIS_SCOPE,))


class _Watched:
    """A connection that tells the pool's `Unanswered` when a reply did not come within the socket
    timeout, and when one came (redis-py's own reads; `pipelined` reads its replies itself and does
    the same)."""

    def __init__(self, *args: Any, unanswered: Unanswered, **kwargs: Any) -> None:
        self.unanswered = unanswered
        super().__init__(*args, **kwargs)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            reply = await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except RedisTimeoutError:
            self.unanswered.timed_out()
            raise
        self.unanswered.answered()
        return reply


class WatchedConnection(_Watched, Connection):
    pass


class WatchedSSLConnection(_Watched, SSLConnection):
    pass


class PausingPool(BlockingConnectionPool):
    """No connection is handed out while Redis is paused as unanswered (redis_unanswered.py): the call
    raises at once instead of waiting for its socket timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.unanswered = Unanswered()
        super().__init__(*args, unanswered=self.unanswered, **kwargs)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        self.unanswered.check()
        return await super().get_connection(*args, **kwargs)


def create_redis(settings: Settings, credential_provider: CredentialProvider | None = None) -> Redis:
    """`credential_provider` overrides the one REDIS_AUTH chooses (tests pass a fake identity)."""
    if credential_provider is None and settings.redis_auth == "entra":
        credential_provider = entra_credentials()
    # A blocking pool: when every connection is busy (a burst of concurrent requests) a command
    # waits up to POOL_WAIT_SECONDS for one, where redis-py's default pool raises
    # MaxConnectionsError at once -- a failure of the service's own making.
    pool = PausingPool(
        connection_class=WatchedSSLConnection if settings.redis_ssl else WatchedConnection,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        host=settings.redis_host,
        port=settings.redis_port,
        password=None if credential_provider else (settings.redis_password or None),
        credential_provider=credential_provider,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        # A short retry on connection drops (reset, refused: a restart, a failover); longer outages
        # surface as failed deliveries. A timeout is not retried: Redis that accepts connections and
        # does not answer would cost every call three socket timeouts and a reconnect each (a single
        # POST took 93 s, its config check alone 46 s); the callers' own retries and fallbacks apply.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2,
                    supported_errors=(RedisConnectionError,)),
        decode_responses=False,
    )
    # The provider is passed again so the client registers the pool for token re-authentication.
    client = Redis(connection_pool=pool, credential_provider=credential_provider)
    client.auto_close_connection_pool = True  # the client owns its pool (what Redis.from_pool does)
    return client


async def run_script(client: Redis, script: AsyncScript, calls: Iterable[tuple[Sequence[Any], Sequence[Any]]],
                     extra: Sequence[Sequence[Any]] = (), each_reply: Reply | None = None,
                     count: int | None = None) -> list[Any]:
    """Many calls of one Lua script, `(keys, args)` each, in one round trip.

    A pipeline of EVALSHA (see `pipelined`; `calls` may be a generator, consumed as the pipeline is
    written). On NOSCRIPT (Redis restarted or failed over) the script is loaded and only those calls
    are sent again. Each call's keys must share one hash slot (the tenant's tag), so a pipeline may
    mix tenants on Redis Cluster. `extra` commands go in the same round trip (their errors raise).
    Replies come in call order; a call that failed in Redis (a script error) has its
    `ResponseError` as reply. Connection errors raise. `each_reply` (not with `extra`) and `count`
    (of the calls, when known): see `pipelined`.
    """
    if extra and each_reply is not None:
        raise ValueError("each_reply applies to every reply: not with extra commands")
    made: list[tuple[Sequence[Any], Sequence[Any]]] = []

    def evalshas(sha: str) -> Iterator[tuple[Any, ...]]:
        for keys, args in calls:
            made.append((keys, args))
            yield ("EVALSHA", sha, len(keys), *keys, *args)

    replies = await pipelined(client, chain(evalshas(script.sha), extra), each_reply,
                              None if count is None else count + len(extra))
    for error in replies[len(made):]:
        if isinstance(error, ResponseError):
            raise error
    replies = replies[:len(made)]
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        script.sha = await client.script_load(script.script)
        again = await pipelined(client, [("EVALSHA", script.sha, len(made[i][0]), *made[i][0], *made[i][1])
                                         for i in missing], each_reply)
        for i, r in zip(missing, again):
            replies[i] = r
    return replies


async def pipelined(client: Redis, commands: Iterable[Sequence[Any]], each_reply: Reply | None = None,
                    count: int | None = None) -> list[Any]:
    """Commands in one round trip, raw replies (no redis-py response callbacks), a `ResponseError`
    in place of each command Redis refused. Made for pipelines naming hundreds of tenants, where
    the client's own work per command is what costs:

    - commands are packed by hiredis' C packer (redis-py's asyncio pipeline packs every argument in
      Python) and written SEND_SLICE at a time while the rest are still being built and packed
      (`commands` may be a generator), so Redis runs the first ones meanwhile, and its replies are
      read while it runs the last ones;
    - the replies are read under ONE deadline (the socket timeout), where redis-py arms a timer per
      reply;
    - a small call (at most SHARED_TRIP commands: a single event's config check or append) shares
      its round trip with the other small calls made in the same event-loop iteration (concurrent
      requests of the instance), see `_SharedTrips`;
    - `each_reply`, when given, makes what the caller keeps of each reply that is not an error, as
      the reply is read: a long pipeline's replies are then turned into results while Redis still
      runs its later commands, where the client would otherwise wait;
    - `count`, when the caller knows how many commands there are: a long pipeline's first commands
      are written as soon as they are built (FIRST_SLICE), where finding out whether it is long
      means building SHARED_TRIP + 1 of them first.
    The client's pool and retry policy apply as usual (a retry resends what was packed).
    """
    if count is not None and count > SHARED_TRIP:
        return await _send(client, commands, each_reply)
    it = iter(commands)
    first = list(islice(it, SHARED_TRIP + 1))
    if not first:
        return []
    if len(first) <= SHARED_TRIP:
        replies = await _shared_trips(client).send(first)
        if each_reply is None:
            return replies
        return [r if isinstance(r, ResponseError) else each_reply(r) for r in replies]
    return await _send(client, chain(first, it), each_reply)


async def _send(client: Redis, commands: Iterable[Sequence[Any]],
                each_reply: Reply | None = None) -> list[Any]:
    packed = _Packed(commands)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        return await conn.retry.call_with_retry(lambda: _round_trip(conn, packed, each_reply),
                                                lambda _error: conn.disconnect())
    finally:
        await pool.release(conn)


SHARED_TRIP = 64  # commands: calls this small may share a round trip


class _SharedTrips:
    """Small calls made in the same event-loop iteration go to Redis in one round trip.

    A round trip costs the client a socket write and a wake-up, and Redis the same, whatever it
    carries: on this project's VMs a few tens of microseconds of CPU each side, among the largest
    costs of a one-event request (docs/performance.md). Concurrent requests reach their Redis calls
    in the same iteration (epoll hands the loop several ready sockets at once), so the first call
    schedules a send at the end of the iteration and the others join it. Each caller's commands stay
    together and in order, and Redis runs them as it would have on separate connections; each gets
    exactly its own replies. Nothing waits for a timer: a lone call is sent in the same iteration.
    The send runs in its own task, so a caller that is cancelled (its timeout) abandons only its
    own answer; a connection error fails every call of the trip, as it would have failed each.
    """

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.pool = client.connection_pool
        self.waiting: list[tuple[list[Sequence[Any]], asyncio.Future[list[Any]]]] = []
        self.running: set[asyncio.Task[None]] = set()

    def send(self, commands: list[Sequence[Any]]) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if not self.waiting:
            loop.call_soon(self._go)
        self.waiting.append((commands, fut))
        return fut

    def _go(self) -> None:
        trip, self.waiting = self.waiting, []
        task = asyncio.ensure_future(self._trip(trip))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _trip(self, trip: list[tuple[list[Sequence[Any]], asyncio.Future[list[Any]]]]) -> None:
        try:
            replies = await _send(self.client, [c for commands, _ in trip for c in commands])
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the trip
            for _, fut in trip:
                if not fut.done():
                    if isinstance(exc, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(copy.copy(exc))
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for commands, fut in trip:
            if not fut.done():  # a caller cancelled meanwhile has no use for its replies
                fut.set_result(replies[at:at + len(commands)])
            at += len(commands)


def _shared_trips(client: Redis) -> _SharedTrips:
    trips: _SharedTrips | None = getattr(client, "_grc_shared_trips", None)
    if trips is None or trips.pool is not client.connection_pool:
        trips = _SharedTrips(client)
        client._grc_shared_trips = trips  # type: ignore[attr-defined]
    return trips


class _Packed:
    """Commands packed a slice at a time as they are wanted, and kept for a retry."""

    def __init__(self, commands: Iterable[Sequence[Any]]) -> None:
        self._todo: Iterator[Sequence[Any]] | None = iter(commands)
        self.slices: list[bytes] = []
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        yield from list(self.slices)  # a retry: what the first try packed
        while self._todo is not None:
            batch = list(islice(self._todo, SEND_SLICE if self.slices else FIRST_SLICE))
            if not batch:
                self._todo = None
                return
            data = b"".join([hiredis.pack_command(tuple(c)) for c in batch])
            self.slices.append(data)
            self.count += len(batch)
            yield data


async def _round_trip(conn: Connection, packed: _Packed, each_reply: Reply | None) -> list[Any]:
    out: list[Any] = []
    try:
        first = True
        for data in packed:
            await conn.send_packed_command(data, check_health=first)  # the periodic health check, once
            first = False
        if first:
            return out  # nothing to send
        async with asyncio.timeout(conn.socket_timeout):
            await _read_replies(conn, packed.count, out, each_reply)
    except TimeoutError as exc:
        if isinstance(conn, _Watched):
            conn.unanswered.timed_out()
        raise RedisTimeoutError(f"no reply within {conn.socket_timeout} s") from exc
    if isinstance(conn, _Watched):
        conn.unanswered.answered()
    return out


def _hiredis_reader(conn: Connection) -> Any:
    """The connection's hiredis reader when replies can be taken from it directly (redis-py's
    hiredis parser, with its push-message handler), else None."""
    parser = getattr(conn, "_parser", None)
    if not isinstance(parser, _AsyncHiredisParser) or not hasattr(parser, "handle_push_response"):
        return None
    return getattr(parser, "_reader", None)


async def _read_replies(conn: Connection, count: int, out: list[Any],
                        each_reply: Reply | None = None) -> None:
    """`count` replies into `out`, a `ResponseError` in place of each refused command (the others
    through `each_reply` when given).

    From the connection's hiredis reader as the bytes arrive: one call per reply through redis-py's
    `read_response` (its checks, its coroutine chain) cost more client CPU than the reply itself,
    and a pipeline naming 500 tenants has 500 replies (docs/performance.md). What redis-py would do
    with a reply is kept: an error reply is its ResponseError; a connection-level error raises (a
    socket error as redis-py's ConnectionError); a read cut short (timeout, cancellation, error)
    drops the connection, so nothing unread is left on it for the next caller; a RESP3 push message
    (e.g. a maintenance notice from Azure Managed Redis) is not a reply: it goes to redis-py's push
    handler, as `read_response` would send it.
    Any other parser (no hiredis): redis-py's `read_response`.
    """
    reader = _hiredis_reader(conn)
    if reader is None:
        for _ in range(count):
            try:
                # math.inf: no timer per reply (redis-py's documented "block" value); the deadline
                # around the read bounds it, and a read cut short drops the connection.
                reply = await conn.read_response(timeout=math.inf)
            except ResponseError as exc:
                out.append(exc)
            else:
                out.append(reply if each_reply is None else each_reply(reply))
        return
    parser = conn._parser
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    done = False
    try:
        while len(out) < count:
            reply = reader.gets()
            if reply is NOT_ENOUGH_DATA:
                try:
                    await parser.read_from_socket()
                except OSError as exc:
                    if isinstance(exc, TimeoutError):
                        raise
                    # A socket error is a ConnectionError, as redis-py's read_response makes it:
                    # callers catch RedisError (a bare ConnectionResetError escaped them).
                    raise RedisConnectionError(f"Error while reading from {conn.host}:{conn.port}: "
                                               f"{exc.args}") from exc
            elif push is not None and isinstance(reply, push):
                await parser.handle_push_response(reply)
            elif isinstance(reply, ResponseError):
                out.append(reply)
            elif isinstance(reply, RedisConnectionError):
                raise reply
            else:
                out.append(reply if each_reply is None else each_reply(reply))
        done = True
    finally:
        if not done:
            await conn.disconnect(nowait=True)
