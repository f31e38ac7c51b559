"""Backfills through the running app (docs/backfill.md), driven from outside only: HTTP, a Kafka
consumer on the stack's broker, the runner process stopped by PID.

A tenant's history (10,000 events over 10 hours, ending 2 hours ago) is published once through the
bulk API with the analytics destination only, as a tenant whose consumers came later would have it.
Then, with Kafka added to its stream config: a backfill into a fresh topic, each event read once by a
consumer; the same with the runner killed half-way (SIGKILL, mid-chunk) and a new runner started on
the same stack, still each once; a cancelled job that delivers nothing after the cancel; a vector
index rebuilt from history (a new index, as after a model change) that answers the same searches;
and a tenant that can neither start nor read another tenant's jobs.

Runners here are processes of this module on a stack of its own (the session's app must not take
their chunks); each runner that must own a job alone has its own backfill queue (BACKFILL_QUEUE).
"""
from __future__ import annotations

import logging
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.system.harness import App, Stack, app_env, create_topic, own_stack, start_app, tenant, wait_for

STACK = ("redis", "azurite", "cosmos", "kafka")
EVENTS = 10_000
RATE = 2500  # BACKFILL_EVENTS_PER_SECOND of this module's runners: 10,000 events in >= 4 s
SUB_BATCH = 500  # the most the service takes per sub-batch (a fifth of a second of the throttle, 20-500)
LEASE = "5"  # the runner's lease on a running queue message: a killed runner's message is back in 5 s
END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
START = END - timedelta(hours=10)
TYPES = ("RISK_UPDATED", "CONTROL_TESTED", "ASSESSMENT_STARTED", "USER_ACTION")


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    work = tmp_path_factory.mktemp("backfill")
    with own_stack(work / "stack", STACK) as stack:
        yield stack, work


def runner(stack: Stack, work: Path, name: str, **settings: str) -> App:
    # The API's rate limit is raised for storing the history in a few seconds (the backfill throttle
    # is a bucket of its own).
    env = app_env(stack, work / name, **{"SYSTEM_PERFORMANCE_EVENTS": "false", "BACKFILL_EVENTS_PER_SECOND": str(RATE),
                                         "RATE_LIMIT_EVENTS_PER_SECOND": "100000", "RATE_LIMIT_BURST": "100000",
                                         **settings})
    return start_app(env, work / name, "--queue-lease-seconds", LEASE)


@pytest.fixture(scope="module")
def app(own: tuple[Stack, Path]) -> Iterator[App]:
    stack, work = own
    running = runner(stack, work, "main")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def no_poison_here(own: tuple[Stack, Path]) -> Iterator[None]:
    yield
    assert not (poisoned := own[0].poison_counts()), f"messages moved to poison queues: {poisoned}"


@pytest.fixture(scope="module")
def history(app: App) -> tuple[str, list[str]]:
    """A tenant with EVENTS events in the analytics store; their ids in time order."""
    t = tenant("hist")
    r = app.put(f"/stream-config/{t}", tenants=[t], json={"destinations": [{"type": "analytics"}]})
    assert r.status_code == 201, r.text
    step = (END - START) / EVENTS
    ids = []
    started = time.monotonic()
    for first in range(0, EVENTS, 1000):
        batch = []
        for n in range(first, first + 1000):
            eid = f"h-{n:05d}-{uuid.uuid4().hex[:6]}"
            ids.append(eid)
            batch.append({"tenantId": t, "eventType": TYPES[n % 4], "source": "ARCHER_GRC", "action": "UPDATE",
                          "entityId": f"risk-{n % 97}", "entityType": "risk", "eventId": eid,
                          "timestamp": (START + step * n).isoformat().replace("+00:00", "Z"),
                          "data": {"n": n, "score": n % 25, "status": "open"}})
        r = app.post("/events/bulk", tenants=[t], json={"events": batch})
        assert r.status_code == 200 and r.json()["accepted"] == 1000, r.text[:500]
    print(f"history: {EVENTS} events stored through the bulk API in {time.monotonic() - started:.1f} s")
    return t, ids


