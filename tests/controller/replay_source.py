"""A trace replayed as a :class:`autoscaler.ports.MetricsSource` (test support).

The runner unit tests drive ``TargetRunner.tick(now_s)`` with simulated time, which a real
Prometheus cannot follow; the end-to-end test (tests/e2e) runs the same runner against a
real Prometheus instead. Demand at ``now`` is the trace's rate in the bucket before ``now``
(what ``rate(...[1m])`` would show); ``history`` serves the trace's buckets on the grid.
"""

from __future__ import annotations

import math

import numpy as np

from autoscaler.core.signals import Signals
from autoscaler.errors import MetricsUnavailable
from forecasting.series import Series


class ReplaySource:
    """Serve ``series`` (req/s per bucket) as Prometheus would."""

    def __init__(self, series: Series, *, live: Series | None = None) -> None:
        self.series = series
        self.live = live if live is not None else series  # what instant queries see
        self.down = False
        self.queries = 0
        self.range_queries = 0

    def _at(self, s: Series, t: float) -> float | None:
        i = math.floor((t - s.start_s) / s.step_s)
        if i < 0 or i >= len(s):
            return None
        v = float(s.values[i])
        return None if math.isnan(v) else v

    def signals(self, now_s: float) -> Signals:
        if self.down:
            raise MetricsUnavailable("Prometheus at http://replay did not answer within 1 s")
        self.queries += 1
        d = self._at(self.live, now_s - 1.0)
        errors = {} if d is not None else {"demand_rps": "matched no series"}
        return Signals(now_s=now_s, demand_rps=d, observed_at_s=now_s if d is not None
                       else None, errors=errors)

    def history(self, start_s: float, end_s: float, step_s: float) -> Series:
        if self.down:
            raise MetricsUnavailable("Prometheus at http://replay did not answer within 1 s")
        self.range_queries += 1
        t0 = math.ceil(start_s / step_s) * step_s
        n = math.ceil((end_s - t0) / step_s)
        got = [self._at(self.series, t0 + k * step_s) for k in range(n)]
        vals = np.array([np.nan if v is None else v for v in got])
        return Series(start_s=t0, step_s=step_s, values=vals, kind="rate")
