"""Promises of docs/analytics.md, docs/backfill.md and README ('Analytics store', 'Backfill', the API
table's history and backfill rows, 'Settings') that no other system test proved, checked from outside
the running app: HTTP, the Azure Tables SDK and queue depths on the stack's Azurite, a Kafka consumer,
the runner's admin API, its log and its timer status file (where the host keeps a timer's next run).

- Keys: PartitionKey `{tenantId}_{yyyyMMddHH}_{shard:02}` with the UTC hour of the event's timestamp
  and `crc32(eventId) % shards` (default 4; 1-32), the `~index` row `{tenantId}_{yyyyMMddHH}_{shards:02}`,
  and a change of `shards` that hides no older data; the columns; `Payload` for a small event and
  `PayloadGz_0..n` in 64,000-byte chunks; the history's server-side `eventType` / `source` filters.
- Idempotent writes: an event sent again (after the idempotency window) with its eventId and timestamp
  replaces its one entity; without a timestamp it lands on another (the documented caveat).
- Writes: 250 events of one partition in one chunk are stored whole (cut into transactions).
- History: defaults (`to` now, `from` 24 h before), both ends inclusive, a time without a zone is 400,
  `limit` 1-1000 (default 100), pages merged over shards newest first whatever `limit` each asks, a
  token bound to `from`, `to`, `eventType` and `source` as sent, at most 48 hours with data per page.
- Retention: a tenant that removed the destination is purged all the same; a tenant whose id starts
  with another's is never touched by the other's purge; the run's log line and its figures; two runs
  at once both finish; `purge_analytics` scheduled at minute 17.
- Backfill: refusals naming `/to` (more than 300 s ahead), `/from` (before retention, or without a zone),
  an unknown field, `/destination` (disabled destination or stream, 409 saying what to do); 404 for an
  unknown job id; the list newest first, paged with a signed token; (time, eventId) order, the stream's
  format, key, routes and filters as they are now, `eventTypes` / `sources` of the request; the progress
  counters `filtered` and `deadLettered` (refused, and a stored event no longer valid); a vector job run
  again rewrites the same documents; a failing destination: `lastError` and `retryAt` while the job
  waits, a cancel that ends a waiting job at once (repeated: the same), `failed` after the retry
  horizon, 409 for cancelling it; the audit records' actors and contents; the default throttle (500/s)
  shared by two jobs of a tenant, the default limit of two jobs, and a backfill that spends nothing of
  the tenant's API rate limit.

The module runs one stack and one app of its own: the settings the docs give defaults for
(ANALYTICS_TABLE, BACKFILL_TABLE, BACKFILL_EVENTS_PER_SECOND, BACKFILL_MAX_CONCURRENT_JOBS) are left out
of its environment, so the code's defaults apply; Kafka's delivery timeout is 2 s (a stopped broker
fails a send fast), the idempotency window 2 s (so an event can be
sent again), and the API's rate limit is 5 events/s with a burst of RATE_BURST per tenant (a backfill
spending it would show). One test stops the module's Kafka broker by PID and starts it again.
"""
from __future__ import annotations

import ast
import json
import random
import secrets
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.data.tables import TableClient

from tests.system.harness import (
    App,
    Stack,
    app_env,
    app_running,
    create_topic,
    own_stack,
    tenant,
    topic_records,
    wait_for,
)

STACK = ("redis", "azurite", "cosmos", "kafka")
# Settings with a documented default, left out of the app's environment so that the code's default
# applies (the sample settings name each one). Not BACKFILL_QUEUE: the queue trigger's binding names
# `%BACKFILL_QUEUE%`, which the host (and the local runner) resolve from the settings only.
DEFAULTED = ("ANALYTICS_TABLE", "BACKFILL_TABLE", "BACKFILL_EVENTS_PER_SECOND",
             "BACKFILL_MAX_CONCURRENT_JOBS")
ANALYTICS_TABLE = "events"  # README 'Settings' and docs/analytics.md: the default
BACKFILL_TABLE = "backfills"
DEFAULT_THROTTLE = 500  # BACKFILL_EVENTS_PER_SECOND's default
RATE_BURST = 4000  # RATE_LIMIT_BURST of this module's app (5 events/s refill)
IDEMPOTENCY_WINDOW = 2  # s
PROBLEM = "application/problem+json"
MAX_TS_MS = 9_999_999_999_999


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    work = tmp_path_factory.mktemp("doc-promises-ab")
    with own_stack(work / "stack", STACK) as stack:
        yield stack, work


@pytest.fixture(scope="module")
def app(own: tuple[Stack, Path]) -> Iterator[App]:
    stack, work = own
    env = app_env(stack, work / "app", SYSTEM_PERFORMANCE_EVENTS="false", KAFKA_DELIVERY_TIMEOUT_MS="2000",
                  IDEMPOTENCY_WINDOW_SECONDS=str(IDEMPOTENCY_WINDOW), RATE_LIMIT_EVENTS_PER_SECOND="5",
                  RATE_LIMIT_BURST=str(RATE_BURST))
    for name in DEFAULTED:
        env.pop(name)
    with app_running(env, work / "app") as running:
        yield running


@pytest.fixture(autouse=True)
def no_poison_here(own: tuple[Stack, Path]) -> Iterator[None]:
    yield
    assert not (poisoned := own[0].poison_counts()), f"messages moved to poison queues: {poisoned}"


# ---- helpers ---------------------------------------------------------------------------------------

def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _event(t: str, at: datetime | str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenantId": t, "eventType": "RISK_UPDATED", "source": "ARCHER_GRC", "action": "UPDATE",
        "entityId": "risk-1", "entityType": "risk", "data": {"score": 7},
        "eventId": f"ev-{uuid.uuid4().hex[:12]}", "timestamp": at if isinstance(at, str) else _iso(at)}
    body.update(over)
    return body


def _store(app: App, t: str, events: list[dict[str, Any]]) -> None:
    """Publish `events` through the bulk API; each accepted and delivered to every destination now."""
    for first in range(0, len(events), 1000):
        r = app.post("/events/bulk", tenants=[t], json={"events": events[first:first + 1000]})
        assert r.status_code == 200, r.text[:500]
        results = r.json()["results"]
        assert {res["status"] for res in results} == {"accepted"}, r.text[:500]
        assert {d["status"] for res in results for d in res["destinations"]} == {"delivered"}, r.text[:500]


def _table(stack: Stack, name: str = ANALYTICS_TABLE) -> TableClient:
    return TableClient.from_connection_string(stack.storage, name)


