"""Nothing the service stores grows without bound (docs/capacity.md "What is kept, and for how long").

A mixed workload is driven from outside through every path that writes (single and bulk POSTs with and
without client eventIds, an Idempotency-Key, many tenants, stream-config PUTs, a change-feed write, a
delivery that fails and is dead-lettered then replayed, a backfill, the monitor / overdue / purge timers,
searches, paged GETs, rate-limited requests). Then everything the app left in Redis, Azure Tables and
Storage Queues is listed, from outside:

- every Redis key expires (a TTL no longer than the longest documented one), or its pattern is in
  BOUNDED_WITHOUT_TTL with the reason it cannot grow (one per tenant, one service-wide), and streams are
  capped: a key pattern added later without a TTL, or a TTL dropped from a write, fails here;
- every table the app creates is in TABLES with its retention, and a queue message expires.

Run with `-s` to print the inventory (pattern, count, type, TTL).
"""
from __future__ import annotations

import gzip
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.data.tables import TableServiceClient

from tests.system.cosmos import Platform, iso, wait_events
from tests.system.harness import App, Stack, create_topic, event_body, own_stack_and_app, tenant, wait_for

DAY = 86_400
# Redis keys that never expire, by pattern ({t} = a tenant's hash tag), and why each cannot grow without
# bound. docs/capacity.md lists the same keys; a pattern is added here only with its reason.
BOUNDED_WITHOUT_TTL: dict[str, str] = {
    "grc:{t}:events": "a stream per tenant, trimmed on every write to maxLen (default 10,000, ~) and by age "
                      "(retentionHours) at most once a minute",
    "grc:{t}:m:total": "a hash per tenant; its fields come from the fixed vocabularies (types, sources, "
                       "destinations, counters)",
    "grc:{t}:cfgver": "a counter per tenant whose stream config was ever written",
    "grc:tenants": "one set for the service, one member per tenant",
    "grc:active": "one sorted set, one member per tenant; a monitor pass drops those idle past the lookback "
                  "and the 65-minute metric buckets",
}
# The longest TTL any key is documented to have: change-feed entity snapshots and the overdue check's
# claims, CHANGEFEED_STATE_TTL_DAYS (400, the sample).
MAX_TTL_SECONDS = 400 * DAY
# Tables the app creates (sample names) and what bounds each; a new table must say it here.
TABLES: dict[str, str] = {
    "streamconfigs": "one row per tenant config",
    "events": "analytics rows and the tenant-hour index: purge_analytics deletes hours past retentionDays",
    "deadletters": "purge_deadletters deletes records past retentionDays",
    "backfills": "job records: the newest BACKFILL_KEEP_JOBS per tenant, older finished ones deleted; "
                 "slots: BACKFILL_MAX_CONCURRENT_JOBS per tenant",
    "audit": "the audit trail: append-only, kept by design (docs/security.md), one row per audited action",
}
# A queue message the app sends expires after the service's default: Azure Storage's 7 days.
QUEUE_MESSAGE_TTL = timedelta(days=7)
RATE, BURST = 100, 300  # events/s and burst per tenant: a tenant sending 2 x 250 at once is refused (429)
CAPPED_LEN = 100  # the maxLen of one tenant's stream; it gets CAPPED_SENT events
CAPPED_SENT = 400
NODE = 100  # Redis' stream-node-max-entries: an approximate trim keeps at most one node more
MANY = 40  # tenants of one admin bulk without eventIds


