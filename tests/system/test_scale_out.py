"""Scale-out: two app instances (local runner processes) on ONE shared stack, as Azure runs several
instances on one Redis, one Storage account, one Cosmos DB and one Event Hubs namespace. Everything is
driven from outside, concurrently, through both instances at once: what a client can observe.

Promises proved here across instances (each test names the doc sentence it holds the service to):
- one eventId posted to two instances at the same moment, alone or inside bulks: accepted once,
  once in the Redis stream, once on the Kafka topic, once in the analytics history;
- concurrent config writes: a conditional one wins and the other gets 412, unconditional ones are
  both applied, the stored config is one of the two whole; a write made on A routes B's next batch;
- dead letters replayed through two instances at the same moment: each delivered once;
- parked deliveries drained by both instances' queue triggers: each delivered once;
- a backfill started on A and cancelled on B stops; the tenant's job slots hold across instances;
- the rate limit is per tenant across instances, and /metrics counts from both are shared;
- a page token issued by one instance reads the next page on another;
- two runners reading the same change feed (same lease container): each change published once;
- the monitor timer firing on both instances: one SYSTEM_PERFORMANCE per tenant-minute, counting both.

The replay test failed before the fix in shared/delivery/replay.py (each record delivered by both calls:
every event twice on Kafka).
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.system.cosmos import Platform
from tests.system.harness import (App, Stack, app_env, app_running, create_topic, event_body, own_stack,
                                  tenant, topic_records, wait_for)

RATE, BURST = 200, 1000  # per tenant; a tenant of a test below posts fewer events than BURST
SETTINGS = {"RATE_LIMIT_EVENTS_PER_SECOND": str(RATE), "RATE_LIMIT_BURST": str(BURST),
            "KAFKA_DELIVERY_TIMEOUT_MS": "2000", "BACKFILL_EVENTS_PER_SECOND": "400"}
# The monitor's SYSTEM_PERFORMANCE events (EVENT_STREAMING) kept off the topics whose records are counted.
OURS = [{"sources": ["BACKEND_API", "COSMOS_DB"]}]
# Queue retries every second (jitter off); a Kafka attempt outlasts the 2 s delivery timeout + 5 s.
FAST = {"inProcessAttempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 2, "jitter": 0, "timeoutSeconds": 8}


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App, App]]:
    """One stack and two instances on it, for the whole module."""
    work: Path = tmp_path_factory.mktemp("scale-out")
    with own_stack(work / "stack", ("redis", "azurite", "cosmos", "kafka")) as stack, ExitStack() as apps:
        a, b = (apps.enter_context(app_running(app_env(stack, work / f"app{i}", **SETTINGS),
                                               work / f"app{i}")) for i in range(2))
        yield stack, a, b
        assert a.alive() and b.alive(), "an instance died"
        assert not stack.poison_counts(), stack.poison_counts()


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call in its own thread, all released at the same moment; their results in order."""
    gate = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        gate.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(run, c) for c in calls]]


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stream_ids(app: App, t: str) -> Counter[str]:
    r = app.get(f"/events/{t}", params={"limit": 1000}, tenants=[t])
    assert r.status_code == 200, r.text
    return Counter(e["event"]["eventId"] for e in r.json()["events"])


def _history_ids(app: App, t: str) -> Counter[str]:
    out: Counter[str] = Counter()
    token = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"continuationToken": token} if token else {})}
        r = app.get(f"/events/{t}/history", params=params, tenants=[t])
        assert r.status_code == 200, r.text
        out.update(e["eventId"] for e in r.json()["events"])
        if not (token := r.json().get("continuationToken")):
            return out


def _kafka_ids(stack: Stack, topic: str, expect: int, timeout: float = 30) -> Counter[str]:
    return Counter(h.get("eventId", "") for h in topic_records(stack.broker, topic, expect=expect,
                                                               timeout=timeout, settle=2))


