"""Kafka destination: Event Hubs' Kafka endpoint or any Kafka broker (confluent-kafka), type "kafka".

Records come from `event_records` (topics, key, headers, the 1,000,000-byte refusal). An event is
delivered only after its delivery report: a publish call produces all its records, then waits
(bounded) for the reports. While calls overlap, the event loop itself serves the producer's events
(right after producing, then every TICK_SECONDS) and the producer's poll thread only every
FALLBACK_SECONDS; with one call waiting or none the poll thread serves as they come (reports,
stats, errors, log lines, oauth tokens). Served on the loop, the librdkafka callbacks (error_cb,
stats_cb, logger, oauth_cb) may run on the loop's thread too: each is cheap (OAuthTokens answers from
its cache and fetches the next token on a thread of its own).
Producers are created lazily and shared by all calls of the instance, one per compression
mode (compression is a producer setting; Event Hubs takes none or gzip). The same destination
sends over AMQP instead (`eventhubs_amqp`) when the options or EVENTHUBS_TRANSPORT say "amqp".

Event Hubs' endpoint rules applied to every producer: request.timeout.ms 60000,
metadata.max.age.ms 180000, connections.max.idle.ms 180000 (< 240 s idle close),
idempotence with acks=all, requests under 1,046,528 bytes.

linger.ms is KAFKA_LINGER_MS, 1 ms by default rather than librdkafka's 5: every publish call (a
request, a change-feed batch) waits for its own acknowledgements, so the linger adds to its latency
each time. A call produces its records within a fraction of a millisecond, so at 1 ms a call's records
still leave as one batch per partition, and concurrent calls share batches; at high rates batches fill
before the linger ends anyway. The price is more, smaller produce requests at moderate rates
(docs/performance.md measures both: rate, and CPU per event in this process and the broker).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Sequence

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from shared.core.destination_options import KAFKA_REPORT_GRACE_SECONDS, KafkaOptions
from shared.core.health import DependencyHealth
from shared.core.results import Delivery
from shared.core.settings import Settings
from shared.destinations.base import Chunk
from shared.destinations.event_records import Outcome, Record, merge, new_tuple, plan_records

log = logging.getLogger("grc.destinations.kafka")

CLIENT_ID = "grc-event-streaming"
# librdkafka's per-request cap: a 1,000,000-byte event plus key and headers fits, and stays
# under Event Hubs' 1,046,528-byte request limit (librdkafka sends one partition per request).
MESSAGE_MAX_BYTES = 1_046_000


class KafkaConfigError(Exception):
    """The settings cannot make a producer (e.g. sasl-plain without a connection string)."""


# Delivery errors worth retrying; librdkafka marks few delivery-report errors retriable itself.
_TRANSIENT_NAMES = (
    "_MSG_TIMED_OUT", "_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_QUEUE_FULL", "_PURGE_QUEUE",
    "_PURGE_INFLIGHT", "_WAIT_COORD", "_NODE_UPDATE", "_RESOLVE", "_FATAL",
    "REQUEST_TIMED_OUT", "NETWORK_EXCEPTION", "LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION",
    "NOT_LEADER_OR_FOLLOWER", "NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "BROKER_NOT_AVAILABLE", "THROTTLING_QUOTA_EXCEEDED", "KAFKA_STORAGE_ERROR", "OUT_OF_ORDER_SEQUENCE_NUMBER",
    # The broker forgot the idempotent producer (e.g. restarted) and refused the batch unwritten:
    # a new producer (new producer id) can send it again.
    "UNKNOWN_PRODUCER_ID",
)
TRANSIENT_CODES = frozenset(getattr(KafkaError, n) for n in _TRANSIENT_NAMES if hasattr(KafkaError, n))


# Outcomes after which the producer is replaced (see _send).
_RESET_MARKERS = ("_MSG_TIMED_OUT", "no delivery report", "UNKNOWN_PRODUCER_ID", "_FATAL")


def is_transient(err: KafkaError) -> bool:
    return bool(err.retriable() or err.fatal() or err.code() in TRANSIENT_CODES)


def describe(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"[:300]


def _namespace(settings: Settings) -> str:
    ns = settings.eventhubs_fully_qualified_namespace or settings.kafka_broker.split(",")[0].rsplit(":", 1)[0]
    return ns.strip()


# A cached token with less than this left is not handed out: the caller waits for a new one.
TOKEN_MIN_LEFT_SECONDS = 120


class OAuthTokens:
    """confluent-kafka `oauth_cb`: an Entra ID token for the Event Hubs namespace.

    librdkafka calls it from whichever thread serves the producer, which may be the event loop's
    (delivery reports are served there while publish calls overlap), and asks again at 80 % of the
    token's life. Fetching a token is a network call (the managed identity endpoint), so a call
    that finds a cached token with more than TOKEN_MIN_LEFT_SECONDS left returns it at once and
    fetches the next one on a thread of its own; librdkafka asks again well before the cached one
    expires and gets the new one then. Only the first call, or one after the token ran out (every
    fetch since failed), waits for the fetch.
    """

    def __init__(self, credential: Any, scope: str) -> None:
        self._credential = credential
        self._scope = scope
        self._token: Any = None
        self._lock = threading.Lock()
        self._refreshing = False

    def __call__(self, _config: str) -> tuple[str, float]:
        token = self._token
        if token is None or token.expires_on - time.time() < TOKEN_MIN_LEFT_SECONDS:
            token = self._fetch()
        else:
            with self._lock:
                start, self._refreshing = not self._refreshing, True
            if start:
                threading.Thread(target=self._refresh, name="kafka-oauth-refresh", daemon=True).start()
        return token.token, float(token.expires_on)

    def _fetch(self) -> Any:
        token = self._credential.get_token(self._scope)
        self._token = token
        return token

    def _refresh(self) -> None:
        try:
            self._fetch()
        except Exception as exc:  # noqa: BLE001 - the cached token still serves; the next call tries again
            log.warning("kafka oauth token not refreshed: %s", type(exc).__name__)
        finally:
            self._refreshing = False


def producer_config(
    settings: Settings,
    *,
    gzip: bool,
    credential_factory: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """librdkafka settings for one producer (no callbacks but oauth_cb)."""
    return {
        **connection_config(settings, credential_factory),
        "enable.idempotence": True,
        "acks": "all",
        # Event Hubs creates no event hub through Kafka; a broker that would (the local stand-in)
        # must not either, or a topic missing in Azure would work locally (localdev/services.py).
        "allow.auto.create.topics": False,
        "compression.type": "gzip" if gzip else "none",
        "request.timeout.ms": 60_000,
        "metadata.max.age.ms": 180_000,
        "connections.max.idle.ms": 180_000,
        "socket.keepalive.enable": True,
        "message.max.bytes": MESSAGE_MAX_BYTES,
        "message.timeout.ms": settings.kafka_delivery_timeout_ms,
        "linger.ms": settings.kafka_linger_ms,
    }


def connection_config(settings: Settings, credential_factory: Callable[[], Any] | None = None) -> dict[str, Any]:
    """What every client of the broker needs (producers here, the backfill's read-back consumer):
    the bootstrap servers and Event Hubs' security settings."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka_broker, "client.id": CLIENT_ID}
    sec = settings.kafka_security
    if sec == "sasl-plain":
        if not settings.eventhubs_connection_string:
            raise KafkaConfigError("KAFKA_SECURITY=sasl-plain needs EVENTHUBS_CONNECTION_STRING")
        conf.update({
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": "$ConnectionString",
            "sasl.password": settings.eventhubs_connection_string,
        })
    elif sec == "oauth":
        ns = _namespace(settings)
        if not ns:
            raise KafkaConfigError("KAFKA_SECURITY=oauth needs EVENTHUBS_FULLY_QUALIFIED_NAMESPACE or KAFKA_BROKER")
        if credential_factory is None:
            from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - only with managed identity

            credential_factory = DefaultAzureCredential
        conf.update({
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "OAUTHBEARER",
            "oauth_cb": OAuthTokens(credential_factory(), f"https://{ns}/.default"),
        })
    else:
        conf["security.protocol"] = "PLAINTEXT"
    return conf


# The key of a record's box when the record failed before it could have a report (its Outcome the value).
_LOCAL = object()
# produce()'s positional defaults (confluent-kafka's own): any partition (the configured partitioner),
# timestamp 0 = now. Keyword arguments cost about 0.4 us more per record.
_ANY_PARTITION = -1
_NOW = 0


class _Reports:
    """Delivery reports of one publish call, each in its record's box.

    A box is an empty dict whose bound `setdefault` is the record's delivery callback: confluent-kafka
    calls it with (err, msg) holding the GIL, which leaves {err: msg} in the box (err None when
    delivered) without running a Python frame. Whoever served reports then asks `complete()` and
    wakes the call once (_PolledProducer.serve).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.boxes: list[dict[Any, Any]] = [{} for _ in range(n)]
        self.done: asyncio.Future[None] = loop.create_future()
        if n == 0:
            self.done.set_result(None)

    def complete(self) -> bool:
        return all(self.boxes)  # stops at the first record without a report

    def wake(self, on: asyncio.AbstractEventLoop | None) -> None:
        """Ends the wait; `on` is the loop whose thread calls (None: another thread)."""
        if on is self.loop:
            self._finish()
            return
        try:
            self.loop.call_soon_threadsafe(self._finish)
        except RuntimeError:  # the loop is gone (the call timed out long ago)
            pass

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, i: int, detail: str, transient: bool) -> None:
        self.boxes[i][_LOCAL] = Outcome(False, detail, transient)

    def result(self, missing: str) -> list[Outcome]:
        """One Outcome per record; a record without a report failed (transient, outcome unknown)."""
        unknown = Outcome(False, missing, True)
        out: list[Outcome] = []
        append, new = out.append, new_tuple
        for box in self.boxes:
            if not box:
                append(unknown)
                continue
            err, msg = box.popitem()  # a box holds one report
            if err is None:
                append(new(Outcome, (True, f"{msg.topic()}/{msg.partition()}@{msg.offset()}", False)))
            elif err is _LOCAL:
                append(msg)
            else:
                append(Outcome(False, describe(err), is_transient(err)))
        return out


# While publish calls wait for reports, the event loop serves them right after producing a call's records
# and every TICK_SECONDS. When calls overlap (the loop is busy) the poll thread serves only every
# FALLBACK_SECONDS, in case the loop cannot: a report needs the GIL, and served on the poll thread while
# the loop runs Python each one waited for the GIL (up to the 5 ms switch interval) and took it from the
# loop, one report at a time. A lone call (the loop likely idle) is served by the poll thread as its
# reports come: the tick would add up to a millisecond (the loop's timers have 1 ms resolution).
TICK_SECONDS = 0.001
FALLBACK_SECONDS = 0.1


class _PolledProducer:
    """A Producer with its own poll thread (delivery reports, stats, errors, oauth tokens)."""

    def __init__(self, conf: dict[str, Any], mode: str) -> None:
        self.mode = mode
        self.conf = {k: v for k, v in conf.items() if k not in {"sasl.password", "oauth_cb"}}  # for tests/health
        self.stats: dict[str, Any] = {}
        self.fatal: str | None = None
        # librdkafka's own log lines go through Python logging (telemetry, levels), not raw stderr.
        full = dict(conf, error_cb=self._on_error, stats_cb=self._on_stats, logger=log)
        self.producer = Producer(full)
        # Publish calls whose reports are not all in yet (an ordered set: the loop adds, any thread pops).
        self.waiting: dict[_Reports, None] = {}
        self._ticker: asyncio.TimerHandle | None = None
        self._ticker_loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kafka-poll-{mode}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if len(self.waiting) > 1:  # calls overlap: the loop serves (tick); this is the fallback
                self._stop.wait(FALLBACK_SECONDS)
                self.serve(0, None)
            else:
                self.serve(0.1, None)

    def serve(self, timeout: float, loop: asyncio.AbstractEventLoop | None) -> None:
        """Serve what is due (delivery reports, stats, errors), then wake each waiting call whose
        reports are all in; `loop` is the event loop whose thread calls (None: the poll thread)."""
        try:
            self.producer.poll(timeout)
        except KafkaException as exc:  # a fatal error surfaces here too: keep serving reports
            err = exc.args[0]
            self.fatal = self.fatal or describe(err)
            log.error("kafka producer (%s) poll: %s", self.mode, describe(err))
        if self.waiting:
            self.wake_complete(loop)

    def wake_complete(self, loop: asyncio.AbstractEventLoop | None) -> None:
        waiting = self.waiting
        for reports in list(waiting):
            if reports.complete() and waiting.pop(reports, 0) is None:  # popped here, not by another thread
                reports.wake(loop)

    def wait_for(self, reports: _Reports, loop: asyncio.AbstractEventLoop) -> None:
        """Registers a call whose records are all produced; serves what is due now, on the loop."""
        self.waiting[reports] = None  # before the check in serve(): whoever serves the last report wakes it
        self.serve(0, loop)
        if self.waiting and (self._ticker is None or loop is not self._ticker_loop):
            self._ticker_loop = loop
            self._ticker = loop.call_later(TICK_SECONDS, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._ticker = None
        self.serve(0, loop)
        if self.waiting:
            self._ticker = loop.call_later(TICK_SECONDS, self._tick, loop)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = describe(err)
            log.error("kafka producer (%s) fatal error: %s", self.mode, self.fatal)
        else:
            log.warning("kafka producer (%s): %s", self.mode, describe(err))

    def _on_stats(self, raw: str) -> None:
        s = orjson.loads(raw)
        self.stats = {k: s.get(k, 0) for k in ("msg_cnt", "msg_size", "tx", "tx_bytes", "txmsgs", "txmsg_bytes")}
        self.stats["at"] = time.time()

    def queued(self) -> int:
        return len(self.producer)

    def close(self, timeout: float) -> int:
        """Flush, then stop polling; returns the messages still undelivered."""
        left = self.producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=1.0)
        if left:
            # What is still queued fails now (_PURGE_QUEUE, transient) rather than holding close() up
            # until message.timeout.ms; callers still waiting get their failed deliveries.
            self.producer.purge(in_queue=True, in_flight=True)
            self.producer.flush(1.0)
        self.wake_complete(None)  # the reports flush() served
        self.producer.close()  # drop the broker connections now, not at garbage collection
        return left


class KafkaDestination:
    type = "kafka"

    def __init__(
        self,
        settings: Settings,
        *,
        credential_factory: Callable[[], Any] | None = None,
        amqp_client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._credential_factory = credential_factory
        self._amqp_client_factory = amqp_client_factory
        self._producers: dict[str, _PolledProducer] = {}
        self._amqp: Any = None  # EventHubsAmqpSender, built on first use
        self._wait_seconds = settings.kafka_delivery_timeout_ms / 1000.0 + KAFKA_REPORT_GRACE_SECONDS

    # ---- producers ----------------------------------------------------------------------

    def _producer(self, gzip: bool) -> _PolledProducer:
        mode = "gzip" if gzip else "none"
        p = self._producers.get(mode)
        if p is not None and p.fatal:
            # An idempotent producer that hit a fatal error must be replaced; its queue fails on its own.
            log.warning("replacing the %s producer after a fatal error", mode)
            threading.Thread(target=p.close, args=(self._wait_seconds,), daemon=True).start()
            p = None
        if p is None:
            conf = producer_config(self.settings, gzip=gzip, credential_factory=self._credential_factory)
            if self.settings.kafka_stats_interval_ms:
                conf["statistics.interval.ms"] = self.settings.kafka_stats_interval_ms
            p = self._producers[mode] = _PolledProducer(conf, mode)
        return p

    def _amqp_sender(self) -> Any:
        if self._amqp is None:
            from shared.destinations.eventhubs_amqp import EventHubsAmqpSender  # noqa: PLC0415

            self._amqp = EventHubsAmqpSender(self.settings, client_factory=self._amqp_client_factory)
        return self._amqp

    def transport(self, options: KafkaOptions | None = None) -> str:
        return (options.transport if options else None) or self.settings.eventhubs_transport

    # ---- protocol -----------------------------------------------------------------------

    async def publish(self, chunks: Sequence[Chunk]) -> list[list[Delivery]]:
        """All chunks' records go out together, per (transport, compression) -- normally one group:
        produced in chunk order (so a tenant's chunks keep their order on each partition), then one
        wait for all delivery reports."""
        topic = self.settings.kafka_default_topic
        plans = [plan_records(ch.events, ch.options, ch.stream, topic) for ch in chunks]  # type: ignore[arg-type]
        groups: dict[tuple[str, bool], list[int]] = {}
        for i, ch in enumerate(chunks):
            if plans[i].records:
                mode = (self.transport(ch.options), ch.stream.compressionEnabled)  # type: ignore[arg-type]
                groups.setdefault(mode, []).append(i)

        async def send(transport: str, gzip: bool, members: list[int]) -> list[Outcome]:
            records = [r for i in members for r in plans[i].records]
            if transport == "amqp":
                return await self._amqp_sender().send(records, gzip=gzip)
            return await self._send(records, gzip=gzip)

        if len(groups) == 1:  # the usual case: awaited here, without a task per group
            [((t, gz), members)] = groups.items()
            sent = [await send(t, gz, members)]
        else:
            sent = await asyncio.gather(*(send(t, gz, members) for (t, gz), members in groups.items()))
        outcomes: list[list[Outcome]] = [[] for _ in chunks]
        for members, got in zip(groups.values(), sent):
            pos = 0
            for i in members:
                n = len(plans[i].records)
                outcomes[i] = got[pos:pos + n]
                pos += n
        return [merge(self.type, len(ch.events), plan, out) for ch, plan, out in zip(chunks, plans, outcomes)]

    async def _send(self, records: list[Record], *, gzip: bool) -> list[Outcome]:
        if not records:
            return []
        try:
            polled = self._producer(gzip)
            producer = polled.producer
        except (KafkaConfigError, KafkaException) as exc:
            return [Outcome(False, f"kafka producer not configured: {exc}", False)] * len(records)
        loop = asyncio.get_running_loop()
        reports = _Reports(loop, len(records))
        deadline = loop.time() + self._wait_seconds
        produce, boxes = producer.produce, reports.boxes
        for i, (_, topic, key, value, headers) in enumerate(records):
            while True:
                try:
                    produce(topic, value, key, _ANY_PARTITION, boxes[i].setdefault, None, _NOW, headers)
                except BufferError:  # local queue full: reports served meanwhile free it
                    if loop.time() < deadline:
                        await asyncio.sleep(0.01)
                        continue
                    reports.fail(i, "local producer queue stayed full", True)
                except KafkaException as exc:
                    err = exc.args[0]
                    reports.fail(i, describe(err), is_transient(err))
                except (TypeError, ValueError) as exc:
                    reports.fail(i, f"record refused: {exc}"[:300], False)
                break
        polled.wait_for(reports, loop)
        # The bounded wait: a timer that ends it (records without a report then fail as unknown),
        # rather than wait_for + shield, which add a task wrapper and two futures to every call.
        timer = loop.call_at(deadline, reports._finish)
        try:
            await reports.done
        finally:
            timer.cancel()
            polled.waiting.pop(reports, None)
        outcomes = reports.result(f"no delivery report within {self._wait_seconds:.0f} s (outcome unknown)")
        failed = [o.detail for o in outcomes if not o[0]]  # usually empty: markers looked for in failures only
        if any(m in detail for detail in failed for m in _RESET_MARKERS):
            # After timed-out messages an idempotent producer's sequence state may no longer match the
            # broker's (a restarted broker forgets the producer id, and every later message then times
            # out too): the next call starts a new producer, with a new producer id.
            polled.fatal = polled.fatal or "messages timed out; idempotent producer state reset"
        return outcomes

    def pending(self) -> dict[str, Any]:
        """Producer lag for metrics: messages queued or in flight now, and bytes from the last statistics."""
        out: dict[str, Any] = {"messages": 0, "bytes": 0, "statsAt": None, "producers": {}}
        for mode, p in self._producers.items():
            queued = p.queued()
            out["messages"] += queued
            out["bytes"] += int(p.stats.get("msg_size", 0))
            if p.stats.get("at") and (out["statsAt"] is None or p.stats["at"] > out["statsAt"]):
                out["statsAt"] = p.stats["at"]
            out["producers"][mode] = {"messages": queued, **{k: v for k, v in p.stats.items() if k != "at"}}
        return out

    async def missing_topics(self, topics: Sequence[str], options: KafkaOptions | None = None) -> list[str]:
        """Which of `topics` the broker does not have (one metadata request). Event Hubs creates no
        event hub through Kafka, so every delivery to a missing one would fail. `KafkaException` or
        `KafkaConfigError` when the broker cannot be asked. The AMQP transport is not checked."""
        if self.transport(options) == "amqp":
            return []
        producer = self._producer(False).producer
        md = await asyncio.to_thread(producer.list_topics, timeout=self.settings.health_timeout_seconds)
        return [t for t in topics if t not in md.topics]

    async def health(self) -> DependencyHealth:
        if self.transport() == "amqp":
            return await self._amqp_sender().health(self.settings.kafka_default_topic,
                                                    self.settings.health_timeout_seconds)
        start = time.perf_counter()
        try:
            producer = self._producer(False).producer
            md = await asyncio.to_thread(producer.list_topics, timeout=self.settings.health_timeout_seconds)
        except KafkaConfigError as exc:
            return DependencyHealth("kafka", "unhealthy", detail=str(exc))
        except KafkaException as exc:
            return DependencyHealth("kafka", "unhealthy", detail=describe(exc.args[0]))
        latency = round((time.perf_counter() - start) * 1000, 2)
        pending = self.pending()
        info = {"brokers": len(md.brokers), "topics": len(md.topics), "pendingMessages": pending["messages"],
                "pendingBytes": pending["bytes"]}
        return DependencyHealth("kafka", "healthy", latency, info=info)

    async def close(self) -> None:
        producers, self._producers = self._producers, {}
        for p in producers.values():
            left = await asyncio.to_thread(p.close, self._wait_seconds)
            if left:
                log.warning("kafka producer (%s) closed with %d undelivered messages", p.mode, left)
        if self._amqp is not None:
            await self._amqp.close()
            self._amqp = None
