"""Promises of README ('API': the `GET /search` and `GET /health` rows, 'Health', the query-string rules)
and docs/vector-search.md ('Search API', 'Backlog', the tenant guard) that no other system test proved,
checked from outside the running app: HTTP, and the vector queue as an operator sees it in Azurite.

- `GET /search/{tenantId}`: every documented parameter rule (`q`, `k`, `mode`, `eventType`, `from`,
  `to`) refuses a bad value with 400 problem details naming the parameter (`#/query/<name>`, field
  `<name>`), never a 500; values at the documented bounds are served; a question is any text.
- The filters `eventType`, `entityType`, `from`, `to` (inclusive, offsets read as instants) restrict
  the hits on all three modes; another tenant's look-alike events are never returned, and a caller not
  granted the tenant gets 403 (no identity: 401 with `WWW-Authenticate: Bearer`).
- `VECTOR_SEARCH_MAX_K` is the largest `k`.
- `/health`: `dependencies.vector.backlogMessages` is the vector queue's message count, `degraded`
  above 5,000 messages; `HEALTH_DEGRADED_MS`: a dependency slower than it is `degraded` (200).

The module's own stack (Redis, Azurite, Cosmos) and app serve the tests that need settings of their
own or an exact queue count (the session app's vector queue also gets other tests' events).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from azure.storage.queue import QueueClient

from tests.system.harness import App, Stack, app_env, event_body, own_stack, start_app, tenant, wait_for

SEARCH_TENANT = tenant("sval")  # nothing indexed: parameter checks only


def _qs(**params: str) -> str:
    """A query string with every value percent-encoded (a `+` as %2B, as README asks)."""
    return urlencode(params, quote_via=quote)


def _search_raw(app: App, t: str, query: str, **kw: Any) -> httpx.Response:
    return app.get(f"/search/{t}?{query}", tenants=[t], **kw)


def _assert_problem_naming(r: httpx.Response, name: str | tuple[str, ...]) -> dict[str, Any]:
    """README 'API': 'Errors are RFC 9457 problem details (`application/problem+json`) with `errors[]`
    naming each invalid field by JSON Pointer (`pointer`) and dotted path (`field`), plus the request's
    `correlationId`'; a query parameter is `#/query/<name>`, as every route reports it."""
    names = (name,) if isinstance(name, str) else name
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == 400 and body["title"] and body["type"], body
    named = [(e.get("field"), e.get("pointer")) for e in body.get("errors", [])]
    assert any((n, f"#/query/{n}") in named for n in names), (names, body)
    assert body.get("correlationId") and body["correlationId"] == r.headers["x-correlation-id"], body
    return dict(body)


# ---- GET /search parameter rules (docs/vector-search.md 'Search API') -------------------------------------

