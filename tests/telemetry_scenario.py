"""One process's telemetry, for either backend: `python -m tests.telemetry_scenario` (run by
tests/test_telemetry_backends.py in a subprocess, since the OpenTelemetry backend is configured once
per process, as in a Functions worker).

It configures telemetry with TELEMETRY_BACKEND as given, sends a fixed set of logs and metrics
covering every catalogued metric, flushes, sends a second interval, closes, and prints one JSON line:
what it could not do (a second configuration, errors), the threads left, and every connection it
tried to a non-loopback address (a socket guard refuses them: nothing may phone home from a test).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
import urllib.request
from typing import Any

import requests

LOOPBACK = ("127.0.0.1", "::1", "localhost")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SECRET = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS1kby1ub3QtdXNlLWFueXdoZXJlLTAxMjM0NQ=="
BLOCKED: list[str] = []


def _guard_network() -> None:
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if host not in LOOPBACK:
            BLOCKED.append(str(host))
            raise OSError(f"test guard: no connection to {host}")
        return real_getaddrinfo(host, *args, **kw)

    def connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            BLOCKED.append(str(address[0]))
            raise OSError(f"test guard: no connection to {address[0]}")
        return real_connect(self, address)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]


class FixedToken:
    """A TokenCredential standing in for the managed identity's (no Entra ID here)."""

    scopes: list[list[str]] = []

    def get_token(self, *scopes: str, **kw: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(list(scopes))
        return AccessToken("entra-test-token", int(time.time()) + 3600)


def run(backend: str, conn: str, storage: str, *, entra: bool, info_sampling: float, wait_log: bool) -> dict[str, Any]:
    from shared.core.settings import Settings
    from shared.observability import telemetry
    from shared.observability.telemetry import BatchTelemetryBuilder, SystemStats

    settings = Settings(APPLICATIONINSIGHTS_CONNECTION_STRING=conn, TELEMETRY_BACKEND=backend,
                        TELEMETRY_INFO_SAMPLING=info_sampling)
    before = {t.ident for t in threading.enumerate()}
    cred = FixedToken() if entra else None
    # Metrics leave on flush() only (60 s interval).
    tel = telemetry.configure(settings, export_interval=60.0, storage_path=storage, credential=cred)
    out: dict[str, Any] = {"enabled": tel.enabled, "type": type(tel).__name__}
    if wait_log:  # a record that leaves on its own, within the log interval (2 s), with no flush
        tel.log_event(logging.WARNING, "on its own", tenantId="tenant-1")
        time.sleep(3.5)
    # HTTP calls through urllib and requests: no dependency record may come of them (no tracing, no
    # auto-instrumentation).
    endpoint = dict(p.split("=", 1) for p in conn.split(";"))["IngestionEndpoint"]
    for call in (lambda: urllib.request.urlopen(endpoint + "ping", timeout=5),
                 lambda: requests.get(endpoint + "ping", timeout=5)):
        try:
            call()
        except Exception:  # noqa: BLE001 - the fake answers 404; the call is what counts
            pass

    with telemetry.operation(TRACEPARENT, "EventsPost"):
        tel.log_event(logging.WARNING, f"destination failed with AccountKey={SECRET}", tenantId="tenant-1",
                      destination="redis-streams", eventType="CONTROL_FAILED", attempt=2,
                      data={"title": "payload-marker"}, correlationId=SECRET)
        try:
            raise RuntimeError("redis://user:hunter2-marker@cache:6380 rejected token=payload-marker")
        except RuntimeError:
            logging.getLogger("grc.pipeline").exception(
                "delivery crashed", extra={"custom_dimensions": {"tenantId": "tenant-1", "event": {"x": 1}}})
    for i in range(20):
        tel.log_event(logging.INFO, f"batch {i} done", tenantId="tenant-1")
    tel.log_event(logging.INFO, "started", operation="startup")  # no invocation

    b = BatchTelemetryBuilder()
    b.accepted("t1", "RISK_CREATED", "FRONTEND_APP", 2).filtered("t1", "RISK_CREATED", "FRONTEND_APP")
    b.rejected("t1", "all", "all").failed("t1", "RISK_CREATED", "COSMOS_DB")
    b.delivered("t1", "redis", 2).delivery_failed("t1", "kafka").retry_scheduled("t1", "kafka")
    b.deadletter("t1", "kafka").latency("t1", 10).latency("t1", 30).changefeed_delay("t1", "risks", 1500)
    b.request_charge(2.5)
    with telemetry.operation(TRACEPARENT, "CosmosChanges"):
        tel.on_batch(b.build())
    tel.on_system(SystemStats(memory_percent=70.0, redis_memory_percent=12.0, destinations_healthy={"redis": True}))
    tel.on_system(SystemStats(memory_percent=85.5, kafka_pending_messages=120, kafka_pending_bytes=64000,
                              retry_queue_messages=7, retry_queue_poison_messages=1,
                              destinations_healthy={"kafka": False}))
    tel.flush()
    tel.flush()  # nothing new: nothing sent
    tel.on_batch(BatchTelemetryBuilder().accepted("t1", "RISK_CREATED", "FRONTEND_APP", 4).build())
    tel.flush()

    try:
        telemetry.configure(settings, storage_path=storage)  # closes the first, then tries again
        out["second_configure"] = "ok"
    except RuntimeError as exc:
        out["second_configure"] = str(exc)
    telemetry.configure(Settings())  # closes whatever is configured
    deadline = time.monotonic() + 10
    while {t.ident for t in threading.enumerate() if t.is_alive()} - before and time.monotonic() < deadline:
        time.sleep(0.05)
    out["threads_left"] = sorted(t.name for t in threading.enumerate() if t.is_alive() and t.ident not in before)
    out["handlers_left"] = [type(h).__name__ for h in logging.getLogger("grc").handlers]
    out["token_scopes"] = cred.scopes if cred else []
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("backend")
    ap.add_argument("connection_string")
    ap.add_argument("storage")
    ap.add_argument("--entra", action="store_true")
    ap.add_argument("--info-sampling", type=float, default=1.0)
    ap.add_argument("--wait-log", action="store_true")
    args = ap.parse_args()
    # The SDKs' own usage reports and the distro's remote configuration would go to Microsoft.
    for name in ("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED",
                 "APPLICATIONINSIGHTS_SDKSTATS_DISABLED"):
        os.environ[name] = "true"
    _guard_network()
    out = run(args.backend, args.connection_string, args.storage, entra=args.entra,
              info_sampling=args.info_sampling, wait_log=args.wait_log)
    out["blocked"] = BLOCKED
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
