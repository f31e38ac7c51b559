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
from shared.http.types import ApiRequest, ApiResponse, Headers, json_response


class _Resp:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.reason = "x"
        self.headers: dict[str, str] = {}

    def text(self) -> str:
        return ""


def _http(status: int) -> HttpResponseError:
    return HttpResponseError(message=f"status {status}", response=_Resp(status))  # type: ignore[arg-type]


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
    (asyncio.TimeoutError(), "network"),
    (ConnectionRefusedError(), "network"),
])
def test_outages(exc: BaseException, kind: str) -> None:
    assert unavailable_dependency(exc) == kind


@pytest.mark.parametrize("exc", [
    ValueError("a bug"), KeyError("x"), redis_errors.ResponseError("WRONGTYPE Operation against a key"),
    _http(400), _http(404), ResourceNotFoundError("gone"), ClientAuthenticationError("bad key"),
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


def test_the_table_read_routes_have_the_storage_deadline() -> None:
    """The routes that read Table storage and change nothing are bounded; writes and replays are not
    (cancelled halfway, a config could change without its audit record)."""
    bounded = {r.name for r in ROUTES if r.deadline is not None}
    assert bounded == {"event_history", "list_deadletters", "list_backfills", "get_backfill",
                       "get_stream_config", "get_audit"}
    assert all(r.method == "GET" and r.deadline == limits.STORAGE_READ_SECONDS
               for r in ROUTES if r.deadline is not None)