def _entities(stack: Stack, t: str) -> list[dict[str, Any]]:
    """Every entity of the tenant's partitions (`{t}_...`), read with the Tables SDK."""
    with _table(stack) as table:
        return list(table.query_entities("PartitionKey ge @lo and PartitionKey lt @hi",
                                         parameters={"lo": f"{t}_", "hi": f"{t}`"}))


def _index_rows(stack: Stack, t: str) -> set[str]:
    with _table(stack) as table:
        return {e["RowKey"] for e in table.query_entities(
            "PartitionKey eq '~index' and RowKey ge @lo and RowKey lt @hi",
            parameters={"lo": f"{t}_", "hi": f"{t}`"}, select=["RowKey"])}


def _history(app: App, t: str, **params: str) -> httpx.Response:
    return app.get(f"/events/{t}/history", tenants=[t], params=params)


def _history_ids(app: App, t: str, **params: str) -> list[str]:
    r = _history(app, t, **params)
    assert r.status_code == 200, r.text[:500]
    return [e["eventId"] for e in r.json()["events"]]


def _errors(r: httpx.Response, status: int) -> list[dict[str, Any]]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    return list(r.json().get("errors") or [])


def _newest_first(events: list[dict[str, Any]]) -> list[str]:
    """The ids in the store's RowKey order: newest first, then by eventId within one millisecond."""
    ordered = sorted(events, key=lambda e: (-_ms(_instant(e["timestamp"])), e["eventId"]))
    return [e["eventId"] for e in ordered]


def _start(app: App, t: str, **body: Any) -> dict[str, Any]:
    r = app.post(f"/backfills/{t}", tenants=[t], json=body)
    assert r.status_code == 202, r.text
    return dict(r.json())


def _job(app: App, t: str, job_id: str) -> dict[str, Any]:
    r = app.get(f"/backfills/{t}/{job_id}", tenants=[t])
    assert r.status_code == 200, r.text
    return dict(r.json())


