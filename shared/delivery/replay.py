"""Replay of dead letters (POST /deadletters/{tenantId}/replay): each record goes back the way it
failed, by kind (deadletters.py):

- `delivery`: through its destination again: delivered, or re-enqueued on the retry queue with a
  fresh attempt count (`requeued`);
- any other kind: the replayer the container registered for it (the change feed's: its events
  published through the pipeline, its documents mapped again): `published` / `processed`, or
  `failed` with the reason.

A record that got through is marked replayed with its result (and no longer listed by default); one
that did not keeps its place with one more attempt and the error. A record is replayed once
(`Replayed`), also by two replays of it running at the same moment on two instances: each record is
claimed in Redis (`shared/storage/claims.py`, key `grc:{tenant}:replay:<id>`) before it is sent. Both
calls read the record as not replayed yet, so the flag alone let each send it (Kafka then held the
event twice: tests/system/test_scale_out.py). A record another call is replaying is answered
`not attempted` (it stays as it is for that call); one that call got through while this one waited,
`already replayed`. With Redis unreachable the claim is skipped (a replay must still work then).

A call starts records for BUDGET_SECONDS at most: during an outage each record may take a destination's
timeouts, and 500 of them would run past the HTTP answer's limit in Azure (230 s at the load balancer)
and the host's functionTimeout. Records it did not start are answered `not attempted` and stay as they
are, and the call gives no position to continue from: the next call takes them first.
A call reads records until those not yet replayed hold 8 MiB (a group of reads at least, with
DeadLetters.get_many): 500 named records of up to 1 MB each would be 500 MB in one instance's memory.
The records of the ids after are answered `not attempted` the same way, unread.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from shared.core import limits
from shared.core.destination_options import RetryPolicy
from shared.core.events import Event, utc_now_iso
from shared.core.streamconfig import StreamConfig
from shared.delivery.deadletters import DELIVERY, PAYLOAD_PREFIX, DeadLetters
from shared.delivery.retry_queue import RetryMessage, policy_of
from shared.observability import service_stats
from shared.observability.tenant_metrics import BatchStats
from shared.storage import payload
from shared.storage.claims import Claims, Taken
from shared.storage.redisconn import tenant_key

log = logging.getLogger("grc.replay")

# (tenant, dead-letter row) -> (result, error or None): a result in GOT_THROUGH, or "failed" and why.
Replayer = Callable[[str, dict[str, Any]], Awaitable[tuple[str, str | None]]]
GOT_THROUGH = frozenset({"delivered", "requeued", "published", "processed"})
BUDGET_SECONDS = 60.0
NOT_ATTEMPTED = "not attempted"
# A record's claim while its replay runs (its destination's timeouts: well within this; a call that died
# frees it then), and once it got through: longer than any other call can have read it unreplayed
# (reads within STORAGE_READ_SECONDS, records started within BUDGET_SECONDS).
CLAIM_PENDING_SECONDS = 300
CLAIM_DONE_SECONDS = 3600
CAP_MIB = limits.MAX_LIST_RESPONSE_BYTES // 1_048_576


class _Unread:
    """A record past the call's byte cap (DeadLetters.get_many): not read, so not attempted."""


UNREAD = _Unread()
Row = dict[str, Any] | None | _Unread


class NothingReplayed(Exception):
    """The records (or the tenant's stream config) could not be read within STORAGE_READ_SECONDS: the
    Table store hangs. Nothing was replayed or changed."""


async def replay(services: Any, tenant: str, ids: list[str] | None, limit: int = 500,
                 after: str | None = None, budget_seconds: float = BUDGET_SECONDS,
                 ) -> tuple[list[dict[str, Any]], str | None]:
    """Replay the given records of `tenant` (None: the first `limit` records not yet replayed, from
    the listing position `after`, fewer when they reach the listing's byte cap, so a call holds at most
    that much of them); a result per record, and with `ids` None the position after the
    records taken (None: none left, or some not attempted), so that records that stay (failed again)
    do not hide the rest. The reads come first, all of them, within STORAGE_READ_SECONDS (else
    NothingReplayed); then records are started for `budget_seconds` (module docstring), and one that
    was started is never broken off halfway."""
    dl: DeadLetters = services.deadletters
    try:
        async with asyncio.timeout(limits.STORAGE_READ_SECONDS):
            targets, found, config, nxt = await _read(services, tenant, ids, limit, after)
    except TimeoutError as exc:
        raise NothingReplayed(f"the dead letters could not be read within {limits.STORAGE_READ_SECONDS:g} s; "
                              "nothing was replayed") from exc
    replayers: Mapping[str, Replayer] = services.replayers
    stats = BatchStats()
    out: dict[str, dict[str, Any]] = {}
    rows: list[tuple[str, dict[str, Any]]] = []
    for rid, row in zip(targets, found):
        if isinstance(row, _Unread):
            out[rid] = {"id": rid, "result": NOT_ATTEMPTED,
                        "error": f"the call read {CAP_MIB} MiB of records before this one; replay it again"}
            nxt = None  # as for a record the budget left: the next call takes it first
        elif row is None:
            out[rid] = {"id": rid, "result": "not found"}
        elif row.get("Replayed"):
            out[rid] = {"id": rid, "result": "already replayed", "replayResult": row.get("ReplayResult")}
        else:
            rows.append((rid, row))
    # In the order they were dead-lettered (a batch's change-feed events by `Seq`: an entity's events
    # are published in their order again).
    rows.sort(key=lambda r: (str(r[1].get("DeadLetteredAt") or ""), int(r[1].get("Seq") or 0)))
    deadline = time.monotonic() + budget_seconds
    claims = _claims(services)
    for rid, row in rows:
        if time.monotonic() >= deadline:
            out[rid] = {"id": rid, "result": NOT_ATTEMPTED, "error": f"the call's {budget_seconds:g} s were "
                        "spent before this record; replay it again"}
            nxt = None  # the next call must take this one first, not go past it
            continue
        taken = await _claim(claims, tenant, rid)
        owned = claims if taken is not None else None  # not claimed (Redis unreachable): nothing to settle
        if taken is not None and taken.state == "busy":
            out[rid] = {"id": rid, "result": NOT_ATTEMPTED,
                        "error": "another replay of this record is running"}
            nxt = None  # as for a record the budget left: the next call takes it first if it is still there
            continue
        if taken is not None and taken.state == "held":
            out[rid] = {"id": rid, "result": "already replayed", "replayResult": taken.value.decode()}
            continue
        kind = dl.kind_of(row)
        try:
            if kind == DELIVERY:
                assert config is not None  # read with the records (_read)
                result, error = await _replay_delivery(services, tenant, rid, row, config, stats)
            elif kind in replayers:
                result, error = await replayers[kind](tenant, row)
            else:
                result, error = "failed", f"no replay for records of kind {kind!r}"
        except BaseException:
            await _settle(owned, tenant, rid, None)  # broken off: the record stays, free to replay again
            raise
        await _settle(owned, tenant, rid, result if result in GOT_THROUGH else None)
        if result in GOT_THROUGH:
            await dl.mark_replayed(tenant, rid, result)
            out[rid] = {"id": rid, "result": result}
        elif result == "failed":
            await dl.failed_again(row, error or "failed")
            out[rid] = {"id": rid, "result": "failed", "error": error}
        else:  # e.g. "destination not configured": the record waits as it is
            out[rid] = {"id": rid, "result": result}
    if services.metrics is not None:
        await service_stats.record_outside_pipeline(services.metrics, stats)
    return [out[rid] for rid in dict.fromkeys(targets)], nxt


