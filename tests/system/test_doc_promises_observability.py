"""Promises of README ('Analytics store', 'Backfill', 'Observability': 'System events', 'Health') and of
docs/observability.md, docs/analytics.md and docs/backfill.md that no other system test proved, checked
from outside the running app (HTTP, the Azure Tables SDK on the stack's Azurite, Redis as an operator
sees it, the runner's admin API, the fake Application Insights ingestion endpoint).

- System events: a failed delivery gives one SYSTEM_ERROR for its batch and one for the dead letter
  (`deadLetterId`, `attempts`); the notices that fail at the same broken destination are never parked,
  dead-lettered or announced in turn (docs/observability.md 'System events', the guards).
- Analytics payloads: events over a string property's 64 KiB are split (`Payload_0..n`), gzip'd when the
  stream says `compressionEnabled` or the text would not fit a 1 MiB entity, and read back whole by
  GET /events/{t}/history; keys as documented (docs/analytics.md 'Keys', 'Payloads').
- Backfill into Redis: history that live traffic already delivered, and a second job over the same range,
  is counted `skippedDuplicates` and not appended again (docs/backfill.md 'Guarantees').
- Telemetry: a destination failing a bulk gives one error log record for the tenant, destination and
  batch (`errorType=DeliveryFailed`, `count`); the monitor timer sends `grc.redis.memory_percent`,
  `grc.instance.memory_percent` and `grc.destination.healthy` (the alert rules' inputs).
- Health: Redis above ALERT_MEMORY_PERCENT of its maxmemory is `degraded`, /health 200 `degraded`.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient

from tests.system.fakes import FakeIngestion
from tests.system.harness import App, Stack, app_env, event_body, own_stack, start_app, tenant, wait_for

# A Kafka destination over AMQP with no Event Hubs configured: every delivery refused (non-transient),
# parked once, then dead-lettered by the queue trigger at its first attempt.
REFUSING_KAFKA = {"type": "kafka", "config": {"transport": "amqp"},
                  "retry": {"inProcessAttempts": 1, "attempts": 1, "backoffSeconds": 1,
                            "maxBackoffSeconds": 1, "jitter": 0, "timeoutSeconds": 40}}
OFFLINE = {"APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
           "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
           "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true"}


def _stream(app: App, t: str, **params: str) -> list[dict[str, Any]]:
    """The events in the tenant's Redis stream (GET /events/{t})."""
    r = app.get(f"/events/{t}", params={"limit": "1000", **params}, tenants=[t])
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()["events"]]


# ---- System events: SYSTEM_ERROR for the batch and the dead letter, and nothing feeding back ---------------

