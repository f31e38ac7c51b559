"""Backfills (docs/backfill.md), the pure part: what a client asks for, the job record the runner
keeps as its checkpoint, the view the API answers, and the progress arithmetic (rate, time left).

A job re-streams one tenant's history from the analytics store into one destination, oldest event
first, within [from, to). Its record is the checkpoint: the hour being read, the last event done
(time and eventId: events are taken in (time, eventId) order, so "after the checkpoint" is exact),
the counts, and who runs it now (the queue message that owns it, docs/backfill.md "Resume").
"""
from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.core import limits
from shared.core.answer_cap import TRUNCATED_PAGED_DOC
from shared.core.events import (
    EventType,
    Source,
    date_time_error,
    parse_rfc3339,
    rfc3339_string,
    to_utc,
    utc_now_iso,
)
from shared.core.hours import HOUR_MS, hour_start_ms

# The analytics store is where a backfill reads from, so it is no target.
TARGETS = ("redis", "kafka", "vector")
Target = Literal["redis", "kafka", "vector"]


class JobState(str, Enum):
    QUEUED = "queued"  # accepted, its first chunk not yet picked up
    RUNNING = "running"
    CANCELLING = "cancelling"  # cancel asked for while a chunk runs: it stops at its next checkpoint
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL = frozenset({JobState.CANCELLED, JobState.COMPLETED, JobState.FAILED})


class BackfillRequest(BaseModel):
    """POST /backfills/{tenantId}: re-stream the tenant's stored events of [from, to) into `destination`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: datetime = Field(alias="from", description="RFC 3339 with a zone, inclusive; not before the tenant's "
                                                       "retention (retentionDays of its stream config)")
    to: datetime = Field(description="RFC 3339 with a zone, exclusive; after `from`, at most "
                                     f"{limits.MAX_CLOCK_SKEW_SECONDS} s in the future")
    destination: Target = Field(description="an enabled destination of the tenant's stream config "
                                            "(the analytics store is the source, not a target)")
    eventTypes: list[EventType] | None = Field(None, max_length=len(EventType),
                                               description="only these event types (default: all)")
    sources: list[Source] | None = Field(None, max_length=len(Source), description="only these sources (default: all)")

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _rfc3339(cls, v: Any, info: ValidationInfo) -> Any:
        name = "from" if info.field_name == "from_" else str(info.field_name)
        v = rfc3339_string(v, name)
        if not isinstance(v, str):
            return v
        parsed = parse_rfc3339(v)  # parsed here: strict JSON mode
        if parsed is None:
            raise ValueError(date_time_error(v, name))
        return parsed

    @field_validator("from_", "to")
    @classmethod
    def _zoned(cls, v: datetime, info: ValidationInfo) -> datetime:
        if v.tzinfo is None:
            raise ValueError("needs a time zone offset (RFC 3339), e.g. 2026-01-31T12:00:00Z")
        v = to_utc(v)
        start = info.data.get("from_")
        if info.field_name == "to" and isinstance(start, datetime) and start >= v:
            raise ValueError("must be after 'from'")
        return v

    def range_ms(self) -> tuple[int, int]:
        return ms_of(self.from_), ms_of(self.to)


def ms_of(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def iso_of_ms(ms: int) -> str:
    return utc_now_iso(datetime.fromtimestamp(ms / 1000, timezone.utc))


class Counts(BaseModel):
    """What the job did with the events of its range (each event counts once, in one of the last five)."""

    read: int = 0  # events of the range matching the job's eventTypes/sources, read from the store
    delivered: int = 0
    skippedDuplicates: int = 0  # the destination already held the event (by eventId): not sent again
    filtered: int = 0  # the tenant's stream filters do not pass it now
    failed: int = 0  # failed after the destination's in-process attempts: handed to the retry queue
    deadLettered: int = 0  # refused by the destination (not transient): in the dead-letter store at once


class _JobFields(BaseModel):
    """What the stored job and the API's view of it share."""

    model_config = ConfigDict(populate_by_name=True)

    jobId: str
    tenantId: str
    destination: Target
    eventTypes: list[str] | None = None
    sources: list[str] | None = None
    createdAt: str
    createdBy: str = ""
    startedAt: str | None = None
    finishedAt: str | None = None
    updatedAt: str | None = None
    cancelRequestedAt: str | None = None
    lastError: str | None = None
    retryAt: str | None = Field(None, description="waiting for a failing destination; the next try is then")


