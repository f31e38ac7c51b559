"""Checks the deployment tests make from outside the running app: what function_app.py registers
(read from its source: the system tier imports no app code), the runner's log, the timers run by
hand, the retry queue drained."""
from __future__ import annotations

import ast
import json
import time
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from tests.system.harness import ROOT, App, Stack, wait_for

TRIGGERS = {"route": "httpTrigger", "queue_trigger": "queueTrigger", "timer_trigger": "timerTrigger",
            "cosmos_db_trigger": "cosmosDBTrigger"}


def registered_functions() -> dict[str, str]:
    """name -> trigger type of every function function_app.py registers: its decorated functions, and
    one HTTP function per route of the route table it registers as a blueprint (read from the
    sources: this tier does not import the app)."""
    out: dict[str, str] = {}
    assert "app.register_functions(http_functions(ROUTES))" in (ROOT / "function_app.py").read_text()
    for node in ast.walk(ast.parse((ROOT / "shared" / "api" / "routes.py").read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Route"
                and node.args and isinstance(node.args[0], ast.Constant)):
            out[node.args[0].value] = "httpTrigger"
    for node in ast.parse((ROOT / "function_app.py").read_text()).body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        name = trigger = None
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute):
                if dec.func.attr == "function_name":
                    name = ast.literal_eval(dec.args[0])
                elif dec.func.attr in TRIGGERS:
                    trigger = TRIGGERS[dec.func.attr]
        if name is not None:
            assert trigger is not None, f"{name}: trigger decorator not recognised"
            out[name] = trigger
    return out


def errors_in(log: str) -> list[str]:
    """The runner's log lines that say something went wrong (a function not loaded, an error)."""
    return [line for line in log.splitlines()
            if " ERROR " in line or "Traceback" in line or "not loaded" in line or " CRITICAL " in line]


def succeeded(app: App, name: str, timeout: float = 60.0) -> None:
    """Wait for the host's "Executed" line of function `name`; it must say Succeeded. Waited for, not
    read at once: what the function wrote (a stream entry, a table row) shows before its line does."""
    wait_for(lambda: f"Executed 'Functions.{name}' (" in app.log(), timeout, 0.3, f"{name} finished")
    assert f"Executed 'Functions.{name}' (Succeeded" in app.log(), errors_in(app.log())


def run_every_timer(app: App) -> None:
    """Run each timer by hand (the host's admin API) and wait for the host's "Executed" line."""
    for name, trigger in registered_functions().items():
        if trigger != "timerTrigger":
            continue
        app.run_function(name)
        succeeded(app, name)


def drain_a_parked_delivery(app: App, stack: Stack, env: dict[str, str], t: str, event: dict[str, Any]) -> None:
    """A parked delivery of `event` for a destination the tenant does not route to: drain_retries
    takes it off RETRY_QUEUE (base64, as the host reads queues) and dead-letters it into
    DEADLETTER_TABLE (PartitionKey = tenant, docs/delivery.md)."""
    message = {"v": 1, "tenantId": t, "destination": "kafka", "attempt": 1,
               "firstFailureAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "lastError": "test: parked by hand", "transient": True, "event": event}
    with QueueClient.from_connection_string(stack.storage, env["RETRY_QUEUE"],
                                            message_encode_policy=TextBase64EncodePolicy()) as q:
        try:
            q.create_queue()
        except ResourceExistsError:
            pass
        q.send_message(json.dumps(message))
    with TableClient.from_connection_string(stack.storage, env["DEADLETTER_TABLE"]) as table:
        def dead_lettered() -> bool:
            try:
                return any(table.query_entities("PartitionKey eq @t", parameters={"t": t}))
            except Exception:  # noqa: BLE001 - the table appears with the first dead letter
                return False

        wait_for(dead_lettered, 60, 0.5, "the parked delivery dead-lettered by drain_retries")
    succeeded(app, "drain_retries")
    wait_for(lambda: stack.queue_depth(env["RETRY_QUEUE"]) == 0, 30, what="retry queue drained")
