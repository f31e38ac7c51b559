"""No read route builds an answer that could take the worker down (README 'API' and 'Limits'): every
listing of stored items stops at 8 MiB of them (one item at least, so a single large item is still
served) and says `truncated: true`; a paged listing's continuation token then resumes right after the
last item answered, so paging across the cap returns every item exactly once.

Large items come in from outside only: 880 KB events POSTed (the analytics history; and, through a
destination that refuses them, AMQP with no Event Hubs, the dead letters), and replays naming 500
long ids (the audit trail: about 385 KB a record).
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.system.harness import App, event_body, tenant, wait_for

CAP = 8 * 1_048_576
BLOBS = {f"b{k}": "x" * 220_000 for k in range(4)}  # 880 KB: each string within 256 K characters
BIG = 12  # 10.5 MB of events: 9 fit under the cap
FIT = 9
STORED = {"destinations": [{"type": "analytics"}]}
# A tenant whose events are dead-lettered at once by the queue trigger: its Kafka destination over AMQP
# with no Event Hubs configured is a non-transient refusal.
FAST = {"inProcessAttempts": 1, "attempts": 1, "backoffSeconds": 1, "maxBackoffSeconds": 1, "jitter": 0,
        "timeoutSeconds": 40}
REFUSED = {"destinations": [{"type": "kafka", "config": {"transport": "amqp"}, "retry": FAST}]}


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _post_big_events(app: App, t: str) -> list[str]:
    """BIG events of 880 KB, one second apart, oldest first: their ids."""
    now = datetime.now(UTC).replace(microsecond=0)
    ids = []
    for i in range(BIG):
        body = event_body(t, data={**BLOBS, "n": i}, timestamp=_iso(now - timedelta(seconds=BIG - i)))
        r = app.post("/events", json=body, tenants=[t])
        assert r.status_code == 201, r.text[:500]
        ids.append(body["eventId"])
    return ids


def _pages(app: App, path: str, t: str, token: str, params: dict[str, str]) -> Iterator[httpx.Response]:
    """Every page of a paged listing, each answer as it came."""
    query = dict(params)
    for _ in range(50):
        r = app.get(path, params=query, tenants=[t])
        assert r.status_code == 200, r.text[:500]
        yield r
        nxt = r.json()[token]
        if not nxt:
            return
        query = {**params, token: nxt}
    raise AssertionError(f"{path}: more than 50 pages")


def _bounded(r: httpx.Response, items: list[dict[str, Any]]) -> None:
    """The answer's body is at most the cap plus one item (the one always served)."""
    largest = max((len(httpx.Response(200, json=i).content) for i in items), default=0)
    assert len(r.content) <= CAP + largest, (len(r.content), largest)


def test_the_history_stops_at_8_mib_and_its_token_resumes_after_the_last_event(app: App) -> None:
    """GET /events/{t}/history?limit=1000 over 12 events of 880 KB: 9 (truncated, with a token), then
    the other 3 (not truncated, no token): newest first, each exactly once. `limit` ends a page
    without `truncated`, and a page of one large event is served."""
    t = tenant("caphist")
    app.configure(t, STORED)
    ids = _post_big_events(app, t)
    newest_first = ids[::-1]
    # Its own events only: the session app's monitor adds a SYSTEM_PERFORMANCE event per active tenant-minute.
    window = {"from": _iso(datetime.now(UTC) - timedelta(hours=1)), "limit": "1000",
              "eventType": "CONTROL_FAILED"}

    pages = list(_pages(app, f"/events/{t}/history", t, "continuationToken", window))
    bodies = [p.json() for p in pages]
    assert [(b["count"], b["truncated"]) for b in bodies] == [(FIT, True), (BIG - FIT, False)], \
        [(b["count"], b["truncated"]) for b in bodies]
    for r, b in zip(pages, bodies):
        _bounded(r, b["events"])
        assert len(b["events"]) == b["count"]
    assert [e["eventId"] for b in bodies for e in b["events"]] == newest_first
    assert bodies[-1]["continuationToken"] is None

    # Any page size across the cap: every event once, in order. A `limit` page is not truncated.
    first = app.get(f"/events/{t}/history", params={**window, "limit": "2"}, tenants=[t]).json()
    assert (first["count"], first["truncated"]) == (2, False) and first["continuationToken"]
    rest = list(_pages(app, f"/events/{t}/history", t, "continuationToken",
                       {**window, "continuationToken": first["continuationToken"]}))
    assert [r.json()["truncated"] for r in rest] == [True, False]
    got = [e["eventId"] for e in first["events"]] + [e["eventId"] for r in rest for e in r.json()["events"]]
    assert got == newest_first

    one = app.get(f"/events/{t}/history", params={**window, "limit": "1"}, tenants=[t]).json()
    assert [e["eventId"] for e in one["events"]] == newest_first[:1] and one["truncated"] is False
    assert one["events"][0]["data"]["b0"] == BLOBS["b0"]  # the large event served whole


