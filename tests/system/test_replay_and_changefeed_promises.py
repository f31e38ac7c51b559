"""Promises of docs/delivery.md, docs/change-capture.md and README ("Delivery guarantees", "Change
capture from Cosmos DB") about replays and the change feed's dead letters that no other system test
proved, checked from outside the running app:

- a replay call handles at most 500 dead letters: `{}` replays the first 500 not yet replayed and its
  answer's token the next 500 past those (records that fail again hide none); `ids` naming more than
  500 is refused (400);
- a change-feed event that could not be published on the last retry of its batch is a dead letter of
  kind `changefeed-event` (RowKey `{eventId}__changefeed`, its container, reason and the event), and
  its replay publishes it through the pipeline, to the destination that missed it and not twice to the
  one that had it;
- a stale copy of a document (a version older than the stored one, here a dead-lettered version
  replayed after a newer one was processed) yields nothing;
- the retry drain asks the destination whether a write whose answer was lost landed anyway
  (`landed()`), so such an event counts as delivered, not dead-lettered.

The module has a stack of its own: its tests stop Redis, the Storage Queues (a process of their own, as
in tests/system/test_queue_outage.py) or freeze Table storage, which the session app must never see.
The app's change-feed retries are 50 times shorter (the runner's `--retry-scale 0.02`): the 5 retries
of a batch that cannot be published come within about a second and a half.
"""
from __future__ import annotations

import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from localdev import services
from tests.system.cosmos import Platform, events, iso, wait_events
from tests.system.harness import App, Stack, app_env, own_stack, start_app, tenant, wait_for

STACK = ("redis", "azurite", "azurite-queue", "cosmos")
MAX_REPLAY = 500  # docs/delivery.md: "500 at most per call"
FEED_TIMEOUT = 60.0
REPLAY_TIMEOUT = 180.0  # one HTTP call replaying 500 records, each through the pipeline


@pytest.fixture(scope="module")
def split_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App]]:
    """Redis, Blob + Tables (one Azurite), Storage Queues (an Azurite of its own) and Cosmos, with an
    app whose change-feed retries are 50 times shorter."""
    work: Path = tmp_path_factory.mktemp("replay-changefeed")
    with own_stack(work / "stack", STACK) as stack:
        blob_table, queue = stack.running["azurite"].ports, stack.running["azurite-queue"].ports
        conn = services.azurite_connection_string(blob_table["blob"], queue["queue"], blob_table["table"])
        stack.running["azurite"].settings.update(STORAGE_CONNECTION_STRING=conn, AzureWebJobsStorage=conn)
        env = app_env(stack, work / "app", SYSTEM_PERFORMANCE_EVENTS="false")
        app = start_app(env, work / "app", "--retry-scale", "0.02")
        try:
            Platform(app.env)  # the change-feed processors have started
            yield stack, app
        finally:
            app.stop()


