"""The vector queue's message format, shared by the producer (destination) and the consumer (indexer).

A message is `{"v": 1, "items": [IndexItem, ...]}` as UTF-8 JSON. Items carry the rendered text,
not the event, so a message stays small whatever the event's size: the Storage queue takes
64 KiB per message and the Functions trigger wants base64, which leaves 48 KiB of JSON.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import orjson
from pydantic import BaseModel, ConfigDict

from shared.core.events import Event
from shared.vector.outcome import outcome_from_text
from shared.vector.text import render_event_outcome, render_event_text

VERSION = 1
MAX_MESSAGE_BYTES = 48 * 1024  # base64 of this is 64 KiB, the queue's message cap
_ENVELOPE = len(b'{"v":1,"items":[]}')


class IndexItem(BaseModel):
    """What the indexer needs of an event: its filterable fields and its rendered text (bounded)."""

    model_config = ConfigDict(extra="ignore")

    eventId: str
    tenantId: str
    eventType: str
    source: str
    timestamp: str
    text: str
    entityType: str | None = None
    entityId: str | None = None
    # Absent in messages enqueued before outcomes existed: then read from the text (`effective_outcome`).
    outcome: str | None = None

    @classmethod
    def from_event(cls, event: Event | Mapping[str, Any]) -> "IndexItem":
        ev = event.to_dict() if isinstance(event, Event) else dict(event)
        return cls(
            eventId=ev["eventId"], tenantId=ev["tenantId"], eventType=_plain(ev["eventType"]),
            source=_plain(ev["source"]), timestamp=ev["timestamp"], entityType=ev.get("entityType"),
            entityId=ev.get("entityId"), text=render_event_text(ev), outcome=render_event_outcome(ev),
        )

    def effective_outcome(self) -> str | None:
        return self.outcome or outcome_from_text(self.eventType, self.text)


def _plain(value: Any) -> str:
    return str(getattr(value, "value", value))  # an Enum member or its value


def encode_messages(items: Sequence[IndexItem], max_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, list[int]]]:
    """Pack items into as few messages as fit; returns (message text, indexes of its items)."""
    out: list[tuple[str, list[int]]] = []
    parts: list[bytes] = []
    members: list[int] = []
    size = _ENVELOPE
    for i, item in enumerate(items):
        raw = orjson.dumps(item.model_dump(exclude_none=True))
        if len(raw) + _ENVELOPE > max_bytes:
            raise ValueError(f"event {item.eventId!r} renders to {len(raw)} bytes, more than a queue message holds")
        if parts and size + len(raw) + 1 > max_bytes:
            out.append((_envelope(parts), members))
            parts, members, size = [], [], _ENVELOPE
        parts.append(raw)
        members.append(i)
        size += len(raw) + 1
    if parts:
        out.append((_envelope(parts), members))
    return out


def _envelope(parts: list[bytes]) -> str:
    return (b'{"v":1,"items":[' + b",".join(parts) + b"]}").decode()


def decode_message(body: bytes | str) -> list[IndexItem]:
    """Parse one queue message; raises ValueError on anything malformed (the host then retries
    it and finally moves it to the poison queue, so nothing is silently dropped)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"vector queue message is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != VERSION or not isinstance(doc.get("items"), list):
        raise ValueError("vector queue message is not {v: 1, items: [...]}")
    return [IndexItem.model_validate(item) for item in doc["items"]]
