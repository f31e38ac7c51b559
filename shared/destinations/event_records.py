"""Events -> Kafka/Event Hubs records, shared by both transports of the "kafka" destination (pure).

Topics: the stream config's `topics` plus any topic named only in `routes`; a topic with routes
takes the events matching any of them, a topic without routes takes every event; no topic at
all -> the default topic. An event that matches no topic is not sent (and counts as delivered:
the tenant routed it nowhere). Key (= partition key): tenantId, or entityId when configured
(tenantId when the event has none). Headers carry the routing facts so consumers filter without
parsing: eventId, eventType, tenantId, correlationId, source, action, schemaVersion, content-type
(+ entityType/entityId when set). With `format: "cloudevents"` the record follows the CloudEvents
Kafka protocol binding in binary mode: `ce_*` headers, `content-type: application/json`, and the
value is the CloudEvent's `data`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import orjson

from shared.core import limits
from shared.core.destination_options import KafkaOptions, KafkaRoute
from shared.core.events import Action, Event, EventType, Source
from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig

JSON = "application/json"


class Record(NamedTuple):  # a tuple: one per event on every Kafka publish, built with new_tuple
    event: int  # index of the event in the published batch
    topic: str
    key: str
    value: bytes
    headers: list[Header]  # (name, value); a str value goes out as its UTF-8 bytes


# NamedTuple's own __new__ is a Python function, twice the cost: Records and Outcomes (one per event of
# every Kafka publish and delivery report) are made with tuple.__new__, their fields given in order.
new_tuple = tuple.__new__


class Outcome(NamedTuple):  # a tuple: one per record, made on every delivery report
    ok: bool
    detail: str  # ref ("topic/partition@offset") when ok, the error otherwise
    transient: bool = False


@dataclass
class Plan:
    records: list[Record] = field(default_factory=list)
    refused: dict[int, Outcome] = field(default_factory=dict)  # never sent (e.g. too large)
    # Record i is event i's only record (no event refused, unrouted or sent to several topics).
    one_per_event: bool = False


class TopicRouter:
    """Decides an event's topics; built once per publish call from the stream config and options."""

    def __init__(self, stream: StreamConfig, routes: Sequence[KafkaRoute], default_topic: str) -> None:
        self.by_topic: dict[str, list[KafkaRoute]] = {}
        for r in routes:
            self.by_topic.setdefault(r.topic, []).append(r)
        topics = list(dict.fromkeys([*stream.topics, *self.by_topic]))
        self.topics = topics or [default_topic]
        # No routes: every event goes to every topic (the usual case), one shared list.
        self.every: list[str] | None = self.topics if not self.by_topic else None

    def topics_for(self, ev: Event) -> list[str]:
        if self.every is not None:
            return self.every
        out = []
        for t in self.topics:
            rs = self.by_topic.get(t)
            if rs is None or any(_matches(r, ev) for r in rs):
                out.append(t)
        return out


def _matches(r: KafkaRoute, ev: Event) -> bool:
    return (not r.eventTypes or ev.eventType.value in r.eventTypes) and (
        not r.sources or ev.source.value in r.sources
    )


# Header values are str: confluent-kafka writes a str as its UTF-8 bytes (the same bytes on the wire,
# without a bytes object per header per event) and AMQP application properties take str. The enums'
# header tuples are made once here, a batch's tenant, schema version and entity type once per plan.
Header = tuple[str, str]
_TYPE = {t: ("eventType", t.value) for t in EventType}
_SOURCE = {s: ("source", s.value) for s in Source}
_ACTION = {a: ("action", a.value) for a in Action}
_CONTENT_TYPE = ("content-type", JSON)

_Headers = tuple[Header, ...]


class _Shared(dict):  # type: ignore[type-arg]
    """The header tuples an event shares with the rest of its batch, made once per plan per distinct
    (tenant, type, source, action, schema version, entity type): the usual batch has one or a few.
    eventId, correlationId (often one per event) and entityId are made per event."""

    def __missing__(self, key: tuple[Any, ...]) -> tuple[_Headers, _Headers]:
        tenant, etype, source, action, schema, entity_type = key
        before = (_TYPE[etype], ("tenantId", tenant))  # before correlationId, after it:
        after: _Headers = (_SOURCE[source], _ACTION[action], ("schemaVersion", schema))
        if entity_type:
            after += (("entityType", entity_type),)
        out = self[key] = (before, after)
        return out


_JSON_TAIL = (_CONTENT_TYPE,)