# (id, query string, the parameter the problem must name)
BAD_QUERIES: list[tuple[str, str, str | tuple[str, ...]]] = [
    ("q-missing", _qs(k="5"), "q"),
    ("q-blank", _qs(q="   "), "q"),
    ("q-1001-characters", _qs(q="a" * 1001), "q"),
    ("k-0", _qs(q="risk", k="0"), "k"),
    ("k-above-the-max-50", _qs(q="risk", k="51"), "k"),
    ("k-negative", _qs(q="risk", k="-1"), "k"),
    ("k-not-a-number", _qs(q="risk", k="ten"), "k"),
    ("k-decimal", _qs(q="risk", k="2.5"), "k"),
    ("k-exponent", _qs(q="risk", k="1e1"), "k"),
    ("k-superscript-digit", _qs(q="risk", k="\u00b2"), "k"),
    ("k-40-digits", _qs(q="risk", k="9" * 40), "k"),
    ("k-given-twice", "q=risk&k=1&k=2", "k"),  # README: arrives as "1,2", a 400
    ("mode-unknown", _qs(q="risk", mode="fuzzy"), "mode"),
    ("mode-upper-case", _qs(q="risk", mode="HYBRID"), "mode"),
    ("mode-given-twice", "q=risk&mode=vector&mode=keyword", "mode"),
    ("eventType-unknown", _qs(q="risk", eventType="RISK_EXPLODED"), "eventType"),
    ("eventType-lower-case", _qs(q="risk", eventType="risk_created"), "eventType"),
    ("eventType-one-of-two-unknown", _qs(q="risk", eventType="RISK_CREATED,RISK_EXPLODED"), "eventType"),
    ("from-date-only", _qs(q="risk", **{"from": "2026-01-31"}), "from"),
    ("from-no-offset", _qs(q="risk", **{"from": "2026-01-31T12:00:00"}), "from"),
    ("from-words", _qs(q="risk", **{"from": "yesterday"}), "from"),
    ("to-month-13", _qs(q="risk", to="2026-13-01T00:00:00Z"), "to"),
    ("to-hour-24", _qs(q="risk", to="2026-01-31T24:00:00Z"), "to"),
    ("to-before-year-1-in-utc", _qs(q="risk", to="0001-01-01T00:00:00+01:00"), "to"),
    ("to-after-year-9999-in-utc", _qs(q="risk", to="9999-12-31T23:59:59-01:00"), "to"),
    ("from-after-to", _qs(q="risk", **{"from": "2026-02-01T00:00:00Z"}, to="2026-01-31T23:59:59Z"),
     ("from", "to")),
    # 23:30 at -01:00 is 00:30 UTC the next day: later than `to` as an instant, earlier on the wall clock.
    ("from-after-to-as-instants",
     _qs(q="risk", **{"from": "2026-01-31T23:30:00-01:00"}, to="2026-02-01T00:00:00Z"), ("from", "to")),
]


@pytest.mark.parametrize(("query", "name"), [pytest.param(q, n, id=i) for i, q, n in BAD_QUERIES])
def test_a_bad_search_parameter_is_a_400_problem_naming_it(app: App, query: str, name: str) -> None:
    """docs/vector-search.md 'Search API': '`q` required, at most 1,000 characters; `k` 1 to
    `VECTOR_SEARCH_MAX_K` (50), default 10; `mode` `hybrid` (default), `vector` or `keyword`; `eventType`
    EventType values, comma-separated; `from`, `to` RFC 3339 with offset, inclusive; `from` <= `to`' and
    'Bad parameters are 400 problem details naming the field'. README: 'A query parameter given twice
    reaches the app as its values joined by `,` (`limit=1&limit=2` is `1,2`, a 400)'."""
    _assert_problem_naming(_search_raw(app, SEARCH_TENANT, query), name)


def test_an_unencoded_plus_in_from_is_a_400_saying_so(app: App) -> None:
    """README: 'A `+` in a query string reads as a space, so a date-time's offset goes as `%2B`
    (`from=2026-01-31T12:00:00%2B01:00`); one sent as `+` is answered 400 saying so.'"""
    r = _search_raw(app, SEARCH_TENANT, "q=risk&from=2026-01-31T12:00:00+01:00")
    body = _assert_problem_naming(r, "from")
    assert "%2B" in body["detail"], body
    ok = _search_raw(app, SEARCH_TENANT, "q=risk&from=2026-01-31T12:00:00%2B01:00")
    assert ok.status_code == 200, ok.text


# (id, query string, the `k` and `mode` the answer must echo)
GOOD_QUERIES: list[tuple[str, str, int, str]] = [
    ("k-1", _qs(q="risk", k="1"), 1, "hybrid"),
    ("k-50-the-max", _qs(q="risk", k="50"), 50, "hybrid"),
    ("k-absent-is-10", _qs(q="risk"), 10, "hybrid"),
    # README: a query parameter 'with an empty value as if it were absent'
    ("k-empty-is-absent", "q=risk&k=", 10, "hybrid"),
    ("mode-empty-is-absent", "q=risk&mode=", 10, "hybrid"),
    ("mode-vector", _qs(q="risk", mode="vector"), 10, "vector"),
    ("mode-keyword", _qs(q="risk", mode="keyword"), 10, "keyword"),
    ("q-1000-characters", _qs(q="a" * 1000), 10, "hybrid"),
    ("q-1000-characters-of-2-bytes", _qs(q="\u00e9" * 1000), 10, "hybrid"),
    ("from-equals-to", _qs(q="risk", **{"from": "2026-01-31T12:00:00Z"}, to="2026-01-31T12:00:00Z"), 10,
     "hybrid"),
    # 00:30 at +02:00 is 22:30 UTC the day before: earlier than `to` as an instant, later on the wall clock.
    ("from-before-to-as-instants", _qs(q="risk", **{"from": "2026-02-01T00:30:00+02:00"},
                                       to="2026-01-31T23:00:00Z"), 10, "hybrid"),
    ("lower-case-t-and-z", _qs(q="risk", **{"from": "2026-01-31t12:00:00z"}), 10, "hybrid"),
    ("fraction-of-a-second", _qs(q="risk", to="2026-01-31T12:00:00.123Z"), 10, "hybrid"),
    ("eventType-list", _qs(q="risk", eventType="RISK_CREATED,CONTROL_FAILED"), 10, "hybrid"),
    ("entityType-list", _qs(q="risk", entityType="risk,control"), 10, "hybrid"),
]


