"""The app's own process killed or stopped under load, judged from outside (README "Delivery
guarantees", docs/delivery.md "Idempotent requests" and "An instance killed or stopped").

In Azure an instance is stopped on every deploy and scale-in (SIGTERM, then a kill after a grace
period) and crashes now and then. Here the local runner serving function_app.py is that instance:

- SIGKILL while a well-behaved producer posts single events and bulks with its own eventIds and
  timestamps to a tenant sending to Redis and Kafka; a new runner on the same stack takes over (the
  producer is pointed at it, as Azure's front end routes to a live instance). Every event the
  producer re-sent until acknowledged is in the Redis stream exactly once and on the Kafka topic at
  least once; Kafka holds a second copy only of events the killed instance was publishing. A re-sent
  event whose claim the killed instance held is answered 409 until the claim's
  `IDEMPOTENCY_PENDING_SECONDS` runs out (12 s here; 300 s by default), and then accepted.
- SIGTERM (what `App.stop()` and Azure's stop send) under the same load, Redis frozen (SIGSTOP) for
  1.5 s from the signal on so that requests are still running when the instance closes its HTTP
  server (a slow dependency at the moment of a deploy): every request the instance took is answered,
  none cut: no event's re-send after the stop finds it already processed
  (`duplicate`) or still claimed (409), and the runner exits within the grace period.
- SIGKILL while the retry queue is drained (Redis stopped by PID first, so deliveries are parked;
  then started again): the messages the killed runner held come back after their lease, with their
  dequeue count, a new runner delivers each parked event to Redis once, nothing poisoned.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.system.harness import (App, Stack, app_env, create_topic, own_stack, start_app, tenant,
                                  topic_records, wait_for)

STACK = ("redis-durable", "azurite", "cosmos", "kafka")
PENDING_SECONDS = 12  # IDEMPOTENCY_PENDING_SECONDS for the kill test (default 300; at least 5)
LEASE_SECONDS = 8  # the runner's lease on a running queue message (the host's: 10 minutes)
KAFKA_DELIVERY_TIMEOUT_MS = 2000
RETRY = {"attempts": 10, "inProcessAttempts": 2, "backoffSeconds": 1, "maxBackoffSeconds": 2, "jitter": 0.2,
         "timeoutSeconds": 2}
KAFKA_RETRY = {**RETRY, "timeoutSeconds": 12}  # above KAFKA_DELIVERY_TIMEOUT_MS + 5 s (PUT checks it)
BULK_EVERY, BULK_SIZE = 2, 10
IN_FLIGHT = 8  # the producer keeps this many requests open: the instance always has some in flight
# The signal is sent once the instance holds at least this many claims of events in flight (one could
# settle between the look and the signal).
AIM_CLAIMS = 2
TENANTS = 16  # events spread over them: a tenant's listing holds 1,000
SEND_INTERVAL = 0.01
LOAD_SECONDS = 1.5  # at least, before the kill or stop, and again after the new runner is up
CLIENT_GIVES_UP_SECONDS = 90.0  # per event: longer than PENDING_SECONDS and a runner's start
# Redis frozen this long from the SIGTERM on: the requests in flight outlast the stop of the other
# triggers (0.2 s), so they are still running when the HTTP server stops.
SLOW_SECONDS = 1.5
STOP_GRACE_SECONDS = 30.0  # SIGTERM, then (in Azure) a kill: the runner must be gone well before
RETRY_QUEUE = "delivery-retries"
PARKED = 30  # deliveries parked while Redis is down: no more than one peek of the queue shows (32)
# A bulk's result for an event whose claim another request holds (a single event: 409 with this detail).
BUSY = "an event with this eventId is being processed; retry later"


def note(msg: str, started: float = time.monotonic()) -> None:
    print(f"[{time.monotonic() - started:7.2f}s] {msg}", flush=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis durable (test 3 stops it by PID and it must keep what it acknowledged)."""
    with own_stack(tmp_path_factory.mktemp("app-crash") / "stack", STACK) as s:
        yield s


def _start(stack: Stack, work: Path, **overrides: str) -> App:
    env = app_env(stack, work, KAFKA_DELIVERY_TIMEOUT_MS=str(KAFKA_DELIVERY_TIMEOUT_MS),
                  SYSTEM_PERFORMANCE_EVENTS="false", **overrides)
    return start_app(env, work, "--queue-lease-seconds", str(LEASE_SECONDS))


