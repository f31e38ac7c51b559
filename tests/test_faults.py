"""Fault test: a steady stream of events while Redis, then Azurite, are stopped by PID and restarted.

Every acknowledged event must end up delivered exactly once to each destination, or dead-lettered
with its reason. The services here are durable instances of their own (Redis with an fsync'd
append-only file, Azurite on disk), as the real ones are: a restart must not lose what they had
acknowledged. The client behaves like a well-behaved producer: each event carries its eventId and
timestamp, and a 503/409 is retried until the event is acknowledged (bounded).

The Kafka destination is not on this branch yet: when it lands, add ("kafka", kafka_broker) to
PHASES and a kafka destination to the tenant's config, and count what a consumer reads back.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from localdev import services
from shared.destinations.redis_streams import stream_key
from shared.models import StreamConfigIn
from tests.delivery_helpers import drain, isolated_services
from tests.functions_client import invoke

SEND_INTERVAL = 0.01
CLIENT_RETRY_SECONDS = 20.0  # per event, like a client honouring Retry-After
OUTAGE_SECONDS = 1.5
STEADY_SECONDS = 1.0
RETRY = {"attempts": 10, "inProcessAttempts": 2, "backoffSeconds": 1, "maxBackoffSeconds": 2, "jitter": 0.2,
         "timeoutSeconds": 2}


def _durable_redis(p: dict[str, int], work: Path) -> list[str]:
    return ["redis-server", "--port", str(p["port"]), "--bind", "127.0.0.1", "--save", "", "--dir", str(work),
            "--appendonly", "yes", "--appendfsync", "always", "--maxmemory", "256mb"]


def _durable_azurite(p: dict[str, int], work: Path) -> list[str]:
    argv = [a for a in services.SPECS["azurite"].argv(p, work) if a != "--inMemoryPersistence"]
    return [*argv, "--location", str(work / "data")]


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Durable Redis and Azurite for this module, started and stopped by PID."""
    saved = dict(services.SPECS)
    services.SPECS["redis-durable"] = services.ServiceSpec("redis-durable", ("port",), _durable_redis,
                                                           services.SPECS["redis"].settings)
    services.SPECS["azurite-durable"] = services.ServiceSpec("azurite-durable", ("blob", "queue", "table"),
                                                             _durable_azurite, services.SPECS["azurite"].settings)
    work = tmp_path_factory.mktemp("faults")
    running = {"redis": services.start("redis-durable", work / "redis"),
               "azurite": services.start("azurite-durable", work / "azurite")}
    state = {"running": running, "work": work}
    try:
        yield state
    finally:
        for r in state["running"].values():
            services.stop(r.proc)
        services.SPECS.clear()
        services.SPECS.update(saved)


async def bounce(state: dict[str, Any], name: str, outage: float) -> float:
    """Stop a service by PID, wait, start it again on the same ports; returns the downtime."""
    old = state["running"][name]
    t0 = time.monotonic()
    await asyncio.to_thread(services.stop, old.proc)
    await asyncio.sleep(outage)
    state["running"][name] = await asyncio.to_thread(
        services.start, f"{name}-durable", state["work"] / name, old.ports)
    return time.monotonic() - t0


class Client:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.sent: list[str] = []
        self.acknowledged: set[str] = set()
        self.unacknowledged: set[str] = set()
        self.retried_503 = 0
        self.statuses: dict[str, int] = {}

    async def send_one(self, n: int) -> None:
        event_id = f"{self.tenant}-{n:05d}"
        body = {"tenantId": self.tenant, "eventType": "CONTROL_TESTED", "source": "BACKEND_API", "action": "TEST",
                "entityId": f"ctl-{n % 17}", "data": {"n": n}, "eventId": event_id,
                "timestamp": datetime.now(timezone.utc).isoformat()}
        self.sent.append(event_id)
        deadline = time.monotonic() + CLIENT_RETRY_SECONDS
        while True:
            status, _, res = await invoke("publish_event", "POST", "/events", body)
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if status in (200, 201) and res["status"] in ("accepted", "duplicate"):
                self.acknowledged.add(event_id)
                return
            if status not in (409, 503) or time.monotonic() > deadline:
                self.unacknowledged.add(event_id)
                return
            self.retried_503 += 1
            await asyncio.sleep(0.2)

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        inflight: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            task = asyncio.create_task(self.send_one(n))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            n += 1
            await asyncio.sleep(SEND_INTERVAL)
        await asyncio.gather(*inflight)