@dataclass
class Grown:
    stack: Stack
    app: App
    tenants: set[str] = field(default_factory=set)
    configured: set[str] = field(default_factory=set)
    capped: str = ""
    # every key pattern seen in Redis: snapshots during the workload (short-lived keys such as the rate
    # limit's buckets expire within seconds) merged with the one at the end
    seen: dict[str, "Kind"] = field(default_factory=dict)
    # queue -> how long each message seen there was to live (expiry - insertion)
    lifetimes: dict[str, list[timedelta]] = field(default_factory=lambda: defaultdict(list))

    def peek(self) -> int:
        """Record the lifetime of every visible message in every queue; how many there were."""
        n = 0
        with self.stack.queues() as qs:
            for q in qs.list_queues():
                for m in qs.get_queue_client(q.name).peek_messages(max_messages=32):
                    assert m.expires_on is not None and m.inserted_on is not None, (q.name, m.id)
                    self.lifetimes[q.name].append(m.expires_on - m.inserted_on)
                    n += 1
        return n

    def snapshot(self) -> None:
        self.peek()
        for p, k in _inventory(self.stack).items():
            merged = self.seen.setdefault(p, Kind())
            merged.count = max(merged.count, k.count)
            merged.types |= k.types
            merged.no_ttl = sorted(set(merged.no_ttl) | set(k.no_ttl))
            merged.max_ttl = max(merged.max_ttl, k.max_ttl)


def _no_id(body: dict[str, Any]) -> dict[str, Any]:
    """The body without its eventId: the service makes one (and keeps no idempotency record)."""
    return {k: v for k, v in body.items() if k != "eventId"}


def _bulk(app: App, events: list[dict[str, Any]], tenants: list[str] | None = None) -> Any:
    r = app.post("/events/bulk", json={"events": events}, tenants=tenants)
    assert r.status_code == 200, r.text[:500]
    return r.json()


def _executed(app: App, name: str) -> int:
    return app.log().count(f"Executed 'Functions.{name}'")


def _run(app: App, name: str, timeout: float = 90.0) -> None:
    """Run a timer through the host's admin API and wait until the runner logs its end."""
    before = _executed(app, name)
    app.run_function(name)
    wait_for(lambda: _executed(app, name) > before, timeout, 0.3, f"{name} ran")


