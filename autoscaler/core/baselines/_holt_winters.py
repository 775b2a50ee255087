"""Additive Holt-Winters with fixed smoothing parameters, as statsmodels runs it for PHPA.

PHPA's ``algorithms/holt_winters/holt_winters.py`` calls statsmodels
``ExponentialSmoothing(series, trend, seasonal, seasonal_periods,
initialization_method="estimated")`` and ``fit(smoothing_level=alpha, smoothing_trend=beta,
smoothing_seasonal=gamma, optimized=False)``, then prints ``ceil(forecast(steps=1)[0])``.
With ``optimized=False`` nothing is estimated: the initial states are statsmodels'
heuristic ones (``_initialization_heuristic``, Hyndman et al. section 2.6, used by
"estimated" once there are ``10 + 2 * (m // 2)`` values), and the fit is the plain
recursion. This module is that computation for ``trend="add", seasonal="add"`` (no damping,
no Box-Cox), written so that it can also be carried forward one value at a time
(:class:`HoltWintersState`): statsmodels' Python loop takes 0.1-0.25 s per fit on 2-3
seasons of 15 s syncs, and PHPA fits on every sync.

The arithmetic follows statsmodels' ``_predict`` term by term, so the results agree to the
last bits, not only to a tolerance (``tests/unit/scaling/test_phpa.py``).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "HoltWintersState",
    "Smoothing",
    "fit_add_add",
    "heuristic_init",
    "min_history",
    "seasons_read",
    "tune_add_add",
]


@dataclass(frozen=True)
class Smoothing:
    """Holt-Winters smoothing parameters: ``alpha`` (level), ``beta`` (trend), ``gamma``
    (season); statsmodels' ``smoothing_level``/``smoothing_trend``/``smoothing_seasonal``."""

    alpha: float
    beta: float
    gamma: float


def min_history(season: int) -> int:
    """Values PHPA needs before it runs Holt-Winters: ``2 * m`` and ``10 + 2 * (m // 2)``
    (``internal/prediction/holtwinters/holtwinters.go``, both from statsmodels)."""
    return max(2 * season, 10 + 2 * (season // 2))


def seasons_read(n: int, season: int) -> int:
    """Seasons of a history of ``n`` values that the heuristic initialization reads
    (statsmodels: ``min(5, n // m)``, at least enough for 10 smoothed values)."""
    min_obs = 10 + 2 * (season // 2)
    return max(min(5, n // season), math.ceil(min_obs / season))


def heuristic_init(y: Sequence[float] | np.ndarray, season: int) -> tuple[float, float, np.ndarray]:
    """statsmodels' heuristic initial level, trend and seasonals (additive trend and season)
    for the series ``y``: a centred moving average over the first ``min(5, n // m)``
    seasons, the mean detrended value per season position (normalised to sum to 0), and a
    straight line through the first 10 values of the moving average."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < min_history(season):
        raise ValueError(f"need {min_history(season)} values for season {season}, got {len(y)}")
    k = seasons_read(len(y), season)
    series = pd.Series(y[: season * k])
    trend = series.rolling(season, center=True).mean()
    if season % 2 == 0:
        trend = trend.shift(-1).rolling(2).mean()
    detrended = series - trend
    tmp = np.full(k * season, np.nan)
    tmp[: len(detrended)] = detrended.to_numpy()
    seasonal = np.nanmean(tmp.reshape(k, season).T, axis=1)
    seasonal -= np.mean(seasonal)
    smooth = trend.dropna().to_numpy()
    exog = np.c_[np.ones(10), np.arange(10) + 1]
    coef = np.squeeze(np.linalg.pinv(exog).dot(np.atleast_2d(smooth).T[:10]))
    return float(coef[0]), float(coef[1]), seasonal


class HoltWintersState:
    """The recursion's state after the values fed so far: level, trend and the last ``m``
    seasonals (oldest first). ``forecast()`` is the one-step forecast; ``update(y)`` adds a
    value in O(1)."""

    def __init__(self, p: Smoothing, level: float, trend: float, seasonals: Iterable[float]):
        self.p = p
        self.level, self.trend = level, trend
        self.seasonals: deque[float] = deque(float(s) for s in seasonals)
        self.n = 0  # values fed

    def forecast(self) -> float:
        """The next value: ``l + b + s`` with the seasonal of one season before it."""
        return (self.level + self.trend) + self.seasonals[0]

    def update(self, y: float) -> float:
        """Feed ``y``; returns the one-step fitted value it was compared with."""
        a, b, g = self.p.alpha, self.p.beta, self.p.gamma
        lvl, tr = self.level, self.trend
        s_old = self.seasonals.popleft()
        fitted = (lvl + tr) + s_old
        # the terms in statsmodels' order (ExponentialSmoothing._predict, seasonal "add")
        self.level = (a * y - a * s_old) + (1 - a) * (lvl + tr)
        self.trend = b * (self.level - lvl) + (1 - b) * tr
        self.seasonals.append((g * y - g * (lvl + tr)) + (1 - g) * s_old)
        self.n += 1
        return fitted


def fit_add_add(
    y: Sequence[float] | np.ndarray, season: int, p: Smoothing
) -> tuple[np.ndarray, HoltWintersState]:
    """PHPA's fit on ``y``: fitted values (statsmodels' ``fittedvalues``) and the state
    after the last value (``state.forecast()`` is ``forecast(steps=1)``)."""
    level, trend, seasonal = heuristic_init(y, season)
    state = HoltWintersState(p, level, trend, seasonal)
    values = np.asarray(y, dtype=np.float64).tolist()
    fitted = np.fromiter((state.update(v) for v in values), dtype=np.float64, count=len(values))
    return fitted, state


def tune_add_add(y: Sequence[float] | np.ndarray, season: int) -> Smoothing:
    """Maximum-likelihood ``alpha``, ``beta``, ``gamma`` for :func:`fit_add_add` on ``y``:
    statsmodels' optimized fit (least squares, its Gaussian likelihood) of the same model,
    with the same heuristic initial states held fixed. 2-3 s on 2-3 seasons of 15 s syncs.

    PHPA takes the three from the spec or from its ``runtimeTuningFetchHook``; this is what
    such a hook would compute."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        # convergence warnings on short or flat histories; the estimate is still usable
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(
            np.asarray(y, dtype=np.float64),
            trend="add",
            seasonal="add",
            seasonal_periods=season,
            initialization_method="heuristic",
        ).fit()
    par = fit.params
    return Smoothing(
        float(par["smoothing_level"]), float(par["smoothing_trend"]),
        float(par["smoothing_seasonal"]),
    )
