"""KEDA ScaledObject with the Prometheus scaler: an HPA on an external req/s metric.

What KEDA does (checked against kedacore/keda ``pkg/scaling/scale_handler.go``
``GetScaledObjectMetrics``, ``pkg/fallback/fallback.go`` and the ScaledObject docs, 2.x):

* The HPA reads the external metric every sync (15 s); KEDA's metrics server then queries
  the scaler afresh, unless the trigger sets ``useCachedMetrics: true`` (default false):
  then it serves the value, or the error, of the operator's last poll. ``pollingInterval``
  (30 s) paces only that poll, which decides activation (0 <-> 1) and fills the cache.
* The HPA applies its algorithm to the ``AverageValue`` target ``threshold``:
  ``ceil(metric / threshold)`` unless within the 0.1 tolerance of the current count, then its
  default behavior (300 s scale-down stabilization, rate limits).
* ``fallback`` (optional, off by default): every failed read counts; once the count
  *exceeds* ``failureThreshold`` KEDA returns ``threshold x replicas`` (replicas per the
  fallback behavior) as the metric, so the HPA, tolerance and behavior included, moves
  towards them. Before that, or without ``fallback``, the read fails and the HPA holds.

Modelled differently: an empty query result counts as a failed read (KEDA's
``ignoreNullValues`` default turns it into 0; REFERENCE.md, issue #3065), and
``minReplicaCount`` is 1, so activation never acts.
"""

from __future__ import annotations

from autoscaler.core.baselines._shaped import HpaShaped
from autoscaler.core.decision import Decision, Reason
from autoscaler.core.observation import DemandView
from autoscaler.core.reactive import HpaState, hpa_replicas
from autoscaler.core.settings import Behavior, Fallback
from autoscaler.core.signals import Signals

__all__ = ["KedaAutoscaler"]


class KedaAutoscaler(HpaShaped):
    """KEDA's Prometheus scaler driving an HPA that syncs every ``interval_s``.

    ``use_cached_metrics``: the HPA reads the value of the last poll (every
    ``polling_interval_s``) instead of a fresh one. ``fallback``: ``None`` (KEDA's default)
    holds on failed reads forever.
    """

    name = "keda"

    def __init__(
        self,
        capacity_rps_per_replica: float,
        *,
        target_util_ratio: float = 0.7,
        min_replicas: int = 1,
        max_replicas: int = 100,
        polling_interval_s: float = 30.0,
        use_cached_metrics: bool = False,
        fallback: Fallback | None = None,
        tolerance: float = 0.1,
        interval_s: float = 15.0,
        behavior: Behavior | None = None,
    ) -> None:
        self.threshold_rps = capacity_rps_per_replica * target_util_ratio
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.polling_interval_s = polling_interval_s
        self.use_cached_metrics = use_cached_metrics
        self.fallback = fallback
        self.tolerance = tolerance
        self.interval_s = interval_s
        self.behavior = behavior or Behavior()
        self.state = HpaState()
        self.failures = 0
        self._cached: float | None = None
        self._last_poll_s = -float("inf")

    def _read(self, signals: Signals) -> float | None:
        """What the HPA's read of the external metric returns (``None``: an error)."""
        if not self.use_cached_metrics:
            return signals.demand_rps
        if signals.now_s - self._last_poll_s >= self.polling_interval_s - 1e-9:
            self._last_poll_s = signals.now_s
            self._cached = signals.demand_rps
        return self._cached

    def _fallback_replicas(self, fb: Fallback, current: int) -> int:
        return {
            "static": fb.replicas,
            "currentReplicas": current,
            "currentReplicasIfHigher": max(current, fb.replicas),
            "currentReplicasIfLower": min(current, fb.replicas),
        }[fb.behavior]

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """One HPA sync on KEDA's metric."""
        now, current = signals.now_s, signals.pods.desired
        value = self._read(signals)
        reason = Reason.BASELINE
        if value is None:
            self.failures += 1
            fb = self.fallback
            if fb is None or self.failures <= fb.failure_threshold:
                return self._hold(current)
            value = self.threshold_rps * self._fallback_replicas(fb, current)
            reason = Reason.FALLBACK
        else:
            self.failures = 0
        raw = hpa_replicas(current, value, self.threshold_rps, ready=current,
                           tolerance=self.tolerance)
        return self._finish(
            now, current, raw, lambda final, why: f"keda: raw {raw} -> {final} {why}", {"raw": raw},
            reason,
        )
