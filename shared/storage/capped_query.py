"""Byte-capped reads of Table rows in RowKey order (shared/core/answer_cap.py says why).

`first_rows` reads a query's first rows, a page of `count` at a time: the SDK holds a whole page in
memory, so a page is never asked for more rows than the answer's bytes left can hold.

`capped_list` is a listing of one partition in RowKey order (dead letters, the audit trail): up to
`limit` items and the answer's byte cap, read in pages sized by what was seen; its position is the
last RowKey answered, and the next page reads the rows after it (`RowKey gt @after`), so a page
ends after any item, not only where the Table service ends its pages: nothing is skipped or repeated.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from azure.data.tables.aio import TableClient

from shared.core import limits
from shared.core.answer_cap import AnswerCap

T = TypeVar("T")
MAX_PAGE_ROWS = 1000  # the Table service's largest page ($top)


async def first_rows(table: TableClient, flt: str, params: Mapping[str, Any], count: int,
                     select: list[str] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """At least `count` rows of the query (fewer: it has no more), in pages of `count` (at most
    MAX_PAGE_ROWS); and whether the query has no more rows than those (False: it may have)."""
    rows: list[dict[str, Any]] = []
    pager = table.query_entities(flt, parameters=dict(params), results_per_page=min(count, MAX_PAGE_ROWS),
                                 select=select)
    async for page in pager.by_page():
        async for row in page:
            rows.append(row)
        # A page may come back short with a continuation (the service ends a page at 5 s): read on.
        if len(rows) >= count:
            return rows, False
    return rows, True


@dataclass
class CappedPage(Generic[T]):
    items: list[T]
    after: str | None  # the last RowKey answered when more may follow; None: this was the last page
    truncated: bool  # stopped before `limit` at the answer's byte cap


async def capped_list(table: TableClient, flt: str, params: Mapping[str, Any], *, limit: int,
                      after: str | None, item: Callable[[dict[str, Any]], tuple[T, int]],
                      max_bytes: int = limits.MAX_LIST_RESPONSE_BYTES) -> CappedPage[T]:
    """The rows of `flt` after RowKey `after`, in RowKey order, as `item(row)` = (answered item, its
    size in bytes), up to `limit` items and `max_bytes` of them (one item at least)."""
    cap = AnswerCap(max_bytes)
    out: list[T] = []
    while True:
        query, args = flt, dict(params)
        if after is not None:
            query += " and RowKey gt @after"
            args["after"] = after
        # One more than the items still wanted tells whether another page exists.
        rows, done = await first_rows(table, query, args, cap.next_read(limit - len(out) + 1))
        for row in rows:
            if len(out) == limit:
                return CappedPage(out, after, False)
            value, size = item(row)
            if not cap.admit(size):
                return CappedPage(out, after, True)
            out.append(value)
            after = row["RowKey"]
        if done:
            return CappedPage(out, None, False)