@pytest.mark.parametrize(("query", "k", "mode"), [pytest.param(q, k, m, id=i) for i, q, k, m in GOOD_QUERIES])
def test_search_parameters_within_the_rules_are_served(app: App, query: str, k: int, mode: str) -> None:
    """The same table's bounds, from inside: `k` 1 and 50, the default 10, each mode, a question of 1,000
    characters (characters, not bytes), `from` = `to` (inclusive), offsets compared as instants."""
    r = _search_raw(app, SEARCH_TENANT, query)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert (body["k"], body["mode"], body["tenantId"]) == (k, mode, SEARCH_TENANT), body
    assert body["count"] == len(body["hits"]) == 0, body  # nothing of this tenant is indexed


# Any text is a question: search syntax of FTS5/Lucene, SQL, quotes, control characters and emoji are words.
ODD_QUESTIONS = ['"', '"unbalanced quote', "NEAR(risk control)", "risk AND", "OR", "NOT risk", "*", "risk*",
                 "body:risk", "tkey : x", "(risk", "^risk", "-risk", "'; DROP TABLE vector_fts; --", "\x00",
                 "risk\x00control", "\U0001f525 risk", "%", "\\", "{!lucene}risk", "risk~2", "a:b:c",
                 "\u202eksir", "risk\ncontrol\ttest"]


def test_any_question_text_is_answered_never_a_500(app: App) -> None:
    """docs/vector-search.md: '`q` required, at most 1,000 characters' and no other rule: every mode answers
    200 to questions made of query-language syntax, quotes, control characters or emoji."""
    failures = {}
    for question in ODD_QUESTIONS:
        for mode in ("hybrid", "vector", "keyword"):
            r = app.get(f"/search/{SEARCH_TENANT}", tenants=[SEARCH_TENANT],
                        params={"q": question, "mode": mode})
            if r.status_code != 200:
                failures[(question, mode)] = (r.status_code, r.text[:200])
    assert not failures, failures


# ---- Filters and the tenant guard (docs/vector-search.md 'Search API', 'Tenant') --------------------------

NOW = datetime.now(UTC).replace(microsecond=0)
# name: (eventType, action, entityType, entityId, age, data)
LOOK_ALIKES: dict[str, tuple[str, str, str, str, timedelta, dict[str, Any]]] = {
    "A": ("CONTROL_FAILED", "TEST", "control", "VND-1", timedelta(days=4),
          {"name": "Vendor onboarding due diligence", "description": "Vendor onboarding review failed.",
           "status": "failed"}),
    "B": ("CONTROL_TESTED", "TEST", "control", "VND-1", timedelta(days=3),
          {"name": "Vendor onboarding due diligence", "description": "Vendor onboarding review passed.",
           "result": "passed"}),
    "C": ("RISK_CREATED", "CREATE", "risk", "R-9", timedelta(days=2),
          {"title": "Vendor onboarding skips sanctions screening", "severity": "high"}),
    "D": ("COMPLIANCE_GAP_DETECTED", "DETECT", "complianceRecord", "GAP-3", timedelta(days=1),
          {"title": "No vendor onboarding contract clause for data protection"}),
    "E": ("ASSESSMENT_OVERDUE", "DETECT", "assessment", "AS-5", timedelta(hours=1),
          {"title": "Annual vendor onboarding assessment", "status": "overdue"}),
}


