"""A hostile or careless client, judged from outside: every refusal a problem-details answer with the
right status and the field at fault, never a 500, never data changed on the way.

Defects these tests found (each failed before its fix):

- A stream config whose JSON is over 64 KiB of UTF-16 (a body well under the 256 KiB limit, e.g. a
  filter's `in` list of some hundred names) was a 500: the whole document went into one Table string
  property, which holds 64 KiB.
- An integer query parameter (`limit`, `k`) of more than 4,300 digits (the request line holds 8 KiB) was a
  500 on every route that takes one: Python refuses int() of so many digits.
- A filter condition whose path has a segment `str.isdigit()` takes but int() refuses (`data.items.²`)
  was stored, and then every event of the tenant whose `data.items` is a list was a 500, and so was every
  bulk holding one, with the other tenants' events in it.
- A `Content-Length` of more than 4,300 digits (leading zeros: the length itself right) was a 500 from the
  local runner, which Kestrel refuses as a bad request (devhost/http_driver.py).
- Concurrent PUTs of one stream config without any precondition (no If-Match, If-None-Match or
  `version`) answered 412 Precondition Failed to all but the first: a precondition the clients never sent.
- The local runner routed on the path with `%2F` decoded, where the host's routing (Kestrel) leaves it
  encoded inside its segment: `GET /events/{t}%2Fhistory` answered the history, `POST
  /deadletters/{t}%2Freplay` replayed, and `GET /events/abc%2Fdef` was a 405 saying "GET is not allowed
  here; use GET". The host hands `{t}%2Fhistory` to `/events/{tenantId}`: a 400 naming the tenantId
  (devhost/http_driver.py; the Functions host in Azure was never affected).
- A body declared in another charset (`application/json; charset=ISO-8859-1`, `charset=utf-16`) was read
  as UTF-8 anyway: refused as malformed JSON, or, where its bytes happened to be valid UTF-8, accepted and
  stored as other characters (`Ã©` sent in Latin-1 stored as `é`).
- An ordering condition (`gt`, `gte`, `lt`, `lte`) with an operand that is neither a number nor a string
  (a list, an object, a boolean, null) was stored: a filter that can never hold, accepted with 200.
  Refused on PUT only: a config stored before must still load (checked in the model, its tenant's
  events were 503s).

Held, and now proved: edge numbers and Unicode reach the Redis stream and GET exactly as sent; a body
naming one member twice is read with its last value, as README says (RFC 8259 leaves it to the parser).
"""
from __future__ import annotations

import json
import math
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from azure.data.tables import TableClient

from tests.system.harness import App, Stack, event_body, tenant

UTF8_SPELLINGS = ("utf-8", "UTF-8", '"utf-8"', "utf8")


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["correlationId"], body
    return body


def _stream(stack: Stack, t: str) -> list[dict[str, Any]]:
    """The events of the tenant's Redis stream, oldest first, as stored."""
    with stack.redis() as r:
        return [json.loads(fields[b"e"]) for _, fields in r.xrange(f"grc:{{{t}}}:events")]


def test_a_stream_config_over_64_kib_is_stored_read_back_and_routes_events(app: App) -> None:
    t = tenant("bigcfg")
    # 120 names of 1,000 characters: about 120 KB of JSON (240 KB as the Table's UTF-16), under the
    # 256 KiB body limit; the name that matches is the last one.
    names = [f"{i:04d}" + "n" * 996 for i in range(119)] + ["MFA"]
    config = {"filters": [{"conditions": {"data.control": {"in": names}}}]}
    r = app.put(f"/stream-config/{t}", json=config, tenants=[t])
    assert r.status_code == 201, (r.status_code, r.text[:500])
    read = app.get(f"/stream-config/{t}", tenants=[t])
    assert read.status_code == 200 and read.headers["etag"] == r.headers["etag"], read.text[:300]
    assert read.json()["filters"][0]["conditions"]["data.control"]["in"] == names
    assert read.json()["version"] == 1 and not read.json()["isDefault"]
    # The event path reads it too (one query for the batch's tenants): the last name passes, others not.
    passed = app.post("/events", json=event_body(t, data={"control": "MFA"}), tenants=[t])
    assert passed.status_code == 201 and passed.json()["status"] == "accepted", passed.text
    other = app.post("/events", json=event_body(t, data={"control": "SSO"}), tenants=[t])
    assert other.status_code == 200 and other.json()["status"] == "filtered", other.text
    # Replaced by a small one (a chunked copy must not linger) and read back as such.
    small = app.put(f"/stream-config/{t}", json={"enabled": True, "version": 1}, tenants=[t])
    assert small.status_code == 200 and small.json()["filters"] == [], small.text[:300]
    assert app.get(f"/stream-config/{t}", tenants=[t]).json()["filters"] == []


