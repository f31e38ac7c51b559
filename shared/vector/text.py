"""The text an event is embedded and keyword-indexed as (template documented in docs/vector-search.md).

The model reads at most 256 tokens (~1,000 characters of English), so the template puts what
a person searches for first (the outcome -- failed, passed, overdue ... --, what happened, its
title, its status) and the long tail last, and the whole text is bounded. Pure and deterministic:
the same event always gives the same text.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from shared.core.events import Event
from shared.vector.outcome import event_outcome, lead_words

MAX_TEXT_CHARS = 2_000
MAX_FIELD_CHARS = 400
MAX_CHANGES = 8
MAX_OTHER_FIELDS = 8
MAX_OTHER_VALUE_CHARS = 120

# data keys, matched case-insensitively, in the order they are looked up
TITLE_KEYS = ("title", "name", "subject", "riskName", "controlName", "assessmentName", "policyName", "label")
DESCRIPTION_KEYS = (
    "description", "summary", "details", "finding", "findings", "reason", "message",
    "notes", "comment", "remediation", "impactDescription",
)
STATUS_KEYS = ("status", "newStatus", "state", "result", "outcome", "testResult")
PREVIOUS_STATUS_KEYS = ("previousStatus", "oldStatus", "priorStatus", "fromStatus")
FACET_KEYS = (
    "severity", "priority", "riskLevel", "rating", "likelihood", "impact", "score", "category",
    "framework", "regulation", "requirement", "controlType", "owner", "department", "vendor", "system",
)
CHANGE_KEYS = ("changes", "changedFields", "diff")
_USED = {k.lower() for k in TITLE_KEYS + DESCRIPTION_KEYS + STATUS_KEYS + PREVIOUS_STATUS_KEYS
         + FACET_KEYS + CHANGE_KEYS}


def event_type_words(event_type: str) -> str:
    """RISK_STATUS_CHANGED -> 'Risk status changed'."""
    words = event_type.replace("_", " ").strip().lower()
    return words[:1].upper() + words[1:]


def _lookup(data: Mapping[str, Any], keys: Iterable[str]) -> tuple[str, Any] | None:
    lowered = {k.lower(): k for k in data}
    for key in keys:
        real = lowered.get(key.lower())
        if real is not None and _present(data[real]):
            return real, data[real]
    return None


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line, single spaces
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _scalar(value: Any, limit: int = MAX_FIELD_CHARS) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return _clip(", ".join(_scalar(v, limit) for v in value if _present(v)), limit)
    if isinstance(value, Mapping):
        return _clip("; ".join(f"{k}: {_scalar(v, limit)}" for k, v in value.items() if _present(v)), limit)
    return _clip(str(value), limit)


def _changes(value: Any) -> list[str]:
    """`{field: {old, new}}`, `{field: new}` or `[{field, old, new}]` -> 'field: old -> new'."""
    items: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list):
        for entry in value:
            if isinstance(entry, Mapping):
                name = entry.get("field") or entry.get("name") or entry.get("path")
                if name:
                    items.append((str(name), entry))
            elif _present(entry):
                items.append((_scalar(entry, 60), None))
    out: list[str] = []
    for name, change in items[:MAX_CHANGES]:
        if isinstance(change, Mapping):
            old = next((change[k] for k in ("old", "from", "previous", "before", "oldValue") if k in change), None)
            new = next((change[k] for k in ("new", "to", "current", "after", "newValue") if k in change), None)
            if old is None and new is None:
                out.append(f"{name}: {_scalar(change, 120)}")
            else:
                out.append(f"{name}: {_scalar(old, 120) if old is not None else '(none)'} -> "
                           f"{_scalar(new, 120) if new is not None else '(none)'}")
        elif change is None:
            out.append(name)
        else:
            out.append(f"{name}: {_scalar(change, 120)}")
    return out


def _words(key: str) -> str:
    """riskLevel / risk_level -> 'risk level'."""
    out = []
    for i, ch in enumerate(key.replace("_", " ")):
        if ch.isupper() and i and key[i - 1].islower():
            out.append(" ")
        out.append(ch.lower())
    return "".join(out)


def _is_identifier_key(key: str) -> bool:
    """Ids, times and bookkeeping (createdAt, vendor_id, _etag) carry no meaning for search."""
    low = key.lower()
    return (
        key.startswith("_")
        or low in {"id", "timestamp", "date", "time", "etag", "version", "ttl"}
        or key.endswith(("Id", "ID", "Ids", "At"))
        or low.endswith(("_id", "_ids", "_at"))
    )


def _as_dict(event: Event | Mapping[str, Any]) -> Mapping[str, Any]:
    return event.to_dict() if isinstance(event, Event) else event


def _event_type(ev: Mapping[str, Any]) -> str:
    return str(getattr(ev.get("eventType"), "value", ev.get("eventType")) or "EVENT")


def _data(ev: Mapping[str, Any]) -> Mapping[str, Any]:
    data = ev.get("data")
    return data if isinstance(data, Mapping) else {}


def render_event_outcome(event: Event | Mapping[str, Any]) -> str | None:
    """The event's outcome (shared.vector.outcome) from its type and its status/result field."""
    ev = _as_dict(event)
    status = _lookup(_data(ev), STATUS_KEYS)
    return event_outcome(_event_type(ev), _scalar(status[1], 80) if status else None)


