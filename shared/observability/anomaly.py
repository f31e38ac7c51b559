"""DATA_ANOMALY detection: a tenant's event rate or error rate departs from its own recent baseline.

Method (pure functions, state is a small serialisable record so every instance can share it in Redis):

* One observation per tenant, per signal, per interval (the caller's timer: one per minute).
  Signals: `event_rate` = events accepted in the interval; `error_rate` = failed / total in the
  interval (skipped when the interval saw fewer than `min_events` events: 1 failure out of 2 says
  nothing).
* Baseline = exponentially weighted moving mean and variance (EWMA, smoothing `alpha`; weight of an
  observation k steps old is alpha*(1-alpha)^k, so the effective memory is about 2/alpha - 1 intervals).
  Update (West 1979 / Finch 2009 incremental form):
      d = x - mean;  mean += alpha*d;  var = (1-alpha) * (var + alpha*d*d)
* Score z = (x - mean) / std, with std floored at `min_std` and, for counts, at sqrt(mean) (the
  Poisson noise of a count: a quiet tenant going from 2 to 6 events is not a z of 40).
* Anomaly when all hold: at least `warmup` observations seen; |z| >= `threshold`; |x - mean| >=
  `min_abs_change`; the direction is one the signal watches (error rate: only up).
* An anomalous observation updates the baseline only after being clipped to mean +/- threshold*std,
  so one spike neither drags the mean nor inflates the variance (the next normal point stays normal),
  while a lasting level shift is still absorbed over a few intervals (after which it stops alerting).
* Slow drift is tracked by the mean (lag ~ slope*(1-alpha)/alpha), so it does not alert.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

__all__ = [
    "Anomaly",
    "DetectorConfig",
    "ERROR_RATE",
    "EVENT_RATE",
    "EwmaState",
    "TenantBaselines",
    "observe",
    "observe_error_rate",
]

Direction = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    alpha: float = 0.1
    warmup: int = 15
    threshold: float = 4.0
    min_abs_change: float = 0.0
    min_std: float = 0.0
    poisson_floor: bool = False
    directions: frozenset[Direction] = frozenset({"up", "down"})
    min_events: int = 0  # error rate only

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if self.threshold <= 0 or self.warmup < 1:
            raise ValueError("threshold must be > 0 and warmup >= 1")


# Events per interval: a jump or a collapse of at least 20 events and 4 sigma.
EVENT_RATE = DetectorConfig(min_abs_change=20.0, min_std=1.0, poisson_floor=True)
# Failed fraction: up only, at least 5 percentage points (the alert threshold of the service),
# judged only on intervals with 20+ events.
ERROR_RATE = DetectorConfig(min_abs_change=0.05, min_std=0.01, directions=frozenset({"up"}), min_events=20)


@dataclass(frozen=True, slots=True)
class EwmaState:
    mean: float = 0.0
    var: float = 0.0
    count: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "EwmaState":
        if not d:
            return cls()
        return cls(float(d.get("mean", 0.0)), max(0.0, float(d.get("var", 0.0))), int(d.get("count", 0)))


@dataclass(frozen=True, slots=True)
class Anomaly:
    signal: str
    value: float
    baseline: float
    std: float
    z: float
    direction: Direction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _std(state: EwmaState, cfg: DetectorConfig) -> float:
    std = math.sqrt(state.var)
    if cfg.poisson_floor:
        std = max(std, math.sqrt(max(state.mean, 0.0)))
    return max(std, cfg.min_std, 1e-12)


def _update(state: EwmaState, x: float, alpha: float) -> EwmaState:
    if state.count == 0:
        return EwmaState(x, 0.0, 1)
    d = x - state.mean
    return EwmaState(state.mean + alpha * d, (1 - alpha) * (state.var + alpha * d * d), state.count + 1)


def observe(state: EwmaState, x: float, cfg: DetectorConfig, signal: str = "event_rate") -> tuple[EwmaState, Anomaly | None]:
    """Score `x` against the baseline, then fold it in. Returns (new state, anomaly or None)."""
    if not math.isfinite(x):
        return state, None
    if state.count < cfg.warmup:
        return _update(state, x, cfg.alpha), None
    std = _std(state, cfg)
    d = x - state.mean
    z = d / std
    direction: Direction = "up" if d > 0 else "down"
    hit = abs(z) >= cfg.threshold and abs(d) >= cfg.min_abs_change and direction in cfg.directions
    if abs(z) >= cfg.threshold:  # clip outliers (flagged or not) before they shape the baseline
        x = state.mean + math.copysign(cfg.threshold * std, d)
    new = _update(state, x, cfg.alpha)
    return new, (Anomaly(signal, state.mean + d, state.mean, std, z, direction) if hit else None)


def observe_error_rate(state: EwmaState, errors: int, total: int,
                       cfg: DetectorConfig = ERROR_RATE) -> tuple[EwmaState, Anomaly | None]:
    """The error-rate signal: intervals with fewer than `cfg.min_events` events leave the state as is."""
    if total <= 0 or total < cfg.min_events:
        return state, None
    return observe(state, errors / total, cfg, "error_rate")


@dataclass(slots=True)
class TenantBaselines:
    """All signals of one tenant; `to_dict`/`from_dict` is the shape to keep in Redis (one JSON value
    per tenant, e.g. key `grc:{tenant}:anomaly`, written back after each observation)."""

    event_rate: EwmaState = field(default_factory=EwmaState)
    error_rate: EwmaState = field(default_factory=EwmaState)

    def observe_interval(self, accepted: int, failed: int,
                         rate_cfg: DetectorConfig = EVENT_RATE,
                         error_cfg: DetectorConfig = ERROR_RATE) -> list[Anomaly]:
        """Fold in one interval's counts (accepted includes failed); returns the anomalies found."""
        self.event_rate, a = observe(self.event_rate, float(accepted), rate_cfg, "event_rate")
        self.error_rate, b = observe_error_rate(self.error_rate, failed, accepted, error_cfg)
        return [x for x in (a, b) if x is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"event_rate": self.event_rate.to_dict(), "error_rate": self.error_rate.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "TenantBaselines":
        d = d or {}
        return cls(EwmaState.from_dict(d.get("event_rate")), EwmaState.from_dict(d.get("error_rate")))
