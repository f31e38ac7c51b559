"""Promises of docs/capacity.md, docs/host-logging.md and README.md ('Settings', 'Local runner') that no
other system test proved, checked from outside: Redis as an operator reads it (TTL, XLEN), the runner's
log and admin API, its exit code and the signals a user's shell sends, the queues and the (fake)
Application Insights ingestion endpoint.

- Capacity: every key the app keeps for a tenant is bounded by time or length with the lifetimes the
  sizing arithmetic uses (delivery marker `dedupeSeconds`, idempotency record
  IDEMPOTENCY_WINDOW_SECONDS, metrics buckets 65 minutes, change-feed claim CHANGEFEED_DEDUP_TTL_HOURS,
  snapshot CHANGEFEED_STATE_TTL_DAYS); an event without a client id leaves no idempotency record; a
  raised or removed `maxLen` keeps more entries and never lifts the age cap; `retentionHours` never
  outlasts `retentionDays`.
- Settings: PORT, LOG_LEVEL, METRICS_FLUSH_MS=0, IDEMPOTENCY_WINDOW_SECONDS, the change-feed lifetimes,
  OVERDUE_SCHEDULE, TELEMETRY_INFO_SAMPLING (warnings and errors always exported); docs/host-logging.md:
  the operation id a log record shares with its request's traceparent, `grc.*` metrics pre-aggregated
  per interval whatever the event rate.
- Local runner: `%SETTING%` names resolved from local.settings.json, a binding naming a missing setting
  disables that function only, a header sent twice reaches the function once with its values joined,
  routes matched by template and method together; it stops on SIGINT and SIGHUP and when its terminal
  is gone; a queue message that is not base64 goes to `<queue>-poison` at once, one that keeps failing
  after maxDequeueCount (5) attempts `visibilityTimeout` (host.json: 10 s) apart.
- host.json's `logging` section is the one docs/host-logging.md and README show; `make doctor` is the
  doctor run tests/test_functions_doctor.py makes (docs/functions-doctor.md).

The session app (default settings) serves the capacity and HTTP tests. A module app with tuned settings
runs on a stack of its own (Redis, Azurite, the Cosmos server; Kafka's settings point at a closed port),
and the runner-process tests start runners of their own on that stack.
"""
from __future__ import annotations

import base64
import json
import os
import pty
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_client
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from localdev import services
from tests.system.cosmos import Platform, wait_events
from tests.system.fakes import FakeIngestion
from tests.system.harness import (
    APP_LOGS,
    ROOT,
    SAMPLE_SETTINGS,
    App,
    Stack,
    app_env,
    event_body,
    own_stack,
    start_app,
    tenant,
    wait_for,
)

PROBLEM = "application/problem+json"
# docs/capacity.md, "What one event costs": how long each key is kept with the defaults.
DEDUPE_SECONDS = 3_600  # grc:{t}:dlv:<eventId>, the Redis destination's dedupeSeconds
IDEMPOTENCY_WINDOW_SECONDS = 86_400  # grc:{t}:idem:<eventId> of a client's event
BUCKET_SECONDS = 65 * 60  # grc:{t}:m:b:<10 s bucket>
CF_CLAIM_SECONDS = 168 * 3_600  # CHANGEFEED_DEDUP_TTL_HOURS
CF_SNAPSHOT_SECONDS = 400 * 86_400  # CHANGEFEED_STATE_TTL_DAYS
# Keys kept without a TTL: the stream (bounded by maxLen and retentionHours) and the per-tenant
# constants (totals, config version).
UNEXPIRING = {"events", "m:total", "cfgver"}
NODE_ENTRIES = 100  # an approximate trim keeps at most one macro-node (100 entries) past a bound
HOUR_MS = 3_600_000
# The tuned module app's settings (README "Settings").
TUNED_WINDOW_SECONDS = 4
TUNED_CF_CLAIM_HOURS = 5
TUNED_CF_STATE_DAYS = 3
TUNED_OVERDUE_SCHEDULE = "*/3 * * * * *"
OFFLINE = {"APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
           "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
           "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true"}
# A Kafka destination over AMQP with no Event Hubs configured: every delivery refused at once and parked.
REFUSING_KAFKA = {"type": "kafka", "config": {"transport": "amqp"},
                  "retry": {"inProcessAttempts": 1, "attempts": 1, "backoffSeconds": 1,
                            "maxBackoffSeconds": 1, "jitter": 0, "timeoutSeconds": 40}}
# host.json: extensions.queues
MAX_DEQUEUE_COUNT = 5
VISIBILITY_TIMEOUT_SECONDS = 10.0
# A runner log line: "<date> <time>,<ms> <LEVEL> <logger>: <message>"
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


