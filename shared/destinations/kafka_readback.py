"""Reading back what the Kafka destination wrote, so that a backfill resumed after a crash does not
write again what it had already written (docs/backfill.md, "Kafka: each event once").

Kafka keeps no dedupe of its own beyond one producer's life. A backfill checkpoints after each
sub-batch, with, per partition of the tenant's topics, the offset from which records written since
that checkpoint start (the ends at the chunk's start, then one past each delivery report's offset).
A runner that dies between writing a sub-batch and checkpointing it leaves records the checkpoint
does not know; the next runner reads those partitions from the checkpoint's offsets to their
current ends (only what was written since the checkpoint: a few seconds of the topic) and skips the
events it finds there, by the `tenantId` and `eventId` headers every record carries
(shared/destinations/event_records.py).

Transport `kafka` only (the Kafka protocol; over AMQP nothing is read back: the crash window is then
at-least-once, as the live path is). A read that does not reach the ends in time says so (None):
the caller then cannot tell, and sends (at-least-once).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from shared.core.destination_options import KafkaOptions
from shared.core.events import Event
from shared.core.settings import Settings
from shared.core.streamconfig import StreamConfig
from shared.destinations.event_records import TopicRouter
from shared.destinations.kafka import connection_config

log = logging.getLogger("grc.destinations.kafka")

Written = set[tuple[str, str]]  # (topic, eventId)


def partition_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def offsets_after(refs: Iterable[str | None]) -> dict[str, int]:
    """Delivery refs (`topic/partition@offset`, comma-separated for an event sent to several topics)
    -> per partition, one past the highest offset: where records written after them start."""
    out: dict[str, int] = {}
    for ref in refs:
        for one in (ref or "").split(","):
            where, sep, offset = one.rpartition("@")
            if sep and "/" in where and offset.lstrip("-").isdigit():
                out[where] = max(out.get(where, 0), int(offset) + 1)
    return out


def topics_of(stream: StreamConfig, options: KafkaOptions, default_topic: str) -> list[str]:
    return TopicRouter(stream, options.routes, default_topic).topics


def held(written: Written, events: Sequence[Event], stream: StreamConfig, options: KafkaOptions,
         default_topic: str) -> list[bool]:
    """Whether each event is already in every topic it routes to (then sending it again duplicates)."""
    router = TopicRouter(stream, options.routes, default_topic)
    out = []
    for ev in events:
        topics = router.topics_for(ev)
        out.append(bool(topics) and all((t, ev.eventId) in written for t in topics))
    return out


class KafkaReadBack:
    """One per instance: the settings and (with a managed identity) one credential for its consumers."""

    def __init__(self, settings: Settings, credential_factory: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self._credential: Any = None
        self._credential_factory = credential_factory

    def _config(self) -> dict[str, Any]:
        factory = None
        if self.settings.kafka_security == "oauth":
            if self._credential is None:
                if self._credential_factory is None:
                    from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - managed identity only

                    self._credential_factory = DefaultAzureCredential
                self._credential = self._credential_factory()
            factory = lambda: self._credential  # noqa: E731 - one credential for every consumer
        return {**connection_config(self.settings, factory),
                # Event Hubs needs a consumer group by name ($Default always exists); assign() reads
                # without joining it and nothing is committed, so no group's offsets are touched.
                "group.id": "$Default", "enable.auto.commit": False, "enable.partition.eof": True,
                # An offset no longer there (retention, a topic made again): from the earliest kept.
                "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50, "logger": log}

    async def ends(self, topics: Sequence[str], timeout: float = 10.0) -> dict[str, int]:
        """`topic/partition` -> the offset the next record will get, for every partition of `topics`
        (a topic that does not exist yet: none)."""
        return await asyncio.to_thread(self._ends, list(topics), timeout)

    def _ends(self, topics: list[str], timeout: float) -> dict[str, int]:
        consumer = Consumer(self._config())
        try:
            out: dict[str, int] = {}
            for topic in topics:
                meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
                if meta is None or meta.error is not None:
                    continue
                for p in meta.partitions:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                    out[partition_key(topic, p)] = high
            return out
        finally:
            consumer.close()

    async def written_since(self, since: Mapping[str, int], tenant: str, timeout: float = 30.0) -> Written | None:
        """(topic, eventId) of `tenant`'s records in these partitions from these offsets to their ends
        now; None when they could not all be read within `timeout` (the caller cannot tell)."""
        if not since:
            return set()
        try:
            return await asyncio.to_thread(self._written_since, dict(since), tenant, timeout)
        except KafkaException as exc:
            log.warning("kafka read-back failed: %s", exc)
            return None

    def _written_since(self, since: dict[str, int], tenant: str, timeout: float) -> Written | None:
        deadline = time.monotonic() + timeout
        consumer = Consumer(self._config())
        try:
            # Each partition is read from its offset until the consumer reports its end (partition
            # EOF), not to a watermark asked for first: the end the fetch answers is the broker's
            # own (the local stand-in's ListOffsets answers the last batch's base offset + 1).
            left = set()
            assign = []
            for key, start in since.items():
                topic, _, p = key.rpartition("/")
                left.add((topic, int(p)))
                assign.append(TopicPartition(topic, int(p), start))
            consumer.assign(assign)
            found: Written = set()
            want = tenant.encode()
            while left and time.monotonic() < deadline:
                for m in consumer.consume(1000, timeout=0.2):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:  # read to its end
                            left.discard((m.topic(), m.partition()))
                        continue
                    headers = dict(m.headers() or [])
                    if headers.get("tenantId") == want and "eventId" in headers:
                        found.add((m.topic(), headers["eventId"].decode()))
            if left:
                log.warning("kafka read-back: %d partition(s) not read to their end in %.0f s", len(left), timeout)
                return None
            return found
        finally:
            consumer.close()

    async def close(self) -> None:
        if self._credential is not None and hasattr(self._credential, "close"):
            self._credential.close()
            self._credential = None
