"""Baselines: registry, KEDA fallback, KPA panic, PHPA's earlier Holt-Winters approximation
(PHPA itself: test_phpa.py)."""

from __future__ import annotations

import numpy as np

from autoscaler.core.baselines import REGISTRY, KedaAutoscaler, KpaAutoscaler, PhpaAutoscaler
from autoscaler.core.baselines.phpa import holt_winters_forecast
from autoscaler.core.decision import Decision, Reason
from autoscaler.core.observation import DemandView
from autoscaler.core.settings import Fallback
from autoscaler.core.signals import PodCounts, Signals

EMPTY = DemandView(0.0, 5.0, np.zeros(0))


def test_registry_names() -> None:
    assert {"hpa", "hpa_rps", "keda", "phpa", "kpa", "static", "oracle"} <= set(REGISTRY)


def _keda_run(k: KedaAutoscaler, demand: list[float | None], current: int = 3) -> list[Decision]:
    """One HPA sync every 15 s with ``demand`` (``None``: the read fails) and ``current`` pods."""
    pods = PodCounts(active=current, desired=current)
    return [k.decide(Signals(now_s=15.0 * i, demand_rps=d, pods=pods), EMPTY)
            for i, d in enumerate(demand)]


def test_keda_reads_a_fresh_metric_every_hpa_sync() -> None:
    # useCachedMetrics defaults to false: the HPA's read at 15 s queries Prometheus again,
    # it does not reuse the 30 s poll
    d = _keda_run(KedaAutoscaler(10.0), [70.0, 140.0], current=10)  # threshold 7 req/s
    assert [x.total for x in d] == [10, 20]


def test_keda_use_cached_metrics_serves_the_last_poll() -> None:
    k = KedaAutoscaler(10.0, use_cached_metrics=True)  # polls at 0, 30 s
    d = _keda_run(k, [70.0, 140.0, 140.0], current=10)
    assert [x.total for x in d] == [10, 10, 20]


def test_keda_falls_back_once_failures_exceed_the_threshold() -> None:
    # fallback.go: NumberOfFailures > failureThreshold, counted on every HPA read
    k = KedaAutoscaler(10.0, fallback=Fallback(failure_threshold=3, replicas=6))
    d = _keda_run(k, [None] * 5)
    assert [x.reason for x in d[:3]] == [Reason.STALE_METRICS_HOLD] * 3
    assert d[3].reason is Reason.FALLBACK and d[3].total == 6


def test_keda_fallback_metric_goes_through_the_hpa_tolerance() -> None:
    # the fallback is a metric (threshold x replicas), not a replica count: 21 vs 20 pods
    # is within the HPA's 0.1 tolerance, so the HPA keeps 20
    k = KedaAutoscaler(10.0, max_replicas=400,
                       fallback=Fallback(failure_threshold=1, replicas=21))
    d = _keda_run(k, [None, None], current=20)
    assert d[1].reason is Reason.FALLBACK and d[1].total == 20


def test_keda_has_no_fallback_by_default() -> None:
    d = _keda_run(KedaAutoscaler(10.0), [None] * 10)
    assert all(x.reason is Reason.STALE_METRICS_HOLD and x.total == 3 for x in d)


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


def _kpa(k: KpaAutoscaler, now_s: float, ready: int, values: list[float],
         desired: int | None = None) -> Decision:
    """One KPA decision at ``now_s`` on 5 s buckets ``values`` (stable window: the last 12,
    panic window: the last one)."""
    pods = PodCounts(active=ready, starting=(desired or ready) - ready, desired=desired or ready)
    return k.decide(Signals(now_s=now_s, pods=pods), DemandView(0, 5, np.asarray(values)))


