"""Backfills on the real Redis, Azurite and Kafka broker: the API's validation, limits and audit, and
the runner driven by the local runner's queue listener on the `run_backfill` function (messages
decoded as the host decodes them), through the registered HTTP functions."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localdev import services as localdev_services
from shared.app.services import Services
from shared.core.backfill import JobState
from shared.core.streamconfig import StreamConfigIn
from shared.delivery import backfill_store
from shared.delivery.backfill_store import Conflict
from shared.delivery.pipeline import PublishContext
from shared.destinations.redis_streams import stream_key
from tests.delivery_helpers import down_redis, isolated_services, queue_worker
from tests.functions_client import auth_headers, invoke
from tests.kafka_helpers import TopicReader, headers

pytestmark = pytest.mark.usefixtures("app_env")

HOUR = timedelta(hours=1)
FAST = {"attempts": 1, "inProcessAttempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 1, "jitter": 0,
        "timeoutSeconds": 2}


@pytest.fixture
async def svc(kafka_broker: localdev_services.Running) -> AsyncIterator[Services]:
    suffix = uuid.uuid4().hex[:8]
    async with isolated_services(backfill_queue=f"bf-{suffix}", backfill_table=f"bf{suffix}",
                                 kafka_broker=kafka_broker.settings["KAFKA_BROKER"],
                                 backfill_events_per_second=5000.0) as s:
        yield s
        queue = await s.backfill_queue.get()
        await queue.delete_queue()


def ev(tenant: str, ts: datetime, n: int, **over: Any) -> dict[str, Any]:
    body = {"tenantId": tenant, "eventType": "RISK_UPDATED", "source": "ARCHER_GRC", "action": "UPDATE",
            "entityId": f"risk-{n % 7}", "data": {"n": n}, "eventId": f"ev-{tenant}-{n:05d}",
            "timestamp": ts.isoformat().replace("+00:00", "Z")}
    body.update(over)
    return body


async def seed(svc: Services, tenant: str, n: int, start: datetime, span: timedelta, **over: Any) -> list[dict[str, Any]]:
    """`n` events spread over `span` from `start`, stored in the analytics table only (the history)."""
    await svc.configs.write(tenant, StreamConfigIn.model_validate(
        {"destinations": [{"type": "analytics", "config": {"shards": 3}}]}))
    step = span / n
    events = [ev(tenant, start + step * i, i, **over) for i in range(n)]
    for i in range(0, n, 1000):
        results = await svc.pipeline.publish_raw(events[i:i + 1000], PublishContext())
        assert all(r.status == "accepted" for r in results), [r for r in results if r.status != "accepted"][:2]
    return events


async def configure(svc: Services, tenant: str, *destinations: dict[str, Any], **extra: Any) -> None:
    await svc.configs.write(tenant, StreamConfigIn.model_validate(
        {"destinations": [{"type": "analytics", "config": {"shards": 3}}, *destinations], **extra}))


async def start(tenant: str, **body: Any) -> tuple[int, dict[str, str], Any]:
    return await invoke("start_backfill", "POST", f"/backfills/{tenant}", body, route={"tenantId": tenant})


async def job_of(tenant: str, job_id: str) -> dict[str, Any]:
    status, _, body = await invoke("get_backfill", "GET", f"/backfills/{tenant}/{job_id}",
                                   route={"tenantId": tenant, "jobId": job_id})
    assert status == 200, body
    return body


async def run_jobs(svc: Services, tenant: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run `run_backfill` on the backfill queue, as the host would, until the job has ended."""
    worker = queue_worker("run_backfill", svc.backfill_queue.name)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            await worker.poll_once()
            job = await job_of(tenant, job_id)
            if job["state"] in ("completed", "cancelled", "failed"):
                assert worker.poisoned == 0
                return job
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
    raise AssertionError(f"backfill {job_id} not ended within {timeout} s: {await job_of(tenant, job_id)}")


def span_of(events: list[dict[str, Any]]) -> dict[str, str]:
    first = datetime.fromisoformat(events[0]["timestamp"])
    last = datetime.fromisoformat(events[-1]["timestamp"])
    return {"from": first.isoformat(), "to": (last + timedelta(seconds=1)).isoformat()}


def at_save(monkeypatch: pytest.MonkeyPatch, svc: Services, n: int, before: Callable[[Any], Awaitable[None]]) -> None:
    """Run `before(job record)` ahead of the job store's `n`-th write (1 = the runner taking the job)."""
    store, real_save = svc.backfills, svc.backfills.save
    count = {"n": 0}

    async def save(job_rec: Any, etag: str) -> str:
        count["n"] += 1
        if count["n"] == n:
            await before(job_rec)
        return await real_save(job_rec, etag)

    monkeypatch.setattr(store, "save", save)


