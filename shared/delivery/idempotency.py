"""Idempotent publishing: an eventId accepted within the window is not delivered again.

Per tenant in Redis, a claim (storage/claims.py, the one dedupe primitive) on
`grc:{tenant}:idem:<eventId>`: `pending` while the first request is in flight (a short TTL, so a
crashed instance does not block the id for a day), then the original result (status, eventId,
destinations) for the window. A repeat gets that result back as status `duplicate`. A concurrent
repeat waits briefly for the first to finish; if it is still in flight the repeat answers 409
(retry). A repeat whose content differs (type, source, action, entity, data or metadata: the
`fingerprint`) is no retry but another event under a used id: it is refused (422 for a request)
instead of being answered as a duplicate, which would drop it silently; the IETF Idempotency-Key
draft asks the same of a key reused with another payload. The timestamp and correlationId are left
out: the service fills them in per request when the client sends none. A retry that would resume an
event which failed part-way (below) is compared the same way: another event under that id is refused,
and the record is put back as it was, for the first event's own retry.

When the first ends `failed` the client's retry must go through, but must not send the event again
where it already landed: the claim is settled as `partial:` + the destinations that delivered or
parked it (or released when there are none), and the retry resumes with the remaining destinations
only.

Client requests fail open: if Redis cannot be reached the check is skipped, since destinations are
themselves idempotent on eventId (Redis Streams keeps a per-event marker, the analytics table upserts
by key), so availability wins. Service-made events carry a `DedupePolicy`: the change feed's
(deterministic ids; CHANGEFEED_DEDUP_TTL_HOURS) and the overdue check's (CHANGEFEED_STATE_TTL_DAYS)
fail closed instead -- a batch that cannot be checked is not published now but retried -- and keep
only the status (`compact`), since nobody asks for their original answer.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.core.events import Event, utc_now_iso
from shared.core.results import Delivery, EventResult, FieldError
from shared.storage.claims import Claims
from shared.storage.redisconn import tenant_key

log = logging.getLogger("grc.idempotency")

PENDING_TTL_SECONDS = 300  # the default of IDEMPOTENCY_PENDING_SECONDS: longer than a publish
MAX_POLL_SECONDS = 1.0  # a long wait for busy claims polls at most this often
PARTIAL = b"partial:"

ClaimState = Literal["new", "resume", "duplicate", "conflict", "busy", "unchecked"]


def idem_key(tenant_id: str, event_id: str) -> str:
    return tenant_key(tenant_id, "idem", event_id)


def fingerprint(ev: Event) -> str:
    """What makes a repeat of an eventId the same event (see the module's docstring)."""
    f = ev.__dict__
    body = orjson.dumps([f["eventType"], f["source"], f["action"], f["entityId"], f["entityType"], f["data"],
                         f["metadata"]], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=12).hexdigest()


@dataclass(frozen=True)
class DedupePolicy:
    """How service-made events are claimed (the defaults are a client request's)."""

    window_seconds: int | None = None  # how long the outcome is kept; None: IDEMPOTENCY_WINDOW_SECONDS
    compact: bool = False  # keep only the status: nobody asks for the original answer
    strict: bool = False  # Redis unreachable: fail the events (their caller retries), never publish unchecked
    # How long to wait for claims in flight elsewhere; None: the store's short wait. A change-feed
    # batch's last attempt waits for the pending TTL: a claim whose owner died then frees itself and
    # the events are published, where giving up would dead-letter them.
    busy_wait_seconds: float | None = None


@dataclass
class Claim:
    state: ClaimState
    original: dict | None = None  # the stored result for a duplicate or a conflict
    prior: list[Delivery] | None = None  # resume: destinations an earlier attempt delivered or parked


def duplicate_result(index: int, ev: Event, original: dict) -> EventResult:
    was = original.get("s", "accepted")
    return EventResult(
        index=index,
        status="duplicate",
        eventId=original.get("e", ev.eventId),
        tenantId=ev.tenantId,
        destinations=[Delivery.model_validate(d) for d in original.get("d", [])],
        reason=f"eventId already {was}" + (f" at {original['at']}" if original.get("at") else "")
        + "; not delivered again",
        httpStatus=200,
    )


def conflict_result(index: int, ev: Event, original: dict, error: FieldError) -> EventResult:
    """An eventId used within the window for a different event: refused, not delivered."""
    when = f" at {original['at']}" if original.get("at") else " in this request"
    return EventResult(
        index=index, status="rejected", eventId=ev.eventId, tenantId=ev.tenantId, errors=[error],
        reason=f"eventId already used for a different event{when}; send this one with a new eventId",
        httpStatus=422,
    )


class IdempotencyStore:
    def __init__(self, client: Redis, window_seconds: int, wait_seconds: float = 2.0, poll_seconds: float = 0.05,
                 pending_seconds: int = PENDING_TTL_SECONDS):
        self._claims = Claims(client, resumable=PARTIAL)
        self._window = window_seconds
        self._wait = wait_seconds
        self._poll = poll_seconds
        self._pending = pending_seconds

    async def claim(self, events: Sequence[Event], wait_seconds: float | None = None) -> list[Claim]:
        """One claim per event (ids distinct within the call); `unchecked` when Redis is unreachable.
        Claims in flight elsewhere are polled for `wait_seconds` (default: the store's short wait),
        at growing intervals."""
        if not events:
            return []
        try:
            claims = await self._try_claim(events)
            deadline = time.monotonic() + (self._wait if wait_seconds is None else wait_seconds)
            poll = self._poll
            while any(c.state == "busy" for c in claims) and time.monotonic() < deadline:
                await asyncio.sleep(poll)
                poll = min(poll * 2, MAX_POLL_SECONDS)
                busy = [i for i, c in enumerate(claims) if c.state == "busy"]
                again = await self._try_claim([events[i] for i in busy])
                for i, c in zip(busy, again):
                    claims[i] = c
            return claims
        except RedisError as exc:
            log.warning("idempotency check skipped, Redis unavailable: %s", type(exc).__name__)
            return [Claim("unchecked") for _ in events]

    async def _try_claim(self, events: Sequence[Event]) -> list[Claim]:
        """Every event's claim in one round trip, whatever the number of tenants."""
        taken = await self._claims.take([idem_key(ev.tenantId, ev.eventId) for ev in events], self._pending)
        claims = []
        restore: list[tuple[str, bytes | None, int]] = []
        for ev, t in zip(events, taken):
            if t.state == "held":
                original = orjson.loads(t.value)
                # A record without a fingerprint (compact, or written before there was one) cannot tell.
                same = "f" not in original or original["f"] == fingerprint(ev)
                claims.append(Claim("duplicate" if same else "conflict", original))
            elif t.state == "resume":
                left = orjson.loads(t.value)
                if isinstance(left, list):  # written before partial records kept a fingerprint
                    left = {"d": left}
                if "f" in left and left["f"] != fingerprint(ev):
                    # Another event under the id of one that failed part-way: refused, and the record
                    # put back (taking it made it pending) so that the first event's retry resumes.
                    restore.append((idem_key(ev.tenantId, ev.eventId), PARTIAL + t.value, self._window))
                    claims.append(Claim("conflict", {"s": "failed", **left}))
                else:
                    claims.append(Claim("resume", prior=[Delivery.model_validate(d) for d in left["d"]]))
            else:
                claims.append(Claim(t.state))
        if restore:
            await self._claims.settle(restore)
        return claims

    async def settle(self, settled: Sequence[tuple[Event, EventResult]], policy: DedupePolicy | None = None) -> None:
        """Store the final result of claimed events; keep what a failed one already did, or release it."""
        if not settled:
            return
        policy = policy or DEFAULT_POLICY
        window = policy.window_seconds or self._window
        outcomes: list[tuple[str, bytes | None, int]] = []
        for ev, res in settled:
            key = idem_key(ev.tenantId, ev.eventId)
            if res.status in ("accepted", "filtered"):
                doc: dict[str, Any] = {"s": res.status}
                if not policy.compact:
                    doc.update(e=res.eventId, at=utc_now_iso(), d=[_done(d) for d in res.destinations],
                               f=fingerprint(ev))
                outcomes.append((key, orjson.dumps(doc), window))
            else:
                done = [_done(d) for d in res.destinations if d.status in ("delivered", "parked")]
                left: dict[str, Any] = {"d": done}
                if not policy.compact:
                    left.update(at=utc_now_iso(), f=fingerprint(ev))
                outcomes.append((key, PARTIAL + orjson.dumps(left) if done else None, window))
        try:
            await self._claims.settle(outcomes)
        except RedisError as exc:  # the pending markers expire on their own
            log.warning("idempotency results not stored: %s", type(exc).__name__)


DEFAULT_POLICY = DedupePolicy()


def _done(d: Delivery) -> dict[str, Any]:
    return d.model_dump(include={"destination", "status", "ref"}, exclude_none=True)
