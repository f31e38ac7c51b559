"""The runner's Cosmos and timer drivers: retry policy, leases, NCRONTAB, past_due."""
from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from azure.cosmos.aio import CosmosClient

from devhost.app_loader import FunctionSpec
from devhost.cosmos_driver import FeedWorker, connection_settings, decode_batch
from devhost.retry import RetryPolicy, timespan_seconds
from devhost.timer_driver import Schedule, TimerWorker
from localdev import services

# ---- retry policy and connection settings -------------------------------------------------

def test_exponential_backoff_doubles_up_to_the_maximum() -> None:
    p = RetryPolicy.from_setting({"strategy": "exponential_backoff", "max_retry_count": "5",
                                  "minimum_interval": "00:00:02", "maximum_interval": "00:00:10"})
    assert p is not None and p.max_retry_count == 5
    assert [p.delay(i) for i in range(5)] == [2, 4, 8, 10, 10]
    fixed = RetryPolicy.from_setting({"strategy": "fixed_delay", "max_retry_count": "2", "delay_interval": "00:01:30"})
    assert fixed is not None and fixed.delay(3) == 90
    assert RetryPolicy.from_setting(None) is None
    assert timespan_seconds("1.02:00:00") == 93_600


def test_connection_string_or_identity_prefix() -> None:
    cs = "AccountEndpoint=https://acct.documents.azure.com:443/;AccountKey=abc==;"
    assert connection_settings("COSMOS", {"COSMOS": cs}) == ("https://acct.documents.azure.com:443", "abc==")
    env = {"COSMOS__accountEndpoint": "http://127.0.0.1:8081/", "COSMOS_DB_KEY": "k"}
    assert connection_settings("COSMOS", env) == ("http://127.0.0.1:8081", "k")
    with pytest.raises(KeyError):
        connection_settings("COSMOS", {})


def test_decode_batch_is_the_workers_document_list() -> None:
    docs = decode_batch([{"id": "a", "n": 1}, {"id": "b"}])
    assert type(docs).__name__ == "DocumentList" and docs[0]["n"] == 1 and docs[1].to_dict() == {"id": "b"}


# ---- the Cosmos driver against the local server --------------------------------------------

def spec(fn: Any, container: str, db: str, retry: dict[str, Any] | None, **trigger: Any) -> FunctionSpec:
    t = {"type": "cosmosDBTrigger", "name": "docs", "connection": "COSMOS", "databaseName": db,
         "containerName": container, "leaseContainerName": "leases", "leaseContainerPrefix": "t-",
         "maxItemsPerInvocation": 2, "startFromBeginning": True, **trigger}
    return FunctionSpec("fn", t, [t], fn, {"retry": retry} if retry else {})


async def test_retry_policy_then_the_lease_advances(cosmos_server: services.Running) -> None:
    calls: list[tuple[int, int, list[str]]] = []

    async def fn(docs: Any, context: Any) -> None:
        calls.append((context.retry_context.retry_count, context.retry_context.max_retry_count,
                      [d["id"] for d in docs]))
        raise RuntimeError("downstream down")

    db = f"d-{uuid.uuid4().hex[:6]}"
    endpoint = cosmos_server.settings["COSMOS_DB_ENDPOINT"]
    async with CosmosClient(endpoint, services.LOCAL_COSMOS_KEY, connection_verify=False,
                            enable_endpoint_discovery=False) as client:
        retry = {"strategy": "exponential_backoff", "max_retry_count": "2", "minimum_interval": "00:00:01",
                 "maximum_interval": "00:00:05"}
        slept: list[float] = []

        async def no_sleep(s: float) -> None:
            slept.append(s)

        w = FeedWorker(spec(fn, "items", db, retry), client, poll_ms=0, sleep=no_sleep)
        await w.open()
        assert w.container is not None
        for i in range(3):
            await w.container.upsert_item({"id": f"d{i}", "tenantId": "t"})
        token, n = await w.step(None)
        assert n == 2  # maxItemsPerInvocation
        assert calls == [(0, 2, ["d0", "d1"]), (1, 2, ["d0", "d1"]), (2, 2, ["d0", "d1"])]
        assert slept == [1, 2] and w.failed_batches == 1
        # Like the host, the lease moved past the failed batch (the function parks what it could not publish).
        assert (await w.read_lease()).continuation == token
        calls.clear()
        _, n = await w.step(token)
        assert n == 1 and calls[0][2] == ["d2"]