def test_kpa_panic_takes_the_stable_count_when_it_is_larger() -> None:
    k = KpaAutoscaler(10.0)  # target 7 req/s per pod
    _kpa(k, 0.0, 1, [7.0] * 12)  # one ready pod: a fresh KPA starts calm
    d = _kpa(k, 5.0, 2, [14.0] * 6 + [70.0] * 6)  # panic window 70 -> 10 pods >= 2 x 2
    assert "panic" in d.message and d.total == 10
    # the stable window still carries the surge (14 pods), the panic window less (5 pods)
    d = _kpa(k, 10.0, 2, [14.0] * 6 + [70.0] * 6 + [140.0] * 5 + [35.0])
    assert d.components["stable"] == 14 and d.components["panic"] == 5
    assert d.total == 14


def test_kpa_panic_threshold_is_tested_on_the_unclamped_count() -> None:
    # max scale-up rate 1.5 clamps the panic count of 8 to 3 pods; the threshold still sees 8
    k = KpaAutoscaler(10.0, max_scale_up_rate=1.5)
    _kpa(k, 0.0, 1, [7.0] * 12)
    d = _kpa(k, 5.0, 2, [7.0] * 11 + [56.0])
    assert "panic" in d.message and d.total == 3
    d = _kpa(k, 10.0, 3, [7.0] * 12)  # calm again: no scale-down while panicking
    assert d.total == 3


def test_kpa_entering_panic_does_not_start_from_the_current_count() -> None:
    # 20 pods wanted, 2 ready, and the demand now needs 5: panic (5 >= 2 x 2) takes
    # max(stable, panic) = 5, not the 20 the Deployment was at
    k = KpaAutoscaler(10.0)
    _kpa(k, 0.0, 1, [7.0] * 12)
    d = _kpa(k, 5.0, 2, [35.0] * 12, desired=20)
    assert "panic" in d.message and d.total == 5


def test_kpa_leaves_panic_only_after_more_than_a_stable_window() -> None:
    k = KpaAutoscaler(10.0)
    _kpa(k, 0.0, 1, [7.0] * 12)
    assert _kpa(k, 5.0, 2, [7.0] * 11 + [70.0]).total == 10  # panic from t = 5 s
    calm = [7.0] * 12
    for t in range(10, 70, 5):  # 5 s after the last over-threshold decision up to 60 s
        d = _kpa(k, float(t), 10, calm)
        assert "panic" in d.message and d.total == 10, t
    d = _kpa(k, 70.0, 10, calm)  # 65 s > 60 s: back to the stable count (down 2x at most)
    assert "stable" in d.message and d.total == 5 and k.max_panic == 0


def test_kpa_starts_in_panic_with_more_than_one_ready_pod() -> None:
    # newAutoscaler: a fresh KPA keeps at least the ready pods until a stable window passes
    k = KpaAutoscaler(10.0)
    d = _kpa(k, 0.0, 4, [7.0] * 12)
    assert "panic" in d.message and d.total == 4
    d = _kpa(k, 65.0, 4, [7.0] * 12)
    assert "stable" in d.message and d.total == 2


def test_holt_winters_follows_a_season() -> None:
    season = 24
    hist = np.tile(np.concatenate([np.full(12, 4.0), np.full(12, 12.0)]), 3)
    pred = holt_winters_forecast(hist, season, 12)
    assert np.allclose(pred, 4.0, atol=1.0)


def test_phpa_refit_every_keeps_the_estimated_look_ahead_fit() -> None:
    # the earlier approximation (an estimated fit read look_ahead_s ahead), kept as a flag;
    # PHPA's own rules are in test_phpa.py
    p = PhpaAutoscaler(10.0, season_length=8, look_ahead_s=30.0, refit_every=1)
    totals = []
    for i in range(40):
        level = 70.0 if (i % 8) >= 4 else 14.0
        d = p.decide(
            Signals(now_s=15.0 * i, demand_rps=level, pods=PodCounts(active=4, desired=4)), EMPTY
        )
        totals.append(d.components["predicted"])
    assert all(x == 0 for x in totals[:15]) and any(x > 0 for x in totals[16:])
