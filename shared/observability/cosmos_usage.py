"""Request units (RU) spent by the service's own Cosmos DB calls, counted per process.

Fed from each response's `x-ms-request-charge` header: `shared.storage.cosmosdb.record_charge` (what the
change-capture code calls after each of its Cosmos calls) hands every charge to `add`, registered
below as its hook; other code can call

    cosmos_usage.record_charge(container.client_connection.last_response_headers, operation="...")

`snapshot()` is what GET /metrics shows (service section) and the monitor timer reads; each charge
also goes to Application Insights as `grc.cosmos.request_charge` (a counter: portal "Sum" per
interval = RU spent). The trigger bindings' own lease/feed reads are the host's, not counted here.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Mapping

from shared.observability import telemetry

_lock = threading.Lock()
_since = time.time()
_total = 0.0
_requests = 0
_by_operation: dict[str, list[float]] = {}  # operation -> [requests, RU]
MAX_OPERATIONS = 64  # bounded: operation names come from code, but never let them grow unbounded


def _parse(value: Any) -> float:
    try:
        charge = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return charge if charge > 0 else 0.0


def add(operation: str, request_charge: float) -> None:
    """Count one Cosmos response of `request_charge` RU (also the shape of a shared.storage.cosmosdb hook)."""
    global _total, _requests
    ru = _parse(request_charge)
    with _lock:
        _total += ru
        _requests += 1
        key = operation if operation in _by_operation or len(_by_operation) < MAX_OPERATIONS else "other"
        slot = _by_operation.setdefault(key, [0.0, 0.0])
        slot[0] += 1
        slot[1] += ru
    if ru:
        telemetry.current().record("grc.cosmos.request_charge", ru)


def record_charge(headers: Mapping[str, Any] | None, operation: str = "query") -> float:
    """Count the RU charge of one response from its headers; returns the charge (0 when absent)."""
    headers = headers or {}
    value = headers.get("x-ms-request-charge")
    if value is None:  # plain dicts from some SDK paths keep the server's casing
        value = next((v for k, v in headers.items() if str(k).lower() == "x-ms-request-charge"), None)
    ru = _parse(value)
    add(operation, ru)
    return ru


def snapshot() -> dict[str, Any]:
    """Process-wide totals since start (or the last reset)."""
    with _lock:
        elapsed = max(time.time() - _since, 1e-9)
        return {
            "requestCharge": round(_total, 2),
            "requests": _requests,
            "requestChargePerSecond": round(_total / elapsed, 3),
            "since": _since,
            "byOperation": {k: {"requests": int(v[0]), "requestCharge": round(v[1], 2)}
                            for k, v in sorted(_by_operation.items())},
        }


def reset() -> None:
    """Tests only."""
    global _since, _total, _requests
    with _lock:
        _since, _total, _requests = time.time(), 0.0, 0
        _by_operation.clear()


def _register() -> None:
    from shared.storage import cosmosdb  # noqa: PLC0415 - azure-cosmos only where the hook lives

    cosmosdb.remove_request_charge_hook(add)  # idempotent on re-import
    cosmosdb.on_request_charge(add)


_register()