def _recorder() -> tuple[list[str], Callable[[Any], Awaitable[None]]]:
    """A function that records the ids of the documents it is given, and the list it records in."""
    seen: list[str] = []

    async def fn(docs: Any) -> None:
        seen.extend(d["id"] for d in docs)

    return seen, fn


def _client(cosmos_server: services.Running) -> CosmosClient:
    return CosmosClient(cosmos_server.settings["COSMOS_DB_ENDPOINT"], services.LOCAL_COSMOS_KEY,
                        connection_verify=False, enable_endpoint_discovery=False)


async def test_new_lease_without_start_from_beginning_starts_now(cosmos_server: services.Running) -> None:
    seen, fn = _recorder()
    db = f"d-{uuid.uuid4().hex[:6]}"
    async with _client(cosmos_server) as client:
        w = FeedWorker(spec(fn, "items", db, None, startFromBeginning=False), client, poll_ms=0)
        await w.open()
        assert w.container is not None
        await w.container.upsert_item({"id": "old", "tenantId": "t"})
        token, n = await w.step(None)
        assert n == 0 and token is not None
        assert (await w.read_lease()).continuation == token  # "now" is pinned, so a restart skips nothing
        await w.container.upsert_item({"id": "new", "tenantId": "t"})
        _, n = await w.step((await w.read_lease()).continuation)
        assert seen == ["new"]


async def test_an_empty_page_writes_no_lease(cosmos_server: services.Running) -> None:
    """The lease is checkpointed after a batch (and pinned on a new lease's first poll), not after an
    empty page, though the local server's continuation moves with any write in the account."""
    seen, fn = _recorder()
    db = f"d-{uuid.uuid4().hex[:6]}"
    async with _client(cosmos_server) as client:
        w = FeedWorker(spec(fn, "items", db, None), client, poll_ms=0)
        other = FeedWorker(spec(fn, "others", db, None), client, poll_ms=0)
        await w.open()
        await other.open()
        assert w.container is not None and other.container is not None
        await w.container.upsert_item({"id": "a", "tenantId": "t"})
        token, n = await w.step(None)
        assert n == 1 and (await w.read_lease()).continuation == token
        await other.container.upsert_item({"id": "elsewhere", "tenantId": "t"})  # moves the account's LSN
        moved, n = await w.step(token)
        assert n == 0 and moved != token
        assert (await w.read_lease()).continuation == token  # not rewritten for an empty page
        await w.container.upsert_item({"id": "b", "tenantId": "t"})
        after, n = await w.step(moved)
        assert n == 1 and seen == ["a", "b"] and (await w.read_lease()).continuation == after