def _once_each(where: str, got: Counter[str], ids: list[str]) -> None:
    twice = {i: n for i, n in got.items() if n > 1}
    missing = set(ids) - set(got)
    assert not twice and not missing, f"{where}: {len(twice)} twice {list(twice)[:3]}, {len(missing)} missing"


def _new_topic(stack: Stack) -> str:
    topic = f"so-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    return topic


def test_one_event_id_at_two_instances_at_once_is_accepted_and_delivered_once(
        scaled: tuple[Stack, App, App]) -> None:
    """README: 409 while the same eventId is still being processed by another request, 200 `duplicate` of
    an eventId already accepted; docs/delivery.md: each destination holds an event once by eventId."""
    stack, a, b = scaled
    t, topic = tenant("so-dup"), _new_topic(stack)
    a.configure(t, {"topics": [topic], "destinations": [{"type": "redis"}, {"type": "kafka"},
                                                        {"type": "analytics"}]})
    accepted: Counter[str] = Counter()
    others: Counter[str] = Counter()
    bodies = [event_body(t) for _ in range(60)]

    def single(body: dict[str, Any]) -> None:
        for r in at_once(*(lambda app=app: app.post("/events", json=body, tenants=[t]) for app in (a, b))):
            assert r.status_code in (200, 201, 409), r.text
            status = r.json().get("status", str(r.status_code))
            if status == "accepted":
                accepted[body["eventId"]] += 1
            else:
                others[status] += 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(single, bodies))
    for _ in range(5):
        bulk = [event_body(t) for _ in range(20)]
        bodies += bulk
        for r in at_once(*(lambda app=app: app.post("/events/bulk", json={"events": bulk}, tenants=[t])
                           for app in (a, b))):
            assert r.status_code in (200, 503), r.text  # 503: an event another request held; resend it
            for res in r.json()["results"]:
                if res["status"] == "accepted":
                    accepted[res["eventId"]] += 1
                else:
                    assert res["status"] == "duplicate" or "being processed" in res.get("reason", ""), res
    ids = [body["eventId"] for body in bodies]
    assert sorted(accepted) == sorted(ids) and set(accepted.values()) == {1}, \
        f"accepted twice: {[i for i, n in accepted.items() if n > 1][:3]}; others {others}"
    _once_each("redis", wait_for(lambda: (c := _stream_ids(b, t)) and len(c) >= len(ids) and c, 20), ids)
    _once_each("kafka", _kafka_ids(stack, topic, len(ids)), ids)
    _once_each("analytics", wait_for(lambda: (c := _history_ids(a, t)) and len(c) >= len(ids) and c, 20), ids)


def test_concurrent_config_writes_on_two_instances_and_a_write_on_one_routes_the_other(
        scaled: tuple[Stack, App, App]) -> None:
    """README: If-Match/If-None-Match/`version` -> 412 when it no longer holds, a PUT with none is applied
    after any concurrent one, never 412; 'every instance routes by the new config on its next batch'."""
    stack, a, b = scaled
    t = tenant("so-cfg")
    one = {"destinations": [{"type": "redis"}], "retentionDays": 7, "batchSize": 10}
    two = {"destinations": [{"type": "analytics"}], "retentionDays": 9, "batchSize": 20}

    def put(app: App, body: dict[str, Any], **headers: str) -> Callable[[], int]:
        return lambda: app.put(f"/stream-config/{t}", json=body, tenants=[t], headers=headers).status_code

    def stored() -> tuple[Any, ...]:
        s = b.get(f"/stream-config/{t}", tenants=[t]).json()
        return s["retentionDays"], s["batchSize"], tuple(d["type"] for d in s["destinations"])

    whole = {(7, 10, ("redis",)), (9, 20, ("analytics",))}
    assert sorted(at_once(put(a, one, **{"If-None-Match": "*"}), put(b, two, **{"If-None-Match": "*"}))) \
        == [201, 412]
    for _ in range(8):
        etag = a.get(f"/stream-config/{t}", tenants=[t]).headers["etag"]
        assert sorted(at_once(put(a, one, **{"If-Match": etag}),
                              put(b, two, **{"If-Match": etag}))) == [200, 412]
        assert stored() in whole
        version = b.get(f"/stream-config/{t}", tenants=[t]).json()["version"]
        assert sorted(at_once(put(a, {**one, "version": version}), put(b, {**two, "version": version}))) \
            == [200, 412]
        assert stored() in whole
        assert at_once(put(a, one), put(b, two)) == [200, 200]
        assert stored() in whole
    # B has routed the tenant by the default (Redis); A's write of a Kafka-only config routes B's next one.
    t2, topic = tenant("so-route"), _new_topic(stack)
    assert b.post("/events", json=event_body(t2), tenants=[t2]).status_code == 201
    a.configure(t2, {"topics": [topic], "destinations": [{"type": "kafka"}]})
    r = b.post("/events", json=event_body(t2), tenants=[t2])
    assert r.status_code == 201 and [d["destination"] for d in r.json()["destinations"]] == ["kafka"], r.text