def test_a_body_in_another_charset_is_415_and_never_read_as_other_characters(app: App,
                                                                             stack: Stack) -> None:
    t = tenant("charset")
    # "Ã©" in ISO-8859-1 is the bytes C3 A9, which UTF-8 reads as "é": the client's text would change.
    latin1 = json.dumps(event_body(t, data={"name": "Ã©"}), ensure_ascii=False).encode("iso-8859-1")
    r = app.post("/events", content=latin1, tenants=[t],
                 headers={"content-type": "application/json; charset=ISO-8859-1"})
    assert "UTF-8" in _problem(r, 415)["detail"]
    utf16 = json.dumps(event_body(t)).encode("utf-16")
    _problem(app.post("/events", content=utf16, tenants=[t],
                      headers={"content-type": "application/json; charset=utf-16"}), 415)
    bulk = json.dumps({"events": [event_body(t)]}).encode()
    _problem(app.post("/events/bulk", content=bulk, tenants=[t],
                      headers={"content-type": "application/json; charset=windows-1252"}), 415)
    _problem(app.put(f"/stream-config/{t}", content=b"{}", tenants=[t],
                     headers={"content-type": "text/json;charset=latin1"}), 415)
    assert _stream(stack, t) == [], "a body in another charset was stored"
    # UTF-8, however spelled, and its subset US-ASCII are read as before.
    for spelling in (*UTF8_SPELLINGS, "us-ascii"):
        sent = event_body(t, data={"name": "é" if spelling != "us-ascii" else "e"})
        ok = app.post("/events", content=json.dumps(sent, ensure_ascii=False).encode(), tenants=[t],
                      headers={"content-type": f"application/json; charset={spelling}"})
        assert ok.status_code == 201, (spelling, ok.status_code, ok.text)
    assert [e["data"]["name"] for e in _stream(stack, t)] == ["é"] * len(UTF8_SPELLINGS) + ["e"]


def test_an_ordering_condition_on_what_cannot_be_ordered_is_a_field_error(app: App) -> None:
    t = tenant("orderop")
    never = {"data.a": {"gt": [1]}, "data.b": {"lte": {"x": 1}}, "data.c": {"gte": True},
             "data.d": {"lt": None}}
    r = app.put(f"/stream-config/{t}", json={"filters": [{"conditions": never}]}, tenants=[t])
    errors = _problem(r, 400)["errors"]
    pointers = sorted(e["pointer"] for e in errors)
    assert pointers == [f"/filters/0/conditions/{p}" for p in sorted(never)], errors
    assert all("number or a string" in e["detail"] for e in errors), errors
    assert app.get(f"/stream-config/{t}", tenants=[t]).json()["isDefault"], "a refused config was stored"
    # Numbers and strings (date-times compare as instants) are taken, and decide.
    fine = {"data.score": {"gt": 5, "lte": 10.5}, "data.at": {"gte": "2026-01-01T00:00:00Z"}}
    r = app.put(f"/stream-config/{t}", json={"filters": [{"conditions": fine}]}, tenants=[t])
    assert r.status_code == 201, r.text
    hit = event_body(t, data={"score": 7, "at": "2026-06-01T00:00:00+02:00"})
    assert app.post("/events", json=hit, tenants=[t]).json()["status"] == "accepted"
    miss = event_body(t, data={"score": 11, "at": "2026-06-01T00:00:00+02:00"})
    assert app.post("/events", json=miss, tenants=[t]).json()["status"] == "filtered"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/events/{t}%2Fhistory"), ("GET", "/events/{t}%2fhistory"), ("GET", "/deadletters/{t}%2Freplay"),
    ("GET", "/events/abc%2Fdef"), ("GET", "/stream-config/x%2F..%2F{t}"), ("PUT", "/stream-config/{t}%2F"),
])
def test_an_encoded_slash_stays_inside_its_path_segment(app: App, method: str, path: str) -> None:
    t = tenant("slash")
    r = app.request(method, path.format(t=t), json={})  # an admin: any tenant id reaches the handler
    errors = _problem(r, 400)["errors"]
    assert [e["pointer"] for e in errors] == ["#/path/tenantId"], errors
    assert app.get(f"/stream-config/{t}").json()["isDefault"], "a config was stored"


