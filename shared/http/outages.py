"""Which failures mean "a dependency the request needs is unavailable right now".

The request adapter answers those with 503, `Retry-After` and problem details instead of a 500: the
request was fine, the service cannot serve it at the moment, and the client should come back. One
mapping for every route: Redis unreachable, timing out, loading, read-only after a failover or out
of memory; Azure Storage / Cosmos DB unreachable, timing out or answering 5xx / 429 (throttled), or a
table or queue missing.
Anything else stays a 500 (a bug must not pass for an outage).
"""
from __future__ import annotations

import asyncio

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from redis import exceptions as redis_errors

from shared.storage.lazy import table_gone

RETRY_AFTER_SECONDS = 5  # short outages (a restart, a failover) are over within seconds

# Redis error replies that clear up by themselves (the server is loading, a replica is being
# promoted, memory is full until something expires or the operator scales up).
_REDIS_TRANSIENT_REPLIES = ("LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "OOM", "BUSY")


def _one(exc: BaseException) -> str | None:
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
        return "redis"
    if isinstance(exc, redis_errors.ResponseError) and str(exc).startswith(_REDIS_TRANSIENT_REPLIES):
        return "redis"
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return "storage"
    if isinstance(exc, HttpResponseError) and (exc.status_code or 0) in (429, *range(500, 600)):
        return "storage"
    if table_gone(exc) or (isinstance(exc, ResourceNotFoundError)
                           and getattr(exc, "error_code", None) == "QueueNotFound"):
        # Deleted under the app. Its table and queue users create them again on the spot
        # (storage/lazy.py); a path that does not is still not the client's fault.
        return "storage"
    if isinstance(exc, (asyncio.TimeoutError, ConnectionError)):  # sockets and bounded waits
        return "network"
    return None


def unavailable_dependency(exc: BaseException) -> str | None:
    """The kind of dependency that failed ("redis", "storage", "network"), or None when `exc` is
    not an outage. Follows the cause/context chain (a wrapped outage is still an outage)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            for inner in current.exceptions:
                found = unavailable_dependency(inner)
                if found:
                    return found
        found = _one(current)
        if found:
            return found
        current = current.__cause__ or current.__context__
    return None
