"""The seams between the pure core and the outside world, as Protocols.

Adapters (``autoscaler/adapters``) implement them against real systems; the simulator and
trace replay implement them for backtests; the controller only sees these interfaces.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from autoscaler.core.signals import PodCounts, Signals
from forecasting.series import Series

__all__ = ["Actuator", "MetricsSource"]


@runtime_checkable
class MetricsSource(Protocol):
    """Where demand and saturation come from (Prometheus, a replayed trace)."""

    def signals(self, now_s: float) -> Signals:
        """The current observations; missing ones are ``None`` with a reason in ``errors``.

        Never raises for a missing metric; raises
        :class:`autoscaler.errors.MetricsUnavailable` only when the source as a whole is
        unreachable.
        """
        ...

    def history(self, start_s: float, end_s: float, step_s: float) -> Series:
        """The demand signal over ``[start_s, end_s)`` at ``step_s``, for fitting."""
        ...


@runtime_checkable
class Actuator(Protocol):
    """What changes capacity (the Kubernetes API, or a simulator)."""

    def pod_counts(self) -> PodCounts:
        """Pods of the target by warm-pool state."""
        ...

    def apply(self, active: int, warm: int) -> None:
        """Make the target have ``active`` serving and ``warm`` standby pods."""
        ...
