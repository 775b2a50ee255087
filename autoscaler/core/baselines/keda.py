"""KEDA ScaledObject with the Prometheus scaler: an HPA on an external req/s metric.

The metric (``threshold`` req/s per replica, AverageValue) is read every
``polling_interval_s`` (30 s) and cached in between; the HPA syncs every 15 s with its
default behavior. ``fallback``: after ``failure_threshold`` failed reads, the replicas
given by the fallback behavior. Empty results are treated as missing (REFERENCE.md).
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
    """KEDA's Prometheus scaler driving an HPA."""

    name = "keda"

    def __init__(
        self,
        capacity_rps_per_replica: float,
        *,
        target_util_ratio: float = 0.7,
        min_replicas: int = 1,
        max_replicas: int = 100,
        polling_interval_s: float = 30.0,
        fallback: Fallback | None = None,
        interval_s: float = 15.0,
        behavior: Behavior | None = None,
    ) -> None:
        self.threshold_rps = capacity_rps_per_replica * target_util_ratio
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.polling_interval_s = polling_interval_s
        self.fallback = fallback or Fallback(failure_threshold=3, replicas=max(min_replicas, 1))
        self.interval_s = interval_s
        self.behavior = behavior or Behavior()
        self.state = HpaState()
        self.failures = 0
        self._cached: float | None = None
        self._last_poll_s = -float("inf")

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """One HPA sync on KEDA's (cached) metric."""
        now, current = signals.now_s, signals.pods.desired
        if now - self._last_poll_s >= self.polling_interval_s - 1e-9:
            self._last_poll_s = now
            self._cached = signals.demand_rps
            self.failures = self.failures + 1 if signals.demand_rps is None else 0
        if self._cached is None:
            fb = self.fallback
            if self.failures < fb.failure_threshold:
                return self._hold(current)
            raw = {
                "static": fb.replicas,
                "currentReplicas": current,
                "currentReplicasIfHigher": max(current, fb.replicas),
                "currentReplicasIfLower": min(current, fb.replicas),
            }[fb.behavior]
            reason = Reason.FALLBACK
        else:
            raw = hpa_replicas(current, self._cached, self.threshold_rps, ready=current)
            reason = Reason.BASELINE
        return self._finish(
            now, current, raw, lambda final, why: f"keda: raw {raw} -> {final} {why}", {"raw": raw},
            reason,
        )