def with_topic(app: App, t: str, stack: Stack) -> str:
    """The tenant's config gains a Kafka destination on a fresh topic (a consumer added later)."""
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    r = app.put(f"/stream-config/{t}", tenants=[t], json={
        "topics": [topic], "destinations": [{"type": "analytics"}, {"type": "kafka"}]})
    assert r.status_code == 200, r.text
    return topic


def start(app: App, t: str, destination: str, **extra: Any) -> dict[str, Any]:
    r = app.post(f"/backfills/{t}", tenants=[t], json={
        "from": START.isoformat(), "to": END.isoformat(), "destination": destination, **extra})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/backfills/{t}/{r.json()['jobId']}"
    return r.json()


def into_fresh_topic(stack: Stack, app: App, t: str) -> tuple[str, dict[str, Any]]:
    """A Kafka destination on a fresh topic, and a backfill of the history into it (started on `app`)."""
    topic = with_topic(app, t, stack)
    return topic, start(app, t, "kafka")


def job(app: App, t: str, job_id: str) -> dict[str, Any]:
    r = app.get(f"/backfills/{t}/{job_id}", tenants=[t])
    assert r.status_code == 200, r.text
    return r.json()


def ended(app: App, t: str, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    return wait_for(lambda: (j := job(app, t, job_id))["state"] in ("completed", "cancelled", "failed") and j,
                    timeout, 0.25, f"backfill {job_id} ended")


class TopicReader:
    """Reads a topic from the beginning with one consumer, as a consumer of the service would; keeps
    the eventId header of every record, in partition order."""

    def __init__(self, broker: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": broker, "group.id": f"bf-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                                  "logger": logging.getLogger("tests.kafka")})
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.ids: list[str] = []

    def poll(self, wait: float = 0.0) -> int:
        """Read what has arrived (for `wait` s at least); the records read so far."""
        until = time.monotonic() + wait
        while True:
            got = self.consumer.consume(1000, timeout=0.01)
            self.ids += [dict(m.headers() or [])["eventId"].decode() for m in got if m.error() is None]
            if not got and time.monotonic() >= until:
                return len(self.ids)

    def read(self, expect: int, timeout: float = 30.0, settle: float = 1.0) -> list[str]:
        """Until `expect` records arrived (or `timeout`), then `settle` s more for any late duplicate."""
        deadline = time.monotonic() + timeout
        while len(self.ids) < expect and time.monotonic() < deadline:
            self.poll(0.1)
        self.poll(settle)
        return self.ids

    def close(self) -> None:
        self.consumer.close()


def topic_ids(broker: str, topic: str, expect: int, timeout: float = 30.0, settle: float = 1.0) -> list[str]:
    reader = TopicReader(broker, topic)
    try:
        return reader.read(expect, timeout, settle)
    finally:
        reader.close()


def test_10000_history_events_into_kafka_each_once_oldest_first_throttled_and_audited(
        own: tuple[Stack, Path], app: App, history: tuple[str, list[str]]) -> None:
    t, ids = history
    topic, created = into_fresh_topic(own[0], app, t)
    assert created["state"] == "queued" and created["progress"]["read"] == 0
    started = time.monotonic()
    done = ended(app, t, created["jobId"])
    took = time.monotonic() - started
    p = done["progress"]
    assert done["state"] == "completed", done
    assert (p["read"], p["delivered"], p["skippedDuplicates"], p["failed"], p["deadLettered"]) == (EVENTS, EVENTS, 0, 0, 0)
    assert p["hoursTotal"] == p["hoursDone"] == 10 and p["estimatedSecondsLeft"] == 0
    got = topic_ids(own[0].broker, topic, EVENTS)
    assert len(got) == EVENTS and set(got) == set(ids), (len(got), len(set(got)))  # each exactly once
    assert got == ids  # oldest first (the tenant's records share one partition: key = tenantId)
    # The throttle holds: 10,000 events at RATE/s take at least EVENTS/RATE s (less one burst).
    assert took >= EVENTS / RATE - 1.0 and p["ratePerSecond"] <= RATE * 1.1, (took, p)
    print(f"backfill into kafka: {EVENTS} events in {took:.1f} s ({p['ratePerSecond']} events/s by the job; "
          f"throttle {RATE}/s)")
    trail = app.get(f"/audit/{t}", tenants=[t]).json()["items"]
    actions = [a["action"] for a in trail if a["target"] == f"backfills/{t}/{created['jobId']}"]
    assert actions == ["backfill.finish", "backfill.start"]
    listed = app.get(f"/backfills/{t}", tenants=[t]).json()
    assert created["jobId"] in [j["jobId"] for j in listed["jobs"]]