# ---- helpers --------------------------------------------------------------------------------------------

def _kind(key: bytes, t: str) -> str:
    """The kind of a tenant's key: `grc:{t}:m:b:123` -> `m:b`, `grc:{t}:idem:x` -> `idem`."""
    parts = key.decode().removeprefix(f"grc:{{{t}}}:").split(":")
    return ":".join(parts[:2]) if parts[0] in ("cf", "m") else parts[0]


def _ttls(r: redis_client.Redis, t: str) -> dict[str, list[int]]:
    """Kind -> the TTL (s; -1 none) of each key of tenant `t`."""
    out: dict[str, list[int]] = {}
    for key in r.scan_iter(match=f"grc:{{{t}}}:*", count=1000):
        out.setdefault(_kind(key, t), []).append(int(r.ttl(key)))
    return out


def _within(ttls: list[int], most: int, slack: int = 120) -> bool:
    """Every TTL set and at most `most` seconds, but no more than `slack` below it (set at `most` now)."""
    return bool(ttls) and all(most - slack <= v <= most for v in ttls)


def _seed(r: redis_client.Redis, key: str, first_ms: int, n: int, same_ms: bool = False) -> None:
    """`n` entries in the app's entry layout with ids from `first_ms` on (all in that millisecond when
    `same_ms`): entries "written" then, as Redis takes any id above the stream's last one."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        entry_id = f"{first_ms}-{i + 1}" if same_ms else f"{first_ms + i}-0"
        pipe.xadd(key, {"t": "RISK_UPDATED", "s": "BACKEND_API", "f": "native", "e": "{}"}, id=entry_id)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def _count(r: redis_client.Redis, key: str, first: str, last: str) -> int:
    return len(r.xrange(key, min=first, max=last))


def _log_lines(log: str, text: str) -> list[tuple[datetime, str]]:
    """(time, line) of each runner log line containing `text`."""
    out = []
    for line in log.splitlines():
        m = _LINE.search(line)
        if m is not None and text in line:
            out.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f"), line))
    return out


def _is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith(PROBLEM), r.headers.get("content-type")
    return dict(r.json())


# ---- the tuned module app -------------------------------------------------------------------------------

@dataclass
class Tuned:
    stack: Stack
    app: App
    ingestion: FakeIngestion


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuned]:
    work: Path = tmp_path_factory.mktemp("runner-capacity")
    ingestion = FakeIngestion()
    try:
        with own_stack(work / "stack", ("redis", "azurite", "cosmos")) as stack:
            env = app_env(stack, work / "app",
                          APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string,
                          TELEMETRY_BACKEND="opencensus", TELEMETRY_INFO_SAMPLING="0", LOG_LEVEL="info",
                          METRICS_FLUSH_MS="0", IDEMPOTENCY_WINDOW_SECONDS=str(TUNED_WINDOW_SECONDS),
                          CHANGEFEED_DEDUP_TTL_HOURS=str(TUNED_CF_CLAIM_HOURS),
                          CHANGEFEED_STATE_TTL_DAYS=str(TUNED_CF_STATE_DAYS),
                          OVERDUE_SCHEDULE=TUNED_OVERDUE_SCHEDULE, SYSTEM_PERFORMANCE_EVENTS="false",
                          **OFFLINE)
            app = start_app(env, work / "app")
            try:
                yield Tuned(stack, app, ingestion)
            finally:
                app.stop()
    finally:
        ingestion.close()


# ---- runners started by hand (the process tests) ---------------------------------------------------------

@dataclass
class Runner:
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exit_code(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the runner did not stop within {timeout} s:\n{self.log()[-3000:]}") \
                from None


def _launch(env: dict[str, str], work: Path, *, settings: dict[str, str] | None = None,
            port: int | None = None, stdin: int = subprocess.DEVNULL) -> Runner:
    """`python -m devhost` as a user starts it: settings from the environment and the `--settings`
    file (`settings`), the port from `--port` when given, else from the PORT setting."""
    work.mkdir(parents=True, exist_ok=True)
    settings_file = work / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": settings or {}}))
    listen = port if port is not None else int(env.get("PORT") or (settings or {})["PORT"])
    log_path = work / f"devhost-{listen}.log"
    child_env = {k: v for k, v in os.environ.items() if k not in SAMPLE_SETTINGS}
    child_env.update(env)
    child_env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "devhost", "--settings", str(settings_file), "--state-dir",
           str(work / "devhost-state"), *(("--port", str(port)) if port is not None else ())]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=stdin, start_new_session=True)
    APP_LOGS.append(log_path)
    runner = Runner(proc, log_path, listen)

    def running() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"devhost exited with {proc.returncode}:\n{runner.log()[-4000:]}")
        try:
            status = httpx.get(f"{runner.base}/admin/host/status", timeout=1).json()
            return bool(status.get("state") == "Running")
        except (httpx.TransportError, ValueError):
            return False

    try:
        wait_for(running, 60, 0.2, "the runner running")
    except BaseException:
        services.stop(proc)
        raise
    return runner


def _runner_env(stack: Stack, work: Path, **overrides: str) -> dict[str, str]:
    """A runner beside the tuned app on its stack, with queues of its own (not to take the app's
    messages)."""
    suffix = secrets.token_hex(3)
    return app_env(stack, work, RETRY_QUEUE=f"retries-{suffix}", BACKFILL_QUEUE=f"backfill-{suffix}",
                   VECTOR_QUEUE=f"vectors-{suffix}", SYSTEM_PERFORMANCE_EVENTS="false", **overrides)


# ---- docs/capacity.md: what the app keeps in Redis, and for how long (session app, defaults) --------------

def test_every_key_of_a_tenant_is_bounded_by_time_or_length_for_the_documented_lifetimes(
        app: App, stack: Stack) -> None:
    """docs/capacity.md: 'everything the service keeps there is bounded by default, by length or by time',
    each key for the time the sizing uses: the delivery marker dedupeSeconds (3,600 s), the idempotency
    record IDEMPOTENCY_WINDOW_SECONDS (86,400 s) and only for an event with a client id, a metrics bucket
    65 minutes; a change-feed event's compact claim CHANGEFEED_DEDUP_TTL_HOURS (168 h), its delivery
    marker no longer than dedupeSeconds, the entity snapshot CHANGEFEED_STATE_TTL_DAYS (400 d)."""
    t = tenant("keys")
    app.configure(t, {"destinations": [{"type": "redis"}]})  # the default's options, stored: cfgver
    with_id = event_body(t, eventId=f"ev-{secrets.token_hex(6)}")
    keyed = event_body(t, entityId="ctl-8")
    del keyed["eventId"]
    anonymous = event_body(t, entityId="ctl-9")
    del anonymous["eventId"]
    assert app.post("/events", json=with_id, tenants=[t]).status_code == 201
    key = f"key-{secrets.token_hex(6)}"
    assert app.post("/events", json=keyed, tenants=[t], headers={"Idempotency-Key": key}).status_code == 201
    no_id = app.post("/events", json=anonymous, tenants=[t])
    assert no_id.status_code == 201, no_id.text
    made_id = no_id.json()["eventId"]
    with stack.redis() as r:  # read at once: it goes once the bucket would be full again
        ratelimit_ms = int(r.pttl(f"grc:{{{t}}}:ratelimit"))
    platform = Platform(app.env)
    doc_id = f"{t}-risk-1"
    platform.create("risks", {"id": doc_id, "tenantId": t, "title": "Vendor breach", "category": "cyber",
                              "likelihood": 4, "impact": 5, "score": 20, "status": "open"})
    cf = wait_events(app, t, 1, 60, source="COSMOS_DB")[0]

    with stack.redis() as r:
        wait_for(lambda: r.exists(f"grc:{{{t}}}:m:total"), 10, what="the tenant's metrics written")
        ttls = _ttls(r, t)
        idem = {k.decode().rsplit(":", 1)[1]: int(r.ttl(k)) for k in r.scan_iter(match=f"grc:{{{t}}}:idem:*")}
        dlv = {k.decode().rsplit(":", 1)[1]: int(r.ttl(k)) for k in r.scan_iter(match=f"grc:{{{t}}}:dlv:*")}
        snapshots = [int(r.ttl(k)) for k in r.scan_iter(match=f"grc:{{{t}}}:cf:s:*")]
    print(f"\nkey kinds and TTLs of {t}: {ttls}; ratelimit PTTL {ratelimit_ms} ms")

    unbounded = {kind for kind, values in ttls.items() if -1 in values}
    assert unbounded <= UNEXPIRING, f"keys kept forever: {unbounded - UNEXPIRING} ({ttls})"
    # The client's events: a record for the window; the one with a service-made id: none. (The session
    # app's monitor may add a SYSTEM_PERFORMANCE event of its own when a minute turns.)
    assert made_id not in idem and {with_id["eventId"], key, cf["eventId"]} <= set(idem), idem
    assert _within([idem[with_id["eventId"]], idem[key]], IDEMPOTENCY_WINDOW_SECONDS), idem
    assert _within([idem[cf["eventId"]]], CF_CLAIM_SECONDS), idem
    assert {with_id["eventId"], key, made_id, cf["eventId"]} <= set(dlv), dlv
    assert _within(list(dlv.values()), DEDUPE_SECONDS), dlv
    assert _within(ttls["m:b"], BUCKET_SECONDS), ttls["m:b"]
    assert _within(snapshots, CF_SNAPSHOT_SECONDS) and len(snapshots) == 1, snapshots
    assert ttls["m:total"] == [-1] and ttls["cfgver"] == [-1] and ttls["events"] == [-1], ttls
    # The rate-limit bucket is let go once it would be full again (RATE_LIMIT_BURST / rate + 1 s).
    assert 0 < ratelimit_ms <= 6_000, ratelimit_ms


@pytest.mark.parametrize("max_len", [None, 20_000, "default"])
def test_a_raised_or_removed_length_cap_keeps_more_and_never_lifts_the_age_cap(
        app: App, stack: Stack, max_len: int | str | None) -> None:
    """docs/capacity.md 'The stream is bounded by default': maxLen 10,000 and retentionHours 6 'can be raised
    per tenant in the stream config; `maxLen: null` removes the length cap, never the age cap'. A stream
    holding 300 entries of 7 hours ago and 10,300 of a minute ago gets one event through the app: the
    7-hour-old ones go (but for those in the node the trim stops at), and the recent ones stay unless the
    10,000 cap applies."""
    t, old_n, recent_n = tenant("maxlen"), 300, 10_300
    options = {} if max_len == "default" else {"maxLen": max_len}
    stored = app.configure(t, {"destinations": [{"type": "redis", "config": options}]})
    assert stored["destinations"][0]["config"]["maxLen"] == (10_000 if max_len == "default" else max_len)
    key = f"grc:{{{t}}}:events"
    now_ms = int(time.time() * 1000)
    old_ms, recent_ms = now_ms - 7 * HOUR_MS, now_ms - 60_000
    with stack.redis() as r:
        _seed(r, key, old_ms, old_n)
        _seed(r, key, recent_ms, recent_n, same_ms=True)
        assert app.post("/events", json=event_body(t), tenants=[t]).status_code == 201
        old_left = _count(r, key, f"{old_ms}-0", f"{old_ms + old_n}-0")
        recent_left = _count(r, key, f"{recent_ms}-0", f"{recent_ms}-{recent_n}")
        length = int(r.xlen(key))
    print(f"\nmaxLen {max_len}: XLEN {length}, 7-hour-old entries left {old_left}, recent left {recent_left}")
    assert old_left < NODE_ENTRIES, "the age cap did not trim"
    if max_len == "default":
        assert 10_000 <= length <= 10_000 + NODE_ENTRIES, length
    else:
        assert recent_left == recent_n and length == old_left + recent_n + 1, (length, old_left, recent_left)


def test_retention_hours_never_outlast_retention_days(app: App, stack: Stack) -> None:
    """README 'Stream configuration' / docs/capacity.md: retentionHours is 'never beyond retentionDays': a
    stream configured for 48 hours in a tenant kept 1 day drops what is 30 hours old, keeps 20 hours."""
    t, n = tenant("days"), 300
    app.configure(t, {"retentionDays": 1,
                      "destinations": [{"type": "redis", "config": {"retentionHours": 48}}]})
    key = f"grc:{{{t}}}:events"
    now_ms = int(time.time() * 1000)
    older_ms, younger_ms = now_ms - 30 * HOUR_MS, now_ms - 20 * HOUR_MS
    with stack.redis() as r:
        _seed(r, key, older_ms, n)
        _seed(r, key, younger_ms, n)
        assert app.post("/events", json=event_body(t), tenants=[t]).status_code == 201
        older = _count(r, key, f"{older_ms}-0", f"{older_ms + n}-0")
        younger = _count(r, key, f"{younger_ms}-0", f"{younger_ms + n}-0")
    assert older < NODE_ENTRIES and younger == n, (older, younger)


# ---- README "Local runner": requests handed over as the host hands them (session app) ----------------------

def test_a_header_sent_twice_arrives_once_joined_and_routes_match_by_template_and_method(app: App) -> None:
    """README 'Local runner': 'each query parameter and header once, its values joined by ","' (ASP.NET's
    StringValues), so an If-None-Match sent as two header lines is one list: the stored ETag in either
    line answers 304. And routes with the host's methods and precedence: GET /events/bulk is
    /events/{tenantId} for tenant "bulk" (the literal route takes POST only), DELETE is the app's 405."""
    t = tenant("twice")
    path = f"/stream-config/{t}"
    etag = app.put(path, tenants=[t], json={"batchSize": 12}).headers["etag"]
    auth = list(app.auth([t]).items())
    for lines in ([etag, '"other"'], ['"other"', etag]):
        r = app.client.get(path, headers=auth + [("If-None-Match", v) for v in lines])
        assert r.status_code == 304 and r.content == b"", (lines, r.status_code, r.text[:300])
    r = app.client.get(path, headers=auth + [("If-None-Match", '"a"'), ("If-None-Match", '"b"')])
    assert r.status_code == 200 and r.json()["batchSize"] == 12, r.text[:300]

    listed = app.get("/events/bulk")  # an admin: any tenant
    assert listed.status_code == 200 and listed.json()["tenantId"] == "bulk", listed.text[:300]
    r = app.request("DELETE", "/events/bulk")
    _is_problem(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "POST"}, r.headers["allow"]