def _ended(app: App, t: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        j = _job(app, t, job_id)
        return j if j["state"] in ("completed", "cancelled", "failed") else None

    return wait_for(done, timeout, 0.25, f"backfill {job_id} ended")


def _outcomes_add_up(p: dict[str, Any]) -> None:
    """'each event read counts once in one of the outcome counters'."""
    assert p["read"] == (p["delivered"] + p["skippedDuplicates"] + p["filtered"] + p["failed"]
                         + p["deadLettered"]), p


def _audit(app: App, t: str, job_id: str) -> list[dict[str, Any]]:
    """The audit records of one job, newest first."""
    r = app.get(f"/audit/{t}", tenants=[t])
    assert r.status_code == 200, r.text
    return [a for a in r.json()["items"] if a["target"] == f"backfills/{t}/{job_id}"]


def _dead_letters(app: App, t: str) -> list[dict[str, Any]]:
    r = app.get(f"/deadletters/{t}", tenants=[t])
    assert r.status_code == 200, r.text
    return [d for d in r.json()["deadLetters"] if d["eventType"] != "SYSTEM_ERROR"]


def _window(start: datetime, end: datetime | None = None) -> dict[str, str]:
    return {"from": _iso(start), "to": _iso(end or datetime.now(UTC))}


# ---- Analytics: keys, columns, payloads ------------------------------------------------------------

def test_keys_name_the_utc_hour_and_crc32_shard_and_a_change_of_shards_hides_no_older_data(
        app: App, own: tuple[Stack, Path]) -> None:
    """docs/analytics.md 'Keys': PartitionKey `{tenantId}_{yyyyMMddHH}_{shard:02}` = UTC hour of the
    event's `timestamp` + `crc32(eventId) % shards`; `shards` 1-32, default 4; index partition `~index`,
    RowKey `{tenantId}_{yyyyMMddHH}_{shards:02}`, which 'records the shard count each hour was written
    with, so changing `shards` never hides older data'."""
    stack = own[0]
    t = tenant("keys")
    for bad in (0, 33):
        r = app.put(f"/stream-config/{t}", tenants=[t],
                    json={"destinations": [{"type": "analytics", "config": {"shards": bad}}]})
        assert "/destinations/0/config/shards" in [e["pointer"] for e in _errors(r, 400)], (bad, r.text)
    app.configure(t, {"destinations": [{"type": "analytics"}]})  # shards: the default
    hour = datetime.now(UTC).replace(minute=5, second=0, microsecond=0) - timedelta(hours=3)
    # Sent at +05:30: the partition names the UTC hour, not the local one.
    zone = timezone(timedelta(hours=5, minutes=30))
    sent: list[dict[str, Any]] = []
    for shards, first, n in ((4, 0, 40), (32, 100, 40), (1, 200, 5)):
        if shards != 4:
            app.configure(t, {"destinations": [{"type": "analytics", "config": {"shards": shards}}]})
        batch = [_event(t, (hour + timedelta(seconds=first + i)).astimezone(zone).isoformat(
            timespec="milliseconds")) for i in range(n)]
        _store(app, t, batch)
        stored = {e["EventId"]: e for e in _entities(stack, t)}
        used = set()
        for body in batch:
            shard = zlib.crc32(body["eventId"].encode()) % shards
            assert stored[body["eventId"]]["PartitionKey"] == f"{t}_{hour:%Y%m%d%H}_{shard:02d}", body
            used.add(shard)
        if shards == 4:
            assert used == {0, 1, 2, 3}, used  # 40 events: every shard of the default 4
        sent += batch
        # Every event of the hour, whatever shard count it was written with, newest first.
        got = _history_ids(app, t, limit="1000", **_window(hour - timedelta(minutes=1)))
        assert got == _newest_first(sent), (shards, len(got), len(sent))
    assert _index_rows(stack, t) == {f"{t}_{hour:%Y%m%d%H}_{n:02d}" for n in (4, 32, 1)}


def test_an_entity_has_the_documented_columns_and_payload_forms_and_history_filters_by_them(
        app: App, own: tuple[Stack, Path]) -> None:
    """docs/analytics.md 'Payloads': columns `EventId, EventType, Source, Action, EntityId, EntityType,
    EventTime, IngestedAt, CorrelationId` (server-side filters use `EventType` and `Source`); `Payload`
    (string) when it fits; `PayloadGz` / `PayloadGz_0..n` (gzip, 64,000-byte chunks) when the stream's
    `compressionEnabled` is set; reading joins the chunks back."""
    stack = own[0]
    plain, packed = tenant("cols"), tenant("gz")
    app.configure(plain, {"destinations": [{"type": "analytics"}]})
    app.configure(packed, {"compressionEnabled": True, "destinations": [{"type": "analytics"}]})
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    kinds = [("RISK_UPDATED", "ARCHER_GRC"), ("CONTROL_TESTED", "ARCHER_GRC"),
             ("RISK_UPDATED", "BACKEND_API"), ("CONTROL_TESTED", "BACKEND_API")]
    small = [_event(plain, at + timedelta(seconds=i), eventType=et, source=src, correlationId=f"corr-{i}",
                    entityId=f"risk-{i}", entityType="risk") for i, (et, src) in enumerate(kinds * 2)]
    _store(app, plain, small)
    # ~300,000 random hex characters: about 150 KB gzip'd, three binary chunks.
    big = _event(packed, at, data={f"part{i}": secrets.token_hex(75_000) for i in range(2)})
    _store(app, packed, [big])

    r = _history(app, plain, limit="1000", **_window(at - timedelta(minutes=1)))
    served = {e["eventId"]: e for e in r.json()["events"]}
    for e in _entities(stack, plain):
        ev = served[e["EventId"]]
        columns = ("EventType", "Source", "Action", "EntityId", "EntityType", "CorrelationId", "IngestedAt")
        fields = ("eventType", "source", "action", "entityId", "entityType", "correlationId", "ingestedAt")
        assert [e[c] for c in columns] == [ev[f] for f in fields], e
        assert _instant(e["EventTime"]) == _instant(ev["timestamp"]), e
        payload = [k for k in e if k.startswith("Payload")]
        assert payload == ["Payload"] and json.loads(e["Payload"]) == ev, payload  # one string: it fits
    # Its one event (the monitor may add a SYSTEM_PERFORMANCE one at a minute's turn).
    [gz] = [e for e in _entities(stack, packed) if e["EventId"] == big["eventId"]]
    chunks = sorted((k for k in gz if k.startswith("PayloadGz_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    assert len(chunks) >= 2 and gz["PayloadChunks"] == len(chunks) and "Payload" not in gz, sorted(gz)
    sizes = [len(bytes(gz[k])) for k in chunks]
    assert sizes[:-1] == [64_000] * (len(sizes) - 1) and 0 < sizes[-1] <= 64_000, sizes
    around = _window(at - timedelta(minutes=1), at + timedelta(minutes=1))  # not the monitor's events of now
    [got] = _history(app, packed, **around).json()["events"]
    assert got["data"] == big["data"]
    # The server-side filters: each alone, and both.
    window = _window(at - timedelta(minutes=1))
    for params in ({"eventType": "CONTROL_TESTED"}, {"source": "BACKEND_API"},
                   {"eventType": "RISK_UPDATED", "source": "BACKEND_API"}):
        want = [e for e in small if all(e[k] == v for k, v in params.items())]
        assert _history_ids(app, plain, **window, **params) == _newest_first(want), params


def test_an_event_sent_again_with_its_id_and_timestamp_replaces_its_entity_and_without_a_timestamp_adds_one(
        app: App, own: tuple[Stack, Path]) -> None:
    """docs/analytics.md 'Keys': 'keys come from the event alone (eventId and its timestamp), and every
    write is an upsert (replace), so a retried or replayed write lands on the same entity ... without a
    timestamp the service stamps the ingest time, which differs per attempt.' Sent again after this
    app's idempotency window (2 s), each is written again."""
    stack = own[0]
    t = tenant("upsert")
    app.configure(t, {"destinations": [{"type": "analytics"}]})
    at = _iso(datetime.now(UTC) - timedelta(minutes=3))
    first = _event(t, at, data={"version": 1}, entityId="risk-9")
    again = {k: v for k, v in first.items() if k != "entityId"} | {"data": {"version": 2}}
    untimed = {k: v for k, v in _event(t, at).items() if k != "timestamp"}
    for body in (first, untimed):
        r = app.post("/events", tenants=[t], json=body)
        assert r.status_code == 201 and r.json()["status"] == "accepted", r.text
    time.sleep(IDEMPOTENCY_WINDOW + 0.5)
    for body in (again, untimed):
        r = app.post("/events", tenants=[t], json=body)
        assert r.status_code == 201 and r.json()["status"] == "accepted", r.text  # written again
    stored = _entities(stack, t)
    [entity] = [e for e in stored if e["EventId"] == first["eventId"]]  # one entity, replaced
    assert json.loads(entity["Payload"])["data"] == {"version": 2} and "EntityId" not in entity, entity
    assert len({e["RowKey"] for e in stored if e["EventId"] == untimed["eventId"]}) == 2, stored


def test_a_chunk_of_250_events_in_one_partition_is_stored_whole(app: App, own: tuple[Stack, Path]) -> None:
    """docs/analytics.md 'Writes': each chunk (the stream's `batchSize`) is grouped by partition and cut
    into entity group transactions; README: 'transactions split at 100 per partition'. One shard, one
    hour, batchSize 1000: 250 events of one partition in one chunk, each delivered, stored and read back.
    (Azurite 3.35 commits a transaction of more than 100 operations, only its reply is one the SDK cannot
    parse, so the cap itself is proved at unit tier: tests/test_analytics.py.)"""
    stack = own[0]
    t = tenant("tx")
    app.configure(t, {"batchSize": 1000, "destinations": [{"type": "analytics", "config": {"shards": 1}}]})
    at = datetime.now(UTC).replace(minute=10, second=0, microsecond=0) - timedelta(hours=1)
    events = [_event(t, at + timedelta(milliseconds=7 * i)) for i in range(250)]
    _store(app, t, events)  # each delivered, none parked
    stored = _entities(stack, t)
    assert len(stored) == 250 and {e["PartitionKey"] for e in stored} == {f"{t}_{at:%Y%m%d%H}_00"}
    assert _history_ids(app, t, limit="1000", **_window(at - timedelta(minutes=1))) == _newest_first(events)


# ---- History endpoint ------------------------------------------------------------------------------

def test_history_defaults_to_the_24_hours_before_to_takes_both_ends_and_limit_1_to_1000(app: App) -> None:
    """docs/analytics.md 'History endpoint': '`from`, `to`: RFC 3339 with a zone; defaults: `to` = now,
    `from` = 24 h before `to`. Inclusive.' '`limit`: 1-1000 (default 100). Events come newest first.'"""
    t = tenant("hdef")
    app.configure(t, {"destinations": [{"type": "analytics"}]})
    now = datetime.now(UTC).replace(microsecond=0)
    edge_from = now - timedelta(hours=10)
    edge_to = edge_from + timedelta(minutes=10)
    named = {
        "h23": _event(t, now - timedelta(hours=23)), "h25": _event(t, now - timedelta(hours=25)),
        "at_from": _event(t, edge_from), "at_to": _event(t, edge_to),
        "before": _event(t, edge_from - timedelta(milliseconds=1)),
        "after": _event(t, edge_to + timedelta(milliseconds=1)),
    }
    recent = [_event(t, now - timedelta(minutes=30) + timedelta(milliseconds=11 * i)) for i in range(150)]
    _store(app, t, [*named.values(), *recent])
    ids = {k: e["eventId"] for k, e in named.items()}

    r = _history(app, t, limit="1000")
    assert r.status_code == 200, r.text
    body = r.json()
    asked = datetime.now(UTC)
    assert abs((_instant(body["to"]) - asked).total_seconds()) < 10, body["to"]
    assert _instant(body["to"]) - _instant(body["from"]) == timedelta(hours=24), (body["from"], body["to"])
    got = [e["eventId"] for e in body["events"]]
    assert ids["h23"] in got and ids["h25"] not in got, got
    to = now - timedelta(hours=24)
    r = _history(app, t, to=_iso(to))
    assert _instant(r.json()["from"]) == to - timedelta(hours=24), r.json()["from"]
    assert [e["eventId"] for e in r.json()["events"]] == [ids["h25"]]
    # Both ends inclusive, to the millisecond.
    got = _history_ids(app, t, **{"from": _iso(edge_from), "to": _iso(edge_to)})
    assert got == [ids["at_to"], ids["at_from"]], got
    # A time without a zone; limits out of range.
    [error] = _errors(_history(app, t, **{"from": "2026-12-01T00:00:00"}), 400)
    assert error["field"] == "from", error
    for bad in ("0", "1001", "ten"):
        [error] = _errors(_history(app, t, limit=bad), 400)
        assert error["field"] == "limit", (bad, error)
    page = _history(app, t, **_window(now - timedelta(hours=1))).json()  # the default limit
    assert page["count"] == 100 and page["continuationToken"], page["count"]
    assert [e["eventId"] for e in page["events"]] == _newest_first(recent)[:100]


def test_history_pages_merge_the_shards_newest_first_whatever_the_limit_and_are_bound_to_the_query(
        app: App) -> None:
    """docs/analytics.md: 'for an hour it reads the first `limit + 1` rows of each shard in parallel and
    merges them by RowKey'; the token is 'bound to the tenant and to `from`, `to`, `eventType`, `source`
    as sent ... Pass it back unchanged with the same query parameters to get the next page (`limit` may
    change); `null` means the end. Any token the service did not issue for this tenant and query
    answers 400.'"""
    t = tenant("hpage")
    app.configure(t, {"destinations": [{"type": "analytics", "config": {"shards": 4}}]})
    at = datetime.now(UTC).replace(minute=3, second=0, microsecond=0) - timedelta(hours=2)
    events = [_event(t, at + timedelta(milliseconds=997 * i),
                     eventType=random.choice(["RISK_UPDATED", "USER_ACTION"])) for i in range(40)]
    _store(app, t, events)
    query = {**_window(at - timedelta(minutes=1), at + timedelta(minutes=5)), "source": "ARCHER_GRC"}
    got: list[str] = []
    token: str | None = None
    tokens: list[str] = []
    for limit in (7, 3, 11, 1, 2, 1000):
        r = _history(app, t, limit=str(limit), **query, **({"continuationToken": token} if token else {}))
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["count"] == len(page["events"]) <= limit
        got += [e["eventId"] for e in page["events"]]
        token = page["continuationToken"]
        if token is None:
            break
        tokens.append(token)
    assert token is None and got == _newest_first(events), (len(got), len(events))
    first = tokens[0]
    later = _iso(at + timedelta(minutes=6))
    for changed in ({**query, "source": "BACKEND_API"}, {**query, "to": later}, {**query, "from": _iso(at)},
                    {k: v for k, v in query.items() if k != "from"}, {**query, "eventType": "RISK_UPDATED"}):
        [error] = _errors(_history(app, t, continuationToken=first, **changed), 400)
        assert error["field"] == "continuationToken", (changed, error)
    r = _history(app, t, continuationToken=first, limit="5", **query)  # the same query, another limit
    assert r.status_code == 200 and [e["eventId"] for e in r.json()["events"]] == _newest_first(events)[7:12]


def test_a_history_page_reads_at_most_48_hours_with_data(app: App) -> None:
    """docs/analytics.md: 'At most 48 hours with data are read per page; a page can then come back with
    fewer events and a token.'"""
    t = tenant("h48")
    app.configure(t, {"destinations": [{"type": "analytics"}]})
    top = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)
    events = [_event(t, top - timedelta(hours=h)) for h in range(1, 51)]  # one in each of 50 hours
    _store(app, t, events)
    query = _window(top - timedelta(hours=52))
    first = _history(app, t, limit="1000", **query).json()
    assert first["count"] == 48 and first["continuationToken"], first["count"]
    second = _history(app, t, limit="1000", continuationToken=first["continuationToken"], **query).json()
    assert second["count"] == 2 and second["continuationToken"] is None, second
    assert [e["eventId"] for e in first["events"] + second["events"]] == _newest_first(events)


# ---- Retention ------------------------------------------------------------------------------------

def _purge_lines(app: App) -> list[dict[str, int]]:
    """The figures of every `analytics retention: {...}` line the runner logged."""
    out = []
    for line in app.log().splitlines():
        if "analytics retention: " in line:
            out.append(ast.literal_eval(line.split("analytics retention: ", 1)[1].strip()))
    return out


def _hours_stored(stack: Stack, t: str) -> tuple[set[str], set[str]]:
    """(hours of the tenant's entities, hours of its index rows)."""
    return ({e["PartitionKey"].rsplit("_", 2)[1] for e in _entities(stack, t)},
            {rk.rsplit("_", 2)[1] for rk in _index_rows(stack, t)})


def test_the_purge_takes_a_tenant_that_removed_the_destination_spares_a_prefix_tenant_and_logs_its_figures(
        app: App, own: tuple[Stack, Path]) -> None:
    """docs/analytics.md 'Retention': 'a tenant that has since removed the destination is purged all the
    same'; a query 'never scans another tenant' (here: a tenant whose id begins with the purged one's,
    30 days of retention, data in the same hours); 'The run's log line (`analytics retention: {tenants,
    hours, entities, left, unchecked}`)'. The timer's schedule: 'hourly at minute 17' (the host's
    status of the timer names its next run)."""
    stack = own[0]
    t = tenant("gone")
    neighbour = f"{t}-x"
    now = datetime.now(UTC)
    first_old = now.replace(minute=10, second=0, microsecond=0) - timedelta(days=3)
    old = [first_old, first_old - timedelta(hours=1)]
    old_hours = {f"{at:%Y%m%d%H}" for at in old}
    app.configure(t, {"retentionDays": 1, "destinations": [{"type": "analytics", "config": {"shards": 2}}]})
    app.configure(neighbour, {"destinations": [{"type": "analytics", "config": {"shards": 2}}]})  # 30 days
    _store(app, t, [_event(t, at + timedelta(seconds=i)) for at in old for i in range(30)]
           + [_event(t, now - timedelta(hours=2))])
    _store(app, neighbour, [_event(neighbour, at + timedelta(seconds=i)) for at in old for i in range(5)])
    app.configure(t, {"retentionDays": 1, "destinations": [{"type": "redis"}]})  # analytics removed
    before_t, before_n = _hours_stored(stack, t), _hours_stored(stack, neighbour)
    assert old_hours <= before_t[0] and before_t[0] == before_t[1], before_t
    lines = len(_purge_lines(app))
    app.run_function("purge_analytics")
    figures = wait_for(lambda: _purge_lines(app)[lines:], 60, 0.5, "the purge's log line")[0]
    assert set(figures) == {"tenants", "hours", "entities", "left", "unchecked"}, figures
    assert figures["tenants"] >= 2 and figures["hours"] >= 2 and figures["entities"] >= 60, figures
    assert figures["left"] == 0 and figures["unchecked"] == 0, figures
    data, index = _hours_stored(stack, t)
    assert not data & old_hours and not index & old_hours, (data, index)
    assert data == index == before_t[0] - old_hours and len(data) == 1, (data, index)  # the recent hour kept
    assert _hours_stored(stack, neighbour) == before_n and len(_entities(stack, neighbour)) == 10
    timers = app.log_path.parent / "devhost-state" / "timers"
    status = json.loads((timers / "purge_analytics.json").read_text())
    nxt = datetime.fromisoformat(status["Next"]).astimezone(UTC)
    assert (nxt.minute, nxt.second) == (17, 0), status
    assert timedelta(0) < nxt - datetime.now(UTC) <= timedelta(hours=1), status


def test_two_purge_runs_at_once_both_finish_and_delete_everything_expired(
        app: App, own: tuple[Stack, Path]) -> None:
    """docs/analytics.md 'Retention': 'Runs are idempotent and may overlap (a run by hand through the admin
    API beside the hourly one, a retry beside a slow run): an entity the other run deleted first counts
    as deleted, and both finish.'"""
    stack = own[0]
    t = tenant("overlap")
    app.configure(t, {"retentionDays": 1, "destinations": [{"type": "analytics", "config": {"shards": 2}}]})
    old = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=4)
    _store(app, t, [_event(t, old + timedelta(seconds=6 * i)) for i in range(1000)])  # 2 shards x 2 hours
    assert len(_entities(stack, t)) == 1000
    done = "Executed 'Functions.purge_analytics' (Succeeded"
    failed = "Executed 'Functions.purge_analytics' (Failed"
    log = app.log()
    succeeded, failures, lines = log.count(done), log.count(failed), len(_purge_lines(app))
    app.run_function("purge_analytics")
    app.run_function("purge_analytics")
    wait_for(lambda: app.log().count(done) + app.log().count(failed) >= succeeded + failures + 2, 60, 0.2,
             "both runs finished")
    assert app.log().count(failed) == failures and app.log().count(done) >= succeeded + 2
    runs = _purge_lines(app)[lines:]
    assert len(runs) >= 2 and sum(r["entities"] for r in runs) >= 1000, runs
    assert all(r["left"] == 0 for r in runs), runs
    assert _entities(stack, t) == [] and _index_rows(stack, t) == set()


# ---- Backfill: API ---------------------------------------------------------------------------------

def test_the_settings_defaults_name_the_tables(app: App, own: tuple[Stack, Path]) -> None:
    """README 'Settings', docs/analytics.md: ANALYTICS_TABLE `events` and BACKFILL_TABLE `backfills` by
    default (the app runs without these settings)."""
    stack = own[0]
    t = tenant("dflt")
    app.configure(t, {"destinations": [{"type": "analytics"}, {"type": "redis"}]})
    at = datetime.now(UTC) - timedelta(minutes=5)
    body = _event(t, at)
    _store(app, t, [body])
    with _table(stack, ANALYTICS_TABLE) as table:
        [entity] = table.query_entities("PartitionKey ge @lo and PartitionKey lt @hi",
                                        parameters={"lo": f"{t}_", "hi": f"{t}`"})
    assert entity["EventId"] == body["eventId"]
    created = _start(app, t, destination="redis", **_window(at - timedelta(minutes=1)))
    with _table(stack, BACKFILL_TABLE) as table:
        assert table.get_entity(t, created["jobId"])["RowKey"] == created["jobId"]
    done = _ended(app, t, created["jobId"])
    assert done["state"] == "completed" and done["progress"]["read"] == 1, done


def test_backfill_refusals_name_the_field_and_say_what_to_do(app: App) -> None:
    """docs/backfill.md 'API': `to` more than 300 s in the future (`/to`), `from` before the tenant's
    retention (`/from`), a time without a zone (`/from`), an unknown field; a destination not enabled in
    the stream config, or a disabled stream, is 409 with `/destination` 'and what to do (`PUT
    /stream-config/...`)'; 404 for an id that is not this tenant's job."""
    t = tenant("bfbad")
    app.configure(t, {"retentionDays": 2, "destinations": [{"type": "analytics"}, {"type": "redis"}]})
    now = datetime.now(UTC)
    ok = {"from": _iso(now - timedelta(hours=1)), "to": _iso(now), "destination": "redis"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**ok, "to": _iso(now + timedelta(seconds=400))}, "/to"),
        ({**ok, "from": _iso(now - timedelta(days=2, hours=1))}, "/from"),
        ({**ok, "from": "2026-12-06T00:00:00"}, "/from"),
        ({**ok, "to": (now + timedelta(seconds=5)).replace(tzinfo=None).isoformat()}, "/to"),
        ({**ok, "priority": "high"}, "/priority"),
    ]
    for body, pointer in cases:
        errors = _errors(app.post(f"/backfills/{t}", tenants=[t], json=body), 400)
        assert pointer in [e["pointer"] for e in errors], (body, errors)
    both = [{"type": "analytics"}, {"type": "redis"}]
    off = [{"type": "analytics"}, {"type": "redis", "enabled": False}]
    for config, words in (({"retentionDays": 2, "destinations": off}, "not enabled"),
                          ({"retentionDays": 2, "enabled": False, "destinations": both}, "disabled")):
        app.configure(t, config)
        r = app.post(f"/backfills/{t}", tenants=[t], json=ok)
        assert [e["pointer"] for e in _errors(r, 409)] == ["/destination"], r.text
        assert words in r.json()["detail"] and f"PUT /stream-config/{t}" in r.json()["detail"], r.text
    app.configure(t, {"retentionDays": 2, "destinations": [{"type": "analytics"}, {"type": "redis"}]})
    assert app.get(f"/backfills/{t}", tenants=[t]).json()["jobs"] == []  # none of them created a job
    # At the edges: `from` just inside the retention, `to` 200 s ahead: accepted.
    created = _start(app, t, **{**ok, "from": _iso(now - timedelta(days=2) + timedelta(minutes=1)),
                                "to": _iso(now + timedelta(seconds=200))})
    other_id = created["jobId"][:-1] + ("0" if created["jobId"][-1] != "0" else "1")
    for job_id in ("bf-0000000000000-00000000", "not-a-job", other_id):
        _errors(app.get(f"/backfills/{t}/{job_id}", tenants=[t]), 404)
    assert _ended(app, t, created["jobId"])["state"] == "completed"