def test_an_encoded_slash_never_reaches_another_function(app: App) -> None:
    t = tenant("slash")
    # `/deadletters/{tenantId}` takes GET only: a POST is a 405 naming it, not a replay.
    r = app.post(f"/deadletters/{t}%2Freplay", json={})
    _problem(r, 405)
    assert r.headers["allow"] == "GET"
    r = app.get(f"/events%2F{t}")
    assert "no route" in _problem(r, 404)["detail"]


def test_concurrent_unconditional_puts_all_apply_and_none_is_412(app: App) -> None:
    t = tenant("racecfg")
    writers = 8

    def put(i: int) -> httpx.Response:
        return app.put(f"/stream-config/{t}", json={"batchSize": 10 + i}, tenants=[t])

    with ThreadPoolExecutor(writers) as pool:
        answers = list(pool.map(put, range(writers)))
    assert sorted(r.status_code for r in answers) == [200] * (writers - 1) + [201], [r.text for r in answers]
    # One write each, one after the other: every version once, and the stored one is the last write's.
    assert sorted(r.json()["version"] for r in answers) == list(range(1, writers + 1))
    last = max(answers, key=lambda r: r.json()["version"]).json()
    stored = app.get(f"/stream-config/{t}", tenants=[t]).json()
    assert (stored["version"], stored["batchSize"]) == (writers, last["batchSize"])
    audit = app.get(f"/audit/{t}", tenants=[t]).json()["items"]
    assert len(audit) == writers, audit


LIMITED_QUERIES = ["/events/{t}?limit=", "/events/{t}/history?limit=", "/deadletters/{t}?limit=",
                   "/audit/{t}?limit=", "/backfills/{t}?limit=", "/search/{t}?q=risk&k="]


@pytest.mark.parametrize("digits", ["1" + "0" * 4400, "9" * 4400])
def test_an_integer_parameter_of_thousands_of_digits_is_a_400_naming_it(app: App, digits: str) -> None:
    t = tenant("digits")
    for query in LIMITED_QUERIES:
        r = app.get(query.format(t=t) + digits, tenants=[t])
        name = query.rsplit("&", 1)[-1].rsplit("?", 1)[-1].rstrip("=")
        errors = _problem(r, 400)["errors"]
        assert [e["pointer"] for e in errors] == [f"#/query/{name}"], (query, errors)
    # Leading zeros are still read (0005 is 5), however many.
    for five in ("0005", "0" * 4400 + "5"):
        assert app.get(f"/events/{t}?limit={five}", tenants=[t]).status_code == 200


def test_a_condition_path_with_a_digit_int_refuses_never_fails_an_event(app: App, stack: Stack) -> None:
    t, other = tenant("supidx"), tenant("supidx")
    r = app.put(f"/stream-config/{t}", json={"filters": [{"conditions": {"data.items.²": 1}}]}, tenants=[t])
    assert r.status_code == 201, r.text
    listed = app.post("/events", json=event_body(t, data={"items": [1, 2]}), tenants=[t])
    assert listed.status_code == 200 and listed.json()["status"] == "filtered", listed.text
    keyed = app.post("/events", json=event_body(t, data={"items": {"²": 1}}), tenants=[t])
    assert keyed.status_code == 201 and keyed.json()["status"] == "accepted", keyed.text
    bulk = app.post("/events/bulk", json={"events": [event_body(other), event_body(t, data={"items": [1]})]},
                    tenants=[t, other])
    assert bulk.status_code == 200, bulk.text
    assert [x["status"] for x in bulk.json()["results"]] == ["accepted", "filtered"]
    assert len(_stream(stack, other)) == 1


