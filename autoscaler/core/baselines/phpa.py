"""PHPA baseline: Holt-Winters on the replica counts the HPA computed, as PHPA runs it.

jthomperoo/predictive-horizontal-pod-autoscaler (``processModels`` in
``internal/controllers/predictivehorizontalpodautoscaler_controller.go``,
``internal/prediction/holtwinters/holtwinters.go``, ``algorithms/holt_winters/holt_winters.py``;
docs/autoscaling.md, "Faithfulness of the baselines"). On every sync (15 s, ``perSyncPeriod``
1):

1. the HPA's count (req/s per pod, tolerance 0.1) is appended to the model's history;
2. with fewer than ``2 * m`` or ``10 + 2 * (m // 2)`` stored values the model returns 0, so
   the HPA's count decides; otherwise Holt-Winters (additive trend and season, statsmodels'
   heuristic initial states, fixed ``alpha``/``beta``/``gamma``, ``fit(optimized=False)``)
   predicts the next sync's count, ``ceil(forecast(steps=1))``;
3. the history is pruned by whole seasons once it holds ``storedSeasons + 1`` of them;
4. ``decisionType: maximum`` takes the larger of the HPA's count and the prediction, then
   the HPA's default behavior (stabilization, rate limits, bounds) applies.

PHPA needs ``alpha``/``beta``/``gamma`` from the spec or from a ``runtimeTuningFetchHook``.
Given ``smoothing``, they are fixed; otherwise a tuning step plays the hook: it estimates
them by maximum likelihood on the stored history every ``tune_every`` syncs (1 h), and every
sync in between runs with those fixed values. The recursion is carried forward one value
per sync and recomputed only when the parameters, the window start or the initialization's
seasons change (``_holt_winters``; the same numbers as statsmodels' fit, about 30x faster
than a fresh fit, which would take 0.1-0.25 s per sync).

``refit_every=N`` keeps the earlier approximation: a fit with every parameter (initial
states too) estimated every N syncs, read ``look_ahead_s`` (plus the syncs since the fit)
ahead in between (``benchmarks/phpa_refit.py`` measures how far it is from PHPA).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from autoscaler.core.baselines._holt_winters import (
    HoltWintersState,
    Smoothing,
    fit_add_add,
    min_history,
    seasons_read,
    tune_add_add,
)
from autoscaler.core.baselines._shaped import HpaShaped
from autoscaler.core.decision import Decision
from autoscaler.core.observation import DemandView
from autoscaler.core.reactive import HpaState, hpa_replicas
from autoscaler.core.settings import Behavior
from autoscaler.core.signals import Signals

__all__ = ["PhpaAutoscaler", "Smoothing", "holt_winters_forecast"]


def holt_winters_forecast(history: np.ndarray, season: int, steps: int) -> np.ndarray:
    """``steps`` predictions after ``history`` of a Holt-Winters fit (additive trend and
    season) with every parameter estimated: the ``refit_every`` approximation."""
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
    """Predictive HPA: max(HPA, Holt-Winters one sync ahead on the HPA's replica history)."""

    name = "phpa"

    def __init__(
        self,
        capacity_rps_per_replica: float,
        *,
        season_length: int = 5760,
        stored_seasons: int = 3,
        smoothing: Smoothing | None = None,
        tune_every: int = 240,
        refit_every: int | None = None,
        look_ahead_s: float = 120.0,
        target_util_ratio: float = 0.7,
        min_replicas: int = 1,
        max_replicas: int = 100,
        interval_s: float = 15.0,
        behavior: Behavior | None = None,
    ) -> None:
        if season_length < 2:
            raise ValueError(f"season_length must be >= 2 syncs, got {season_length}")
        if stored_seasons < 1 or tune_every < 1:
            raise ValueError("stored_seasons and tune_every must be >= 1")
        self.target_rps = capacity_rps_per_replica * target_util_ratio
        self.season = season_length
        self.stored_seasons = stored_seasons
        self.smoothing = smoothing  # the spec's alpha/beta/gamma; None: tuned
        self.tune_every = tune_every
        self.refit_every = refit_every
        self.look_ahead = max(1, math.ceil(look_ahead_s / interval_s))
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.interval_s = interval_s
        self.behavior = behavior or Behavior()
        self.state = HpaState()
        self.history: list[float] = []
        self.dropped = 0  # values pruned so far (the window starts at this sync)
        self._tuned: Smoothing | None = None
        self._since_tune = 0
        self._hw: HoltWintersState | None = None
        self._hw_key: tuple[Smoothing, int, int] | None = None
        self._pred: np.ndarray | None = None  # refit_every: the last fit's forecasts
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
        parts: dict[str, float] = {"hpa": hpa, "predicted": 0}
        if len(self.history) >= min_history(self.season):
            if self.refit_every is None:
                p = self._parameters()
                parts.update(predicted=math.ceil(self._forecast(p)),
                             alpha=p.alpha, beta=p.beta, gamma=p.gamma)
            else:
                parts["predicted"] = self._hourly_forecast(self.refit_every)
        self._prune()
        hpa_n, pred_n = hpa, int(parts["predicted"])
        return self._finish(
            signals.now_s, current, max(hpa_n, pred_n),
            lambda final, _why: f"phpa: hpa {hpa_n}, predicted {pred_n} -> {final}",
            parts,
        )

    def _parameters(self) -> Smoothing:
        """The spec's parameters, or the tuning step's, re-estimated every ``tune_every``."""
        if self.smoothing is not None:
            return self.smoothing
        if self._tuned is None or self._since_tune >= self.tune_every:
            self._tuned = tune_add_add(self.history, self.season)
            self._since_tune = 0
        self._since_tune += 1
        return self._tuned

    def _forecast(self, p: Smoothing) -> float:
        """statsmodels' ``forecast(steps=1)`` of PHPA's fit on the stored history: carried
        forward by the newest value when nothing else changed, else fitted afresh."""
        n = len(self.history)
        key = (p, self.dropped, seasons_read(n, self.season))
        if self._hw is not None and self._hw_key == key and self._hw.n == n - 1:
            self._hw.update(self.history[-1])
        else:
            _, self._hw = fit_add_add(self.history, self.season, p)
            self._hw_key = key
        return self._hw.forecast()

    def _prune(self) -> None:
        """``PruneHistory``: drop the oldest whole seasons beyond ``storedSeasons`` (it rounds
        down, so between ``S * m`` and ``(S + 1) * m - 1`` values stay)."""
        extra = len(self.history) // self.season - self.stored_seasons
        if extra > 0:
            del self.history[: extra * self.season]
            self.dropped += extra * self.season

    def _hourly_forecast(self, refit_every: int) -> int:
        """The earlier approximation: an estimated fit every ``refit_every`` syncs, read
        ``look_ahead`` (plus the syncs since the fit) ahead."""
        if self._pred is None or self._since_fit >= refit_every:
            self._pred = holt_winters_forecast(
                np.asarray(self.history), self.season, self.look_ahead + refit_every
            )
            self._since_fit = 0
        idx = min(self._since_fit + self.look_ahead - 1, len(self._pred) - 1)
        self._since_fit += 1
        return max(0, math.ceil(float(self._pred[idx]) - 1e-9))
