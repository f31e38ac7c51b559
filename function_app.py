"""Azure Functions entry points (Python v2 model). Triggers only: decode -> call shared -> encode.

Every HTTP function goes through `shared.http.functions_adapter.serve` (one request adapter);
the handlers and the route table live in `shared/api/`.
"""
from __future__ import annotations

import azure.functions as func

from shared import monitor, telemetry
from shared.api import audit, events, fallback, health as health_api, metrics, openapi as openapi_api, streamconfig
from shared.http.functions_adapter import serve
from shared.settings import get_settings

# Once per worker process, before any invocation: telemetry is process-wide (exporter threads and
# a handler on the `grc` logger), unlike the per-event-loop service container.
telemetry.configure(get_settings())

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
ANONYMOUS = func.AuthLevel.ANONYMOUS


@app.function_name("health")
@app.route(route="health", methods=["GET"], auth_level=ANONYMOUS)
async def health(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, health_api.health, context)


@app.function_name("openapi")
@app.route(route="openapi.json", methods=["GET"], auth_level=ANONYMOUS)
async def openapi(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, openapi_api.openapi, context)


@app.function_name("publish_event")
@app.route(route="events", methods=["POST"])
async def publish_event(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, events.publish_event, context)


@app.function_name("publish_events_bulk")
@app.route(route="events/bulk", methods=["POST"])
async def publish_events_bulk(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, events.publish_bulk, context)


@app.function_name("list_events")
@app.route(route="events/{tenantId}", methods=["GET"])
async def list_events(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, events.list_events, context)


@app.function_name("get_metrics")
@app.route(route="metrics/{tenantId}", methods=["GET"])
async def get_metrics(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, metrics.get_metrics, context)


@app.function_name("get_stream_config")
@app.route(route="stream-config/{tenantId}", methods=["GET"])
async def get_stream_config(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, streamconfig.get_stream_config, context)


@app.function_name("put_stream_config")
@app.route(route="stream-config/{tenantId}", methods=["PUT"])
async def put_stream_config(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, streamconfig.put_stream_config, context)


@app.function_name("get_audit")
@app.route(route="audit/{tenantId}", methods=["GET"])
async def get_audit(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, audit.get_audit, context)


# SYSTEM_PERFORMANCE / DATA_ANOMALY per tenant and the service-wide custom metrics, once a minute
# (idempotent per tenant-minute across instances and past-due runs).
@app.function_name("monitor")
@app.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False, use_monitor=False)
async def monitor_timer(timer: func.TimerRequest, context: func.Context) -> None:
    await monitor.on_timer(timer, context)


# Lowest route precedence: answers 405 (known path, wrong method) or 404 as problem details.
@app.function_name("not_matched")
@app.route(route="{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
           auth_level=ANONYMOUS)
async def not_matched(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await serve(req, fallback.not_matched, context)
