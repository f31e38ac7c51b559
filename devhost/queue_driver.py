"""Queue triggers on Azurite (or any Storage account), behaving like the host's queue listener.

Per function: poll `queueName` (from the `connection` setting's connection string), up to
`batchSize` messages at a time, invisible while they run; a success deletes the message, a
failure makes it visible again after `visibilityTimeout`, and once its dequeue count reaches
`maxDequeueCount` it moves to `<queue>-poison`. Empty polls back off exponentially up to
`maxPollingInterval` (capped at 2 s here: a developer waits for it). Settings come from host.json
`extensions.queues`, with the host's defaults; `messageEncoding` base64 (default) or none.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

from devhost.app_loader import ROOT, FunctionSpec
from devhost.invoke import Context, invoke
from devhost.workers import WorkerTasks

log = logging.getLogger("devhost.queue")

MIN_POLL_SECONDS = 0.1
LOCAL_MAX_POLL_SECONDS = 2.0
LEASE_SECONDS = 600  # invisible while running (the host renews its lease; functions time out at 5 min)


def timespan_seconds(value: str | None) -> float:
    """host.json TimeSpan `hh:mm:ss[.fff]` -> seconds."""
    if not value:
        return 0.0
    h, m, sec = str(value).split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout_s: float = 0.0
    max_poll_s: float = 60.0
    encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path = ROOT / "host.json") -> "QueueOptions":
        queues: dict[str, Any] = {}
        if path.exists():
            queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        return cls(
            batch_size=int(queues.get("batchSize", 16)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout_s=timespan_seconds(queues.get("visibilityTimeout", "00:00:00")),
            max_poll_s=timespan_seconds(queues.get("maxPollingInterval", "00:01:00")) or 60.0,
            encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )


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
        return (QueueClient.from_connection_string(value, queue_name),
                QueueClient.from_connection_string(value, f"{queue_name}-poison"), None)
    uri = env.get(f"{name}__queueServiceUri")
    if uri:
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - identity-based only

        credential = DefaultAzureCredential()
        return (QueueClient(uri, queue_name, credential=credential),
                QueueClient(uri, f"{queue_name}-poison", credential=credential), credential)
    raise KeyError(f"queue trigger {spec.name}: set {name} (connection string) or {name}__queueServiceUri")


class QueueWorker:
    def __init__(self, spec: FunctionSpec, options: QueueOptions) -> None:
        self.spec = spec
        self.options = options
        self.queue_name = str(spec.trigger["queueName"])
        self.queue, self.poison, self._credential = queue_clients(spec, self.queue_name)
        self.invocations = 0

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
        try:
            await invoke(self.spec, msg, Context(self.spec.name))
        except Exception:
            log.exception("%s failed on message %s (dequeue count %d)", self.spec.name, message.id,
                          message.dequeue_count)
            if message.dequeue_count >= self.options.max_dequeue_count:
                await self._to_poison(message)
            else:
                await self.queue.update_message(message, visibility_timeout=int(self.options.visibility_timeout_s))
            return
        await self.queue.delete_message(message)

    async def poll_once(self) -> int:
        try:
            messages = [m async for m in self.queue.receive_messages(
                max_messages=self.options.batch_size, visibility_timeout=LEASE_SECONDS)]
        except ResourceNotFoundError:
            return 0  # nothing has been sent yet
        await asyncio.gather(*(self.handle(m) for m in messages))
        return len(messages)

    async def run(self, stopping: asyncio.Event) -> None:
        delay = MIN_POLL_SECONDS
        cap = min(self.options.max_poll_s, LOCAL_MAX_POLL_SECONDS)
        while not stopping.is_set():
            try:
                got = await self.poll_once()
            except AzureError as exc:
                log.warning("%s: queue %s unavailable: %s", self.spec.name, self.queue_name, type(exc).__name__)
                got = 0
            if got:
                delay = MIN_POLL_SECONDS
                continue
            try:
                await asyncio.wait_for(stopping.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, cap)

    async def close(self) -> None:
        await self.queue.close()
        await self.poison.close()
        if self._credential is not None:
            await self._credential.close()


class QueueDriver:
    trigger_type = "queueTrigger"

    def __init__(self, specs: list[FunctionSpec], options: QueueOptions | None = None) -> None:
        self.options = options or QueueOptions.from_host_json()
        self.workers = [QueueWorker(s, self.options) for s in specs]
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
