"""The typed result of every forecaster: quantile levels × horizon, with timestamps."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forecasting.errors import ForecastingError
from forecasting.series import FloatArray, Series

__all__ = ["DEFAULT_QUANTILES", "Forecast", "validate_quantiles"]

#: The quantile levels a forecaster returns when the caller asks for none.
DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.5, 0.9, 0.95, 0.99)


def validate_quantiles(levels: Sequence[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated quantile levels, each strictly between 0 and 1.

    Raises:
        ForecastingError: no level given, or a level outside (0, 1).
    """
    qs = tuple(sorted({float(q) for q in levels}))
    if not qs:
        raise ForecastingError("at least one quantile level is needed")
    for q in qs:
        if not 0.0 < q < 1.0:
            raise ForecastingError(f"quantile levels must lie in (0, 1), got {q}")
    return qs


@dataclass(frozen=True, eq=False)
class Forecast:
    """Quantile forecasts for ``h`` steps after the end of the fitted history.

    ``values[i, j]`` is quantile ``quantiles[i]`` of the bucket that starts at
    ``start_s + j * step_s``. On construction the quantiles are made monotone across levels
    (a sorted rearrangement per step, which never worsens pinball loss) and clipped at zero
    (demand is non-negative).

    Args:
        start_s: start of the first forecast bucket (= end of the history), seconds.
        step_s: bucket length, seconds.
        quantiles: quantile levels, increasing.
        values: array of shape ``(len(quantiles), h)``.
        model: name of the model that made it (``auto`` reports its choice in ``detail``).
        kind: the kind of the forecast series (see :class:`~forecasting.series.Series`).
        detail: free text: chosen model, fallbacks taken.
    """

    start_s: float
    step_s: float
    quantiles: tuple[float, ...]
    values: FloatArray
    model: str
    kind: str = "count"
    detail: str = ""

    def __post_init__(self) -> None:
        qs = validate_quantiles(self.quantiles)
        if qs != tuple(self.quantiles):
            raise ForecastingError(f"quantiles must be sorted and unique, got {self.quantiles}")
        v = np.array(self.values, dtype=np.float64, copy=True)
        if v.ndim != 2 or v.shape[0] != len(qs):
            raise ForecastingError(
                f"values must have shape (n_quantiles={len(qs)}, h), got {v.shape}"
            )
        if not np.all(np.isfinite(v)):
            raise ForecastingError(f"model {self.model!r} produced non-finite forecasts")
        v = np.sort(np.maximum(v, 0.0), axis=0)
        v.setflags(write=False)
        object.__setattr__(self, "values", v)

    @property
    def horizon(self) -> int:
        """Number of forecast steps."""
        return int(self.values.shape[1])

    @property
    def timestamps(self) -> FloatArray:
        """Start time of every forecast bucket."""
        return self.start_s + self.step_s * np.arange(self.horizon, dtype=np.float64)

    def quantile(self, q: float) -> FloatArray:
        """The forecast at level ``q``: exact when computed, else linearly interpolated
        between the neighbouring levels (clamped to the outermost ones)."""
        qs = self.quantiles
        i = bisect.bisect_left(qs, q)
        row: FloatArray
        if i < len(qs) and abs(qs[i] - q) <= 1e-8 + 1e-5 * abs(q):  # np.isclose's tolerance
            row = self.values[i]
            return row
        if i == 0:
            row = self.values[0]
            return row
        if i >= len(qs):
            row = self.values[-1]
            return row
        w = (q - qs[i - 1]) / (qs[i] - qs[i - 1])
        out: FloatArray = (1 - w) * self.values[i - 1] + w * self.values[i]
        return out

    @property
    def median(self) -> FloatArray:
        """The 0.5 quantile."""
        return self.quantile(0.5)

    def as_series(self, q: float = 0.5) -> Series:
        """One quantile as a :class:`Series` (for plotting and chaining)."""
        return Series(
            start_s=self.start_s, step_s=self.step_s, values=self.quantile(q),
            kind="count" if self.kind == "count" else ("rate" if self.kind == "rate" else "gauge"),
            name=f"{self.model} q{q:g}",
        )

    def head(self, h: int) -> Forecast:
        """The first ``h`` steps."""
        return Forecast(
            start_s=self.start_s, step_s=self.step_s, quantiles=self.quantiles,
            values=self.values[:, :h], model=self.model, kind=self.kind, detail=self.detail,
        )
