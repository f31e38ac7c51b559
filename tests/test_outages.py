"""Which failures are outages (503 with Retry-After) and which stay errors (500)."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from redis import exceptions as redis_errors

from shared.api.routes import ROUTES
from shared.core import limits
from shared.http.adapter import handle, public
from shared.http.outages import unavailable_dependency
from shared.http.types import ApiRequest, ApiResponse, Headers, ProblemError, json_response


class _Resp:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.reason = "x"
        self.headers: dict[str, str] = {}

    def text(self) -> str:
        return ""


def _http(status: int) -> HttpResponseError:
    return HttpResponseError(message=f"status {status}", response=_Resp(status))  # type: ignore[arg-type]


def _missing(code: str) -> ResourceNotFoundError:
    """What the Tables / Queues SDKs raise for a request to a table or queue that does not exist."""
    exc = ResourceNotFoundError(message=f"{code}", response=_Resp(404))  # type: ignore[arg-type]
    exc.error_code = code
    return exc


@pytest.mark.parametrize("exc, kind", [
    (redis_errors.ConnectionError("refused"), "redis"),
    (redis_errors.TimeoutError("slow"), "redis"),
    (redis_errors.BusyLoadingError("LOADING"), "redis"),
    (redis_errors.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), "redis"),
    (redis_errors.ReadOnlyError("READONLY You can't write against a read only replica."), "redis"),
    (ServiceRequestError("connection refused"), "storage"),
    (ServiceResponseError("connection reset"), "storage"),
    (_http(503), "storage"),
    (_http(500), "storage"),
    (_http(429), "storage"),
    (_missing("TableNotFound"), "storage"),  # deleted under the app (the app creates it again)
    (_missing("QueueNotFound"), "storage"),
    (asyncio.TimeoutError(), "network"),
    (ConnectionRefusedError(), "network"),
])
def test_outages(exc: BaseException, kind: str) -> None:
    assert unavailable_dependency(exc) == kind


@pytest.mark.parametrize("exc", [
    ValueError("a bug"), KeyError("x"), redis_errors.ResponseError("WRONGTYPE Operation against a key"),
    _http(400), _http(404), ResourceNotFoundError("gone"),
    _missing("ResourceNotFound"), ClientAuthenticationError("bad key"),
])
def test_not_outages(exc: BaseException) -> None:
    assert unavailable_dependency(exc) is None


def test_a_wrapped_outage_is_still_an_outage() -> None:
    try:
        try:
            raise redis_errors.ConnectionError("refused")
        except redis_errors.ConnectionError as inner:
            raise RuntimeError("while reading the stream") from inner
    except RuntimeError as outer:
        assert unavailable_dependency(outer) == "redis"
    group = ExceptionGroup("several", [ValueError("x"), ServiceRequestError("down")])
    assert unavailable_dependency(group) == "storage"


def _get(path: str = "/audit/acme") -> ApiRequest:
    return ApiRequest("GET", path, Headers(), {}, {})


async def test_a_route_past_its_deadline_answers_503_with_retry_after() -> None:
    """A read route's `deadline` (Route.deadline): a handler still waiting when it passes (a store that
    accepts the connection and never answers) is an outage, answered at the deadline, not later."""
    answered: list[str] = []

    @public
    async def hanging(req: ApiRequest) -> ApiResponse:
        await asyncio.sleep(30)
        answered.append("late")
        return json_response({})

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    resp = await handle(_get(), hanging, "get_audit", deadline=0.3)
    took = loop.time() - t0
    assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0, resp
    assert orjson.loads(resp.body)["status"] == 503 and resp.headers["x-correlation-id"]
    assert 0.3 <= took < 1.0, took
    assert answered == []  # the handler was cancelled, not left running


async def test_a_route_within_its_deadline_or_without_one_answers_as_usual() -> None:
    @public
    async def slow(req: ApiRequest) -> ApiResponse:
        await asyncio.sleep(0.2)
        return json_response({"ok": True})

    assert (await handle(_get(), slow, "get_audit", deadline=5.0)).status == 200
    assert (await handle(_get(), slow, "get_audit")).status == 200  # no deadline: as long as it takes


async def test_a_write_past_its_deadline_answers_503_and_goes_on_to_its_end(
        caplog: pytest.LogCaptureFixture) -> None:
    """A write route (Route.completes): at the deadline the client gets 503 with Retry-After and a
    detail saying the change may still be applied; the work is not cancelled halfway but finishes
    (a config write and its audit record both happen, or neither) and its outcome is logged."""
    steps: list[str] = []

    @public
    async def slow_write(req: ApiRequest) -> ApiResponse:
        steps.append("written")
        await asyncio.sleep(0.6)  # e.g. the audit record, on a store that answers late
        steps.append("audited")
        return json_response({}, 201)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    resp = await handle(ApiRequest("PUT", "/stream-config/acme", Headers(), {}, {}), slow_write,
                        "put_stream_config", deadline=0.2, completes=True)
    took = loop.time() - t0
    assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0, resp
    assert "may still be applied" in orjson.loads(resp.body)["detail"]
    assert 0.2 <= took < 0.5, took
    assert steps == ["written"]
    with caplog.at_level("WARNING", logger="grc.http"):
        await asyncio.sleep(0.8)
    assert steps == ["written", "audited"]  # not cut short
    assert any("finished after its 503: answered 201" in r.getMessage() for r in caplog.records), caplog.text

    @public
    async def refused(req: ApiRequest) -> ApiResponse:
        await asyncio.sleep(0.4)
        raise ProblemError(412, "Precondition Failed", "changed since read")

    caplog.clear()
    resp = await handle(ApiRequest("PUT", "/stream-config/acme", Headers(), {}, {}), refused,
                        "put_stream_config", deadline=0.2, completes=True)
    assert resp.status == 503
    with caplog.at_level("WARNING", logger="grc.http"):
        await asyncio.sleep(0.5)
    assert any("finished after its 503: refused 412" in r.getMessage() for r in caplog.records), caplog.text
    # Within the deadline a write answers as usual.
    assert (await handle(ApiRequest("PUT", "/stream-config/acme", Headers(), {}, {}), refused,
                         "put_stream_config", deadline=5.0, completes=True)).status == 412


async def test_a_write_whose_request_is_cancelled_still_goes_on_to_its_end(
        caplog: pytest.LogCaptureFixture) -> None:
    steps: list[str] = []

    @public
    async def slow_write(req: ApiRequest) -> ApiResponse:
        await asyncio.sleep(0.3)
        steps.append("written")
        return json_response({}, 200)

    request = asyncio.ensure_future(handle(ApiRequest("PUT", "/stream-config/acme", Headers(), {}, {}),
                                           slow_write, "put_stream_config", deadline=5.0, completes=True))
    await asyncio.sleep(0.1)
    request.cancel()  # e.g. the client went away
    with pytest.raises(asyncio.CancelledError):
        await request
    with caplog.at_level("WARNING", logger="grc.http"):
        await asyncio.sleep(0.4)
    assert steps == ["written"]
    assert any("finished after its request was cancelled: answered 200" in r.getMessage()
               for r in caplog.records), caplog.text


def test_the_table_routes_have_the_storage_deadline() -> None:
    """The routes that read Table storage are bounded, and so are the single writes (config, backfill
    start and cancel), which then go on to their end; a replay is not bounded (a healthy replay of many
    dead letters may take longer than the deadline)."""
    reads = {r.name for r in ROUTES if r.deadline is not None and not r.completes}
    writes = {r.name for r in ROUTES if r.deadline is not None and r.completes}
    assert reads == {"event_history", "list_deadletters", "list_backfills", "get_backfill",
                     "get_stream_config", "get_audit"}
    assert writes == {"put_stream_config", "start_backfill", "cancel_backfill"}
    assert all(r.method == "GET" for r in ROUTES if r.name in reads)
    assert all(r.deadline == limits.STORAGE_READ_SECONDS for r in ROUTES if r.deadline is not None)
    assert not any(r.completes for r in ROUTES if r.deadline is None)
