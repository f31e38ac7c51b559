"""Storage queue triggers, with the host's semantics (host.json `extensions.queues`).

For each queue-triggered function: poll the queue named in the binding (already %SETTING%-resolved)
on the account of the binding's `connection` setting (a connection string, or
`<connection>__queueServiceUri` with a credential), with a polling interval that backs off to
`maxPollingInterval` while the queue is empty. Each message is decoded (`messageEncoding`,
base64 by default), handed to the function as a real `func.QueueMessage`, and deleted when the
function returns. When it raises, the message is made visible again after `visibilityTimeout`
for redelivery; once its dequeue count reaches `maxDequeueCount` (default 5) it moves to
`<queue>-poison`, as the host does.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage  # the worker's own type (dequeue count, times)
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from devhost.app_loader import ROOT, FunctionSpec
from devhost.invoke import Context, invoke

log = logging.getLogger("devhost.queue")

RECEIVE_VISIBILITY_SECONDS = 600  # the host keeps a message invisible while its function runs


def _timespan_seconds(value: Any, default: float) -> float:
    """host.json TimeSpan "hh:mm:ss[.fff]" -> seconds."""
    if not isinstance(value, str):
        return default
    parts = value.split(":")
    try:
        h, m, s = (float(p) for p in parts) if len(parts) == 3 else (0.0, 0.0, float(value))
    except ValueError:
        return default
    return h * 3600 + m * 60 + s


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 2.0  # the host uses 1 min (2 s under the development environment)
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path | None = None) -> "QueueOptions":
        path = path or ROOT / "host.json"
        cfg: dict[str, Any] = {}
        if path.exists():
            cfg = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        return cls(
            batch_size=int(cfg.get("batchSize", 16)),
            max_dequeue_count=int(cfg.get("maxDequeueCount", 5)),
            visibility_timeout=_timespan_seconds(cfg.get("visibilityTimeout"), 0.0),
            max_polling_interval=_timespan_seconds(cfg.get("maxPollingInterval"), 2.0),
            message_encoding=str(cfg.get("messageEncoding", "base64")).lower(),
        )


def queue_client(connection: str, queue: str) -> QueueClient:
    """The binding's `connection` is a setting name: a connection string, or an identity-based prefix."""
    name = connection or "AzureWebJobsStorage"
    value = os.environ.get(name)
    if value:
        return QueueClient.from_connection_string(value, queue)
    uri = os.environ.get(f"{name}__queueServiceUri")
    if uri:
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

        return QueueClient(uri, queue, credential=DefaultAzureCredential())
    raise KeyError(f"queue trigger connection {name!r}: set {name} or {name}__queueServiceUri")


class QueueListener:
    """One queue-triggered function."""

    def __init__(self, spec: FunctionSpec, options: QueueOptions) -> None:
        self.spec = spec
        self.options = options
        self.queue_name = str(spec.trigger["queueName"])
        self.connection = str(spec.trigger.get("connection") or "")
        self.client = queue_client(self.connection, self.queue_name)
        self.poison = queue_client(self.connection, self.queue_name + "-poison")

    async def ensure_queue(self) -> None:
        try:
            await self.client.create_queue()
        except ResourceExistsError:
            pass

    def _body(self, content: Any) -> bytes:
        raw = content if isinstance(content, bytes) else str(content).encode()
        if self.options.message_encoding == "base64":
            return base64.b64decode(raw, validate=True)
        return raw

    async def run_once(self) -> int:
        """Receive one batch and process it; returns the number of messages seen."""
        msgs = []
        pager = self.client.receive_messages(messages_per_page=self.options.batch_size,
                                             visibility_timeout=RECEIVE_VISIBILITY_SECONDS,
                                             max_messages=self.options.batch_size)
        async for m in pager:
            msgs.append(m)
        await asyncio.gather(*(self._process(m) for m in msgs))
        return len(msgs)

    async def _process(self, m: Any) -> None:
        try:
            body = self._body(m.content)
        except (binascii.Error, ValueError):
            log.error("message %s on %s is not %s; moving it to the poison queue", m.id, self.queue_name,
                      self.options.message_encoding)
            await self._poison(m)
            return
        msg = QueueMessage(id=m.id, body=body, dequeue_count=m.dequeue_count,
                                expiration_time=m.expires_on, insertion_time=m.inserted_on,
                                time_next_visible=m.next_visible_on, pop_receipt=m.pop_receipt)
        try:
            await invoke(self.spec, msg, Context(self.spec.name))
        except Exception:  # noqa: BLE001 - as the host: log, then redeliver or poison
            log.exception("function %s failed on message %s (dequeue count %s)", self.spec.name, m.id,
                          m.dequeue_count)
            if m.dequeue_count >= self.options.max_dequeue_count:
                await self._poison(m)
            else:
                await self.client.update_message(m, pop_receipt=m.pop_receipt,
                                                 visibility_timeout=int(self.options.visibility_timeout))
            return
        await self.client.delete_message(m, pop_receipt=m.pop_receipt)

    async def _poison(self, m: Any) -> None:
        try:
            await self.poison.create_queue()
        except ResourceExistsError:
            pass
        await self.poison.send_message(m.content)
        await self.client.delete_message(m, pop_receipt=m.pop_receipt)
        log.warning("message %s moved to %s-poison", m.id, self.queue_name)

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.05
        while not stop.is_set():
            try:
                n = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - storage down: keep polling, slower
                log.warning("polling %s failed: %s", self.queue_name, type(exc).__name__)
                n = 0
            delay = 0.05 if n else min(self.options.max_polling_interval, delay * 2)
            if not n:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def close(self) -> None:
        await self.client.close()
        await self.poison.close()


class QueueDriver:
    trigger_type = "queueTrigger"

    def __init__(self, specs: list[FunctionSpec], options: QueueOptions | None = None) -> None:
        self.options = options or QueueOptions.from_host_json()
        self.listeners = [QueueListener(s, self.options) for s in specs]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for listener in self.listeners:
            try:
                await listener.ensure_queue()
            except Exception as exc:  # noqa: BLE001 - storage not up yet: the loop keeps trying
                log.warning("queue %s not created: %s", listener.queue_name, type(exc).__name__)
            self._tasks.append(asyncio.create_task(listener.run(self._stop)))
            log.info("queue trigger %s on %s", listener.spec.name, listener.queue_name)

    async def drain(self, max_rounds: int = 1000) -> int:
        """Process visible messages until a poll finds none (tests, one-shot runs)."""
        total = 0
        for _ in range(max_rounds):
            seen = sum([await listener.run_once() for listener in self.listeners])
            total += seen
            if not seen:
                break
        return total

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for listener in self.listeners:
            await listener.close()
