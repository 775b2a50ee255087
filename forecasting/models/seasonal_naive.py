"""Seasonal naive with empirical residual quantiles: the reference every model must beat.

The forecast for step ``j`` repeats the value one season earlier (``m * ceil(j / m)`` steps
back). Its quantiles add the empirical quantiles of the same-lag errors
``y[t] - y[t - L]`` over the recent window, so the interval width is learnt from the data.
With no season (``m = 1``) it is the naive last-value forecast, whose error spread grows
with the horizon.
"""

from __future__ import annotations

import numpy as np

from forecasting.models._base import SeasonalFilled, empirical_quantiles
from forecasting.series import FloatArray

__all__ = ["SeasonalNaive"]


class SeasonalNaive(SeasonalFilled):
    """Seasonal naive forecaster.

    Args:
        season: season length in steps; ``None`` detects it (strongest season, else daily
            when two days are present, else no season).
        window_seasons: how many seasons of recent errors form the quantiles (at least
            ``min_window`` observations).
        min_window: minimum number of observations in the error window.
    """

    name = "seasonal_naive"

    def __init__(
        self, season: int | None = None, *, window_seasons: int = 4, min_window: int = 200
    ) -> None:
        super().__init__(season)
        self.window_seasons = window_seasons
        self.min_window = min_window

    def min_history(self, step_s: float) -> int:
        """One full season plus one observation (two when there is no season)."""
        return (self.season_arg or 1) + 1

    def _predict(self, h: int, quantiles: tuple[float, ...]) -> FloatArray:
        y = self._filled
        n = len(y)
        m = self.season
        steps = np.arange(1, h + 1)
        lags = m * np.ceil(steps / m).astype(np.int64)
        src = n - 1 + steps - lags
        # a lag longer than the history reaches back by whole seasons only
        while np.any(src < 0):
            src = np.where(src < 0, src + m, src)
        point = y[src]
        window = max(self.min_window, self.window_seasons * m)
        raw = self.history.values  # residuals only from truly observed pairs
        res = np.full((window, h), np.nan)
        for lag in np.unique(lags):
            if lag >= n:
                continue
            start = max(lag, n - window)
            e = raw[start:] - raw[start - lag : n - lag]
            cols = np.flatnonzero(lags == lag)
            res[window - len(e) :, cols] = e[:, None]
        return empirical_quantiles(point, res, quantiles)

    def _detail(self) -> str:
        return f"season={self.season}"