# ---- docs/host-logging.md: the logging section as applied --------------------------------------------------

def _json_block(text: str, after: str) -> dict[str, Any]:
    """The first ```json block after the heading `after`, as the object it shows (a bare
    `"logging": {...}` member is read as that object)."""
    block = text.split(after, 1)[1].split("```json", 1)[1].split("```", 1)[0].strip()
    if block.startswith('"logging"'):
        block = "{" + block + "}"
    parsed = json.loads(block)
    return dict(parsed["logging"] if "logging" in parsed else parsed)


def test_host_json_applies_the_logging_section_the_docs_show() -> None:
    """docs/host-logging.md 'The `logging` section (applied in host.json)' and README's copy are host.json's
    own, which keeps the aggregator's defaults; README 'Local runner': functionTimeout 5 minutes, queues
    base64 with maxDequeueCount 5 and the batch size left at the host's 16."""
    host = json.loads((ROOT / "host.json").read_text())
    doc = _json_block((ROOT / "docs" / "host-logging.md").read_text(), "## The `logging` section")
    readme = _json_block((ROOT / "README.md").read_text(), "### host.json logging and sampling")
    assert host["logging"] == doc == readme, (host["logging"], doc, readme)
    assert "aggregator" not in host
    assert host["functionTimeout"] == "00:05:00"
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64" and queues["maxDequeueCount"] == MAX_DEQUEUE_COUNT
    assert "batchSize" not in queues and queues["visibilityTimeout"] == "00:00:10"


