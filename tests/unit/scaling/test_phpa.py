"""PHPA baseline: each rule of jthomperoo/predictive-horizontal-pod-autoscaler's Holt-Winters
model (``processModels``, ``holtwinters.go``, ``holt_winters.py``), pinned against
statsmodels as PHPA calls it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from phpa_reference import DAY, P, phpa_fit

from autoscaler.core.baselines import PhpaAutoscaler
from autoscaler.core.baselines import phpa as phpa_mod
from autoscaler.core.baselines.phpa import Smoothing
from autoscaler.core.decision import Decision
from autoscaler.core.observation import DemandView
from autoscaler.core.scenario import MAX_REPLICAS
from autoscaler.core.settings import Behavior, RateRule, ScalingRules
from autoscaler.core.signals import PodCounts, Signals

EMPTY = DemandView(0.0, 5.0, np.zeros(0))


def _phpa_prediction(y: Any, m: int, p: Smoothing) -> int:
    """What holt_winters.py prints: ``math.ceil(forecast(steps=1)[0])``."""
    return math.ceil(float(phpa_fit(y, m, p).forecast(steps=1)[0]))


def _drive(p: PhpaAutoscaler, counts: list[int], start: int = 0) -> list[Decision]:
    """One sync per count: the Deployment is at that count and the metric exactly at target,
    so the HPA's count is that count."""
    out = []
    for i, c in enumerate(counts):
        pods = PodCounts(active=c, desired=c)
        sig = Signals(now_s=15.0 * (start + i), demand_rps=c * p.target_rps, pods=pods)
        out.append(p.decide(sig, EMPTY))
    return out


#: no stabilization and no rate limit: the decision is the raw recommendation
FREE = Behavior(
    scale_up=ScalingRules(0.0, (RateRule("Percent", 10_000, 15.0),)),
    scale_down=ScalingRules(0.0, (RateRule("Percent", 100, 15.0),)),
)


def test_policy_predicts_statsmodels_one_step_forecast_on_a_real_series(
    hpa_replicas_servegen: list[int],
) -> None:
    replicas = hpa_replicas_servegen
    p = PhpaAutoscaler(10.0, season_length=DAY, smoothing=P, max_replicas=MAX_REPLICAS)
    n0 = 2 * DAY - 1
    _drive(p, replicas[:n0])
    d = _drive(p, replicas[n0:n0 + 200], start=n0)
    for k in (0, 1, 57, 199):
        y = replicas[:n0 + k + 1]
        assert d[k].components["predicted"] == _phpa_prediction(y, DAY, P), k


def test_horizon_is_one_sync() -> None:
    # a spike every 6 syncs: one sync ahead is calm, 8 syncs (the old 120 s) ahead is not
    counts = [2, 2, 2, 2, 2, 20] * 3 + [2, 2, 2, 2]
    p = PhpaAutoscaler(10.0, season_length=6, smoothing=P, behavior=FREE)
    d = _drive(p, counts)[-1]
    ahead = phpa_fit(counts, 6, P).forecast(steps=8)
    assert math.ceil(ahead[-1]) > 10 > math.ceil(ahead[0])  # the two horizons differ
    assert d.components["predicted"] == math.ceil(ahead[0])
    assert d.total == max(2, math.ceil(ahead[0])) < 10


def test_prediction_is_rounded_up() -> None:
    counts = [3, 4, 5, 3, 4, 6, 3, 5, 6, 4, 5, 7, 4, 6]  # m = 3: needs 12 values
    p = PhpaAutoscaler(10.0, season_length=3, stored_seasons=5, smoothing=P, behavior=FREE)
    for k, d in enumerate(_drive(p, counts)[11:], start=12):
        f = phpa_fit(counts[:k], 3, P).forecast(steps=1)[0]
        assert f != math.floor(f) and d.components["predicted"] == math.ceil(f)


@pytest.mark.parametrize(("m", "needed"), [(3, 12), (8, 18), (24, 48)])
def test_model_runs_from_two_seasons_and_ten_smoothed_values(m: int, needed: int) -> None:
    # holtwinters.go: fewer than 2 * m or 10 + 2 * (m // 2) stored values -> prediction 0
    counts = [3 + (i % m == 0) * 5 for i in range(needed + 2)]
    p = PhpaAutoscaler(10.0, season_length=m, smoothing=P, behavior=FREE)
    d = _drive(p, counts)
    before = d[:needed - 1]
    assert all("alpha" not in x.components and x.components["predicted"] == 0 for x in before)
    assert all(x.total == c for x, c in zip(before, counts, strict=False))  # the HPA alone
    assert "alpha" in d[needed - 1].components
    assert d[needed - 1].components["predicted"] == _phpa_prediction(counts[:needed], m, P)


