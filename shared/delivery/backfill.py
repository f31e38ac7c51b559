"""The backfill runner: one chunk of a job per queue message (queue trigger `run_backfill`,
docs/backfill.md).

A job walks the tenant's hours with data in [from, to) oldest first. Inside an hour it reads short
time ranges whole (the store sorts newest first) and takes their events in (time, eventId) order,
in sub-batches of a fifth of a second of the throttle (`sub_batch_size`). Each sub-batch is paced
(per job, and per tenant through a Redis token bucket shared by every instance and job), filtered
by the tenant's stream filters, checked against what the destination already holds (Redis: its
eventId marker; Kafka: a read-back after an unclean stop), delivered through the destination's
normal path (`Pipeline.deliver`: the stream's format, routes and retry policy) and checkpointed:
the job record is rewritten, conditionally on its ETag, with the last event done and the counts.

A chunk is the work of one message: until CHUNK_SECONDS have passed (then it queues the next chunk,
which any instance may take) or the job ends. The job record names its owner, the message that
runs it; the next chunk's message is queued before the record names it, so a crash anywhere leaves
a message that can carry the job on: a message that finds the job owned by another live message
leaves (its own owner's message survives a crash of the owner: the host makes it visible again
after its lease, and the checkpoint makes it skip what was done).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.core.backfill import JobRecord, JobState, iso_of_ms, sub_batch_size
from shared.core.destination_options import KafkaOptions
from shared.core.events import Event, utc_now_iso
from shared.core.filters import passes
from shared.core.hours import HOUR_MS, hour_start_ms
from shared.core.results import Delivery
from shared.core.streamconfig import StreamConfig
from shared.delivery.backfill_store import BackfillStore, Conflict
from shared.delivery.pipeline import Failure
from shared.delivery.retry_queue import RetryMessage, RetryProcessor
from shared.destinations.kafka_readback import KafkaReadBack, Written, held, offsets_after, topics_of
from shared.observability.tenant_metrics import BatchStats
from shared.storage import payload

log = logging.getLogger("grc.backfill")

LEASE_SECONDS = 300.0  # an owner's hold on its job, renewed at every checkpoint
CHUNK_SECONDS = 60.0  # one message's work at most (well inside the host's functionTimeout of 5 min)
WINDOW_START_MS = 60_000  # the first time range read within an hour; then sized to the events found
WINDOW_MAX_ROWS = 1_000  # a range holding more is read again shorter (memory stays bounded)
WINDOW_TARGET_ROWS = 500
READBACK_SECONDS = 30.0
ACTOR = "backfill-runner"


class ChunkMessage(BaseModel):
    """A backfill queue message: which job to carry on (its state is the job record)."""

    model_config = ConfigDict(extra="ignore")
    v: int = 1
    tenantId: str
    jobId: str


class _Lost(Exception):
    """The job is no longer this message's: another message owns it, or it was finished elsewhere."""


@dataclass
class _Held:
    job: JobRecord
    etag: str
    message_id: str


@dataclass
class _KafkaSide:
    """What a Kafka backfill reads back (transport `kafka` only)."""

    readback: KafkaReadBack
    topics: list[str]
    options: KafkaOptions
    default_topic: str
    written: Written = field(default_factory=set)

    async def prepare(self, job: JobRecord, unsure: bool) -> None:
        """After an unclean stop, what was written since the checkpoint; then the partitions' ends
        now, from which records of this chunk will start."""
        if unsure and job.kafkaFrom:
            got = await self.readback.written_since(job.kafkaFrom, job.tenantId, READBACK_SECONDS)
            if got is None:
                log.warning("backfill %s: kafka read-back incomplete; the events after the checkpoint are sent "
                            "again (at-least-once)", job.jobId)
            self.written = got or set()
        try:
            ends = await self.readback.ends(self.topics)
        except Exception as exc:  # noqa: BLE001 - the broker is down: the deliveries will say so
            log.warning("backfill %s: kafka partition ends unknown: %s", job.jobId, exc)
            return
        job.kafkaFrom = {k: max(job.kafkaFrom.get(k, 0), v) for k, v in ends.items()}

    def advance(self, job: JobRecord, deliveries: Sequence[Delivery]) -> None:
        for key, offset in offsets_after(d.ref for d in deliveries if d.status == "delivered").items():
            job.kafkaFrom[key] = max(job.kafkaFrom.get(key, 0), offset)


@dataclass
class _Context:
    config: StreamConfig
    dest_cfg: Any  # DestinationConfig of the job's destination
    dest: Any
    kafka: _KafkaSide | None
    size: int  # events per sub-batch


