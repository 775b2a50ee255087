"""Knative KPA: stable (60 s) and panic (6 s) windows, panic at 200 %, 70 % utilisation.

``desired = ceil(observed / (target * utilisation))`` without tolerance; panic starts when the
panic-window desire reaches 2x the ready pods, never scales down while panicking, and ends
after a full stable window without the panic condition. Rates: up at most 1000x, down at
most 2x per decision. Decisions every 2 s (or every simulator step when that is coarser).
"""

from __future__ import annotations

import math

import numpy as np

from autoscaler.core.decision import Decision, Reason
from autoscaler.core.observation import DemandView
from autoscaler.core.signals import Signals

__all__ = ["KpaAutoscaler"]


class KpaAutoscaler:
    """Knative's pod autoscaler on req/s per pod."""

    name = "kpa"

    def __init__(
        self,
        capacity_rps_per_replica: float,
        *,
        target_util_ratio: float = 0.7,
        stable_window_s: float = 60.0,
        panic_window_ratio: float = 0.1,
        panic_threshold_ratio: float = 2.0,
        max_scale_up_rate: float = 1000.0,
        max_scale_down_rate: float = 2.0,
        min_replicas: int = 1,
        max_replicas: int = 100,
        interval_s: float = 2.0,
    ) -> None:
        self.target_rps = capacity_rps_per_replica * target_util_ratio
        self.stable_window_s = stable_window_s
        self.panic_window_s = stable_window_s * panic_window_ratio
        self.panic_threshold = panic_threshold_ratio
        self.up_rate, self.down_rate = max_scale_up_rate, max_scale_down_rate
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.interval_s = interval_s
        self.panic_since_s: float | None = None
        self.max_panic = 0

    def _avg(self, view: DemandView, window_s: float) -> float | None:
        n = max(1, round(window_s / view.step_s))
        if len(view.values) == 0:
            return None
        return float(np.mean(view.values[-n:]))

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """One KPA decision."""
        now = signals.now_s
        current = signals.pods.desired
        ready = max(1, signals.pods.ready)
        stable, panic = self._avg(view, self.stable_window_s), self._avg(view, self.panic_window_s)
        if stable is None or panic is None:
            return Decision(current, 0, Reason.STALE_METRICS_HOLD, "kpa: no data, hold")
        want_stable = math.ceil(stable / self.target_rps - 1e-9)
        want_panic = math.ceil(panic / self.target_rps - 1e-9)
        up_limit = math.ceil(self.up_rate * ready)
        down_limit = math.floor(ready / self.down_rate)
        want_stable = min(max(want_stable, down_limit), up_limit)
        want_panic = min(max(want_panic, down_limit), up_limit)
        over = want_panic / ready >= self.panic_threshold
        if over:
            if self.panic_since_s is None:
                self.max_panic = current
            self.panic_since_s = now
        elif self.panic_since_s is not None and now - self.panic_since_s >= self.stable_window_s:
            self.panic_since_s = None
            self.max_panic = 0
        if self.panic_since_s is not None:
            want = max(want_panic, self.max_panic)  # never scale down while panicking
            self.max_panic = want
        else:
            want = want_stable
        final = min(max(want, self.min_replicas), self.max_replicas)
        mode = "panic" if self.panic_since_s is not None else "stable"
        return Decision(
            final,
            0,
            Reason.BASELINE,
            f"kpa ({mode}): {final}",
            {"stable": want_stable, "panic": want_panic},
        )