def _at(name: str) -> datetime:
    return NOW - LOOK_ALIKES[name][4]


def _z(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _look_alikes(t: str) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (event_type, action, entity_type, entity_id, _, data) in LOOK_ALIKES.items():
        out[name] = event_body(t, eventType=event_type, action=action, source="ARCHER_GRC",
                               entityType=entity_type, entityId=entity_id, data=data, timestamp=_z(_at(name)))
    return out


def _hit_ids(app: App, t: str, **params: str) -> list[str]:
    r = app.get(f"/search/{t}", tenants=[t], params={"q": "vendor onboarding", "k": "50", **params})
    assert r.status_code == 200, (params, r.text)
    hits = r.json()["hits"]
    assert {h["tenantId"] for h in hits} <= {t}, hits
    return [h["eventId"] for h in hits]


def test_filters_restrict_the_hits_and_another_tenants_events_never_show(app: App) -> None:
    """docs/vector-search.md 'Search API': '`eventType` EventType values, comma-separated; `entityType` entity
    types, comma-separated; `from`, `to` RFC 3339 with offset, inclusive' ('Filters': 'the same clauses on
    the vector and on the keyword ranking'), and 'Tenant: a required argument of every search, never a
    filter the caller could leave out, on both rankings'. README 'API': '403 for a tenant the identity is
    not granted', '401 + `WWW-Authenticate: Bearer` without one'."""
    t, other = tenant("sfil"), tenant("sfil")
    # Only these events are indexed (not the monitor's SYSTEM_PERFORMANCE events of active tenants).
    for x in (t, other):
        app.configure(x, {"destinations": [{"type": "vector"}], "filters": [{"sources": ["ARCHER_GRC"]}]})
    mine, theirs = _look_alikes(t), _look_alikes(other)
    for x, events in ((t, mine), (other, theirs)):
        r = app.post("/events/bulk", tenants=[x], json={"events": list(events.values())})
        assert r.status_code == 200 and r.json()["accepted"] == 5, r.text
    ids = {name: e["eventId"] for name, e in mine.items()}
    their_ids = {e["eventId"] for e in theirs.values()}
    for x in (t, other):
        wait_for(lambda x=x: len(_hit_ids(app, x)) == 5, 90, 0.5, f"{x}'s 5 events indexed by index_vectors")

    b_plus_2 = _at("B").astimezone(timezone(timedelta(hours=2))).isoformat()  # B's instant at +02:00
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "ABCDE"),
        ({"eventType": "CONTROL_FAILED"}, "A"),
        ({"eventType": "CONTROL_FAILED,RISK_CREATED"}, "AC"),
        ({"eventType": "POLICY_VIOLATION"}, ""),
        ({"entityType": "risk"}, "C"),
        ({"entityType": "control,assessment"}, "ABE"),
        ({"from": _z(_at("B"))}, "BCDE"),  # inclusive
        ({"to": _z(_at("C"))}, "ABC"),  # inclusive
        ({"from": _z(_at("C")), "to": _z(_at("C"))}, "C"),
        ({"from": b_plus_2, "to": _z(_at("D") - timedelta(seconds=1))}, "BC"),  # an offset: the instant
        ({"from": _z(_at("E") + timedelta(seconds=1))}, ""),
        ({"eventType": "CONTROL_TESTED,CONTROL_FAILED", "entityType": "control", "from": _z(_at("B"))}, "B"),
    ]
    wrong = {}
    for params, expected in cases:
        for mode in ("hybrid", "vector", "keyword"):
            got = _hit_ids(app, t, mode=mode, **params)
            assert not set(got) & their_ids, (params, mode, got)
            if sorted(got) != sorted(ids[n] for n in expected):
                wrong[(tuple(params.items()), mode)] = sorted(n for n, i in ids.items() if i in got)
    assert not wrong, wrong

    # An admin (every tenant granted) still gets only the path's tenant; so does a question made of the
    # other tenant's index token (docs: 't' + 128 bits of the SHA-256 of its id).
    admin = app.get(f"/search/{t}", params={"q": "vendor onboarding", "k": "50"})
    assert admin.status_code == 200 and {h["eventId"] for h in admin.json()["hits"]} == set(ids.values())
    token = "t" + hashlib.sha256(other.encode()).hexdigest()[:32]
    for question in (token, f'tkey : "{token}"', f"{token} vendor onboarding"):
        for mode in ("hybrid", "keyword"):
            r = app.get(f"/search/{t}", tenants=[t], params={"q": question, "k": "50", "mode": mode})
            assert r.status_code == 200 and not {h["eventId"] for h in r.json()["hits"]} & their_ids, r.text

    for who in ({"tenants": [other], "roles": []}, {"tenants": [], "roles": []}):
        r = app.get(f"/search/{t}", params={"q": "vendor onboarding"}, **who)  # type: ignore[arg-type]
        assert r.status_code == 403, (who, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json") and "hits" not in r.json()
    r = app.get(f"/search/{t}", params={"q": "vendor onboarding"}, anonymous=True)
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
    assert "hits" not in r.text


# ---- Settings of an app of this module's own: VECTOR_SEARCH_MAX_K, the backlog, HEALTH_DEGRADED_MS ---------

OWN_MAX_K = 5


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App]]:
    work: Path = tmp_path_factory.mktemp("search-health")
    with own_stack(work / "stack", ("redis", "azurite", "cosmos")) as stack:
        env = app_env(stack, work / "app", HEALTH_CACHE_SECONDS="0", SYSTEM_PERFORMANCE_EVENTS="false",
                      VECTOR_SEARCH_MAX_K=str(OWN_MAX_K))
        running = start_app(env, work / "app")
        try:
            yield stack, running
        finally:
            running.stop()


