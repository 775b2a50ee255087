"""The one interface every forecaster implements.

Vocabulary follows statsforecast: ``fit`` on history, ``predict(h, quantiles)``, and
``update`` with new observations without a full refit. A forecaster is configured in its
constructor (season lengths, budgets) and holds only plain fitted state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

from forecasting.forecast import DEFAULT_QUANTILES, Forecast
from forecasting.series import Series

__all__ = ["Forecaster"]


@runtime_checkable
class Forecaster(Protocol):
    """Fit on a :class:`Series`, predict ``h`` steps of quantiles.

    Contract (checked for every registered model by ``tests/contract``):

    - ``fit`` raises :class:`~forecasting.errors.InsufficientHistory` when the history is
      shorter than the model needs, :class:`~forecasting.errors.ForecastFailed` when the
      model cannot be fitted on this data; it never returns a broken model.
    - ``predict`` returns a :class:`Forecast` starting at the end of the data seen so far,
      with ``h`` steps, the levels asked, quantiles monotone and non-negative.
    - ``update`` appends observations that continue the history (same step) and moves the
      forecast origin without a full refit; it is cheap enough for every controller tick.
    """

    #: registry name of the model, e.g. ``"seasonal_naive"``
    name: str

    def min_history(self, step_s: float) -> int:
        """Fewest observations ``fit`` accepts for data at this step."""
        ...

    def fit(self, series: Series) -> Self:
        """Fit on the history and return ``self``."""
        ...

    def update(self, new: Series) -> Self:
        """Add observations that continue the fitted history; return ``self``."""
        ...

    def predict(self, h: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Forecast:
        """Quantile forecast for the ``h`` steps after the last observation."""
        ...
