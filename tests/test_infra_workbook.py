"""The operations workbook infra/ deploys (modules/workbook.bicep, infra/workbooks/operations.workbook.json):
as deployed (evaluated by tests/system/bicep.py, no compiler runs here) it is Workbook JSON with every
placeholder written in, its alert lines are the alert rules' thresholds, and every metric, dimension
and table its KQL names is one the code emits (the telemetry
catalogue, shared/observability/telemetry/catalogue.py) -- so the workbook cannot drift from the code."""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

import pytest

from shared.observability.telemetry.catalogue import METRICS_TABLE, emitted
from tests.kql_names import KqlError, Names, names
from tests.system.bicep import INFRA, Scope

SUB = "/subscriptions/00000000-0000-0000-0000-0000000000aa"
APPI = f"{SUB}/resourceGroups/rg-env1/providers/Microsoft.Insights/components/appi-env1"
STORAGE = f"{SUB}/resourceGroups/rg-env1/providers/Microsoft.Storage/storageAccounts/stenv1"
REQUIRED = {"environmentName": "env1", "location": "westeurope", "authAudience": "api-client-id"}
AI_LOGS, ARG, ARM = 0, 1, 12  # workbook queryType values: Logs (App Insights), Resource Graph, ARM endpoint


def deployed(**params: Any) -> tuple[Scope, Scope, dict[str, Any]]:
    from tests.system.bicep import Deployment

    main = Scope(INFRA / "main.bicep", {**REQUIRED, **params},
                 stand_ins={"monitoring.outputs.appInsightsId": APPI, "storage.outputs.id": STORAGE},
                 deployment=Deployment(subscription_id=SUB.rsplit("/", 1)[1]))
    wb = main.module("workbook")
    return main, wb, json.loads(wb.var("serializedData"))


@pytest.fixture(scope="module")
def workbook() -> dict[str, Any]:
    return deployed()[2]


def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        if item["type"] == 12:
            yield from walk(item["content"]["items"])


def parameters(wb: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for item in walk(wb["items"]) if item["type"] == 9 for p in item["content"]["parameters"]}


def queries(wb: dict[str, Any]) -> Iterator[tuple[str, int, str, dict[str, Any]]]:
    """(where, queryType, query, the item's content) of every query item and query-backed parameter."""
    for item in walk(wb["items"]):
        if item["type"] == 3:
            c = item["content"]
            yield item["name"], c["queryType"], c["query"], c
        elif item["type"] == 9:
            for p in item["content"]["parameters"]:
                if "query" in p:
                    yield f"parameter {p['name']}", p["queryType"], p["query"], p


def expand(query: str, params: dict[str, dict[str, Any]]) -> str:
    """The query as the workbook runs it, with sample values for its parameters; a parameter the
    workbook does not define fails (it would be sent to the service as literal text)."""
    samples = {("TimeRange", "grain"): "5m", ("TimeRange", "start"): "datetime(2026-01-01T00:00:00Z)",
               ("TimeRange", "end"): "datetime(2026-01-01T01:00:00Z)", ("TimeRange", None): "> ago(1h)",
               ("Tenant", None): "'*'"}

    def value(m: re.Match[str]) -> str:
        name, fmt = m.group(1), m.group(2)
        assert name in params, f"the query uses {{{name}}}, which the workbook does not define"
        if (name, fmt) in samples:
            return samples[(name, fmt)]
        assert fmt is None and params[name]["type"] == 1, f"no sample value for {m.group()}"
        return params[name]["value"]

    return re.sub(r"\{(\w+)(?::(\w+))?\}", value, query)


def problems(n: Names, catalogue: Any = None) -> list[str]:
    """What a query names that the code does not emit."""
    cat = catalogue or emitted()
    found = [f"table {t}" for t in sorted(n.tables - set(cat.tables))]
    found += [f"metric {m}" for m in sorted(n.metric_names - set(cat.metrics))]
    # A "grc." literal is a metric name, or a prefix of some (replace_string(name, "grc.events.", "")).
    found += [f"literal {s!r}" for s in sorted(n.grc_literals)
              if s not in cat.metrics and not (s.endswith(".") and any(m.startswith(s) for m in cat.metrics))]
    allowed: set[str] = set()
    for t in n.tables:
        allowed |= cat.dimensions(t, frozenset(n.metric_names & set(cat.metrics)) or None)
    found += [f"customDimensions.{d}" for d in sorted(n.dimensions - allowed)]
    return found


# ---- as deployed ----------------------------------------------------------------------------

def test_the_deployed_workbook_is_complete_workbook_json(workbook: dict[str, Any]) -> None:
    _, wb_scope, _ = deployed()
    text = wb_scope.var("serializedData")
    assert "__GRC_" not in text, "a placeholder was not written in"
    assert workbook["version"] == "Notebook/1.0"
    assert workbook["fallbackResourceIds"] == [APPI]
    assert wb_scope.property("workbook", "properties", "sourceId") == APPI.lower()
    assert wb_scope.property("workbook", "kind") == "shared"
    assert wb_scope.property("workbook", "properties", "category") == "workbook"


