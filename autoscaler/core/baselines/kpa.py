"""Knative KPA in its ``metric: rps`` mode: stable (60 s) and panic (6 s) windows.

Follows ``Scale`` in knative/serving ``pkg/autoscaler/scaling/autoscaler.go``:

* ``dspc = ceil(stable / target)``, ``dppc = ceil(panic / target)`` (``stable``, ``panic``:
  the revision's req/s averaged over the windows; ``target`` req/s per pod), each clamped to
  ``[floor(ready / maxScaleDownRate), ceil(maxScaleUpRate * ready)]``; ``ready`` is at least 1.
* Panic starts, or is extended, on every decision where the *unclamped*
  ``dppc / ready >= panicThreshold`` (2.0); it ends on the first decision not over the
  threshold more than a stable window after the last one that was, and then the panic
  high-water mark resets to 0.
* In panic the count is ``max(stable, panic)``, never below the panic high-water mark, which
  it raises (no scale-down while panicking); otherwise the stable count.
* A new autoscaler starts in panic when more than one pod is ready, with the high-water mark
  at the ready count (``newAutoscaler``); here that is the first decision.

Defaults are Knative's (config-autoscaler): target utilisation 70 %, stable window 60 s,
panic window 10 % of it, panic threshold 200 %, max scale-up rate 1000, max scale-down rate
2, a decision every 2 s, the pods' stats scraped every second (``scrapeTickInterval`` in
``pkg/autoscaler/metrics/collector.go``: the simulator shows the KPA demand 1 s old, the
nearest bucket, where the other policies see Prometheus' 15 s scrape). The target is
``capacity * 70 %`` (the ``target`` annotation set to what one pod serves, where Knative's
``requests-per-second-target-default`` is 200).
The simulator decides at most once per step (docs/autoscaling.md, Faithfulness).
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
        observation_lag_s: float = 1.0,
    ) -> None:
        self.target_rps = capacity_rps_per_replica * target_util_ratio
        self.stable_window_s = stable_window_s
        self.panic_window_s = stable_window_s * panic_window_ratio
        self.panic_threshold = panic_threshold_ratio
        self.up_rate, self.down_rate = max_scale_up_rate, max_scale_down_rate
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.interval_s = interval_s
        #: the autoscaler scrapes the queue-proxies every second (``scrapeTickInterval``),
        #: so it sees demand about a second old, not Prometheus' 15 s
        self.observation_lag_s = observation_lag_s
        #: the queue-proxies count requests as they arrive (not as they finish, as the
        #: engines' Prometheus counters do): see :class:`~autoscaler.core.simulator.SimConfig`
        self.demand_signal = "arrivals"
        #: time of the last decision over the panic threshold (``None``: not panicking)
        self.panic_since_s: float | None = None
        #: the panic high-water mark (Knative's ``maxPanicPods``)
        self.max_panic = 0
        self._started = False

    def _avg(self, view: DemandView, window_s: float) -> float | None:
        n = max(1, round(window_s / view.step_s))
        if len(view.values) == 0:
            return None
        return float(np.mean(view.values[-n:]))

    def _pods(self, value: float) -> int:
        return math.ceil(value / self.target_rps - 1e-9)

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """One KPA decision."""
        now = signals.now_s
        current = signals.pods.desired
        if not self._started:
            self._started = True
            self.max_panic = signals.pods.ready
            if signals.pods.ready > 1:
                self.panic_since_s = now
        stable, panic = self._avg(view, self.stable_window_s), self._avg(view, self.panic_window_s)
        if stable is None or panic is None:
            return Decision(current, 0, Reason.STALE_METRICS_HOLD, "kpa: no data, hold")
        ready = max(1, signals.pods.ready)
        dspc, dppc = self._pods(stable), self._pods(panic)
        up_limit = math.ceil(self.up_rate * ready)
        down_limit = math.floor(ready / self.down_rate)
        want_stable = min(max(dspc, down_limit), up_limit)
        want_panic = min(max(dppc, down_limit), up_limit)
        if dppc / ready >= self.panic_threshold:
            self.panic_since_s = now
        elif (
            self.panic_since_s is not None
            and now - self.panic_since_s > self.stable_window_s + 1e-9
        ):
            self.panic_since_s = None
            self.max_panic = 0
        if self.panic_since_s is not None:
            self.max_panic = max(self.max_panic, want_stable, want_panic)
            want = self.max_panic  # never scales down while panicking
        else:
            want = want_stable
        final = min(max(want, self.min_replicas), self.max_replicas)
        mode = "panic" if self.panic_since_s is not None else "stable"
        return Decision(
            final,
            0,
            Reason.BASELINE,
            f"kpa ({mode}): {final}",
            {"stable": want_stable, "panic": want_panic, "max_panic": self.max_panic},
        )