def test_make_doctor_is_the_run_the_suite_makes() -> None:
    """docs/functions-doctor.md: 'By hand: `make doctor` (the same run, as a table)', and 'the test sets
    VIRTUAL_ENV to the environment it runs in ... `make doctor` runs it the same way': the recipe (read
    with `make -n`, setup taken as done) is tests/test_functions_doctor.py's command on this checkout,
    the full rule set with VIRTUAL_ENV set to .venv, as a table (no --format)."""
    # Without the variables of a `make` this suite may run under (`make test`): with them the nested make
    # prints "make[1]: Entering directory" around the recipe.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(["make", "--no-print-directory", "-n", "-o", "setup", "doctor"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        f"VIRTUAL_ENV={ROOT / '.venv'} .venv/bin/azure-functions-doctor doctor --profile full"], done.stdout


# ---- README "Settings" on the tuned app --------------------------------------------------------------------

def test_the_idempotency_window_flush_and_change_feed_lifetimes_follow_their_settings(tuned: Tuned) -> None:
    """README 'Settings': IDEMPOTENCY_WINDOW_SECONDS is the repeated-eventId window (a repeat after it is
    a new event), METRICS_FLUSH_MS=0 writes the metrics before the request answers, and the change-feed
    claim and snapshot live CHANGEFEED_DEDUP_TTL_HOURS and CHANGEFEED_STATE_TTL_DAYS."""
    app, t = tuned.app, tenant("window")
    body = event_body(t)
    with tuned.stack.redis() as r:
        first = app.post("/events", json=body, tenants=[t])
        assert first.status_code == 201, first.text
        # METRICS_FLUSH_MS=0: in Redis, where every instance reads, when the request answers.
        assert r.hget(f"grc:{{{t}}}:m:total", "acc") == b"1", r.hgetall(f"grc:{{{t}}}:m:total")
        ttl = int(r.ttl(f"grc:{{{t}}}:idem:{body['eventId']}"))
        assert 0 < ttl <= TUNED_WINDOW_SECONDS, ttl
        again = app.post("/events", json=body, tenants=[t])
        assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
        wait_for(lambda: not r.exists(f"grc:{{{t}}}:idem:{body['eventId']}"), TUNED_WINDOW_SECONDS + 5,
                 what="the idempotency window over")
        later = app.post("/events", json=body, tenants=[t])
        assert later.status_code == 201 and later.json()["status"] == "accepted", later.text

        cf_tenant = tenant("cflife")
        Platform(app.env).create("risks", {"id": f"{cf_tenant}-risk", "tenantId": cf_tenant,
                                           "title": "Vendor breach", "category": "cyber", "likelihood": 4,
                                           "impact": 5, "score": 20, "status": "open"})
        wait_events(app, cf_tenant, 1, 60, source="COSMOS_DB")
        ttls = _ttls(r, cf_tenant)
    assert _within(ttls["idem"], TUNED_CF_CLAIM_HOURS * 3_600), ttls
    assert _within(ttls["cf:s"], TUNED_CF_STATE_DAYS * 86_400), ttls


