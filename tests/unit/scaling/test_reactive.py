"""HPA algorithm, with numbers worked from the Kubernetes documentation."""

from __future__ import annotations

from autoscaler.core.reactive import (
    HpaState,
    hpa_replicas,
    normalize,
    ramp_s,
    rate_limit,
    record_scale,
    stabilize,
)
from autoscaler.core.settings import Behavior, RateRule, ScalingRules


def test_ratio_doubles_halves_and_tolerance() -> None:
    # docs: current 200m vs target 100m doubles; 50m halves; within 0.1 nothing happens
    assert hpa_replicas(4, 4 * 200.0, 100.0) == 8
    assert hpa_replicas(4, 4 * 50.0, 100.0) == 2
    assert hpa_replicas(4, 4 * 109.0, 100.0) == 4
    assert hpa_replicas(4, 4 * 111.0, 100.0) == 5  # ceil(4 * 1.11)


def test_tolerance_per_direction() -> None:
    # Kubernetes 1.33+ behavior.scaleUp/scaleDown.tolerance: the band is [1 - down, 1 + up]
    assert hpa_replicas(10, 10 * 105.0, 100.0, tolerance=0.02, tolerance_down=0.3) == 11
    assert hpa_replicas(10, 10 * 75.0, 100.0, tolerance=0.02, tolerance_down=0.3) == 10
    assert hpa_replicas(10, 10 * 65.0, 100.0, tolerance=0.02, tolerance_down=0.3) == 7
    # the same band re-checks the ratio over ready + starting pods
    assert hpa_replicas(10, 8 * 135.0, 100.0, ready=8, unready=2, tolerance=0.05) == 11  # 1.08
    assert hpa_replicas(10, 8 * 135.0, 100.0, ready=8, unready=2, tolerance=0.1) == 10
    # one tolerance alone still applies both ways
    assert hpa_replicas(10, 10 * 92.0, 100.0, tolerance=0.1) == 10


def test_unready_pods_count_as_zero_on_scale_up() -> None:
    # 2 ready pods at 150 % with 2 starting: recomputed ratio 0.75 flips direction -> hold
    assert hpa_replicas(4, 2 * 150.0, 100.0, ready=2, unready=2) == 4
    # 2 ready at 300 %, 2 starting: ratio over 4 pods = 1.5 -> 6
    assert hpa_replicas(4, 2 * 300.0, 100.0, ready=2, unready=2) == 6


def test_default_scale_up_policies_select_max() -> None:
    b = Behavior()
    # from 1 pod: max(100 % -> 2, +4 -> 5) = 5
    assert rate_limit(HpaState(), 0.0, 1, 100, b) == (5, "ScaleUpLimit")
    # from 10 pods: max(20, 14) = 20
    assert rate_limit(HpaState(), 0.0, 10, 100, b) == (20, "ScaleUpLimit")
    # after 10 -> 20 at t=0, within the 15 s period the period started at 10: no more
    st = record_scale(HpaState(), 0.0, 10, 20)
    assert rate_limit(st, 5.0, 20, 100, b) == (20, "ScaleUpLimit")
    # once the event left the period, 20 -> 40
    assert rate_limit(st, 15.0, 20, 100, b) == (40, "ScaleUpLimit")


def test_scale_down_stabilization_takes_max_of_window() -> None:
    b = Behavior()
    st = HpaState()
    out, st = stabilize(st, 0.0, 10, 10, b)
    assert out == 10
    out, st = stabilize(st, 60.0, 10, 5, b)
    assert out == 10  # the 10 recommended at t=0 is still in the 300 s window
    out, st = stabilize(st, 120.0, 10, 7, b)
    assert out == 10
    out, st = stabilize(st, 301.0, 10, 4, b)
    assert out == 7  # t=0 left the window; max(5, 7, 4) = 7


def test_normalize_applies_bounds_last() -> None:
    final, why, _ = normalize(HpaState(), 0.0, 5, 0, Behavior(), 2, 10)
    assert (final, why) == (2, "Bounds")
    final, why, _ = normalize(HpaState(), 0.0, 5, 50, Behavior(), 2, 8)
    assert final == 8


def test_ramp_counts_the_ticks_the_scale_up_policies_need() -> None:
    b = Behavior()
    # 5 -> 10 -> 20 -> 32 under "100 % or 4 pods per 15 s": two ticks after this one
    assert ramp_s(HpaState(), 0.0, 5, 32, b, 15.0) == 30.0
    assert ramp_s(HpaState(), 0.0, 5, 10, b, 15.0) == 0.0  # this tick gets there
    assert ramp_s(HpaState(), 0.0, 40, 32, b, 15.0) == 0.0  # a scale-down: no climb
    # a scale-up 5 s ago (10 -> 20) still holds the current 15 s period: one tick more
    st = record_scale(HpaState(), -5.0, 10, 20)
    assert ramp_s(st, 0.0, 20, 40, b, 15.0) == 15.0
    # ticks every 5 s inside 15 s periods: 5 -> 10 now, 20 at 15 s, 32 at 30 s
    assert ramp_s(HpaState(), 0.0, 5, 32, b, 5.0) == 30.0
    # scale-up disabled: no climb can happen, so looking ahead would not help
    off = Behavior(scale_up=ScalingRules(0.0, (RateRule("Pods", 4, 15.0),), "Disabled"))
    assert ramp_s(HpaState(), 0.0, 5, 32, off, 15.0) == 0.0
    # bounded: 1 -> 10 000 pods by +1 pod per 60 s stops at max_ticks
    slow = Behavior(scale_up=ScalingRules(0.0, (RateRule("Pods", 1, 60.0),), "Max"))
    assert ramp_s(HpaState(), 0.0, 1, 10_000, slow, 15.0, max_ticks=8) == 120.0
