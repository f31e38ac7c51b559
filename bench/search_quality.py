"""Search quality and latency on the labelled GRC evaluation set (tests/vector_eval_set.py).

    python -m bench.search_quality [--repeat 3] [--tune] [--scale 20000] [--queries 300]

Indexes the set's 160 events (and another tenant's 12 look-alikes) with the local stack (MiniLM int8,
sqlite-vec, SQLite FTS5), asks its 64 questions in three modes and prints, per split (tuning part,
held-out part, all):

* recall@1, recall@5: share of a question's relevant events in the first 1 / 5 hits, capped at
  what fits (a question with 3 relevant events has recall@1 = 1 when the first hit is one of them),
  averaged over questions;
* MRR@10: 1 / rank of the first relevant hit (0 beyond 10);
* nDCG@10: binary gains, the ideal ranking puts every relevant event first;
* latency of the whole search as the API runs it (question -> keywords, outcome, embedding ->
  index search -> fusion), p50 and p95 over `--repeat` rounds of all questions.

Then ablations (what each part adds) and how the hit `score` separates relevant from irrelevant hits.
`--tune` grid-searches the fusion weights on the tuning questions only and reports the chosen
weights on both parts. `--scale N` adds N filler events (texts varied from the set, random unit
vectors: an exact KNN costs the same whatever the vectors hold) to the same tenant and times
`--queries` hybrid searches: the latency at that size.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.vector_bench import _pct
from shared.vector.base import IndexSpec, SearchHit, SearchQuery, VectorDoc
from shared.vector.fusion import DEFAULT_WEIGHTS, Weights
from shared.vector.indexer import IndexItem, VectorSearchService
from shared.vector.outcome import outcomes_named
from shared.vector.sqlite_index import SqliteVecIndex
from shared.vector.vocabulary import keyword_query
from tests.vector_eval_set import EVENTS, OTHER_EVENTS, OTHER_TENANT, QUESTIONS, TENANT, Question
from tests.vector_support import local_embedder

MODES = ("vector", "keyword", "hybrid")
UNTUNED = Weights(keyword=1.0, vector=1.0, outcome=0.5, k=60)  # where tuning started; its tie-break reference


@dataclass
class Metrics:
    recall1: float
    recall5: float
    mrr10: float
    ndcg10: float
    n: int

    def row(self) -> str:
        return f"{self.recall1:5.3f}  {self.recall5:5.3f}  {self.mrr10:5.3f}  {self.ndcg10:5.3f}"


def judge(ranked: Sequence[str], relevant: Sequence[str]) -> tuple[float, float, float, float]:
    rel = set(relevant)
    r1 = len(rel & set(ranked[:1])) / min(len(rel), 1)
    r5 = len(rel & set(ranked[:5])) / min(len(rel), 5)
    first = next((i for i, e in enumerate(ranked[:10], start=1) if e in rel), None)
    mrr = 1.0 / first if first else 0.0
    dcg = sum(1.0 / math.log2(i + 1) for i, e in enumerate(ranked[:10], start=1) if e in rel)
    idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(rel), 10) + 1))
    return r1, r5, mrr, dcg / idcg


def summarise(results: dict[int, list[str]], questions: Sequence[Question]) -> Metrics:
    rows = [judge(results[q.qid], q.relevant) for q in questions]
    return Metrics(*(statistics.mean(col) for col in zip(*rows)), n=len(rows))


class Eval:
    """The evaluation set indexed once; questions prepared once per mode (the embedding is the costly part)."""

    def __init__(self, service: VectorSearchService) -> None:
        self.service = service
        self.prepared: dict[tuple[int, str], SearchQuery] = {}

    async def prepare(self) -> None:
        for q in QUESTIONS:
            for mode in MODES:
                self.prepared[(q.qid, mode)] = await self.service.prepare_query(q.text, mode)  # type: ignore[arg-type]

    async def run(self, mode: str, weights: Weights = DEFAULT_WEIGHTS,
                  alter: "callable | None" = None) -> dict[int, list[SearchHit]]:
        out = {}
        for q in QUESTIONS:
            query = self.prepared[(q.qid, mode)]
            if alter is not None:
                query = await alter(q, query)
            hits = await self.service.index.search(TENANT, query, 10, weights=weights)  # type: ignore[call-arg]
            assert all(h.tenant_id == TENANT for h in hits), "a search returned another tenant's event"
            out[q.qid] = hits
        return out


def ids(results: dict[int, list[SearchHit]]) -> dict[int, list[str]]:
    return {qid: [h.event_id for h in hits] for qid, hits in results.items()}


def split(name: str) -> list[Question]:
    return [q for q in QUESTIONS if name == "all" or q.split == name]


def table(title: str, rows: list[tuple[str, dict[int, list[str]]]]) -> None:
    print(f"\n{title}")
    print(f"{'':28s} {'split':8s} {'n':>3s}  rec@1  rec@5  MRR10  nDCG10")
    for label, results in rows:
        for part in ("tune", "holdout", "all"):
            m = summarise(results, split(part))
            print(f"{label:28s} {part:8s} {m.n:3d}  {m.row()}")


async def latency(service: VectorSearchService, repeat: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(repeat):
        for q in QUESTIONS:
            for mode in MODES:
                t0 = time.perf_counter()
                await service.search(TENANT, q.text, 10, mode=mode)  # type: ignore[arg-type]
                out[mode].append((time.perf_counter() - t0) * 1000)
    return out


async def build(tmp: Path) -> VectorSearchService:
    emb = local_embedder()
    service = VectorSearchService(emb, SqliteVecIndex(str(tmp / "eval.db"), IndexSpec(emb.model_id, emb.dimensions)))
    await service.index_events(EVENTS + OTHER_EVENTS)
    return service


def score_separation(results: dict[int, list[SearchHit]]) -> None:
    """How well `score` tells relevant from irrelevant hits among the first 10 (all questions)."""
    rel_of = {q.qid: set(q.relevant) for q in QUESTIONS}
    scored = [(h.score, h.event_id in rel_of[qid]) for qid, hits in results.items() for h in hits]
    total_rel = sum(1 for _, r in scored if r)
    print("\nhybrid hit score as a cut-off (first 10 hits of every question):")
    print("  score >=   hits kept   relevant among kept   relevant hits kept")
    for cut in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9):
        kept = [r for s, r in scored if s >= cut]
        precision = sum(kept) / len(kept) if kept else 0.0
        print(f"  {cut:8.2f}   {len(kept):9d}   {precision:19.2f}   {sum(kept) / total_rel:18.2f}")
    rel_scores = [s for s, r in scored if r]
    irr_scores = [s for s, r in scored if not r]
    print(f"  median score of relevant hits {statistics.median(rel_scores):.3f}, "
          f"of irrelevant hits {statistics.median(irr_scores):.3f}")


async def ablations(ev: Eval) -> None:
    no_vocab = Path(tempfile.mkdtemp()) / "empty.txt"
    no_vocab.write_text("")
    emb = ev.service.embedder

    async def raw_vector(q: Question, query: SearchQuery) -> SearchQuery:
        (vector,) = await emb.embed([q.text])
        return replace(query, vector=vector)

    async def before(q: Question, query: SearchQuery) -> SearchQuery:  # the search before hybrid (texts aside)
        (vector,) = await emb.embed([q.text])
        return replace(query, vector=vector, outcomes=frozenset())

    async def plain_keywords(q: Question, query: SearchQuery) -> SearchQuery:
        return replace(query, keywords=keyword_query(q.text, no_vocab).fts5())

    async def no_outcome(q: Question, query: SearchQuery) -> SearchQuery:
        return replace(query, outcomes=frozenset())

    async def no_vocabulary(q: Question, query: SearchQuery) -> SearchQuery:
        (vector,) = await emb.embed([q.text])
        return replace(query, vector=vector, keywords=keyword_query(q.text, no_vocab).fts5())

    rows = [
        ("vector, as typed, no boost", ids(await ev.run("vector", alter=before))),
        ("vector, question as typed", ids(await ev.run("vector", alter=raw_vector))),
        ("keyword, no vocabulary", ids(await ev.run("keyword", alter=plain_keywords))),
        ("hybrid, no outcome boost", ids(await ev.run("hybrid", alter=no_outcome))),
        ("hybrid, no vocabulary", ids(await ev.run("hybrid", alter=no_vocabulary))),
        ("hybrid (all parts)", ids(await ev.run("hybrid"))),
    ]
    table("ablations (what each part adds)", rows)


async def tune(ev: Eval) -> Weights:
    """Grid search of the fusion weights on the tuning questions only (objective: MRR@10 + recall@5);
    of the weight sets that reach the best objective, the one nearest the untuned start is chosen."""
    tune_qs = split("tune")
    grid: list[tuple[float, Weights]] = []
    for vec_w, out_w, k in itertools.product((0.25, 0.5, 0.75, 1.0, 1.5, 2.0), (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
                                             (20, 60)):
        w = Weights(keyword=1.0, vector=vec_w, outcome=out_w, k=k)
        m = summarise(ids(await ev.run("hybrid", w)), tune_qs)
        grid.append((m.mrr10 + m.recall5, w))
    top = max(g[0] for g in grid)
    plateau = [w for objective, w in grid if objective >= top - 1e-9]

    def distance(w: Weights) -> float:  # ties go to the weights nearest the untuned defaults
        d = UNTUNED
        return abs(math.log(w.vector / d.vector)) + abs(w.outcome - d.outcome) + abs(math.log(w.k / d.k))

    best = (top, min(plateau, key=distance))
    print(f"\ntuned on {len(tune_qs)} tuning questions (objective MRR@10 + recall@5 = {top:.3f}, reached by "
          f"{len(plateau)} of {len(grid)} weight sets): " + "; ".join(
              f"vector {w.vector} outcome {w.outcome} K {w.k}" for w in plateau))
    print(f"nearest the untuned start: {best[1]} "
          f"({'the weights shipped' if best[1] == DEFAULT_WEIGHTS else 'NOT the weights shipped: ' + str(DEFAULT_WEIGHTS)})")
    table("untuned start vs chosen weights (vector / outcome / K)", [
        (f"hybrid, untuned {UNTUNED.vector}/{UNTUNED.outcome}/{UNTUNED.k}", ids(await ev.run("hybrid", UNTUNED))),
        (f"hybrid, tuned {best[1].vector}/{best[1].outcome}/{best[1].k}", ids(await ev.run("hybrid", best[1]))),
    ])
    return best[1]


WORDS = ("vendor supplier access review quarterly failed passed overdue control test backup restore policy "
         "exception audit finding privileged account encryption laptop incident change approval release "
         "risk assessment data privacy consent retention payroll invoice treasury network firewall patch "
         "server cloud region contract clause training awareness model validation sanctions screening").split()


async def scale(service: VectorSearchService, n: int, queries: int) -> None:
    """Latency of hybrid searches with N more events in the tenant (filler texts, random vectors)."""
    rnd = random.Random(7)
    rng = np.random.default_rng(1)
    emb = service.embedder
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        count = min(2000, n - start)
        m = rng.standard_normal((count, emb.dimensions)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        docs = []
        for i in range(count):
            base = EVENTS[(start + i) % len(EVENTS)]
            item = IndexItem.from_event(base)
            filler = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 40)))
            docs.append(VectorDoc(
                event_id=f"fill-{start + i}", tenant_id=TENANT, event_type=item.eventType, source=item.source,
                timestamp=item.timestamp, text=f"{item.text}\nNotes: {filler} {start + i}.", vector=m[i].tolist(),
                model_id=emb.model_id, entity_type=item.entityType, entity_id=f"F-{start + i}",
                outcome=item.effective_outcome()))
        await service.index.upsert(docs)
    total = await service.index.count(TENANT)  # type: ignore[attr-defined]
    print(f"\nscale: {total} events in tenant {TENANT} (indexed in {time.perf_counter() - t0:.0f} s)")
    texts = [q.text for q in QUESTIONS]
    for mode in MODES:
        ms, index_ms = [], []
        for i in range(queries):
            text = texts[i % len(texts)]
            t0 = time.perf_counter()
            query = await service.prepare_query(text, mode)  # type: ignore[arg-type]
            t1 = time.perf_counter()
            await service.index.search(TENANT, query, 10)
            t2 = time.perf_counter()
            ms.append((t2 - t0) * 1000)
            index_ms.append((t2 - t1) * 1000)
        print(f"  {mode:8s} k=10, {queries} searches: whole search p50 {statistics.median(ms):.1f} ms, "
              f"p95 {_pct(ms, 95):.1f} ms; index part p50 {statistics.median(index_ms):.1f} ms, "
              f"p95 {_pct(index_ms, 95):.1f} ms")


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        service = await build(Path(tmp))
        print(f"indexed {len(EVENTS)} events of {TENANT} and {len(OTHER_EVENTS)} of {OTHER_TENANT} "
              f"in {time.perf_counter() - t0:.1f} s; {len(QUESTIONS)} questions "
              f"({len(split('tune'))} tuning, {len(split('holdout'))} held out), "
              f"{sum(1 for q in QUESTIONS if outcomes_named(q.text))} naming an outcome")
        ev = Eval(service)
        await ev.prepare()
        results = {mode: await ev.run(mode) for mode in MODES}
        table("quality (k=10)", [(f"{mode}-only" if mode != "hybrid" else "hybrid", ids(results[mode]))
                                 for mode in MODES])
        lat = await latency(service, args.repeat)
        print(f"\nlatency, whole search as the API runs it, {args.repeat} x {len(QUESTIONS)} questions, "
              f"{len(EVENTS) + len(OTHER_EVENTS)} events indexed:")
        for mode in MODES:
            print(f"  {mode:8s} p50 {statistics.median(lat[mode]):6.1f} ms   p95 {_pct(lat[mode], 95):6.1f} ms")
        score_separation(results["hybrid"])
        if args.ablations:
            await ablations(ev)
        if args.tune:
            await tune(ev)
        if args.show_misses:
            for q in QUESTIONS:
                got = [h.event_id for h in results["hybrid"][q.qid]]
                if not set(q.relevant) & set(got[:1]) or not set(q.relevant[:5]) <= set(got[:5]):
                    print(f"  q{q.qid} [{q.split}] {q.text!r}: want {q.relevant}, got {got[:5]}")
        if args.scale:
            await scale(service, args.scale, args.queries)
        await service.close()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="latency rounds over all questions")
    ap.add_argument("--ablations", action="store_true", help="also print what each part adds")
    ap.add_argument("--tune", action="store_true", help="grid-search the fusion weights on the tuning part")
    ap.add_argument("--show-misses", action="store_true", help="list questions whose first hybrid hit is wrong")
    ap.add_argument("--scale", type=int, default=0, help="then add this many filler events and time searches")
    ap.add_argument("--queries", type=int, default=300, help="searches timed per mode at --scale")
    asyncio.run(main(ap.parse_args()))
