"""shared.observability.anomaly on synthetic per-minute series (seeded, so every run sees the same numbers)."""
from __future__ import annotations

import json
import math
import random

import pytest

from shared.observability.anomaly import (
    ERROR_RATE,
    EVENT_RATE,
    DetectorConfig,
    EwmaState,
    TenantBaselines,
    observe,
    observe_error_rate,
)


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth for small lambda, normal approximation above (good enough for a test series)
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _run(series: list[float], cfg: DetectorConfig = EVENT_RATE) -> tuple[EwmaState, list[int]]:
    state, hits = EwmaState(), []
    for i, x in enumerate(series):
        state, anomaly = observe(state, x, cfg)
        if anomaly:
            hits.append(i)
    return state, hits


def test_steady_series_has_no_anomaly() -> None:
    rng = random.Random(1)
    series = [float(_poisson(rng, 200)) for _ in range(600)]  # 10 h of minutes around 200/min
    state, hits = _run(series)
    assert hits == []
    assert abs(state.mean - 200) < 15


def test_spike_is_flagged_at_the_spike_only() -> None:
    rng = random.Random(2)
    series = [float(_poisson(rng, 100)) for _ in range(120)]
    series[80] = 400.0
    _, hits = _run(series)
    assert hits == [80]


def test_collapse_is_flagged_as_a_drop() -> None:
    rng = random.Random(3)
    state = EwmaState()
    for _ in range(60):
        state, a = observe(state, float(_poisson(rng, 300)), EVENT_RATE)
        assert a is None
    state, a = observe(state, 0.0, EVENT_RATE)
    assert a is not None and a.direction == "down" and a.z <= -4 and a.value == 0.0


def test_slow_drift_is_not_an_anomaly() -> None:
    rng = random.Random(4)
    # 100/min growing to 460/min over 12 h: +0.5 per minute
    series = [float(_poisson(rng, 100 + 0.5 * i)) for i in range(720)]
    state, hits = _run(series)
    assert hits == []
    assert abs(state.mean - 460) < 30  # the baseline followed the drift


def test_warmup_is_respected() -> None:
    cfg = DetectorConfig(warmup=10, min_abs_change=5, poisson_floor=True)
    series = [50.0, 52, 49, 51, 50, 48, 1000, 50, 51, 49]  # a huge value inside the warm-up
    state, hits = _run(series, cfg)
    assert hits == [] and state.count == 10
    state, a = observe(state, 5000.0, cfg)  # same kind of value right after warm-up is flagged
    assert a is not None and a.direction == "up"


def test_min_abs_change_suppresses_tiny_tenants() -> None:
    # a quiet tenant: 0-1 events a minute, then 6. z is large-ish but the change is tiny
    series = [0.0, 1.0] * 30 + [6.0]
    _, hits = _run(series)
    assert hits == []
    _, hits = _run(series, DetectorConfig(min_abs_change=0, min_std=0.1))
    assert hits == [60]  # without the guards it would have fired


def test_error_rate_jump_is_detected_and_low_volume_ignored() -> None:
    rng = random.Random(5)
    state = EwmaState()
    for _ in range(60):  # ~1 % failures at 500 events/min
        total = 500
        state, a = observe_error_rate(state, sum(rng.random() < 0.01 for _ in range(total)), total)
        assert a is None
    before = state
    state, a = observe_error_rate(state, 3, 5)  # 60 % of 5 events: too few to judge
    assert a is None and state == before
    state, a = observe_error_rate(state, 60, 500)  # 12 %
    assert a is not None and a.signal == "error_rate" and a.direction == "up"
    assert a.value == pytest.approx(0.12) and a.baseline < 0.03
    # a drop to 0 % failures is good news, not an anomaly
    _, a = observe_error_rate(before, 0, 500)
    assert a is None


def test_level_shift_is_absorbed() -> None:
    rng = random.Random(6)
    series = [float(_poisson(rng, 100)) for _ in range(60)] + [float(_poisson(rng, 300)) for _ in range(120)]
    _, hits = _run(series)
    assert hits and hits[0] == 60
    assert max(hits) < 60 + 30  # a lasting new level stops alerting within half an hour
    assert all(h >= 60 for h in hits)


def test_state_round_trips_through_json() -> None:
    rng = random.Random(7)
    live = TenantBaselines()
    restored = TenantBaselines()
    for _ in range(40):
        accepted = _poisson(rng, 150)
        failed = _poisson(rng, 2)
        a = live.observe_interval(accepted, failed)
        # another instance continuing from what was stored in Redis finds the same
        b = restored.observe_interval(accepted, failed)
        assert a == b
        restored = TenantBaselines.from_dict(json.loads(json.dumps(restored.to_dict())))
    assert restored.to_dict() == live.to_dict()
    hits = live.observe_interval(1500, 400)
    assert {h.signal for h in hits} == {"event_rate", "error_rate"}
    assert json.loads(json.dumps([h.to_dict() for h in hits]))[0]["signal"] in {"event_rate", "error_rate"}


def test_bad_config_and_values() -> None:
    with pytest.raises(ValueError):
        DetectorConfig(alpha=1.5)
    state = EwmaState(mean=10, var=4, count=100)
    assert observe(state, float("nan"), EVENT_RATE) == (state, None)
    assert EwmaState.from_dict(None) == EwmaState()
    assert ERROR_RATE.directions == frozenset({"up"})