def test_the_overdue_check_runs_on_the_schedule_its_setting_names(tuned: Tuned) -> None:
    """README 'Settings': OVERDUE_SCHEDULE is the NCRONTAB of the overdue-assessment timer (a `%SETTING%`
    in its binding); the runner runs it on that schedule (every 3 s here) without being asked."""
    app = tuned.app
    assert f"timer assessments_overdue: {TUNED_OVERDUE_SCHEDULE}" in app.log()
    done = "Executed 'Functions.assessments_overdue' (Succeeded"
    before = len(_log_lines(app.log(), done))
    wait_for(lambda: len(_log_lines(app.log(), done)) >= before + 3, 20, 0.5, "three scheduled runs")
    starts = []  # when each run started: its line's time less its Duration
    for at, line in _log_lines(app.log(), done)[-3:]:
        took = re.search(r"Duration=(\d+)ms", line)
        assert took is not None, line
        starts.append(at.timestamp() - int(took.group(1)) / 1000)
    # Each at an occurrence of `*/3 * * * * *` (a second divisible by 3), none in between.
    assert all(s % 3 < 1.5 for s in starts), [s % 3 for s in starts]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(2.5 <= g <= 9.5 for g in gaps), gaps
    assert "assessments_overdue run by hand" not in app.log()


