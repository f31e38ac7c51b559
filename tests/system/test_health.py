"""/health is cheap and says little to strangers (issue 12, item 7); with Cosmos DB or a destination
down it answers 200 `degraded`, with Redis hanging 503 and Retry-After, and always within
HEALTH_TIMEOUT_SECONDS, even when a dependency accepts connections and never answers."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from localdev import services
from tests.system.harness import (App, Stack, app_env, app_running, own_stack_and_app, start_app, tenant,
                                  wait_for)

MINIMAL_KEYS = {"status", "service", "dependencies"}


def _minimal(body: dict[str, object]) -> bool:
    deps = body["dependencies"]
    return set(body) == MINIMAL_KEYS and all(d.keys() == {"status"} for d in deps.values())  # type: ignore[union-attr]


def test_strangers_and_tenants_get_states_only_admins_the_figures(app: App) -> None:
    admin = app.get("/health").json()
    assert {"redis", "tables", "cosmos"} <= set(admin["dependencies"]), admin
    assert all("latencyMs" in d for d in admin["dependencies"].values())
    assert "usedMemoryBytes" in admin["dependencies"]["redis"] and admin["checkedAt"]
    for who in ({"anonymous": True}, {"tenants": [tenant()], "roles": []},
                {"anonymous": True, "headers": {"authorization": "Bearer forged.token.value"}}):
        r = app.get("/health", **who)  # type: ignore[arg-type]
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        body = r.json()
        assert _minimal(body), body
        assert set(body["dependencies"]) == set(admin["dependencies"])


def test_many_callers_cost_one_check_per_period_and_one_cosmos_client(app: App) -> None:
    """600 anonymous requests from 8 connections: the admin view shows the cached results' time, which
    moves at most once per HEALTH_CACHE_SECONDS (5); the instance opened one Cosmos client in all."""
    first = app.get("/health").json()["checkedAt"]

    def burst(_: int) -> set[int]:
        with httpx.Client(base_url=app.base, timeout=30) as c:
            return {c.get("/health").status_code for _ in range(75)}

    with ThreadPoolExecutor(8) as pool:
        codes = set().union(*pool.map(burst, range(8)))
    assert codes == {200}
    seen = {first, app.get("/health").json()["checkedAt"]}
    assert len(seen) <= 2, seen  # the burst took less than two periods on any machine this runs on
    app.run_function("assessments_overdue")  # the overdue timer uses the same client
    wait_for(lambda: "overdue check:" in app.log(), 60, what="an overdue run")
    assert app.log().count("Cosmos DB client opened") == 1, "a Cosmos client per call"


@pytest.fixture
def own_stack(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path / "stack").start(("redis", "azurite", "cosmos"))
    yield stack  # type: ignore[misc]
    stack.stop()


def test_redis_down_is_503_and_recovers(own_stack: Stack, tmp_path: Path) -> None:
    app = start_app(app_env(own_stack, tmp_path / "app", HEALTH_CACHE_SECONDS="1"), tmp_path / "app")
    try:
        assert app.get("/health", anonymous=True).status_code == 200
        redis = own_stack.running["redis"]
        services.stop(redis.proc, 2.0)
        down = wait_for(lambda: (r if (r := app.get("/health", anonymous=True)).status_code == 503 else None), 30,
                        what="503 while Redis is down")
        assert down.json()["status"] == "unhealthy" and _minimal(down.json())
        assert down.json()["dependencies"]["redis"] == {"status": "unhealthy"}
        own_stack.running["redis"] = services.start("redis", own_stack.work / "redis", redis.ports)
        wait_for(lambda: app.get("/health", anonymous=True).status_code == 200, 30, what="200 once Redis is back")
    finally:
        app.stop()


# ---- A dependency down or hanging (README "Health", docs/observability.md "Health") ----------------
# One stack and app of this module's own, with checks cached 1 s instead of 5, so a state change
# shows within a second or two. Each test stops or freezes (SIGSTOP) one service by PID and leaves
# it running again.

HANG_STACK = ("redis", "azurite", "cosmos", "kafka")


@pytest.fixture(scope="module")
def hangable_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App]]:
    with own_stack_and_app(tmp_path_factory.mktemp("health-hang"), HANG_STACK, HEALTH_CACHE_SECONDS="1",
                           SYSTEM_PERFORMANCE_EVENTS="false", STREAM_CONFIG_CACHE_SECONDS="1") as running:
        yield running


@pytest.fixture
def hangable(hangable_session: tuple[Stack, App]) -> Iterator[tuple[Stack, App]]:
    """The module's stack and app; every service must be running (and not frozen) when the test ends."""
    stack, app = hangable_session
    yield stack, app
    frozen = [n for n, r in stack.running.items() if r.proc.poll() is None and _state(r.proc.pid) == "T"]
    for name in frozen:
        _signal(stack, name, signal.SIGCONT)
    stopped = [name for name in stack.running if not stack.is_up(name)]
    for name in stopped:
        stack.up(name)
    assert not frozen and not stopped, f"the test left services frozen {frozen} or stopped {stopped}"
    assert app.alive(), "the app died"


