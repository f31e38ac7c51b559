"""Which failures are outages (503 with Retry-After) and which stay errors (500)."""
from __future__ import annotations

import asyncio

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from redis import exceptions as redis_errors

from shared.http.outages import unavailable_dependency


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