def test_the_job_list_is_newest_first_and_paged_with_a_signed_token(app: App) -> None:
    """docs/backfill.md: '`GET /backfills/{tenantId}?limit=&continuationToken=` | the tenant's jobs, newest
    first, paged with a signed continuation token'; 'Job records stay in `BACKFILL_TABLE` after they end
    (the list shows them)'."""
    t, other = tenant("bflist"), tenant("bflist")
    for x in (t, other):
        app.configure(x, {"destinations": [{"type": "analytics"}, {"type": "redis"}]})
    now = datetime.now(UTC)
    ids = []
    for _ in range(3):  # an empty range: each completes at once (two may be active at a time)
        created = _start(app, t, destination="redis", **_window(now - timedelta(hours=1)))
        assert _ended(app, t, created["jobId"])["state"] == "completed"
        ids.append(created["jobId"])
    r = app.get(f"/backfills/{t}", tenants=[t], params={"limit": "2"})
    assert r.status_code == 200, r.text
    first = r.json()
    assert [j["jobId"] for j in first["jobs"]] == ids[:0:-1] and first["continuationToken"], first
    params = {"limit": "2", "continuationToken": first["continuationToken"]}
    second = app.get(f"/backfills/{t}", tenants=[t], params=params).json()
    assert [j["jobId"] for j in second["jobs"]] == ids[:1] and second["continuationToken"] is None, second
    assert {j["state"] for j in first["jobs"] + second["jobs"]} == {"completed"}
    token = first["continuationToken"]
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for path, token in ((f"/backfills/{other}", token), (f"/backfills/{t}", "forged"),
                        (f"/backfills/{t}", tampered)):
        [error] = _errors(app.get(path, tenants=[t, other], params={"continuationToken": token}), 400)
        assert error["field"] == "continuationToken", (path, error)