def test_a_runner_killed_half_way_and_a_new_one_still_deliver_each_once(
        own: tuple[Stack, Path], app: App, history: tuple[str, list[str]]) -> None:
    """SIGKILL mid-chunk. The kill is aimed at the moment a sub-batch is in the topic but not yet in
    the checkpoint (the consumer has read more than the job says it delivered); wherever it lands,
    the records beyond the checkpoint are exactly what the new runner finds and skips."""
    stack, work = own
    t, ids = history
    topic = with_topic(app, t, stack)
    queue = {"BACKFILL_QUEUE": f"bf-kill-{uuid.uuid4().hex[:6]}"}  # only these runners take its chunks
    reader = TopicReader(stack.broker, topic)
    try:
        first = runner(stack, work, "kill-1", **queue)
        try:
            created = start(first, t, "kafka")
            wait_for(lambda: job(app, t, created["jobId"])["progress"]["delivered"] >= 2000, 60, 0.05, "under way")
            # Freeze the runner (SIGSTOP) at a random moment and look: records in the topic beyond
            # the checkpoint mean a sub-batch was sent and not yet checkpointed: kill it there.
            # Otherwise let it go on a little and look again (at most until 9,000).
            while True:
                os.kill(first.proc.pid, signal.SIGSTOP)
                seen = reader.poll(0.2)  # what it had sent arrives; it sends nothing more
                delivered = job(app, t, created["jobId"])["progress"]["delivered"]
                if seen > delivered or delivered >= 9000:
                    break
                os.kill(first.proc.pid, signal.SIGCONT)
                time.sleep(random.uniform(0.0, 0.15))
            first.proc.kill()  # SIGKILL: no shutdown, mid-chunk
            first.proc.wait(10)
        finally:
            first.stop()
        after_kill = job(app, t, created["jobId"])
        assert after_kill["state"] == "running" and after_kill["progress"]["delivered"] < EVENTS, after_kill
        beyond = reader.poll(1.5) - after_kill["progress"]["delivered"]  # written, not checkpointed
        counts = ("read", "delivered", "skippedDuplicates", "position")
        assert [job(app, t, created["jobId"])["progress"][k] for k in counts] == [
            after_kill["progress"][k] for k in counts]  # nothing runs it now
        second = runner(stack, work, "kill-2", **queue)
        try:
            done = ended(app, t, created["jobId"])
        finally:
            second.stop()
        p = done["progress"]
        assert done["state"] == "completed", done
        assert p["read"] == EVENTS and p["delivered"] + p["skippedDuplicates"] == EVENTS, p
        assert p["skippedDuplicates"] == beyond, (beyond, p)  # read back from the topic, not sent again
        got = reader.read(EVENTS)
    finally:
        reader.close()
    assert len(got) == EVENTS and set(got) == set(ids), (len(got), len(set(got)))  # still each exactly once
    assert got == ids
    print(f"killed with {after_kill['progress']['delivered']} checkpointed and {beyond} more in the topic; "
          f"a new runner read those back and skipped them, then delivered the other {p['delivered'] - after_kill['progress']['delivered']}")