def _dead_letters(app: App, t: str) -> list[dict[str, Any]]:
    r = app.get(f"/deadletters/{t}", params={"limit": 500}, tenants=[t])
    assert r.status_code == 200, r.text
    return [d for d in r.json()["deadLetters"] if d["eventType"] != "SYSTEM_ERROR"]


def test_dead_letters_replayed_through_two_instances_at_once_are_delivered_once(
        scaled: tuple[Stack, App, App]) -> None:
    """docs/delivery.md: 'A record is replayed once (`Replayed`)'; the service's guarantee: each
    acknowledged event at each destination once, or dead-lettered and replayable. Two operators (or an
    operator's retried request landing on another instance) replaying the same records at the same
    moment must not write each event twice to Kafka, where nothing deduplicates it."""
    stack, a, b = scaled
    t, topic = tenant("so-replay"), _new_topic(stack)
    # AMQP with no Event Hubs configured: refused, dead-lettered at once (non-transient).
    a.configure(t, {"filters": OURS, "destinations": [{"type": "kafka", "config": {"transport": "amqp"},
                                                       "retry": {**FAST, "attempts": 1}}]})
    bodies = [event_body(t) for _ in range(20)]
    assert a.post("/events/bulk", json={"events": bodies}, tenants=[t]).status_code == 200
    dead = wait_for(lambda: (d := _dead_letters(a, t)) and len(d) >= len(bodies) and d, 60,
                    what="dead letters")
    a.configure(t, {"topics": [topic], "filters": OURS,
                    "destinations": [{"type": "kafka", "retry": {**FAST, "attempts": 3}}]})
    ids = [d["id"] for d in dead]
    answers = at_once(*(lambda app=app: app.post(f"/deadletters/{t}/replay", json={"ids": ids}, tenants=[t])
                        for app in (a, b)))
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    results = Counter(x["result"] for r in answers for x in r.json()["results"])
    assert results["delivered"] == len(ids), results  # each record delivered by one of the two calls
    _once_each("kafka after two replays at once", _kafka_ids(stack, topic, len(ids)),
               [body["eventId"] for body in bodies])
    assert not _dead_letters(b, t), "records left unreplayed"


def test_parked_deliveries_are_drained_by_both_instances_once_each(scaled: tuple[Stack, App, App]) -> None:
    """docs/delivery.md: what failed is parked, one message per (event, destination), drained by the
    queue trigger: delivered once (both instances' triggers read the one queue)."""
    stack, a, b = scaled
    t, topic = tenant("so-drain"), _new_topic(stack)
    a.configure(t, {"topics": [topic], "filters": OURS,
                    "destinations": [{"type": "kafka", "retry": {**FAST, "attempts": 8}}]})
    stack.down("kafka")
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: (a, b)[i % 2].post("/events", json=event_body(t), tenants=[t]),
                                    range(30)))
    finally:
        stack.up("kafka")
    create_topic(stack.broker, topic)  # the stand-in broker keeps topics in memory only
    assert all(r.status_code == 201 and r.json()["destinations"][0]["status"] == "parked" for r in answers), \
        [r.text for r in answers if r.status_code != 201][:2]
    ids = [r.json()["eventId"] for r in answers]
    _once_each("kafka after the drain", _kafka_ids(stack, topic, len(ids), timeout=60), ids)
    assert "drain_retries" in a.log() and "drain_retries" in b.log()