# ---- Backfill: delivery --------------------------------------------------------------------------

def test_a_kafka_backfill_takes_time_then_event_id_order_and_todays_format_key_routes_and_filters(
        app: App, own: tuple[Stack, Path]) -> None:
    """docs/backfill.md 'How it runs': events taken 'in (time, eventId) order'; 'the stream config's
    format (JSON or CloudEvents), topic routes and key, ... and the tenant's filters as they are now';
    `eventTypes` / `sources` of the request: only these; `filtered` counts what today's filters drop."""
    stack = own[0]
    t = tenant("bfkafka")
    app.configure(t, {"destinations": [{"type": "analytics"}]})
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=50)
    same = [_event(t, t0, entityId=f"risk-{i}") for i in range(8)]  # one instant: by eventId
    random.shuffle(same)
    tested = [_event(t, t0 + timedelta(seconds=1 + i), eventType="CONTROL_TESTED", source="BACKEND_API",
                     action="TEST", entityId=f"ctl-{i}", entityType="control",
                     data={"result": "pass", "n": i})
              for i in range(6)]
    users = [_event(t, t0 - timedelta(seconds=1 + i), eventType="USER_ACTION", entityId=f"user-{i}")
             for i in range(4)]
    _store(app, t, same + tested + users)
    main, routed = f"bf-main-{uuid.uuid4().hex[:6]}", f"bf-routed-{uuid.uuid4().hex[:6]}"
    for topic in (main, routed):
        create_topic(stack.broker, topic)
    kafka = {"type": "kafka", "config": {"format": "cloudevents", "key": "entityId",
                                         "routes": [{"topic": routed, "eventTypes": ["CONTROL_TESTED"]}]}}
    app.configure(t, {"topics": [main], "filters": [{"sources": ["ARCHER_GRC"]}],
                      "destinations": [{"type": "analytics"}, kafka]})
    window = _window(t0 - timedelta(minutes=5))
    done = _ended(app, t, _start(app, t, destination="kafka", eventTypes=["RISK_UPDATED", "CONTROL_TESTED"],
                                 **window)["jobId"])
    p = done["progress"]
    assert done["state"] == "completed", done
    assert (p["read"], p["delivered"], p["filtered"], p["skippedDuplicates"]) == (14, 8, 6, 0), p
    _outcomes_add_up(p)
    records = topic_records(stack.broker, main, expect=8, with_value=True, with_place=True)
    in_order = sorted(same, key=lambda e: e["eventId"])
    assert [r["eventId"] for r in records] == [e["eventId"] for e in in_order], records
    for r, e in zip(records, in_order):
        assert (r["ce_id"], r["ce_specversion"], r["ce_type"], r["key"]) == (
            e["eventId"], "1.0", "com.grc.RISK_UPDATED", e["entityId"]), r
        assert json.loads(r["value"])["data"] == e["data"], r  # the CloudEvent's data
    assert topic_records(stack.broker, routed, settle=0.5) == []  # CONTROL_TESTED were filtered out

    app.configure(t, {"topics": [main], "destinations": [{"type": "analytics"}, kafka]})  # no filters now
    done = _ended(app, t, _start(app, t, destination="kafka", sources=["BACKEND_API"], **window)["jobId"])
    p = done["progress"]
    assert done["state"] == "completed" and (p["read"], p["delivered"], p["filtered"]) == (6, 6, 0), done
    want = [e["eventId"] for e in tested]  # time order
    main_ids = [r["eventId"] for r in topic_records(stack.broker, main, expect=14)]
    assert main_ids[8:] == want and len(main_ids) == 14, main_ids
    assert [r["eventId"] for r in topic_records(stack.broker, routed, expect=6)] == want