def test_decision_is_the_maximum_of_the_hpa_and_the_prediction() -> None:
    counts = [3, 3, 3, 12] * 6
    p = PhpaAutoscaler(10.0, season_length=4, smoothing=Smoothing(0.2, 0.05, 0.5), behavior=FREE)
    d = _drive(p, counts)[13:]  # the model runs from 14 values (10 + 2 * (4 // 2))
    hpa = [int(x.components["hpa"]) for x in d]
    pred = [int(x.components["predicted"]) for x in d]
    assert [x.total for x in d] == [max(h, q) for h, q in zip(hpa, pred, strict=True)]
    assert any(q > h for h, q in zip(hpa, pred, strict=True))  # before each spike
    assert any(q < h for h, q in zip(hpa, pred, strict=True))  # at each spike


def test_parameters_stay_fixed_between_tunings(monkeypatch: pytest.MonkeyPatch) -> None:
    tuned: list[int] = []

    def tune(y: Any, m: int) -> Smoothing:
        tuned.append(len(y))
        return Smoothing(0.1 * len(tuned), 0.05, 0.2)

    monkeypatch.setattr(phpa_mod, "tune_add_add", tune)
    m, counts = 4, [3, 5, 4, 9] * 8
    p = PhpaAutoscaler(10.0, season_length=4, tune_every=5, stored_seasons=10, behavior=FREE)
    d = _drive(p, counts)[13:]  # the model runs from 14 values (10 + 2 * (4 // 2))
    assert tuned == [14, 19, 24, 29]
    alphas = [round(float(x.components["alpha"]), 6) for x in d]
    assert alphas == [0.1] * 5 + [0.2] * 5 + [0.3] * 5 + [0.4] * 4
    for k, x in enumerate(d, start=14):
        q = Smoothing(float(x.components["alpha"]), 0.05, 0.2)
        assert x.components["predicted"] == _phpa_prediction(counts[:k], m, q), k


def test_given_parameters_are_never_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    def tune(y: Any, m: int) -> Smoothing:
        raise AssertionError("tuned although the spec gives alpha, beta and gamma")

    monkeypatch.setattr(phpa_mod, "tune_add_add", tune)
    p = PhpaAutoscaler(10.0, season_length=4, smoothing=P)
    d = _drive(p, [3, 5, 4, 9] * 5)
    assert d[-1].components["alpha"] == P.alpha


def test_history_is_pruned_by_whole_seasons_after_predicting() -> None:
    # PruneHistory: len // m - storedSeasons whole seasons go, so 12..15 values stay (m 4,
    # S 3); the model (14 values needed) sees the 16th value before the prune
    counts = [3 + (i % 4) * 2 + i // 4 for i in range(24)]
    p = PhpaAutoscaler(10.0, season_length=4, stored_seasons=3, smoothing=P, behavior=FREE)
    lens, ran, start = [], [], 0
    for i, c in enumerate(counts):
        window = counts[start:i + 1]
        d = _drive(p, [c], start=i)[0]
        lens.append(len(p.history))
        ran.append(len(window))
        if len(window) >= 14:
            assert d.components["predicted"] == _phpa_prediction(window, 4, P), i
        else:
            assert d.components["predicted"] == 0 and "alpha" not in d.components
        start = p.dropped
    assert lens == [*range(1, 16), 12, 13, 14, 15, 12, 13, 14, 15, 12]
    assert ran[15] == 16 and ran[19] == 16 and p.dropped == 12
    assert p.history == [float(c) for c in counts[-12:]]


def test_every_sync_equals_a_fresh_statsmodels_fit_across_tunings_and_prunes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = [Smoothing(0.3, 0.1, 0.2), Smoothing(0.3, 0.1, 0.2), Smoothing(0.6, 0.0, 0.4)]
    calls: list[int] = []

    def tune(y: Any, m: int) -> Smoothing:
        calls.append(1)
        return params[len(calls) % 3]

    monkeypatch.setattr(phpa_mod, "tune_add_add", tune)
    rng = np.random.default_rng(7)
    counts = [int(c) for c in 6 + 4 * np.tile([0, 1, 2, 1, 0, -1], 12) + rng.integers(0, 3, 72)]
    p = PhpaAutoscaler(10.0, season_length=6, stored_seasons=2, tune_every=7, behavior=FREE)
    start = 0
    for i, c in enumerate(counts):
        d = _drive(p, [c], start=i)[0]
        if "alpha" in d.components:
            q = Smoothing(*(float(d.components[k]) for k in ("alpha", "beta", "gamma")))
            assert d.components["predicted"] == _phpa_prediction(counts[start:i + 1], 6, q), i
        start = p.dropped
    assert len(calls) >= 5 and p.dropped > 0


def test_no_metric_holds_and_stores_nothing() -> None:
    p = PhpaAutoscaler(10.0, season_length=4, smoothing=P)
    d = p.decide(Signals(now_s=0.0, demand_rps=None, pods=PodCounts(active=3, desired=3)), EMPTY)
    assert d.total == 3 and p.history == []
