"""The instance's Redis client against the real Redis: a pool that waits, pipelines of many tenants."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.core.settings import Settings
from shared.storage import redis_unanswered, redisconn
from shared.storage.redisconn import create_redis, pipelined, run_script
from tests.doubles import RoundTrips


async def test_busy_pool_waits_for_a_connection_instead_of_failing(
        redis_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """More concurrent commands than connections: each waits its turn (redis-py's default pool
    raises MaxConnectionsError at once, which failed deliveries under a many-tenant load)."""
    monkeypatch.setattr(redisconn, "MAX_CONNECTIONS", 2)
    client = create_redis(Settings(REDIS_PORT=redis_port))
    try:
        key = f"empty-{uuid.uuid4().hex}"
        got = await asyncio.gather(*(client.blpop([key], timeout=0.2) for _ in range(8)))
        assert got == [None] * 8  # all eight ran (two at a time), none refused
    finally:
        await client.aclose()


async def test_pipelined_answers_in_order_with_errors_in_place(redis_port: int) -> None:
    trips = RoundTrips(redis_port)
    try:
        await trips.warm()
        key = f"k-{uuid.uuid4().hex}"
        replies = await pipelined(trips.client, [("SET", key, "v"), ("INCR", key), ("GET", key), ("PING",)])
        assert replies[0] == b"OK" and isinstance(replies[1], ResponseError) and replies[2:] == [b"v", b"PONG"]
        assert trips.count == 1
        assert await pipelined(trips.client, []) == [] and trips.count == 1
    finally:
        await trips.client.aclose()


async def test_a_late_reply_times_out_and_the_next_call_is_not_out_of_step(redis_port: int, redis: Redis) -> None:
    client = Redis(port=redis_port, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    try:
        await client.ping()
        await redis.client_pause(1000)  # the server holds every reply for a second
        with pytest.raises(RedisTimeoutError):
            await pipelined(client, [("PING",), ("PING",)])
        await asyncio.sleep(0.8)
        assert await pipelined(client, [("ECHO", "a"), ("ECHO", "b")]) == [b"a", b"b"]
    finally:
        await client.aclose()


ECHO_OR_FAIL = "if ARGV[1] == 'bad' then return redis.error_reply('nope') end return ARGV[1]"


async def test_run_script_reloads_a_flushed_script_and_keeps_script_errors_per_call(redis: Redis) -> None:
    script = redis.register_script(ECHO_OR_FAIL)
    await redis.script_flush()
    replies = await run_script(redis, script, [(["a{t1}"], ["x"]), (["a{t2}"], ["bad"]), (["a{t3}"], ["y"])])
    assert replies[0] == b"x" and isinstance(replies[1], ResponseError) and replies[2] == b"y"


async def test_unreachable_redis_raises_a_redis_error() -> None:
    from localdev.services import free_port

    client = create_redis(Settings(REDIS_PORT=free_port()))
    try:
        with pytest.raises(RedisError):
            await pipelined(client, [("PING",)])
    finally:
        await client.aclose()


async def test_a_long_pipeline_from_a_generator_is_one_round_trip_in_order(redis_port: int) -> None:
    trips = RoundTrips(redis_port)
    try:
        await trips.warm()
        n = 10 * redisconn.SEND_SLICE + 3  # written in several slices
        replies = await pipelined(trips.client, (("ECHO", str(i)) for i in range(n)))
        assert replies == [str(i).encode() for i in range(n)] and trips.count == 1
    finally:
        await trips.client.aclose()


async def test_run_script_takes_calls_from_a_generator_even_after_a_reload(redis: Redis) -> None:
    script = redis.register_script("return ARGV[1]")
    await redis.script_flush()
    calls = (([f"k{{t{i}}}"], [f"v{i}"]) for i in range(200))
    assert await run_script(redis, script, calls) == [f"v{i}".encode() for i in range(200)]


async def test_each_reply_is_made_into_its_result_as_it_is_read_errors_stay_in_place(redis_port: int) -> None:
    """`each_reply`: a long pipeline's replies become results while Redis still runs its later
    commands (here a BLPOP that blocks 0.4 s: the replies before it are made long before it ends);
    an error reply is kept as its ResponseError; a small call (a shared trip) gets the same."""
    client = Redis(port=redis_port)
    try:
        await client.ping()
        made: list[tuple[object, float]] = []
        start = time.monotonic()

        def each(reply: object) -> tuple[str, object]:
            made.append((reply, time.monotonic() - start))
            return ("made", reply)

        key = f"k-{uuid.uuid4().hex}"
        n = redisconn.SHARED_TRIP + 5
        replies = await pipelined(client, [("ECHO", f"e{i}") for i in range(n)]
                                  + [("SET", key, "x"), ("INCR", key), ("BLPOP", "empty-" + key, "0.4")],
                                  each)
        assert replies[:n + 1] == [("made", f"e{i}".encode()) for i in range(n)] + [("made", b"OK")]
        assert isinstance(replies[n + 1], ResponseError) and replies[n + 2] == ("made", None)
        assert time.monotonic() - start >= 0.4
        assert len(made) == n + 2 and max(at for _, at in made[:n + 1]) < 0.3  # made while the BLPOP blocked
        small = await pipelined(client, [("ECHO", "a"), ("INCR", key)], each)
        assert small[0] == ("made", b"a") and isinstance(small[1], ResponseError)
    finally:
        await client.aclose()


@pytest.mark.parametrize("count", [None, 200])
async def test_a_long_pipeline_of_known_length_is_written_from_its_first_commands(
        redis_port: int, count: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With its length given, a long pipeline's first write goes as soon as FIRST_SLICE commands are
    built (Redis starts on them while the rest are built); without, SHARED_TRIP + 1 are built first
    to tell it from a small call."""
    from redis.asyncio.connection import Connection

    built = 0
    built_at_writes: list[int] = []
    send = Connection.send_packed_command

    async def counting_send(self: Connection, command: object, check_health: bool = True) -> None:
        built_at_writes.append(built)
        await send(self, command, check_health)

    def commands() -> object:
        nonlocal built
        for i in range(200):
            built += 1
            yield ("ECHO", str(i))

    client = Redis(port=redis_port)
    try:
        await client.ping()
        monkeypatch.setattr(Connection, "send_packed_command", counting_send)
        replies = await pipelined(client, commands(), count=count)
        assert replies == [str(i).encode() for i in range(200)]
        first = redisconn.FIRST_SLICE if count else redisconn.SHARED_TRIP + 1
        assert built_at_writes[0] == first
    finally:
        await client.aclose()