def tenant_id(prefix: str = "bf") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---- the API ---------------------------------------------------------------------------------


async def test_start_validates_the_request_with_field_paths(svc: Services) -> None:
    t = tenant_id()
    await configure(svc, t, {"type": "redis"})
    now = datetime.now(UTC)
    cases = [
        ({"from": now.isoformat(), "to": (now - HOUR).isoformat(), "destination": "redis"}, "/to"),
        ({"from": (now - HOUR).isoformat(), "to": (now + HOUR).isoformat(), "destination": "redis"}, "/to"),
        ({"from": (now - timedelta(days=31)).isoformat(), "to": now.isoformat(), "destination": "redis"}, "/from"),
        ({"from": "2026-01-01T00:00:00", "to": now.isoformat(), "destination": "redis"}, "/from"),
        ({"from": (now - HOUR).isoformat(), "to": now.isoformat(), "destination": "analytics"}, "/destination"),
        ({"from": (now - HOUR).isoformat(), "to": now.isoformat(), "destination": "redis",
          "eventTypes": ["NOPE"]}, "/eventTypes/0"),
        ({"from": (now - HOUR).isoformat(), "to": now.isoformat(), "destination": "redis", "extra": 1}, "/extra"),
    ]
    for body, pointer in cases:
        status, _, problem = await start(t, **body)
        assert status == 400, (body, problem)
        assert pointer in [e["pointer"] for e in problem["errors"]], (body, problem)
    # A destination the tenant does not route to: 409, the field named, what to do said.
    status, _, problem = await start(t, **{"from": (now - HOUR).isoformat(), "to": now.isoformat(),
                                           "destination": "kafka"})
    assert status == 409 and problem["errors"][0]["pointer"] == "/destination"
    assert f"PUT /stream-config/{t}" in problem["detail"]
    status, _, listed = await invoke("list_backfills", "GET", f"/backfills/{t}", route={"tenantId": t})
    assert status == 200 and listed["jobs"] == []  # nothing was created


async def test_start_answers_202_with_location_lists_reads_and_audits(svc: Services) -> None:
    t = tenant_id()
    await configure(svc, t, {"type": "redis"})
    now = datetime.now(UTC)
    body = {"from": (now - 3 * HOUR).isoformat(), "to": now.isoformat(), "destination": "redis",
            "eventTypes": ["RISK_UPDATED", "RISK_UPDATED"], "sources": ["ARCHER_GRC"]}
    status, hdrs, job = await start(t, **body)
    assert status == 202, job
    assert hdrs["Location"] == f"/backfills/{t}/{job['jobId']}"
    assert job["state"] == "queued" and job["destination"] == "redis" and job["eventTypes"] == ["RISK_UPDATED"]
    assert job["progress"]["read"] == 0 and job["createdBy"] == "test-client"
    assert await job_of(t, job["jobId"]) == {**job, "updatedAt": None}
    # Newest first, paged with a signed token.
    second = (await start(t, **body))[2]
    status, _, page = await invoke("list_backfills", "GET", f"/backfills/{t}", route={"tenantId": t},
                                   params={"limit": "1"})
    assert status == 200 and [j["jobId"] for j in page["jobs"]] == [second["jobId"]]
    status, _, page2 = await invoke("list_backfills", "GET", f"/backfills/{t}", route={"tenantId": t},
                                    params={"limit": "1", "continuationToken": page["continuationToken"]})
    assert [j["jobId"] for j in page2["jobs"]] == [job["jobId"]] and page2["continuationToken"] is None
    status, _, bad = await invoke("list_backfills", "GET", f"/backfills/{t}", route={"tenantId": t},
                                  params={"continuationToken": "x" + page["continuationToken"]})
    assert status == 400 and bad["errors"][0]["field"] == "continuationToken"
    # Unknown ids (or not this tenant's) are 404.
    other = tenant_id()
    for tenant, job_id in ((t, "bf-0000000000000-00000000"), (t, "nope"), (other, job["jobId"])):
        status, _, problem = await invoke("get_backfill", "GET", f"/backfills/{tenant}/{job_id}",
                                          route={"tenantId": tenant, "jobId": job_id})
        assert status == 404, problem
    trail = (await invoke("get_audit", "GET", f"/audit/{t}", route={"tenantId": t}))[2]["items"]
    starts = [a for a in trail if a["action"] == "backfill.start"]
    assert [a["target"] for a in starts] == [f"backfills/{t}/{second['jobId']}", f"backfills/{t}/{job['jobId']}"]
    assert starts[1]["actor"] == "test-client" and starts[1]["after"]["destination"] == "redis"