Position = str  # the listing's position: the last RowKey it answered (DeadLetters.list)


def _claim_key(tenant: str, rid: str) -> str:
    return tenant_key(tenant, "replay", rid)


def _claims(services: Any) -> Claims | None:
    """The replay claims of one call (None: no Redis to ask; records are then replayed unclaimed)."""
    redis = getattr(services, "redis", None)
    return None if redis is None else Claims(redis)


async def _claim(claims: Claims | None, tenant: str, rid: str) -> Taken | None:
    """Claim the record for this call (module docstring); None when Redis cannot be asked."""
    if claims is None:
        return None
    try:
        [taken] = await claims.take([_claim_key(tenant, rid)], CLAIM_PENDING_SECONDS)
    except Exception as exc:  # noqa: BLE001 - replayed unclaimed, as before claims existed
        log.warning("replay of %s/%s: not claimed (%s); replayed unclaimed", tenant, rid, type(exc).__name__)
        return None
    return taken


async def _settle(claims: Claims | None, tenant: str, rid: str, result: str | None) -> None:
    """Keep a got-through record's claim (a call that read it before may not send it again); free it
    otherwise (the record stays, for the next replay)."""
    if claims is None:
        return
    try:
        value = result.encode() if result else None
        await claims.settle([(_claim_key(tenant, rid), value, CLAIM_DONE_SECONDS)])
    except Exception as exc:  # noqa: BLE001 - the pending claim ends by itself after CLAIM_PENDING_SECONDS
        log.warning("replay of %s/%s: claim not settled (%s)", tenant, rid, type(exc).__name__)


async def _read(services: Any, tenant: str, ids: list[str] | None, limit: int, after: Position | None
                ) -> tuple[list[str], list[Row], StreamConfig | None, Position | None]:
    """The records to replay (their ids, each row or None), when one is a delivery the tenant's
    stream config, and (for a listing) where the next listing starts."""
    dl: DeadLetters = services.deadletters
    nxt = None
    if ids is None:
        listed = await dl.list(tenant, limit=limit, after=after)  # fewer at the byte cap (read again below)
        targets, nxt = [r["id"] for r in listed.items], listed.after
    else:
        targets = list(dict.fromkeys(ids[:limit]))  # an id named twice is replayed once
    records = [rid for rid in targets if not rid.startswith(PAYLOAD_PREFIX)]  # a payload row is no record
    read = await dl.get_many(tenant, records)  # stops at the byte cap: the ids after are not read
    by_id: dict[str, Row] = dict(zip(records, read))
    by_id.update((rid, UNREAD) for rid in records[len(read):])
    rows = [by_id.get(rid) for rid in targets]
    config = None
    if any(isinstance(row, dict) and dl.kind_of(row) == DELIVERY for row in rows):
        config = await services.configs.get(tenant)
    return targets, rows, config, nxt


async def _replay_delivery(services: Any, tenant: str, rid: str, row: dict[str, Any], config: StreamConfig,
                           stats: BatchStats) -> tuple[str, str | None]:
    dest = str(row["Destination"])
    event = payload.load(row)
    if not any(d.type == dest and d.enabled for d in config.destinations):
        return "destination not configured", None
    [d] = await services.pipeline.deliver(dest, config, [Event.model_validate(event)], stats=stats.tenant(tenant))
    if d.status == "delivered":
        stats.tenant(tenant).count(f"d:{dest}:ok")
        return "delivered", None
    msg = RetryMessage(tenantId=tenant, destination=dest, attempt=1, firstFailureAt=utc_now_iso(),
                       lastError=d.error, transient=True, event=event, replayOf=rid)
    policy: RetryPolicy = policy_of(config, dest)
    try:
        await services.retries.send(msg, policy.delay(1, random.random()))
    except Exception as exc:  # noqa: BLE001 - the record stays for the next replay
        return "failed", f"retry queue unavailable: {type(exc).__name__}"
    return "requeued", None
