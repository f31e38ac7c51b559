"""Change feed behaviour of the local Cosmos server, through the real azure-cosmos SDK."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from localdev import services
from localdev.services import LOCAL_COSMOS_KEY


def _client(url: str) -> CosmosClient:
    return CosmosClient(
        url,
        credential=LOCAL_COSMOS_KEY,
        connection_verify=False,
        enable_endpoint_discovery=False,
    )


@pytest.fixture(scope="module")
def database(cosmos_server: services.Running) -> DatabaseProxy:
    client = _client(cosmos_server.settings["COSMOS_DB_ENDPOINT"])
    return client.create_database_if_not_exists(f"feedtest-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def container(database: DatabaseProxy) -> ContainerProxy:
    # A fresh container per test: the LSN is account-wide, the feed is per container.
    return database.create_container(
        id=f"events-{uuid.uuid4().hex[:8]}", partition_key=PartitionKey(path="/tenantId")
    )


def _drain(container: ContainerProxy, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    """Read the feed to its end; return the items and the continuation to resume from."""
    items = list(container.query_items_change_feed(**kwargs))
    # The continuation of the last (possibly empty) response is only in the headers.
    token = container.client_connection.last_response_headers["etag"]
    return items, token


def _write(container: ContainerProxy, n: int, start: int = 0) -> list[str]:
    ids = [f"e{i}" for i in range(start, start + n)]
    for i, item_id in enumerate(ids, start):
        container.upsert_item({"id": item_id, "tenantId": f"t{i % 3}", "seq": i})
    return ids


def test_beginning_returns_all_docs_in_write_order_with_lsn(container: ContainerProxy) -> None:
    ids = _write(container, 6)
    items, _ = _drain(container, start_time="Beginning")
    assert [d["id"] for d in items] == ids
    lsns = [d["_lsn"] for d in items]
    assert all(isinstance(x, int) for x in lsns)
    assert lsns == sorted(lsns) and len(set(lsns)) == len(lsns)


def test_continuation_returns_only_newer_changes(container: ContainerProxy) -> None:
    _write(container, 3)
    first, token = _drain(container, start_time="Beginning")
    assert len(first) == 3
    nothing, token = _drain(container, continuation=token)
    assert nothing == []
    newer = _write(container, 2, start=3)
    items, token = _drain(container, continuation=token)
    assert [d["id"] for d in items] == newer
    assert _drain(container, continuation=token)[0] == []


def test_now_skips_existing_docs_then_sees_new_ones(container: ContainerProxy) -> None:
    _write(container, 3)
    old, token = _drain(container, start_time="Now")
    assert old == []
    new = _write(container, 1, start=10)
    items, _ = _drain(container, continuation=token)
    assert [d["id"] for d in items] == new


def test_start_time_returns_changes_from_that_time(container: ContainerProxy) -> None:
    _write(container, 2)
    # If-Modified-Since has one-second resolution, so leave more than a second.
    time.sleep(1.2)
    start = datetime.now(timezone.utc)
    later = _write(container, 2, start=2)
    items, _ = _drain(container, start_time=start)
    assert [d["id"] for d in items] == later


def test_item_updated_twice_appears_once_with_latest_content(container: ContainerProxy) -> None:
    _write(container, 3)
    _, token = _drain(container, start_time="Beginning")
    container.upsert_item({"id": "e1", "tenantId": "t1", "seq": 1, "status": "first"})
    container.replace_item("e1", {"id": "e1", "tenantId": "t1", "seq": 1, "status": "second"})
    container.upsert_item({"id": "e2", "tenantId": "t2", "seq": 2, "status": "once"})
    items, _ = _drain(container, continuation=token)
    assert [(d["id"], d.get("status")) for d in items] == [("e1", "second"), ("e2", "once")]
    assert items[0]["_lsn"] < items[1]["_lsn"]
    # From the beginning too: each document once, ordered by its latest write.
    everything, _ = _drain(container, start_time="Beginning")
    assert [d["id"] for d in everything] == ["e0", "e1", "e2"]


def test_patch_is_a_change(container: ContainerProxy) -> None:
    _write(container, 2)
    _, token = _drain(container, start_time="Beginning")
    container.patch_item(
        "e0", partition_key="t0", patch_operations=[{"op": "add", "path": "/status", "value": "p"}]
    )
    items, _ = _drain(container, continuation=token)
    assert [(d["id"], d["status"]) for d in items] == [("e0", "p")]


def test_deletes_do_not_appear(container: ContainerProxy) -> None:
    _write(container, 3)
    container.delete_item("e1", partition_key="t1")
    items, _ = _drain(container, start_time="Beginning")
    assert [d["id"] for d in items] == ["e0", "e2"]


def test_max_item_count_pages_and_continuations_chain(container: ContainerProxy) -> None:
    ids = _write(container, 7)
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        if token is None:
            pager = container.query_items_change_feed(
                start_time="Beginning", max_item_count=3
            ).by_page()
        else:
            pager = container.query_items_change_feed(continuation=token, max_item_count=3).by_page()
        page = list(next(pager, []))
        token = pager.continuation_token or container.client_connection.last_response_headers["etag"]
        if not page:
            break
        assert len(page) <= 3
        seen += [d["id"] for d in page]
        pages += 1
    assert seen == ids
    assert pages == 3


def test_partition_key_scope(container: ContainerProxy) -> None:
    _write(container, 9)
    items, token = _drain(container, start_time="Beginning", partition_key="t1")
    assert [d["id"] for d in items] == ["e1", "e4", "e7"]
    container.upsert_item({"id": "x0", "tenantId": "t0"})
    container.upsert_item({"id": "x1", "tenantId": "t1"})
    newer, _ = _drain(container, continuation=token)
    assert [d["id"] for d in newer] == ["x1"]


def test_feed_range_scope(container: ContainerProxy) -> None:
    ids = _write(container, 6)
    ranges = list(container.read_feed_ranges())
    assert ranges
    union: list[str] = []
    for fr in ranges:
        union += [d["id"] for d in _drain(container, feed_range=fr, start_time="Beginning")[0]]
    assert sorted(union) == sorted(ids)
    # A feed range narrower than a physical partition is filtered by EPK on the server.
    t2 = container.feed_range_from_partition_key("t2")
    items, _ = _drain(container, feed_range=t2, start_time="Beginning")
    assert [d["id"] for d in items] == ["e2", "e5"]


def test_missing_item_read_is_404(container: ContainerProxy) -> None:
    with pytest.raises(CosmosResourceNotFoundError) as err:
        container.read_item("nope", partition_key="t0")
    assert err.value.status_code == 404


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_mode(tmp_path_factory: pytest.TempPathFactory) -> None:
    running = services.start("cosmos-https", tmp_path_factory.mktemp("cosmos-https"))
    try:
        endpoint = running.settings["COSMOS_DB_ENDPOINT"]
        assert endpoint.startswith("https://")
        db = _client(endpoint).create_database_if_not_exists("tls")
        c = db.create_container_if_not_exists("c", partition_key=PartitionKey(path="/tenantId"))
        c.upsert_item({"id": "a", "tenantId": "t"})
        assert [d["id"] for d in c.query_items_change_feed(start_time="Beginning")] == ["a"]
    finally:
        services.stop(running.proc)


def test_many_rewrites_keep_one_entry_per_doc(container: ContainerProxy) -> None:
    # Enough rewrites to trigger the server's feed-log compaction (> 1024 entries).
    for round_ in range(25):
        for i in range(50):
            container.upsert_item({"id": f"d{i}", "tenantId": f"t{i % 3}", "round": round_})
    container.upsert_item({"id": "d7", "tenantId": "t1", "round": 99})
    items, _ = _drain(container, start_time="Beginning", max_item_count=40)
    assert len(items) == 50
    assert [d["id"] for d in items][-1] == "d7"
    assert {d["round"] for d in items[:-1]} == {24} and items[-1]["round"] == 99
    lsns = [d["_lsn"] for d in items]
    assert lsns == sorted(lsns)
