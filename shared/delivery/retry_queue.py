"""The retry queue: a failed delivery is parked (queued for retry), retried, then dead-lettered.

Flow for one (event, destination) that failed in the request after the in-process retries:
1. `RetryQueue.park` puts a message on the Storage queue RETRY_QUEUE (base64 JSON: the event,
   the destination, the attempt number, the first failure time, the last error), invisible for
   the policy's first backoff. Events too large for a queue message (64 KiB) are stored in the
   dead-letter table as a payload row and the message carries its key (claim check). If the
   queue cannot be written, `park` says so and the pipeline answers 503: nothing is acknowledged
   that is not parked.
2. The queue-triggered function calls `process_retry_message`: one try at that destination only.
   On a transient failure with attempts left it re-enqueues the message with attempt + 1 and a
   growing visibility timeout; the original message is then deleted by the host.
3. After the last attempt (or at once for a non-transient error) the delivery goes to the dead-letter
   store (deadletters.py: PartitionKey tenant, RowKey `{eventId}__{destination}`, so writing it
   twice is harmless) with destination, reason, attempts, last error, the event and times, and a
   SYSTEM_ERROR event goes through the pipeline for the tenant. A dead-lettered SYSTEM_ERROR never
   raises another one.
4. `replay.py` sends dead letters back through their destination and marks them replayed; a replay
   that fails again goes to the retry queue with a fresh attempt count.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue.aio import QueueClient, QueueServiceClient
from pydantic import BaseModel, Field

from shared.core.destination_options import RetryPolicy
from shared.core.events import Event, utc_now_iso
from shared.core.health import DependencyHealth
from shared.core.streamconfig import StreamConfig
from shared.delivery.deadletters import DeadLetters
from shared.delivery.pipeline import Failure
from shared.observability import service_stats
from shared.observability.system_events import emit_system_error, is_system_event
from shared.observability.tenant_metrics import BatchStats
from shared.storage.clients import queue_client
from shared.storage.lazy import LazyQueue

log = logging.getLogger("grc.retries")

MAX_MESSAGE_BYTES = 48_000  # a queue message holds 64 KiB after base64 (4/3)
MAX_VISIBILITY_SECONDS = 7 * 86400 - 60


class RetryMessage(BaseModel):
    v: int = 1
    tenantId: str
    destination: str
    attempt: int = Field(ge=1)  # the number of the queue attempt this message is for
    firstFailureAt: str
    lastError: str | None = None
    transient: bool = True
    event: dict[str, Any] | None = None
    payloadRef: str | None = None  # RowKey of a payload row in the dead-letter table
    replayOf: str | None = None


class RetryQueue:
    """The pipeline's `Parker`: failed deliveries go to the Storage queue for later retries."""

    def __init__(self, queues: QueueServiceClient, queue_name: str, deadletters: DeadLetters,
                 rand: Any = random.random) -> None:
        self._queues = queues
        self._queue = LazyQueue(queues, queue_name)
        self.deadletters = deadletters
        self._rand = rand

    @property
    def name(self) -> str:
        return self._queue.name

    async def queue(self) -> QueueClient:
        """The retry queue's client (base64 text, as the queue trigger reads it)."""
        return await self._queue.get()

    async def health(self) -> DependencyHealth:
        """The retry queue answers; its depth and the poison queue's (messages the drain gave up on)."""
        start = time.perf_counter()
        depth = await self._queue.depth()
        poison = queue_client(self._queues, self.name + "-poison")
        try:
            poisoned = (await poison.get_queue_properties()).approximate_message_count
        except ResourceNotFoundError:
            poisoned = 0
        finally:
            await poison.close()
        # Poison messages hold deliveries nobody retries any more: an operator must look.
        status = "degraded" if poisoned else "healthy"
        return DependencyHealth("retryQueue", status, round((time.perf_counter() - start) * 1000, 2),  # type: ignore[arg-type]
                                info={"messages": depth, "poisonMessages": poisoned})

    async def park(self, failures: Sequence[Failure]) -> list[bool]:
        now = utc_now_iso()
        results = await asyncio.gather(*(self._park_one(f, now) for f in failures), return_exceptions=True)
        out = []
        for r in results:
            if isinstance(r, BaseException):
                log.warning("parking a failed delivery failed: %s", type(r).__name__)
            out.append(r is True)
        return out

    async def _park_one(self, f: Failure, now: str) -> bool:
        policy = policy_of(f.stream, f.destination)
        msg = RetryMessage(tenantId=f.event.tenantId, destination=f.destination, attempt=1, firstFailureAt=now,
                           lastError=f.delivery.error, transient=f.delivery.transient,
                           event=f.event.to_dict())
        delay = policy.delay(1, self._rand()) if msg.transient and policy.attempts > 0 else 0.0
        await self.send(msg, delay)
        return True

    async def send(self, msg: RetryMessage, delay_seconds: float) -> None:
        body = msg.model_dump_json(exclude_none=True)
        if len(body) > MAX_MESSAGE_BYTES and msg.event is not None:
            ref = await self.deadletters.put_payload(msg.tenantId, msg.event)
            body = msg.model_copy(update={"event": None, "payloadRef": ref}).model_dump_json(exclude_none=True)
        await self._queue.send(body, visibility_timeout=int(min(MAX_VISIBILITY_SECONDS, round(delay_seconds))))


