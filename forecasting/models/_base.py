"""Shared plumbing for the models: history keeping, checks, empirical quantiles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from forecasting.errors import InsufficientHistory, NotFitted, SeriesError
from forecasting.forecast import DEFAULT_QUANTILES, Forecast, validate_quantiles
from forecasting.seasonality import primary_season
from forecasting.series import FloatArray, Series, fill_for_fit

__all__ = ["BaseForecaster", "SeasonalFilled", "empirical_quantiles"]


def empirical_quantiles(
    point: FloatArray, residuals: FloatArray, quantiles: Sequence[float]
) -> FloatArray:
    """``point + quantile(residuals)`` for every level; shape ``(len(quantiles), h)``.

    ``residuals`` is either one pool for every step (1-D) or one pool per step (2-D,
    ``(n, h)``); ``NaN`` residuals are ignored. With no usable residual the quantiles
    collapse onto the point forecast.
    """
    qs = np.asarray(quantiles, dtype=np.float64)
    h = len(point)
    res = np.asarray(residuals, dtype=np.float64)
    if res.ndim == 1:
        res = res[~np.isnan(res)]
        if res.size == 0:
            return np.tile(point, (len(qs), 1))
        offs = np.quantile(res, qs)
        out: FloatArray = point[None, :] + offs[:, None]
        return out
    out = np.empty((len(qs), h))
    for j in range(h):
        col = res[:, j]
        col = col[~np.isnan(col)]
        out[:, j] = point[j] + (np.quantile(col, qs) if col.size else 0.0)
    return out


class BaseForecaster:
    """Keeps the history, checks inputs and implements ``update`` by appending.

    Subclasses implement :meth:`_fit` (on ``self.history``), :meth:`_predict` (point and
    quantiles) and optionally :meth:`_on_update` (cheap state refresh after new data;
    the default refits, which subclasses with expensive fits override).
    """

    name: str = "base"
    #: how many observations of history at most are kept (older are dropped on update)
    max_keep: int = 200_000

    def __init__(self) -> None:
        self._history: Series | None = None

    # -------------------------------------------------------------- interface
    def min_history(self, step_s: float) -> int:
        """Fewest observations ``fit`` accepts."""
        return 2

    def fit(self, series: Series) -> Self:
        """Fit on ``series`` and return ``self``."""
        need = self.min_history(series.step_s)
        if series.n_observed < need:
            raise InsufficientHistory(
                f"{self.name} needs at least {need} observations at step {series.step_s:g} s, "
                f"got {series.n_observed}",
                needed=need,
                got=series.n_observed,
            )
        self._history = series
        self._fit()
        return self

    def update(self, new: Series) -> Self:
        """Append observations that continue the history and refresh the state cheaply."""
        hist = self.history
        if new.kind != hist.kind:
            raise SeriesError(f"update has kind {new.kind!r}, history has {hist.kind!r}")
        merged = hist.append(new)
        if len(merged) > self.max_keep:
            merged = merged.tail(self.max_keep)
        self._history = merged
        self._on_update(len(new))
        return self

    def predict(self, h: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Forecast:
        """Quantile forecast for the ``h`` steps after the last observation."""
        if h < 1:
            raise ValueError(f"horizon must be at least 1 step, got {h}")
        hist = self.history
        qs = validate_quantiles(quantiles)
        values = self._predict(h, qs)
        return Forecast(
            start_s=hist.end_s, step_s=hist.step_s, quantiles=qs, values=values,
            model=self.name, kind=hist.kind, detail=self._detail(),
        )

    # ---------------------------------------------------------------- helpers
    @property
    def history(self) -> Series:
        """The history seen so far (fit data plus updates)."""
        if self._history is None:
            raise NotFitted(f"{self.name}: call fit() before predict() or update()")
        return self._history

    def _detail(self) -> str:
        return ""

    # ------------------------------------------------------- for subclasses
    def _fit(self) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _on_update(self, n_new: int) -> None:
        self._fit()

    def _predict(self, h: int, quantiles: tuple[float, ...]) -> FloatArray:
        raise NotImplementedError  # pragma: no cover - abstract


class SeasonalFilled(BaseForecaster):
    """A model that works on a gap-free copy of its history (``_filled``) with one season:
    given (``season_arg``) or detected at fit time (the strongest season; none when it is as
    long as the history). An update only refreshes the copy; the season stays as fitted."""

    def __init__(self, season: int | None) -> None:
        super().__init__()
        if season is not None and season < 1:
            raise ValueError(f"season must be >= 1 step, got {season}")
        self.season_arg = season
        self.season = season or 1
        self._filled: FloatArray = np.zeros(0)

    def _fit(self) -> None:
        hist = self.history
        if self.season_arg is None:
            self.season = primary_season(hist)
            if self.season >= len(hist):
                self.season = 1
        self._filled = fill_for_fit(hist, season=self.season)

    def _on_update(self, n_new: int) -> None:
        self._filled = fill_for_fit(self.history, season=self.season)
