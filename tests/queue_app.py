"""A tiny function app for the queue driver's tests: fails on bodies starting with 'fail'."""
from __future__ import annotations

import azure.functions as func

app = func.FunctionApp()
SEEN: list[dict[str, object]] = []


@app.function_name("on_message")
@app.queue_trigger(arg_name="msg", queue_name="%TEST_QUEUE%", connection="STORAGE_CONNECTION_STRING")
async def on_message(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    SEEN.append({"id": msg.id, "body": body, "dequeue_count": msg.dequeue_count,
                 "inserted": msg.insertion_time, "pop_receipt": msg.pop_receipt})
    if body.startswith("fail"):
        raise RuntimeError("boom")
