"""Cosmos document -> Event mapping rules: pure and table-driven (docs/change-capture.md).

The change feed (latest-version mode) carries neither "created" nor "deleted" nor the previous
version, so each rule looks at the changed document and at `prior`: the snapshot the service kept
of the same entity when it last saw it (see `state.py`; None = never seen). `snapshot(kind, doc)`
is what is kept; `map_change` returns the events one change yields (zero, one or several).

Event ids derive from container + tenant + document id + version (`_lsn`, else `_etag`) + event
type (+ the gap/violation id), so a re-delivered change maps to the same ids.

Why ~500 lines in one module: the rule table (`RULES`), the small functions it names, the snapshot
they compare against and the validation they rely on are one specification, read side by side with
docs/change-capture.md; split apart, a rule could no longer be checked against the document it
reads without jumping between files. Everything here is pure (no I/O).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import orjson

from shared.core.events import (
    SCHEMA_VERSION,
    Action,
    Event,
    EventType,
    Source,
    check_shape,
    is_tenant_id,
    utc_instant,
    utc_now_iso,
)
from shared.core.ids import derived_uuid


class Kind(str, Enum):
    """The monitored containers, by what they hold."""

    RISKS = "risks"
    CONTROLS = "controls"
    ASSESSMENTS = "assessments"
    COMPLIANCE = "compliance"
    POLICIES = "policies"


ENTITY_TYPE: dict[Kind, str] = {
    Kind.RISKS: "risk",
    Kind.CONTROLS: "control",
    Kind.ASSESSMENTS: "assessment",
    Kind.COMPLIANCE: "complianceRecord",
    Kind.POLICIES: "policy",
}

SYSTEM_FIELDS = frozenset({"_rid", "_self", "_etag", "_attachments", "_ts", "_lsn"})
MAX_ID_LENGTH = 255  # Cosmos' own limit on `id`
MAX_TRACKED_ITEMS = 1000  # gaps / violations remembered per entity

# Words compared after `_word` (any case; spaces and hyphens as `_`): "In Progress" as a UI shows it is
# in_progress. A control test's result is a pass or a fail also in the words of control-effectiveness
# testing (ISO 27001, SOX): effective / ineffective, not effective, deficient.
PASS_RESULTS = frozenset({"pass", "passed", "effective"})
FAIL_RESULTS = frozenset({"fail", "failed", "failure", "ineffective", "not_effective", "deficient"})
STARTED_STATUSES = frozenset({"in_progress", "inprogress", "started", "active"})
COMPLETED_STATUSES = frozenset({"completed", "complete", "done", "closed"})
# A risk's first status (docs/change-capture.md): a risk created and moved on before the feed delivered
# it gets a RISK_STATUS_CHANGED from this one.
INITIAL_RISK_STATUS = "open"
CLOSED_ITEM_STATUSES = frozenset({"closed", "resolved", "remediated", "dismissed"})


class Unmappable(ValueError):
    """A document the rules cannot turn into events; it is parked with this reason."""


@dataclass(frozen=True)
class Version:
    """A document version: `order` sorts versions of one document, `ident` names this one."""

    order: int
    ident: str


def version_of(doc: dict[str, Any]) -> Version:
    lsn = doc.get("_lsn")
    if isinstance(lsn, int) and not isinstance(lsn, bool):
        return Version(lsn, f"lsn:{lsn}")
    etag, ts = doc.get("_etag"), doc.get("_ts")
    if isinstance(etag, str) and etag and isinstance(ts, int):
        # No _lsn (not from the feed): _ts orders, the etag tells two writes in one second apart.
        return Version(ts, f"etag:{etag.strip(chr(34))}")
    raise Unmappable("no version: a change needs `_lsn`, or `_etag` and `_ts`")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 / RFC 3339 string (no offset = UTC) as UTC, or None when absent, unreadable or
    with no UTC date-time (`0001-01-01T00:00:00+01:00`: one document must not fail its batch)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        # RFC 3339 allows a lowercase t and z (parse_rfc3339)
        return utc_instant(datetime.fromisoformat(value.upper()))
    except ValueError:
        return None


def _ts_of(doc: dict[str, Any]) -> datetime | None:
    ts = doc.get("_ts")
    return datetime.fromtimestamp(ts, UTC) if isinstance(ts, (int, float)) else None


def _norm(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _word(value: Any) -> str | None:
    """A status or result as one word: lowercase, spaces and hyphens as `_` ("Not Effective" ->
    "not_effective")."""
    text = _norm(value)
    return None if text is None else "_".join(text.replace("-", " ").split())


# ---- validation ---------------------------------------------------------------------------

def _items(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = doc.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise Unmappable(f"`{name}` must be a list of objects")
    return value


def validate(kind: Kind, doc: Any) -> Version:
    """Raise Unmappable with the reason, or return the document's version."""
    if not isinstance(doc, dict):
        raise Unmappable("not a JSON object")
    doc_id = doc.get("id")
    if not isinstance(doc_id, str) or not doc_id or len(doc_id) > MAX_ID_LENGTH:
        raise Unmappable("missing or invalid `id`")
    tenant = doc.get("tenantId")
    if not isinstance(tenant, str) or not tenant:
        raise Unmappable("missing `tenantId`")
    if not is_tenant_id(tenant):
        raise Unmappable("invalid `tenantId` (3-64 of a-z, 0-9, '-')")
    if "status" in doc and doc["status"] is not None and not isinstance(doc["status"], str):
        raise Unmappable("`status` must be a string")
    if kind is Kind.CONTROLS and doc.get("lastTest") is not None:
        test = doc["lastTest"]
        if not isinstance(test, dict) or not isinstance(test.get("result"), str):
            raise Unmappable("`lastTest` must be an object with a string `result`")
    if kind is Kind.COMPLIANCE:
        _items(doc, "gaps")
    if kind is Kind.POLICIES:
        _items(doc, "violations")
    try:
        check_shape(doc)
    except ValueError as exc:
        raise Unmappable(f"document too large or deep: {exc}") from None
    return version_of(doc)