def _raw_http(app: App, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request as bytes on its own connection (httpx would not send a malformed one): the answer's
    status, headers (lower-cased names) and body."""
    url = httpx.URL(app.base)
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_content_length_of_thousands_of_digits_is_a_400(app: App, stack: Stack) -> None:
    t = tenant("clen")
    body = json.dumps(event_body(t)).encode()
    auth = app.auth([t])["authorization"].encode()
    for length in (b"0" * 5000 + str(len(body)).encode(), b"9" * 5000):
        request = (b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth
                   + b"\r\nContent-Type: application/json\r\nContent-Length: " + length
                   + b"\r\nConnection: close\r\n\r\n" + body)
        status, headers, answer = _raw_http(app, request)
        assert status == 400, (status, answer[:300])
        assert headers["content-type"].startswith("application/problem+json")
        assert json.loads(answer)["status"] == 400
    assert _stream(stack, t) == []


def test_a_config_stored_with_such_a_condition_before_the_check_still_loads_and_routes(
        app: App, stack: Stack) -> None:
    """The check is on PUT only: a config stored before it (written here to the table as the service
    wrote it) must still be read, or every event of its tenant would fail."""
    t, model = tenant("oldcfg"), tenant("oldcfg")
    stored = app.configure(model, {"filters": [{"conditions": {"data.score": {"gt": 5}}}]})
    stored.update(tenantId=t, filters=[{"eventTypes": [], "sources": [],
                                        "conditions": {"data.score": {"gt": [5]}}}])
    with TableClient.from_connection_string(stack.storage, app.env["STREAM_CONFIG_TABLE"]) as table:
        table.create_entity({"PartitionKey": t, "RowKey": "streamconfig", "Config": json.dumps(stored),
                             "Version": stored["version"]})
    r = app.post("/events", json=event_body(t, data={"score": 7}), tenants=[t])
    assert r.status_code == 200 and r.json()["status"] == "filtered", r.text
    read = app.get(f"/stream-config/{t}", tenants=[t])
    assert read.status_code == 200 and read.json()["filters"] == stored["filters"], read.text


# Held (no test proved it): the values a body holds reach the stream and GET exactly, whatever they are.
EDGE_DATA = ('{"negzero": -0.0, "tiny": 5e-324, "huge": 1.5e308, "umax": 18446744073709551615, '
             '"imin": -9223372036854775808, "text": "\\u00e9\\u202eabc\\ud83d\\ude00e\\u0301\\u0000\\n", '
             '"\\ud83d\\udd11 key": [true, null, 0.1, "\\u05e9\\u05dc\\u05d5\\u05dd"]}')


def test_edge_values_and_unicode_reach_the_stream_and_get_unchanged(app: App, stack: Stack) -> None:
    t = tenant("edgevals")
    sent = json.loads(EDGE_DATA)
    body = json.dumps(event_body(t, data={}))[:-1].replace('"data": {}', f'"data": {EDGE_DATA}') + "}"
    r = app.post("/events", content=body.encode(), tenants=[t], headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    (stored,) = _stream(stack, t)
    (listed,) = app.get(f"/events/{t}", tenants=[t]).json()["events"]
    for data in (stored["data"], listed["event"]["data"]):
        assert data == sent
        assert all(type(data[k]) is type(sent[k]) for k in sent), data  # an int stays an int
        assert math.copysign(1.0, data["negzero"]) == -1.0 and data["tiny"] == 5e-324


def test_a_body_naming_a_member_twice_counts_its_last_value_and_is_authorised_on_it(app: App,
                                                                                   stack: Stack) -> None:
    """README 'Limits': a member named twice counts with its last value, and the caller must be granted
    the tenant that value names: a token for the first tenant cannot publish to the second."""
    t, other = tenant("dupkey"), tenant("dupkey")
    body = (json.dumps(event_body(t))[:-1] + f', "tenantId": "{other}"}}').encode()
    headers = {"content-type": "application/json"}
    refused = app.post("/events", content=body, headers=headers, tenants=[t])
    _problem(refused, 403)
    r = app.post("/events", content=body, headers=headers, tenants=[other])
    assert r.status_code == 201, r.text
    assert r.json()["tenantId"] == other
    assert _stream(stack, t) == [] and len(_stream(stack, other)) == 1


def test_a_listing_of_large_events_stops_at_8_mib_and_says_so(app: App) -> None:
    """README 'Limits': GET /events/{tenantId} answers at most 8 MiB of stored events (1,000 events of
    up to 1 MB would be a 1 GB answer in one instance's memory), with `truncated: true`; newest first,
    none skipped; a small listing is not truncated."""
    t = tenant("bigevents")
    blobs = {f"b{k}": "x" * 220_000 for k in range(4)}  # 880 KB: each string within 256 K characters
    ids = []
    for i in range(12):
        r = app.post("/events", json=event_body(t, data={**blobs, "n": i}), tenants=[t])
        assert r.status_code == 201, r.text
        ids.append(r.json()["eventId"])
    r = app.get(f"/events/{t}?limit=1000", tenants=[t])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["truncated"] is True and body["count"] == len(body["events"]) == 9, body["count"]
    assert [e["event"]["eventId"] for e in body["events"]] == ids[::-1][:9]
    assert len(r.content) <= 8 * 1_048_576 + 64 * 1024
    small = app.get(f"/events/{t}?limit=3", tenants=[t]).json()
    assert small["truncated"] is False and small["count"] == 3
