"""Reciprocal rank fusion (RRF) of a keyword and a vector ranking, the outcome boost, and the hit score.

    fused(d)  = Σ_list  w_list / (K + rank_list(d))          rank from 1; a list that missed d adds 0
              + w_outcome / (K + 1)   if the question names an outcome and d has it
    score(d)  = fused(d) / fused_max,  fused_max = (Σ_used w_list + w_outcome·[outcome named]) / (K + 1)

So `score` is in (0, 1]: 1.0 = first in every ranking used (and of the outcome asked for); with the
default weights a hit only the keyword ranking found scores at most 0.67, one only the vector ranking
found at most 0.33. K = 60 is the constant Azure AI Search's
hybrid RRF uses (not configurable there), kept here so a score reads the same on both backends; the
weights are the ones `python -m bench.search_quality --tune` chose on the tuning questions
(docs/vector-search.md). The outcome boost counts like a first place in one more ranking in which
every event with the asked-for outcome shares first place, scaled by its weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Hashable, Iterable, Sequence, TypeVar

RRF_K = 60
CANDIDATES = 50  # each ranking contributes its best CANDIDATES (at least k) to the fusion

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Weights:
    # Chosen by `python -m bench.search_quality --tune` on the evaluation set's tuning questions only
    # (from the untuned 1 / 1 / 0.5): the keyword ranking counts twice the vector ranking.
    keyword: float = 1.0
    vector: float = 0.5
    outcome: float = 0.5
    k: int = RRF_K

    def of(self, ranking: str) -> float:
        return {"keyword": self.keyword, "vector": self.vector}[ranking]


DEFAULT_WEIGHTS = Weights()


@dataclass
class Candidate(Generic[Key]):
    """One document as the rankings saw it."""

    key: Key
    ranks: dict[str, int] = field(default_factory=dict)  # ranking name -> 1-based rank
    outcome: str | None = None
    similarity: float | None = None


def full_score(rankings: Iterable[str], outcomes: frozenset[str], w: Weights = DEFAULT_WEIGHTS) -> float:
    """The fused value of a document first in every ranking used (and of the asked-for outcome)."""
    return (sum(w.of(r) for r in rankings) + (w.outcome if outcomes else 0.0)) / (w.k + 1)


def outcome_bonus(outcome: str | None, outcomes: frozenset[str], w: Weights = DEFAULT_WEIGHTS) -> float:
    return w.outcome / (w.k + 1) if outcomes and outcome in outcomes else 0.0


def fuse(candidates: Iterable[Candidate[Key]], rankings: Sequence[str], outcomes: frozenset[str],
         w: Weights = DEFAULT_WEIGHTS) -> list[tuple[Candidate[Key], float]]:
    """Candidates with their normalised score, best first (ties: better best rank, then first seen)."""
    full = full_score(rankings, outcomes, w)
    scored = []
    for order, c in enumerate(candidates):
        fused = sum(w.of(name) / (w.k + rank) for name, rank in c.ranks.items() if name in rankings)
        fused += outcome_bonus(c.outcome, outcomes, w)
        scored.append((fused / full if full else 0.0, min(c.ranks.values(), default=1 << 30), order, c))
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    return [(c, score) for score, _, _, c in scored]


def rescore(fused: float, outcome: str | None, rankings: Sequence[str], outcomes: frozenset[str],
            w: Weights = DEFAULT_WEIGHTS) -> float:
    """A fused value computed elsewhere (Azure AI Search's own RRF `@search.score`) plus the outcome
    boost, normalised like `fuse` does."""
    full = full_score(rankings, outcomes, w)
    return (fused + outcome_bonus(outcome, outcomes, w)) / full if full else 0.0


def rank_value(rank: int, ranking: str, w: Weights = DEFAULT_WEIGHTS) -> float:
    """What a single ranking contributes at a 1-based rank: w / (K + rank)."""
    return w.of(ranking) / (w.k + rank)