def render_event_text(event: Event | Mapping[str, Any], max_chars: int = MAX_TEXT_CHARS) -> str:
    """Render an event (the `Event` model or its dict form) to the text that gets embedded."""
    ev = _as_dict(event)
    event_type = _event_type(ev)
    action = str(getattr(ev.get("action"), "value", ev.get("action")) or "")
    data = _data(ev)
    entity_type = ev.get("entityType")
    entity_id = ev.get("entityId")

    # The outcome leads: "Failed. Control failed: ..." and "Passed. Control tested: ..." differ in
    # their first word, for the embedding and for the keyword index alike.
    lead = lead_words(render_event_outcome(ev))
    headline = (f"{lead}. " if lead else "") + event_type_words(event_type)
    title = _lookup(data, TITLE_KEYS)
    if title:
        headline += f": {_scalar(title[1], 200)}"
    lines = [headline + "."]

    status = _lookup(data, STATUS_KEYS)
    previous = _lookup(data, PREVIOUS_STATUS_KEYS)
    if status and previous:
        lines.append(f"Status: {_scalar(previous[1], 80)} -> {_scalar(status[1], 80)}.")
    elif status:
        lines.append(f"Status: {_scalar(status[1], 80)}.")
    elif previous:
        lines.append(f"Previous status: {_scalar(previous[1], 80)}.")

    entity = " ".join(str(p) for p in (entity_type, entity_id) if p)
    if entity:
        lines.append(f"Entity: {_clip(entity, 200)}.")
    if action:
        lines.append(f"Action: {action.lower().replace('_', ' ')}.")

    description = _lookup(data, DESCRIPTION_KEYS)
    if description:
        lines.append(f"Description: {_scalar(description[1])}")

    changes = _lookup(data, CHANGE_KEYS)
    if changes:
        rendered = _changes(changes[1])
        if rendered:
            lines.append("Changes: " + "; ".join(rendered) + ".")

    facets = [f"{_words(k)}: {_scalar(data[real], 120)}"
              for k in FACET_KEYS
              if (real := next((d for d in data if d.lower() == k.lower()), None)) and _present(data[real])]
    if facets:
        lines.append("Details: " + "; ".join(facets) + ".")

    # Other short scalar fields carry meaning too (a vendor name, a region); ids and times do not.
    other = [f"{_words(k)}: {_scalar(v, MAX_OTHER_VALUE_CHARS)}"
             for k, v in data.items()
             if k.lower() not in _USED and not _is_identifier_key(k)
             and isinstance(v, (str, int, float, bool)) and _present(v)][:MAX_OTHER_FIELDS]
    if other:
        lines.append("Other: " + "; ".join(other) + ".")

    return _clip_lines(lines, max_chars)


def _clip_lines(lines: list[str], max_chars: int) -> str:
    text = "\n".join(lines)
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rstrip() + "…"