def test_a_backfill_takes_from_inclusive_and_to_exclusive_and_its_position_is_the_last_event_done(
        app: App) -> None:
    """docs/backfill.md 'API': '`from` (inclusive), `to` (exclusive)'; 'Progress': '`position` (time of the
    last event done)'."""
    t = tenant("bfrange")
    app.configure(t, {"destinations": [{"type": "analytics"}]})
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    end = start + timedelta(minutes=5)
    named = {k: _event(t, at) for k, at in (("before", start - timedelta(milliseconds=1)), ("from", start),
                                            ("last", end - timedelta(milliseconds=1)), ("to", end))}
    _store(app, t, list(named.values()))
    app.configure(t, {"destinations": [{"type": "analytics"}, {"type": "redis"}]})
    done = _ended(app, t, _start(app, t, destination="redis", **_window(start, end))["jobId"])
    assert done["state"] == "completed" and done["progress"]["delivered"] == 2, done
    assert _instant(done["progress"]["position"]) == end - timedelta(milliseconds=1), done["progress"]
    r = app.get(f"/events/{t}", tenants=[t])
    assert r.status_code == 200, r.text
    assert sorted(e["event"]["eventId"] for e in r.json()["events"]) == sorted(
        named[k]["eventId"] for k in ("from", "last")), r.text