def test_the_dead_letters_stop_at_8_mib_and_page_across_the_cap_each_once(app: App) -> None:
    """GET /deadletters/{t}?limit=1000 over 12 dead letters of 880 KB: the first page holds 9 of them and
    says `truncated`, its token goes on with the rest; every record exactly once, none past the cap."""
    t = tenant("capdl")
    app.configure(t, REFUSED)
    ids = set(_post_big_events(app, t))

    def listed() -> list[httpx.Response] | None:
        pages = list(_pages(app, f"/deadletters/{t}", t, "continuationToken", {"limit": "1000"}))
        got = {d["eventId"] for p in pages for d in p.json()["deadLetters"]}
        return pages if ids <= got else None

    pages = wait_for(listed, 90, 1.0, what="the 12 events dead-lettered")
    bodies = [p.json() for p in pages]
    ours = [[d["eventId"] for d in b["deadLetters"] if d["eventId"] in ids] for b in bodies]
    assert bodies[0]["truncated"] is True and len(ours[0]) == FIT, [len(o) for o in ours]
    assert [b["truncated"] for b in bodies[1:]] == [False] * (len(bodies) - 1)
    assert bodies[-1]["continuationToken"] is None and len(bodies) == 2
    for r, b in zip(pages, bodies):
        _bounded(r, b["deadLetters"])
    every = [d["id"] for b in bodies for d in b["deadLetters"]]
    assert len(every) == len(set(every)), "a record listed twice"
    assert sorted(e for o in ours for e in o) == sorted(ids)
    whole = next(d for b in bodies for d in b["deadLetters"] if d["eventId"] in ids)
    assert whole["event"]["data"]["b3"] == BLOBS["b3"] and whole["destination"] == "kafka"

    # A replay of `{}` takes at most the cap's worth of records too, and its token goes on after them.
    r = app.post(f"/deadletters/{t}/replay", json={}, tenants=[t])
    assert r.status_code == 200, r.text[:500]
    first = r.json()
    taken = {x["id"] for x in first["results"]}
    assert 0 < len(taken & {f"{i}__kafka" for i in ids}) <= FIT and first["continuationToken"], first["total"]
    r = app.post(f"/deadletters/{t}/replay", json={"continuationToken": first["continuationToken"]},
                 tenants=[t])
    assert r.status_code == 200, r.text[:500]
    assert not taken & {x["id"] for x in r.json()["results"]}, "a record replayed twice"


# Dead letters of ~420 KB stored as text (the payload codec gzips only a text over 900,000 bytes of
# UTF-16): a row read holds that much, 8 rows a group, so 3 groups (24 records) pass 8 MiB.
MID = {"a": "x" * 210_000, "b": "y" * 210_000}
NAMED, READ = 28, 24


