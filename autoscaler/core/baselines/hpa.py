"""Kubernetes HPA v2 baseline: on GPU utilisation (70 %, as in the seed) or on req/s per pod."""

from __future__ import annotations

from typing import Literal

from autoscaler.core.baselines._shaped import HpaShaped
from autoscaler.core.decision import Decision
from autoscaler.core.observation import DemandView
from autoscaler.core.reactive import HpaState, hpa_replicas
from autoscaler.core.settings import Behavior
from autoscaler.core.signals import Signals

__all__ = ["HpaAutoscaler"]


class HpaAutoscaler(HpaShaped):
    """The HPA algorithm with default behavior, syncing every 15 s.

    ``metric="gpu_util"``: target average utilisation ``target_util_ratio`` (a Resource-like
    metric; not-ready pods count as 0 % on scale-up). ``metric="rps"``: target average value
    ``capacity * target_util_ratio`` req/s per pod. Missing metrics: do nothing.
    """

    def __init__(
        self,
        capacity_rps_per_replica: float,
        *,
        metric: Literal["gpu_util", "rps"] = "gpu_util",
        target_util_ratio: float = 0.7,
        min_replicas: int = 1,
        max_replicas: int = 100,
        tolerance: float = 0.1,
        interval_s: float = 15.0,
        behavior: Behavior | None = None,
    ) -> None:
        if metric not in ("gpu_util", "rps"):
            raise ValueError(f"metric must be 'gpu_util' or 'rps', got {metric!r}")
        self.name = "hpa" if metric == "gpu_util" else "hpa_rps"
        self.metric = metric
        self.capacity = capacity_rps_per_replica
        self.target_util_ratio = target_util_ratio
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.tolerance = tolerance
        self.interval_s = interval_s
        self.behavior = behavior or Behavior()
        self.state = HpaState()

    def raw(self, signals: Signals) -> int | None:
        """The HPA's recommendation before behavior, or ``None`` when the metric is missing."""
        pods = signals.pods
        current = pods.desired
        if self.metric == "gpu_util":
            if signals.gpu_util_ratio is None:
                return None
            return hpa_replicas(
                current,
                signals.gpu_util_ratio * pods.ready,
                self.target_util_ratio,
                ready=pods.ready,
                unready=pods.starting,
                tolerance=self.tolerance,
            )
        if signals.demand_rps is None:
            return None
        return hpa_replicas(
            current,
            signals.demand_rps,
            self.capacity * self.target_util_ratio,
            ready=pods.ready,
            unready=pods.starting,
            tolerance=self.tolerance,
        )

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """One HPA sync."""
        current = signals.pods.desired
        raw = self.raw(signals)
        if raw is None:
            return self._hold(current)
        return self._finish(
            signals.now_s, current, raw,
            lambda final, why: f"{self.name}: raw {raw} -> {final} {why}", {"raw": raw},
        )
