"""Continuation tokens are validated the same way on every paged read (issue 12, item 2)."""
from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.system.harness import App, tenant, wait_for

# (path template, token parameter) of every paged read.
PAGED = [("/events/{t}/history", "continuationToken"), ("/deadletters/{t}", "continuationToken"),
         ("/audit/{t}", "continuation")]


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


FORGED = [
    "!!", "x" * 5000, _b64({"PartitionKey": "x"}), _b64({"NextPartitionKey": "acme", "NextRowKey": "1"}),
    _b64({"h": "2026010100", "rk": None, "f": 0, "t": 1}), "0000000000000001-abcdef01",
    _b64({"a": 1}) + "." + _b64("tag"),
]


def _refused(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == [param], r.text


@pytest.mark.parametrize("template, param", PAGED, ids=[p[0] for p in PAGED])
def test_a_token_the_service_did_not_issue_is_400_on_every_paged_read(app: App, template: str, param: str) -> None:
    t = tenant()
    for forged in FORGED:
        _refused(app.get(template.format(t=t), params={param: forged}, tenants=[t]), param)


def _audit_token(app: App, t: str) -> str:
    for n in (1, 2):
        assert app.put(f"/stream-config/{t}", json={"batchSize": 10 + n}).status_code in (200, 201)
    page = app.get(f"/audit/{t}", params={"limit": "1"}).json()
    assert page["continuation"], page
    return page["continuation"]


def _history_token(app: App, t: str, query: dict[str, str]) -> str:
    cfg = {"destinations": [{"type": "analytics", "enabled": True, "config": {}}]}
    assert app.put(f"/stream-config/{t}", json=cfg).status_code in (200, 201)
    body = {"events": [{"tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
                        "data": {"n": n}} for n in range(3)]}
    assert app.post("/events/bulk", json=body).json()["accepted"] == 3

    def page() -> dict[str, object] | None:
        got = app.get(f"/events/{t}/history", params={**query, "limit": "1"}).json()
        return got if got.get("continuationToken") else None

    return str(wait_for(page, 20, what="a history page with a next page")["continuationToken"])


def test_an_issued_token_pages_on_and_is_refused_for_another_tenant_query_or_list(app: App) -> None:
    a, b = tenant(), tenant()
    both = [a, b]
    # Audit: the token continues tenant a's trail, nowhere else.
    token = _audit_token(app, a)
    r = app.get(f"/audit/{a}", params={"limit": "1", "continuation": token}, tenants=both)
    assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
    _refused(app.get(f"/audit/{b}", params={"continuation": token}, tenants=both), "continuation")
    _refused(app.get(f"/events/{a}/history", params={"continuationToken": token}, tenants=both),
             "continuationToken")
    _refused(app.get(f"/deadletters/{a}", params={"continuationToken": token}, tenants=both), "continuationToken")
    # History: the same query pages on; another filter, another tenant or another list does not.
    query = {"eventType": "RISK_UPDATED"}
    token = _history_token(app, a, query)
    r = app.get(f"/events/{a}/history", params={**query, "limit": "1", "continuationToken": token}, tenants=both)
    assert r.status_code == 200 and r.json()["count"] == 1, r.text
    for path, params in ((f"/events/{a}/history", {"continuationToken": token}),
                         (f"/events/{a}/history", {"eventType": "RISK_CREATED", "continuationToken": token}),
                         (f"/events/{b}/history", {**query, "continuationToken": token}),
                         (f"/deadletters/{a}", {"continuationToken": token})):
        _refused(app.get(path, params=params, tenants=both), "continuationToken")
    _refused(app.get(f"/audit/{a}", params={"continuation": token}, tenants=both), "continuation")
