"""What an autoscaler under test sees, and the interface every one of them implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from autoscaler.core.decision import Decision
from autoscaler.core.signals import Signals
from forecasting.series import FloatArray

__all__ = ["Autoscaler", "DemandView"]


@dataclass(frozen=True, eq=False)
class DemandView:
    """The demand history the controller could have seen: req/s per bucket
    ``[start_s + i*step_s, start_s + (i+1)*step_s)``, only buckets complete before the
    observation lag (a read-only view, no copy)."""

    start_s: float
    step_s: float
    values: FloatArray

    @property
    def end_s(self) -> float:
        """End of the newest visible bucket."""
        return self.start_s + self.step_s * len(self.values)


class Autoscaler(Protocol):
    """A scaling policy the simulator can drive: called every ``interval_s``.

    An autoscaler that reads its demand from somewhere fresher than Prometheus (Knative's
    KPA scrapes the queue-proxies every second) may carry an ``observation_lag_s``
    attribute; the simulator then shows it the demand that old instead of the scenario's
    scrape lag; likewise a ``demand_signal`` attribute (``"arrivals"`` or
    ``"completions"``) overrides what the scenario's demand counts. A wrapper passes its
    inner autoscaler's on."""

    name: str
    interval_s: float

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """The replicas wanted now, from what was observable now."""
        ...