def _signal(app: App, sig: signal.Signals) -> None:
    os.killpg(app.proc.pid, sig)  # the runner is a session leader (start_app): its whole group


class Producer:
    """A well-behaved producer: every event has its eventId and timestamp; one not acknowledged
    (connection error or cut, 503, 409, `failed` inside a bulk answer) is sent again, same eventId,
    after Retry-After (at most 1 s here), until it is acknowledged. `base` is the address it sends to:
    the test points it at the new runner, as Azure's front end sends to a live instance."""

    def __init__(self, app: App, tenants: list[str]) -> None:
        self.base = app.base
        self.tenants = tenants
        self.headers = {**app.auth(tenants=tenants), "content-type": "application/json"}
        # A connection per request: a pooled one closed by the stopping server while idle would be
        # a failure of the test's client, not of the instance (Azure's front end holds the pool).
        self.http = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
        self.slots = asyncio.Semaphore(IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.sent: dict[str, float] = {}  # eventId -> monotonic time of its first send
        self.acked: dict[str, tuple[float, str]] = {}  # eventId -> (when, accepted | duplicate)
        self.given_up: set[str] = set()
        self.first_409: dict[str, float] = {}
        self.last_409: dict[str, float] = {}
        self.outcomes: dict[str, int] = {}  # per request: HTTP status, "refused" or "cut"
        self.cut_requests: list[float] = []  # when a request got no answer after being sent
        self.posting: dict[str, str] = {}  # eventId -> tenant, of the events in requests awaiting answers
        self._n = 0

    def _event(self) -> dict[str, Any]:
        n, self._n = self._n, self._n + 1
        t = self.tenants[n % len(self.tenants)]
        event_id = f"{t}-{n:05d}"
        self.sent[event_id] = time.monotonic()
        return {"tenantId": t, "eventType": "CONTROL_TESTED", "source": "BACKEND_API",
                "action": "TEST", "entityId": f"ctl-{n % 13}", "data": {"n": n}, "eventId": event_id,
                "timestamp": datetime.now(UTC).isoformat()}

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def _post(self, path: str, body: Any) -> httpx.Response | None:
        events = body["events"] if "events" in body else [body]
        self.posting.update((e["eventId"], e["tenantId"]) for e in events)
        try:
            r = await self.http.post(self.base + path, content=json.dumps(body), headers=self.headers)
        except httpx.ConnectError:  # nobody listening: the instance is gone or not up yet
            self._count("refused")
            return None
        except httpx.TransportError:  # sent, and no answer came: cut
            self._count("cut")
            self.cut_requests.append(time.monotonic())
            return None
        finally:
            for e in events:
                self.posting.pop(e["eventId"], None)
        self._count(str(r.status_code))
        return r

    def _ack(self, event_id: str, status: str) -> None:
        self.acked[event_id] = (time.monotonic(), status)

    def _refused(self, event_id: str, status: int) -> None:
        if status == 409:
            self.first_409.setdefault(event_id, time.monotonic())
            self.last_409[event_id] = time.monotonic()

    async def _send(self, events: list[dict[str, Any]]) -> None:
        deadline, bulk = time.monotonic() + CLIENT_GIVES_UP_SECONDS, len(events) > 1
        while events:
            if bulk:
                r = await self._post("/events/bulk", {"events": events})
                if r is not None and r.status_code in (200, 503):
                    again = []
                    for ev, res in zip(events, r.json()["results"]):
                        if res["status"] in ("accepted", "duplicate"):
                            self._ack(ev["eventId"], res["status"])
                        else:  # failed: nothing acknowledged for it
                            again.append(ev)
                            self._refused(ev["eventId"], 409 if res.get("reason") == BUSY else 503)
                    events = again
            else:
                r = await self._post("/events", events[0])
                if r is not None and r.status_code in (200, 201):
                    self._ack(events[0]["eventId"], r.json()["status"])
                    events = []
                elif r is not None:
                    self._refused(events[0]["eventId"], r.status_code)
            if r is not None and r.status_code not in (200, 201, 409, 503):
                self.given_up.update(e["eventId"] for e in events)  # an answer no re-send changes
                return
            if events:
                if time.monotonic() > deadline:
                    self.given_up.update(e["eventId"] for e in events)
                    return
                # Retry-After, at most 1 s here; 0.2 s after a connection error.
                await asyncio.sleep(0.2 if r is None else min(1.0, float(r.headers.get("retry-after", 1))))

    async def run(self, stop: asyncio.Event) -> None:
        k = 0
        while not stop.is_set():
            await self.slots.acquire()
            k += 1
            events = [self._event() for _ in range(BULK_SIZE if k % BULK_EVERY == 0 else 1)]
            task = asyncio.create_task(self._send(events))
            self.tasks.add(task)
            task.add_done_callback(lambda t: (self.tasks.discard(t), self.slots.release()))
            await asyncio.sleep(SEND_INTERVAL)

    async def settle(self) -> None:
        await asyncio.gather(*list(self.tasks))
        await self.http.aclose()


def _stream_ids(app: App, t: str) -> list[str]:
    """The tenant's events in its Redis stream (GET /events/{tenantId}), each as often as it is there."""
    r = app.get(f"/events/{t}", tenants=[t], params={"limit": "1000", "eventType": "CONTROL_TESTED"})
    assert r.status_code == 200, r.text
    assert not r.json()["truncated"], "more events than one listing holds"
    return [e["event"]["eventId"] for e in r.json()["events"]]


def _in_redis(app: App, tenants: list[str]) -> list[str]:
    return [i for t in tenants for i in _stream_ids(app, t)]


def _configure(app: App, tenants: list[str], topic: str) -> None:
    for t in tenants:
        app.configure(t, {"topics": [topic], "destinations": [{"type": "kafka", "retry": KAFKA_RETRY},
                                                               {"type": "redis", "retry": RETRY}]})


def _claimed(redis: Any, posting: dict[str, str]) -> int:
    """How many of the events being posted have their idempotency claim taken and not settled
    (`grc:{tenant}:idem:<eventId>` = `pending`, docs/delivery.md)."""
    if not posting:
        return 0
    values = redis.mget(["grc:{" + t + "}:idem:" + i for i, t in posting.items()])
    return sum(1 for v in values if v is not None and v.startswith(b"pending"))


async def _load_across(stack: Stack, first: App, work: Path, tenants: list[str], sig: signal.Signals,
                       slow: float = 0.0, **overrides: str) -> tuple[Producer, App, dict[str, float]]:
    """Load on `first`, `sig` to it mid-load, a new runner on the same stack, load on it too; every
    event acknowledged or given up. The producer, the new runner and the figures. `slow`: Redis is
    frozen (SIGSTOP) from just before the signal for that long, so the requests in flight are still
    running when the instance has stopped everything else and closes its HTTP server."""
    producer = Producer(first, tenants)
    stop = asyncio.Event()
    load = asyncio.create_task(producer.run(stop))
    await asyncio.sleep(LOAD_SECONDS)
    # Aimed at a moment the instance holds claims of events in flight (read from Redis, as anyone can).
    redis, aim = stack.redis(), time.monotonic() + 30
    try:
        while (held := _claimed(redis, dict(producer.posting))) < AIM_CLAIMS:
            assert time.monotonic() < aim, f"not {AIM_CLAIMS} claims of events in flight within 30 s"
            await asyncio.sleep(0.001)
    finally:
        redis.close()
    in_flight = len(producer.posting)
    redis_pid = stack.running["redis-durable"].proc.pid
    if slow:
        os.kill(redis_pid, signal.SIGSTOP)
    try:
        t_sig = time.monotonic()
        _signal(first, sig)
        note(f"{sig.name} sent: {len(producer.sent)} events made, {len(producer.acked)} acknowledged, "
             f"{in_flight} events in requests in flight, {held} claimed")
        await asyncio.sleep(slow)
    finally:
        if slow:
            os.kill(redis_pid, signal.SIGCONT)
    await asyncio.to_thread(first.proc.wait, STOP_GRACE_SECONDS)
    exited = time.monotonic() - t_sig
    note(f"first runner exited after {exited:.2f} s (rc {first.proc.returncode})")
    first.client.close()
    second = await asyncio.to_thread(_start, stack, work / "second", **overrides)
    producer.base = second.base
    up = time.monotonic() - t_sig
    note(f"second runner up {up:.2f} s after the signal")
    await asyncio.sleep(LOAD_SECONDS)
    stop.set()
    await load
    await producer.settle()
    note(f"settled: {producer.outcomes}")
    return producer, second, {"signal": t_sig, "exited": exited, "up": up}


@pytest.mark.timeout(300)
async def test_sigkill_under_load_every_acknowledged_event_once_in_redis_and_on_kafka(
        stack: Stack, tmp_path: Path) -> None:
    tenants, topic = [tenant("kill") for _ in range(TENANTS)], f"kill-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    overrides = {"IDEMPOTENCY_PENDING_SECONDS": str(PENDING_SECONDS)}
    first = _start(stack, tmp_path / "first", **overrides)
    try:
        _configure(first, tenants, topic)
        producer, second, at = await _load_across(stack, first, tmp_path, tenants, signal.SIGKILL,
                                                  **overrides)
    finally:
        first.stop()
    try:
        assert not producer.given_up, f"never acknowledged: {sorted(producer.given_up)[:10]}"
        assert set(producer.acked) == set(producer.sent)
        in_redis = _in_redis(second, tenants)
        twice = sorted({i for i in in_redis if in_redis.count(i) > 1})
        assert not twice, f"in the Redis stream more than once: {twice[:10]}"
        assert set(in_redis) == set(producer.acked), sorted(set(producer.acked) ^ set(in_redis))[:10]

        on_kafka = [r["eventId"] for r in topic_records(stack.broker, topic, expect=len(producer.acked),
                                                         timeout=30)]
        assert set(producer.acked) <= set(on_kafka), sorted(set(producer.acked) - set(on_kafka))[:10]
        kafka_twice = {i for i in on_kafka if on_kafka.count(i) > 1}
        # Only an event the killed instance was publishing can be on the topic twice: made before the
        # kill, acknowledged after it.
        in_flight = {i for i, (when, _) in producer.acked.items() if producer.sent[i] < at["signal"] < when}
        assert kafka_twice <= in_flight, sorted(kafka_twice - in_flight)[:10]

        # A re-sent event whose claim the killed instance held: 409 until the claim runs out, then
        # accepted (or `duplicate` when the killed instance had finished it and only its answer was lost).
        refused_for = {i: producer.acked[i][0] - at["signal"] for i in producer.first_409}
        assert refused_for, "no re-sent event found its claim held by the killed instance"
        assert set(producer.first_409) <= in_flight
        assert max(refused_for.values()) <= PENDING_SECONDS + at["up"] + 5, refused_for
        assert all(producer.last_409[i] - at["signal"] <= PENDING_SECONDS + 2 for i in producer.first_409)
        statuses = {s for _, s in producer.acked.values()}
        note(f"kill: {len(producer.sent)} events, {producer.outcomes}; runner back after {at['up']:.1f} s; "
             f"{len(in_flight)} in flight at the kill, {len(producer.first_409)} answered 409, acknowledged "
             f"{min(refused_for.values()):.1f}-{max(refused_for.values()):.1f} s after the kill; "
             f"{len(kafka_twice)} twice on Kafka; statuses {statuses}")
        assert not stack.poison_counts()
    finally:
        second.stop()


@pytest.mark.timeout(300)
async def test_sigterm_under_load_answers_every_request_it_took(stack: Stack, tmp_path: Path) -> None:
    tenants, topic = [tenant("term") for _ in range(TENANTS)], f"term-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    first = _start(stack, tmp_path / "first")  # IDEMPOTENCY_PENDING_SECONDS: the default 300 s
    try:
        _configure(first, tenants, topic)
        producer, second, at = await _load_across(stack, first, tmp_path, tenants, signal.SIGTERM,
                                                  slow=SLOW_SECONDS)
    finally:
        first.stop()
    try:
        assert first.proc.returncode == 0, first.log()[-3000:]
        assert at["exited"] < STOP_GRACE_SECONDS
        assert not producer.given_up, f"never acknowledged: {sorted(producer.given_up)[:10]}"
        # A request the stopping instance took and did not answer would show on its re-send: the
        # claim still held (409, for 300 s) or the event already done (`duplicate`).
        held = sorted(producer.first_409)
        assert not held, f"claims left held by the stopped instance: {held[:10]}"
        duplicates = sorted(i for i, (_, s) in producer.acked.items() if s == "duplicate")
        assert not duplicates, f"processed, answer lost: {duplicates[:10]} (cut: {producer.cut_requests})"
        in_redis = _in_redis(second, tenants)
        assert sorted(in_redis) == sorted(producer.acked)  # each once
        on_kafka = [r["eventId"] for r in topic_records(stack.broker, topic, expect=len(producer.acked),
                                                         timeout=30)]
        assert sorted(on_kafka) == sorted(producer.acked)  # each once: nothing was cut mid-send
        note(f"term: {len(producer.sent)} events, {producer.outcomes}; the runner exited "
             f"{at['exited']:.2f} s after SIGTERM, the next up after {at['up']:.1f} s")
        assert not stack.poison_counts()
    finally:
        second.stop()


@pytest.mark.timeout(300)
async def test_sigkill_while_draining_the_retry_queue_delivers_each_parked_event_once(
        stack: Stack, tmp_path: Path) -> None:
    t = tenant("drain")
    redis = stack.redis()
    first = _start(stack, tmp_path / "first")
    try:
        first.configure(t, {"destinations": [{"type": "redis", "retry": RETRY}]})
        assert first.post("/events", tenants=[t], json={  # the config cached on the instance
            "tenantId": t, "eventType": "CONTROL_FAILED", "source": "BACKEND_API", "action": "TEST",
            "entityId": "warm-up", "data": {"n": -1}}).status_code == 201
        stack.down("redis-durable")
        try:  # one bulk: no more messages than one peek shows (32)
            events = [{"tenantId": t, "eventType": "CONTROL_TESTED", "source": "BACKEND_API",
                       "action": "TEST", "entityId": f"ctl-{n}", "eventId": f"{t}-{n:03d}", "data": {"n": n}}
                      for n in range(PARKED)]
            r = first.post("/events/bulk", tenants=[t], json={"events": events})
            assert r.status_code == 200, r.text
            ids = [res["eventId"] for res in r.json()["results"]
                   if [d["status"] for d in res["destinations"]] == ["parked"]]
            assert len(ids) == PARKED, r.json()["results"][:2]
        finally:
            stack.up("redis-durable")
        note(f"{len(ids)} deliveries parked; Redis back")

        def draining() -> int | None:
            """Parked events in the stream: the Redis destination's marker of each
            (`grc:{tenant}:dlv:<eventId>`, docs/delivery.md)."""
            return int(redis.exists(*("grc:{" + t + "}:dlv:" + i for i in ids))) or None

        at_kill = wait_for(draining, 60, 0.02, what="the first runner draining")
        _signal(first, signal.SIGKILL)
        killed = time.monotonic()
        first.proc.wait(10)
        depth = stack.queue_depth(RETRY_QUEUE)
        note(f"killed mid-drain: {at_kill} of {len(ids)} in the stream, {depth} messages left")
        assert at_kill < len(ids) and depth > 0, "the drain was over before the kill"
    finally:
        first.stop()

    # The messages the killed runner held stay leased until their lease ends, then are visible again,
    # their dequeue count kept (the host's listener the same: at-least-once).
    with stack.queues() as qs:
        q = qs.get_queue_client(RETRY_QUEUE)

        def visible() -> list[Any]:
            return list(q.peek_messages(max_messages=32))

        early = len(visible())
        time.sleep(max(0.0, killed + LEASE_SECONDS + 1 - time.monotonic()))
        counts = sorted(m.dequeue_count for m in visible())
    note(f"visible right after the kill: {early} of {depth}; after the lease: dequeue counts {counts}")
    assert len(counts) == depth, (counts, depth)  # every message visible again
    # Those it held (among the ones invisible at the kill; others waited out their retry backoff): back,
    # taken once.
    assert 1 <= sum(c >= 1 for c in counts) <= depth - early, (counts, early)
    assert max(counts) < 5, counts  # host.json maxDequeueCount: none near the poison queue

    second = _start(stack, tmp_path / "second")
    try:
        wait_for(lambda: stack.queue_depth(RETRY_QUEUE) == 0 and draining() == len(ids), 90, 0.5,
                 what="every parked delivery drained")
        in_redis = _stream_ids(second, t)
        twice = sorted({i for i in in_redis if in_redis.count(i) > 1})
        assert not twice, f"in the Redis stream more than once: {twice[:10]}"
        assert sorted(in_redis) == sorted(ids)
        r = second.get(f"/deadletters/{t}", tenants=[t])
        assert r.status_code == 200 and r.json()["count"] == 0, r.text
        assert not stack.poison_counts(), stack.poison_counts()
    finally:
        second.stop()
        redis.close()