def _workload(g: Grown) -> None:
    app, stack = g.app, g.stack
    main, failing, limited, capped = tenant("grow"), tenant("grow-dlq"), tenant("grow-rl"), tenant("grow-cap")
    g.capped = capped
    topic = f"grow-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    app.configure(main, {"topics": [topic], "destinations": [
        {"type": "redis"}, {"type": "analytics"}, {"type": "kafka"}, {"type": "vector"}]})
    app.configure(capped, {"destinations": [{"type": "redis", "config": {"maxLen": CAPPED_LEN}}]})
    # A delivery refused at once (AMQP with no Event Hubs): parked on the retry queue, then dead-lettered.
    app.configure(failing, {"destinations": [{"type": "kafka", "config": {"transport": "amqp"}, "retry": {
        "inProcessAttempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 1, "jitter": 0, "attempts": 1}}]})
    g.configured |= {main, capped, failing}
    g.tenants |= {main, failing, limited, capped}

    # singles: with a client id, without one, with an Idempotency-Key, a repeat (duplicate), gzip'd
    first = event_body(main, eventType="RISK_UPDATED", source="ARCHER_GRC", action="UPDATE",
                       data={"title": "Vendor access review overdue", "score": 12})
    for body in (first, _no_id(event_body(main)), first):
        assert app.post("/events", json=body, tenants=[main]).status_code in (200, 201)
    r = app.post("/events", json=_no_id(event_body(main)), tenants=[main],
                 headers={"Idempotency-Key": f"idem-{uuid.uuid4().hex}"})
    assert r.status_code == 201, r.text
    raw = gzip.compress(app.client.build_request("POST", "/", json=event_body(main)).read())
    r = app.post("/events", content=raw, tenants=[main],
                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 201, r.text
    # bulks: the main tenant with ids, many tenants (admin) without
    past = iso(datetime.now(UTC) - timedelta(minutes=30))  # history for the backfill below
    _bulk(app, [event_body(main, entityId=f"ctl-{n}", timestamp=past) for n in range(150)], [main])
    many = [tenant("grow-m") for _ in range(MANY)]
    g.tenants |= set(many)
    _bulk(app, [_no_id(event_body(t)) for t in many for _ in range(3)])
    # the capped stream: CAPPED_SENT events in bulks within the rate limit
    for start in range(0, CAPPED_SENT, 200):
        if start:
            time.sleep(200 / RATE + 0.2)
        out = _bulk(app, [event_body(capped) for _ in range(200)], [capped])
        assert out["accepted"] == 200, str(out)[:300]
    # rate-limited: the second bulk finds the bucket short
    _bulk(app, [event_body(limited) for _ in range(250)], [limited])
    again = {"events": [event_body(limited) for _ in range(250)]}
    r = app.post("/events/bulk", json=again, tenants=[limited])
    assert r.status_code == 429 and r.headers.get("retry-after"), r.text[:300]
    g.snapshot()

    # a failed delivery: parked, dead-lettered by the queue trigger, replayed (parked and dead-lettered again)
    r = app.post("/events", json=event_body(failing), tenants=[failing])
    assert r.status_code == 201 and r.json()["destinations"][0]["status"] == "parked", r.text
    wait_for(lambda: app.get(f"/deadletters/{failing}", tenants=[failing]).json()["deadLetters"], 60,
             what="the dead letter")
    r = app.post(f"/deadletters/{failing}/replay", json={}, tenants=[failing])
    assert r.status_code == 200, r.text

    # the change feed: a risk and an assessment already overdue (the overdue check announces it)
    platform = Platform(app.env)
    feed = tenant("grow-cf")
    g.tenants.add(feed)
    platform.create("risks", {"id": "r-1", "tenantId": feed, "title": "Vendor breach", "status": "open"})
    platform.create("assessments", {"id": "a-1", "tenantId": feed, "title": "SOC 2", "status": "in_progress",
                                    "dueDate": iso(datetime.now(UTC) - timedelta(days=1))})
    wait_events(app, feed, 2, 90, source="COSMOS_DB")
    _run(app, "assessments_overdue")

    # a backfill of the main tenant's history into its stream
    now = datetime.now(UTC)
    r = app.post(f"/backfills/{main}", tenants=[main], json={
        "from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat(), "destination": "redis"})
    assert r.status_code == 202, r.text
    job = r.json()["jobId"]

    def ended() -> bool:
        g.snapshot()  # while it runs: its throttle's bucket lives seconds
        return app.get(f"/backfills/{main}/{job}", tenants=[main]).json()["state"] in ("completed", "failed")

    wait_for(ended, 90, what="the backfill ended")
    assert app.get(f"/backfills/{main}/{job}", tenants=[main]).json()["state"] == "completed"

    # reads: every GET route, pages followed by their continuation token
    for path, token in ((f"/events/{main}/history", "continuationToken"), (f"/audit/{main}", "continuation"),
                        (f"/deadletters/{failing}", "continuationToken"),
                        (f"/backfills/{main}", "continuationToken")):
        t = path.split("/")[2]
        page = app.get(path, params={"limit": "1"}, tenants=[t])
        assert page.status_code == 200, (path, page.text)
        if nxt := page.json().get(token):
            assert app.get(path, params={"limit": "1", token: nxt}, tenants=[t]).status_code == 200
    for path in (f"/events/{main}", f"/metrics/{main}", f"/stream-config/{main}",
                 f"/stream-config/{many[0]}"):
        assert app.get(path, tenants=[main if main in path else many[0]]).status_code == 200, path
    assert app.get("/health", anonymous=True).status_code in (200, 503)
    wait_for(lambda: app.get(f"/search/{main}", params={"q": "vendor access", "k": "5"},
                             tenants=[main]).json().get("count"), 90, 1.0, what="a search hit")

    # the timers: the retention purges, and the monitor over the last minute with events (its tenant-minute
    # claims and anomaly baselines): that minute must be over first
    for name in ("purge_analytics", "purge_deadletters", "purge_vectors"):
        _run(app, name)
    assert app.post("/events", json=event_body(main), tenants=[main]).status_code == 201
    minute = int(time.time() // 60)
    wait_for(lambda: int(time.time() // 60) > minute, 75, 0.2, what=f"minute {minute} over")
    app.run_function("monitor")
    wait_for(lambda: f"monitor pass for minute {minute}:" in app.log(), 60, 0.5, what=f"a pass over {minute}")
    # a queue message caught before the runner takes it: the vector destination enqueues one per event,
    # and a quiet runner polls a queue every 2 s at most
    for _ in range(3):
        assert app.post("/events", json=event_body(main), tenants=[main]).status_code == 201
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not g.peek():
            time.sleep(0.02)
        if g.lifetimes:
            break
    time.sleep(1.5)  # METRICS_FLUSH_MS: the last counts reach Redis


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grown]:
    work: Path = tmp_path_factory.mktemp("growth")
    limits = {"RATE_LIMIT_EVENTS_PER_SECOND": str(RATE), "RATE_LIMIT_BURST": str(BURST)}
    with own_stack_and_app(work, ("redis", "azurite", "cosmos", "kafka"), **limits) as (stack, app):
        g = Grown(stack, app)
        _workload(g)
        g.snapshot()
        yield g


def pattern(key: str) -> str:
    """The key with its tenant replaced by `{t}` and its first variable part (an id, a time, a hash:
    a segment with a digit, `-`, `_` or `.`) and all after it by `<id>`."""
    tagged = key.startswith("grc:{") and "}" in key
    head, rest = ("grc:{t}", key[key.index("}") + 1:].lstrip(":")) if tagged else ("", key)
    out = [head] if head else []
    for seg in rest.split(":") if rest else []:
        if any(c.isdigit() or c in "-_." for c in seg) or len(seg) > 24:
            out.append("<id>")
            break
        out.append(seg)
    return ":".join(out)


@dataclass
class Kind:
    count: int = 0
    types: set[str] = field(default_factory=set)
    no_ttl: list[str] = field(default_factory=list)
    max_ttl: float = 0.0


def _inventory(stack: Stack) -> dict[str, Kind]:
    r = stack.redis()
    kinds: dict[str, Kind] = defaultdict(Kind)
    keys = list(r.scan_iter(count=1000))
    pipe = r.pipeline(transaction=False)
    for raw in keys:
        pipe.pttl(raw)
        pipe.type(raw)
    replies = pipe.execute()
    for i, raw in enumerate(keys):
        key, pttl, type_ = raw.decode(), replies[2 * i], replies[2 * i + 1].decode()
        if pttl == -2:  # expired between SCAN and now
            continue
        k = kinds[pattern(key)]
        k.count += 1
        k.types.add(type_)
        if pttl == -1:
            k.no_ttl.append(key)
        else:
            k.max_ttl = max(k.max_ttl, pttl / 1000)
    return dict(kinds)


def _print(kinds: dict[str, Kind]) -> None:
    print(f"\n{'pattern':40} {'keys':>6} {'type':8} {'TTL (max)':>12}  bound")
    for p, k in sorted(kinds.items()):
        ttl = "none" if k.no_ttl else f"{k.max_ttl:,.0f} s"
        why = BOUNDED_WITHOUT_TTL.get(p, "")[:60]
        print(f"{p:40} {k.count:>6} {','.join(sorted(k.types)):8} {ttl:>12}  {why}")


def test_every_redis_key_expires_or_is_a_documented_bounded_kind(grown: Grown) -> None:
    kinds = grown.seen
    _print(kinds)
    # the workload reached every path that writes Redis (the inventory is not vacuous)
    for seen in ("grc:{t}:events", "grc:{t}:dlv:<id>", "grc:{t}:idem:<id>", "grc:{t}:m:b:<id>",
                 "grc:{t}:ratelimit", "grc:{t}:mon:<id>", "grc:{t}:anomaly", "grc:{t}:cf:s:risks:<id>",
                 "grc:{t}:replay:<id>", "grc:{t}:backfill", "grc:health", "grc:service:perf"):
        assert seen in kinds, f"the workload wrote no {seen}: {sorted(kinds)}"
    unbounded = {p: k.no_ttl[:3] for p, k in kinds.items() if k.no_ttl and p not in BOUNDED_WITHOUT_TTL}
    assert not unbounded, f"keys without a TTL, trim or documented bound: {unbounded}"
    too_long = {p: k.max_ttl for p, k in kinds.items() if k.max_ttl > MAX_TTL_SECONDS}
    assert not too_long, f"TTLs past the longest documented one ({MAX_TTL_SECONDS} s): {too_long}"
    # the keys that never expire are one per tenant (or one for the service), never one per event
    tenants = len(grown.tenants)
    for p in BOUNDED_WITHOUT_TTL:
        if p in kinds:
            assert kinds[p].count <= (tenants if "{t}" in p else 1), (p, kinds[p].count, tenants)
    r = grown.stack.redis()
    assert r.scard("grc:tenants") <= tenants and r.zcard("grc:active") <= tenants
    assert r.hlen(f"grc:{{{grown.capped}}}:m:total") < 100  # counters by kind, not by event


def test_every_stream_is_capped_and_a_capped_one_was_trimmed(grown: Grown) -> None:
    r = grown.stack.redis()
    streams = [k for k in r.scan_iter(match="grc:{*}:events", count=1000, _type="stream")]
    assert len(streams) >= MANY
    for key in streams:
        assert r.xlen(key) <= 10_000 + NODE, key  # the default maxLen, one node of slack
    info = r.xinfo_stream(f"grc:{{{grown.capped}}}:events")
    assert info["entries-added"] >= CAPPED_SENT
    assert info["length"] <= CAPPED_LEN + NODE, info["length"]


def test_every_table_has_a_retention_and_queue_messages_expire(grown: Grown) -> None:
    with TableServiceClient.from_connection_string(grown.stack.storage) as service:
        names = sorted(t.name for t in service.list_tables())
        rows = {n: sum(1 for _ in service.get_table_client(n).list_entities(select=["RowKey"]))
                for n in names}
    print("\ntables:", rows)
    assert set(names) <= set(TABLES), f"tables without a documented retention: {set(names) - set(TABLES)}"
    assert {"streamconfigs", "events", "deadletters", "backfills", "audit"} <= set(names)
    assert rows["streamconfigs"] == len(grown.configured)  # one row per configured tenant
    grown.peek()
    print("queue messages seen:", {q: len(ls) for q, ls in grown.lifetimes.items()})
    assert grown.lifetimes, "no queue message seen: the check would be vacuous"
    for q, lifetimes in grown.lifetimes.items():
        assert max(lifetimes) <= QUEUE_MESSAGE_TTL, (q, max(lifetimes))


def _rss_mb(app: App) -> float:
    """The runner's resident memory (it runs the app in its own process), MB."""
    for line in Path(f"/proc/{app.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_the_runners_memory_levels_off_however_many_tenants_it_sees(grown: Grown) -> None:
    """The app's per-tenant caches (keys, configs, routes, rate-limit leases, trims) are capped at 10,000
    tenants or more: past that, RSS stops following the number of tenants. 12,000 new tenants first
    (every cap of 10,000 reached), then 18,000 more: without a cap the configs alone would add ~50 MB
    (~2.9 KB each)."""
    app = grown.app
    run = uuid.uuid4().hex[:6]

    def tenants(first: int, n: int) -> None:
        for start in range(first, first + n, 1000):
            _bulk(app, [_no_id(event_body(f"rss-{run}-{i:05d}")) for i in range(start, start + 1000)])

    tenants(0, 12_000)
    after_first = _rss_mb(app)
    tenants(12_000, 18_000)
    after_all = _rss_mb(app)
    print(f"\nrunner RSS: {after_first:.0f} MB after 12,000 tenants, {after_all:.0f} MB after 30,000")
    assert after_all - after_first < 25, (after_first, after_all)
