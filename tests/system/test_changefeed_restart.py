"""Change capture across a runner restart and a lease reset (README "Each change published once,
nothing lost" and "Locally"; docs/change-capture.md, the same sections).

The runner keeps its place in each container's feed as a lease document in the lease container
(`{prefix}{database}.{container}`, in Cosmos DB, not on the runner's disk). Stopping it and starting
it again on the same stack must neither replay the changes it already handed over nor skip those
written while it was down. Resetting the leases (deleting the lease documents, which restarts the
feed from the beginning: the triggers set start_from_beginning) replays every document; their
versions are settled, so nothing is published again, even once the idempotency claims have expired.

Each test has a stack of its own: it stops and starts the runner and rewrites the lease container.
"Everything before is processed" is told by a sentinel: the feed of a container is read in order
(the local server has one partition), so once a document written last has its event, every
earlier change of that container has been handled.
"""
from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.cosmos import ContainerProxy, CosmosClient

from tests.system.cosmos import MONITORED, Platform, events, types_by_entity
from tests.system.harness import App, Stack, app_env, own_stack, start_app, tenant, wait_for

STACK = ("redis", "azurite", "cosmos")
FEED_TIMEOUT = 60.0


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    with own_stack(tmp_path / "stack", STACK) as stack:
        yield stack, tmp_path / "app"


def _start(stack: Stack, work: Path, **settings: str) -> App:
    """The runner on the stack; the same settings (database, lease container) every time."""
    return start_app(app_env(stack, work, SYSTEM_PERFORMANCE_EVENTS="false", **settings), work)


def _risk(t: str, id_: str, **fields: Any) -> dict[str, Any]:
    return {"id": id_, "tenantId": t, "title": f"Risk {id_}", "status": "open", "score": 5, **fields}


def _sentinels(app: App, p: Platform, t: str, name: str, expect: int) -> list[dict[str, Any]]:
    """Write a last document to risks, controls and policies, and wait until the tenant has `expect`
    events including the sentinels' (`sentinels(name)`): every change written before is then handled."""
    p.create("risks", _risk(t, f"{name}-r"))
    p.create("controls", {"id": f"{name}-c", "tenantId": t, "name": "Sentinel", "status": "effective"})
    p.create("policies", {"id": f"{name}-p", "tenantId": t, "name": "Sentinel",
                          "violations": [{"id": "v0", "severity": "low"}]})

    def all_there() -> list[dict[str, Any]] | None:
        evs = events(app, t, source="COSMOS_DB")
        return evs if set(sentinels(name)) <= {e["entityId"] for e in evs} and len(evs) >= expect else None

    return wait_for(all_there, FEED_TIMEOUT, 0.5, f"the {name} sentinels' events")


def sentinels(name: str) -> dict[str, list[str]]:
    """The events of a set of sentinels, by entity."""
    return {f"{name}-r": ["RISK_CREATED"], f"{name}-c": ["CONTROL_CREATED"],
            f"{name}-p": ["POLICY_VIOLATION"]}


def _feed_start_line(app: App, kind: str, where: str) -> str:
    """The runner's log line saying where a trigger's feed reading started."""
    container = app.env[f"COSMOS_{kind.upper()}_CONTAINER"]
    return f"changefeed_{kind}: {app.env['COSMOS_DB_DATABASE']}/{container} from {where}"


def _assert_once(evs: list[dict[str, Any]]) -> None:
    ids = Counter(e["eventId"] for e in evs)
    assert not [i for i, n in ids.items() if n > 1], [e for e in evs if ids[e["eventId"]] > 1]


def _window(app: App, t: str, accepted: int) -> dict[str, Any]:
    """The tenant's counters of the last hour (the test takes a few minutes at most), once at least
    `accepted` events are counted: a batch's events are in the stream before its counts are recorded
    (after its idempotency settle), so a read right after the events are seen can miss the last batch."""
    def counted() -> dict[str, Any] | None:
        r = app.get(f"/metrics/{t}", tenants=[t])
        assert r.status_code == 200, r.text
        window: dict[str, Any] = r.json()["windows"]["1h"]
        return window if window["accepted"] >= accepted else None

    return wait_for(counted, FEED_TIMEOUT, 0.2, f"{accepted} accepted events in the metrics")