def test_info_records_are_not_exported_at_zero_sampling_and_a_record_carries_its_requests_trace(
        tuned: Tuned) -> None:
    """docs/host-logging.md: TELEMETRY_INFO_SAMPLING is the 'share of debug/info records sent; warnings/errors
    always sent' (0 here: the runner's log has the info line, the ingestion endpoint never does); the app's
    records 'join on operation_Id' with the host's request: the trace id of the request's traceparent."""
    app, ingestion = tuned.app, tuned.ingestion
    t = tenant("sampled")
    app.configure(t, {"destinations": [{"type": "redis"}, REFUSING_KAFKA]})
    refused = app.post("/events", json=event_body(t), anonymous=True)
    assert refused.status_code == 401
    wait_for(lambda: "POST /events refused 401" in app.log(), 10, what="the info line in the runner's log")
    trace, span = secrets.token_hex(16), secrets.token_hex(8)
    r = app.post("/events/bulk", json={"events": [event_body(t) for _ in range(3)]}, tenants=[t],
                 headers={"traceparent": f"00-{trace}-{span}-01"})
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text

    def failure() -> list[dict[str, Any]]:
        return [e for e in ingestion.logs()
                if (e["data"]["baseData"].get("properties") or {}).get("errorType") == "DeliveryFailed"
                and e["data"]["baseData"]["properties"].get("tenantId") == t]

    records = wait_for(failure, 30, 0.5, "the DeliveryFailed error record exported")
    time.sleep(3)  # a log batch leaves within 2 s: the info line, had it been kept, would be here now
    of_the_request = [e for e in failure() if e.get("tags", {}).get("ai.operation.id") == trace]
    assert len(of_the_request) == 1, [e.get("tags") for e in records]
    exported = ingestion.logs()
    low = [e["data"]["baseData"].get("message") for e in exported
           if e["data"]["baseData"].get("severityLevel") in (0, 1, "Verbose", "Information")]
    assert not low, low[:5]
    assert not any("refused 401" in str(e["data"]["baseData"].get("message")) for e in exported)