def test_vector_search_max_k_is_the_largest_k(own: tuple[Stack, App]) -> None:
    """docs/vector-search.md 'Settings': '`VECTOR_SEARCH_MAX_K` ... largest `k` of `GET /search`'; 'Search
    API': '`k` 1 to `VECTOR_SEARCH_MAX_K` (50), default 10'."""
    _, app = own
    t = tenant("maxk")
    r = app.get(f"/search/{t}", tenants=[t], params={"q": "risk", "k": str(OWN_MAX_K)})
    assert r.status_code == 200 and r.json()["k"] == OWN_MAX_K, r.text
    too_many = app.get(f"/search/{t}", tenants=[t], params={"q": "risk", "k": str(OWN_MAX_K + 1)})
    body = _assert_problem_naming(too_many, "k")
    assert str(OWN_MAX_K) in body["detail"], body
    # No `k` at all: the default, within the largest allowed.
    r = app.get(f"/search/{t}", tenants=[t], params={"q": "risk"})
    assert r.status_code == 200 and 1 <= r.json()["k"] <= OWN_MAX_K, r.text


def _send_invisible(conn: str, queue: str, n: int, workers: int = 8) -> None:
    """`n` messages in the queue, invisible for 10 minutes: the indexer cannot take them, so the queue's
    count stays exact (a producer whose messages wait, as an operator would see a backlog)."""
    def send(count: int) -> None:
        with QueueClient.from_connection_string(conn, queue) as q:
            for _ in range(count):
                q.send_message("backlog-probe", visibility_timeout=600)

    shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, [s for s in shares if s]))