def test_a_cancelled_job_delivers_nothing_after_the_cancel(
        own: tuple[Stack, Path], app: App, history: tuple[str, list[str]]) -> None:
    t, _ = history
    topic, created = into_fresh_topic(own[0], app, t)
    running = wait_for(lambda: (j := job(app, t, created["jobId"]))["progress"]["delivered"] >= 1000 and j,
                       60, 0.05, "under way")
    p = running["progress"]
    assert running["state"] == "running" and p["hoursTotal"] == 10, running
    assert START < datetime.fromisoformat(p["position"].replace("Z", "+00:00")) < END, running
    # The estimate: the rest of the range (events spread evenly here) at the rate so far.
    expected = (EVENTS - p["read"]) / p["ratePerSecond"]
    assert expected / 2 <= p["estimatedSecondsLeft"] <= expected * 2, p
    r = app.request("DELETE", f"/backfills/{t}/{created['jobId']}", tenants=[t])
    assert r.status_code == 202 and r.json()["state"] in ("cancelling", "cancelled"), r.text
    at_cancel = r.json()["progress"]["delivered"]
    done = ended(app, t, created["jobId"], 30)
    assert done["state"] == "cancelled" and done["cancelRequestedAt"], done
    # Within one sub-batch: the one in flight when the cancel came, then nothing.
    assert at_cancel <= done["progress"]["delivered"] <= at_cancel + SUB_BATCH < EVENTS, (at_cancel, done)
    got = topic_ids(own[0].broker, topic, done["progress"]["delivered"], timeout=10, settle=2.0)
    assert len(got) == done["progress"]["delivered"] == len(set(got))
    trail = [a["action"] for a in app.get(f"/audit/{t}", tenants=[t]).json()["items"]
             if a["target"].endswith(created["jobId"])]
    assert trail == ["backfill.finish", "backfill.cancel", "backfill.start"]
    assert app.request("DELETE", f"/backfills/{t}/{created['jobId']}", tenants=[t]).status_code == 202


QUESTIONS = ("failed SOC 2 change approvals", "ransomware on file servers", "DPIA missing", "backup restore test")


def _vector_events(t: str) -> list[dict[str, Any]]:
    at = START + timedelta(minutes=7)
    rows = [
        ("CONTROL_FAILED", "SC-CC8", {"name": "Change approval before deployment", "status": "failed",
                                      "description": "4 of 60 production deployments had no approved ticket."}),
        ("CONTROL_TESTED", "SC-CC8", {"name": "Change approval before deployment", "result": "passed",
                                      "description": "all 60 production deployments had an approved ticket."}),
        ("COMPLIANCE_GAP_DETECTED", "GDPR-35", {"title": "No data protection impact assessment before "
                                                         "launching employee monitoring"}),
        ("CONTROL_TESTED", "BC-1", {"name": "Quarterly restore test of the customer database backup",
                                    "result": "passed"}),
        ("RISK_CREATED", "R-1", {"title": "Ransomware encrypting file servers", "severity": "high"}),
        ("RISK_UPDATED", "R-2", {"title": "Vendor data breach exposes customer records", "score": 20}),
        ("POLICY_VIOLATION", "P-7", {"title": "Shared admin account used on the payroll system"}),
        ("ASSESSMENT_STARTED", "A-3", {"title": "Annual ISO 27001 internal audit", "status": "in_progress"}),
    ]
    return [{"tenantId": t, "eventType": et, "source": "ARCHER_GRC", "action": "UPDATE", "entityType": "control",
             "entityId": eid, "data": data, "eventId": f"v-{i}-{uuid.uuid4().hex[:6]}",
             "timestamp": (at + timedelta(minutes=9 * i)).isoformat()} for i, (et, eid, data) in enumerate(rows)]