def test_a_runner_restart_neither_replays_nor_skips(own: tuple[Stack, Path]) -> None:
    stack, work = own
    t = tenant("rs")
    app = _start(stack, work)
    try:
        p = Platform(app.env)
        risks = [p.create("risks", _risk(t, f"r-{i}")) for i in range(5)]
        control = p.create("controls", {"id": "c-0", "tenantId": t, "name": "MFA", "status": "effective"})
        before = _sentinels(app, p, t, "s1", 5 + 1 + 3)
        assert types_by_entity(before) == {**{f"r-{i}": ["RISK_CREATED"] for i in range(5)},
                                           "c-0": ["CONTROL_CREATED"], **sentinels("s1")}, before
    finally:
        app.stop()  # SIGTERM: the runner finishes the batch in hand and stores its lease, then exits

    # Written while no runner reads the feed: edits of documents already handed over, and new ones.
    p.update("risks", risks[0], score=9)
    p.update("risks", risks[1], status="closed")
    p.update("controls", control, lastTest={"result": "fail", "testedAt": risks[0]["updatedAt"]})
    for i in range(5, 8):
        p.create("risks", _risk(t, f"r-{i}"))

    app = _start(stack, work)
    try:
        new = {"r-0": ["RISK_UPDATED"], "r-1": ["RISK_UPDATED", "RISK_STATUS_CHANGED"],
               "c-0": ["CONTROL_UPDATED", "CONTROL_TESTED", "CONTROL_FAILED"],
               **{f"r-{i}": ["RISK_CREATED"] for i in range(5, 8)}, **sentinels("s2")}
        after = _sentinels(app, p, t, "s2", len(before) + sum(map(len, new.values())))
        # The first run's events unchanged and first; then each change made while down, once.
        assert after[:len(before)] == before
        assert types_by_entity(after[len(before):]) == new, after[len(before):]
        _assert_once(after)
        # The feed itself resumed where it stopped: no batch re-delivered (a re-delivered change
        # would count as a duplicate even though its claims keep it from being published twice).
        for kind in ("risks", "controls", "policies"):
            assert _feed_start_line(app, kind, "its lease") in app.log(), app.log()[-3000:]
        window = _window(app, t, len(after))
        assert window["duplicates"] == 0, window
    finally:
        app.stop()


def _leases(env: dict[str, str]) -> ContainerProxy:
    """The lease container, read and written as an operator does (no runner needed)."""
    client = CosmosClient(env["COSMOS_DB_ENDPOINT"], env["COSMOS_DB_KEY"], connection_verify=False,
                          enable_endpoint_discovery=False)
    database = client.get_database_client(env["COSMOS_DB_DATABASE"])
    return database.get_container_client(env["COSMOS_LEASE_CONTAINER"])


def _lease_documents(env: dict[str, str]) -> list[str]:
    query = _leases(env).query_items("SELECT c.id FROM c", enable_cross_partition_query=True)
    return [d["id"] for d in query]


def _reset_leases(env: dict[str, str], keep_markers: bool) -> list[str]:
    """What an operator does to re-read the feeds from the start: delete the lease documents (with
    `keep_markers`, the lease stores' `.info` markers stay: the processors' start is unchanged;
    without, the leases are reset whole, as a new lease prefix would be). The ids deleted."""
    leases = _leases(env)
    gone = [i for i in _lease_documents(env) if not (keep_markers and i.endswith(".info"))]
    for i in gone:
        leases.delete_item(i, partition_key=i)
    return gone


def _expire_claims(stack: Stack, t: str) -> int:
    """The tenant's idempotency claims gone, as after CHANGEFEED_DEDUP_TTL_HOURS: what still keeps a
    replayed change from being published again is its settled version."""
    r = stack.redis()
    try:
        keys = list(r.scan_iter(match=f"grc:{{{t}}}:idem:*", count=1000))
        if keys:
            r.delete(*keys)
        return len(keys)
    finally:
        r.close()