async def test_run_script_makes_each_reply_into_its_result_after_a_reload_too(redis: Redis) -> None:
    script = redis.register_script(ECHO_OR_FAIL)
    await redis.script_flush()
    calls = [([f"k{{t{i}}}"], ["bad" if i == 3 else f"v{i}"]) for i in range(100)]
    replies = await run_script(redis, script, calls, each_reply=lambda r: r.decode())
    assert isinstance(replies[3], ResponseError)
    assert [r for i, r in enumerate(replies) if i != 3] == [f"v{i}" for i in range(100) if i != 3]
    with pytest.raises(ValueError):
        await run_script(redis, script, calls, extra=[("PING",)], each_reply=str)


async def test_small_calls_made_together_share_one_round_trip_each_with_its_own_replies(redis_port: int) -> None:
    """Concurrent requests' Redis calls (a config check, an append) go in one round trip: each
    caller's commands stay together and in order, and each gets exactly its own replies."""
    trips = RoundTrips(redis_port)
    try:
        await trips.warm()
        keys = [f"k-{uuid.uuid4().hex}" for _ in range(10)]
        got = await asyncio.gather(*(pipelined(trips.client, [("SET", k, i), ("INCR", k), ("GET", k)])
                                     for i, k in enumerate(keys)))
        assert got == [[b"OK", i + 1, str(i + 1).encode()] for i in range(10)]
        assert trips.count == 1
        await pipelined(trips.client, [("PING",)])  # a lone call: its own trip, sent at once
        assert trips.count == 2
        big = [("ECHO", str(i)) for i in range(redisconn.SHARED_TRIP + 1)]  # too big to share: sent directly
        assert await pipelined(trips.client, big) == [str(i).encode() for i in range(len(big))]
    finally:
        await trips.client.aclose()