def _headers(f: dict[str, Any], shared: _Shared, tail: _Headers) -> list[Header]:
    """eventId, eventType, tenantId, correlationId, source, action, schemaVersion, [entityType],
    [entityId], then `tail`: one list display, the batch-shared tuples unpacked into it.

    `f` is the event's field dict (`Event.__dict__`, every field): its nine values read by key cost
    half what the model's attributes do (pydantic's `__getattr__` keeps CPython from specialising
    attribute reads), per event."""
    before, after = shared[f["tenantId"], f["eventType"], f["source"], f["action"], f["schemaVersion"],
                           f["entityType"]]
    entity_id = f["entityId"]
    if entity_id:
        return [("eventId", f["eventId"]), *before, ("correlationId", f["correlationId"]), *after,
                ("entityId", entity_id), *tail]
    return [("eventId", f["eventId"]), *before, ("correlationId", f["correlationId"]), *after, *tail]


def _cloudevent_record(ev: Event, shared: _Shared) -> tuple[bytes, list[Header]]:
    """The record value and headers of one event in the CloudEvents binding (the native format's are
    made inline in plan_records)."""
    headers = _headers(ev.__dict__, shared, ())
    ce = ev.to_cloudevent()
    value = orjson.dumps(ce.pop("data"))
    ce.pop("datacontenttype", None)
    headers.extend((f"ce_{k}", str(v)) for k, v in ce.items())
    headers.append(_CONTENT_TYPE)
    return value, headers


def plan_records(
    events: Sequence[Event], options: KafkaOptions, stream: StreamConfig, default_topic: str
) -> Plan:
    # The hot path of every Kafka publish: per event one header list (the batch-shared tuples
    # unpacked into it) and one Record; the JSON value is the event's cached wire bytes. The native
    # format's value and headers are made inline, not by a function per event.
    router = TopicRouter(stream, options.routes, default_topic)
    plan = Plan()
    records = plan.records
    append, new = records.append, new_tuple
    shared = _Shared()
    cloudevents = options.format == "cloudevents"
    by_entity = options.key == "entityId"
    every = router.every
    max_bytes = limits.MAX_EVENT_BYTES
    multi = False  # some event got more than one record
    for i, ev in enumerate(events):
        topics = every if every is not None else router.topics_for(ev)
        if not topics:
            continue
        f = ev.__dict__
        if cloudevents:
            value, headers = _cloudevent_record(ev, shared)
        else:
            value, headers = ev.to_json(), _headers(f, shared, _JSON_TAIL)
        if len(value) > max_bytes:
            plan.refused[i] = Outcome(
                False,
                f"event is {len(value)} bytes; Event Hubs takes at most {max_bytes} bytes per event",
                transient=False,
            )
            continue
        # options.key: entityId (tenantId when the event has none), else tenantId
        key = (f["entityId"] or f["tenantId"]) if by_entity else f["tenantId"]
        if len(topics) == 1:
            append(new(Record, (i, topics[0], key, value, headers)))
        else:
            multi = True
            records.extend(Record(i, t, key, value, headers) for t in topics)
    plan.one_per_event = not multi and len(records) == len(events)
    return plan


def merge(dest: str, n_events: int, plan: Plan, outcomes: Sequence[Outcome]) -> list[Delivery]:
    """One Delivery per event: delivered only when every one of its records was acknowledged.

    A failure is transient only if every failed record of the event is; the error names the
    failed topics (a retry resends to all of the event's topics: at-least-once per topic).
    """
    if len(outcomes) != len(plan.records):
        raise ValueError(f"{len(outcomes)} outcomes for {len(plan.records)} records")
    if plan.one_per_event and n_events == len(plan.records):  # the usual case
        of, records = Delivery.of, plan.records
        return [of(dest, "delivered", out[1]) if out[0] else
                _delivery(dest, "failed", error=f"{records[i].topic}: {out.detail}"[:500], transient=out.transient)
                for i, out in enumerate(outcomes)]
    per_event: list[list[tuple[Record, Outcome]]] = [[] for _ in range(n_events)]
    for rec, out in zip(plan.records, outcomes):
        per_event[rec.event].append((rec, out))
    result: list[Delivery] = []
    for i in range(n_events):
        refused = plan.refused.get(i)
        if refused is not None:
            result.append(_delivery(dest, "failed", error=refused.detail, transient=False))
            continue
        pairs = per_event[i]
        if not pairs:
            result.append(_delivery(dest, "delivered", ref="unrouted: no topic route matched"))
            continue
        bad = [(r, o) for r, o in pairs if not o.ok]
        if not bad:
            ref = pairs[0][1].detail if len(pairs) == 1 else ",".join(o.detail for _, o in pairs)
            result.append(_delivery(dest, "delivered", ref=ref))
            continue
        error = "; ".join(f"{r.topic}: {o.detail}" for r, o in bad)[:500]
        result.append(_delivery(dest, "failed", error=error, transient=all(o.transient for _, o in bad)))
    return result


def _delivery(dest: str, status: str, *, ref: str | None = None, error: str | None = None,
              transient: bool = False) -> Delivery:
    return Delivery.of(dest, status, ref, error, transient)  # type: ignore[arg-type]
