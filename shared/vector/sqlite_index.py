"""Local event index (local and CI only): sqlite-vec's `vec0` table for exact KNN and an SQLite FTS5
table for BM25 keyword search, in one database file, fused by reciprocal rank fusion.

Vectors are stored unit-length and searched with the L2 metric: for unit vectors the order is the
cosine order (|a - b|^2 = 2 - 2 cos) and the scan is about a fifth cheaper than vec0's cosine, which
recomputes both norms for every row (sqlite-vec's wheel has no SIMD); cosine = 1 - d^2 / 2.

The tenant is the vec0 table's partition key and, in the FTS5 table, an indexed token derived from
the tenant id that every MATCH requires (then checked against the stored tenant id): a search reads
only that tenant's documents and there is no query without one. vec0 has no upsert: an event's rows
are deleted and inserted again in one transaction, under the rowid kept for (tenantId, eventId) in a
side table; the FTS5 row shares that rowid. An index of schema 1 (vectors only) gets its FTS5 table
built from its stored rows when opened. This Python's sqlite3 cannot load extensions, hence
`pysqlite3-binary` (its SQLite is built with FTS5).
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import struct
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from shared.core.events import utc_instant
from shared.vector.base import (
    IndexInfo,
    IndexSpec,
    SearchFilters,
    SearchHit,
    SearchQuery,
    VectorConfigError,
    VectorDoc,
    check_query,
    check_spec,
    check_vector,
)
from shared.vector.fusion import CANDIDATES, DEFAULT_WEIGHTS, Candidate, Weights, fuse
from shared.vector.outcome import outcome_from_text, stored

SCHEMA_VERSION = "2"  # 1: vectors only (vector_events, cosine); 2: vector_knn (L2, unit) + vector_fts
# Porter stemming over unicode61 (diacritics folded): "failing" finds "failed", "reviews" finds "review".
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
_FTS_DDL = (
    "CREATE VIRTUAL TABLE vector_fts USING fts5("
    " body, tkey, tenant_id UNINDEXED, event_id UNINDEXED, event_type UNINDEXED, entity_type UNINDEXED,"
    " entity_id UNINDEXED, source UNINDEXED, ts_ms UNINDEXED, ts UNINDEXED, outcome UNINDEXED,"
    f" tokenize = '{FTS_TOKENIZER}')"
)
_FTS_INSERT = (
    "INSERT INTO vector_fts (rowid, body, tkey, tenant_id, event_id, event_type, entity_type, entity_id,"
    " source, ts_ms, ts, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def tenant_token(tenant_id: str) -> str:
    """One FTS5 token per tenant (128 bits of its SHA-256), so MATCH itself narrows to the tenant."""
    return "t" + hashlib.sha256(tenant_id.encode()).hexdigest()[:32]


def to_epoch_ms(ts: str) -> int:
    """RFC 3339 -> milliseconds since the epoch (a naive time is taken as UTC)."""
    return int(utc_instant(datetime.fromisoformat(ts)).timestamp() * 1000)


def _filter_sql(f: SearchFilters) -> tuple[list[str], list[Any]]:
    """WHERE clauses of the optional filters; the same column names in the vec0 and the FTS5 table."""
    where: list[str] = []
    args: list[Any] = []
    for column, values in (("event_type", f.event_types), ("entity_type", f.entity_types), ("source", f.sources)):
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
    return where, args


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
    """`VectorIndex` over one SQLite file; calls run in worker threads: writes one at a time on the
    writer connection, the two rankings of a search at the same time on two reader connections."""

    backend = "sqlite"

    def __init__(self, path: str, spec: IndexSpec) -> None:
        self.path = path
        self.spec = spec
        self._db: Any = None
        self._lock = threading.Lock()
        # Two reader connections (WAL: readers do not block each other or the writer), so the KNN scan
        # and the BM25 ranking of one search run in parallel threads; SQLite releases the GIL while
        # it works. An in-memory database cannot be shared between connections: it reads on the writer.
        self._readers: list[tuple[Any, threading.Lock]] = []
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
                meta = dict(db.execute("SELECT key, value FROM vector_meta").fetchall())
                if meta:
                    check_spec(
                        IndexSpec(meta["model_id"], int(meta["dimensions"])), self.spec, f"index {self.path}"
                    )
                    if meta.get("schema_version", "1") == "1":
                        self._migrate_to_fts(db)
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
                    db.execute(self._knn_ddl())
                    db.execute(_FTS_DDL)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                db.close()
                raise
            self._db = db
            self._readers = ([(db, self._lock)] * 2 if self.path == ":memory:"
                             else [(_connect(self.path), threading.Lock()) for _ in range(2)])

    def _knn_ddl(self) -> str:
        # Metadata columns (filterable inside the KNN query) cannot be NULL: '' = none. The stored
        # columns of a hit (event id, time, text, outcome) are read from vector_fts.
        return (
            "CREATE VIRTUAL TABLE vector_knn USING vec0("
            " tenant_id TEXT PARTITION KEY,"
            f" embedding FLOAT[{self.spec.dimensions}] distance_metric=l2,"
            " event_type TEXT, entity_type TEXT, entity_id TEXT, source TEXT, ts_ms INTEGER)"
        )

    def _migrate_to_fts(self, db: Any) -> None:
        """Schema 1 -> 2, in the open transaction: the vectors move to the L2 table (normalised), and the
        keyword table is built from the stored rows (their rendered text; type and status line give the
        outcome). The old cosine table is dropped."""
        db.execute(self._knn_ddl())
        db.execute(
            "INSERT INTO vector_knn (rowid, tenant_id, embedding, event_type, entity_type, entity_id, source, ts_ms)"
            " SELECT rowid, tenant_id, vec_normalize(embedding), event_type, entity_type, entity_id, source, ts_ms"
            " FROM vector_events"
        )
        db.execute(_FTS_DDL)
        rows = db.execute(
            "SELECT rowid, tenant_id, event_id, event_type, entity_type, entity_id, source, ts_ms, ts, summary"
            " FROM vector_events"
        ).fetchall()
        db.executemany(_FTS_INSERT, [
            (r[0], r[9], tenant_token(r[1]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
             stored(outcome_from_text(r[3], r[9])))
            for r in rows
        ])
        db.execute("DROP TABLE vector_events")
        db.execute("UPDATE vector_meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        db.execute("INSERT OR IGNORE INTO vector_meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    def _unit(self, vector: Sequence[float]) -> bytes:
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return self._pack(*(x / norm for x in vector))

    async def close(self) -> None:
        def _close() -> None:
            with self._lock:
                for reader, lock in self._readers:
                    if reader is not self._db:
                        with lock:
                            reader.close()
                self._readers = []
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
                        db.execute("DELETE FROM vector_knn WHERE rowid = ?", (rowid,))
                        db.execute("DELETE FROM vector_fts WHERE rowid = ?", (rowid,))
                    else:
                        rowid = db.execute(
                            "INSERT INTO vector_docs (tenant_id, event_id) VALUES (?, ?) RETURNING rowid",
                            (doc.tenant_id, doc.event_id),
                        ).fetchone()[0]
                    db.execute(
                        "INSERT INTO vector_knn (rowid, tenant_id, embedding, event_type, entity_type, entity_id,"
                        " source, ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (rowid, doc.tenant_id, self._unit(doc.vector), doc.event_type, doc.entity_type or "",
                         doc.entity_id or "", doc.source, to_epoch_ms(doc.timestamp)),
                    )
                    db.execute(_FTS_INSERT, (
                        rowid, doc.text, tenant_token(doc.tenant_id), doc.tenant_id, doc.event_id, doc.event_type,
                        doc.entity_type or "", doc.entity_id or "", doc.source, to_epoch_ms(doc.timestamp),
                        doc.timestamp, stored(doc.outcome),
                    ))
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
                        db.execute("DELETE FROM vector_knn WHERE rowid = ?", (row[0],))
                        db.execute("DELETE FROM vector_fts WHERE rowid = ?", (row[0],))
                        removed += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return removed

    async def purge_before(self, tenant_id: str, before: str) -> int:
        return await asyncio.to_thread(self._purge_before, tenant_id, to_epoch_ms(before))

    def _purge_before(self, tenant_id: str, before_ms: int) -> int:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                # The tenant's token narrows the FTS5 scan to its rows; the stored tenant id is checked too.
                rowids = [r[0] for r in db.execute(
                    "SELECT rowid FROM vector_fts WHERE vector_fts MATCH ? AND tenant_id = ? AND ts_ms < ?",
                    (f'tkey : "{tenant_token(tenant_id)}"', tenant_id, before_ms)).fetchall()]
                for start in range(0, len(rowids), 500):
                    part = rowids[start:start + 500]
                    marks = ", ".join("?" * len(part))
                    for table in ("vector_docs", "vector_knn", "vector_fts"):
                        db.execute(f"DELETE FROM {table} WHERE rowid IN ({marks})", part)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(rowids)

    # -- reads -----------------------------------------------------------------------------

    async def search(
        self, tenant_id: str, query: SearchQuery, k: int, filters: SearchFilters | None = None,
        *, weights: Weights = DEFAULT_WEIGHTS,
    ) -> list[SearchHit]:
        check_query(self.spec, tenant_id, query)
        f = filters or SearchFilters()
        depth = max(k, CANDIDATES)
        rankings: list[str] = []
        work = []
        if query.uses_vector:
            rankings.append("vector")
            work.append(asyncio.to_thread(self._read, 0, self._knn, tenant_id, query.vector, depth, f))
        if query.uses_keywords and query.keywords:
            rankings.append("keyword")
            work.append(asyncio.to_thread(self._read, 1, self._bm25, tenant_id, query.keywords, depth, f))
        ranked = await asyncio.gather(*work)
        candidates: dict[int, Candidate[int]] = {}
        for name, rows in zip(rankings, ranked):
            for rank, row in enumerate(rows, start=1):
                c = candidates.setdefault(row[0], Candidate(row[0]))
                c.ranks[name] = rank
                if name == "vector":  # L2 distance d of unit vectors: cos = 1 - d^2 / 2
                    c.similarity = 1.0 - float(row[1]) ** 2 / 2.0
        details = await asyncio.to_thread(self._read, 1, self._details, list(candidates)) if candidates else {}
        hits: list[SearchHit] = []
        for c in candidates.values():
            c.outcome = details[c.key][9] if c.key in details else None
        for c, score in fuse(candidates.values(), rankings, query.outcomes, weights):
            row = details.get(c.key)
            if row is None or row[0] != tenant_id:  # belt and braces: never another tenant's event
                continue
            hits.append(SearchHit(
                event_id=row[1], tenant_id=row[0], score=score, event_type=row[2], entity_type=row[3] or None,
                entity_id=row[4] or None, source=row[5], timestamp=row[6], summary=row[7],
                outcome=None if row[9] == "none" else row[9], similarity=c.similarity,
            ))
            if len(hits) == k:
                break
        return hits

    def _read(self, reader: int, fn: Any, *args: Any) -> Any:
        if not self._readers:
            raise RuntimeError("index not open: call open() first")
        db, lock = self._readers[reader]
        with lock:
            return fn(db, *args)

    def _knn(self, db: Any, tenant_id: str, vector: Sequence[float] | None, depth: int,
             f: SearchFilters) -> list[tuple[int, float]]:
        where, args = _filter_sql(f)
        where[:0] = ["embedding MATCH ?", "k = ?", "tenant_id = ?"]
        args[:0] = [self._unit(vector or ()), depth, tenant_id]
        sql = "SELECT rowid, distance FROM vector_knn WHERE " + " AND ".join(where) + " ORDER BY distance"
        return db.execute(sql, args).fetchall()

    @staticmethod
    def _bm25(db: Any, tenant_id: str, keywords: str, depth: int, f: SearchFilters) -> list[tuple[int]]:
        """Rowids of the tenant's best BM25 matches. Only rowid and rank are sorted (the stored columns of
        the few winners are read afterwards): sorting whole rows costs more than the ranking itself."""
        match = f'tkey : "{tenant_token(tenant_id)}" AND body : ({keywords})'
        where, args = _filter_sql(f)
        where.insert(0, "vector_fts MATCH ?")
        args.insert(0, match)
        args.append(depth)
        # bm25 weights: the text counts, the tenant token does not.
        sql = ("SELECT rowid FROM vector_fts WHERE " + " AND ".join(where)
               + " ORDER BY bm25(vector_fts, 1.0, 0.0) LIMIT ?")
        return db.execute(sql, args).fetchall()

    @staticmethod
    def _details(db: Any, rowids: list[int]) -> dict[int, tuple[Any, ...]]:
        rows = db.execute(
            "SELECT rowid, tenant_id, event_id, event_type, entity_type, entity_id, source, ts, body, ts_ms, outcome"
            f" FROM vector_fts WHERE rowid IN ({', '.join('?' * len(rowids))})", rowids,
        ).fetchall()
        return {r[0]: r[1:] for r in rows}

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
