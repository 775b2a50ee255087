"""The policy's answer at one tick: replicas by role, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Decision", "Reason"]


class Reason(StrEnum):
    """The rule that set the final replica count (printed in events, logs and dry-run)."""

    FORECAST_LEAD = "ForecastLead"
    REACTIVE_FLOOR = "ReactiveFloor"
    SCALE_UP_LIMIT = "ScaleUpLimit"
    SCALE_DOWN_LIMIT = "ScaleDownLimit"
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
    STALE_METRICS_HOLD = "StaleMetricsHold"
    FALLBACK = "Fallback"
    BOUNDS = "Bounds"
    SCHEDULE = "Schedule"
    TIER = "Tier"
    STEADY = "Steady"
    BASELINE = "Baseline"


@dataclass(frozen=True)
class Decision:
    """What to run: ``active`` pods serve, ``warm`` pods are loaded and idle.

    Attributes:
        active: pods that should receive traffic.
        warm: ready pods held idle for fast promotion.
        reason: the rule that decided ``total``.
        message: one human-readable line with the numbers behind the reason.
        components: the candidate counts (reactive, predictive, stabilized, bounds ...).
    """

    active: int
    warm: int
    reason: Reason
    message: str = ""
    components: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.active < 0 or self.warm < 0:
            raise ValueError(
                f"replica counts must be >= 0, got active={self.active} warm={self.warm}"
            )

    @property
    def total(self) -> int:
        """The Deployment's replica count: active plus warm."""
        return self.active + self.warm