def _search_ids(app: App, t: str) -> list[str]:
    r = app.get(f"/search/{t}", tenants=[t], params={"q": "access review control", "k": "50"})
    assert r.status_code == 200, r.text
    return [h["eventId"] for h in r.json()["hits"]]


def test_a_vector_backfill_run_again_rewrites_the_same_documents(app: App, own: tuple[Stack, Path]) -> None:
    """docs/backfill.md 'Guarantees': 'Vector: the index upserts by eventId, so a re-run rewrites the same
    documents'. Two jobs over the same history; after each, once `index_vectors` has emptied its queue,
    the tenant's index holds each event once."""
    stack = own[0]
    t = tenant("bfvec")
    app.configure(t, {"destinations": [{"type": "analytics"}]})
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    events = [_event(t, at + timedelta(seconds=i), eventType="CONTROL_FAILED", action="TEST",
                     entityId=f"ctl-{i}", entityType="control",
                     data={"name": f"Quarterly access review {i}", "status": "failed"}) for i in range(3)]
    _store(app, t, events)
    app.configure(t, {"destinations": [{"type": "analytics"}, {"type": "vector"}]})
    queue = app.env["VECTOR_QUEUE"]
    window = _window(at - timedelta(minutes=1))
    for run in range(2):
        done = _ended(app, t, _start(app, t, destination="vector", **window)["jobId"])
        assert done["state"] == "completed" and done["progress"]["delivered"] == 3, (run, done)
        wait_for(lambda: stack.queue_depth(queue) == 0, 90, 0.5, "index_vectors emptied its queue")
        assert sorted(_search_ids(app, t)) == sorted(e["eventId"] for e in events), run


def test_progress_counts_refusals_and_stored_events_no_longer_valid_as_dead_lettered(
        app: App, own: tuple[Stack, Path]) -> None:
    """docs/backfill.md 'Progress': `deadLettered` (refused by the destination, or no longer a valid
    event: in the dead-letter store at once); each event read counts once in one of the counters."""
    stack = own[0]
    at = (datetime.now(UTC) - timedelta(minutes=40)).replace(second=0, microsecond=0)
    window = _window(at - timedelta(minutes=5))

    # A stored event that is no longer a valid event (a type the service has since retired), beside
    # valid ones, in the store's own key scheme (docs/analytics.md 'Keys'; the hour's index row is the
    # valid events').
    stale = tenant("bfstale")
    app.configure(stale, {"destinations": [{"type": "analytics"}]})
    _store(app, stale, [_event(stale, at + timedelta(seconds=i)) for i in range(5)])
    app.configure(stale, {"destinations": [{"type": "analytics"}, {"type": "redis"}]})
    retired = _event(stale, at + timedelta(milliseconds=2500), eventType="RISK_ESCALATED")
    ms = _ms(_instant(retired["timestamp"]))
    with _table(stack) as table:
        table.upsert_entity({
            "PartitionKey": f"{stale}_{at:%Y%m%d%H}_{zlib.crc32(retired['eventId'].encode()) % 4:02d}",
            "RowKey": f"{MAX_TS_MS - ms:013d}_{retired['eventId']}", "EventId": retired["eventId"],
            "EventType": "RISK_ESCALATED", "Source": "ARCHER_GRC", "Action": "UPDATE",
            "Payload": json.dumps({**retired, "ingestedAt": retired["timestamp"], "schemaVersion": "1.0",
                                   "correlationId": "c-1"})})

    # A Kafka destination over AMQP with no Event Hubs configured: every delivery refused.
    refused = tenant("bfrefused")
    app.configure(refused, {"destinations": [{"type": "analytics"}]})
    _store(app, refused, [_event(refused, at + timedelta(seconds=i)) for i in range(4)])
    app.configure(refused, {"destinations": [{"type": "analytics"}, {
        "type": "kafka", "config": {"transport": "amqp"},
        "retry": {"inProcessAttempts": 1, "attempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 1,
                  "jitter": 0, "timeoutSeconds": 40}}]})

    jobs = {x: _start(app, x, destination=d, **window)["jobId"]
            for x, d in ((stale, "redis"), (refused, "kafka"))}
    ended = {x: _ended(app, x, j) for x, j in jobs.items()}
    for x, done in ended.items():
        assert done["state"] == "completed", done
        _outcomes_add_up(done["progress"])
    counts = ("read", "delivered", "failed", "deadLettered")
    assert [ended[stale]["progress"][k] for k in counts] == [6, 5, 0, 1], ended[stale]
    assert [ended[refused]["progress"][k] for k in counts] == [4, 0, 0, 4], ended[refused]
    [dead] = _dead_letters(app, stale)
    assert dead["eventId"] == retired["eventId"] and dead["destination"] == "redis", dead
    assert "not a valid event" in (dead["lastError"] or ""), dead
    dead = _dead_letters(app, refused)
    assert len(dead) == 4, dead
    assert {(d["destination"], d["reason"]) for d in dead} == {("kafka", "non-transient error")}, dead


