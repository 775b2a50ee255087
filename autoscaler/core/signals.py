"""What the controller observes at one tick: demand, saturation and pod counts.

Every field that comes from Prometheus is optional: ``None`` means *missing* (the query
failed or matched nothing), never zero. The policy holds (never scales down) on missing or
stale demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PodCounts", "Signals"]


@dataclass(frozen=True)
class PodCounts:
    """Pods of the target Deployment by warm-pool state (see DESIGN.md's warm-pool protocol).

    Attributes:
        active: Ready pods labelled ``surgecast.io/role=active`` (they receive traffic).
        warm: Ready pods labelled ``warm`` (loaded, idle, promotable within seconds).
        starting: pods created but not Ready yet (scheduling, image pull, model load).
        desired: the Deployment's current ``spec.replicas``.
    """

    active: int = 0
    warm: int = 0
    starting: int = 0
    desired: int = 0

    @property
    def ready(self) -> int:
        """Ready pods, active and warm."""
        return self.active + self.warm

    @property
    def total(self) -> int:
        """All pods that exist, ready or starting."""
        return self.active + self.warm + self.starting


@dataclass(frozen=True)
class Signals:
    """One tick's observations for one target.

    Attributes:
        now_s: the tick's time (Unix seconds), passed in, never read from a clock.
        demand_rps: request arrival rate, req/s (``None`` when missing).
        tokens_per_s: generated + prompt tokens per second (``None`` when missing).
        queue_depth: requests waiting across the target's pods (``None`` when missing).
        running: requests being processed across the pods (``None`` when missing).
        gpu_util_ratio: mean GPU utilisation of the ready pods in [0, 1] (``None`` when
            missing).
        observed_at_s: timestamp of the newest demand sample, for staleness checks.
        pods: pod counts by state.
        errors: why a signal is missing (query name -> message), for the decision's reason.
        throughput_rps: requests completed per second across the ready pods (``None`` when
            missing); refines the capacity model when the pods are saturated.
        ready_durations_s: raise -> Ready durations of the pods that became Ready since the
            previous tick (feeds the lead-time estimator).
    """

    now_s: float
    demand_rps: float | None = None
    tokens_per_s: float | None = None
    queue_depth: float | None = None
    running: float | None = None
    gpu_util_ratio: float | None = None
    observed_at_s: float | None = None
    pods: PodCounts = field(default_factory=PodCounts)
    errors: dict[str, str] = field(default_factory=dict)
    throughput_rps: float | None = None
    ready_durations_s: tuple[float, ...] = ()

    def staleness_s(self) -> float | None:
        """Age of the newest demand sample at ``now_s`` (``None`` when unknown)."""
        if self.observed_at_s is None:
            return None
        return max(0.0, self.now_s - self.observed_at_s)