def _answers(app: App, t: str) -> dict[str, list[str]]:
    out = {}
    for q in QUESTIONS:
        r = app.get(f"/search/{t}", tenants=[t], params={"q": q, "k": "5"})
        assert r.status_code == 200, r.text
        out[q] = [h["eventId"] for h in r.json()["hits"]]
    return out


def _indexed(app: App, t: str, n: int) -> bool:
    return app.get(f"/search/{t}", tenants=[t], params={"q": "control risk", "k": "50"}).json()["count"] == n


def test_a_vector_index_rebuilt_from_history_answers_the_same_searches(own: tuple[Stack, Path], app: App) -> None:
    stack, work = own
    t = tenant("vec")
    r = app.put(f"/stream-config/{t}", tenants=[t], json={"destinations": [{"type": "analytics"},
                                                                           {"type": "vector"}]})
    assert r.status_code == 201, r.text
    events = _vector_events(t)
    r = app.post("/events/bulk", tenants=[t], json={"events": events})
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text
    wait_for(lambda: _indexed(app, t, len(events)), 90, 0.5, "indexed live")
    before = _answers(app, t)
    assert all(before.values()), before
    # A new index (as after an embedding model change: a new index name), its own queues; empty.
    fresh = runner(stack, work, "vector-2", VECTOR_SQLITE_PATH=str(work / "vector-2.db"),
                   VECTOR_QUEUE=f"vec-{uuid.uuid4().hex[:6]}", BACKFILL_QUEUE=f"bf-vec-{uuid.uuid4().hex[:6]}")
    try:
        assert fresh.get(f"/search/{t}", tenants=[t], params={"q": "control"}).json()["count"] == 0
        created = start(fresh, t, "vector")
        done = ended(fresh, t, created["jobId"], 60)
        assert done["state"] == "completed" and done["progress"]["delivered"] == len(events), done
        wait_for(lambda: _indexed(fresh, t, len(events)), 90, 0.5, "rebuilt index filled by index_vectors")
        assert _answers(fresh, t) == before
    finally:
        fresh.stop()


def test_a_tenant_cannot_start_or_read_another_tenants_job(app: App) -> None:
    t, intruder = tenant("owner"), tenant("other")
    body = {"from": START.isoformat(), "to": END.isoformat(), "destination": "redis"}  # the default config's
    created = app.post(f"/backfills/{t}", tenants=[t], json=body).json()
    assert "jobId" in created, created
    for method, path, kw in (("POST", f"/backfills/{t}", {"json": body}), ("GET", f"/backfills/{t}", {}),
                             ("GET", f"/backfills/{t}/{created['jobId']}", {}),
                             ("DELETE", f"/backfills/{t}/{created['jobId']}", {})):
        r = app.request(method, path, tenants=[intruder], **kw)
        assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json"), r.text
        assert t not in r.text.replace(path, ""), r.text  # the refusal does not describe the other tenant
    for method in ("GET", "DELETE"):  # its own path with the other's job id: not found there
        r = app.request(method, f"/backfills/{intruder}/{created['jobId']}", tenants=[intruder])
        assert r.status_code == 404, r.text
    assert app.get(f"/backfills/{intruder}", tenants=[intruder]).json()["jobs"] == []
    done = ended(app, t, created["jobId"])
    assert done["state"] == "completed" and done["cancelRequestedAt"] is None
    assert [j["jobId"] for j in app.get(f"/backfills/{t}", tenants=[t]).json()["jobs"]] == [created["jobId"]]