def test_a_failing_destination_makes_the_job_wait_then_fail_and_a_waiting_job_is_cancelled_at_once(
        app: App, own: tuple[Stack, Path]) -> None:
    """docs/backfill.md 'A failing destination': 'the job waits (... `retryAt` says when) until the
    destination's retry horizon has passed, then ends `failed` with `lastError`'; 'Cancel': '`DELETE` on
    a job no chunk is running (queued, between chunks, waiting) ends it at once'; '202: `cancelled` ...;
    repeated, the same; 409 for a job that completed or failed'; 'Audit': `backfill.start` (the caller,
    the job), `backfill.cancel` (the caller, state before and after, the position) and `backfill.finish`
    (actor `backfill-runner`: final state, counts, last error)."""
    stack = own[0]
    t = tenant("bfwait")
    app.configure(t, {"destinations": [{"type": "analytics"}]})
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    _store(app, t, [_event(t, at + timedelta(seconds=i)) for i in range(20)])
    # Horizon: one 8 s try; 5 s between tries. The broker is stopped (by PID) for the rest of the test:
    # every send times out (2 s here).
    topic = f"bf-wait-{uuid.uuid4().hex[:6]}"
    create_topic(stack.broker, topic)
    app.configure(t, {"topics": [topic], "destinations": [{"type": "analytics"}, {
        "type": "kafka", "retry": {"inProcessAttempts": 1, "attempts": 0, "backoffSeconds": 5,
                                   "maxBackoffSeconds": 5, "jitter": 0, "timeoutSeconds": 8}}]})
    stack.down("kafka")
    try:
        _waits_then_fails(app, t, _window(at - timedelta(minutes=1)))
    finally:
        stack.up("kafka")


def _waits_then_fails(app: App, t: str, window: dict[str, str]) -> None:
    doomed, cancelled = (_start(app, t, destination="kafka", **window)["jobId"] for _ in range(2))

    def waiting(job_id: str) -> dict[str, Any] | None:
        j = _job(app, t, job_id)
        if j["retryAt"] and (_instant(j["retryAt"]) - datetime.now(UTC)).total_seconds() > 1.5:
            return j
        return None

    seen = wait_for(lambda: waiting(cancelled), 30, 0.1, "the job waiting for the destination")
    assert seen["state"] == "running" and seen["lastError"].startswith("kafka: "), seen
    assert seen["progress"]["delivered"] == 0 and seen["progress"]["read"] == 0, seen
    r = app.request("DELETE", f"/backfills/{t}/{cancelled}", tenants=[t])
    assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text  # at once, not `cancelling`
    assert r.json()["finishedAt"] and r.json()["cancelRequestedAt"], r.text
    again = app.request("DELETE", f"/backfills/{t}/{cancelled}", tenants=[t])
    assert again.status_code == 202 and again.json()["state"] == "cancelled", again.text
    assert again.json()["finishedAt"] == r.json()["finishedAt"]

    done = _ended(app, t, doomed, 60)
    assert done["state"] == "failed" and "retry horizon" in done["lastError"], done
    assert done["retryAt"] is None and done["progress"]["position"] is None, done
    assert done["progress"]["read"] == 0, done
    _errors(app.request("DELETE", f"/backfills/{t}/{doomed}", tenants=[t]), 409)
    assert _job(app, t, doomed)["state"] == "failed"

    finish, start = _audit(app, t, doomed)
    assert (start["action"], start["actor"]) == ("backfill.start", "system-test"), start
    assert start["after"]["jobId"] == doomed, start
    assert (finish["action"], finish["actor"]) == ("backfill.finish", "backfill-runner"), finish
    assert finish["after"]["state"] == "failed" and finish["after"]["lastError"] == done["lastError"], finish
    assert finish["after"]["counts"]["read"] == 0, finish
    trail = _audit(app, t, cancelled)
    assert [a["action"] for a in trail] == ["backfill.finish", "backfill.cancel", "backfill.start"], trail
    cancel = trail[1]
    assert cancel["actor"] == "system-test" and cancel["before"] == {"state": "running"}, cancel
    assert cancel["after"] == {"state": "cancelled", "position": None}, cancel
    assert (trail[0]["actor"], trail[0]["after"]["state"]) == ("backfill-runner", "cancelled"), trail[0]


def test_two_jobs_share_the_default_throttle_a_third_is_429_and_none_spends_the_api_rate_limit(
        app: App) -> None:
    """docs/backfill.md 'Throttle': `BACKFILL_EVENTS_PER_SECOND` (default 500) caps backfill events per
    tenant, 'a token bucket in Redis shared by every instance and every job of the tenant, separate from
    the API's rate limit (a backfill never spends a tenant's request budget)'; 'Limits':
    `BACKFILL_MAX_CONCURRENT_JOBS` (default 2). Each job reads the 1,500 events (in 1.5 s: more than
    1,000 in the first time range read, which is read again shorter)."""
    t = tenant("bfthrottle")
    app.configure(t, {"destinations": [{"type": "analytics"}, {"type": "redis"}]})
    at = datetime.now(UTC).replace(minute=15, second=0, microsecond=0) - timedelta(hours=2)
    _store(app, t, [_event(t, at + timedelta(milliseconds=i)) for i in range(1500)])
    window = _window(at - timedelta(minutes=1), at + timedelta(minutes=1))
    started = time.monotonic()
    jobs = [_start(app, t, destination="redis", **window)["jobId"] for _ in range(2)]
    r = app.post(f"/backfills/{t}", tenants=[t], json={**window, "destination": "redis"})
    assert r.status_code == 429 and sorted(r.json()["activeJobs"]) == sorted(jobs), r.text
    assert r.headers.get("retry-after", "").isdigit(), r.headers
    both_running = False
    while True:
        views = [_job(app, t, j) for j in jobs]
        both_running |= all(0 < v["progress"]["read"] < 1500 for v in views)
        if all(v["state"] == "completed" for v in views):
            break
        assert time.monotonic() - started < 60, views
        time.sleep(0.1)
    took = time.monotonic() - started
    for v in views:
        p = v["progress"]
        assert p["read"] == 1500 and p["delivered"] + p["skippedDuplicates"] == 1500, p
        assert p["hoursTotal"] == p["hoursDone"] == 1 and p["ratePerSecond"] <= DEFAULT_THROTTLE * 1.1, p
    # 3,000 events at 500/s from one bucket (500 at once to begin with): 5 s at least.
    assert both_running and took >= (3000 - DEFAULT_THROTTLE) / DEFAULT_THROTTLE - 0.5, (both_running, took)
    # The API's budget is untouched: 1,500 stored + 1,200 now + the requests fit its burst of 4,000;
    # the 3,000 events backfilled would not have.
    now = datetime.now(UTC)
    for n in range(2):
        r = app.post("/events/bulk", tenants=[t], json={"events": [_event(t, now) for _ in range(600)]})
        assert r.status_code == 200 and r.json()["accepted"] == 600, (n, r.status_code, r.text[:300])
