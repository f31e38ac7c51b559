"""A minimal function app for the devhost queue driver tests: records what it gets, fails on 'boom'."""
from __future__ import annotations

import azure.functions as func

app = func.FunctionApp()
SEEN: list[tuple[bytes, int]] = []


@app.function_name("record")
@app.queue_trigger(arg_name="msg", queue_name="%TEST_QUEUE%", connection="TEST_STORAGE")
async def record(msg: func.QueueMessage) -> None:
    body = msg.get_body()
    SEEN.append((body, msg.dequeue_count))
    if body == b"boom":
        raise RuntimeError("boom")
