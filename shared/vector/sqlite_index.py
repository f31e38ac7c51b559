"""Local vector index: sqlite-vec's `vec0` table, exact KNN with the cosine metric (local and CI only).

The tenant is the table's partition key, so a search reads only that tenant's vectors and there is
no query without one. vec0 has no upsert: an event's row is deleted and inserted again in one
transaction, under the rowid kept for (tenantId, eventId) in a side table. This Python's sqlite3
cannot load extensions, hence `pysqlite3-binary`.
"""
from __future__ import annotations

import asyncio
import struct
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from shared.vector.base import (
    IndexInfo,
    IndexSpec,
    SearchFilters,
    SearchHit,
    VectorConfigError,
    VectorDoc,
    check_spec,
    check_vector,
)

SCHEMA_VERSION = "1"


def to_epoch_ms(ts: str) -> int:
    """RFC 3339 -> milliseconds since the epoch (a naive time is taken as UTC)."""
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _connect(path: str) -> Any:
    try:  # local-only packages: imported only when this index is built
        import pysqlite3.dbapi2 as sqlite3
        import sqlite_vec
    except ImportError as exc:
        raise VectorConfigError(
            "VECTOR_BACKEND=sqlite needs the local-only packages (requirements-local.txt); "
            "in Azure set VECTOR_BACKEND=azure-search"
        ) from exc

    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    if path != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")  # the indexer writes while the search API reads
    return db


