"""Baselines: registry, KEDA fallback, KPA panic, PHPA Holt-Winters."""

from __future__ import annotations

import numpy as np

from autoscaler.core.baselines import REGISTRY, KedaAutoscaler, KpaAutoscaler, PhpaAutoscaler
from autoscaler.core.baselines.phpa import holt_winters_forecast
from autoscaler.core.decision import Reason
from autoscaler.core.observation import DemandView
from autoscaler.core.settings import Fallback
from autoscaler.core.signals import PodCounts, Signals

EMPTY = DemandView(0.0, 5.0, np.zeros(0))


def test_registry_names() -> None:
    assert {"hpa", "hpa_rps", "keda", "phpa", "kpa", "static", "oracle"} <= set(REGISTRY)


def test_keda_fallback_after_threshold_polls() -> None:
    k = KedaAutoscaler(10.0, fallback=Fallback(failure_threshold=2, replicas=6))
    out = []
    for i in range(6):  # polls at 0, 30, 60 (every 30 s); syncs every 15 s
        d = k.decide(Signals(now_s=15.0 * i, pods=PodCounts(active=3, desired=3)), EMPTY)
        out.append((d.reason, d.total))
    assert out[0] == (Reason.STALE_METRICS_HOLD, 3)
    assert out[2][0] is Reason.FALLBACK and out[2][1] == 6


def test_keda_threshold() -> None:
    k = KedaAutoscaler(10.0)  # threshold 7 req/s per replica
    d = k.decide(Signals(now_s=0.0, demand_rps=70.0, pods=PodCounts(active=4, desired=4)), EMPTY)
    assert d.total == 8  # wants 10, capped by max(2x, +4) = 8


def test_kpa_panics_and_does_not_scale_down_in_panic() -> None:
    k = KpaAutoscaler(10.0)  # target 7 req/s per pod
    calm = np.full(12, 14.0)
    d = k.decide(Signals(now_s=0.0, pods=PodCounts(active=2, desired=2)), DemandView(0, 5, calm))
    assert d.total == 2
    spike = np.concatenate([calm, [70.0]])  # panic window (6 s) sees 70 req/s -> 10 pods >= 2x2
    d = k.decide(Signals(now_s=5.0, pods=PodCounts(active=2, desired=2)), DemandView(0, 5, spike))
    assert d.total == 10 and "panic" in d.message
    back = np.concatenate([spike, [14.0]])
    d = k.decide(Signals(now_s=10.0, pods=PodCounts(active=10, desired=10)), DemandView(0, 5, back))
    assert d.total == 10  # still panicking: never scales down


def test_holt_winters_follows_a_season() -> None:
    season = 24
    hist = np.tile(np.concatenate([np.full(12, 4.0), np.full(12, 12.0)]), 3)
    pred = holt_winters_forecast(hist, season, 12)
    assert np.allclose(pred, 4.0, atol=1.0)


def test_phpa_needs_two_seasons() -> None:
    p = PhpaAutoscaler(10.0, season_length=8, look_ahead_s=30.0, refit_every=1)
    totals = []
    for i in range(40):
        level = 70.0 if (i % 8) >= 4 else 14.0
        d = p.decide(
            Signals(now_s=15.0 * i, demand_rps=level, pods=PodCounts(active=4, desired=4)), EMPTY
        )
        totals.append(d.components["predicted"])
    assert all(x == 0 for x in totals[:15]) and any(x > 0 for x in totals[16:])