def test_a_failed_delivery_gives_one_notice_per_batch_and_one_per_dead_letter_and_none_feeds_back(
        app: App) -> None:
    """README/docs 'System events': SYSTEM_ERROR is 'one per tenant, destination and batch, not per event;
    also on a dead letter' (+ deadLetterId, attempts); the guards: a system batch never raises a system
    event and is never parked, so a notice failing at the broken destination comes back nowhere."""
    t = tenant("sysguard")
    app.configure(t, {"destinations": [{"type": "redis"}, REFUSING_KAFKA]})
    bodies = [event_body(t) for _ in range(3)]
    r = app.post("/events/bulk", json={"events": bodies}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    ids = {b["eventId"] for b in bodies}

    def dead_letters() -> list[dict[str, Any]]:
        got = app.get(f"/deadletters/{t}", params={"includeReplayed": "true"}, tenants=[t])
        assert got.status_code == 200, got.text
        return got.json()["deadLetters"]

    wait_for(lambda: {d["eventId"] for d in dead_letters()} >= ids, 60, what="the three events dead-lettered")

    def notices() -> list[dict[str, Any]] | None:
        got = _stream(app, t, eventType="SYSTEM_ERROR")
        per_dead = [n for n in got if "deadLetterId" in n["data"]]
        return got if len(per_dead) >= len(ids) else None

    wait_for(notices, 30, what="a SYSTEM_ERROR per dead letter")
    # Time for any notice about a notice (each SYSTEM_ERROR also failed at the broken Kafka destination).
    time.sleep(5)
    got = _stream(app, t, eventType="SYSTEM_ERROR")
    batch = [n for n in got if "deadLetterId" not in n["data"]]
    per_dead = [n for n in got if "deadLetterId" in n["data"]]
    # One notice for the batch (the tenant, kafka, the bulk): not one per event.
    assert len(batch) == 1, batch
    assert batch[0]["source"] == "EVENT_STREAMING" and batch[0]["action"] == "NOTIFY", batch[0]
    data = batch[0]["data"]
    assert {"destination", "error", "count", "failed", "parked", "sampleEventIds"} <= set(data), data
    assert data["destination"] == "kafka" and data["count"] == 3 and data["parked"] == 3, data
    assert set(data["sampleEventIds"]) == ids, data
    # Also on a dead letter: one each, with its id and attempts, about the tenant's own events only.
    assert sorted(n["data"]["sampleEventIds"][0] for n in per_dead) == sorted(ids), per_dead
    dead = {d["id"]: d for d in dead_letters()}
    for n in per_dead:
        assert n["data"]["deadLetterId"] in dead and n["data"]["attempts"] == 1, n
    # The guards: a notice that failed at kafka is neither parked nor dead-lettered nor announced.
    system_ids = {n["eventId"] for n in got}
    assert {d["eventType"] for d in dead.values()} == {"CONTROL_FAILED"}, sorted(dead.values(), key=str)
    assert not [n for n in got if system_ids & set(n["data"].get("sampleEventIds") or [])], got
    assert len(per_dead) == len(ids), per_dead


# ---- Analytics store: payloads split or gzip'd, never truncated; keys as documented -----------------------

def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entities(stack: Stack, app: App, t: str) -> dict[str, dict[str, Any]]:
    """The tenant's analytics entities (its partitions only, not the index), by EventId."""
    table = TableClient.from_connection_string(stack.storage, app.env.get("ANALYTICS_TABLE", "events"))
    with table:
        rows = table.query_entities("PartitionKey ge @lo and PartitionKey lt @hi",
                                    parameters={"lo": f"{t}_", "hi": f"{t}`"})
        return {e["EventId"]: dict(e, PartitionKey=e["PartitionKey"], RowKey=e["RowKey"]) for e in rows}


def _payload_columns(entity: dict[str, Any]) -> set[str]:
    return {k for k in entity if k.startswith("Payload")}


def test_large_payloads_are_split_or_gzipped_and_read_back_whole(app: App, stack: Stack) -> None:
    """docs/analytics.md 'Payloads': `Payload` up to 64 KiB (32 K UTF-16 units), `Payload_0..n` +
    `PayloadChunks` beyond (surrogate pairs kept whole), `PayloadGz...` when the stream says
    `compressionEnabled` or the text would not fit a 1 MiB entity; 'Reading joins the chunks back:
    nothing is truncated'. And 'Keys': PartitionKey `{tenantId}_{yyyyMMddHH}_{shard:02}`, RowKey
    `{9999999999999 - epochMs:013}_{eventId}`."""
    plain, packed = tenant("apay"), tenant("apay")
    app.configure(plain, {"destinations": [{"type": "analytics", "config": {"shards": 4}}]})
    app.configure(packed, {"compressionEnabled": True, "destinations": [{"type": "analytics"}]})
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    # ~250 K UTF-16 units (under 1 MiB as UTF-16): chunked, not compressed. Emoji are surrogate pairs.
    chunked = event_body(plain, timestamp=_iso(at), data={
        "findings": "x" * 150_000, "emoji": "\U0001F600" * 50_000, "note": "é" * 1000})
    # ~800 K characters: 1.6 MB as UTF-16, over an entity's 1 MiB: gzip'd although the stream does not ask.
    huge = event_body(plain, timestamp=_iso(at + timedelta(seconds=1)),
                  data={f"part{i}": secrets.token_hex(100_000) for i in range(4)})
    small = event_body(packed, timestamp=_iso(at), data={"title": "compressed because the stream says so"})
    for t, body in ((plain, chunked), (plain, huge), (packed, small)):
        r = app.post("/events", json=body, tenants=[t])
        assert r.status_code == 201, r.text[:500]
        outcomes = [(d["destination"], d["status"]) for d in r.json()["destinations"]]
        assert outcomes == [("analytics", "delivered")], r.text[:500]

    stored = {**_entities(stack, app, plain), **_entities(stack, app, packed)}
    assert set(stored) == {chunked["eventId"], huge["eventId"], small["eventId"]}, sorted(stored)
    split = _payload_columns(stored[chunked["eventId"]])
    assert "PayloadChunks" in split and "Payload_0" in split and "Payload_1" in split, sorted(split)
    assert not [c for c in split if c.startswith("PayloadGz")], sorted(split)
    assert [c for c in _payload_columns(stored[huge["eventId"]]) if c.startswith("PayloadGz")], \
        sorted(_payload_columns(stored[huge["eventId"]]))
    assert [c for c in _payload_columns(stored[small["eventId"]]) if c.startswith("PayloadGz")], \
        sorted(_payload_columns(stored[small["eventId"]]))
    for body in (chunked, huge, small):
        e = stored[body["eventId"]]
        ts = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        partition = rf"{re.escape(body['tenantId'])}_{ts:%Y%m%d%H}_\d\d"
        assert re.fullmatch(partition, e["PartitionKey"]), e["PartitionKey"]
        inverted = 9999999999999 - int(ts.timestamp() * 1000)
        assert e["RowKey"] == f"{inverted:013d}_{body['eventId']}", e["RowKey"]

    for t, bodies in ((plain, [huge, chunked]), (packed, [small])):
        # Its own events only: the monitor adds a SYSTEM_PERFORMANCE event per active tenant-minute.
        r = app.get(f"/events/{t}/history", params={"from": _iso(at - timedelta(minutes=1)),
                                                    "eventType": "CONTROL_FAILED"}, tenants=[t])
        assert r.status_code == 200, r.text[:300]
        events = r.json()["events"]
        assert [e["eventId"] for e in events] == [b["eventId"] for b in bodies]  # newest first
        for got, sent in zip(events, bodies):
            assert got["data"] == sent["data"], (sent["eventId"], {k: len(v) for k, v in got["data"].items()})


# ---- Backfill into Redis Streams: each event once while the dedupe markers hold ---------------------------

def _job_ended(app: App, t: str, job_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        r = app.get(f"/backfills/{t}/{job_id}", tenants=[t])
        assert r.status_code == 200, r.text
        return r.json() if r.json()["state"] in ("completed", "cancelled", "failed") else None

    return wait_for(ended, 90, 0.5, f"backfill {job_id} ended")


def test_a_redis_backfill_skips_what_live_traffic_or_an_earlier_job_delivered(app: App) -> None:
    """docs/backfill.md 'Guarantees': Redis Streams get each event once while the stream's dedupe
    window holds: history that live traffic already delivered, and a re-run of the same job, are
    counted `skippedDuplicates` and not appended again (only tests/test_backfill.py proved it, in process)."""
    t = tenant("bfredis")
    only_ours = [{"sources": ["BACKEND_API"]}]  # the monitor's SYSTEM_PERFORMANCE events stay out
    app.configure(t, {"destinations": [{"type": "analytics"}], "filters": only_ours})
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    early = [event_body(t, eventType="RISK_UPDATED", action="UPDATE",
                    timestamp=_iso(start + timedelta(seconds=i))) for i in range(6)]
    r = app.post("/events/bulk", json={"events": early}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 6, r.text
    # The consumer (Redis) is added later; from then on live traffic reaches it too.
    app.configure(t, {"destinations": [{"type": "analytics"}, {"type": "redis"}], "filters": only_ours})
    late = [event_body(t, eventType="RISK_UPDATED", action="UPDATE",
                   timestamp=_iso(start + timedelta(minutes=5, seconds=i))) for i in range(4)]
    r = app.post("/events/bulk", json={"events": late}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 4, r.text
    assert sorted(e["eventId"] for e in _stream(app, t)) == sorted(e["eventId"] for e in late)

    window = {"from": _iso(start - timedelta(minutes=1)),
              "to": _iso(datetime.now(UTC) + timedelta(seconds=60)), "destination": "redis"}
    progress = []
    for _ in range(2):  # the job, then the same job again
        r = app.post(f"/backfills/{t}", json=window, tenants=[t])
        assert r.status_code == 202, r.text
        done = _job_ended(app, t, r.json()["jobId"])
        assert done["state"] == "completed", done
        progress.append(done["progress"])
    first, again = progress
    assert (first["read"], first["delivered"], first["skippedDuplicates"]) == (10, 6, 4), first
    assert (again["read"], again["delivered"], again["skippedDuplicates"]) == (10, 0, 10), again
    assert first["estimatedSecondsLeft"] == 0 == again["estimatedSecondsLeft"]
    ids = [e["eventId"] for e in _stream(app, t)]
    assert sorted(ids) == sorted(e["eventId"] for e in early + late), ids  # each once


# ---- Telemetry and /health on a stack of this module's own (an exporter to the fake ingestion endpoint;
# Redis's maxmemory is changed as an operator would) ---------------------------------------------------

@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App, FakeIngestion]]:
    work: Path = tmp_path_factory.mktemp("doc-promises-telemetry")
    ingestion = FakeIngestion()
    try:
        # Kafka too: without it the app would reach for the sample settings' broker (a fixed port).
        with own_stack(work / "stack", ("redis", "azurite", "cosmos", "kafka")) as own:
            env = app_env(own, work / "app",
                          APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string,
                          TELEMETRY_BACKEND="opencensus", LOG_LEVEL="info", HEALTH_CACHE_SECONDS="1",
                          SYSTEM_PERFORMANCE_EVENTS="false", **OFFLINE)
            running = start_app(env, work / "app")
            try:
                yield own, running, ingestion
            finally:
                running.stop()
    finally:
        ingestion.close()


def _props(e: dict[str, Any]) -> dict[str, Any]:
    return dict(e["data"]["baseData"].get("properties") or {})


def _metric_records(ingestion: FakeIngestion, name: str) -> list[dict[str, Any]]:
    """(properties + value) of every record of metric `name`."""
    return [{**_props(e), "_value": e["data"]["baseData"]["metrics"][0]["value"]}
            for e in ingestion.metrics(name)]


def test_a_failing_destination_logs_one_error_per_batch_and_the_monitor_sends_the_alert_gauges(
        watched: tuple[Stack, App, FakeIngestion]) -> None:
    """docs/observability.md 'Logs': 'a failing destination gives one error per tenant, destination and
    batch (errorType=DeliveryFailed, count)'; 'Custom metrics': the monitor timer sends
    grc.redis.memory_percent, grc.instance.memory_percent and grc.destination.healthy (per destination,
    1/0), which the memory and failing-destination alert rules read."""
    _, app, ingestion = watched
    t = tenant("tellog")
    app.configure(t, {"destinations": [{"type": "redis"}, REFUSING_KAFKA]})
    bodies = [event_body(t) for _ in range(5)]
    r = app.post("/events/bulk", json={"events": bodies}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 5, r.text
    wait_for(lambda: len([d for d in app.get(f"/deadletters/{t}", tenants=[t]).json()["deadLetters"]
                          if d["eventType"] != "SYSTEM_ERROR"]) == 5, 60, what="the five dead letters")

    def failure_logs() -> list[dict[str, Any]]:
        return [e for e in ingestion.logs() if _props(e).get("errorType") == "DeliveryFailed"
                and _props(e).get("tenantId") == t]

    wait_for(failure_logs, 30, 0.5, "the DeliveryFailed log record")
    time.sleep(4)  # logs leave within 2 s: any second record of the same batch would be here by now
    records = failure_logs()
    of_the_request = [e for e in records if not str(_props(e).get("operation", "")).startswith("drain")]
    assert len(of_the_request) == 1, [(_props(e), e["data"]["baseData"].get("message")) for e in records]
    props = _props(of_the_request[0])
    assert props["destination"] == "kafka" and str(props["count"]) == "5", props
    assert of_the_request[0]["data"]["baseData"].get("severityLevel") in (3, "Error"), of_the_request[0]
    for body in bodies:  # never per event: no event id, no payload in it
        assert body["eventId"] not in json.dumps(of_the_request[0]), of_the_request[0]

    health = app.get("/health").json()
    app.run_function("monitor")
    wanted = ("grc.redis.memory_percent", "grc.instance.memory_percent", "grc.destination.healthy")
    wait_for(lambda: all(_metric_records(ingestion, n) for n in wanted), 60, 1.0, "the monitor's gauges")
    redis_pct = _metric_records(ingestion, "grc.redis.memory_percent")[-1]
    assert set(redis_pct) == {"_value"} and 0 < redis_pct["_value"] < 100, redis_pct
    memory = _metric_records(ingestion, "grc.instance.memory_percent")
    assert all(set(m) == {"_value"} and 0 < m["_value"] <= 100 for m in memory), memory
    healthy = _metric_records(ingestion, "grc.destination.healthy")
    assert all(set(h) == {"destination", "_value"} and h["_value"] in (0, 1) for h in healthy), healthy
    kafka = [h["_value"] for h in healthy if h["destination"] == "kafka"]
    assert kafka, healthy
    if "kafka" in health["dependencies"]:  # the gauge says what /health says of the destination
        up = health["dependencies"]["kafka"]["status"] != "unhealthy"
        assert kafka[-1] == (1 if up else 0), (kafka, health["dependencies"]["kafka"])


def test_redis_above_the_memory_threshold_is_degraded_not_unhealthy(
        watched: tuple[Stack, App, FakeIngestion]) -> None:
    """README 'Health': a dependency is `degraded` when ... 'Redis is above ALERT_MEMORY_PERCENT of its
    maxmemory'; anything but Redis or Tables unhealthy is 200 `degraded`. The operator lowers maxmemory
    to ~87 % of what Redis uses (threshold 80 %), then puts it back."""
    own, app, _ = watched
    redis = own.redis()
    before = redis.config_get("maxmemory")["maxmemory"]
    used = int(redis.info("memory")["used_memory"])
    try:
        redis.config_set("maxmemory", int(used / 0.87))

        def degraded() -> dict[str, Any] | None:
            r = app.get("/health")
            body = r.json()
            ok = r.status_code == 200 and body["dependencies"]["redis"]["status"] == "degraded"
            return body if ok else None

        body = wait_for(degraded, 15, 0.3, "redis degraded in /health")
        assert body["status"] == "degraded", body
        redis_dep = body["dependencies"]["redis"]
        assert 80 < redis_dep["memoryPercent"] < 100, redis_dep
        assert "maxmemory" in redis_dep.get("detail", ""), redis_dep
        anonymous = app.get("/health", anonymous=True)
        assert anonymous.status_code == 200 and anonymous.json()["status"] == "degraded", anonymous.text
        assert anonymous.json()["dependencies"]["redis"] == {"status": "degraded"}
    finally:
        redis.config_set("maxmemory", before)
    wait_for(lambda: app.get("/health").json()["dependencies"]["redis"]["status"] == "healthy", 15, 0.3,
             "redis healthy again")


# ---- GET /metrics/{tenantId}: the windows' figures ---------------------------------------------------

def test_metrics_windows_count_what_was_posted_with_latency_tops_and_destinations(app: App) -> None:
    """README 'GET /metrics/{tenantId}': `windows` (1m, 5m, 1h) and `totals` with accepted, filtered,
    rejected, top event types and sources, delivered/failed/parked per destination; the windows also
    events/s and latency p50/p95/p99/mean (test_metrics_scope.py and test_alerts.py read only
    `accepted` and the alerts)."""
    t = tenant("mwin")
    app.configure(t, {"destinations": [{"type": "redis"}],
                        "filters": [{"eventTypes": ["RISK_CREATED", "CONTROL_TESTED"]}]})
    events = ([event_body(t, eventType="RISK_CREATED", action="CREATE", source="ARCHER_GRC")
               for _ in range(3)]
              + [event_body(t, eventType="CONTROL_TESTED", source="BACKEND_API") for _ in range(2)]
              + [event_body(t, eventType="USER_ACTION", action="UPDATE")])  # filtered out by the config
    r = app.post("/events/bulk", json={"events": events}, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 5, r.text
    assert app.post("/events", json=event_body(t, action="NOT_AN_ACTION"), tenants=[t]).status_code == 400

    def counted() -> dict[str, Any] | None:
        got = app.get(f"/metrics/{t}", tenants=[t])
        assert got.status_code == 200, got.text
        body = got.json()
        w = body["windows"]["1m"]
        return body if w["accepted"] == 5 and w["rejected"] >= 1 else None

    body = wait_for(counted, 20, 0.5, "the posted events counted")
    for name, seconds in (("1m", 60), ("5m", 300), ("1h", 3600)):
        w = body["windows"][name]
        assert (w["accepted"], w["rejected"], w["failed"]) == (5, 1, 0), (name, w)
        assert w["filtered"] >= 1, (name, w)  # the USER_ACTION (and any system event the filter drops)
        assert w["eventsPerSecond"] == pytest.approx(5 / seconds, abs=0.001), (name, w)
        assert w["topEventTypes"][:2] == [{"name": "RISK_CREATED", "count": 3},
                                          {"name": "CONTROL_TESTED", "count": 2}], (name, w["topEventTypes"])
        assert {"name": "ARCHER_GRC", "count": 3} in w["topSources"], (name, w["topSources"])
        assert w["destinations"]["redis"] == {"delivered": 5, "failed": 0, "parked": 0}, (name, w)
        lat = w["latencyMs"]
        assert None not in (lat["p50"], lat["p95"], lat["p99"], lat["mean"]), (name, lat)
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"], (name, lat)
    totals = body["totals"]
    assert (totals["accepted"], totals["rejected"], totals["duplicates"]) == (5, 1, 0), totals
    # As README says: rate, latency and delay are per window only (kept 65 minutes, no all-time figure).
    assert not {"eventsPerSecond", "latencyMs", "changeFeedDelayMs"} & set(totals), totals
    assert totals["destinations"]["redis"]["delivered"] == 5, totals