def test_a_replay_naming_records_reads_8_mib_of_them_and_the_same_ids_again_go_on_past_them(app: App) -> None:
    """POST /deadletters/{t}/replay {"ids": [...]} over 28 dead letters of 420 KB: records are read 8 at
    a time until those not yet replayed hold 8 MiB (24 here), the 4 after are `not attempted`, unread;
    the same 28 ids again: the 24 `already replayed` (not read whole, not counted), the 4 replayed."""
    t = tenant("capids")
    app.configure(t, REFUSED)
    ids = []
    for i in range(NAMED):
        body = event_body(t, data={**MID, "n": i})
        assert app.post("/events", json=body, tenants=[t]).status_code == 201
        ids.append(f"{body['eventId']}__kafka")

    def all_dead_lettered() -> bool:
        got = {d["id"] for p in _pages(app, f"/deadletters/{t}", t, "continuationToken", {"limit": "1000"})
               for d in p.json()["deadLetters"]}
        return set(ids) <= got

    wait_for(all_dead_lettered, 90, 1.0, what=f"the {NAMED} events dead-lettered")
    r = app.post(f"/deadletters/{t}/replay", json={"ids": ids}, tenants=[t])
    assert r.status_code == 200, r.text[:500]
    first = {x["id"]: x for x in r.json()["results"]}
    unread = [i for i in ids if first[i]["result"] == "not attempted"]
    assert unread == ids[READ:], [(i, first[i]["result"]) for i in ids]
    assert all("8 MiB" in first[i]["error"] for i in unread), first[unread[0]]
    r = app.post(f"/deadletters/{t}/replay", json={"ids": ids}, tenants=[t])
    assert r.status_code == 200, r.text[:500]
    again = {x["id"]: x["result"] for x in r.json()["results"]}
    assert [again[i] for i in ids[:READ]] == ["already replayed"] * READ, again
    assert all(again[i] not in ("not attempted", "already replayed", "not found") for i in ids[READ:]), again


def test_the_audit_trail_stops_at_8_mib_and_pages_across_the_cap_each_once(app: App) -> None:
    """GET /audit/{t}?limit=1000 over 25 records of ~385 KB (each replay's ids and results, kept up to
    ~192 KB a side): the first page stops at the cap (`truncated`), `continuation` goes on right after
    it; newest first, every record exactly once."""
    t = tenant("capaudit")
    # 500 ids of 512 characters naming no record ("#" is in no Table key): replayed at once, "not found".
    calls = 25
    for n in range(calls):
        ids = [f"#{n:02d}-{i:03d}-" + "y" * 504 for i in range(500)]
        r = app.post(f"/deadletters/{t}/replay", json={"ids": ids}, tenants=[t])
        assert r.status_code == 200 and r.json()["counts"] == {"not found": 500}, r.text[:300]

    pages = list(_pages(app, f"/audit/{t}", t, "continuation", {"limit": "1000"}))
    bodies = [p.json() for p in pages]
    assert [b["truncated"] for b in bodies] == [True, False], [(len(b["items"]), b["truncated"])
                                                                for b in bodies]
    for r, b in zip(pages, bodies):
        _bounded(r, b["items"])
    assert len(pages[0].content) > CAP - 500_000  # it stopped at the cap, not far below it
    records = [i for b in bodies for i in b["items"]]
    assert len(records) == calls and len({i["id"] for i in records}) == calls
    newest_first = [f'{{"ids":["#{n:02d}' for n in range(calls)][::-1]
    assert [i["before"]["preview"][:12] for i in records] == newest_first
    assert all(i["action"] == "deadletters.replay" and i["before"]["truncated"] for i in records)
    # `limit` ends a page without `truncated`.
    two = app.get(f"/audit/{t}", params={"limit": "2"}, tenants=[t]).json()
    assert (len(two["items"]), two["truncated"]) == (2, False) and two["continuation"]


def test_a_job_id_over_the_schemas_64_characters_is_a_400_naming_it(app: App) -> None:
    """OpenAPI: `jobId` is 1-64 characters. 65 answer 400 problem details naming the path parameter (was
    404); 64 characters of no job stay a 404."""
    t = tenant("capjob")
    doc = app.get("/openapi.json", anonymous=True).json()
    op = doc["paths"]["/backfills/{tenantId}/{jobId}"]
    for method in ("get", "delete"):
        [schema] = [p["schema"] for p in op[method]["parameters"] if p["name"] == "jobId"]
        assert schema["maxLength"] == 64, schema
        assert "400" in op[method]["responses"]
    for method in ("GET", "DELETE"):
        r = app.request(method, f"/backfills/{t}/{'a' * 65}", tenants=[t])
        assert r.status_code == 400, (method, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["status"] == 400 and problem["correlationId"], problem
        assert [(e["pointer"], e["field"]) for e in problem["errors"]] == [("#/path/jobId", "jobId")], problem
        assert "64" in problem["errors"][0]["detail"]
        r = app.request(method, f"/backfills/{t}/{'a' * 64}", tenants=[t])
        assert r.status_code == 404, (method, r.status_code, r.text)