class SqliteVecIndex:
    """`VectorIndex` over one SQLite file; all calls run in a worker thread, one at a time."""

    backend = "sqlite"

    def __init__(self, path: str, spec: IndexSpec) -> None:
        self.path = path
        self.spec = spec
        self._db: Any = None
        self._lock = threading.Lock()
        self._pack = struct.Struct(f"{spec.dimensions}f").pack

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        with self._lock:
            if self._db is not None:
                return
            db = _connect(self.path)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("CREATE TABLE IF NOT EXISTS vector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                stored = dict(db.execute("SELECT key, value FROM vector_meta").fetchall())
                if stored:
                    check_spec(
                        IndexSpec(stored["model_id"], int(stored["dimensions"])), self.spec, f"index {self.path}"
                    )
                else:
                    db.executemany(
                        "INSERT INTO vector_meta (key, value) VALUES (?, ?)",
                        [("model_id", self.spec.model_id), ("dimensions", str(self.spec.dimensions)),
                         ("schema_version", SCHEMA_VERSION)],
                    )
                    db.execute(
                        "CREATE TABLE vector_docs (rowid INTEGER PRIMARY KEY AUTOINCREMENT,"
                        " tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, UNIQUE (tenant_id, event_id))"
                    )
                    # Metadata columns (filterable inside the KNN query) cannot be NULL: '' = none.
                    db.execute(
                        "CREATE VIRTUAL TABLE vector_events USING vec0("
                        " tenant_id TEXT PARTITION KEY,"
                        f" embedding FLOAT[{self.spec.dimensions}] distance_metric=cosine,"
                        " event_type TEXT, entity_type TEXT, entity_id TEXT, source TEXT, ts_ms INTEGER,"
                        " +event_id TEXT, +ts TEXT, +summary TEXT)"
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                db.close()
                raise
            self._db = db

    async def close(self) -> None:
        def _close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(_close)

    def _conn(self) -> Any:
        if self._db is None:
            raise RuntimeError("index not open: call open() first")
        return self._db

    # -- writes ----------------------------------------------------------------------------

    async def upsert(self, docs: Sequence[VectorDoc]) -> int:
        for doc in docs:
            check_vector(self.spec, doc.vector, doc.model_id)
        if not docs:
            return 0
        return await asyncio.to_thread(self._upsert, list(docs))

    def _upsert(self, docs: list[VectorDoc]) -> int:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for doc in docs:
                    row = db.execute(
                        "SELECT rowid FROM vector_docs WHERE tenant_id = ? AND event_id = ?",
                        (doc.tenant_id, doc.event_id),
                    ).fetchone()
                    if row:
                        rowid = row[0]
                        db.execute("DELETE FROM vector_events WHERE rowid = ?", (rowid,))
                    else:
                        rowid = db.execute(
                            "INSERT INTO vector_docs (tenant_id, event_id) VALUES (?, ?) RETURNING rowid",
                            (doc.tenant_id, doc.event_id),
                        ).fetchone()[0]
                    db.execute(
                        "INSERT INTO vector_events (rowid, tenant_id, embedding, event_type, entity_type,"
                        " entity_id, source, ts_ms, event_id, ts, summary)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (rowid, doc.tenant_id, self._pack(*doc.vector), doc.event_type, doc.entity_type or "",
                         doc.entity_id or "", doc.source, to_epoch_ms(doc.timestamp), doc.event_id,
                         doc.timestamp, doc.text),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(docs)

    async def delete(self, tenant_id: str, event_ids: Sequence[str]) -> int:
        return await asyncio.to_thread(self._delete, tenant_id, list(event_ids))

    def _delete(self, tenant_id: str, event_ids: list[str]) -> int:
        removed = 0
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for event_id in event_ids:
                    row = db.execute(
                        "DELETE FROM vector_docs WHERE tenant_id = ? AND event_id = ? RETURNING rowid",
                        (tenant_id, event_id),
                    ).fetchone()
                    if row:
                        db.execute("DELETE FROM vector_events WHERE rowid = ?", (row[0],))
                        removed += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return removed

    # -- reads -----------------------------------------------------------------------------

    async def search(
        self,
        tenant_id: str,
        vector: Sequence[float],
        k: int,
        filters: SearchFilters | None = None,
        *,
        model_id: str,
    ) -> list[SearchHit]:
        check_vector(self.spec, vector, model_id)
        if not tenant_id:
            raise ValueError("tenant_id is required")
        return await asyncio.to_thread(self._search, tenant_id, list(vector), k, filters or SearchFilters())

    def _search(self, tenant_id: str, vector: list[float], k: int, f: SearchFilters) -> list[SearchHit]:
        where = ["embedding MATCH ?", "k = ?", "tenant_id = ?"]
        args: list[Any] = [self._pack(*vector), k, tenant_id]
        for column, values in (("event_type", f.event_types), ("entity_type", f.entity_types),
                               ("source", f.sources)):
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                args.extend(values)
        if f.entity_id:
            where.append("entity_id = ?")
            args.append(f.entity_id)
        if f.time_from:
            where.append("ts_ms >= ?")
            args.append(to_epoch_ms(f.time_from))
        if f.time_to:
            where.append("ts_ms <= ?")
            args.append(to_epoch_ms(f.time_to))
        sql = (
            "SELECT event_id, distance, event_type, entity_type, entity_id, source, ts, summary"
            " FROM vector_events WHERE " + " AND ".join(where) + " ORDER BY distance"
        )
        with self._lock:
            rows = self._conn().execute(sql, args).fetchall()
        return [
            SearchHit(
                event_id=r[0], tenant_id=tenant_id, score=1.0 - float(r[1]), event_type=r[2],
                entity_type=r[3] or None, entity_id=r[4] or None, source=r[5], timestamp=r[6], summary=r[7],
            )
            for r in rows
        ]

    async def count(self, tenant_id: str | None = None) -> int:
        def _count() -> int:
            with self._lock:
                db = self._conn()
                if tenant_id is None:
                    return int(db.execute("SELECT count(*) FROM vector_docs").fetchone()[0])
                return int(db.execute(
                    "SELECT count(*) FROM vector_docs WHERE tenant_id = ?", (tenant_id,)).fetchone()[0])

        return await asyncio.to_thread(_count)

    async def info(self) -> IndexInfo:
        return IndexInfo(
            backend=self.backend, name=self.path, model_id=self.spec.model_id,
            dimensions=self.spec.dimensions, documents=await self.count(),
        )