def test_alert_lines_are_the_alert_rules_thresholds() -> None:
    for params in ({}, {"alertErrorRate": "0.1", "alertDelaySeconds": 45, "alertMemoryPercent": 90}):
        main, _, wb = deployed(**params)
        alerts = main.module("alerts")
        p = parameters(wb)
        assert float(p["ErrorRateLine"]["value"]) == float(alerts.param("errorRate"))
        assert int(p["DelayLineMs"]["value"]) == alerts.param("delayMs")
        assert int(p["MemoryLine"]["value"]) == alerts.param("memoryPercent")
        assert int(p["MinDeliveries"]["value"]) == alerts.param("errorRateMinDeliveries")
    assert parameters(deployed()[2])["ErrorRateLine"]["value"] == "0.05"


def test_the_queue_tiles_read_the_retry_queue_infra_creates(workbook: dict[str, Any]) -> None:
    main = deployed()[0]
    retry = main.param("storageQueues")["retry"]
    # storage.bicep creates every queue of storageQueues, and its poison queue with it.
    assert "queues: [for q in items(storageQueues): q.value]" in (INFRA / "main.bicep").read_text()
    assert "name: '${q}-poison'" in (INFRA / "modules" / "storage.bicep").read_text()
    paths = sorted(json.loads(q)["path"] for _, kind, q, _ in queries(workbook) if kind == ARM)
    base = f"{STORAGE}/queueServices/default/queues/"
    assert paths == [base + retry, base + retry + "-poison"]


def test_fired_alerts_come_from_resource_graph_for_this_component(workbook: dict[str, Any]) -> None:
    [(where, query, content)] = [(w, q, c) for w, kind, q, c in queries(workbook) if kind == ARG]
    assert names(expand(query, parameters(workbook))).tables == {"alertsmanagementresources"}
    assert f'=~ "{APPI}"' in query, "alerts of this Application Insights resource (the rules' scope)"
    assert content["crossComponentResources"] == [SUB]


# ---- the queries name only what the code emits ---------------------------------------------

def test_every_query_names_only_what_the_code_emits(workbook: dict[str, Any]) -> None:
    params = parameters(workbook)
    seen: set[str] = set()
    checked = 0
    for where, kind, query, _ in queries(workbook):
        if kind != AI_LOGS:
            continue
        n = names(expand(query, params))
        assert n.tables, f"{where}: no table found"
        assert not problems(n), f"{where}: {problems(n)}"
        seen |= n.metric_names
        checked += 1
    assert checked >= 10, checked
    # What issue 15 asks the workbook to show, by the metric that carries it.
    assert {"grc.events.accepted", "grc.events.filtered", "grc.events.rejected", "grc.events.failed",
            "grc.deliveries.succeeded", "grc.deliveries.failed", "grc.retries.scheduled",
            "grc.deadletters.recorded", "grc.latency.end_to_end_ms", "grc.changefeed.delay_ms",
            "grc.instance.memory_percent"} <= seen


def test_per_tenant_and_service_wide(workbook: dict[str, Any]) -> None:
    """Every chart of tenant-scoped metrics follows the tenant picker ('All' = the whole service)."""
    params = parameters(workbook)
    tenant = params["Tenant"]
    assert tenant["type"] == 2 and tenant["multiSelect"] and tenant["typeSettings"]["selectAllValue"] == "*"
    assert names(tenant["query"]).tables == {METRICS_TABLE}  # the picker's values come from the data
    cat = emitted()
    for where, kind, query, _ in queries(workbook):
        if kind != AI_LOGS or where.startswith("parameter"):
            continue
        n = names(expand(query, params))
        scoped = n.metric_names and all("tenantId" in cat.metrics[m] for m in n.metric_names)
        if scoped or "traces" in n.tables:
            assert "{Tenant}" in query, f"{where} ignores the tenant picker"


def test_alert_lines_and_charts(workbook: dict[str, Any]) -> None:
    by_name = {item["name"]: item["content"] for item in walk(workbook["items"]) if item["type"] == 3}
    for item, line in (("error-rate", "{ErrorRateLine}"), ("delay", "{DelayLineMs}"), ("memory", "{MemoryLine}")):
        assert line in by_name[item]["query"], f"{item} draws no alert line"
        assert by_name[item]["visualization"] in ("linechart", "timechart")
    charts = [c for c in by_name.values() if c["visualization"] in ("timechart", "linechart", "barchart", "tiles")]
    assert len(charts) >= 8
    assert by_name["latency"]["visualization"] == "timechart"


# ---- the check itself sees drift --------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ('customMetrics | where name == "grc.events.acepted"', "metric grc.events.acepted"),
    ('customMetrics | where name in ("grc.events.accepted", "grc.nope") | count', "metric grc.nope"),
    ('customMetrics | where name == "grc.instance.memory_percent" | extend t = tostring(customDimensions.tenantId)',
     "customDimensions.tenantId"),
    ('traces | extend d = tostring(customDimensions["payload"])', "customDimensions.payload"),
    ('let x = requestz | take 1; x', "table requestz"),
    ('customMetrics | join kind=inner (pageViews | take 1) on name', "table pageViews"),
    ('customMetrics | extend o = replace_string(name, "grc.evnts.", "")', "literal 'grc.evnts.'"),
])
def test_the_check_catches_drift(query: str, expected: str) -> None:
    assert expected in problems(names(query))


def test_the_reader_refuses_what_it_cannot_read() -> None:
    with pytest.raises(KqlError):
        names("let f = (x: long) { x + 1 }; print f(1)")
    with pytest.raises(KqlError):
        names("customMetrics | project customDimensions")
