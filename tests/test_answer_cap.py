"""The one byte cap of list answers (shared/core/answer_cap.py) and the capped reads built on it
(shared/storage/capped_query.py, the analytics history's shard merge): a listing stops at the cap
with one item at least, reads in pages sized by what it saw, and its position resumes right after
the last item answered."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from shared.app.services import Services
from shared.core import limits
from shared.core.answer_cap import FIRST_READ, AnswerCap, json_size
from shared.core.streamconfig import StreamConfigIn
from shared.storage.capped_query import capped_list, first_rows
from tests.functions_client import invoke

MB = 1_000_000


def test_the_first_item_always_goes_in_then_items_while_they_fit() -> None:
    cap = AnswerCap(max_bytes=10)
    assert cap.admit(25)  # alone above the cap: still served
    assert not cap.admit(1) and cap.truncated
    cap = AnswerCap(max_bytes=10)
    assert cap.admit(4) and cap.admit(6) and not cap.truncated  # exactly at the cap
    assert not cap.admit(1) and cap.truncated and (cap.taken, cap.taken_bytes) == (2, 10)


def test_reads_are_sized_by_what_was_seen_not_by_the_limit() -> None:
    cap = AnswerCap()
    assert cap.next_read(1001) == FIRST_READ  # nothing seen yet
    assert cap.next_read(5) == 5 and cap.next_read(0) == 1  # never more than asked, at least one
    for _ in range(3):
        assert cap.admit(MB)
    # 8 MiB - 3 MB left at 1 MB each: 5 fit, plus the one that tells the cap is reached.
    assert cap.next_read(1001) == 6
    assert cap.next_read(1001, ways=4) == 2  # side by side from 4 shards: 2 each
    assert cap.next_read(1001, ways=32) == 1  # one each at least
    small = AnswerCap()
    small.skip(100)  # filtered out: it sizes the reads all the same
    assert small.next_read(1001) == 1001 and small.next_read(50, ways=32) == 50


def test_json_size_is_utf8_bytes() -> None:
    assert json_size('"é"') == 4 and json_size(b'"ab"') == 4 and json_size('"ab"') == 4
    assert limits.MAX_LIST_RESPONSE_BYTES == 8 * 1_048_576


@pytest.mark.usefixtures("app_services")
async def test_a_capped_listing_pages_across_the_cap_every_row_once(app_services: Services) -> None:
    table = app_services.tables.get_table_client("capped" + uuid.uuid4().hex[:10])
    await table.create_table()
    try:
        sizes = [300, 50, 900, 120, 400, 400, 10, 1000, 250, 80, 600, 5]
        for n, size in enumerate(sizes):
            await table.create_entity({"PartitionKey": "p", "RowKey": f"{n:03d}", "Body": "x" * size})

        def item(row: dict[str, Any]) -> tuple[str, int]:
            return row["RowKey"], len(row["Body"])

        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            page = await capped_list(table, "PartitionKey eq @pk", {"pk": "p"}, limit=1000, after=after,
                                     item=item, max_bytes=1000)
            pages += 1
            assert page.items, "a page holds one row at least"
            body = sum(sizes[int(rk)] for rk in page.items)
            assert body <= 1000 or len(page.items) == 1, (page.items, body)
            assert page.truncated == (page.after is not None)  # only the cap ends a page before `limit`
            seen += page.items
            if page.after is None:
                break
            after = page.after
            # the cap was reached: the next row would not have fitted
            assert body + sizes[int(after) + 1] > 1000
        assert seen == [f"{n:03d}" for n in range(len(sizes))] and pages > 3
        # `limit` ends a page without `truncated`, and the last page has no position.
        page = await capped_list(table, "PartitionKey eq @pk", {"pk": "p"}, limit=2, after=None, item=item)
        assert (page.items, page.after, page.truncated) == (["000", "001"], "001", False)
        page = await capped_list(table, "PartitionKey eq @pk", {"pk": "p"}, limit=2, after="009", item=item)
        assert (page.items, page.after, page.truncated) == (["010", "011"], None, False)
    finally:
        await table.delete_table()


async def _history_of(svc: Services, pad: list[int], minutes_apart: float, max_bytes: int) -> list[list[int]]:
    """Events of `pad` bytes of padding, newest first `minutes_apart`, in a 3-shard tenant: the `n` of
    each page's events, paging with `limit` 1000 and a cap of `max_bytes`; each page checked."""
    t = "capped-" + uuid.uuid4().hex[:8]
    await svc.configs.write(t, StreamConfigIn.model_validate(
        {"destinations": [{"type": "analytics", "config": {"shards": 3}}]}))
    now = datetime.now(UTC).replace(microsecond=0)
    events = [{"tenantId": t, "eventType": "RISK_UPDATED", "source": "ARCHER_GRC", "action": "UPDATE",
               "timestamp": (now - timedelta(minutes=minutes_apart * i)).isoformat(),
               "data": {"n": i, "pad": "x" * p}} for i, p in enumerate(pad)]
    status, _, body = await invoke("publish_events_bulk", "POST", "/events/bulk", {"events": events})
    assert status == 200 and body["accepted"] == len(pad), body
    to_ms = int(now.timestamp() * 1000) + 1000
    pages: list[list[int]] = []
    after = None
    while True:
        page = await svc.analytics.history(t, from_ms=to_ms - 4 * 3_600_000, to_ms=to_ms, limit=1000,
                                           after=after, max_bytes=max_bytes)
        sizes = [len(orjson.dumps(e)) for e in page.events]
        assert page.events and (sum(sizes) <= max_bytes or len(sizes) == 1), sizes
        assert page.truncated == (page.next_position is not None)  # only the cap ends these pages
        pages.append([e["data"]["n"] for e in page.events])
        if page.next_position is None:
            return pages
        after = page.next_position