# ---- timers -------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, after, expected", [
    ("0 */5 * * * *", "2026-11-27T02:53:12", "2026-11-27T02:55:00"),
    ("0 0 * * * *", "2026-11-27T23:10:00", "2026-11-28T00:00:00"),
    ("30 0 9 * * MON-FRI", "2026-11-27T10:00:00", "2026-11-30T09:00:30"),  # Friday -> Monday
    ("0 0 0 1 * *", "2026-12-15T00:00:00", "2027-01-01T00:00:00"),
    ("0 0 12 * * 0", "2026-11-27T00:00:00", "2026-11-29T12:00:00"),  # Sunday
    ("*/10 * * * * *", "2026-11-27T00:00:05", "2026-11-27T00:00:10"),
    ("00:00:30", "2026-11-27T00:00:05", "2026-11-27T00:00:35"),
    ("0 0 9 1 * MON", "2026-12-05T10:00:00", "2026-12-07T09:00:00"),  # day 1 OR Monday, as cron
    ("0 0 9 1 * MON", "2026-12-28T10:00:00", "2027-01-01T09:00:00"),
])
def test_ncrontab_next_occurrence(expr: str, after: str, expected: str) -> None:
    got = Schedule(expr).next_after(datetime.fromisoformat(after).replace(tzinfo=UTC))
    assert got == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("bad", ["* * * * *", "61 * * * * *", "0 0 25 * * *", "0 0 0 * * 9"])
def test_bad_schedules_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Schedule(bad)