async def test_concurrent_jobs_are_limited_per_tenant_with_retry_after(svc: Services) -> None:
    t = tenant_id()
    await configure(svc, t, {"type": "redis"})
    now = datetime.now(UTC)
    body = {"from": (now - HOUR).isoformat(), "to": now.isoformat(), "destination": "redis"}
    first = (await start(t, **body))[2]
    second = (await start(t, **body))[2]
    assert svc.settings.backfill_max_concurrent_jobs == 2
    status, hdrs, problem = await start(t, **body)
    assert status == 429 and hdrs["Retry-After"].isdigit() and int(hdrs["Retry-After"]) >= 1
    assert problem["type"] == "urn:grc:problem:backfill-limit"
    assert sorted(problem["activeJobs"]) == sorted([first["jobId"], second["jobId"]])
    # Another tenant is not affected; a cancelled job frees its slot.
    other = tenant_id()
    await configure(svc, other, {"type": "redis"})
    assert (await start(other, **body))[0] == 202
    status, _, cancelled = await invoke("cancel_backfill", "DELETE", f"/backfills/{t}/{first['jobId']}",
                                        route={"tenantId": t, "jobId": first["jobId"]})
    assert status == 202 and cancelled["state"] == "cancelled" and cancelled["cancelRequestedAt"]
    assert (await start(t, **body))[0] == 202
    # Repeating the cancel is harmless; a completed job cannot be cancelled.
    status, _, again = await invoke("cancel_backfill", "DELETE", f"/backfills/{t}/{first['jobId']}",
                                    route={"tenantId": t, "jobId": first["jobId"]})
    assert status == 202 and again["state"] == "cancelled"
    trail = (await invoke("get_audit", "GET", f"/audit/{t}", route={"tenantId": t}))[2]["items"]
    actions = [a["action"] for a in trail if a["target"].endswith(first["jobId"])]
    assert actions == ["backfill.finish", "backfill.cancel", "backfill.start"]


