"""A minimal function app for the devhost HTTP driver tests: answers with what its function was handed
(the body byte for byte; the query parameters and headers)."""
from __future__ import annotations

import asyncio
import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.function_name("echo")
@app.route(route="echo", methods=["POST"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), mimetype="application/octet-stream")


@app.function_name("inspect")
@app.route(route="inspect", methods=["GET", "POST"])
def inspect(req: func.HttpRequest) -> func.HttpResponse:
    """What the function was handed besides the body: query parameters, headers, the body's length."""
    seen = {"params": dict(req.params), "headers": dict(req.headers), "body": len(req.get_body())}
    return func.HttpResponse(json.dumps(seen), mimetype="application/json")


@app.function_name("slow")
@app.route(route="slow", methods=["GET"])
async def slow(req: func.HttpRequest) -> func.HttpResponse:
    """Answers after `?s=` seconds: the runner's functionTimeout tests."""
    await asyncio.sleep(float(req.params.get("s", "0")))
    return func.HttpResponse("done")
