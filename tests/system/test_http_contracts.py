"""HTTP contracts README.md and docs/ promise, proved through the running app (audit 16, rows 4, 11,
13 and 14):

- idempotency (README "Delivery guarantees", docs/delivery.md "Idempotent requests"): an eventId or
  an `Idempotency-Key` already accepted is answered `duplicate` with the original destinations and
  not delivered again; the same id for a different event is refused with 422; concurrent repeats
  get `duplicate` or 409 + Retry-After, one delivery only;
- a Redis `dedupeSeconds` shorter than the destination's retry horizon is refused (docs/delivery.md);
- `If-None-Match` / `If-Match` (`*` or ETag lists) on PUT /stream-config, 304 on a GET naming the
  stored ETag, and the audit record of each change (README "API", docs/security.md "Audit trail");
- routes matched in any case, as the host's ASP.NET routing does;
- 413 / 415 / 405 + Allow / 404 as problem details, and the correlation id echoed and carried by the
  events a request produced (README "API", "Limits").
"""
from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from localdev.services import free_port
from tests.system.harness import (
    App,
    Stack,
    create_topic,
    event_body,
    own_stack_and_app,
    tenant,
    topic_records,
    wait_for,
)

PROBLEM = "application/problem+json"
# README "Limits": POST /events body 1 MiB; POST /events/bulk 1,000 events and 4 MiB.
SINGLE_BODY_LIMIT = 1_048_576
BULK_BODY_LIMIT = 4 * 1_048_576
BULK_EVENT_LIMIT = 1_000
# docs/delivery.md "Retry horizon": the default policy's, 1,193 s.
DEFAULT_RETRY_HORIZON = 1_193


def _event(t: str, **over: Any) -> dict[str, Any]:
    body = {"tenantId": t, "eventType": "RISK_UPDATED", "source": "ARCHER_GRC", "action": "UPDATE",
            "entityId": "RSK-1", "entityType": "risk", "data": {"score": 17, "status": "open"}}
    body.update(over)
    return body


def _is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """RFC 9457 problem details with `status`; the body."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith(PROBLEM), r.headers.get("content-type")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    return body


def _client_event(event: dict[str, Any]) -> bool:
    """Not one the service made itself (SYSTEM_PERFORMANCE when a minute turns, SYSTEM_ERROR for a
    dead letter)."""
    return event["source"] != "EVENT_STREAMING"


def _stream_ids(app: App, t: str) -> list[str]:
    body = app.get(f"/events/{t}", params={"limit": "1000"}, tenants=[t]).json()
    return [e["event"]["eventId"] for e in body["events"] if _client_event(e["event"])]


def _history_ids(app: App, t: str) -> list[str]:
    out: list[str] = []
    token: str | None = None
    while True:
        params = {"limit": "1000", **({"continuationToken": token} if token else {})}
        r = app.get(f"/events/{t}/history", params=params, tenants=[t])
        assert r.status_code == 200, r.text
        out += [e["eventId"] for e in r.json()["events"] if _client_event(e)]
        token = r.json().get("continuationToken")
        if not token:
            return out


def _outcomes(body: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(d["destination"], d["status"], d.get("ref")) for d in body["destinations"]]


# -- row 4: idempotency ---------------------------------------------------------------------------

def _all_destinations(app: App, stack: Stack, t: str) -> str:
    topic = f"idem-{uuid.uuid4().hex[:8]}"
    create_topic(stack.broker, topic)
    r = app.put(f"/stream-config/{t}", tenants=[t], json={"topics": [topic], "destinations": [
        {"type": "redis"}, {"type": "analytics"}, {"type": "kafka"}]})
    assert r.status_code == 201, r.text
    return topic


def _kafka_ids(stack: Stack, topic: str, expect: int) -> list[str]:
    """The client's events in the topic (a SYSTEM_PERFORMANCE lands there too when a minute turns)."""
    return [h["eventId"] for h in topic_records(stack.broker, topic, expect=expect, timeout=20, settle=1.0)
            if _client_event(h)]