def test_backfill_cancelled_on_another_instance_and_job_slots_shared(scaled: tuple[Stack, App, App]) -> None:
    """docs/backfill.md: at most BACKFILL_MAX_CONCURRENT_JOBS (2) queued or running per tenant, more is
    429; DELETE: `cancelled`, or `cancelling` until the running chunk's next checkpoint; Kafka: each event
    of the range once per job."""
    stack, a, b = scaled
    t, topic = tenant("so-bf"), _new_topic(stack)
    a.configure(t, {"filters": OURS, "destinations": [{"type": "analytics"}]})
    start = datetime.now(UTC) - timedelta(minutes=30)
    bodies = [event_body(t, timestamp=_iso(start + timedelta(milliseconds=500 * i))) for i in range(900)]
    assert a.post("/events/bulk", json={"events": bodies}, tenants=[t]).status_code == 200
    a.configure(t, {"topics": [topic], "filters": OURS,
                    "destinations": [{"type": "analytics"}, {"type": "kafka"}]})
    job = {"from": _iso(start - timedelta(minutes=1)), "to": _iso(datetime.now(UTC)), "destination": "kafka"}
    starts = at_once(*(lambda app=app: app.post(f"/backfills/{t}", json=job, tenants=[t])
                       for app in (a, b, a, b)))
    assert sorted(r.status_code for r in starts) == [202, 202, 429, 429], [r.text for r in starts]
    first, second = (r.json()["jobId"] for r in starts if r.status_code == 202)

    def progress(app: App, job_id: str) -> dict[str, Any]:
        return dict(app.get(f"/backfills/{t}/{job_id}", tenants=[t]).json())

    wait_for(lambda: progress(b, first)["progress"]["delivered"] > 0, 30, 0.05, "the first job running")
    r = b.request("DELETE", f"/backfills/{t}/{first}", tenants=[t])
    assert r.status_code == 202 and r.json()["state"] in ("cancelled", "cancelling"), r.text
    ended = {"cancelled", "completed", "failed"}
    cancelled = wait_for(lambda: (j := progress(a, first))["state"] in ended and j, 60, 0.3, "cancel")
    done = wait_for(lambda: (j := progress(a, second))["state"] in ended and j, 90, 0.5, "second job")
    assert cancelled["state"] == "cancelled" and done["state"] == "completed", (cancelled, done)
    ids = [body["eventId"] for body in bodies]
    got = _kafka_ids(stack, topic, len(ids) + cancelled["progress"]["delivered"])
    # The completed job wrote each event once, the cancelled one only what it counted before its stop.
    assert set(got) == set(ids) and sum(got.values()) == len(ids) + cancelled["progress"]["delivered"], \
        (sum(got.values()), cancelled["progress"])
    assert cancelled["progress"]["delivered"] < len(ids)


def test_rate_limit_is_per_tenant_across_instances_and_metrics_are_shared(
        scaled: tuple[Stack, App, App]) -> None:
    """docs/security.md: 'A token bucket per tenant in Redis ... shared by all instances ... never let
    through over it'; README: metrics in Redis so every instance shares them, other instances see the
    counts within METRICS_FLUSH_MS."""
    stack, a, b = scaled
    t = tenant("so-rate")
    began = time.monotonic()

    def flood(app: App) -> int:
        bulks = [app.post("/events/bulk", json={"events": [event_body(t) for _ in range(100)]}, tenants=[t])
                 for _ in range(8)]
        return sum(100 for r in bulks if r.status_code == 200)

    passed = sum(at_once(lambda: flood(a), lambda: flood(b)))
    elapsed = time.monotonic() - began
    # One bucket for both: the burst plus what refilled meanwhile; two buckets would pass ~1,600.
    assert BURST - 100 <= passed <= BURST + RATE * elapsed + 100, (passed, elapsed)
    totals = [wait_for(lambda app=app: (m := app.get(f"/metrics/{t}", tenants=[t]).json()["totals"])
                       ["accepted"] == passed and m, 3, 0.1, "the other instance's counts") for app in (a, b)]
    assert totals[0]["accepted"] == totals[1]["accepted"] == passed


