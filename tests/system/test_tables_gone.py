"""Tables and queues deleted under a running app (README 'Outages'): every route answers as it does on
an empty table, never 500, and /health does not report the retry queue as failing.

The app creates its tables on first use (infra creates them in Azure; Azurite starts empty). A table
can still vanish while an instance runs: someone deletes it, or the local Azurite, which keeps its
data in memory, is restarted. The instance's table clients then point at nothing. Every route that
reads or writes a table must create it again and answer as it would on a new, empty table: a read
finds nothing, a write is stored. The app here has table names of its own, so deleting them touches
no other test; so do its queues.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from tests.system.checks import errors_in
from tests.system.harness import App, Stack, app_env, start_app, tenant

TABLE_SETTINGS = ("STREAM_CONFIG_TABLE", "ANALYTICS_TABLE", "DEADLETTER_TABLE", "AUDIT_TABLE", "BACKFILL_TABLE")
QUEUE_SETTINGS = ("RETRY_QUEUE", "BACKFILL_QUEUE", "VECTOR_QUEUE")


@pytest.fixture(scope="module")
def own_tables_app(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    suffix = uuid.uuid4().hex[:8]
    names = {s: f"gone{s.split('_')[0].lower()}{suffix}" for s in TABLE_SETTINGS}
    names.update({s: f"gone-{s.split('_')[0].lower()}-{suffix}" for s in QUEUE_SETTINGS})
    work: Path = tmp_path_factory.mktemp("tables-gone")
    # HEALTH_CACHE_SECONDS 0: /health checks now, after the deletion, not a result from before it
    env = app_env(stack, work, SYSTEM_PERFORMANCE_EVENTS="false", HEALTH_CACHE_SECONDS="0", **names)
    app = start_app(env, work)
    try:
        yield app
    finally:
        app.stop()


def _delete_tables(stack: Stack, app: App) -> None:
    with TableServiceClient.from_connection_string(stack.storage) as svc:
        for setting in TABLE_SETTINGS:
            try:
                svc.delete_table(app.env[setting])
            except ResourceNotFoundError:
                pass


def _delete_queues(stack: Stack, app: App) -> None:
    with stack.queues() as svc:
        for setting in QUEUE_SETTINGS:
            try:
                svc.delete_queue(app.env[setting])
            except ResourceNotFoundError:
                pass


def _config(t: str) -> dict[str, object]:
    return {"destinations": [{"type": "redis"}, {"type": "analytics"}]}


def _event(t: str) -> dict[str, object]:
    return {"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
            "entityId": "r-1", "data": {"score": 3}}


def test_every_table_route_answers_as_on_an_empty_table_after_the_tables_are_deleted(
        stack: Stack, own_tables_app: App) -> None:
    app = own_tables_app
    t = tenant("gone")
    r = app.put(f"/stream-config/{t}", tenants=[t], json=_config(t))
    assert r.status_code == 201, r.text
    r = app.post("/events", tenants=[t], json=_event(t))
    assert r.status_code == 201, r.text
    assert app.get(f"/audit/{t}", tenants=[t]).json()["items"], "the config write was audited"
    assert app.get("/health").status_code == 200  # its checks have made their clients

    _delete_tables(stack, app)

    # Reads: what an empty table holds (the config gone with its table: the default again).
    r = app.get(f"/stream-config/{t}", tenants=[t])
    assert r.status_code == 200 and r.json()["isDefault"] is True, r.text
    for path, key in ((f"/audit/{t}", "items"), (f"/deadletters/{t}", "deadLetters"),
                      (f"/backfills/{t}", "jobs"), (f"/events/{t}/history", "events")):
        r = app.get(path, tenants=[t])
        assert r.status_code == 200 and r.json()[key] == [], (path, r.status_code, r.text)

    # Writes, each the first call to meet its table gone: stored, as on a new table.
    _delete_tables(stack, app)
    r = app.put(f"/stream-config/{t}", tenants=[t], json=_config(t))
    assert r.status_code == 201, r.text
    r = app.post("/events", tenants=[t], json=_event(t))
    assert r.status_code == 201, r.text
    assert {d["destination"]: d["status"] for d in r.json()["destinations"]} == \
        {"redis": "delivered", "analytics": "delivered"}, r.text
    assert app.get(f"/stream-config/{t}", tenants=[t]).json()["version"] == 1
    audit = app.get(f"/audit/{t}", tenants=[t]).json()["items"]
    assert [(a["action"], a["before"]) for a in audit] == [("stream-config.put", None)], audit
    history = app.get(f"/events/{t}/history", tenants=[t]).json()["events"]
    assert [e["eventId"] for e in history] == [r.json()["eventId"]], history

    # An analytics write whose index row this instance wrote already: the table's absence shows in the
    # transaction of the event itself (TableTransactionError), which is still created again, not
    # dead-lettered.
    _delete_tables(stack, app)
    r = app.post("/events", tenants=[t], json=_event(t))
    assert r.status_code == 201 and r.json()["destinations"][1]["status"] == "delivered", r.text
    history = app.get(f"/events/{t}/history", tenants=[t]).json()["events"]
    assert [e["eventId"] for e in history] == [r.json()["eventId"]], history

    _delete_tables(stack, app)
    _delete_queues(stack, app)
    r = app.get("/health")
    assert r.status_code == 200, r.text
    assert {k: v["status"] for k, v in r.json()["dependencies"].items()
            if k in ("tables", "retryQueue", "analytics")} == \
        {"tables": "healthy", "retryQueue": "healthy", "analytics": "healthy"}, r.text
    assert not errors_in(app.log()), errors_in(app.log())
