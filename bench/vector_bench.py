"""Vector search figures on this machine: embedding rate and search latency (local stack).

    python -m bench.vector_bench [--texts 2000] [--vectors 20000] [--queries 200] [--enqueue 50]

Embedding: LocalMiniLM over rendered GRC events (the corpus, varied). Search: SqliteVecIndex with
`--vectors` documents in one tenant (the worst case: the partition holds them all); most are
random unit vectors (exact KNN costs the same whatever the vectors hold) plus the real corpus;
queries are real embedded questions, vector ranking only (`python -m bench.search_quality --scale`
times hybrid searches). Reports search-only and embed+search latency. `--enqueue N`
also starts Azurite and times the vector destination's publish (render + enqueue) of N batches of
100 events: the whole cost the destination adds to publishing.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.destinations.base import publish_one
from shared.vector.base import IndexSpec, SearchQuery, VectorDoc
from shared.vector.indexer import IndexItem
from shared.vector.sqlite_index import SqliteVecIndex
from tests.vector_corpus import CORPUS, QUERIES
from tests.vector_support import local_embedder

WORDS = "vendor access review failed stale accounts ransomware backup restore encryption audit policy".split()


def _texts(n: int) -> list[str]:
    rnd = random.Random(7)
    out = []
    for i in range(n):
        ev = dict(CORPUS[i % len(CORPUS)])
        data = dict(ev["data"])
        data["notes"] = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 40)))
        ev["data"] = data
        out.append(IndexItem.from_event(ev).text)
    return out


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


async def main(texts: int, vectors: int, queries: int) -> None:
    emb = local_embedder()
    batch = _texts(texts)
    await emb.embed(batch[:64])  # warm up
    t0 = time.perf_counter()
    await emb.embed(batch)
    dt = time.perf_counter() - t0
    chars = statistics.mean(len(t) for t in batch)
    print(f"embedding: {texts} texts (mean {chars:.0f} chars) in {dt:.2f} s = {texts / dt:.0f} texts/s")

    with tempfile.TemporaryDirectory() as tmp:
        idx = SqliteVecIndex(str(Path(tmp) / "bench.db"), IndexSpec(emb.model_id, emb.dimensions))
        await idx.open()
        rng = np.random.default_rng(1)
        t0 = time.perf_counter()
        for start in range(0, vectors, 5000):
            n = min(5000, vectors - start)
            m = rng.standard_normal((n, emb.dimensions)).astype(np.float32)
            m /= np.linalg.norm(m, axis=1, keepdims=True)
            await idx.upsert([
                VectorDoc(event_id=f"r{start + i}", tenant_id="bench", event_type="RISK_UPDATED",
                          source="ARCHER_GRC", timestamp="2026-10-01T00:00:00Z", text="random", vector=v.tolist(),
                          model_id=emb.model_id, entity_type="risk", entity_id=f"R-{start + i}")
                for i, v in enumerate(m)
            ])
        corpus_vecs = await emb.embed([IndexItem.from_event(e).text for e in CORPUS])
        await idx.upsert([
            VectorDoc(event_id=e["eventId"], tenant_id="bench", event_type=e["eventType"], source=e["source"],
                      timestamp=e["timestamp"], text="c", vector=v, model_id=emb.model_id)
            for e, v in zip(CORPUS, corpus_vecs)
        ])
        print(f"index: {vectors + len(CORPUS)} vectors upserted in {time.perf_counter() - t0:.1f} s")
        qtexts = [q for _, q, _ in QUERIES]
        search_ms, total_ms = [], []
        for i in range(queries):
            t0 = time.perf_counter()
            (qv,) = await emb.embed([qtexts[i % len(qtexts)]])
            t1 = time.perf_counter()
            await idx.search("bench", SearchQuery.by_vector(qv, emb.model_id), 10)
            t2 = time.perf_counter()
            search_ms.append((t2 - t1) * 1000)
            total_ms.append((t2 - t0) * 1000)
        print(f"search k=10 over {vectors + len(CORPUS)} vectors, {queries} queries: "
              f"median {statistics.median(search_ms):.1f} ms, p95 {_pct(search_ms, 95):.1f} ms; "
              f"embed+search median {statistics.median(total_ms):.1f} ms, p95 {_pct(total_ms, 95):.1f} ms")
        await idx.close()


async def enqueue_bench(batches: int) -> None:
    from localdev import services
    from shared.core.events import Event
    from shared.core.settings import Settings
    from shared.core.streamconfig import StreamConfig
    from shared.destinations.vector import VectorQueueDestination

    with tempfile.TemporaryDirectory() as tmp:
        azurite = services.start("azurite", Path(tmp))
        try:
            settings = Settings.from_env({"STORAGE_CONNECTION_STRING": azurite.settings["STORAGE_CONNECTION_STRING"],
                                          "VECTOR_QUEUE": "bench-vectors"})
            dest = VectorQueueDestination(settings)
            events = [Event.model_validate({**CORPUS[i % len(CORPUS)], "eventId": f"e{i}"}) for i in range(100)]
            stream = StreamConfig.default("acme-bank")
            await publish_one(dest, events[:1], None, stream)  # type: ignore[arg-type]  # queue created, warm
            ms = []
            for _ in range(batches):
                t0 = time.perf_counter()
                await publish_one(dest, events, None, stream)  # type: ignore[arg-type]
                ms.append((time.perf_counter() - t0) * 1000)
            print(f"vector destination publish, 100 events (render + enqueue to Azurite), {batches} batches: "
                  f"median {statistics.median(ms):.1f} ms, p95 {_pct(ms, 95):.1f} ms; "
                  f"backlog {await dest.backlog()} messages")
            await dest.close()
        finally:
            services.stop(azurite.proc)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--vectors", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--enqueue", type=int, default=0)
    a = ap.parse_args()
    asyncio.run(main(a.texts, a.vectors, a.queries))
    if a.enqueue:
        asyncio.run(enqueue_bench(a.enqueue))
