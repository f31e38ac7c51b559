"""Helpers for tests that talk to the local Kafka broker (tansu): topics, reading back, events."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from localdev.services import create_topics
from shared.core.enrich import enrich, now_iso
from shared.core.events import Event, EventIn

__all__ = ["TopicReader", "big_event", "create_topics", "headers", "make_event", "unique_topic"]


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class TopicReader:
    """Reads whole topics by assigning all their partitions (no consumer group join); one consumer."""

    def __init__(self, broker: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": broker, "group.id": f"read-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "session.timeout.ms": 6000,
                                  "fetch.wait.max.ms": 20, "fetch.error.backoff.ms": 20, "logger": logging.getLogger("tests.kafka")})

    def read(self, topic: str, expect: int, timeout: float = 10.0, settle: float = 0.2) -> list[Message]:
        """Every record of `topic` from the beginning: until `expect` arrived, then `settle` s more."""
        md = self.consumer.list_topics(topic, timeout=10)
        parts = md.topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        extra_until: float | None = None
        while time.monotonic() < deadline:
            if len(out) >= expect and extra_until is None:
                extra_until = time.monotonic() + settle
            if extra_until is not None and time.monotonic() > extra_until:
                break
            for m in self.consumer.consume(500, timeout=0.05):
                if m.error() is None:
                    out.append(m)
        self.consumer.unassign()
        return out

    def close(self) -> None:
        self.consumer.close()


def headers(m: Message) -> dict[str, str]:
    return {k: v.decode() for k, v in (m.headers() or [])}


def make_event(tenant: str = "tenant-a", event_type: str = "RISK_CREATED", source: str = "BACKEND_API",
               entity_id: str | None = None, data: dict[str, Any] | None = None, **extra: Any) -> Event:
    raw: dict[str, Any] = {"tenantId": tenant, "eventType": event_type, "source": source, "action": "CREATE",
                           "data": data if data is not None else {"n": 1}, **extra}
    if entity_id:
        raw["entityId"] = entity_id
        raw["entityType"] = "risk"
    return enrich(EventIn.model_validate(raw), ingested_at=now_iso())


def big_event(tenant: str, size: int) -> Event:
    """An event whose JSON is over `size` bytes (built past EventIn's per-string limit on purpose)."""
    ev = make_event(tenant)
    return Event.model_validate({**ev.model_dump(), "data": {"blob": "x" * size}})