def test_the_apps_metrics_are_pre_aggregated_per_interval_whatever_the_event_rate(tuned: Tuned) -> None:
    """docs/host-logging.md: the `grc.*` custom metrics 'are pre-aggregated per 15 s (volume independent of
    event rate)': five requests of 60 events each are one or two records of grc.events.accepted for the
    tenant (the requests may straddle an interval's end), adding up to the 300 events."""
    app, ingestion = tuned.app, tuned.ingestion
    t = tenant("agg")
    for _ in range(5):
        r = app.post("/events/bulk", json={"events": [event_body(t) for _ in range(60)]}, tenants=[t])
        assert r.status_code == 200 and r.json()["accepted"] == 60, r.text[:300]

    def records() -> list[dict[str, Any]]:
        return [e["data"]["baseData"] for e in ingestion.metrics("grc.events.accepted")
                if (e["data"]["baseData"].get("properties") or {}).get("tenantId") == t]

    def total() -> float:
        return sum(float(d["metrics"][0]["value"]) for d in records())

    wait_for(lambda: total() >= 300, 45, 1.0, "the tenant's accepted events exported")
    time.sleep(1)
    assert total() == 300 and 1 <= len(records()) <= 2, [d["metrics"][0] for d in records()]


# ---- README "Local runner": the queue listener's contract on the real app (tuned app's stack) --------------

@pytest.mark.timeout(200)
def test_a_message_not_base64_is_poisoned_at_once_and_a_failing_one_after_five_attempts(tuned: Tuned) -> None:
    """README 'Local runner', Queue: base64 messages, 'an undecodable one goes to `<queue>-poison` at once',
    'visible again after visibilityTimeout on failure' (host.json: 10 s), '`<queue>-poison` after
    maxDequeueCount (5)', its content as sent. The vector queue's function raises on a message that is
    not its JSON (docs/vector-search.md: the host retries it, then poisons it)."""
    app, stack = tuned.app, tuned.stack
    queue_name = app.env["VECTOR_QUEUE"]
    executed = "Executed 'Functions.index_vectors' ("
    before = len(_log_lines(app.log(), executed))
    with QueueClient.from_connection_string(stack.storage, queue_name) as q, \
            QueueClient.from_connection_string(stack.storage, f"{queue_name}-poison",
                                               message_decode_policy=TextBase64DecodePolicy()) as poison, \
            QueueClient.from_connection_string(stack.storage, f"{queue_name}-poison") as raw_poison:
        try:
            q.create_queue()
        except ResourceExistsError:
            pass
        not_base64 = "%% not base64 %%"
        q.send_message(not_base64)
        peeked = wait_for(lambda: _peek(raw_poison), 15, 0.3, "the undecodable message poisoned")
        assert [m.content for m in peeked] == [not_base64]
        assert len(_log_lines(app.log(), executed)) == before, "the function ran on an undecodable message"
        raw_poison.clear_messages()

        failing = base64.b64encode(b"not the vector queue's JSON").decode()
        q.send_message(failing)
        moved = wait_for(lambda: _peek(raw_poison), (MAX_DEQUEUE_COUNT - 1) * 14 + 30, 0.5,
                         "the failing message poisoned")
        assert [m.content for m in moved] == [failing]
        assert [m.content for m in poison.peek_messages(5)] == ["not the vector queue's JSON"]
    runs = _log_lines(app.log(), executed)[before:]
    assert len(runs) == MAX_DEQUEUE_COUNT and all("(Failed" in line for _, line in runs), runs
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(runs, runs[1:])]
    assert all(VISIBILITY_TIMEOUT_SECONDS - 0.5 <= g <= VISIBILITY_TIMEOUT_SECONDS + 8 for g in gaps), gaps
    assert stack.queue_depth(queue_name) == 0


def _peek(q: QueueClient) -> list[Any] | None:
    try:
        return list(q.peek_messages(5)) or None
    except Exception:  # noqa: BLE001 - the poison queue appears with its first message
        return None


# ---- README "Local runner" and "Settings": the runner as a process -----------------------------------------

def test_port_and_settings_file_are_read_and_a_binding_naming_a_missing_setting_disables_that_function(
        tuned: Tuned, tmp_path: Path) -> None:
    """README: 'resolves %SETTING% names from local.settings.json (a binding naming a missing setting
    disables that function, as the host does)'; PORT is the runner's port when `--port` is not given.
    Stopped with SIGHUP (a terminal closing), it stops itself."""
    port = services.free_port()
    env = _runner_env(tuned.stack, tmp_path, PORT=str(port))
    from_file = f"from-file-{secrets.token_hex(3)}"
    del env["RETRY_QUEUE"], env["VECTOR_QUEUE"]
    runner = _launch(env, tmp_path, settings={"RETRY_QUEUE": from_file})
    try:
        assert runner.port == port
        functions = {f["name"] for f in httpx.get(f"{runner.base}/admin/functions", timeout=10).json()}
        assert "index_vectors" not in functions
        assert {"drain_retries", "run_backfill", "publish_event"} <= functions, functions
        assert "function index_vectors not loaded: binding refers to %VECTOR_QUEUE%" in runner.log()
        assert f"queue drain_retries: {from_file}" in runner.log()
        assert httpx.get(f"{runner.base}/health", timeout=30).status_code == 200
        runner.proc.send_signal(signal.SIGHUP)
        assert runner.exit_code() == 0, runner.log()[-3000:]
        assert "INFO devhost: stopped (SIGHUP)" in runner.log()
    finally:
        services.stop(runner.proc)