class BackfillRunner:
    """Runs one chunk message; `services` is the container (its store, analytics, pipeline, ...)."""

    def __init__(self, services: Any, *, chunk_seconds: float = CHUNK_SECONDS) -> None:
        self.s = services
        self.store: BackfillStore = services.backfills
        self.chunk_seconds = chunk_seconds
        self.rate = float(services.settings.backfill_events_per_second)
        self._next_at = 0.0

    async def enqueue(self, job: JobRecord, delay: float = 0.0) -> str:
        """Queue a chunk of `job` (visible after `delay` s); the message id."""
        body = ChunkMessage(tenantId=job.tenantId, jobId=job.jobId).model_dump_json()
        sent = await self.s.backfill_queue.send(body, visibility_timeout=int(round(delay)) or None)
        return str(sent.id)

    async def run(self, body: bytes | str, message_id: str) -> str:
        """One chunk; the outcome. Raises (the host retries the message) only when storage fails."""
        msg = ChunkMessage.model_validate_json(body)
        taken = await self._take(msg, message_id)
        if isinstance(taken, str):
            log.info("backfill %s: message %s left (%s)", msg.jobId, message_id, taken)
            return taken
        held_, unsure = taken
        try:
            outcome = await self._chunk(held_, unsure)
        except _Lost:
            outcome = "lost"
        job = held_.job
        log.info("backfill %s of %s: chunk %s; %s", job.jobId, job.tenantId, outcome, job.counts.model_dump())
        return outcome

    # ---- ownership -----------------------------------------------------------------------

    async def _take(self, msg: ChunkMessage, message_id: str) -> tuple[_Held, bool] | str:
        for _ in range(5):
            got = await self.store.read(msg.tenantId, msg.jobId)
            if got is None:
                return "gone"
            job, etag = got
            if job.terminal:
                return "finished"
            now = time.time()
            if job.owner not in (None, message_id) and job.ownerUntil > now:
                return "not owner"  # that owner's own message carries the job on, even if it dies
            # An invocation that held the job and never handed it over died mid-chunk (or a failing
            # destination left outcomes unknown): what it wrote after its checkpoint is found first.
            unsure = job.running or job.readBack
            job.owner, job.ownerUntil, job.running = message_id, now + LEASE_SECONDS, True
            if job.state == JobState.QUEUED:
                job.state, job.startedAt = JobState.RUNNING, utc_now_iso()
            job.updatedAt = utc_now_iso()
            try:
                return _Held(job, await self.store.save(job, etag), message_id), unsure
            except Conflict:
                continue
        raise RuntimeError(f"backfill {msg.jobId}: its record kept changing; the host retries the message")

    async def _save(self, h: _Held, hold_extra: float = 0.0) -> None:
        """The checkpoint: the record as this chunk has it, if it is still this message's. The API's
        cancel is the only other writer; a conflict brings its fields in and the write is tried again."""
        job = h.job
        for _ in range(5):
            now = time.time()
            job.updatedAt, job.ownerUntil = utc_now_iso(), now + LEASE_SECONDS + hold_extra
            try:
                h.etag = await self.store.save(job, h.etag)
                return
            except Conflict:
                got = await self.store.read(job.tenantId, job.jobId)
                if got is None:
                    raise _Lost from None
                fresh, h.etag = got
                if fresh.terminal or fresh.owner not in (job.owner, h.message_id):
                    raise _Lost from None
                job.cancelRequestedAt, job.cancelRequestedBy = fresh.cancelRequestedAt, fresh.cancelRequestedBy
                if fresh.state == JobState.CANCELLING and not job.terminal:
                    job.state = JobState.CANCELLING
        raise RuntimeError(f"backfill {job.jobId}: its record kept changing")

    async def _handoff(self, h: _Held, delay: float = 0.0) -> None:
        """Queue the next chunk, then name its message the owner (in this order: a crash between
        the two leaves this message, still the owner, to carry on)."""
        h.job.owner = await self.enqueue(h.job, delay)
        h.job.running = False
        await self._save(h, hold_extra=delay)

    async def _finish(self, h: _Held, state: JobState, error: str | None = None) -> str:
        job = h.job
        job.state, job.finishedAt, job.running, job.retryAt, job.owner = state, utc_now_iso(), False, None, None
        if error:
            job.lastError = error
        await self._save(h)
        await self.store.release_slot(job)
        await record_finish(self.s, job, ACTOR)
        return state.value

    # ---- the chunk -----------------------------------------------------------------------

    async def _chunk(self, h: _Held, unsure: bool) -> str:
        job = h.job
        if job.state == JobState.CANCELLING:
            return await self._finish(h, JobState.CANCELLED)
        config = await self.s.configs.get(job.tenantId)
        dest_cfg = next((d for d in config.destinations if d.type == job.destination and d.enabled), None)
        if dest_cfg is None or not config.enabled:
            return await self._finish(h, JobState.FAILED, f"destination {job.destination!r} is no longer enabled "
                                                           "in the tenant's stream config")
        ctx = _Context(config, dest_cfg, self.s.destinations.get(job.destination), None,
                       sub_batch_size(self.rate))
        transport = getattr(dest_cfg.options, "transport", None) or self.s.settings.eventhubs_transport
        if job.destination == "kafka" and transport == "kafka":
            ctx.kafka = _KafkaSide(self.s.kafka_readback, topics_of(config, dest_cfg.options,
                                   self.s.settings.kafka_default_topic), dest_cfg.options,
                                   self.s.settings.kafka_default_topic)
            await ctx.kafka.prepare(job, unsure)
        job.readBack = False
        if job.hoursTotal is not None and job.hour is None:  # the last hour was done before a crash
            return await self._finish(h, JobState.COMPLETED)
        analytics = self.s.analytics
        hours = await analytics.hours(job.tenantId, job.fromMs if job.hour is None else hour_start_ms(job.hour),
                                      job.toMs - 1)
        if job.hoursTotal is None:
            job.hoursTotal = len(hours)
        if job.hour not in hours:  # the first chunk, or its hour was purged (retention) meanwhile
            job.hour = min(hours) if hours else None
        deadline = time.monotonic() + self.chunk_seconds
        window = WINDOW_START_MS
        while job.hour is not None:
            start = hour_start_ms(job.hour)
            lo, end = max(start, job.fromMs), min(start + HOUR_MS, job.toMs)
            if job.positionMs is not None:
                lo = max(lo, job.positionMs)
            while lo < end:
                if time.monotonic() > deadline:
                    await self._handoff(h)
                    return "continued"
                hi = min(lo + window, end)
                rows = await analytics.read_range(job.tenantId, job.hour, hours[job.hour], lo, hi,
                                                  WINDOW_MAX_ROWS if hi - lo > 1 else 10**9)
                if rows is None:  # too many for one read: a shorter range
                    window = max(1, (hi - lo) // 4)
                    continue
                position = job.position_key()
                todo = [r for r in rows if (position is None or (r[0], r[1]) > position) and self._wanted(job, r[2])]
                for i in range(0, len(todo), ctx.size):
                    stop = await self._batch(h, todo[i:i + ctx.size], ctx)
                    if stop is not None:
                        return stop
                    if time.monotonic() > deadline and i + ctx.size < len(todo):
                        await self._handoff(h)
                        return "continued"
                lo = hi
                if len(rows) < WINDOW_TARGET_ROWS // 4:
                    window = min(HOUR_MS, window * 2)
                elif len(rows) > WINDOW_TARGET_ROWS:
                    window = max(1, window // 2)
            job.hoursDone += 1
            hours = await analytics.hours(job.tenantId, start + HOUR_MS, job.toMs - 1)
            hours.pop(job.hour, None)
            job.hoursTotal = job.hoursDone + len(hours)
            job.hour = min(hours) if hours else None
            await self._save(h)
            if job.state == JobState.CANCELLING:
                return await self._finish(h, JobState.CANCELLED)
        return await self._finish(h, JobState.COMPLETED)

    @staticmethod
    def _wanted(job: JobRecord, row: dict[str, Any]) -> bool:
        return (not job.eventTypes or row.get("EventType") in job.eventTypes) and (
            not job.sources or row.get("Source") in job.sources)

    async def _batch(self, h: _Held, rows: list[tuple[int, str, dict[str, Any]]], ctx: _Context) -> str | None:
        """One sub-batch: paced, filtered, checked for duplicates, delivered, checkpointed. A string
        when the chunk ends here (waiting for the destination, cancelled, failed)."""
        job = h.job
        events: list[Event] = []
        unreadable: list[dict[str, Any]] = []
        for _, event_id, row in rows:
            raw = payload.load(row)
            try:
                events.append(Event.model_validate(raw))
            except ValidationError:
                unreadable.append(raw if isinstance(raw, dict) and "eventId" in raw else {"eventId": event_id})
        await self._pace(job.tenantId, len(rows))
        passing = [ev for ev in events if passes(ctx.config, ev)]
        there = await self._already_there(passing, ctx)
        send = [ev for ev, dup in zip(passing, there) if not dup]
        deliveries = await self.s.pipeline.deliver(job.destination, ctx.config, send) if send else []
        failed = [(ev, d) for ev, d in zip(send, deliveries) if d.status == "failed"]
        transient = [(ev, d) for ev, d in failed if d.transient]
        if send and len(transient) == len(send):  # nothing got through: the destination is failing
            return await self._wait(h, ctx, transient[0][1].error or "failed")
        for ev, d in failed:
            if not d.transient:
                await self._dead_letter(job, ev.to_dict(), d.error)
        for raw in unreadable:
            await self._dead_letter(job, raw, "the stored event is not a valid event any more")
        if transient:  # some got through: the rest goes the live path's way, to the retry queue
            parked = await self.s.retries.park([Failure(ev, job.destination, d, ctx.config) for ev, d in transient])
            if not all(parked):
                raise RuntimeError("the retry queue cannot be written; the host retries this chunk")
        c = job.counts
        c.read += len(rows)
        c.filtered += len(events) - len(passing)
        c.skippedDuplicates += len(passing) - len(send)
        c.delivered += sum(d.status == "delivered" for d in deliveries)
        c.failed += len(transient)
        c.deadLettered += len(failed) - len(transient) + len(unreadable)
        if ctx.kafka is not None:
            ctx.kafka.advance(job, deliveries)
        job.waitAttempts, job.waitingSince, job.retryAt = 0, None, None
        job.positionMs, job.positionId = rows[-1][0], rows[-1][1]
        await self._save(h)
        if job.state == JobState.CANCELLING:
            return await self._finish(h, JobState.CANCELLED)
        return None

    async def _already_there(self, events: list[Event], ctx: _Context) -> list[bool]:
        """Whether the destination already holds each event (by eventId): Kafka from the read-back
        after an unclean stop, Redis from its marker (within `dedupeSeconds`). The vector index
        upserts by eventId, so it is sent again (the same document)."""
        if not events:
            return []
        if ctx.kafka is not None:
            return held(ctx.kafka.written, events, ctx.config, ctx.kafka.options, ctx.kafka.default_topic)
        check = getattr(ctx.dest, "landed", None)
        if check is None:
            return [False] * len(events)
        try:
            return list(await check(events, ctx.dest_cfg.options, ctx.config))
        except Exception as exc:  # noqa: BLE001 - cannot ask: send (the append script dedupes anyway)
            log.warning("backfill: %s could not say what it holds: %s", ctx.dest_cfg.type, type(exc).__name__)
            return [False] * len(events)

    async def _wait(self, h: _Held, ctx: _Context, error: str) -> str:
        """The destination failed every event of the sub-batch: try again after its backoff (the
        next chunk, queued with that delay), until its retry horizon has passed; then the job fails
        (its position says where a new one would start)."""
        job, now = h.job, time.time()
        job.waitingSince = job.waitingSince or now
        job.waitAttempts += 1
        job.lastError = f"{job.destination}: {error}"[:500]
        job.readBack = ctx.kafka is not None  # a timed-out send may have been written after all
        policy = ctx.dest_cfg.retry
        if now - job.waitingSince > policy.horizon_seconds():
            return await self._finish(h, JobState.FAILED, f"{job.destination} kept failing for "
                                                          f"{now - job.waitingSince:.0f} s (its retry horizon): {error}"[:500])
        delay = policy.delay(job.waitAttempts, random.random())
        job.retryAt = iso_of_ms(int((now + delay) * 1000))
        await self._handoff(h, delay)
        return "waiting"

    async def _pace(self, tenant: str, n: int) -> None:
        """At most BACKFILL_EVENTS_PER_SECOND: per job here (so also when Redis cannot be asked),
        and per tenant across instances and jobs through the token bucket in Redis."""
        now = time.monotonic()
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + n / self.rate
        while True:
            decision = await self.s.backfill_throttle.take(tenant, n)
            if decision.allowed:
                return
            await asyncio.sleep(min(5.0, max(0.01, decision.wait_seconds)))

    async def _dead_letter(self, job: JobRecord, event: dict[str, Any], error: str | None) -> None:
        msg = RetryMessage(tenantId=job.tenantId, destination=job.destination, attempt=1,
                           firstFailureAt=utc_now_iso(), lastError=error, transient=False)
        await RetryProcessor(self.s).dead_letter(msg, event, "non-transient error", 1, BatchStats())


async def record_finish(services: Any, job: JobRecord, actor: str) -> None:
    """The audit record of a job's end (state, counts, error). Like the API's records, a trail that
    cannot be written does not undo the end; the record goes to the error log in full."""
    after = {"state": job.state.value, "counts": job.counts.model_dump(), "lastError": job.lastError,
             "hoursDone": job.hoursDone, "position": iso_of_ms(job.positionMs) if job.positionMs else None}
    try:
        await services.audit.record(job.tenantId, actor, "backfill.finish", f"backfills/{job.tenantId}/{job.jobId}",
                                    None, after)
    except Exception:  # noqa: BLE001
        log.exception("audit record not written: tenant=%s action=backfill.finish job=%s after=%s",
                      job.tenantId, job.jobId, after)