async def test_a_cancelled_caller_leaves_the_others_of_its_trip_unharmed(redis_port: int) -> None:
    client = Redis(port=redis_port)
    try:
        await client.ping()
        key = f"k-{uuid.uuid4().hex}"
        first = asyncio.ensure_future(pipelined(client, [("INCR", key)]))
        second = asyncio.ensure_future(pipelined(client, [("INCR", key)]))
        await asyncio.sleep(0)  # both joined the trip
        first.cancel()
        assert await second == [2]  # the trip ran: both INCRs reached Redis, in order
        with pytest.raises(asyncio.CancelledError):
            await first
        assert int(await client.get(key)) == 2
    finally:
        await client.aclose()


async def test_a_connection_error_fails_every_call_of_the_trip() -> None:
    from localdev.services import free_port

    client = create_redis(Settings(REDIS_PORT=free_port()))
    try:
        got = await asyncio.gather(*(pipelined(client, [("PING",)]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, RedisError) for r in got) and len({id(r) for r in got}) == 3
    finally:
        await client.aclose()


async def test_replies_are_read_from_the_hiredis_reader_directly(redis_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast read path is the one taken (a redis-py upgrade that changes its parser shows here,
    not as a silently slower service), and it answers exactly what redis-py's own read would."""
    client = Redis(port=redis_port)
    try:
        await client.ping()
        conn = await client.connection_pool.get_connection()
        assert redisconn._hiredis_reader(conn) is not None
        await client.connection_pool.release(conn)

        async def not_used(*args: object, **kwargs: object) -> None:
            raise AssertionError("read_response called per reply")

        monkeypatch.setattr("redis.asyncio.connection.Connection.read_response", not_used)
        key = f"k-{uuid.uuid4().hex}"
        big = "x" * 200_000  # arrives in several socket reads
        replies = await pipelined(client, [("SET", key, big), ("GET", key), ("INCR", key), ("PING",)]
                                  + [("ECHO", str(i)) for i in range(redisconn.SHARED_TRIP)])
        assert replies[:2] == [b"OK", big.encode()] and isinstance(replies[2], ResponseError)
        assert replies[3] == b"PONG" and replies[4:] == [str(i).encode() for i in range(redisconn.SHARED_TRIP)]
    finally:
        await client.aclose()


async def test_a_connection_reset_while_reading_replies_is_a_redis_error() -> None:
    """A socket error while replies are read from the hiredis reader is a redis ConnectionError, as
    redis-py's own read_response makes it: callers (idempotency settle, rate limits, metrics) catch
    RedisError, and a bare ConnectionResetError escaped them (a request that had already published
    answered 503, and the client's retry published it again)."""
    import socket
    import struct

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if b"PING" in data:  # the pipeline: reset the connection instead of answering
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
                return
            writer.write(b"+OK\r\n" * data.count(b"*"))  # the connection's handshake (CLIENT SETINFO)
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Redis(port=port, retry=Retry(NoBackoff(), 0))
    try:
        for _ in range(2):  # the small calls' shared trip, then a pipeline of its own
            with pytest.raises(RedisError):
                await pipelined(client, [("PING",)] * (1 if _ == 0 else redisconn.SHARED_TRIP + 1))
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("first", ["pipelined", "redis-py"])
async def test_after_a_call_left_unanswered_calls_fail_at_once_until_the_pause_ends(
        first: str, redis_port: int, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis holds every reply (CLIENT PAUSE, as a frozen Redis would): the first call waits for its
    socket timeout, whichever way it was made (`pipelined`'s own reads or redis-py's); the calls after
    it are not sent and fail at once; once the pause is over and Redis answers, calls go through."""
    monkeypatch.setattr(redis_unanswered, "PAUSE_SECONDS", 1.0)
    client = create_redis(Settings(REDIS_PORT=redis_port))
    client.connection_pool.connection_kwargs["socket_timeout"] = 0.3  # connections made from now on
    try:
        await client.ping()
        await redis.client_pause(1200)
        start = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await (pipelined(client, [("PING",), ("PING",)]) if first == "pipelined" else client.ping())
        assert time.monotonic() - start >= 0.3
        start = time.monotonic()
        for call in (lambda: pipelined(client, [("PING",)]), lambda: client.get("k"),
                     lambda: pipelined(client, [("PING",)] * 100)):
            with pytest.raises(RedisTimeoutError, match="not sent"):
                await call()
        assert time.monotonic() - start < 0.1
        await asyncio.sleep(1.3)  # the server's pause and ours are over
        assert await pipelined(client, [("ECHO", "a")]) == [b"a"]
        assert await client.get(f"nope-{uuid.uuid4().hex}") is None
    finally:
        await client.aclose()