def test_log_level_warning_keeps_errors_only_and_sigint_stops_the_runner(tuned: Tuned,
                                                                         tmp_path: Path) -> None:
    """README 'Settings': LOG_LEVEL (debug, info, warning, error) is the runner's and the app's log level:
    at warning an invocation's error is logged, a request's info line is not. SIGINT (Ctrl+C) stops it."""
    port = services.free_port()
    runner = _launch(_runner_env(tuned.stack, tmp_path, LOG_LEVEL="warning"), tmp_path, port=port)
    try:
        refused = httpx.post(f"{runner.base}/events", json=event_body("lvl-tenant"), timeout=30)
        assert refused.status_code == 401, refused.text
        r = httpx.post(f"{runner.base}/admin/functions/index_vectors", json={"input": "not JSON"}, timeout=30)
        assert r.status_code == 202
        wait_for(lambda: "Executed 'Functions.index_vectors' (Failed" in runner.log(), 30,
                 what="the failed run's error line")
        runner.proc.send_signal(signal.SIGINT)
        assert runner.exit_code() == 0, runner.log()[-3000:]
    finally:
        services.stop(runner.proc)
    levels = {m.group(2) for line in runner.log().splitlines() if (m := _LINE.search(line))}
    assert "ERROR" in levels and not levels & {"INFO", "DEBUG"}, sorted(levels)
    assert "refused 401" not in runner.log()


def test_the_runner_stops_when_the_terminal_it_was_started_from_is_gone(tuned: Tuned, tmp_path: Path) -> None:
    """README 'Local runner': it stops 'when the terminal it was started from is gone' -- here no signal
    reaches it (the terminal is not its controlling one, as under `make run` in a tmux pane or an IDE):
    only its standard input stops being a terminal."""
    master, slave = pty.openpty()
    master_open = True
    try:
        try:
            runner = _launch(_runner_env(tuned.stack, tmp_path), tmp_path, port=services.free_port(),
                             stdin=slave)
        finally:
            os.close(slave)
        try:
            time.sleep(1.5)  # it checks its terminal once a second: still there, it keeps serving
            assert runner.proc.poll() is None
            os.close(master)
            master_open = False
            assert runner.exit_code(45) == 0, runner.log()[-3000:]
            assert "INFO devhost: stopped (its terminal closed)" in runner.log()
        finally:
            services.stop(runner.proc)
    finally:
        if master_open:
            os.close(master)


def test_an_azurefunctionsjobhost_setting_overrides_host_json(tmp_path: Path) -> None:
    """README 'Local runner': an `AzureFunctionsJobHost__<path>` app setting overrides that host.json value
    (as the host applies it in Azure, and under `func start` from local.settings.json), its names in any
    case. With maxDequeueCount 2 and visibilityTimeout 1 s set so, a message the vector queue's function
    fails on is poisoned after 2 attempts about a second apart, where host.json says 5 and 10 s."""
    from tests.system.harness import own_stack_and_app

    overrides = {"AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
                 "AZUREFUNCTIONSJOBHOST__Extensions__Queues__VisibilityTimeout": "00:00:01"}
    with own_stack_and_app(tmp_path, ("redis", "azurite"), **overrides) as (stack, app):
        queue_name = app.env["VECTOR_QUEUE"]
        executed = "Executed 'Functions.index_vectors' ("
        with QueueClient.from_connection_string(stack.storage, queue_name) as q, \
                QueueClient.from_connection_string(stack.storage, f"{queue_name}-poison") as poison:
            try:
                q.create_queue()
            except ResourceExistsError:
                pass
            failing = base64.b64encode(b"not the vector queue's JSON").decode()
            q.send_message(failing)
            moved = wait_for(lambda: _peek(poison), 30, 0.3, "the failing message poisoned")
            assert [m.content for m in moved] == [failing]
        runs = _log_lines(app.log(), executed)
        assert len(runs) == 2 and all("(Failed" in line for _, line in runs), runs
        gap = (runs[1][0] - runs[0][0]).total_seconds()
        assert 0.5 <= gap <= 6, gap
        # The runner's log says which settings made host.json differ from the file.
        setting = "AzureFunctionsJobHost__extensions__queues__maxDequeueCount=2"
        assert f"host.json: {setting} applies over the file" in app.log()