async def test_a_timespan_schedule_runs_but_is_flagged_as_unsupported_on_flex(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Azure supports TimeSpan schedules on App Service plans only (the Windows Consumption host refuses
    # them); the runner keeps them working and says so, naming the function; NCRONTAB draws no warning.
    from devhost.timer_driver import TimerDriver

    async def fn(timer: Any) -> None:
        return None

    cron = timer_spec(fn)
    timespan = timer_spec(fn, schedule="00:05:00")
    driver = TimerDriver([timespan, FunctionSpec("cron", cron.trigger, [], fn, {})], tmp_path)
    with caplog.at_level(logging.WARNING, logger="devhost.timer"):
        await driver.start()
        await driver.stop()
    flagged = [r.getMessage() for r in caplog.records if "TimeSpan" in r.getMessage()]
    assert len(flagged) == 1 and "timer tick:" in flagged[0] and "'00:05:00'" in flagged[0]
    assert driver.workers[0].schedule.interval == 300


def timer_spec(fn: Any, **trigger: Any) -> FunctionSpec:
    t = {"type": "timerTrigger", "name": "timer", "schedule": "0 0 0 1 1 *", "useMonitor": True, **trigger}
    return FunctionSpec("tick", t, [t], fn, {})


async def test_run_on_startup_and_missed_occurrence_is_past_due(tmp_path: Path) -> None:
    import asyncio

    fired: list[bool] = []

    async def fn(timer: Any) -> None:
        fired.append(timer.past_due)

    # run_on_startup: fires at once, not past due.
    stop = asyncio.Event()
    stop.set()
    await TimerWorker(timer_spec(fn, runOnStartup=True), tmp_path).run(stop)
    assert fired == [False]
    # The runner was down when the last occurrence was due: fires at start with past_due.
    status = tmp_path / "timers" / "tick.json"
    past = datetime.now(UTC) - timedelta(hours=1)
    status.write_text(json.dumps({"Last": (past - timedelta(days=1)).isoformat(), "Next": past.isoformat()}))
    await TimerWorker(timer_spec(fn), tmp_path).run(stop)
    assert fired == [False, True]
    # Nothing missed: nothing fires at start.
    await TimerWorker(timer_spec(fn), tmp_path).run(stop)
    assert fired == [False, True]
    assert datetime.fromisoformat(json.loads(status.read_text())["Next"]) > datetime.now(UTC)


async def test_an_invocation_ends_with_the_hosts_executed_line_saying_why_it_failed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from devhost.invoke import invoke

    started = asyncio.Event()

    async def slow(timer: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    async def broken(timer: Any) -> None:
        raise RuntimeError("boom")

    caplog.set_level("INFO", logger="devhost")
    # Cancelled (the runner stopping mid-run): no traceback follows, so the line itself says why.
    task = asyncio.ensure_future(invoke(timer_spec(slow), None))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(RuntimeError):  # raised: the driver logs its traceback after this line
        await invoke(timer_spec(broken), None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executed")]
    assert len(lines) == 2 and all(line.startswith("Executed 'Functions.tick' (Failed, Id=") for line in lines)
    assert lines[0].endswith(": cancelled before it finished") and lines[1].endswith("ms)"), lines


def test_function_timeout_is_host_jsons_else_the_flex_consumption_default(tmp_path: Path) -> None:
    from devhost.invoke import DEFAULT_FUNCTION_TIMEOUT_S, FUNCTION_TIMEOUT_S, function_timeout

    assert FUNCTION_TIMEOUT_S == 300.0  # this repository's host.json: "00:05:00"
    host = tmp_path / "host.json"
    host.write_text('{"version": "2.0"}')
    assert function_timeout(host) == DEFAULT_FUNCTION_TIMEOUT_S == 1800.0
    host.write_text('{"version": "2.0", "functionTimeout": "-1"}')
    assert function_timeout(host) is None
    host.write_text('{"version": "2.0", "functionTimeout": "01:30:00"}')
    assert function_timeout(host) == 5400.0


async def test_an_invocation_past_function_timeout_is_cancelled_and_fails_as_the_hosts_does(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The host cancels an invocation that runs past host.json's `functionTimeout` (and, for Python,
    restarts the worker): a queue message's or a timer's run fails, an HTTP request answers 500. One
    that finishes in time is untouched, and the task that ran the late one carries on (no cancel is
    left pending on it)."""
    import asyncio
    import time

    import httpx

    from devhost import invoke as invoke_module
    from devhost.app_loader import load_functions
    from devhost.http_driver import HttpDriver

    monkeypatch.setattr(invoke_module, "FUNCTION_TIMEOUT_S", 0.5)
    monkeypatch.setattr(invoke_module._Watchdog, "CHECK_S", 0.05)
    caplog.set_level("INFO", logger="devhost")
    swallowed: list[str] = []

    async def late(timer: Any) -> None:
        await asyncio.sleep(30)

    async def stubborn(timer: Any) -> None:  # catches the cancel and finishes anyway
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.append("cancel")

    start = time.monotonic()
    with pytest.raises(invoke_module.FunctionTimeout):
        await invoke_module.invoke(timer_spec(late), None)
    assert 0.5 <= time.monotonic() - start < 2.0
    await asyncio.sleep(0.01)  # this task was not left cancelled
    await invoke_module.invoke(timer_spec(stubborn), None)
    assert swallowed == ["cancel"]
    await asyncio.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records]
    host_words = "Timeout value of 0.5 s exceeded by function 'Functions.tick'"
    assert any(line.startswith(host_words) for line in lines)
    executed = [line for line in lines if line.startswith("Executed 'Functions.tick' (Failed")]
    assert len(executed) == 1 and "functionTimeout" in executed[0], lines

    port = services.free_port()
    driver = HttpDriver(load_functions("tests.devhost_apps.http_app"), port)
    await driver.start()
    try:
        async with httpx.AsyncClient() as client:
            ok, late_answer = await asyncio.gather(client.get(f"http://127.0.0.1:{port}/slow?s=0.1"),
                                                   client.get(f"http://127.0.0.1:{port}/slow?s=30"))
            assert (ok.status_code, ok.text) == (200, "done")
            assert late_answer.status_code == 500 and late_answer.elapsed.total_seconds() < 2.0
            again = await client.get(f"http://127.0.0.1:{port}/slow?s=0")  # the server goes on
            assert again.status_code == 200
    finally:
        await driver.stop()


async def test_queue_connection_string_or_identity_based_service_uri() -> None:
    """A queue trigger's connection as the host resolves it: the setting as a connection string,
    else `<connection>__queueServiceUri` with an identity (the developer's, outside Azure)."""
    from azure.identity.aio import DefaultAzureCredential

    from devhost.app_loader import FunctionSpec
    from devhost.queue_driver import queue_clients

    spec = FunctionSpec("q", {"type": "queueTrigger", "name": "msg", "queueName": "work",
                              "connection": "STORE"}, [], lambda msg: None, {})
    cs = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
          "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;")
    queue, poison, cred = queue_clients(spec, "work", {"STORE": cs, "STORE__queueServiceUri": "https://x"})
    assert (queue.url, poison.queue_name, cred) == ("http://127.0.0.1:10001/devstoreaccount1/work",
                                                    "work-poison", None)
    await queue.close()
    await poison.close()
    uri = "https://acct.queue.core.windows.net/"
    queue, poison, cred = queue_clients(spec, "work", {"STORE__queueServiceUri": uri})
    try:
        assert queue.url == uri + "work" and poison.url == uri + "work-poison"
        assert isinstance(cred, DefaultAzureCredential) and queue.credential is cred
    finally:
        for closable in (queue, poison, cred):
            await closable.close()
    with pytest.raises(KeyError, match="STORE__queueServiceUri"):
        queue_clients(spec, "work", {})


async def test_a_failed_queue_request_is_retried_as_the_host_retries_it() -> None:
    """The runner's queue clients retry as the host's do (Azure.Core's defaults: 3 retries after about
    0.8, 1.6 and 3.2 s, each +-20 %), not with the Python Queue SDK's 18, 24 and 42 s. A server that
    answers every request 503 (storage busy, which both retry): the gaps between the requests it sees
    are the retry delays."""
    import asyncio
    import time

    from azure.core.exceptions import AzureError

    from devhost.app_loader import FunctionSpec
    from devhost.queue_driver import queue_clients

    seen: list[float] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):  # a request's head (no body: a GET)
                seen.append(time.monotonic())
                writer.write(b"HTTP/1.1 503 Server Busy\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cs = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
          f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    spec = FunctionSpec("q", {"type": "queueTrigger", "name": "msg", "queueName": "work",
                              "connection": "STORE"}, [], lambda msg: None, {})
    queue, poison, _ = queue_clients(spec, "work", {"STORE": cs})
    try:
        with pytest.raises(AzureError):
            await queue.get_queue_properties()
    finally:
        await queue.close()
        await poison.close()
        server.close()
        await server.wait_closed()
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    assert len(seen) == 4, gaps  # the first try and 3 retries (the SDK's default also makes 4)
    for gap, delay in zip(gaps, (0.8, 1.6, 3.2)):
        assert delay * 0.8 - 0.05 <= gap <= delay * 1.2 + 0.5, gaps


def test_what_the_http_server_refuses_maps_to_a_status_and_a_detail_without_the_request_bytes() -> None:
    from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong

    from devhost.http_driver import MAX_HEADERS_TOTAL_BYTES, MAX_REQUEST_LINE_BYTES, refusal

    secret = "Bearer s3cr3t-token"
    cases = [
        (LineTooLong(secret.encode(), MAX_HEADERS_TOTAL_BYTES), 431),  # one header too long
        (LineTooLong(bytearray(b"/" + secret.encode()), MAX_REQUEST_LINE_BYTES), 414),  # the request line
        (BadHttpMessage("Too many headers received"), 431),
        (BadHttpMessage(f"Invalid header value char:\n\n  b'Authorization: {secret}\\x00'\n   ^"), 400),
        (BadHttpMessage(f"Missing expected LF after header value:\n\n  b'X: {secret}\\r'"), 400),
        (BadHttpMethod(f"G(T /{secret} HTTP/1.1"), 400),
        (None, 500),
    ]
    for exc, status in cases:
        code, title, detail = refusal(exc, 400 if exc is not None else 500)
        assert code == status, (exc, code)
        assert title and secret not in detail, detail
    assert refusal(cases[3][0], 400)[2] == "the request is not valid HTTP/1.1: Invalid header value char"


# ---- the HTTP driver ------------------------------------------------------------------------------

async def test_a_request_body_reaches_the_function_as_it_came_over_the_wire() -> None:
    """The host hands the worker the body as sent, a `Content-Encoding` not undone
    (azure-functions-core-tools#2185: a gzip'd body arrives gzip'd); aiohttp, which the runner is
    built on, would gunzip it. The app decodes it itself (shared/http/content_coding.py)."""
    import gzip

    import httpx

    from devhost.app_loader import load_functions
    from devhost.http_driver import HttpDriver

    port = services.free_port()
    driver = HttpDriver(load_functions("tests.devhost_apps.http_app"), port)
    await driver.start()
    try:
        body = gzip.compress(b'{"events": []}' * 50)
        async with httpx.AsyncClient() as client:
            for coding in ("gzip", "deflate", "br"):
                headers = {"Content-Type": "application/json", "Content-Encoding": coding}
                r = await client.post(f"http://127.0.0.1:{port}/echo", content=body, headers=headers)
                assert r.status_code == 200 and r.content == body, (coding, r.status_code, r.content[:80])
    finally:
        await driver.stop()


async def test_query_headers_and_a_chunked_body_are_handed_over_as_the_host_hands_them() -> None:
    """The host's ToRpcHttp (azure-functions-host, GrpcMessageConversionExtensions.cs): each name once
    with its values joined by ",", header names lower-cased, query parameters with an empty value left
    out, and no body unless the request has a Content-Length above 0 (a chunked body arrives empty:
    azure-functions-host#4926, azure-functions-powershell-worker#476)."""
    import httpx

    from devhost.app_loader import load_functions
    from devhost.http_driver import HttpDriver

    port = services.free_port()
    driver = HttpDriver(load_functions("tests.devhost_apps.http_app"), port)
    await driver.start()
    base = f"http://127.0.0.1:{port}/inspect"
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(base + "?limit=1&limit=2&eventType=&q=a%2Cb",
                                 headers=[("X-Multi", "one"), ("x-multi", "two"), ("X-Case", "v")])
            seen = r.json()
            assert seen["params"] == {"limit": "1,2", "q": "a,b"}, seen
            assert seen["headers"]["x-multi"] == "one,two" and seen["headers"]["x-case"] == "v", seen

            async def chunks() -> Any:
                yield b'{"events": '
                yield b"[]}"

            r = await client.post(base, content=chunks(), headers={"Content-Type": "application/json"})
            seen = r.json()
            assert seen["headers"]["transfer-encoding"] == "chunked" and seen["body"] == 0, seen
            r = await client.post(base, content=b'{"events": []}',
                                  headers={"Content-Type": "application/json"})
            assert r.json()["body"] == 14
    finally:
        await driver.stop()


def test_route_literals_match_in_any_case_and_parameters_keep_theirs() -> None:
    """ASP.NET Core's RoutePatternMatcher, which the host routes with, compares literal segments
    OrdinalIgnoreCase and ignores a trailing slash; a parameter's value is the segment as sent."""
    from devhost.http_driver import compile_route
    from shared.api.routes import ROUTES
    from shared.http.routing import allowed_methods

    regex, _ = compile_route("events/{tenantId}/history")
    m = regex.fullmatch("/EVENTS/Acme-1/History/")
    assert m is not None and m.group("tenantId") == "Acme-1"
    assert regex.fullmatch("/events/acme-1/histories") is None
    # The app's own 405 answer sees the path as the host routed it.
    assert allowed_methods(ROUTES, "/Stream-Config/acme-1") == ["GET", "PUT"]


def test_a_binding_naming_an_empty_setting_is_not_loaded_and_the_others_are(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An app setting set to "" (e.g. `RETRY_QUEUE= make run`) leaves that function out, as a missing
    one does; building its queue client with an empty name crashed the runner at start."""
    from devhost.app_loader import load_functions

    monkeypatch.setenv("RETRY_QUEUE", "")
    names = {f.name for f in load_functions("function_app")}
    assert "drain_retries" not in names and {"run_backfill", "index_vectors"} <= names
