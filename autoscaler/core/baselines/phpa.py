"""PHPA-style baseline: Holt-Winters on the replica counts the HPA computed.

Each sync (15 s) the HPA's recommendation (req/s per pod, default behavior) is stored; with
at least two full seasons of history a Holt-Winters model (statsmodels
``ExponentialSmoothing``, additive trend and season) predicts the count ``look_ahead_s``
ahead, and ``decisionType: maximum`` takes the larger of the HPA's and the prediction.
With less history, the HPA alone decides (PHPA issue #74).

Deviations from PHPA (jthomperoo/predictive-horizontal-pod-autoscaler: ``holt_winters.py``,
``processModels``; docs/autoscaling.md, "Faithfulness of the baselines"): PHPA runs its model
every sync (``perSyncPeriod`` 1) with the spec's fixed ``alpha``/``beta``/``gamma``
(``fit(optimized=False)``) and predicts one sync ahead. Here the parameters are estimated by
maximum likelihood, the model is refit every ``refit_every`` syncs and read ``look_ahead_s``
(plus the syncs since the fit) ahead in between, because an optimized fit on seasons of 15 s
syncs takes 20-40 s. That changes most raw recommendations on the day it predicts
(``benchmarks/phpa_refit.py``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from autoscaler.core.baselines._shaped import HpaShaped
from autoscaler.core.decision import Decision
from autoscaler.core.observation import DemandView
from autoscaler.core.reactive import HpaState, hpa_replicas
from autoscaler.core.settings import Behavior
from autoscaler.core.signals import Signals

__all__ = ["PhpaAutoscaler", "holt_winters_forecast"]


def holt_winters_forecast(history: np.ndarray, season: int, steps: int) -> np.ndarray:
    """``steps`` Holt-Winters predictions (additive trend and season) after ``history``."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        # statsmodels warns on convergence for short/flat histories; the fit is still usable
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(
            np.asarray(history, dtype=np.float64),
            trend="add",
            seasonal="add",
            seasonal_periods=season,
        ).fit()
        out: np.ndarray = np.asarray(fit.forecast(steps), dtype=np.float64)
    return out


class PhpaAutoscaler(HpaShaped):
    """Predictive HPA: max(HPA, Holt-Winters on the HPA's replica history)."""

    name = "phpa"

    def __init__(
        self,
        capacity_rps_per_replica: float,
        *,
        season_length: int = 5760,
        look_ahead_s: float = 120.0,
        stored_values: int | None = None,
        refit_every: int = 20,
        target_util_ratio: float = 0.7,
        min_replicas: int = 1,
        max_replicas: int = 100,
        interval_s: float = 15.0,
        behavior: Behavior | None = None,
    ) -> None:
        if season_length < 2:
            raise ValueError(f"season_length must be >= 2 syncs, got {season_length}")
        self.target_rps = capacity_rps_per_replica * target_util_ratio
        self.season = season_length
        self.look_ahead = max(1, math.ceil(look_ahead_s / interval_s))
        self.stored_values = stored_values or 3 * season_length
        self.refit_every = refit_every
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.interval_s = interval_s
        self.behavior = behavior or Behavior()
        self.state = HpaState()
        self.history: list[float] = []
        self._pred: np.ndarray | None = None
        self._since_fit = 0

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """One PHPA sync."""
        current = signals.pods.desired
        if signals.demand_rps is None:
            return self._hold(current)
        hpa = hpa_replicas(
            current,
            signals.demand_rps,
            self.target_rps,
            ready=signals.pods.ready,
            unready=signals.pods.starting,
        )
        self.history.append(float(hpa))
        del self.history[: -self.stored_values]
        predicted = 0
        if len(self.history) >= 2 * self.season:
            if self._pred is None or self._since_fit >= self.refit_every:
                self._pred = holt_winters_forecast(
                    np.asarray(self.history), self.season, self.look_ahead + self.refit_every
                )
                self._since_fit = 0
            idx = min(self._since_fit + self.look_ahead - 1, len(self._pred) - 1)
            predicted = max(0, math.ceil(float(self._pred[idx]) - 1e-9))
            self._since_fit += 1
        raw = max(hpa, predicted)
        return self._finish(
            signals.now_s, current, raw,
            lambda final, _why: f"phpa: hpa {hpa}, predicted {predicted} -> {final}",
            {"hpa": hpa, "predicted": predicted},
        )