def _state(pid: int) -> str:
    """A process's state letter from /proc (T: stopped by a signal)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _signal(stack: Stack, name: str, sig: signal.Signals) -> None:
    """Signal a service's whole process group (as services.stop does): a frozen service accepts
    connections (the kernel completes them) and never answers."""
    os.killpg(stack.running[name].proc.pid, sig)


def _bound(app: App) -> float:
    """How long /health may take: HEALTH_TIMEOUT_SECONDS, plus 1 s for the request itself."""
    return float(app.env["HEALTH_TIMEOUT_SECONDS"]) + 1.0


def _timed_health(app: App, answers: list[float]) -> httpx.Response:
    """GET /health as an admin (the view with each dependency's details); its time is appended."""
    t0 = time.monotonic()
    r = app.get("/health")
    answers.append(time.monotonic() - t0)
    return r


def _until(app: App, answers: list[float], ok: Callable[[httpx.Response], bool], what: str) -> httpx.Response:
    """/health polled until `ok`, every answer timed."""
    return wait_for(lambda: (r if ok(r := _timed_health(app, answers)) else None), 30, 0.1, what)


def _dep(r: httpx.Response, name: str) -> str:
    return str(r.json()["dependencies"][name]["status"])


def _post_event(app: App, t: str | None = None) -> httpx.Response:
    t = t or tenant("hd")
    return app.post("/events", tenants=[t], json={
        "tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
        "entityId": "risk-1", "entityType": "risk", "data": {"score": 7}})


def _up(r: httpx.Response, name: str) -> bool:
    """The dependency answers (healthy, or degraded: slower than HEALTH_DEGRADED_MS on a loaded machine)."""
    return r.json()["dependencies"].get(name, {}).get("status") in ("healthy", "degraded")


def _healthy_again(app: App) -> None:
    """Every dependency answers again (the previous test's outage is over)."""
    _until(app, [], lambda r: r.status_code == 200 and all(_up(r, n) for n in r.json()["dependencies"]),
           "every dependency answering")


@contextmanager
def _outage(stack: Stack, app: App, name: str, *, freeze: bool = False) -> Iterator[list[float]]:
    """`name` stopped by PID for the block (`freeze`: SIGSTOP, so it accepts connections and never
    answers); the block appends the time of each /health answer, and each must be within the bound.
    Every dependency answers before the outage and again after it."""
    _healthy_again(app)
    answers: list[float] = []
    if freeze:
        _signal(stack, name, signal.SIGSTOP)
    else:
        stack.down(name)
    try:
        yield answers
        assert answers and max(answers) <= _bound(app), answers
    finally:
        if freeze:
            _signal(stack, name, signal.SIGCONT)
        else:
            stack.up(name)
    _healthy_again(app)


def test_cosmos_stopped_is_200_degraded_and_events_are_still_accepted(hangable: tuple[Stack, App]) -> None:
    stack, app = hangable
    with _outage(stack, app, "cosmos") as answers:
        r = _until(app, answers, lambda r: r.status_code == 200 and _dep(r, "cosmos") == "unhealthy",
                   "cosmos unhealthy while stopped")
        assert r.json()["status"] == "degraded" and "retry-after" not in r.headers, r.json()
        assert _up(r, "redis") and _up(r, "tables"), r.json()
        anonymous = app.get("/health", anonymous=True)
        assert anonymous.status_code == 200 and anonymous.json()["status"] == "degraded", anonymous.text
        posted = _post_event(app)
        assert posted.status_code == 201, posted.text


def test_cosmos_hanging_is_answered_within_the_timeout(hangable: tuple[Stack, App]) -> None:
    stack, app = hangable
    with _outage(stack, app, "cosmos", freeze=True) as answers:
        r = _until(app, answers, lambda r: r.status_code == 200 and _dep(r, "cosmos") == "unhealthy",
                   "cosmos unhealthy while frozen")
        assert r.json()["status"] == "degraded", r.json()
        assert "within" in r.json()["dependencies"]["cosmos"]["detail"], r.json()  # timed out, not refused
        for _ in range(3):  # later runs too: a cancelled check left behind holds nothing up
            _until(app, answers, lambda r: r.status_code == 200, "another answer")
        posted = _post_event(app)
        assert posted.status_code == 201, posted.text


def test_redis_hanging_is_503_with_retry_after_within_the_timeout(hangable: tuple[Stack, App]) -> None:
    stack, app = hangable
    with _outage(stack, app, "redis", freeze=True) as answers:
        r = _until(app, answers, lambda r: r.status_code == 503, "503 while Redis is frozen")
        assert r.json()["status"] == "unhealthy" and _dep(r, "redis") == "unhealthy", r.json()
        assert "within" in r.json()["dependencies"]["redis"]["detail"], r.json()
        assert int(r.headers["retry-after"]) > 0, r.headers
        t0 = time.monotonic()
        anonymous = app.get("/health", anonymous=True)
        answers.append(time.monotonic() - t0)
        assert anonymous.status_code == 503 and int(anonymous.headers["retry-after"]) > 0, anonymous.headers


def test_redis_hanging_events_are_parked_within_10_s_then_at_once_and_delivered_after(
        hangable: tuple[Stack, App]) -> None:
    """Redis frozen: a POST still answers 201 with its Redis delivery parked in the retry queue. The
    first within 10 s: its rate-limit and idempotency calls give up after the 5 s socket timeout, and
    then the instance sends no Redis call for 5 s (shared/storage/redis_unanswered.py), so its config
    check and delivery fail at once. The next POST, in that pause, answers within 0.8 s: its delivery
    is not sent and parked without the in-process retry (the Redis destination says it sends nothing
    for the rest of the pause; shared/delivery/breaker.py holds it), where that retry's wait made it
    1 s. It took 21 s before the pause (each call waited 5 s), and 93 s when redis-py also retried
    timed-out calls. Once Redis answers again both parked events reach the tenant's
    stream, once each."""
    stack, app = hangable
    t = tenant("rh")
    first = _post_event(app, t)
    assert first.status_code == 201, first.text  # the tenant is known: its config is cached
    with _outage(stack, app, "redis", freeze=True) as answers:
        _until(app, answers, lambda r: r.status_code == 503, "503 while Redis is frozen")
        took, posted = [], []
        for _ in range(2):
            t0 = time.monotonic()
            r = _post_event(app, t)
            took.append(time.monotonic() - t0)
            assert r.status_code == 201, r.text
            parked = [(d["destination"], d["status"]) for d in r.json()["destinations"]]
            assert parked == [("redis", "parked")], parked
            posted.append(r.json()["eventId"])
        assert took[0] < 10.0 and took[1] < 0.8, took
    assert "Redis did not answer within the socket timeout" in app.log()

    def in_stream() -> list[str] | None:
        r = app.get(f"/events/{t}", params={"eventType": "RISK_UPDATED"}, tenants=[t])  # not the SYSTEM_ERROR
        ids = [e["event"]["eventId"] for e in r.json()["events"]] if r.status_code == 200 else []
        return ids if set(posted) <= set(ids) else None

    ids = wait_for(in_stream, 90, 1.0, what="the parked events delivered from the retry queue")
    assert sorted(ids) == sorted({*ids}) and len(ids) == 3, ids  # each once, beside the first event


def test_tables_hanging_events_still_flow_on_the_cached_stream_configs(hangable: tuple[Stack, App]) -> None:
    """Azurite frozen (Tables and the retry queue hang): a tenant this instance has routed before keeps
    publishing on its cached config, past STREAM_CONFIG_CACHE_SECONDS (1 s here): the config read gives
    up after 10 s once, then the cached copy is used without waiting. A never-seen tenant cannot be
    routed: 503 with Retry-After, in the same bound, where the SDK's own timeouts took 90 s."""
    stack, app = hangable
    t = tenant("stale")
    r = app.put(f"/stream-config/{t}", tenants=[t], json={"destinations": [{"type": "redis"}], "retentionDays": 3})
    assert r.status_code in (200, 201), r.text
    assert _post_event(app, t).status_code == 201  # the config is cached now
    with _outage(stack, app, "azurite", freeze=True) as answers:
        _until(app, answers, lambda r: r.status_code == 503 and _dep(r, "tables") == "unhealthy",
               "tables unhealthy while Azurite is frozen")
        time.sleep(1.5)  # past the config cache's age limit
        for bound in (12.0, 2.0):  # the first batch waits out the read, the next one does not
            t0 = time.monotonic()
            posted = _post_event(app, t)
            took = time.monotonic() - t0
            assert posted.status_code == 201, posted.text
            assert [(d["destination"], d["status"]) for d in posted.json()["destinations"]] == [("redis", "delivered")]
            assert took < bound, took
        t0 = time.monotonic()
        unknown = _post_event(app)
        assert unknown.status_code == 503 and int(unknown.headers["retry-after"]) > 0, unknown.text
        assert time.monotonic() - t0 < 12.0
    assert "routed on their cached config" in app.log()


# The routes of Table storage (README "Health": a store that hangs is a 503 with Retry-After within
# STORAGE_READ_SECONDS, 10 s); the SDK's own timeouts and retries took 90 s for a read, 31 s for a write.
TABLE_READS = ("/audit/{t}", "/events/{t}/history", "/deadletters/{t}", "/backfills/{t}",
               "/backfills/{t}/bf-0000000000000-00000000", "/stream-config/{t}")
REDIS_ONLY = {"destinations": [{"type": "redis"}]}


def test_tables_hanging_reads_and_writes_answer_503_within_the_deadline_and_a_write_still_finishes(
        hangable: tuple[Stack, App]) -> None:
    stack, app = hangable
    t = tenant("rd")
    before = {path: app.get(path.format(t=t), tenants=[t]).status_code for path in TABLE_READS}
    assert before == {p: 404 if "/bf-" in p else 200 for p in TABLE_READS}, before

    def timed(path: str) -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        r = app.get(path.format(t=t), tenants=[t])
        return r, time.monotonic() - t0

    def timed_put() -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        r = app.put(f"/stream-config/{t}", tenants=[t], json=REDIS_ONLY, timeout=60)
        return r, time.monotonic() - t0

    def timed_replay() -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        r = app.post(f"/deadletters/{t}/replay", tenants=[t], json={}, timeout=60)
        return r, time.monotonic() - t0

    with _outage(stack, app, "azurite", freeze=True) as answers:
        _until(app, answers, lambda r: r.status_code == 503 and _dep(r, "tables") == "unhealthy",
               "tables unhealthy while Azurite is frozen")
        with ThreadPoolExecutor(len(TABLE_READS) + 2) as pool:  # at once: each has its own deadline
            put = pool.submit(timed_put)
            replayed = pool.submit(timed_replay)
            during = dict(zip(TABLE_READS, pool.map(timed, TABLE_READS)))
            written, write_took = put.result()
            replay, replay_took = replayed.result()
        assert written.status_code == 503 and int(written.headers["retry-after"]) > 0, written.text
        assert "may still be applied" in written.json()["detail"], written.text
        assert 9.5 <= write_took < 13.0, write_took  # the deadline, not the SDK's 31 s
        # A replay reads its records first, within the same deadline: nothing replayed, nothing audited.
        assert replay.status_code == 503 and int(replay.headers["retry-after"]) > 0, replay.text
        assert "nothing was replayed" in replay.json()["detail"], replay.text
        assert 9.5 <= replay_took < 13.0, replay_took
        for path, (r, took) in during.items():
            assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, (path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json"), (path, r.headers)
            assert 9.5 <= took < 13.0, (path, took)  # the deadline (10 s), not the SDK's 90 s
    # Azurite answers again within the write's Storage attempts: the write was not cut short. It
    # finishes on the instance, config and audit record together, as the log says.
    wait_for(lambda: "finished after its 503: answered 201" in app.log(), 40, 0.5, "the write finishing")
    stored = app.get(f"/stream-config/{t}", tenants=[t]).json()
    assert stored["version"] == 1 and stored["isDefault"] is False, stored
    audit = app.get(f"/audit/{t}", tenants=[t]).json()["items"]
    assert [a["action"] for a in audit] == ["stream-config.put"], audit
    after = {path: app.get(path.format(t=t), tenants=[t]).status_code for path in TABLE_READS}
    assert after == before, after
    assert app.put(f"/stream-config/{t}", tenants=[t], json=REDIS_ONLY).status_code == 200
    assert app.alive()


def test_a_destination_down_is_200_degraded(hangable: tuple[Stack, App]) -> None:
    """A tenant's Kafka destination built on the instance is checked; its broker stopped: degraded."""
    stack, app = hangable
    t = tenant("hk")
    r = app.put(f"/stream-config/{t}", tenants=[t], json={"destinations": [{"type": "kafka"}]})
    assert r.status_code in (200, 201), r.text
    posted = _post_event(app, t)
    assert posted.status_code == 201, posted.text  # the destination is built now
    _until(app, [], lambda r: r.status_code == 200 and _up(r, "kafka"), "kafka checked and answering")
    with _outage(stack, app, "kafka") as answers:
        r = _until(app, answers, lambda r: r.status_code == 200 and _dep(r, "kafka") == "unhealthy",
                   "kafka unhealthy while stopped")
        assert r.json()["status"] == "degraded", r.json()


def test_an_unset_setting_a_binding_names_is_reported_and_a_backfill_needing_it_refused(
        app: App, stack: Stack, tmp_path: Path) -> None:
    """README 'Health': the host resolves a binding's %SETTING% from app settings only and loads no
    function whose setting is missing. Started without RETRY_QUEUE and BACKFILL_QUEUE (deployed without
    them), the app says so: its log at start, `/health` degraded with `bindings` unhealthy naming both,
    and POST /backfills 503 rather than a 202 for a job nothing would run. The session app, with every
    setting, has `bindings` healthy."""
    assert app.get("/health").json()["dependencies"]["bindings"]["status"] == "healthy"
    env = app_env(stack, tmp_path)
    del env["RETRY_QUEUE"], env["BACKFILL_QUEUE"]
    with app_running(env, tmp_path) as bare:
        unset = "app settings unset: BACKFILL_QUEUE, RETRY_QUEUE"
        assert unset in bare.log()
        r = bare.get("/health")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "degraded", body
        assert body["dependencies"]["bindings"]["status"] == "unhealthy"
        assert unset in body["dependencies"]["bindings"]["detail"]
        assert {d["status"] for n, d in body["dependencies"].items() if n != "bindings"} <= {"healthy"}, body
        t = tenant("nobf")
        r = bare.post(f"/backfills/{t}", tenants=[t], json={
            "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "destination": "kafka"})
        assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["detail"] == "backfill is not configured on this service"
        assert bare.get(f"/backfills/{t}", tenants=[t]).json()["jobs"] == []