# ---- the snapshot kept per entity ---------------------------------------------------------

def item_id(item: dict[str, Any]) -> str:
    """A gap's or violation's id: its `id`, else a hash of its content (stable across versions)."""
    for key in ("id", "gapId", "violationId", "requirementId"):
        value = item.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return "h:" + hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _open_items(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [i for i in _items(doc, name) if _norm(i.get("status")) not in CLOSED_ITEM_STATUSES]


def assessment_phase(doc: dict[str, Any]) -> str:
    """planned | in_progress | completed, from `status` (else `completedAt` / `startedAt`)."""
    status = _word(doc.get("status"))
    if status in COMPLETED_STATUSES or (status is None and doc.get("completedAt")):
        return "completed"
    if status in STARTED_STATUSES or (status is None and doc.get("startedAt")):
        return "in_progress"
    return "planned"


def _test_signature(doc: dict[str, Any]) -> str | None:
    test = doc.get("lastTest")
    if not isinstance(test, dict):
        return None
    return f"{test.get('testedAt') or ''}|{_norm(test.get('result')) or ''}"


def snapshot(kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    """What is remembered about an entity after this change (compared with the next one)."""
    snap: dict[str, Any] = {"deleted": doc.get("isDeleted") is True}
    if kind is Kind.ASSESSMENTS:
        snap["status"] = assessment_phase(doc)
    else:
        snap["status"] = doc.get("status")
    if kind is Kind.CONTROLS:
        snap["test"] = _test_signature(doc)
    if kind is Kind.COMPLIANCE:
        snap["gaps"] = [item_id(g) for g in _open_items(doc, "gaps")][:MAX_TRACKED_ITEMS]
    if kind is Kind.POLICIES:
        snap["violations"] = [item_id(v) for v in _open_items(doc, "violations")][:MAX_TRACKED_ITEMS]
    return snap


# ---- rules --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    kind: Kind
    doc: dict[str, Any]
    prior: dict[str, Any] | None  # snapshot when last seen; None = first sighting
    snap: dict[str, Any]
    feed_started: datetime | None = None  # when this container's change-feed processor started (leases.py)

    @property
    def deleted(self) -> bool:
        return bool(self.snap["deleted"])

    @property
    def newly_deleted(self) -> bool:
        return self.deleted and not (self.prior or {}).get("deleted", False)

    @property
    def is_create(self) -> bool:
        """First sighting of a live document created after this container's processor started.

        The feed delivers a document created and edited between two polls once, already edited, so
        "createdAt == updatedAt" alone would miss its creation. With the processor's start known
        (`feed_started`), `createdAt` decides: created since the start = CREATED (edited or not);
        created before = it existed before the processor (a backfill from the beginning, or state
        lost): UPDATED with `firstSeen`. No `createdAt`: CREATED when last written (`_ts`) since the
        start. Start unknown (no lease marker found): the document's own times decide, as a document
        written once has `createdAt == updatedAt` (or lacks one).
        """
        if self.prior is not None or self.deleted:
            return False
        created, updated = parse_time(self.doc.get("createdAt")), parse_time(self.doc.get("updatedAt"))
        if self.feed_started is not None:
            if created is not None:
                return created >= self.feed_started
            written = _ts_of(self.doc)
            return written is not None and written >= self.feed_started
        return created is None or updated is None or created == updated

    @property
    def edited_since_created(self) -> bool:
        created, updated = parse_time(self.doc.get("createdAt")), parse_time(self.doc.get("updatedAt"))
        return created is not None and updated is not None and updated > created


@dataclass(frozen=True)
class Emission:
    """One event a rule fires: `sub` tells apart several events of one type (per gap/violation)."""

    data: dict[str, Any]
    when: datetime | None = None
    sub: str = ""


Fire = Callable[[Change], list[Emission]]


@dataclass(frozen=True)
class Rule:
    event_type: EventType
    action: Action
    fire: Fire
    doc: str = ""  # one line for docs/change-capture.md


def clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in SYSTEM_FIELDS}


def _changed_at(doc: dict[str, Any]) -> datetime | None:
    return parse_time(doc.get("updatedAt")) or parse_time(doc.get("createdAt"))


def _whole(c: Change) -> list[Emission]:
    return [Emission(clean(c.doc), _changed_at(c.doc))]


def _created(c: Change) -> list[Emission]:
    return _whole(c) if c.is_create else []


def _updated(c: Change) -> list[Emission]:
    if c.deleted or c.is_create:
        return []
    return _whole(c)


def _deleted(c: Change) -> list[Emission]:
    return _whole(c) if c.newly_deleted else []


def _summary(c: Change) -> dict[str, Any]:
    keep = ("id", "title", "name", "status", "ownerId", "framework", "category")
    return {k: c.doc[k] for k in keep if k in c.doc}


def _status_changed(c: Change) -> list[Emission]:
    """Live, seen before, and `status` differs from the last known one; or created, edited before
    its first sighting, and no longer in the initial status (the status it was created with is not in
    the document: the rule takes the lifecycle's first, `previousStatusInferred: true`)."""
    if c.deleted:
        return []
    if c.prior is None:
        after = c.snap.get("status")
        if not (c.is_create and c.edited_since_created and isinstance(after, str)
                and _norm(after) not in (None, INITIAL_RISK_STATUS)):
            return []
        return [Emission({**_summary(c), "previousStatus": INITIAL_RISK_STATUS, "status": after,
                          "previousStatusInferred": True}, _changed_at(c.doc))]
    if c.prior.get("deleted"):
        return []
    before, after = c.prior.get("status"), c.snap.get("status")
    if before == after:
        return []
    return [Emission({**_summary(c), "previousStatus": before, "status": after}, _changed_at(c.doc))]


def _compliance_status(c: Change) -> list[Emission]:
    """Like `_status_changed`, and also on first sighting (no COMPLIANCE_CREATED type exists)."""
    if c.deleted or (c.prior is not None and c.prior.get("deleted")):
        return []
    before = None if c.prior is None else c.prior.get("status")
    after = c.snap.get("status")
    if after is None or (c.prior is not None and before == after):
        return []
    return [Emission({**_summary(c), "previousStatus": before, "status": after}, _changed_at(c.doc))]


def _compliance_deleted(c: Change) -> list[Emission]:
    if not c.newly_deleted:
        return []
    before = None if c.prior is None else c.prior.get("status")
    return [Emission({**_summary(c), "previousStatus": before, "status": None, "isDeleted": True},
                     _changed_at(c.doc))]


def _new_test(c: Change) -> dict[str, Any] | None:
    if c.deleted or c.snap.get("test") is None:
        return None
    if c.prior is not None and c.prior.get("test") == c.snap["test"]:
        return None
    return c.doc["lastTest"]


def _test_emission(c: Change, test: dict[str, Any]) -> Emission:
    result = _word(test.get("result"))
    outcome = ("pass" if result in PASS_RESULTS else "fail" if result in FAIL_RESULTS
               else _norm(test.get("result")))
    data = {**_summary(c), "result": outcome, "test": test}
    return Emission(data, parse_time(test.get("testedAt")) or _changed_at(c.doc))


def _tested(c: Change) -> list[Emission]:
    test = _new_test(c)
    return [] if test is None else [_test_emission(c, test)]


def _failed(c: Change) -> list[Emission]:
    test = _new_test(c)
    if test is None or _word(test.get("result")) not in FAIL_RESULTS:
        return []
    return [_test_emission(c, test)]


def _phase_entered(phase: str, at_field: str) -> Fire:
    def fire(c: Change) -> list[Emission]:
        if c.deleted or c.snap["status"] != phase:
            return []
        if c.prior is not None and c.prior.get("status") == phase and not c.prior.get("deleted"):
            return []
        data = {**_summary(c), "phase": phase, "previousPhase": None if c.prior is None else c.prior.get("status"),
                "dueDate": c.doc.get("dueDate"), at_field: c.doc.get(at_field)}
        return [Emission(data, parse_time(c.doc.get(at_field)) or _changed_at(c.doc))]

    return fire


def _new_items(name: str, key: str) -> Fire:
    def fire(c: Change) -> list[Emission]:
        if c.deleted:
            return []
        seen = set((c.prior or {}).get(key) or [])
        out: list[Emission] = []
        for item in _open_items(c.doc, name)[:MAX_TRACKED_ITEMS]:
            iid = item_id(item)
            if iid in seen:
                continue
            seen.add(iid)  # the same id listed twice fires once
            when = parse_time(item.get("detectedAt")) or _changed_at(c.doc)
            out.append(Emission({**_summary(c), name[:-1]: item, f"{name[:-1]}Id": iid}, when, sub=iid))
        return out

    return fire


E, A = EventType, Action
RULES: dict[Kind, tuple[Rule, ...]] = {
    Kind.RISKS: (
        Rule(E.RISK_CREATED, A.CREATE, _created, "first sighting of a document created since the processor started"),
        Rule(E.RISK_UPDATED, A.UPDATE, _updated, "any other live change"),
        Rule(E.RISK_STATUS_CHANGED, A.STATUS_CHANGE, _status_changed,
             "`status` differs from the last known (or, created and edited unseen, from `open`)"),
        Rule(E.RISK_DELETED, A.DELETE, _deleted, "`isDeleted: true` first seen"),
    ),
    Kind.CONTROLS: (
        Rule(E.CONTROL_CREATED, A.CREATE, _created, "first sighting of a document created since the processor started"),
        Rule(E.CONTROL_UPDATED, A.UPDATE, _updated, "any other live change"),
        Rule(E.CONTROL_UPDATED, A.DELETE, _deleted, "`isDeleted: true` first seen (no CONTROL_DELETED type)"),
        Rule(E.CONTROL_TESTED, A.TEST, _tested, "`lastTest` (`testedAt`, `result`) differs from the last known"),
        Rule(E.CONTROL_FAILED, A.TEST, _failed, "as TESTED, and `lastTest.result` is a fail (FAIL_RESULTS)"),
    ),
    Kind.ASSESSMENTS: (
        Rule(E.ASSESSMENT_STARTED, A.STATUS_CHANGE, _phase_entered("in_progress", "startedAt"),
             "phase becomes in_progress"),
        Rule(E.ASSESSMENT_COMPLETED, A.STATUS_CHANGE, _phase_entered("completed", "completedAt"),
             "phase becomes completed"),
    ),
    Kind.COMPLIANCE: (
        Rule(E.COMPLIANCE_STATUS_CHANGED, A.STATUS_CHANGE, _compliance_status,
             "first sighting with a `status`, or `status` differs"),
        Rule(E.COMPLIANCE_STATUS_CHANGED, A.DELETE, _compliance_deleted, "`isDeleted: true` first seen"),
        Rule(E.COMPLIANCE_GAP_DETECTED, A.DETECT, _new_items("gaps", "gaps"),
             "one per open gap not open at the last sighting"),
    ),
    Kind.POLICIES: (
        Rule(E.POLICY_VIOLATION, A.DETECT, _new_items("violations", "violations"),
             "one per open violation not open at the last sighting"),
    ),
}


# ---- mapping ------------------------------------------------------------------------------

@dataclass
class Mapped:
    """The events of one change, plus what the processor needs to know about it."""

    tenant_id: str
    entity_id: str
    version: Version
    events: list[Event] = field(default_factory=list)
    ts: float | None = None  # the document's `_ts` (seconds), for the change-feed delay


def change_key(container: str, tenant: str, doc_id: str, version: Version) -> tuple[str, ...]:
    return ("cf", container, tenant, doc_id, version.ident)


def map_change(
    kind: Kind,
    container: str,
    doc: dict[str, Any],
    prior: dict[str, Any] | None,
    *,
    ingested_at: str,
    version: Version | None = None,
    snap: dict[str, Any] | None = None,
    feed_started: datetime | None = None,
) -> Mapped:
    """All events of one validated document (call `validate` first); `feed_started`: when the
    container's change-feed processor started (leases.FeedStarts), None when unknown."""
    version = version or version_of(doc)
    snap = snap if snap is not None else snapshot(kind, doc)
    change = Change(kind, doc, prior, snap, feed_started)
    tenant, doc_id = doc["tenantId"], doc["id"]
    ts_dt = _ts_of(doc)
    base_ms = int(ts_dt.timestamp() * 1000) if ts_dt else 0
    key = change_key(container, tenant, doc_id, version)
    correlation = derived_uuid(base_ms, *key)
    meta = {
        "container": container,
        "changeFeed": {"lsn": doc.get("_lsn"), "etag": doc.get("_etag"), "ts": doc.get("_ts"),
                       "version": version.ident},
    }
    if prior is None and not change.is_create:
        meta["firstSeen"] = True
    out = Mapped(tenant, doc_id, version, ts=float(doc["_ts"]) if ts_dt else None)
    for rule in RULES[kind]:
        for em in rule.fire(change):
            when = em.when or ts_dt
            out.events.append(Event.trusted(dict(
                eventId=derived_uuid(base_ms, *key, rule.event_type.value, rule.action.value, em.sub),
                tenantId=tenant,
                eventType=rule.event_type,
                source=Source.COSMOS_DB,
                action=rule.action,
                entityId=doc_id,
                entityType=ENTITY_TYPE[kind],
                data=em.data,
                metadata={**meta},
                timestamp=utc_now_iso(when) if when else ingested_at,  # UTC: parse_time
                ingestedAt=ingested_at,
                schemaVersion=SCHEMA_VERSION,
                correlationId=correlation,
            )))
    return out
