"""Fault test: a steady stream of events while the Kafka broker, then Redis, then Azurite are stopped
by PID and restarted on the same ports.

Every acknowledged event must end up delivered exactly once to each destination (Kafka, Redis
Streams, the analytics table), or dead-lettered with its reason. Redis and Azurite here are durable
instances of their own (Redis with an fsync'd append-only file, Azurite on disk), as the real ones
are: a restart must not lose what they had acknowledged. The local Kafka broker (tansu) keeps
messages in memory only, so a consumer reads the topic continuously, and the client pauses for a
moment before the broker is killed until the consumer has read everything acknowledged so far
(what the stand-in loses on restart is not a delivery failure). After the restart the topic is
created again, as Event Hubs' are provisioned. The client behaves like a well-behaved producer:
each event carries its eventId and timestamp, and a 503/409 is retried until it is acknowledged.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from localdev import services
from shared.destinations.redis_streams import stream_key
from shared.models import StreamConfigIn
from tests.delivery_helpers import drain, isolated_services
from tests.functions_client import invoke
from tests.kafka_helpers import create_topics, headers, unique_topic

SEND_INTERVAL = 0.01
CLIENT_RETRY_SECONDS = 20.0  # per event, like a client honouring Retry-After
OUTAGE_SECONDS = 1.5
STEADY_SECONDS = 1.0
RETRY = {"attempts": 10, "inProcessAttempts": 2, "backoffSeconds": 1, "maxBackoffSeconds": 2, "jitter": 0.2,
         "timeoutSeconds": 2}
KAFKA_DELIVERY_TIMEOUT_MS = 2_000
MAX_IN_FLIGHT = 48  # the client's concurrency: during an outage the stream slows (back-pressure)
# A Kafka attempt must outlast the producer's delivery timeout (+5 s for the report): see options.py.
KAFKA_RETRY = {**RETRY, "timeoutSeconds": KAFKA_DELIVERY_TIMEOUT_MS / 1000 + 10}
PARTITIONS = 3


def note(msg: str, started: float = time.monotonic()) -> None:
    print(f"[{time.monotonic() - started:6.2f}s] {msg}", flush=True)


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
    services.SPECS["kafka-durable"] = services.SPECS["kafka"]  # in memory: see the module docstring
    work = tmp_path_factory.mktemp("faults")
    running = {"redis": services.start("redis-durable", work / "redis"),
               "azurite": services.start("azurite-durable", work / "azurite"),
               "kafka": services.start("kafka-durable", work / "kafka")}
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
    await asyncio.to_thread(services.stop, old.proc, 2.0)
    await asyncio.sleep(outage)
    state["running"][name] = await asyncio.to_thread(
        services.start, f"{name}-durable", state["work"] / name, old.ports)
    return time.monotonic() - t0


class TopicWatcher:
    """Reads every partition of a topic continuously in a thread.

    Records are keyed by (partition, offset, eventId): reading one record twice (after a rewind)
    counts once, while a record the producer sent twice (another offset) counts twice. After the
    broker restarts (empty log), `rewind()` reads the new log from its beginning.
    """

    def __init__(self, broker: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": broker, "group.id": f"watch-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "fetch.wait.max.ms": 20, "fetch.error.backoff.ms": 20,
                                  "reconnect.backoff.max.ms": 200, "topic.metadata.refresh.interval.ms": 500, "logger": logging.getLogger("tests.kafka")})
        self.records: dict[tuple[int, int, str], str] = {}
        self.notices = 0
        self._rewind = threading.Event()
        self._rewind.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:  # the only thread that touches the consumer
        while not self._stop.is_set():
            if self._rewind.is_set():
                self._rewind.clear()
                self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
            for m in self.consumer.consume(500, timeout=0.05):
                if m.error() is None:
                    h = headers(m)
                    if h.get("eventType") == "SYSTEM_ERROR":
                        self.notices += 1  # a dead letter's notice, not one of the client's events
                        continue
                    self.records[(m.partition(), m.offset(), h["eventId"])] = h["eventId"]

    def rewind(self) -> None:
        self._rewind.set()

    @property
    def seen(self) -> list[str]:
        return list(self.records.values())

    async def wait_for(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ids <= set(self.seen):
                return True
            await asyncio.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()


class Client:
    def __init__(self, tenants: list[str]) -> None:
        self.tenants = tenants
        self.paused = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.sent: list[str] = []
        self.acknowledged: set[str] = set()
        self.unacknowledged: set[str] = set()
        self.retried_503 = 0
        self.statuses: dict[str, int] = {}

    async def send_one(self, n: int) -> None:
        tenant = self.tenants[n % len(self.tenants)]
        event_id = f"{tenant}-{n:05d}"
        body = {"tenantId": tenant, "eventType": "CONTROL_TESTED", "source": "BACKEND_API", "action": "TEST",
                "entityId": f"ctl-{n % 17}", "data": {"n": n}, "eventId": event_id,
                "timestamp": datetime.now(UTC).isoformat()}
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
        while not stop.is_set():
            if self.paused.is_set():
                await asyncio.sleep(SEND_INTERVAL)
                continue
            await self.slots.acquire()
            task = asyncio.create_task(self.send_one(n))
            task.add_done_callback(lambda _: self.slots.release())
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
            n += 1
            await asyncio.sleep(SEND_INTERVAL)
        await asyncio.gather(*self.inflight)

    async def quiesce(self) -> None:
        """Pause new sends and wait for the ones in flight."""
        self.paused.set()
        await asyncio.gather(*list(self.inflight))


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
        rows, token = await svc.retries.deadletters.list(tenant, limit=1000, after=token, include_replayed=True)
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
    broker = durable["running"]["kafka"].settings["KAFKA_BROKER"]
    topic = unique_topic("faults")
    create_topics(broker, topic, partitions=PARTITIONS)
    watcher = TopicWatcher(broker, topic)
    async with isolated_services(redis_port=redis_port, storage_connection_string=conn, kafka_broker=broker,
                                 kafka_delivery_timeout_ms=KAFKA_DELIVERY_TIMEOUT_MS) as svc:
        tenant = "fault-" + uuid.uuid4().hex[:6]
        await svc.configs.write(tenant, StreamConfigIn.model_validate({"topics": [topic], "destinations": [
            {"type": "kafka", "retry": KAFKA_RETRY},
            {"type": "redis", "retry": RETRY},
            {"type": "analytics", "config": {"shards": 2}, "retry": RETRY},
        ]}))
        # A second tenant allows no queue retries at Redis: what Redis refuses is dead-lettered.
        strict = "strict-" + uuid.uuid4().hex[:6]
        await svc.configs.write(strict, StreamConfigIn.model_validate({"topics": [topic], "destinations": [
            {"type": "kafka", "retry": KAFKA_RETRY},
            {"type": "redis", "retry": {**RETRY, "attempts": 0, "inProcessAttempts": 1}},
            {"type": "analytics", "config": {"shards": 2}, "retry": RETRY},
        ]}))
        tenants = [tenant, strict]
        client = Client(tenants)
        stop = asyncio.Event()
        producer = asyncio.create_task(client.run(stop))
        downtime: dict[str, float] = {}
        await asyncio.sleep(STEADY_SECONDS)

        # Kafka: the stand-in forgets on restart, so everything acknowledged must be read first.
        note("kafka: quiesce")
        await client.quiesce()
        note(f"kafka: quiet, {len(client.acknowledged)} acknowledged")
        assert await watcher.wait_for(set(client.acknowledged), timeout=10), "consumer did not catch up"
        old = durable["running"]["kafka"]
        t0 = time.monotonic()
        await asyncio.to_thread(services.stop, old.proc, 2.0)
        client.paused.clear()  # the stream goes on while the broker is down
        note("kafka: stopped")
        await asyncio.sleep(OUTAGE_SECONDS)
        durable["running"]["kafka"] = await asyncio.to_thread(
            services.start, "kafka-durable", durable["work"] / "kafka", old.ports)
        await asyncio.to_thread(create_topics, broker, topic, partitions=PARTITIONS)
        watcher.rewind()  # the new broker's log starts empty
        downtime["kafka"] = round(time.monotonic() - t0, 2)
        note("kafka: back")
        # Sends stuck on the old producer time out (KAFKA_DELIVERY_TIMEOUT_MS) and are retried first.
        await asyncio.sleep(STEADY_SECONDS + KAFKA_DELIVERY_TIMEOUT_MS / 1000)

        for name in ("redis", "azurite"):
            note(f"{name}: bounce")
            downtime[name] = round(await bounce(durable, name, OUTAGE_SECONDS), 2)
            note(f"{name}: back")
            await asyncio.sleep(STEADY_SECONDS)
        stop.set()
        note(f"stopping the client, {len(client.inflight)} in flight")
        await producer
        note("draining")
        drained = await drain(svc, timeout=30)
        note("drained; waiting for the consumer")
        await watcher.wait_for(set(client.acknowledged), timeout=10)
        await asyncio.sleep(0.3)  # a late duplicate would show up here
        watcher.close()

        redis_ids = [i for t in tenants for i in await redis_delivered(svc, t)]
        analytics_ids = [i for t in tenants for i in await analytics_delivered(svc, t)]
        dlq: dict[str, list[dict[str, Any]]] = {}
        for t in tenants:
            for dest, rows in (await dead_lettered(svc, t)).items():
                dlq.setdefault(dest, []).extend(rows)
        delivered = {"kafka": list(watcher.seen), "redis": redis_ids, "analytics": analytics_ids}
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
            "systemErrorNoticesInKafka": watcher.notices,
            "retryMessagesDrained": drained["processed"],
            "downtimeSeconds": downtime,
            "elapsedSeconds": round(time.monotonic() - started, 1),
        }
        print("\nfault counts:", orjson.dumps(counts).decode())
        dup_ids = {i for i in watcher.seen if watcher.seen.count(i) > 1}
        print("dead letters:", [(r["destination"], r["eventId"], r["reason"], r["attempts"], r["lastError"])
                                for rows in dlq.values() for r in rows])
        if dup_ids:
            print("kafka duplicates:", sorted((k, v) for k, v in watcher.records.items() if v in dup_ids)[:20])

        assert counts["sent"] > 100 and counts["unacknowledged"] == 0
        assert client.statuses.get("503", 0) > 0  # the outages were felt, and answered 503, not lost
        assert counts["deadLettered"]["redis"] > 0  # the strict tenant's Redis failures
        assert {r["reason"] for r in dlq["redis"]} == {"retries exhausted"}
        for d, ids in delivered.items():
            dl_ids = {r["event"]["eventId"] for r in dlq.get(d, [])}
            assert all(r["reason"] for r in dlq.get(d, [])), d
            assert acked <= set(ids) | dl_ids, f"{d}: acknowledged but neither delivered nor dead-lettered"
            assert counts["acknowledged"] == counts["delivered"][d] + counts["deadLettered"][d], d
            assert counts["duplicates"][d] == 0, d
            assert set(ids) <= set(client.sent)
        # The operator replays the dead letters: each lands once, and Redis then holds every event.
        status, _, replayed = await invoke("replay_deadletters", "POST", f"/deadletters/{strict}/replay", {},
                                           route={"tenantId": strict})
        assert status == 200 and replayed["counts"] == {"delivered": counts["deadLettered"]["redis"]}
        after = [i for t in tenants for i in await redis_delivered(svc, t)]
        assert sorted(after) == sorted(acked) and len(after) == len(set(after))
        print("after replay: redis holds", len(after), "of", len(acked), "acknowledged events, no duplicates")
        assert time.monotonic() - started < 60
