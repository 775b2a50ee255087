"""The oracle: perfect foresight of demand and of start delays; the physical limit.

:func:`oracle_gpu_hours` prices the cheapest schedule that serves every request without
queueing: at each step exactly ``ceil(demand / capacity)`` pods serve, each started exactly
one cold start before it is needed; between two uses a pod is kept running when the gap is
shorter than a restart (which costs a cold start of GPU time) and stopped otherwise. Pods
running at the start are free to keep, as in the simulator.

:class:`OracleAutoscaler` replays foresight in the simulator: at each tick it asks for the
peak need over the next ``max cold start + interval``.
"""

from __future__ import annotations

import math

import numpy as np

from autoscaler.core.decision import Decision, Reason
from autoscaler.core.observation import DemandView
from autoscaler.core.signals import Signals
from forecasting.series import FloatArray

__all__ = ["OracleAutoscaler", "oracle_gpu_hours", "oracle_replicas"]


def oracle_replicas(rates_rps: FloatArray, capacity_rps_per_replica: float) -> np.ndarray:
    """Pods that must serve at each step: ``ceil(rate / capacity)``."""
    r = np.ceil(np.asarray(rates_rps, dtype=np.float64) / capacity_rps_per_replica - 1e-9)
    out: np.ndarray = np.maximum(r, 0).astype(np.int64)
    return out


def oracle_gpu_hours(
    rates_rps: FloatArray,
    step_s: float,
    capacity_rps_per_replica: float,
    cold_start_s: float,
    *,
    initial_replicas: int = 0,
) -> float:
    """GPU-hours of the cheapest no-queue schedule (see the module docstring).

    ``cold_start_s`` should be the *shortest* possible start delay so the result is a lower
    bound for any policy that serves everything.
    """
    need = oracle_replicas(rates_rps, capacity_rps_per_replica)
    n = len(need)
    if n == 0:
        return 0.0
    total_s = 0.0
    for slot in range(1, int(need.max(initial=0)) + 1):
        on = need >= slot
        idx = np.flatnonzero(on)
        total_s += len(idx) * step_s
        # gaps between uses, and the first start
        first = int(idx[0])
        if not (slot <= initial_replicas and first == 0):
            total_s += (
                cold_start_s if slot > initial_replicas else min(first * step_s, cold_start_s)
            )
        gaps = np.diff(idx) - 1
        for g in gaps[gaps > 0]:
            total_s += min(float(g) * step_s, cold_start_s)
    return total_s / 3600.0


class OracleAutoscaler:
    """Foresight in the simulator: the peak need over the next start delay and interval."""

    name = "oracle"

    def __init__(
        self,
        rates_rps: FloatArray,
        start_s: float,
        step_s: float,
        capacity_rps_per_replica: float,
        *,
        max_cold_start_s: float,
        interval_s: float = 15.0,
    ) -> None:
        self.need = oracle_replicas(rates_rps, capacity_rps_per_replica)
        self.start_s, self.step_s = start_s, step_s
        self.lead_s = max_cold_start_s
        self.interval_s = interval_s

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """Peak need in ``[now, now + lead + interval]`` (foresight, not observation)."""
        i0 = max(0, math.floor((signals.now_s - self.start_s) / self.step_s))
        i1 = i0 + math.ceil((self.lead_s + self.interval_s) / self.step_s) + 1
        window = self.need[i0:i1]
        want = int(window.max()) if len(window) else 0
        # keep pods needed again within a cold start (cheaper than a restart)
        return Decision(max(want, 1), 0, Reason.BASELINE, f"oracle {want}")