async def test_a_tenant_keeps_its_newest_job_records_and_older_finished_ones_are_deleted(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job record per request stayed for the table's life; now a new job deletes the tenant's
    finished ones past the newest KEEP_JOBS (queued and running ones are never deleted)."""
    monkeypatch.setattr(backfill_store, "KEEP_JOBS", 2)
    t = tenant_id()
    await configure(svc, t, {"type": "redis"})
    now = datetime.now(UTC)
    body = {"from": (now - HOUR).isoformat(), "to": now.isoformat(), "destination": "redis"}
    ids = []
    for _ in range(3):
        job = (await start(t, **body))[2]
        ids.append(job["jobId"])
        status, _, cancelled = await invoke("cancel_backfill", "DELETE", f"/backfills/{t}/{job['jobId']}",
                                            route={"tenantId": t, "jobId": job["jobId"]})
        assert status == 202 and cancelled["state"] == "cancelled"
        await asyncio.sleep(0.002)  # job ids are by the millisecond
    newest = (await start(t, **body))[2]
    status, _, page = await invoke("list_backfills", "GET", f"/backfills/{t}", route={"tenantId": t})
    assert status == 200 and [j["jobId"] for j in page["jobs"]] == [newest["jobId"], ids[2]]
    for gone in ids[:2]:
        status, _, _ = await invoke("get_backfill", "GET", f"/backfills/{t}/{gone}",
                                    route={"tenantId": t, "jobId": gone})
        assert status == 404


async def test_two_requests_racing_for_the_last_slot_get_one_job(svc: Services) -> None:
    t = tenant_id()
    await configure(svc, t, {"type": "redis"})
    now = datetime.now(UTC)
    body = {"from": (now - HOUR).isoformat(), "to": now.isoformat(), "destination": "redis"}
    assert (await start(t, **body))[0] == 202
    statuses = sorted(s for s, _, _ in await asyncio.gather(*(start(t, **body) for _ in range(4))))
    assert statuses == [202, 429, 429, 429]


# ---- the runner --------------------------------------------------------------------------------


async def test_a_backfill_into_redis_goes_oldest_first_and_a_rerun_only_skips(svc: Services) -> None:
    t = tenant_id()
    start_at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 5 * HOUR
    events = await seed(svc, t, 600, start_at + timedelta(minutes=30), 3 * HOUR)
    # Two events outside the range, and other types/sources the job leaves out.
    await svc.pipeline.publish_raw([ev(t, start_at, 90001), ev(t, start_at + 4 * HOUR, 90002),
                                    ev(t, start_at + 2 * HOUR, 90003, eventType="USER_ACTION"),
                                    ev(t, start_at + 2 * HOUR, 90004, source="MCP_SERVER")], PublishContext())
    await configure(svc, t, {"type": "redis", "config": {"maxLen": None}})
    rng = {"from": (start_at + timedelta(minutes=30)).isoformat(), "to": (start_at + 4 * HOUR).isoformat()}
    status, _, job = await start(t, **rng, destination="redis", eventTypes=["RISK_UPDATED"], sources=["ARCHER_GRC"])
    assert status == 202, job
    done = await run_jobs(svc, t, job["jobId"])
    p = done["progress"]
    assert done["state"] == "completed" and done["finishedAt"], done
    assert (p["read"], p["delivered"], p["skippedDuplicates"], p["failed"], p["deadLettered"]) == (600, 600, 0, 0, 0)
    assert p["hoursTotal"] == p["hoursDone"] == 4 and p["estimatedSecondsLeft"] == 0
    assert p["position"] == events[-1]["timestamp"].replace("Z", ".000Z") or p["position"].startswith(
        events[-1]["timestamp"][:19])
    entries = await svc.redis.xrange(stream_key(t))
    got = [_stream_event(fields)["eventId"] for _, fields in entries]
    assert got == [e["eventId"] for e in events]  # each once, oldest first
    # The same job again: the Redis destination already holds every event (its eventId marker).
    status, _, again = await start(t, **rng, destination="redis", eventTypes=["RISK_UPDATED"], sources=["ARCHER_GRC"])
    done = await run_jobs(svc, t, again["jobId"])
    assert (done["progress"]["delivered"], done["progress"]["skippedDuplicates"]) == (0, 600)
    assert len(await svc.redis.xrange(stream_key(t))) == 600
    trail = (await invoke("get_audit", "GET", f"/audit/{t}", route={"tenantId": t}))[2]["items"]
    [finish] = [a for a in trail if a["action"] == "backfill.finish" and a["target"].endswith(job["jobId"])]
    assert finish["after"]["state"] == "completed" and finish["after"]["counts"]["delivered"] == 600


async def test_history_live_traffic_already_delivered_to_redis_is_skipped_not_appended(svc: Services) -> None:
    """Overlapping live traffic: events published live to analytics and Redis, then backfilled into
    Redis, are found by the live path's own eventId markers and counted as duplicates."""
    t = tenant_id()
    start_at = datetime.now(UTC) - 2 * HOUR
    await configure(svc, t, {"type": "redis"})
    events = [ev(t, start_at + timedelta(seconds=i), i) for i in range(50)]
    results = await svc.pipeline.publish_raw(events, PublishContext())
    assert all(r.status == "accepted" for r in results)
    job = (await start(t, **span_of(events), destination="redis"))[2]
    done = await run_jobs(svc, t, job["jobId"])
    p = done["progress"]
    assert (p["read"], p["delivered"], p["skippedDuplicates"]) == (50, 0, 50), p
    assert len(await svc.redis.xrange(stream_key(t))) == 50


def _stream_event(fields: dict[bytes, bytes]) -> dict[str, Any]:
    import orjson

    return orjson.loads(fields[b"e"])


async def test_stream_filters_apply_and_are_counted(svc: Services) -> None:
    t = tenant_id()
    start_at = datetime.now(UTC) - 2 * HOUR
    events = await seed(svc, t, 40, start_at, HOUR)
    await configure(svc, t, {"type": "redis"},
                    filters=[{"conditions": {"data.n": {"lt": 10}}}])
    job = (await start(t, **span_of(events), destination="redis"))[2]
    done = await run_jobs(svc, t, job["jobId"])
    p = done["progress"]
    assert (p["read"], p["delivered"], p["filtered"]) == (40, 10, 30)
    assert len(await svc.redis.xrange(stream_key(t))) == 10


async def test_kafka_each_once_in_time_order_even_when_a_chunk_dies_after_sending(
        svc: Services, kafka_broker: localdev_services.Running, monkeypatch: pytest.MonkeyPatch) -> None:
    t, topic = tenant_id(), f"bf-{uuid.uuid4().hex[:8]}"
    # As event hubs are provisioned: the producers create no topic.
    localdev_services.create_topics(kafka_broker.settings["KAFKA_BROKER"], topic)
    events = await seed(svc, t, 1500, datetime.now(UTC) - 3 * HOUR, 2 * HOUR)
    await configure(svc, t, {"type": "kafka"}, topics=[topic])
    job = (await start(t, **span_of(events), destination="kafka"))[2]
    # The runner dies (its checkpoint write fails) right after its third sub-batch was sent: the
    # host redelivers the message, the record still names it running, and the next run reads the
    # topic back from the checkpoint's offsets before sending. Counted by the checkpoints that follow
    # a send (delivered grew), not by write number: an hour's end is checkpointed too, and where the
    # hours split the seeded range depends on the clock.
    store, real_save = svc.backfills, svc.backfills.save
    seen = {"delivered": 0, "sends": 0}

    async def save(job_rec: Any, etag: str) -> str:
        if job_rec.counts.delivered > seen["delivered"]:
            seen["delivered"] = job_rec.counts.delivered
            seen["sends"] += 1
            if seen["sends"] == 3:
                raise ConnectionError("runner killed")
        return await real_save(job_rec, etag)

    monkeypatch.setattr(store, "save", save)
    done = await run_jobs(svc, t, job["jobId"])
    p = done["progress"]
    assert done["state"] == "completed"
    assert p["delivered"] + p["skippedDuplicates"] == 1500 and p["skippedDuplicates"] > 0, p
    reader = TopicReader(kafka_broker.settings["KAFKA_BROKER"])
    try:
        records = reader.read(topic, 1500, timeout=20, settle=0.5)
    finally:
        reader.close()
    ids = [headers(m)["eventId"] for m in records]
    assert len(ids) == 1500 and ids == [e["eventId"] for e in events]  # each once, oldest first (one partition)


async def test_a_failing_destination_makes_the_job_wait_then_it_can_be_cancelled(svc: Services) -> None:
    t = tenant_id()
    events = await seed(svc, t, 30, datetime.now(UTC) - 2 * HOUR, HOUR)
    await configure(svc, t, {"type": "redis", "retry": {**FAST, "attempts": 3, "backoffSeconds": 30,
                                                        "maxBackoffSeconds": 30}})
    svc.destinations._built["redis"] = down_redis()  # connection refused: transient
    job = (await start(t, **span_of(events), destination="redis"))[2]
    worker = queue_worker("run_backfill", svc.backfill_queue.name)
    try:
        await worker.poll_once()
    finally:
        await worker.close()
    waiting = await job_of(t, job["jobId"])
    assert waiting["state"] == "running" and waiting["retryAt"] and "redis" in waiting["lastError"]
    assert waiting["progress"]["read"] == 0  # nothing counted until it gets through
    assert svc.settings.retry_queue and await svc.retries._queue.depth() == 0  # nothing parked
    status, _, cancelled = await invoke("cancel_backfill", "DELETE", f"/backfills/{t}/{job['jobId']}",
                                        route={"tenantId": t, "jobId": job["jobId"]})
    assert status == 202 and cancelled["state"] == "cancelled"  # no chunk runs: ended at once


async def test_refused_events_are_dead_lettered_and_counted(svc: Services) -> None:
    t = tenant_id()
    events = await seed(svc, t, 5, datetime.now(UTC) - 2 * HOUR, HOUR)
    # AMQP without an Event Hubs namespace: every send refused (not transient).
    await configure(svc, t, {"type": "kafka", "config": {"transport": "amqp"}, "retry": {**FAST, "timeoutSeconds": 40}})
    job = (await start(t, **span_of(events), destination="kafka"))[2]
    done = await run_jobs(svc, t, job["jobId"])
    assert (done["progress"]["deadLettered"], done["progress"]["delivered"]) == (5, 0)
    listed = (await invoke("list_deadletters", "GET", f"/deadletters/{t}", route={"tenantId": t}))[2]["deadLetters"]
    assert sorted(d["eventId"] for d in listed if d["eventType"] != "SYSTEM_ERROR") == sorted(
        e["eventId"] for e in events)


async def test_cancelling_a_running_job_stops_it_at_its_next_checkpoint(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tenant_id()
    events = await seed(svc, t, 300, datetime.now(UTC) - 2 * HOUR, HOUR)
    await configure(svc, t, {"type": "redis"})
    svc.settings = svc.settings.model_copy(update={"backfill_events_per_second": 200.0})  # sub-batches of 100
    job = (await start(t, **span_of(events), destination="redis"))[2]
    seen: dict[str, int] = {}

    async def cancel_midway(job_rec: Any) -> None:  # after the first sub-batch: the client cancels
        seen["at_cancel"] = job_rec.counts.delivered  # including the sub-batch this write records
        status, _, body = await invoke("cancel_backfill", "DELETE", f"/backfills/{t}/{job['jobId']}",
                                       route={"tenantId": t, "jobId": job["jobId"]})
        assert status == 202 and body["state"] == "cancelling", body

    at_save(monkeypatch, svc, 3, cancel_midway)
    done = await run_jobs(svc, t, job["jobId"])
    # Taken (1st write), sub-batch 1 (2nd), sub-batch 2 (3rd, after the cancel: it conflicts, takes
    # the cancel in, is written, and the chunk ends): nothing is delivered after the cancel.
    assert done["state"] == "cancelled" and done["cancelRequestedAt"], done
    assert done["progress"]["delivered"] == seen["at_cancel"] < 300
    assert len(await svc.redis.xrange(stream_key(t))) == seen["at_cancel"]


async def test_the_throttle_holds_the_job_to_the_setting(svc: Services) -> None:
    t = tenant_id()
    events = await seed(svc, t, 400, datetime.now(UTC) - 2 * HOUR, HOUR)
    await configure(svc, t, {"type": "redis"})
    runner_rate = 200.0
    svc.settings = svc.settings.model_copy(update={"backfill_events_per_second": runner_rate})
    job = (await start(t, **span_of(events), destination="redis"))[2]
    started = time.monotonic()
    done = await run_jobs(svc, t, job["jobId"])
    took = time.monotonic() - started
    assert done["progress"]["delivered"] == 400
    # 400 events at 200/s: at least ~1.5 s (the first sub-batch goes at once).
    assert took >= 400 / runner_rate - 0.6, took
    assert done["progress"]["ratePerSecond"] <= runner_rate * 1.2, done["progress"]


async def test_a_lost_owner_leaves_and_a_stale_message_leaves(svc: Services) -> None:
    """A second message for a job another live message owns leaves it alone (the owner's message
    carries it on); the record's conditional writes keep the two from both checkpointing."""
    t = tenant_id()
    events = await seed(svc, t, 10, datetime.now(UTC) - 2 * HOUR, HOUR)
    await configure(svc, t, {"type": "redis"})
    job = (await start(t, **span_of(events), destination="redis"))[2]
    rec, etag = await svc.backfills.read(t, job["jobId"])  # type: ignore[misc]
    rec.owner, rec.ownerUntil, rec.running = "another-message", time.time() + 300, True
    etag = await svc.backfills.save(rec, etag)
    from shared.delivery.backfill import BackfillRunner, ChunkMessage

    body = ChunkMessage(tenantId=t, jobId=job["jobId"]).model_dump_json()
    assert await BackfillRunner(svc).run(body, "stray-message") == "not owner"
    with pytest.raises(Conflict):
        await svc.backfills.save(rec, "W/\"datetime'2000-01-01T00%3A00%3A00.0000000Z'\"")
    # Its lease ran out (the owner died and its message is gone): the next message takes the job on.
    rec.ownerUntil = time.time() - 1
    await svc.backfills.save(rec, etag)
    assert await BackfillRunner(svc).run(body, "stray-message") == "completed"
    assert (await job_of(t, job["jobId"]))["state"] == JobState.COMPLETED.value


async def test_a_tenant_cannot_reach_another_tenants_jobs(svc: Services) -> None:
    t, other = tenant_id(), tenant_id()
    for x in (t, other):
        await configure(svc, x, {"type": "redis"})
    now = datetime.now(UTC)
    job = (await start(t, **{"from": (now - HOUR).isoformat(), "to": now.isoformat(), "destination": "redis"}))[2]
    mine = auth_headers([other], roles=[])
    for name, method in (("get_backfill", "GET"), ("cancel_backfill", "DELETE")):
        status, _, _ = await invoke(name, method, f"/backfills/{t}/{job['jobId']}",
                                    route={"tenantId": t, "jobId": job["jobId"]}, headers=mine)
        assert status == 403
        status, _, _ = await invoke(name, method, f"/backfills/{other}/{job['jobId']}",
                                    route={"tenantId": other, "jobId": job["jobId"]}, headers=mine)
        assert status == 404  # not in the caller's tenant
    assert (await job_of(t, job["jobId"]))["state"] == "queued"
