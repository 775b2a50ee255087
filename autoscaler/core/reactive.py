"""The Kubernetes HPA algorithm, faithfully, as pure functions over explicit state.

* :func:`hpa_replicas` — ``replica_calculator.go``: ``ceil(ready * metric / target)`` with the
  tolerance band, and not-yet-ready pods counted at 0 % on scale-up (if that flips the
  direction or lands within tolerance, keep the current count).
* :func:`stabilize` — ``stabilizeRecommendationWithBehaviors``: the scale-up window takes the
  *lowest*, the scale-down window the *highest* recommendation seen in it.
* :func:`rate_limit` — ``convertDesiredReplicasWithBehaviorRate``: per-period limits over the
  history of scale events, ``selectPolicy`` Max/Min/Disabled.

State (:class:`HpaState`) is a plain value: functions return a new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler.core.settings import Behavior, ScalingRules

__all__ = [
    "HpaState",
    "ScaleEvent",
    "hpa_replicas",
    "normalize",
    "ramp_s",
    "rate_limit",
    "record_scale",
    "stabilize",
]


@dataclass(frozen=True)
class ScaleEvent:
    """A change of the replica count: ``delta`` pods (positive up) at ``at_s``."""

    at_s: float
    delta: int


@dataclass(frozen=True)
class HpaState:
    """What the HPA remembers between syncs: recommendations and scale events."""

    recommendations: tuple[tuple[float, int], ...] = ()
    events: tuple[ScaleEvent, ...] = ()


def hpa_replicas(
    current: int,
    metric_total: float,
    target_per_pod: float,
    *,
    ready: int | None = None,
    unready: int = 0,
    tolerance: float = 0.1,
    tolerance_down: float | None = None,
) -> int:
    """Desired replicas for an average-value metric (HPA ``AverageValue`` target).

    Args:
        current: the scale target's current replica count.
        metric_total: the metric summed over the ready pods (e.g. req/s of the target).
        target_per_pod: the target average per pod (> 0).
        ready: pods that report the metric (defaults to ``current``).
        unready: pods not ready yet, counted at 0 when the result would scale up.
        tolerance: no change while ``ratio <= 1 + tolerance`` (the scale-up side) and
            ``ratio >= 1 - tolerance_down``.
        tolerance_down: the scale-down side (``None``: ``tolerance``), as Kubernetes 1.33+
            takes ``behavior.scaleUp.tolerance`` and ``behavior.scaleDown.tolerance``.
    """
    down = tolerance if tolerance_down is None else tolerance_down

    def within(r: float) -> bool:
        return 1.0 - down <= r <= 1.0 + tolerance

    if target_per_pod <= 0:
        raise ValueError(f"target_per_pod must be > 0, got {target_per_pod}")
    n_ready = current if ready is None else ready
    if n_ready <= 0:
        # nothing reports: the external-metric form ceil(total / target) applies
        return (
            max(current, math.ceil(metric_total / target_per_pod - 1e-9))
            if metric_total > 0
            else current
        )
    ratio = metric_total / (target_per_pod * n_ready)
    if within(ratio):
        return current
    if ratio > 1.0 and unready > 0:
        # not-yet-ready pods count as 0 % on scale-up; recompute and re-check direction
        ratio2 = metric_total / (target_per_pod * (n_ready + unready))
        if ratio2 <= 1.0 or within(ratio2):
            return current
        return math.ceil(ratio2 * (n_ready + unready) - 1e-9)
    return math.ceil(ratio * n_ready - 1e-9)


def stabilize(
    state: HpaState, now_s: float, current: int, desired: int, behavior: Behavior
) -> tuple[int, HpaState]:
    """Apply the stabilization windows; return the stabilized count and the new state.

    As in Kubernetes the *raw* desired count is recorded, and records older than the longest
    window are dropped.
    """
    up_cut = now_s - behavior.scale_up.stabilization_window_s
    down_cut = now_s - behavior.scale_down.stabilization_window_s
    up_rec = desired
    down_rec = desired
    for at_s, rec in state.recommendations:
        if at_s > up_cut:
            up_rec = min(up_rec, rec)
        if at_s > down_cut:
            down_rec = max(down_rec, rec)
    out = max(current, up_rec)
    out = min(out, down_rec)
    keep_after = now_s - max(
        behavior.scale_up.stabilization_window_s, behavior.scale_down.stabilization_window_s
    )
    recs = (*tuple(r for r in state.recommendations if r[0] > keep_after), (now_s, desired))
    return out, HpaState(recs, state.events)


def _changed_in_period(
    events: tuple[ScaleEvent, ...], now_s: float, period_s: float
) -> tuple[int, int]:
    added = sum(e.delta for e in events if e.delta > 0 and e.at_s > now_s - period_s)
    deleted = -sum(e.delta for e in events if e.delta < 0 and e.at_s > now_s - period_s)
    return added, deleted


def _scale_up_limit(
    current: int, events: tuple[ScaleEvent, ...], now_s: float, rules: ScalingRules
) -> int:
    if rules.select_policy == "Disabled":
        return current
    result: int | None = None
    for p in rules.policies:
        added, deleted = _changed_in_period(events, now_s, p.period_s)
        start = current - added + deleted
        proposed = start + p.value if p.kind == "Pods" else math.ceil(start * (1 + p.value / 100))
        if result is None:
            result = proposed
        elif rules.select_policy == "Max":
            result = max(result, proposed)
        else:
            result = min(result, proposed)
    return current if result is None else result


def _scale_down_limit(
    current: int, events: tuple[ScaleEvent, ...], now_s: float, rules: ScalingRules
) -> int:
    if rules.select_policy == "Disabled":
        return current
    result: int | None = None
    for p in rules.policies:
        added, deleted = _changed_in_period(events, now_s, p.period_s)
        start = current + deleted - added
        proposed = start - p.value if p.kind == "Pods" else int(start * (1 - p.value / 100))
        if result is None:
            result = proposed
        elif rules.select_policy == "Max":  # Max = the biggest change = the lowest count
            result = min(result, proposed)
        else:
            result = max(result, proposed)
    return current if result is None else result


def rate_limit(
    state: HpaState, now_s: float, current: int, desired: int, behavior: Behavior
) -> tuple[int, str]:
    """Limit ``desired`` by the scale-up / scale-down policies.

    Returns the allowed count and ``"ScaleUpLimit"``, ``"ScaleDownLimit"`` or ``""``.
    """
    if desired > current:
        limit = max(_scale_up_limit(current, state.events, now_s, behavior.scale_up), current)
        if desired > limit:
            return limit, "ScaleUpLimit"
    elif desired < current:
        limit = min(_scale_down_limit(current, state.events, now_s, behavior.scale_down), current)
        if desired < limit:
            return limit, "ScaleDownLimit"
    return desired, ""


def ramp_s(
    state: HpaState,
    now_s: float,
    current: int,
    target: int,
    behavior: Behavior,
    interval_s: float,
    *,
    max_ticks: int = 40,
) -> float:
    """Seconds the scale-up policies need to take ``current`` replicas to ``target``, one
    step per ``interval_s`` tick from ``now_s`` (0 when this tick can get there): each tick
    asks :func:`rate_limit` for ``target`` and records what it allows, so recent scale-ups in
    ``state`` count against the first periods as they would. When the policies allow no
    progress at all (scale-up disabled), 0: waiting longer would not help. At most
    ``max_ticks`` ticks."""
    if target <= current or interval_s <= 0:
        return 0.0
    if rate_limit(HpaState(), now_s, current, target, behavior)[0] <= current:
        return 0.0  # no progress even without recent scale-ups: scale-up is disabled
    st, c, t = state, current, now_s
    for k in range(max_ticks):
        allowed, _ = rate_limit(st, t, c, target, behavior)
        if allowed >= target:
            return k * interval_s
        st = record_scale(st, t, c, allowed)
        c, t = max(c, allowed), t + interval_s
    return max_ticks * interval_s


def record_scale(
    state: HpaState, now_s: float, current: int, new: int, keep_s: float = 1800.0
) -> HpaState:
    """Record a replica change (no-op when unchanged); events older than ``keep_s`` drop."""
    events = tuple(e for e in state.events if e.at_s > now_s - keep_s)
    if new != current:
        events = (*events, ScaleEvent(now_s, new - current))
    return HpaState(state.recommendations, events)


def normalize(
    state: HpaState,
    now_s: float,
    current: int,
    desired: int,
    behavior: Behavior,
    min_replicas: int,
    max_replicas: int,
) -> tuple[int, str, HpaState]:
    """Stabilize, rate-limit and bound ``desired``; record the change.

    Returns ``(replicas, limiting reason or "", new state)``. The reason is
    ``ScaleDownStabilized``, ``ScaleUpLimit``, ``ScaleDownLimit``, ``Bounds`` or empty.
    """
    stab, state = stabilize(state, now_s, current, desired, behavior)
    reason = "ScaleDownStabilized" if stab > desired else ""
    limited, why = rate_limit(state, now_s, current, stab, behavior)
    reason = why or reason
    final = min(max(limited, min_replicas), max_replicas)
    if final != limited:
        reason = "Bounds"
    state = record_scale(state, now_s, current, final)
    return final, reason, state
