"""Static provisioning: a fixed replica count (e.g. enough for the trace's peak)."""

from __future__ import annotations

from autoscaler.core.decision import Decision, Reason
from autoscaler.core.observation import DemandView
from autoscaler.core.signals import Signals

__all__ = ["StaticAutoscaler"]


class StaticAutoscaler:
    """Always ``replicas``."""

    name = "static"

    def __init__(self, replicas: int, *, interval_s: float = 15.0) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        self.replicas = replicas
        self.interval_s = interval_s

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """The fixed count."""
        return Decision(self.replicas, 0, Reason.BASELINE, f"static {self.replicas}")