def test_a_page_token_of_one_instance_reads_the_next_page_on_another(scaled: tuple[Stack, App, App]) -> None:
    """README: continuation tokens are signed with PAGE_TOKEN_KEY, the same on every instance."""
    stack, a, b = scaled
    t = tenant("so-page")
    a.configure(t, {"destinations": [{"type": "analytics"}]})
    bodies = [event_body(t) for _ in range(7)]
    assert a.post("/events/bulk", json={"events": bodies}, tenants=[t]).status_code == 200
    first = a.get(f"/events/{t}/history", params={"limit": 4}, tenants=[t]).json()
    assert first["continuationToken"], first
    rest = b.get(f"/events/{t}/history", params={"limit": 4, "continuationToken": first["continuationToken"]},
                 tenants=[t])
    assert rest.status_code == 200, rest.text
    seen = [e["eventId"] for e in first["events"] + rest.json()["events"]]
    assert sorted(seen) == sorted(body["eventId"] for body in bodies)


def test_two_runners_on_one_change_feed_publish_each_change_once(scaled: tuple[Stack, App, App]) -> None:
    """README, 'Each change published once': deterministic ids and idempotency claims; here both
    instances read the same containers with the same lease container (the local runner does not
    share the feed's ranges out as the host does), and the Kafka topic still holds each change once."""
    stack, a, b = scaled
    t, topic = tenant("so-cf"), _new_topic(stack)
    a.configure(t, {"topics": [topic], "filters": OURS,
                    "destinations": [{"type": "kafka"}, {"type": "redis"}]})
    platform = Platform(a.env)
    for i in range(30):
        platform.create("risks", {"id": f"r-{i}", "tenantId": t, "title": f"Risk {i}", "status": "open",
                                  "score": i})
    got = _kafka_ids(stack, topic, 30, timeout=60)
    assert len(got) == 30 and set(got.values()) == {1}, got


def test_the_monitor_on_both_instances_sends_one_system_performance_per_tenant_minute(
        scaled: tuple[Stack, App, App]) -> None:
    """README: SYSTEM_PERFORMANCE 'once a minute per tenant that had events in the minute'; the local
    runner fires every timer on every instance (Azure runs a timer on one instance; the monitor's
    tenant-minute claim is what keeps two runs of a minute from both sending). Counts are shared:
    each minute's `accepted` sums what both instances accepted."""
    stack, a, b = scaled
    t = tenant("so-mon")
    sent = 0
    for app in (a, b, a, b):
        assert app.post("/events/bulk", json={"events": [event_body(t) for _ in range(5)]},
                        tenants=[t]).status_code == 200
        sent += 5

    def performance() -> list[dict[str, Any]]:
        r = a.get(f"/events/{t}", params={"limit": 100, "eventType": "SYSTEM_PERFORMANCE"}, tenants=[t])
        return [e["event"]["data"] for e in r.json()["events"]]

    def all_counted() -> list[dict[str, Any]] | None:
        got = performance()
        return got if sum(d["accepted"] for d in got) >= sent else None

    wait_for(all_counted, 130, 1.0, "the monitor's SYSTEM_PERFORMANCE events")
    at_once(lambda: a.run_function("monitor"), lambda: b.run_function("monitor"))  # both again, at once
    time.sleep(3)
    got = performance()
    assert Counter(d["intervalStart"] for d in got).most_common(1)[0][1] == 1, got
    assert sum(d["accepted"] for d in got) == sent, got