def test_a_repeated_event_id_or_idempotency_key_is_answered_duplicate_and_delivered_once(
        app: App, stack: Stack) -> None:
    t = tenant("idem")
    topic = _all_destinations(app, stack, t)
    own_id = f"ev-{uuid.uuid4().hex[:12]}"
    key = f"key-{uuid.uuid4().hex[:12]}"
    requests = [({"json": _event(t, eventId=own_id)}, own_id),
                ({"json": _event(t, entityId="RSK-2"), "headers": {"Idempotency-Key": key}}, key)]
    for kw, event_id in requests:
        first = app.post("/events", tenants=[t], **kw)
        assert first.status_code == 201, first.text
        assert first.json()["status"] == "accepted" and first.json()["eventId"] == event_id
        delivered = sorted(d for d, s, _ in _outcomes(first.json()) if s == "delivered")
        assert delivered == ["analytics", "kafka", "redis"], first.text
        again = app.post("/events", tenants=[t], **kw)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "duplicate" and again.json()["eventId"] == event_id
        assert _outcomes(again.json()) == _outcomes(first.json())
    # A retry may carry its own timestamp and correlationId (the service fills them in when absent):
    # still the same event.
    same = _event(t, entityId="RSK-2", timestamp="2026-01-31T12:00:00Z", correlationId="retry-2")
    retry = app.post("/events", tenants=[t], json=same, headers={"Idempotency-Key": key})
    assert retry.status_code == 200 and retry.json()["status"] == "duplicate", retry.text
    # A used id or key on a different event is refused (422, naming where the id came from), not
    # answered as a duplicate: that would drop the event without saying so.
    for kw, where in (({"json": _event(t, entityId="RSK-3"), "headers": {"Idempotency-Key": key}},
                       "#/headers/Idempotency-Key"),
                      ({"json": _event(t, eventId=own_id, data={"score": 99})}, "/eventId")):
        other = app.post("/events", tenants=[t], **kw)
        assert other.status_code == 422, other.text
        assert [(e["pointer"], e["type"]) for e in other.json()["errors"]] == [(where, "id_reused")]

    want = Counter({own_id: 1, key: 1})
    assert Counter(_stream_ids(app, t)) == want
    assert Counter(wait_for(lambda: ids if len(ids := _history_ids(app, t)) >= 2 else None, 30,
                            what="both events in the history")) == want
    assert Counter(_kafka_ids(stack, topic, 2)) == want


