"""Queue triggers on Azurite (or any Storage account), behaving like the host's queue listener.

The contract kept here is the Functions host's, with its documented host.json defaults
(`extensions.queues`, Azure Functions "Azure Queue storage trigger and bindings", host.json settings;
QueuesOptions of Microsoft.Azure.WebJobs.Extensions.Storage.Queues 5.x):
- `messageEncoding` "base64" (default; or "none"): a message's text is base64 and the function gets
  the decoded bytes. A message that does not decode can never succeed: the extension's
  MessageDecodingFailed handler moves it to the poison queue at once, unchanged (azure-sdk-for-net,
  Microsoft.Azure.WebJobs.Extensions.Storage.Queues/src/QueueServiceClientProvider.cs); so does this driver.
- `batchSize` 16 (1-32): messages fetched per request.
- `newBatchThreshold` N*batchSize/2 (N = vCPUs on App Service/Premium, 1 on Consumption; here 1):
  a new batch is fetched whenever the number of messages still being processed is at or below it,
  so at most batchSize + newBatchThreshold run at once per function.
- `maxDequeueCount` 5: a failed invocation whose message has been dequeued that many times moves
  the message (content as is) to `<queue>-poison`; otherwise the message becomes visible again
  after `visibilityTimeout` (default 00:00:00) for the next attempt (QueueProcessor.CompleteProcessingMessageAsync).
- `maxPollingInterval` 00:01:00: empty polls back off exponentially from 100 ms up to it (capped at
  2 s here: a developer waits for it).
- A storage request that fails is retried as the host's queue clients retry it: the extension builds
  them with default client options (QueueServiceClientProvider, StorageClientProvider.CreateClientOptions),
  so Azure.Core's RetryOptions hold: 3 retries, exponential from 0.8 s, each delay +-20 % (RetryPolicy):
  about 0.8, 1.6 and 3.2 s (`HostRetry`). The Python Queue SDK's own default waits 18, 24 and 42 s.
While a message runs it is invisible: leased for 10 minutes, as the host does, and the lease renewed
at half-time while the function runs. A dequeue whose answer is lost (storage dies mid-request)
leaves its messages leased: they come back when the lease ends (at-least-once). `lease_seconds`
shortens the lease for tests that kill storage (`python -m devhost --queue-lease-seconds`).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
# The async retry policy is exported by the SDK only from its private module (the public
# ExponentialRetry is the sync one, which an aio client cannot run).
from azure.storage.queue._shared.policies_async import ExponentialRetry
from azure.storage.queue.aio import QueueClient

from devhost.app_loader import ROOT, FunctionSpec
from devhost.host_config import host_config, lookup
from devhost.invoke import Context, invoke
from devhost.retry import timespan_seconds
from devhost.workers import WorkerTasks

log = logging.getLogger("devhost.queue")

MIN_POLL_SECONDS = 0.1
LOCAL_MAX_POLL_SECONDS = 2.0
LEASE_SECONDS = 600  # the host's lease on a running message, renewed at half-time
RENEWAL_GRACE_SECONDS = 5.0  # how long an invocation's end waits for a renewal already sent


# The host's documented defaults (see the module docstring).
DEFAULT_BATCH_SIZE = 16
MAX_BATCH_SIZE = 32
DEFAULT_MAX_DEQUEUE_COUNT = 5
DEFAULT_VISIBILITY_TIMEOUT = "00:00:00"
DEFAULT_MAX_POLLING_INTERVAL = "00:01:00"


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = DEFAULT_BATCH_SIZE
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT
    visibility_timeout_s: float = 0.0
    max_poll_s: float = 60.0
    encoding: str = "base64"
    new_batch_threshold: int = DEFAULT_BATCH_SIZE // 2

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"extensions.queues.batchSize must be 1-{MAX_BATCH_SIZE}, not {self.batch_size}")
        if self.new_batch_threshold < 0 or self.max_dequeue_count < 1:
            raise ValueError("extensions.queues: newBatchThreshold >= 0 and maxDequeueCount >= 1")
        if self.encoding not in ("base64", "none"):
            raise ValueError(f"extensions.queues.messageEncoding must be base64 or none, not {self.encoding!r}")

    @classmethod
    def from_host_json(cls, path: Path = ROOT / "host.json") -> "QueueOptions":
        # extensions.queues, app settings over it (devhost/host_config.py): names in any case, values
        # from a setting are strings.
        queues = lookup(host_config(path), "extensions", "queues", default={})

        def get(name: str, default: Any) -> Any:
            return lookup(queues, name, default=default)

        batch = int(get("batchSize", DEFAULT_BATCH_SIZE))
        return cls(
            batch_size=batch,
            max_dequeue_count=int(get("maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT)),
            visibility_timeout_s=timespan_seconds(get("visibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT)),
            max_poll_s=timespan_seconds(get("maxPollingInterval", DEFAULT_MAX_POLLING_INTERVAL)) or 60.0,
            encoding=str(get("messageEncoding", "base64")).lower(),
            new_batch_threshold=int(get("newBatchThreshold", batch // 2)),
        )


class HostRetry(ExponentialRetry):
    """The host's retries of a queue request (module docstring): Azure.Core's RetryOptions defaults."""

    RETRIES = 3
    DELAY_SECONDS = 0.8
    MAX_DELAY_SECONDS = 60.0

    def __init__(self) -> None:
        super().__init__(retry_total=self.RETRIES)

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        # `count` is the number of the retry about to be made (1 for the first): the SDK increments it
        # before it sleeps. Azure.Core: min(2^(attempt-1) * delay * U(0.8, 1.2), max delay).
        delay = self.DELAY_SECONDS * 2 ** (max(1, settings["count"]) - 1) * random.uniform(0.8, 1.2)
        return min(delay, self.MAX_DELAY_SECONDS)


def queue_clients(spec: FunctionSpec, queue_name: str,
                  env: dict[str, str] | None = None) -> tuple[QueueClient, QueueClient, Any]:
    """(queue, poison queue, credential to close or None) clients for the binding's `connection`, resolved as the host does: the
    setting itself is a connection string; else `<connection>__queueServiceUri` is an identity-based
    connection, which outside Azure signs in with the developer's identity ("When run in other
    contexts, such as local development, your developer identity is used instead", Functions docs,
    identity-based connections), here DefaultAzureCredential."""
    env = dict(os.environ) if env is None else env
    name = spec.trigger.get("connection") or "AzureWebJobsStorage"
    value = env.get(name) or env.get(f"AzureWebJobs{name}")
    if value:
        return (QueueClient.from_connection_string(value, queue_name, retry_policy=HostRetry()),
                QueueClient.from_connection_string(value, f"{queue_name}-poison", retry_policy=HostRetry()),
                None)
    uri = env.get(f"{name}__queueServiceUri")
    if uri:
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - identity-based only

        credential = DefaultAzureCredential()
        return (QueueClient(uri, queue_name, credential=credential, retry_policy=HostRetry()),
                QueueClient(uri, f"{queue_name}-poison", credential=credential, retry_policy=HostRetry()),
                credential)
    raise KeyError(f"queue trigger {spec.name}: set {name} (connection string) or {name}__queueServiceUri")


class QueueWorker:
    def __init__(self, spec: FunctionSpec, options: QueueOptions, lease_seconds: float = LEASE_SECONDS) -> None:
        self.spec = spec
        self.options = options
        self.lease_seconds = max(2, int(lease_seconds))
        self.queue_name = str(spec.trigger["queueName"])
        # Raw text both ways: the driver decodes as the host does, and a poisoned message is
        # copied as it is (still base64), as the host copies it.
        self.queue, self.poison, self._credential = queue_clients(spec, self.queue_name)
        self.invocations = 0
        self.succeeded = 0
        self.failed = 0
        self.poisoned = 0
        self.running = 0  # messages being processed now
        self.max_running = 0

    def _body(self, content: str) -> bytes:
        if self.options.encoding == "base64":
            return base64.b64decode(content, validate=True)
        return content.encode()

    async def _to_poison(self, message: Any) -> None:
        try:
            await self.poison.create_queue()
        except ResourceExistsError:
            pass
        await self.poison.send_message(message.content)
        await self.queue.delete_message(message)
        self.poisoned += 1
        log.error("%s: message %s moved to %s-poison after %d attempts", self.spec.name, message.id,
                  self.queue_name, message.dequeue_count)

    async def handle(self, message: Any) -> None:
        try:
            body = self._body(message.content)
        except (binascii.Error, ValueError):
            log.error("%s: message %s is not %s; poison", self.spec.name, message.id, self.options.encoding)
            await self._to_poison(message)
            return
        msg = QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                           expiration_time=message.expires_on, insertion_time=message.inserted_on,
                           time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
        self.invocations += 1
        done = asyncio.Event()
        renewing = asyncio.create_task(self._renew(message, done))
        try:
            await invoke(self.spec, msg, Context(self.spec.name))
            ok = True
        except Exception:
            ok = False
            log.exception("%s failed on message %s (dequeue count %d)", self.spec.name, message.id,
                          message.dequeue_count)
        finally:
            await self._end_renewal(renewing, done)
        if ok:
            self.succeeded += 1
            await self.queue.delete_message(message)
            return
        self.failed += 1
        if message.dequeue_count >= self.options.max_dequeue_count:
            await self._to_poison(message)
        else:
            await self.queue.update_message(message, visibility_timeout=int(self.options.visibility_timeout_s))

    async def _renew(self, message: Any, done: asyncio.Event) -> None:
        """Keep the message leased while the function runs (the host renews at half the lease)."""
        while True:
            try:
                await asyncio.wait_for(done.wait(), self.lease_seconds / 2)
                return
            except TimeoutError:
                pass
            try:
                renewed = await self.queue.update_message(message, visibility_timeout=self.lease_seconds)
            except AzureError as exc:  # storage down: try again at the next half-lease
                log.warning("%s: lease of message %s not renewed: %s", self.spec.name, message.id, type(exc).__name__)
                continue
            message.pop_receipt = renewed.pop_receipt  # settling needs the newest receipt
            message.next_visible_on = renewed.next_visible_on

    @staticmethod
    async def _end_renewal(task: asyncio.Task[None], done: asyncio.Event) -> None:
        """Stop renewing, letting a renewal already sent finish. Cancelled mid-request, the queue may
        have taken it (a new pop receipt) while the message keeps the old one: settling with that
        fails, and the message would run again when its lease ends. A renewal storage does not
        answer is cancelled after RENEWAL_GRACE_SECONDS (its SDK retries run for over a minute);
        settling then fails too, and the message comes back when its lease ends (at-least-once)."""
        done.set()
        try:
            await asyncio.wait_for(task, RENEWAL_GRACE_SECONDS)
        except TimeoutError:  # wait_for cancelled it
            pass

    async def _run_one(self, message: Any) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.handle(message)
        except AzureError as exc:  # settling the message failed (storage down): its lease runs out, it comes back
            log.warning("%s: message %s not settled: %s", self.spec.name, message.id, type(exc).__name__)
        except Exception:  # noqa: BLE001 - one message must not stop the listener
            log.exception("%s: message %s not settled", self.spec.name, message.id)
        finally:
            self.running -= 1

    async def receive(self) -> list[Any]:
        """One batch: up to `batchSize` visible messages, leased while they run."""
        # One Get Messages request for the whole batch, as the host's listener makes. The SDK's
        # `max_messages` would dequeue one message per request until the queue is empty: storage
        # failing between two of those requests strands the messages already leased for the lease.
        pages = self.queue.receive_messages(
            messages_per_page=self.options.batch_size, visibility_timeout=self.lease_seconds).by_page()
        try:
            page = await anext(pages)
        except StopAsyncIteration:
            return []  # the queue is empty
        except ResourceNotFoundError:
            return []  # nothing has been sent yet
        return [m async for m in page]

    async def poll_once(self) -> int:
        """Fetch one batch and run it to the end (tests and tools; `run` overlaps batches)."""
        messages = await self.receive()
        await asyncio.gather(*(self._run_one(m) for m in messages))
        return len(messages)

    async def run(self, stopping: asyncio.Event) -> None:
        delay = MIN_POLL_SECONDS
        cap = min(self.options.max_poll_s, LOCAL_MAX_POLL_SECONDS)
        inflight: set[asyncio.Task[None]] = set()
        stop = asyncio.create_task(stopping.wait())
        try:
            while not stopping.is_set():
                if sum(not t.done() for t in inflight) > self.options.new_batch_threshold:
                    # Above newBatchThreshold: the next batch waits until enough messages finished.
                    await asyncio.wait({*inflight, stop}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                # A stop does not wait for a receive: with storage down the SDK retries it for over a
                # minute. Cancelled, a dequeue whose answer was on its way leaves its messages leased
                # until the lease ends, as when the host stops (at-least-once).
                receiving = asyncio.ensure_future(self.receive())
                await asyncio.wait({receiving, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    await asyncio.gather(receiving, return_exceptions=True)
                    break
                try:
                    messages = receiving.result()
                except AzureError as exc:
                    log.warning("%s: queue %s unavailable: %s", self.spec.name, self.queue_name, type(exc).__name__)
                    messages = []
                for m in messages:
                    task = asyncio.create_task(self._run_one(m))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                if messages:
                    delay = MIN_POLL_SECONDS
                    continue
                await asyncio.wait({stop}, timeout=delay)
                delay = min(delay * 2, cap)
        finally:
            stop.cancel()
            if inflight:  # messages already leased run to their end
                await asyncio.gather(*inflight, return_exceptions=True)

    async def close(self) -> None:
        await self.queue.close()
        await self.poison.close()
        if self._credential is not None:
            await self._credential.close()


class QueueDriver:
    trigger_type = "queueTrigger"

    def __init__(self, specs: list[FunctionSpec], options: QueueOptions | None = None,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self.options = options or QueueOptions.from_host_json()
        self.workers = [QueueWorker(s, self.options, lease_seconds) for s in specs]
        self._workers = WorkerTasks("queue")

    async def start(self) -> None:
        for w in self.workers:
            self._workers.spawn(w.spec.name, w.run)
            log.info("queue %s: %s", w.spec.name, w.queue_name)

    def function_names(self) -> list[str]:
        return [w.spec.name for w in self.workers]

    async def run_now(self, name: str, input_: str | None) -> None:
        """Run by hand (admin API): the input is the message body, as the host passes it."""
        worker = next(w for w in self.workers if w.spec.name == name)
        msg = QueueMessage(id="manual-" + uuid.uuid4().hex, body=(input_ or "").encode(), dequeue_count=1)
        worker.invocations += 1
        await invoke(worker.spec, msg, Context(worker.spec.name))

    async def stop(self) -> None:
        await self._workers.stop()
        for w in self.workers:
            await w.close()