@pytest.mark.usefixtures("app_services")
async def test_history_pages_across_the_cap_over_shards_and_hours_every_event_once(
        app_services: Services) -> None:
    """Three shards merged by RowKey, over hours: a page cut by the cap resumes after its last event."""
    pad = [40, 900, 10, 3000, 200, 700, 50, 1200, 5, 400, 2500, 60, 800, 100, 30, 1500, 90, 600]
    pages = await _history_of(app_services, pad, 7, 4000)
    assert [n for p in pages for n in p] == list(range(len(pad))), pages  # newest first, each once


@pytest.mark.usefixtures("app_services")
async def test_history_reads_each_shard_in_pieces_and_merges_only_what_is_known_in_order(
        app_services: Services) -> None:
    """Many events of one hour over three shards, read a few rows per shard at a time: a shard's unread
    rows may sort before another shard's read ones, so only the merge up to the smallest last row of
    the shards not read to their end is answered; none is skipped."""
    # ~25 events a page: more than the first piece's 16 (6 a shard), so a page merges several pieces.
    pad = [(37 * i) % 300 for i in range(60)]
    pages = await _history_of(app_services, pad, 0.2, 10_000)
    assert [n for p in pages for n in p] == list(range(len(pad))), pages
    assert len(pages) >= 3 and max(map(len, pages)) > 16, list(map(len, pages))


@pytest.mark.usefixtures("app_services")
async def test_a_signed_token_whose_position_the_store_no_longer_reads_is_a_400_never_a_500(
        app_services: Services) -> None:
    """Dead-letter positions were the Table service's continuation (a dict) before they became the last
    RowKey answered: a token issued before, under the same PAGE_TOKEN_KEY, names the parameter (400)."""
    t = "capped-" + uuid.uuid4().hex[:8]
    tokens = app_services.page_tokens
    cases = [
        ("list_deadletters", f"/deadletters/{t}", "continuationToken",
         tokens.encode("deadletters", t, {"includeReplayed": False}, {"PartitionKey": t, "RowKey": "x"})),
        ("get_audit", f"/audit/{t}", "continuation", tokens.encode("audit", t, {}, {"rk": "x"})),
        ("event_history", f"/events/{t}/history", "continuationToken",
         tokens.encode("history", t, dict.fromkeys(("from", "to", "eventType", "source")), {"h": "x"})),
    ]
    for name, path, param, token in cases:
        status, _, body = await invoke(name, "GET", path, route={"tenantId": t}, params={param: token})
        assert status == 400 and [e["field"] for e in body["errors"]] == [param], (name, status, body)


class _FakeTable:
    """A table whose query answers `rows` in pages of the size asked for, recording each size (the Table
    service takes a page of at most 1,000: its $top)."""

    def __init__(self, rows: int) -> None:
        self.rows = [{"RowKey": f"{n:05d}"} for n in range(rows)]
        self.asked: list[int] = []

    def query_entities(self, flt: str, *, parameters: dict[str, Any], results_per_page: int,
                       select: list[str] | None = None) -> Any:
        self.asked.append(results_per_page)
        rows = self.rows

        class Pager:
            async def by_page(self) -> Any:
                for start in range(0, len(rows), results_per_page):
                    async def page(chunk: list[dict[str, Any]] = rows[start:start + results_per_page]) -> Any:
                        for row in chunk:
                            yield row
                    yield page()

        return Pager()


async def test_a_read_never_asks_the_table_for_a_page_over_1000_rows() -> None:
    table = _FakeTable(2500)
    rows, done = await first_rows(table, "x", {}, 1001)  # type: ignore[arg-type]
    assert table.asked == [1000] and len(rows) == 2000 and not done
    rows, done = await first_rows(_FakeTable(7), "x", {}, 16)  # type: ignore[arg-type]
    assert len(rows) == 7 and done