class JobRecord(_JobFields):
    """The stored job: request, state, checkpoint and counts. Internal fields (owner, offsets) are
    never answered to clients: `view()` is."""

    state: JobState = JobState.QUEUED
    fromMs: int
    toMs: int
    cancelRequestedBy: str | None = None
    counts: Counts = Field(default_factory=Counts)
    hoursTotal: int | None = None  # tenant-hours with data in the range (None: not planned yet)
    hoursDone: int = 0
    hour: str | None = None  # the hour being read (yyyyMMddHH)
    positionMs: int | None = None  # the last event done: its time ...
    positionId: str | None = None  # ... and its eventId
    waitingSince: float | None = None  # epoch s of the first failed try in a row
    waitAttempts: int = 0  # failed tries in a row (the destination's backoff grows with them)
    slot: int | None = None
    # Who runs it: the queue message (id) that owns the job until ownerUntil (epoch s); `running`
    # while an invocation holds it (True when a new one takes over = the last one died mid-chunk).
    owner: str | None = None
    ownerUntil: float = 0.0
    running: bool = False
    readBack: bool = False  # Kafka: a send's outcome is unknown; read the topic back before sending again
    # Kafka: per "topic/partition", the offset from which records written since the checkpoint start.
    kafkaFrom: dict[str, int] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def position_key(self) -> tuple[int, str] | None:
        if self.positionMs is None:
            return None
        return self.positionMs, self.positionId or ""

    def view(self, now: float) -> "BackfillJob":
        rate, left = estimate(self, now)
        progress = BackfillProgress(
            **self.counts.model_dump(),
            position=iso_of_ms(self.positionMs) if self.positionMs is not None else None,
            hoursTotal=self.hoursTotal, hoursDone=self.hoursDone,
            ratePerSecond=rate, estimatedSecondsLeft=left,
        )
        return BackfillJob(
            **self.model_dump(include=set(_JobFields.model_fields)), state=self.state.value,
            **{"from": iso_of_ms(self.fromMs)}, to=iso_of_ms(self.toMs),
            progress=progress,
        )


def estimate(job: JobRecord, now: float) -> tuple[float | None, float | None]:
    """(events handled per second since the job started, estimated seconds left). The share done is
    the hours done plus the part of the current hour behind the checkpoint; the events still to
    come are assumed as dense as those so far. None until there is something to measure."""
    handled = job.counts.read
    if job.state == JobState.COMPLETED:
        started = _epoch(job.startedAt)
        ended = _epoch(job.finishedAt) or now
        rate = handled / (ended - started) if started and ended > started and handled else None
        return (round(rate, 1) if rate else None), 0.0
    started = _epoch(job.startedAt)
    if not started or not handled or now <= started:
        return None, None
    rate = handled / (now - started)
    if job.terminal or not job.hoursTotal:
        return round(rate, 1), None
    in_hour = 0.0
    if job.hour is not None and job.positionMs is not None:
        lo = max(hour_start_ms(job.hour), job.fromMs)
        hi = min(hour_start_ms(job.hour) + HOUR_MS, job.toMs)
        in_hour = min(1.0, max(0.0, (job.positionMs - lo) / (hi - lo))) if hi > lo else 0.0
    done = min(1.0, (job.hoursDone + in_hour) / job.hoursTotal)
    if done <= 0:
        return round(rate, 1), None
    left = (handled / done - handled) / rate
    return round(rate, 1), round(left, 1)


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


class BackfillProgress(Counts):
    position: str | None = Field(None, description="time of the last event done (events go oldest first)")
    hoursTotal: int | None = Field(None, description="tenant-hours with data in the range")
    hoursDone: int = 0
    ratePerSecond: float | None = Field(None, description="events handled per second since the job started")
    estimatedSecondsLeft: float | None = Field(None, description="an estimate: the rest assumed as dense as so far")


class BackfillJob(_JobFields):
    """A backfill job as the API answers it."""

    state: Literal["queued", "running", "cancelling", "cancelled", "completed", "failed"]
    from_: str = Field(alias="from")
    to: str
    progress: BackfillProgress

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class BackfillList(BaseModel):
    tenantId: str
    count: int
    truncated: bool = Field(False, description=TRUNCATED_PAGED_DOC)
    jobs: list[BackfillJob]
    continuationToken: str | None = None


def sub_batch_size(events_per_second: float) -> int:
    """Events per delivery call and checkpoint: a fifth of a second of the throttle, 20-500. Small
    enough that a sub-batch holds the instance's event loop (parsing, encoding) for a few ms only,
    so live requests on the same instance are not held up behind it."""
    return int(min(500, max(20, events_per_second // 5)))