async def redis_delivered(svc: Any, tenant: str) -> list[str]:
    entries = await svc.redis.xrange(stream_key(tenant))
    docs = [orjson.loads(f[b"e"]) for _, f in entries]
    return [d["eventId"] for d in docs if d["eventType"] != "SYSTEM_ERROR"]


async def analytics_delivered(svc: Any, tenant: str) -> list[str]:
    table = await svc.analytics.table()
    rows = [e async for e in table.query_entities(
        "PartitionKey ge @lo and PartitionKey lt @hi", parameters={"lo": tenant + "_", "hi": tenant + "`"},
        select=["EventId", "EventType"])]
    return [r["EventId"] for r in rows if r["EventType"] != "SYSTEM_ERROR"]


async def dead_lettered(svc: Any, tenant: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    token = None
    while True:
        rows, token = await svc.retries.deadletters.list(tenant, limit=1000, token=token, include_replayed=True)
        for r in rows:
            if r["eventType"] != "SYSTEM_ERROR":
                out.setdefault(r["destination"], []).append(r)
        if not token:
            return out


async def test_stop_and_restart_each_service_while_events_flow(
    durable: dict[str, Any], app_env: dict[str, str]
) -> None:
    started = time.monotonic()
    redis_port = durable["running"]["redis"].ports["port"]
    conn = durable["running"]["azurite"].settings["STORAGE_CONNECTION_STRING"]
    async with isolated_services(redis_port=redis_port, storage_connection_string=conn) as svc:
        tenant = "fault-" + uuid.uuid4().hex[:6]
        await svc.configs.write(tenant, StreamConfigIn.model_validate({"destinations": [
            {"type": "redis", "retry": RETRY},
            {"type": "analytics", "config": {"shards": 2}, "retry": RETRY},
        ]}))
        client = Client(tenant)
        stop = asyncio.Event()
        producer = asyncio.create_task(client.run(stop))
        downtime: dict[str, float] = {}
        await asyncio.sleep(STEADY_SECONDS)
        for name in ("redis", "azurite"):
            downtime[name] = round(await bounce(durable, name, OUTAGE_SECONDS), 2)
            await asyncio.sleep(STEADY_SECONDS)
        stop.set()
        await producer
        drained = await drain(svc, timeout=30)

        redis_ids = await redis_delivered(svc, tenant)
        analytics_ids = await analytics_delivered(svc, tenant)
        dlq = await dead_lettered(svc, tenant)
        delivered = {"redis": redis_ids, "analytics": analytics_ids}
        acked = client.acknowledged
        counts = {
            "sent": len(client.sent),
            "acknowledged": len(acked),
            "unacknowledged": len(client.unacknowledged),
            "clientRetries": client.retried_503,
            "httpStatuses": client.statuses,
            "delivered": {d: len(set(ids) & acked) for d, ids in delivered.items()},
            "deadLettered": {d: len(dlq.get(d, [])) for d in delivered},
            "duplicates": {d: len(ids) - len(set(ids)) for d, ids in delivered.items()},
            "retryMessagesDrained": drained["processed"],
            "downtimeSeconds": downtime,
            "elapsedSeconds": round(time.monotonic() - started, 1),
        }
        print("\nfault counts:", orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode())

        assert counts["sent"] > 100 and counts["unacknowledged"] == 0
        assert client.statuses.get("503", 0) > 0  # the outages were felt, and answered 503, not lost
        for d, ids in delivered.items():
            dl_ids = {r["event"]["eventId"] for r in dlq.get(d, [])}
            assert all(r["reason"] for r in dlq.get(d, [])), d
            assert acked <= set(ids) | dl_ids, f"{d}: acknowledged but neither delivered nor dead-lettered"
            assert counts["acknowledged"] == counts["delivered"][d] + counts["deadLettered"][d], d
            assert counts["duplicates"][d] == 0, d
            assert set(ids) <= set(client.sent)
        assert time.monotonic() - started < 60