def test_concurrent_repeats_deliver_once_and_answer_duplicate_or_409(app: App, stack: Stack) -> None:
    t = tenant("idemc")
    topic = _all_destinations(app, stack, t)
    event_id = f"ev-{uuid.uuid4().hex[:12]}"
    body, headers = _event(t, eventId=event_id), app.auth([t])
    n = 20
    start = threading.Barrier(n)
    answers: list[httpx.Response | BaseException] = [RuntimeError("not run")] * n

    def send(i: int) -> None:
        with httpx.Client(base_url=app.base, timeout=60) as client:
            start.wait(30)
            try:
                answers[i] = client.post("/events", json=body, headers=headers)
            except httpx.HTTPError as exc:
                answers[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    assert len(responses) == n, [a for a in answers if not isinstance(a, httpx.Response)]

    print("concurrent answers:", Counter(r.status_code for r in responses))
    accepted = [r for r in responses if r.status_code == 201]
    assert len(accepted) == 1, Counter(r.status_code for r in responses)
    assert accepted[0].json()["eventId"] == event_id
    for r in responses:
        if r.status_code == 201:
            continue
        if r.status_code == 409:
            problem = _is_problem(r, 409)
            assert int(r.headers["retry-after"]) >= 1 and problem["eventId"] == event_id
        else:
            assert r.status_code == 200 and r.json()["status"] == "duplicate", (r.status_code, r.text)
            assert _outcomes(r.json()) == _outcomes(accepted[0].json())
    assert _stream_ids(app, t) == [event_id]
    assert wait_for(lambda: _history_ids(app, t), 30, what="the event in the history") == [event_id]
    assert _kafka_ids(stack, topic, 1) == [event_id]


def test_a_repeat_while_the_first_is_still_delivering_gets_409_with_retry_after(tmp_path: Path) -> None:
    """docs/delivery.md: a concurrent repeat waits up to 2 s for the first, then answers 409 with
    Retry-After. The first request is kept in flight by an app of its own whose Kafka broker does not
    answer (nothing listens on its port): the send waits out KAFKA_DELIVERY_TIMEOUT_MS (8 s) before the
    delivery is parked; repeats sent meanwhile wait about 2 s, answer 409 and deliver nothing."""
    silent_broker = f"127.0.0.1:{free_port()}"
    with own_stack_and_app(tmp_path, ("redis", "azurite", "cosmos"), KAFKA_BROKER=silent_broker,
                           KAFKA_DELIVERY_TIMEOUT_MS="8000",
                           SYSTEM_PERFORMANCE_EVENTS="false") as (stack, app):
        t = tenant("idem409")
        kafka_retry = {"attempts": 1, "inProcessAttempts": 1, "timeoutSeconds": 15}  # > 8 s + 5 s grace
        r = app.put(f"/stream-config/{t}", tenants=[t], json={"destinations": [
            {"type": "redis"}, {"type": "kafka", "retry": kafka_retry}]})
        assert r.status_code == 201, r.text
        event_id = f"ev-{uuid.uuid4().hex[:12]}"
        body = _event(t, eventId=event_id)

        def post() -> tuple[httpx.Response, float]:
            t0 = time.monotonic()
            with httpx.Client(base_url=app.base, timeout=60) as client:
                return client.post("/events", json=body, headers=app.auth([t])), time.monotonic() - t0

        with ThreadPoolExecutor(6) as pool, stack.redis() as redis:
            first = pool.submit(post)
            # The first request holds the claim (docs/delivery.md: grc:{tenant}:idem:<eventId>, pending).
            wait_for(lambda: first.done() or redis.exists(f"grc:{{{t}}}:idem:{event_id}"), 30,
                     what="the first request's claim")
            assert not first.done(), first.result()[0].text
            repeats = [f.result() for f in [pool.submit(post) for _ in range(5)]]
            original, took = first.result()
        assert original.status_code == 201, original.text
        outcomes = [(d, s) for d, s, _ in _outcomes(original.json())]
        assert outcomes == [("redis", "delivered"), ("kafka", "parked")], original.text
        for r, waited in repeats:
            _is_problem(r, 409)
            assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
            assert 1.9 <= waited < took, (waited, took)
        after = app.post("/events", json=body, tenants=[t])
        assert after.status_code == 200 and after.json()["status"] == "duplicate", after.text
        assert _outcomes(after.json()) == _outcomes(original.json())
        assert _stream_ids(app, t) == [event_id]


# -- row 11: dedupeSeconds must cover the retry horizon ----------------------------------------------

def test_a_redis_dedupe_window_shorter_than_its_retry_horizon_is_refused(app: App) -> None:
    t = tenant("dedupe")
    path = f"/stream-config/{t}"

    def put(redis: dict[str, Any]) -> httpx.Response:
        # The Redis destination second, so the pointer's index is the destination's, not always 0.
        return app.put(path, tenants=[t],
                       json={"destinations": [{"type": "analytics"}, {"type": "redis", **redis}]})

    long_retries = put({"config": {"dedupeSeconds": 3600}, "retry": {"attempts": 20}})
    problem = _is_problem(long_retries, 400)
    assert [(e["pointer"], e["field"]) for e in problem["errors"]] == [
        ("/destinations/1/config/dedupeSeconds", "destinations[1].config.dedupeSeconds")], problem
    assert "retry horizon" in problem["errors"][0]["detail"]
    assert app.get(path, tenants=[t]).json()["isDefault"] is True, "a refused config must not be stored"

    # The default retry policy's horizon is the documented 1,193 s: one second less is refused.
    short = _is_problem(put({"config": {"dedupeSeconds": DEFAULT_RETRY_HORIZON - 1}}), 400)
    assert [e["pointer"] for e in short["errors"]] == ["/destinations/1/config/dedupeSeconds"]
    covered = put({"config": {"dedupeSeconds": DEFAULT_RETRY_HORIZON}})
    assert covered.status_code == 201, covered.text

    # 0 turns deduplication off on purpose, whatever the retries.
    off = put({"config": {"dedupeSeconds": 0}, "retry": {"attempts": 20}})
    assert off.status_code == 200, off.text
    stored = app.get(path, tenants=[t]).json()["destinations"][1]
    assert stored["config"]["dedupeSeconds"] == 0 and stored["retry"]["attempts"] == 20


# -- row 13: conditional PUT and the audit trail -------------------------------------------------------

def test_conditional_puts_answer_412_and_every_change_is_audited_with_before_and_after(app: App) -> None:
    t = tenant("cond")
    path = f"/stream-config/{t}"
    v1 = {"batchSize": 10}
    created = app.put(path, tenants=[t], json=v1,
                      headers={"If-None-Match": "*", "X-Correlation-Id": f"{t}-c1"})
    assert created.status_code == 201, created.text
    etag1 = created.headers["etag"]
    _is_problem(app.put(path, tenants=[t], json={"batchSize": 11}, headers={"If-None-Match": "*"}), 412)
    assert app.get(path, tenants=[t]).json()["batchSize"] == 10

    replaced = app.put(path, tenants=[t], json={"batchSize": 20}, headers={"If-Match": etag1,
                                                                          "X-Correlation-Id": f"{t}-c2"})
    assert replaced.status_code == 200, replaced.text
    etag2 = replaced.headers["etag"]
    assert etag2 != etag1
    _is_problem(app.put(path, tenants=[t], json={"batchSize": 21}, headers={"If-Match": etag1}), 412)
    current = app.get(path, tenants=[t])
    assert current.json()["batchSize"] == 20 and current.headers["etag"] == etag2
    third = app.put(path, tenants=[t], json={"batchSize": 30}, headers={"If-Match": etag2,
                                                                       "X-Correlation-Id": f"{t}-c3"})
    assert third.status_code == 200, third.text

    r = app.get(f"/audit/{t}", tenants=[t])
    assert r.status_code == 200, r.text
    items = [i for i in r.json()["items"] if i["action"] == "stream-config.put"]
    # Newest first; the refused writes left no record.
    assert [i["correlationId"] for i in items] == [f"{t}-c3", f"{t}-c2", f"{t}-c1"], items
    for item in items:
        assert item["tenantId"] == t and item["target"] == f"stream-config/{t}"
        assert item["actor"] == "system-test" and item["at"]
    newest, middle, oldest = items
    assert oldest["before"] is None and oldest["after"] == created.json()
    assert middle["before"] == created.json() and middle["after"] == replaced.json()
    assert newest["before"] == replaced.json() and newest["after"] == third.json()


def test_conditional_headers_take_entity_tag_lists_and_a_current_copy_is_not_sent_again(app: App) -> None:
    """RFC 9110 section 13.1: If-Match holds when the stored ETag is any one it lists, If-None-Match
    naming the stored ETag refuses a PUT and answers a GET 304 with no body; a value that is not `*`
    or entity tags is 400 naming the header, not a puzzling 412."""
    t = tenant("etags")
    path = f"/stream-config/{t}"
    assert app.get(path, tenants=[t], headers={"If-None-Match": "*"}).status_code == 200  # the default
    etag1 = app.put(path, tenants=[t], json={"batchSize": 10}).headers["etag"]

    current = app.get(path, tenants=[t], headers={"If-None-Match": f'"other", {etag1}'})
    assert current.status_code == 304 and current.content == b"" and current.headers["etag"] == etag1
    assert app.get(path, tenants=[t], headers={"If-None-Match": "*"}).status_code == 304
    assert app.get(path, tenants=[t], headers={"If-None-Match": '"other"'}).json()["batchSize"] == 10
    refused = _is_problem(app.put(path, tenants=[t], json={"batchSize": 11},
                                  headers={"If-None-Match": etag1}), 412)
    assert "If-None-Match" in refused["detail"]

    replaced = app.put(path, tenants=[t], json={"batchSize": 20}, headers={"If-Match": f'"stale", {etag1}'})
    assert replaced.status_code == 200, replaced.text
    assert app.get(path, tenants=[t], headers={"If-None-Match": etag1}).json()["batchSize"] == 20
    _is_problem(app.put(path, tenants=[t], json={"batchSize": 21},
                        headers={"If-Match": f'"stale", {etag1}'}), 412)

    for header, value in (("If-Match", "not-quoted"), ("If-None-Match", '"a" "b"')):
        bad = _is_problem(app.put(path, tenants=[t], json={"batchSize": 30}, headers={header: value}), 400)
        error = bad["errors"][0]
        assert error["pointer"] == f"#/headers/{header}" and error["field"] == header, bad
    assert app.get(path, tenants=[t]).json()["batchSize"] == 20  # nothing refused was stored


# -- row 14: refusals as problem details, the correlation id ------------------------------------------

def test_refusals_are_problem_details_and_nothing_is_stored(app: App) -> None:
    t = tenant("limits")
    auth = {"tenants": [t]}
    # A body one byte over 1 MiB, valid JSON: refused for its size alone.
    filler = "x" * (SINGLE_BODY_LIMIT + 1 - len(json.dumps(_event(t, data={"pad": ""}))))
    oversize = json.dumps(_event(t, data={"pad": filler}))
    assert len(oversize) == SINGLE_BODY_LIMIT + 1
    as_json = {"content-type": "application/json"}
    big = _is_problem(app.post("/events", content=oversize, headers=as_json, **auth), 413)
    assert big["maxBytes"] == SINGLE_BODY_LIMIT
    events = [_event(t, eventId=f"b-{i}") for i in range(BULK_EVENT_LIMIT + 1)]
    many = _is_problem(app.post("/events/bulk", json={"events": events}, **auth), 413)
    assert many["maxEvents"] == BULK_EVENT_LIMIT and str(BULK_EVENT_LIMIT + 1) in many["detail"]
    heavy = json.dumps({"events": [_event(t, data={"pad": "y" * (BULK_BODY_LIMIT // 4)}) for _ in range(4)]})
    assert _is_problem(app.post("/events/bulk", content=heavy, headers=as_json, **auth),
                       413)["maxBytes"] == BULK_BODY_LIMIT
    plain = _is_problem(app.post("/events", content=json.dumps(_event(t)),
                                 headers={"content-type": "text/plain"}, **auth), 415)
    assert "application/json" in plain["detail"]
    assert _stream_ids(app, t) == [], "a refused request stored events"

    for path, allowed in (("/events", {"POST"}), (f"/stream-config/{t}", {"GET", "PUT"})):
        r = app.request("DELETE", path, **auth)
        _is_problem(r, 405)
        assert {m.strip() for m in r.headers["allow"].split(",")} == allowed, r.headers["allow"]
    _is_problem(app.get("/nope", **auth), 404)
    _is_problem(app.get("/nope", anonymous=True), 404)


def test_routes_match_in_any_case_as_the_hosts_routing_does(app: App) -> None:
    """The Functions host routes with ASP.NET Core, whose literal segments match in any case
    (RoutePatternMatcher: OrdinalIgnoreCase) and which ignores a trailing slash: `/EVENTS/{t}` is
    `/events/{tenantId}` in Azure, so it must be in the runner, and a wrong method on it is 405 there
    too. A parameter keeps its case: an upper-case tenant id is refused by its rule."""
    t = tenant("case")
    assert app.post("/Events", json=event_body(t), tenants=[t]).status_code == 201
    lower = app.get(f"/events/{t}", tenants=[t])
    for path in (f"/EVENTS/{t}", f"/Events/{t}/"):
        r = app.get(path, tenants=[t])
        assert r.status_code == 200 and r.json()["events"] == lower.json()["events"], (path, r.text[:300])
    r = app.request("DELETE", f"/Stream-Config/{t}", tenants=[t])
    _is_problem(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "PUT"}
    bad = _is_problem(app.get(f"/events/{t.upper()}"), 400)  # as an admin: no tenant grant to check first
    assert bad["errors"][0]["pointer"] == "#/path/tenantId"


def test_a_gzipped_body_is_decoded_within_the_limits_and_other_codings_are_refused(app: App) -> None:
    """README "Limits": a body may come gzip'd (`Content-Encoding: gzip`); the limits are on the
    decoded body. The host hands a body over as it came over the wire, so this holds only because the
    app decodes it (the runner does not: tests/test_devhost_e2e.py)."""
    t = tenant("gzip")
    gz = {"content-type": "application/json", "content-encoding": "gzip"}
    events = [_event(t, eventId=f"gz-{i}", data={"i": i, "note": "é" * 50}) for i in range(300)]
    r = app.post("/events/bulk", content=gzip.compress(json.dumps({"events": events}).encode()),
                 headers=gz, tenants=[t])
    assert r.status_code == 200, r.text[:500]
    assert [x["status"] for x in r.json()["results"]] == ["accepted"] * 300
    one = app.post("/events", content=gzip.compress(json.dumps(_event(t, eventId="gz-one")).encode()),
                   headers={**gz, "content-encoding": "x-gzip"}, tenants=[t])
    assert one.status_code == 201, one.text
    # A model-read body (the stream config) takes the same path.
    put = app.put(f"/stream-config/{t}", content=gzip.compress(b'{"batchSize": 25}'), headers=gz, tenants=[t])
    assert put.status_code == 201 and put.json()["batchSize"] == 25, put.text

    # A small body that decodes to more than the 1 MiB limit: 413, decoding stopped at the limit.
    pad = "0" * (8 * SINGLE_BODY_LIMIT)
    bomb = gzip.compress(json.dumps(_event(t, eventId="gz-bomb", data={"pad": pad})).encode())
    assert len(bomb) < 64 * 1024
    too_big = _is_problem(app.post("/events", content=bomb, headers=gz, tenants=[t]), 413)
    assert too_big["maxBytes"] == SINGLE_BODY_LIMIT
    cut = gzip.compress(json.dumps(_event(t, eventId="gz-cut")).encode())[:-12]
    assert "gzip" in _is_problem(app.post("/events", content=cut, headers=gz, tenants=[t]), 400)["detail"]
    plain_as_gzip = json.dumps(_event(t, eventId="gz-plain")).encode()
    _is_problem(app.post("/events", content=plain_as_gzip, headers=gz, tenants=[t]), 400)
    for coding in ("br", "deflate", "gzip, br"):
        r = app.post("/events", content=gzip.compress(json.dumps(_event(t, eventId="gz-br")).encode()),
                     headers={**gz, "content-encoding": coding}, tenants=[t])
        assert "not supported" in _is_problem(r, 415)["detail"]
        assert r.headers["accept-encoding"] == "gzip"

    ids = _stream_ids(app, t)
    assert sorted(ids) == sorted([f"gz-{i}" for i in range(300)] + ["gz-one"]), "a refused body stored events"
    stored = app.get(f"/events/{t}", params={"limit": "1"}, tenants=[t]).json()["events"][0]["event"]
    assert stored["eventId"] == "gz-one" and stored["data"] == {"score": 17, "status": "open"}


def test_a_chunked_body_is_411_and_query_parameters_read_as_the_host_hands_them_over(app: App) -> None:
    """The host passes a body on only with a Content-Length, and hands over a repeated query parameter
    with its values joined by "," and none with an empty value (devhost/http_driver.py, `joined`).
    A client that streams its body (e.g. .NET's PostAsJsonAsync) gets a 411 saying why, not a 400
    "empty body"; the runner behaves as Azure does, so this shows locally."""
    t = tenant("chunked")

    def chunks(data: bytes) -> Any:
        yield data[:10]
        yield data[10:]

    body = json.dumps(_event(t, eventId="ch-1")).encode()
    r = app.post("/events", content=chunks(body), headers={"content-type": "application/json"}, tenants=[t])
    problem = _is_problem(r, 411)
    assert "Content-Length" in problem["detail"], problem
    r = app.post("/events", content=body, headers={"content-type": "application/json"}, tenants=[t])
    assert r.status_code == 201, r.text
    for i in (2, 3):
        assert app.post("/events", json=_event(t, eventId=f"ch-{i}", eventType="RISK_CREATED"),
                        tenants=[t]).status_code == 201
    # An empty value is as if the parameter were not there; a repeated one is its values joined.
    r = app.get(f"/events/{t}?eventType=&limit=", tenants=[t])
    assert r.status_code == 200 and len(r.json()["events"]) == 3, r.text
    r = app.get(f"/events/{t}?limit=1&limit=2", tenants=[t])
    assert "1,2" in json.dumps(_is_problem(r, 400)), r.text
    # A query string reads "+" as a space: an offset sent unencoded is refused saying so.
    r = app.get(f"/events/{t}/history?from=2026-01-31T12:00:00+01:00", tenants=[t])
    assert "send it as %2B" in _is_problem(r, 400)["errors"][0]["detail"], r.text
    r = app.get(f"/events/{t}/history?from=2026-01-31T12:00:00%2B01:00", tenants=[t])
    assert r.status_code == 200 and r.json()["from"] == "2026-01-31T11:00:00.000Z", r.text


def test_a_body_that_starts_with_a_utf8_byte_order_mark_is_read(app: App) -> None:
    """README "Limits": a JSON file saved by a Windows editor starts with a UTF-8 BOM (RFC 8259 8.1
    lets a parser ignore it); sent as it is (`curl --data-binary @event.json`) it is read, on every
    route that takes a body."""
    t = tenant("bom")
    bom, as_json = b"\xef\xbb\xbf", {"content-type": "application/json"}
    r = app.post("/events", content=bom + json.dumps(_event(t, eventId="bom-1")).encode(), headers=as_json,
                 tenants=[t])
    assert r.status_code == 201, r.text
    bulk = bom + json.dumps({"events": [_event(t, eventId="bom-2")]}).encode()
    r = app.post("/events/bulk", content=bulk, headers=as_json, tenants=[t])
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    r = app.put(f"/stream-config/{t}", content=bom + b'{"batchSize": 30}', headers=as_json, tenants=[t])
    assert r.status_code == 201 and r.json()["batchSize"] == 30, r.text
    assert "empty" in _is_problem(app.post("/events", content=bom, headers=as_json, tenants=[t]), 400)["detail"]
    assert sorted(_stream_ids(app, t)) == ["bom-1", "bom-2"]


def test_the_correlation_id_is_echoed_and_carried_by_each_event(app: App) -> None:
    t = tenant("corr")
    cid = f"c-{uuid.uuid4().hex[:12]}"
    single = app.post("/events", json=_event(t, eventId=f"{cid}-1"), tenants=[t],
                      headers={"X-Correlation-Id": cid})
    assert single.status_code == 201, single.text
    assert single.headers["x-correlation-id"] == cid and single.json()["correlationId"] == cid
    bulk_cid = f"r-{uuid.uuid4().hex[:12]}"  # X-Request-Id is the other name the service reads
    bulk = app.post("/events/bulk", json={"events": [_event(t, eventId=f"{bulk_cid}-{i}") for i in range(3)]},
                    tenants=[t], headers={"X-Request-Id": bulk_cid})
    assert bulk.status_code == 200 and bulk.json()["accepted"] == 3, bulk.text
    assert bulk.headers["x-correlation-id"] == bulk_cid and bulk.json()["correlationId"] == bulk_cid
    stored = {e["event"]["eventId"]: e["event"]["correlationId"]
              for e in app.get(f"/events/{t}", tenants=[t]).json()["events"] if _client_event(e["event"])}
    assert stored == {f"{cid}-1": cid, **{f"{bulk_cid}-{i}": bulk_cid for i in range(3)}}

    # A refusal carries it too, in the header and in the problem details.
    refused = app.post("/events", content="{}", tenants=[t], headers={"content-type": "text/plain",
                                                                      "X-Correlation-Id": cid})
    assert _is_problem(refused, 415)["correlationId"] == cid and refused.headers["x-correlation-id"] == cid
    # Without one, the service makes one and still returns it.
    made = app.post("/events", json=_event(t), tenants=[t])
    assert made.status_code == 201 and made.headers["x-correlation-id"] == made.json()["correlationId"]
    assert made.json()["correlationId"] not in (cid, bulk_cid)