def test_bad_requests_answer_problem_details_naming_the_field(app: App) -> None:
    t = tenant("bad")
    ok = {"from": START.isoformat(), "to": END.isoformat(), "destination": "redis"}  # the default config's
    cases = [
        ({**ok, "from": END.isoformat(), "to": START.isoformat()}, 400, "/to"),  # from after to
        ({**ok, "destination": "ftp"}, 400, "/destination"),  # no such destination
        ({**ok, "destination": "analytics"}, 400, "/destination"),  # the source, not a target
        ({**ok, "eventTypes": ["RISK_CREATED", "NOPE"]}, 400, "/eventTypes/1"),
        ({**ok, "from": "yesterday"}, 400, "/from"),
        ({**ok, "destination": "kafka"}, 409, "/destination"),  # not in the tenant's stream config
    ]
    for body, status, pointer in cases:
        r = app.post(f"/backfills/{t}", tenants=[t], json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), r.headers
        assert pointer in [e["pointer"] for e in r.json()["errors"]], (body, r.text)
    assert app.get(f"/backfills/{t}", tenants=[t]).json()["jobs"] == []  # none was created
    # The four operations are documented with their schemas (from the one route table).
    doc = app.get("/openapi.json").json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if p.startswith("/backfills")}
    assert ops == {("POST", "/backfills/{tenantId}"), ("GET", "/backfills/{tenantId}"),
                   ("GET", "/backfills/{tenantId}/{jobId}"), ("DELETE", "/backfills/{tenantId}/{jobId}")}
    assert {"BackfillRequest", "BackfillJob", "BackfillList"} <= set(doc["components"]["schemas"])


def test_a_third_concurrent_job_is_429_and_a_completed_job_cannot_be_cancelled(own: tuple[Stack, Path]) -> None:
    """BACKFILL_MAX_CONCURRENT_JOBS (default 2) per tenant: a third job while two are queued or running
    is 429 with Retry-After and the active job ids; DELETE on a completed job is 409. A runner of its
    own with a slow throttle (100 events/s on its own queue), so the two jobs are surely still active."""
    stack, work = own
    slow = runner(stack, work, "slow", BACKFILL_EVENTS_PER_SECOND="100", BACKFILL_QUEUE=f"bf-slow-{uuid.uuid4().hex[:6]}")
    try:
        t = tenant("limit")
        r = slow.put(f"/stream-config/{t}", tenants=[t], json={"destinations": [{"type": "analytics"}, {"type": "redis"}]})
        assert r.status_code == 201, r.text
        step = (END - START) / 500
        r = slow.post("/events/bulk", tenants=[t], json={"events": [
            {"tenantId": t, "eventType": "RISK_UPDATED", "source": "ARCHER_GRC", "action": "UPDATE",
             "entityId": f"risk-{n}", "eventId": f"lim-{n:04d}-{uuid.uuid4().hex[:6]}",
             "timestamp": (START + step * n).isoformat().replace("+00:00", "Z"), "data": {"n": n}}
            for n in range(500)]})
        assert r.status_code == 200 and r.json()["accepted"] == 500, r.text[:500]
        first, second = start(slow, t, "redis"), start(slow, t, "redis")  # 5 s each at 100/s, sharing a bucket
        r = slow.post(f"/backfills/{t}", tenants=[t], json={"from": START.isoformat(), "to": END.isoformat(),
                                                             "destination": "redis"})
        assert r.status_code == 429, r.text
        assert r.headers["content-type"].startswith("application/problem+json"), r.headers
        assert r.headers.get("retry-after", "").isdigit() and int(r.headers["retry-after"]) >= 1, r.headers
        assert sorted(r.json()["activeJobs"]) == sorted([first["jobId"], second["jobId"]]), r.text
        assert len(slow.get(f"/backfills/{t}", tenants=[t]).json()["jobs"]) == 2  # the third was not created
        assert slow.request("DELETE", f"/backfills/{t}/{second['jobId']}", tenants=[t]).status_code == 202
        done = ended(slow, t, first["jobId"])
        assert done["state"] == "completed" and done["progress"]["read"] == 500, done  # (Redis held them: skipped)
        r = slow.request("DELETE", f"/backfills/{t}/{first['jobId']}", tenants=[t])
        assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json"), r.text
        assert job(slow, t, first["jobId"])["state"] == "completed"  # unchanged by the refused cancel
        # A slot is free again once the jobs ended: a new job starts.
        ended(slow, t, second["jobId"])
        start(slow, t, "redis")
    finally:
        slow.stop()