@pytest.mark.parametrize("keep_markers", [True, False], ids=["leases-reset", "lease-store-reset"])
def test_a_lease_reset_replays_the_feed_and_publishes_nothing_again(own: tuple[Stack, Path],
                                                                    keep_markers: bool) -> None:
    stack, work = own
    t = tenant("lr")
    app = _start(stack, work)
    try:
        p = Platform(app.env)
        for i in range(4):
            p.create("risks", _risk(t, f"r-{i}", status="mitigating" if i % 2 else "open"))
        p.create("controls", {"id": "c-0", "tenantId": t, "name": "Backups", "status": "effective",
                              "lastTest": {"result": "fail", "testedAt": "2026-01-01T00:00:00Z"}})
        p.create("policies", {"id": "pol-0", "tenantId": t, "name": "Access",
                              "violations": [{"id": "v1", "severity": "high"}]})
        before = _sentinels(app, p, t, "s1", 0)
        _assert_once(before)
        published = _window(app, t, len(before))
    finally:
        app.stop()

    gone = _reset_leases(app.env, keep_markers)
    assert {f"{kind}-{app.env['COSMOS_DB_DATABASE']}.{app.env[f'COSMOS_{kind.upper()}_CONTAINER']}"
            for kind in MONITORED} <= set(gone), gone
    assert any(i.endswith(".info") for i in _lease_documents(app.env)) is keep_markers
    assert _expire_claims(stack, t) >= len(before)

    app = _start(stack, work)
    try:
        p = Platform(app.env)  # waits for the lease stores' markers (new ones after a whole reset)
        # The feeds restart from the beginning: every document above is handed over again. The
        # sentinels written now come after them, so their events mean the replay was handled.
        after = _sentinels(app, p, t, "s2", len(before) + 3)
        for kind in ("risks", "controls", "policies"):
            assert _feed_start_line(app, kind, "the beginning") in app.log(), app.log()[-3000:]
        assert after[:len(before)] == before
        assert types_by_entity(after[len(before):]) == sentinels("s2"), after[len(before):]
        _assert_once(after)
        # The replay did happen: every event of the replayed versions counted as a duplicate, none
        # accepted but the new sentinels'.
        window = _window(app, t, published["accepted"] + 3)
        assert window["duplicates"] - published["duplicates"] == len(before), (published, window)
        assert window["accepted"] - published["accepted"] == 3, (published, window)
    finally:
        app.stop()


# A claim whose owner died stays "in flight" this long (IDEMPOTENCY_PENDING_SECONDS, 300 by default):
# short here so that the re-delivered batch's retries outlast it within the test's time. That the last
# attempt waits out the default is shown in process (tests/test_changefeed_processor.py).
CRASH_PENDING_SECONDS = "20"


def test_a_runner_killed_while_changes_flow_publishes_each_once(own: tuple[Stack, Path]) -> None:
    """SIGKILL (a crash: no batch finished, no lease stored on the way out) while documents are being
    written: the batch in hand is handed over again after the restart, its claims (left in flight by
    the dead runner) expire, and each change is published exactly once: nothing skipped, nothing
    dead-lettered."""
    stack, work = own
    t = tenant("kc")
    app = _start(stack, work, IDEMPOTENCY_PENDING_SECONDS=CRASH_PENDING_SECONDS)
    written: list[str] = []
    stop = threading.Event()
    try:
        p = Platform(app.env)
        _sentinels(app, p, t, "s0", 3)  # the feeds run

        def write() -> None:
            i = 0
            while not stop.is_set() and i < 400:
                p.create("risks", _risk(t, f"k-{i}"))
                written.append(f"k-{i}")
                i += 1

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        wait_for(lambda: len(events(app, t, source="COSMOS_DB")) >= 3 + 20 or None, FEED_TIMEOUT, 0.05,
                 "the feed publishing the writes")
        app.proc.kill()  # mid-flow: whatever the runner was doing is cut short
        app.proc.wait(10)
        stop.set()
        writer.join(30)
    finally:
        stop.set()
        if app.alive():
            app.stop()
    assert len(written) > 20

    app = _start(stack, work, IDEMPOTENCY_PENDING_SECONDS=CRASH_PENDING_SECONDS)
    try:
        after = _sentinels(app, p, t, "s1", 3 + len(written) + 3)
        by_entity = types_by_entity(after)
        assert {k: v for k, v in by_entity.items() if k.startswith("k-")} == {k: ["RISK_CREATED"] for k in written}
        _assert_once(after)
        dead = app.get(f"/deadletters/{t}", tenants=[t]).json()["deadLetters"]
        assert dead == [], dead
        retried = app.log().count("changefeed_risks failed (attempt")
        print(f"\nkilled mid-flow: {len(written)} documents written; after the restart {retried} attempt(s) "
              f"met claims the dead runner left in flight")
    finally:
        app.stop()