def test_health_shows_the_vector_backlog_and_is_degraded_above_5000_messages(own: tuple[Stack, App]) -> None:
    """docs/vector-search.md 'Backlog': '`VectorQueueDestination.backlog()` ... return the queue's
    approximate message count; `/health` shows it as `dependencies.vector.backlogMessages` (degraded above
    5,000 messages)'. README 'API': '/health ... 200 healthy/degraded ... each dependency (..., built
    destinations) with its status (admins also get latency and figures)'."""
    stack, app = own
    t = tenant("vbl")
    queue = app.env["VECTOR_QUEUE"]
    app.configure(t, {"destinations": [{"type": "vector"}]})
    r = app.post("/events", tenants=[t], json=event_body(t, entityType="control"))
    assert r.status_code == 201, r.text
    outcome = [(d["destination"], d["status"]) for d in r.json()["destinations"]]
    assert outcome == [("vector", "delivered")], r.text
    wait_for(lambda: app.get(f"/search/{t}", tenants=[t], params={"q": "MFA"}).json()["count"] == 1, 90, 0.5,
             "the event indexed (the vector queue drained)")

    def vector() -> dict[str, Any]:
        body = app.get("/health").json()
        return dict(body["dependencies"].get("vector") or {})

    def empty() -> dict[str, Any] | None:
        v = vector()
        return v if v.get("backlogMessages") == 0 and stack.queue_depth(queue) == 0 else None

    idle = wait_for(empty, 30, 0.5, "an empty backlog")
    assert idle["status"] == "healthy", idle
    try:
        _send_invisible(stack.storage, queue, 5000)
        at_limit = wait_for(lambda: (v := vector()).get("backlogMessages") == 5000 and v, 20, 0.5,
                            "backlogMessages 5000")
        assert stack.queue_depth(queue) == 5000
        assert at_limit["status"] == "healthy", at_limit  # 5,000 is not above 5,000
        _send_invisible(stack.storage, queue, 1)
        above = wait_for(lambda: (v := vector()).get("backlogMessages") == 5001 and v, 20, 0.5,
                         "backlogMessages 5001")
        assert above["status"] == "degraded", above
        whole = app.get("/health")
        assert whole.status_code == 200 and whole.json()["status"] == "degraded", whole.text
        anonymous = app.get("/health", anonymous=True)
        assert anonymous.status_code == 200 and anonymous.json()["status"] == "degraded", anonymous.text
        # States only for a stranger: no figures.
        assert anonymous.json()["dependencies"]["vector"] == {"status": "degraded"}, anonymous.text
    finally:
        with QueueClient.from_connection_string(stack.storage, queue) as q:
            q.clear_messages()
    wait_for(lambda: (v := vector()).get("backlogMessages") == 0 and v["status"] == "healthy", 20, 0.5,
             "healthy again once the backlog is gone")


def test_a_dependency_slower_than_health_degraded_ms_is_degraded(own: tuple[Stack, App],
                                                                  tmp_path: Path) -> None:
    """README/docs/observability.md 'Health': each dependency is '`degraded` when slower than
    `HEALTH_DEGRADED_MS`', and 'Overall: 503 `unhealthy` when Redis or Tables ... is unhealthy; `degraded`
    (200) when anything else is not healthy'; settings: 'a dependency slower than this is `degraded` in
    `/health`'. A second app on the module's stack with 0.001 ms sees every dependency slower than that;
    the module's app (the default 1000 ms) sees the same stack healthy."""
    stack, fast = own
    threshold = 0.001
    env = app_env(stack, tmp_path / "slow", HEALTH_DEGRADED_MS=str(threshold), HEALTH_CACHE_SECONDS="0",
                  SYSTEM_PERFORMANCE_EVENTS="false")
    slow = start_app(env, tmp_path / "slow")
    try:
        r = slow.get("/health")
        assert r.status_code == 200, r.text
        body = r.json()
        deps = body["dependencies"]
        assert {"redis", "tables"} <= set(deps), body
        for name in ("redis", "tables"):  # answered, only slower than the threshold: degraded, not unhealthy
            assert deps[name]["latencyMs"] > threshold and deps[name]["status"] == "degraded", (name, body)
        # (`bindings` reads the app's settings, no call to be slow: healthy)
        assert all(d["status"] != "healthy" for n, d in deps.items() if n != "bindings"), body
        assert deps["bindings"]["status"] == "healthy", body
        assert body["status"] == "degraded", body
        anonymous = slow.get("/health", anonymous=True)
        assert anonymous.status_code == 200 and anonymous.json()["status"] == "degraded", anonymous.text
    finally:
        slow.stop()
    reference = fast.get("/health").json()["dependencies"]
    for name in ("redis", "tables"):
        assert reference[name]["latencyMs"] <= 1000 and reference[name]["status"] == "healthy", reference
