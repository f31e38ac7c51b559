"""Azure Functions entry points (Python v2 model). Triggers only: decode -> call shared -> encode.

The HTTP functions are the route table (`shared/api/routes.py`), registered as one blueprint: one
named function per route, each through the one request adapter. The queue, timer and Cosmos DB
triggers hand their input to `shared.app.jobs` (docs/change-capture.md).
"""
from __future__ import annotations

from typing import Any

import azure.functions as func

from shared.api.routes import ROUTES
from shared.app import jobs
from shared.app.gc_tuning import tune_for_throughput
from shared.changefeed.leases import LEASE_PREFIXES
from shared.changefeed.rules import Kind
from shared.core.bindings import connection, log_unset, setting
from shared.core.settings import get_settings
from shared.http.functions_adapter import http_functions
from shared.observability import telemetry

# Once per worker process, before any invocation: telemetry is process-wide (exporter threads and
# a handler on the `grc` logger), unlike the per-event-loop service container.
telemetry.configure(get_settings())
tune_for_throughput()  # after the imports, so start-up objects are frozen out of collections

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
STORAGE = connection("STORAGE_CONNECTION_STRING")  # the queue triggers' storage account
# Every HTTP function comes from the route table, the one registry /openapi.json is also built from.
app.register_functions(http_functions(ROUTES))


# Failed deliveries parked by the pipeline: one retry each, re-enqueued with backoff, then dead-lettered.
@app.function_name("drain_retries")
@app.queue_trigger(arg_name="msg", queue_name=setting("RETRY_QUEUE"), connection=STORAGE)
async def drain_retries(msg: func.QueueMessage, context: func.Context) -> None:
    with telemetry.invocation(context):
        await jobs.process_retry_message(msg.get_body())


# Backfills: one chunk of a job per message (docs/backfill.md). The job record is the checkpoint, so
# a message the host redelivers (a runner that died) resumes where the last checkpoint left off.
@app.function_name("run_backfill")
@app.queue_trigger(arg_name="msg", queue_name=setting("BACKFILL_QUEUE"), connection=STORAGE)
async def run_backfill(msg: func.QueueMessage, context: func.Context) -> None:
    with telemetry.invocation(context):
        await jobs.run_backfill(msg.get_body(), msg.id)


# Hourly: drop analytics hour partitions older than each tenant's retentionDays. A failed run (Table
# storage down) is run again by the host's retry policy (supported for timers), 10 s, 20 s, 40 s
# later, rather than an hour later; a run is idempotent, so a retry beside a slow run is harmless.
PURGE_RETRY: dict[str, Any] = {
    "strategy": "exponential_backoff", "max_retry_count": "3",
    "minimum_interval": "00:00:10", "maximum_interval": "00:01:00",
}


@app.function_name("purge_analytics")
@app.retry(**PURGE_RETRY)
@app.timer_trigger(arg_name="timer", schedule="0 17 * * * *", run_on_startup=False, use_monitor=True)
async def purge_analytics(timer: func.TimerRequest, context: func.Context) -> None:
    with telemetry.invocation(context):
        await jobs.purge_analytics()


# Hourly (at minute 37): drop dead letters recorded more than their tenant's retentionDays ago
# (shared/delivery/deadletters.py); failed runs retried as the analytics purge's.
@app.function_name("purge_deadletters")
@app.retry(**PURGE_RETRY)
@app.timer_trigger(arg_name="timer", schedule="0 37 * * * *", run_on_startup=False, use_monitor=True)
async def purge_deadletters(timer: func.TimerRequest, context: func.Context) -> None:
    with telemetry.invocation(context):
        await jobs.purge_deadletters()


# Hourly (at minute 47, apart from the other purges): drop vector-index documents older than each
# tenant's retentionDays (shared/vector/retention.py); failed runs retried as the analytics purge's.
@app.function_name("purge_vectors")
@app.retry(**PURGE_RETRY)
@app.timer_trigger(arg_name="timer", schedule="0 47 * * * *", run_on_startup=False, use_monitor=True)
async def purge_vectors(timer: func.TimerRequest, context: func.Context) -> None:
    with telemetry.invocation(context):
        await jobs.purge_vectors()


# SYSTEM_PERFORMANCE / DATA_ANOMALY per tenant and the service-wide custom metrics, once a minute
# (idempotent per tenant-minute across instances and past-due runs).
@app.function_name("monitor")
@app.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False, use_monitor=False)
async def monitor_timer(timer: func.TimerRequest, context: func.Context) -> None:
    with telemetry.invocation(context):
        await jobs.monitor_pass(past_due=timer.past_due)