def _state(pid: int) -> str:
    """A process's state letter from /proc (T: stopped by a signal)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def split(split_session: tuple[Stack, App]) -> Iterator[tuple[Stack, App]]:
    """The module's stack and app; every service must be running (not frozen) when a test ends, and no
    queue message may have been given up on (moved to a poison queue)."""
    stack, app = split_session
    yield stack, app
    frozen = [n for n, r in stack.running.items() if r.proc.poll() is None and _state(r.proc.pid) == "T"]
    for name in frozen:
        os.killpg(stack.running[name].proc.pid, signal.SIGCONT)
    stopped = [name for name in stack.running if not stack.is_up(name)]
    for name in stopped:
        stack.up(name)
    assert not frozen and not stopped, f"the test left services frozen {frozen} or stopped {stopped}"
    assert app.alive(), "the app died"
    assert not (poisoned := stack.poison_counts()), f"messages moved to poison queues: {poisoned}"


def _dead(app: App, t: str, **params: str) -> list[dict[str, Any]]:
    r = app.get(f"/deadletters/{t}", params={"limit": "1000", **params}, tenants=[t])
    assert r.status_code == 200, r.text
    assert r.json()["continuationToken"] is None, "one page expected"
    return list(r.json()["deadLetters"])


def _replay(app: App, t: str, body: dict[str, Any]) -> dict[str, Any]:
    r = app.post(f"/deadletters/{t}/replay", json=body, tenants=[t], timeout=REPLAY_TIMEOUT)
    assert r.status_code == 200, r.text[:2000]
    return dict(r.json())


def _redis_back(stack: Stack, app: App, t: str) -> None:
    """Redis started again, and the app reading it (GET /events answers 503 while it cannot)."""
    stack.up("redis")
    wait_for(lambda: app.get(f"/events/{t}", tenants=[t]).status_code == 200, 30, 0.2, what="Redis answering")


def _risk(t: str, id_: str, **fields: Any) -> dict[str, Any]:
    return {"id": id_, "tenantId": t, "title": f"Risk {id_}", "status": "open", "score": 5, **fields}


# -- 1. The replay's per-call cap ------------------------------------------------------------------

def _dead_lettered(app: App, t: str, container: str, n: int,
                   doc: Callable[[int], dict[str, Any]]) -> list[str]:
    """Writes `n` documents to `container` and waits until all are dead letters; their ids."""
    docs = Platform(app.env).container(container)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: docs.create_item({**doc(i), "createdAt": iso(), "updatedAt": iso()}),
                      range(n)))
    dead = wait_for(lambda: d if len(d := _dead(app, t)) >= n else None, FEED_TIMEOUT, 0.5,
                    what=f"{n} documents dead-lettered")
    assert len(dead) == n and {d["kind"] for d in dead} == {"changefeed-document"}, dead[:3]
    return [d["id"] for d in dead]


@pytest.mark.timeout(300)  # 1,010 documents dead-lettered, six replays of up to 500
def test_a_replay_takes_500_dead_letters_per_call_and_its_token_the_next_500_past_those(
        split: tuple[Stack, App]) -> None:
    """docs/delivery.md: `{}` replays the first 500 records not yet replayed, and the answer's
    `continuationToken`, sent back as `{"continuationToken": ...}`, the next 500 past those, so records
    that fail again do not hide the rest; `ids` has `maxItems: 500` (OpenAPI). README: a change-feed
    document goes 'through the mapping again'; replays are audited.

    505 documents are dead-lettered while Redis (the entity state) is down through every retry of their
    batches; with Redis back, `{}` then its token replay all 505, each document's event once. 505
    documents of another tenant that can never be mapped: `{}` fails the first 500 again and answers a
    token, which takes the 5 others; `{}` alone would take the same 500 again."""
    stack, app = split
    n = MAX_REPLAY + 5
    t, stuck = tenant("cap"), tenant("capx")
    stack.down("redis")
    try:
        ids = _dead_lettered(app, t, "risks", n, lambda i: _risk(t, f"r-{i:03d}"))
    finally:
        _redis_back(stack, app, t)

    # More than 500 ids: refused whole, with the field named; nothing replayed.
    r = app.post(f"/deadletters/{t}/replay", json={"ids": ids[:MAX_REPLAY + 1]}, tenants=[t])
    assert r.status_code == 400, r.text[:2000]
    assert [e["pointer"] for e in r.json()["errors"]] == ["/ids"], r.text[:2000]

    first = _replay(app, t, {})
    assert (first["total"], first["counts"]) == (MAX_REPLAY, {"processed": MAX_REPLAY}), first["counts"]
    assert first["continuationToken"], "more records are left: the answer must say where they start"
    rest = _replay(app, t, {"continuationToken": first["continuationToken"]})
    assert (rest["total"], rest["counts"], rest["continuationToken"]) == (n - MAX_REPLAY, {
        "processed": n - MAX_REPLAY}, None), rest["counts"]
    assert {x["id"] for x in first["results"]} | {x["id"] for x in rest["results"]} == set(ids)
    assert _replay(app, t, {}) == {"tenantId": t, "total": 0, "counts": {}, "results": [],
                                   "continuationToken": None}
    assert _dead(app, t) == []
    replayed = _dead(app, t, includeReplayed="true")
    assert len(replayed) == n and {d["replayResult"] for d in replayed} == {"processed"}
    created = wait_events(app, t, n, FEED_TIMEOUT, source="COSMOS_DB")
    assert sorted((e["entityId"], e["eventType"]) for e in created) == [
        (f"r-{i:03d}", "RISK_CREATED") for i in range(n)], len(created)
    audit = app.get(f"/audit/{t}", tenants=[t]).json()["items"]  # newest first; the 400 is no replay
    assert [(a["action"], a["after"]["total"]) for a in audit] == [
        ("deadletters.replay", 0), ("deadletters.replay", n - MAX_REPLAY), ("deadletters.replay", MAX_REPLAY)]
    assert [a["before"]["ids"] for a in audit[1:]] == ["all not yet replayed, continued",
                                                       "all not yet replayed"]

    # Records that fail again: the token still reaches the rest.
    never = _dead_lettered(app, stuck, "controls", n, lambda i: {  # lastTest must be an object
        "id": f"c-{i:03d}", "tenantId": stuck, "name": "Backups", "lastTest": "passed"})
    first = _replay(app, stuck, {})
    assert (first["total"], first["counts"]) == (MAX_REPLAY, {"failed": MAX_REPLAY}), first["counts"]
    assert first["continuationToken"]
    rest = _replay(app, stuck, {"continuationToken": first["continuationToken"]})
    assert (rest["total"], rest["counts"], rest["continuationToken"]) == (n - MAX_REPLAY, {
        "failed": n - MAX_REPLAY}, None), rest["counts"]
    assert {x["id"] for x in first["results"]} | {x["id"] for x in rest["results"]} == set(never)
    again = _replay(app, stuck, {})
    # `{}` alone: the same 500 again.
    assert {x["id"] for x in again["results"]} == {x["id"] for x in first["results"]}
    assert len(_dead(app, stuck)) == n  # nothing that failed was marked replayed

    # A token is refused where it was not issued: edited, another tenant's, a listing's, not a string.
    token = first["continuationToken"]
    listing = app.get(f"/deadletters/{stuck}", params={"limit": "10"}, tenants=[stuck])
    listing = listing.json()["continuationToken"]
    for target, bad in ((stuck, token[:-2] + "xx"), (t, token), (stuck, listing), (stuck, 7), (stuck, "")):
        r = app.post(f"/deadletters/{target}/replay", json={"continuationToken": bad}, tenants=[target])
        assert r.status_code == 400, (bad, r.text)
        assert [e["pointer"] for e in r.json()["errors"]] == ["/continuationToken"], r.text


# -- 2. Dead letters of kind changefeed-event ------------------------------------------------------

def _indexed(app: App, t: str, event_type: str) -> list[str]:
    r = app.get(f"/search/{t}", tenants=[t],
                params={"q": "risk vendor breach", "k": "10", "eventType": event_type})
    assert r.status_code == 200, r.text
    return sorted(h["eventId"] for h in r.json()["hits"])


def test_a_change_feed_event_not_published_after_the_last_retry_is_listed_and_replayed(
        split: tuple[Stack, App]) -> None:
    """docs/change-capture.md: 'on the last attempt ... the unpublished events are **dead-lettered**
    instead'; 'kind `changefeed-event` (one row per event, RowKey `{eventId}__changefeed`) ... with
    `Container`, `Reason`, `Attempts`, `LastError` and the payload. They are listed and replayed like any
    dead letter, `GET /deadletters/{tenantId}` and `POST /deadletters/{tenantId}/replay` (audited): an
    event is published through the pipeline again (its idempotency claim keeps that from delivering it
    twice)'.

    The tenant streams to Redis and to the vector index, which needs Storage Queues (as does parking a
    failed delivery): with the queue service stopped, the change's event reaches Redis but can neither
    reach the index nor be parked, so it is unpublished through every retry of its batch."""
    stack, app = split
    t = tenant("cfev")
    app.configure(t, {"destinations": [{"type": "redis"},
                                       {"type": "vector", "retry": {"inProcessAttempts": 1}}]})
    p = Platform(app.env)
    stack.down("azurite-queue")
    try:
        doc = p.create("risks", _risk(t, "r-vendor", title="Vendor breach at the payroll provider"))
        [dead] = wait_for(lambda: _dead(app, t), 120, 0.5, what="the change's event dead-lettered")
    finally:
        stack.up("azurite-queue")

    # Listed: its kind, id, container, reason, attempts, last error and the event itself.
    event = dead["event"]
    assert (dead["kind"], dead["id"]) == ("changefeed-event", f"{event['eventId']}__changefeed"), dead
    assert (dead["container"], dead["reason"]) == ("risks", "not published after the last retry"), dead
    # The batch's attempts (the first and the change-feed retry policy's 5 retries), and why the last
    # one failed: the destination that missed it.
    assert dead["attempts"] == 6 and dead["destination"] is None, dead
    assert "vector" in dead["lastError"] and "parked" in dead["lastError"], dead["lastError"]
    assert (dead["eventId"], dead["eventType"]) == (event["eventId"], "RISK_CREATED"), dead
    assert (event["entityId"], event["source"], event["tenantId"]) == ("r-vendor", "COSMOS_DB", t), event
    assert event["metadata"]["changeFeed"]["lsn"] == doc["_lsn"], event["metadata"]
    assert not dead["replayed"] and dead["deadLetteredAt"], dead
    # Redis had it from the first attempt: it is in the tenant's stream once already.
    assert [e["eventId"] for e in events(app, t, source="COSMOS_DB")] == [event["eventId"]]

    r = _replay(app, t, {"ids": [dead["id"]]})
    assert r["results"] == [{"id": dead["id"], "result": "published"}], r
    # The index, which missed it, has it now; Redis, which had it, not a second time. (The replay goes
    # through the pipeline like live traffic: while the index is still paused for the tenant after the
    # outage, the replay parks it and the retry queue's drain delivers it moments later.)
    assert wait_for(lambda: _indexed(app, t, "RISK_CREATED"), 90, 0.5,
                    what="the replayed event indexed") == [event["eventId"]]
    assert [e["eventId"] for e in events(app, t, source="COSMOS_DB")] == [event["eventId"]]
    assert _dead(app, t) == []
    [kept] = _dead(app, t, includeReplayed="true")
    assert (kept["id"], kept["replayed"], kept["replayResult"]) == (dead["id"], True, "published"), kept
    again = _replay(app, t, {"ids": [dead["id"]]})
    assert again["results"] == [{"id": dead["id"], "result": "already replayed", "replayResult": "published"}]
    audit = app.get(f"/audit/{t}", tenants=[t]).json()["items"]
    replays = [a for a in audit if a["action"] == "deadletters.replay"]
    assert [a["after"]["counts"] for a in replays] == [{"already replayed": 1}, {"published": 1}], replays


# -- 3. A stale copy of a document yields nothing ----------------------------------------------------

def test_a_stale_copy_of_a_document_yields_nothing(split: tuple[Stack, App]) -> None:
    """docs/change-capture.md "Settled versions": 'A version older than the stored one (a stale copy)
    yields nothing either.'

    Two documents are dead-lettered at their first version (Redis, the entity state, down through every
    retry). With Redis back, one of them is edited and its new version processed. A replay of both
    then publishes the untouched one's creation (its copy is the newest), and nothing for the edited
    one: its dead-lettered copy is older than the version the service has seen since."""
    stack, app = split
    t = tenant("stale")
    p = Platform(app.env)
    stack.down("redis")
    try:
        untouched = p.create("risks", _risk(t, "r-untouched"))
        edited = p.create("risks", _risk(t, "r-edited", score=3))
        dead = wait_for(lambda: d if len(d := _dead(app, t)) == 2 else None, FEED_TIMEOUT, 0.5,
                        what="both documents dead-lettered")
    finally:
        _redis_back(stack, app, t)
    ids = {d["document"]["id"]: d["id"] for d in dead}
    assert {d["document"]["id"]: d["document"]["_lsn"] for d in dead} == {
        "r-untouched": untouched["_lsn"], "r-edited": edited["_lsn"]}, dead

    newer = p.update("risks", edited, score=9)
    [created] = wait_events(app, t, 1, FEED_TIMEOUT, source="COSMOS_DB")
    assert (created["entityId"], created["eventType"]) == ("r-edited", "RISK_CREATED"), created
    assert created["metadata"]["changeFeed"]["lsn"] == newer["_lsn"] > edited["_lsn"], created

    r = _replay(app, t, {"ids": [ids["r-untouched"], ids["r-edited"]]})
    assert r["counts"] == {"processed": 2}, r
    evs = events(app, t, source="COSMOS_DB")
    got = sorted((e["entityId"], e["eventType"], e["metadata"]["changeFeed"]["lsn"]) for e in evs)
    assert got == [("r-edited", "RISK_CREATED", newer["_lsn"]),
                   ("r-untouched", "RISK_CREATED", untouched["_lsn"])], got
    assert [e["data"]["score"] for e in evs if e["entityId"] == "r-edited"] == [9]


# -- 4. The drain's landed() check ---------------------------------------------------------------------

def _history_ids(app: App, t: str, since: datetime) -> list[str]:
    r = app.get(f"/events/{t}/history", tenants=[t],
                params={"from": iso(since), "limit": "100", "source": "BACKEND_API"})
    assert r.status_code == 200, r.text
    return sorted(e["eventId"] for e in r.json()["events"])


def test_a_write_that_landed_though_its_answer_was_lost_counts_as_delivered_not_dead_lettered(
        split: tuple[Stack, App]) -> None:
    """docs/delivery.md: 'Before dead-lettering after transient failures, the drain asks the destination
    whether the write landed anyway (`landed()`: ... the analytics table the entity), so an event whose
    connection dropped after the command ran counts as delivered, not dead-lettered.' docs/analytics.md:
    '`landed(events)` (used by the retry drain before it dead-letters after transient failures) reads
    the entity by its keys: a write whose answer was lost but which landed counts as delivered.'

    Table storage is frozen (SIGSTOP: it takes the request and answers nothing) while an event is
    written to the tenant's analytics table: the write times out, the delivery is parked (the queues
    are a service of their own and answer), and once Table storage runs again the write it held lands.
    The policy has no queue retries (`attempts: 0`), so the drain makes no write of its own: it can only
    ask the table, find the entity, and count it delivered. Without that check it would be a dead
    letter `retries exhausted`."""
    stack, app = split
    t = tenant("landed")
    app.configure(t, {"destinations": [
        {"type": "redis"},
        {"type": "analytics", "retry": {"attempts": 0, "inProcessAttempts": 1, "timeoutSeconds": 3}}]})
    # Both events in the same hour, so the hour's index row is written (and cached) by the first.
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    since = when - timedelta(minutes=1)

    def body(event_id: str) -> dict[str, Any]:
        return {"tenantId": t, "eventId": event_id, "eventType": "CONTROL_FAILED", "source": "BACKEND_API",
                "action": "TEST", "entityId": "ctl-9", "timestamp": iso(when), "data": {"control": "MFA"}}

    warm = f"ev-{uuid.uuid4().hex[:12]}"
    r = app.post("/events", json=body(warm), tenants=[t])  # the config and the table client are warm now
    assert r.status_code == 201, r.text
    assert {d["destination"]: d["status"] for d in r.json()["destinations"]} == {"redis": "delivered",
                                                                                 "analytics": "delivered"}
    lost = f"ev-{uuid.uuid4().hex[:12]}"
    tables = stack.running["azurite"].proc.pid
    os.killpg(tables, signal.SIGSTOP)
    try:
        r = app.post("/events", json=body(lost), tenants=[t])
    finally:
        os.killpg(tables, signal.SIGCONT)
    assert r.status_code == 201, r.text
    parked = {d["destination"]: d["status"] for d in r.json()["destinations"]}
    assert parked == {"redis": "delivered", "analytics": "parked"}, r.text

    retry_queue = app.env["RETRY_QUEUE"]
    wait_for(lambda: stack.queue_depth(retry_queue) == 0, 60, 0.5, what="the parked delivery drained")
    # The write held while Table storage was frozen landed; the drain counted it, dead-lettered nothing.
    assert _history_ids(app, t, since) == sorted([warm, lost])
    assert _dead(app, t, includeReplayed="true") == []
