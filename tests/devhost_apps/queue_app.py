"""A minimal function app for the devhost queue driver tests: records what it gets (body, dequeue
count, when), fails on 'boom', runs past any short functionTimeout on 'late', and holds 'hold'
messages until the test releases them (GATE)."""
from __future__ import annotations

import asyncio
import time

import azure.functions as func

app = func.FunctionApp()
SEEN: list[tuple[bytes, int, float]] = []
GATE: asyncio.Semaphore | None = None  # set by a test; each 'hold' message takes one permit to finish


@app.function_name("record")
@app.queue_trigger(arg_name="msg", queue_name="%TEST_QUEUE%", connection="TEST_STORAGE")
async def record(msg: func.QueueMessage) -> None:
    body = msg.get_body()
    SEEN.append((body, msg.dequeue_count, time.monotonic()))
    if body == b"boom":
        raise RuntimeError("boom")
    if body == b"late":
        await asyncio.sleep(30)
    if body == b"hold" and GATE is not None:
        await GATE.acquire()