# Destination `vector`: embed and index the events queued at publish (docs/vector-search.md).
# A failure raises: the host retries the message, then moves it to VECTOR_QUEUE-poison.
@app.function_name("index_vectors")
@app.queue_trigger(arg_name="msg", queue_name=setting("VECTOR_QUEUE"), connection=STORAGE)
async def index_vectors(msg: func.QueueMessage, context: func.Context) -> None:
    with telemetry.invocation(context):
        await jobs.index_vectors(msg.get_body())


# ---- change capture: one Cosmos DB trigger per monitored container ---------------------------
# All share the lease container, each with its own lease prefix. New leases start from the
# beginning (a first deployment backfills: documents older than the processor's start map to
# UPDATED with firstSeen, newer ones to CREATED; shared/changefeed/leases.py).
# While retries remain an unpublished batch raises (the host retries it with backoff); on the
# last attempt it is parked instead, because the host advances the lease either way.
CHANGEFEED_MAX_ITEMS = 100
CHANGEFEED_RETRY: dict[str, Any] = {
    "strategy": "exponential_backoff", "max_retry_count": "5",
    "minimum_interval": "00:00:02", "maximum_interval": "00:01:00",
}
COSMOS_TRIGGER: dict[str, Any] = {
    "arg_name": "docs", "connection": connection("COSMOS"),
    "database_name": setting("COSMOS_DB_DATABASE"), "lease_container_name": setting("COSMOS_LEASE_CONTAINER"),
    "max_items_per_invocation": CHANGEFEED_MAX_ITEMS,
    "start_from_beginning": True,
}


def _documents(docs: func.DocumentList) -> list[Any]:
    return [None if d is None else d.to_dict() for d in docs]


async def _on_changes(kind: Kind, docs: func.DocumentList, context: func.Context) -> None:
    retry = getattr(context, "retry_context", None)
    with telemetry.invocation(context):
        await jobs.on_change_batch(
            kind, _documents(docs),
            retry_count=getattr(retry, "retry_count", None), max_retry_count=getattr(retry, "max_retry_count", None),
        )


@app.function_name("changefeed_risks")
@app.retry(**CHANGEFEED_RETRY)
@app.cosmos_db_trigger(container_name=setting("COSMOS_RISKS_CONTAINER"),
                       lease_container_prefix=LEASE_PREFIXES[Kind.RISKS], **COSMOS_TRIGGER)
async def changefeed_risks(docs: func.DocumentList, context: func.Context) -> None:
    await _on_changes(Kind.RISKS, docs, context)


@app.function_name("changefeed_controls")
@app.retry(**CHANGEFEED_RETRY)
@app.cosmos_db_trigger(container_name=setting("COSMOS_CONTROLS_CONTAINER"),
                       lease_container_prefix=LEASE_PREFIXES[Kind.CONTROLS], **COSMOS_TRIGGER)
async def changefeed_controls(docs: func.DocumentList, context: func.Context) -> None:
    await _on_changes(Kind.CONTROLS, docs, context)


@app.function_name("changefeed_assessments")
@app.retry(**CHANGEFEED_RETRY)
@app.cosmos_db_trigger(container_name=setting("COSMOS_ASSESSMENTS_CONTAINER"),
                       lease_container_prefix=LEASE_PREFIXES[Kind.ASSESSMENTS], **COSMOS_TRIGGER)
async def changefeed_assessments(docs: func.DocumentList, context: func.Context) -> None:
    await _on_changes(Kind.ASSESSMENTS, docs, context)


@app.function_name("changefeed_compliance")
@app.retry(**CHANGEFEED_RETRY)
@app.cosmos_db_trigger(container_name=setting("COSMOS_COMPLIANCE_CONTAINER"),
                       lease_container_prefix=LEASE_PREFIXES[Kind.COMPLIANCE], **COSMOS_TRIGGER)
async def changefeed_compliance(docs: func.DocumentList, context: func.Context) -> None:
    await _on_changes(Kind.COMPLIANCE, docs, context)


@app.function_name("changefeed_policies")
@app.retry(**CHANGEFEED_RETRY)
@app.cosmos_db_trigger(container_name=setting("COSMOS_POLICIES_CONTAINER"),
                       lease_container_prefix=LEASE_PREFIXES[Kind.POLICIES], **COSMOS_TRIGGER)
async def changefeed_policies(docs: func.DocumentList, context: func.Context) -> None:
    await _on_changes(Kind.POLICIES, docs, context)


# Overdue assessments: idempotent across runs and instances (a marker per assessment and due date).
@app.function_name("assessments_overdue")
@app.timer_trigger(arg_name="timer", schedule=setting("OVERDUE_SCHEDULE"), run_on_startup=False,
                   use_monitor=True)
async def assessments_overdue(timer: func.TimerRequest, context: func.Context) -> None:
    with telemetry.invocation(context):
        await jobs.run_overdue_check()


# Last, once every binding has named its settings: the ones unset are logged as an error (the host
# skips those functions; GET /health reports them too).
log_unset()