def policy_of(stream: StreamConfig, destination: str) -> RetryPolicy:
    """The retry policy of `destination` in the tenant's config (the defaults when it has none)."""
    for d in stream.destinations:
        if d.type == destination:
            return d.retry
    return RetryPolicy()


class RetryProcessor:
    """What the queue-triggered function runs for one message."""

    def __init__(self, services: Any) -> None:
        self.s = services

    async def process(self, body: str | bytes) -> str:
        """Returns the outcome: delivered, requeued or deadlettered. Raises when it must be redelivered."""
        msg = RetryMessage.model_validate_json(body)
        retries: RetryQueue = self.s.retries
        event = msg.event if msg.event is not None else await self.s.deadletters.get_payload(
            msg.tenantId, str(msg.payloadRef))
        config = await self.s.configs.get(msg.tenantId)
        dest_cfg = next((d for d in config.destinations if d.type == msg.destination and d.enabled), None)
        stats = BatchStats()
        ts = stats.tenant(msg.tenantId)
        if dest_cfg is None:
            outcome = await self.dead_letter(msg, event, "destination not configured", msg.attempt - 1, stats)
        elif not msg.transient:
            outcome = await self.dead_letter(msg, event, "non-transient error", msg.attempt, stats)
        elif msg.attempt > dest_cfg.retry.attempts:  # a policy with no queue retries (attempts: 0)
            outcome = await self._exhausted(msg, event, config, msg.attempt - 1, stats)
        else:
            ev = Event.model_validate(event)
            ts.count("retry")
            [d] = await self.s.pipeline.deliver(msg.destination, config, [ev], attempts=1, stats=ts)
            if d.status == "delivered":
                ts.count(f"d:{msg.destination}:ok")
                outcome = "delivered"
            else:
                msg = msg.model_copy(update={"lastError": d.error, "transient": d.transient})
                policy = dest_cfg.retry
                if d.transient and msg.attempt < policy.attempts:
                    nxt = msg.model_copy(update={"attempt": msg.attempt + 1})
                    await retries.send(nxt, policy.delay(msg.attempt + 1, random.random()))
                    # this attempt's retry and failure count too
                    await service_stats.record_outside_pipeline(self.s.metrics, stats)
                    return "requeued"  # the payload row (if any) stays for the next attempt
                if d.transient:
                    outcome = await self._exhausted(msg, event, config, msg.attempt, stats)
                else:
                    outcome = await self.dead_letter(msg, event, "non-transient error", msg.attempt, stats)
        if msg.payloadRef:
            await self.s.deadletters.delete_payload(msg.tenantId, msg.payloadRef)
        await service_stats.record_outside_pipeline(self.s.metrics, stats)
        return outcome

    async def _exhausted(self, msg: RetryMessage, event: dict[str, Any], config: StreamConfig, attempts: int,
                         stats: BatchStats) -> str:
        """Retries used up on transient failures. A transient failure can hide a write that landed
        (the connection dropped after the command ran): a destination that can tell (`landed`) is
        asked first, so such an event counts as delivered instead of being dead-lettered."""
        dest = self.s.destinations.get(msg.destination)
        check = getattr(dest, "landed", None)
        if check is not None:
            dest_cfg = next(d for d in config.destinations if d.type == msg.destination)
            try:
                [done] = await check([Event.model_validate(event)], dest_cfg.options, config)
            except Exception as exc:  # noqa: BLE001 - cannot tell: dead-letter it
                log.warning("could not check %s for a landed write: %s", msg.destination, type(exc).__name__)
                done = False
            if done:
                stats.tenant(msg.tenantId).count(f"d:{msg.destination}:ok")
                return "delivered"
        return await self.dead_letter(msg, event, "retries exhausted", attempts, stats)

    async def dead_letter(self, msg: RetryMessage, event: dict[str, Any], reason: str, attempts: int,
                          stats: BatchStats) -> str:
        row = await self.s.deadletters.record_delivery(
            msg.tenantId, msg.destination, event, reason, attempts=attempts, last_error=msg.lastError,
            first_failure_at=msg.firstFailureAt)
        stats.tenant(msg.tenantId).deadletter(msg.destination)
        log.warning("dead-lettered %s for %s at %s: %s", event.get("eventId"), msg.tenantId, msg.destination, reason)
        if not is_system_event(event):  # a dead-lettered system event raises nothing further
            await emit_system_error(
                self.s.pipeline, msg.tenantId, msg.destination, reason, [str(event.get("eventId"))],
                extra={"deadLetterId": row["RowKey"], "attempts": attempts,
                       "lastError": (msg.lastError or "")[:1000], "eventType": event.get("eventType")},
            )
        return "deadlettered"
