"""Azure Functions entry points (Python v2 model). Triggers only: decode -> call shared -> encode.

Every HTTP function goes through `shared.http.functions_adapter.serve` (one request adapter);
the handlers and the route table live in `shared/api/`.
"""
from __future__ import annotations

import azure.functions as func

from shared import jobs
from shared.api import audit, deadletters, events, fallback, health as health_api, history, metrics
from shared.api import openapi as openapi_api, streamconfig
from shared.http.functions_adapter import serve

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
ANONYMOUS = func.AuthLevel.ANONYMOUS


@app.function_name("health")
@app.route(route="health", methods=["GET"], auth_level=ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, health_api.health)


@app.function_name("openapi")
@app.route(route="openapi.json", methods=["GET"], auth_level=ANONYMOUS)
async def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, openapi_api.openapi)


@app.function_name("publish_event")
@app.route(route="events", methods=["POST"])
async def publish_event(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, events.publish_event)


@app.function_name("publish_events_bulk")
@app.route(route="events/bulk", methods=["POST"])
async def publish_events_bulk(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, events.publish_bulk)


@app.function_name("list_events")
@app.route(route="events/{tenantId}", methods=["GET"])
async def list_events(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, events.list_events)


@app.function_name("event_history")
@app.route(route="events/{tenantId}/history", methods=["GET"])
async def event_history(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, history.event_history)


@app.function_name("list_deadletters")
@app.route(route="deadletters/{tenantId}", methods=["GET"])
async def list_deadletters(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, deadletters.list_deadletters)


@app.function_name("replay_deadletters")
@app.route(route="deadletters/{tenantId}/replay", methods=["POST"])
async def replay_deadletters(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, deadletters.replay_deadletters)


# Failed deliveries parked by the pipeline: one retry each, re-enqueued with backoff, then dead-lettered.
@app.function_name("drain_retries")
@app.queue_trigger(arg_name="msg", queue_name="%RETRY_QUEUE%", connection="STORAGE_CONNECTION_STRING")
async def drain_retries(msg: func.QueueMessage) -> None:
    await jobs.process_retry_message(msg.get_body())


# Hourly: drop analytics hour partitions older than each tenant's retentionDays.
@app.function_name("purge_analytics")
@app.timer_trigger(arg_name="timer", schedule="0 17 * * * *", run_on_startup=False, use_monitor=True)
async def purge_analytics(timer: func.TimerRequest) -> None:
    await jobs.purge_analytics()


@app.function_name("get_metrics")
@app.route(route="metrics/{tenantId}", methods=["GET"])
async def get_metrics(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, metrics.get_metrics)


@app.function_name("get_stream_config")
@app.route(route="stream-config/{tenantId}", methods=["GET"])
async def get_stream_config(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, streamconfig.get_stream_config)


@app.function_name("put_stream_config")
@app.route(route="stream-config/{tenantId}", methods=["PUT"])
async def put_stream_config(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, streamconfig.put_stream_config)


@app.function_name("get_audit")
@app.route(route="audit/{tenantId}", methods=["GET"])
async def get_audit(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, audit.get_audit)


# Lowest route precedence: answers 405 (known path, wrong method) or 404 as problem details.
@app.function_name("not_matched")
@app.route(route="{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
           auth_level=ANONYMOUS)
async def not_matched(req: func.HttpRequest) -> func.HttpResponse:
    return await serve(req, fallback.not_matched)
