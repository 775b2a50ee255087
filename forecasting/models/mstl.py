"""MSTL decomposition + a small ARIMA on the deseasonalised series (statsmodels).

Fit: ``statsmodels.tsa.seasonal.MSTL`` splits the (coarse) history into one seasonal
component per detected season that the history covers at least twice (e.g. daily and
weekly), a trend and a remainder. The seasonal components are projected forward by
repeating their last cycle; ``trend + remainder`` (the deseasonalised series) is modelled by
``statsmodels.tsa.arima.model.ARIMA`` (order ``(1, 1, 1)`` by default), whose forecast is
added back. With no season at all the model is that ARIMA on the series itself.

Quantiles: the empirical quantiles of the ARIMA's standardised one-step residuals, scaled
per horizon step by ``sqrt(se_j**2 + v_s)``: the ARIMA's forecast standard error (the
interval grows as the model's own error propagation says, with the residuals' real shape
instead of a normal) plus the variance ``v_s`` of the cycle-to-cycle change of the seasonal
components (the error of repeating the last cycle).

Update: new whole buckets are deseasonalised with the projected seasonal components and
appended to the ARIMA state with fixed parameters (``ARIMAResults.extend``): a Kalman
filter step per bucket, no re-estimation. The decomposition and the ARIMA are refitted
once ``refit_every_s`` of new data has arrived.

Long seasons at fine steps are fitted on coarse buckets (:mod:`forecasting.models._coarse`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from statsmodels.tsa.arima.model import ARIMA
from statsmodels.tsa.seasonal import MSTL as _MSTL

from forecasting.models._coarse import guarded, horizon_offsets, is_constant
from forecasting.models._coarse_model import CoarseForecaster
from forecasting.series import FloatArray

__all__ = ["MSTLForecaster"]


class MSTLForecaster(CoarseForecaster):
    """MSTL seasonal decomposition with an ARIMA on trend + remainder.

    Args:
        seasons: season lengths in fine steps; ``None`` detects them.
        order: ARIMA ``(p, d, q)`` for the deseasonalised series.
        refit_every_s: seconds of new data after which ``update`` refits
            (``None``: never on update).
        max_points: most recent coarse buckets a fit uses.
    """

    name = "mstl"

    def __init__(
        self,
        seasons: list[int] | tuple[int, ...] | None = None,
        *,
        order: tuple[int, int, int] = (1, 1, 1),
        refit_every_s: float | None = 86400.0,
        max_points: int = 4032,
    ) -> None:
        super().__init__(seasons, refit_every_s=refit_every_s, max_points=max_points)
        if len(order) != 3 or min(order) < 0:
            raise ValueError(f"order must be three non-negative integers, got {order!r}")
        self.order = (int(order[0]), int(order[1]), int(order[2]))
        self.periods: tuple[int, ...] = ()
        self._cycles: list[FloatArray] = []  # last cycle of each seasonal component
        self._n_fit = 0  # coarse buckets at the last fit
        self._n_seen = 0  # coarse buckets the state has taken
        self._arima: Any = None
        self._resid: FloatArray = np.zeros(0)
        self._constant: float | None = None
        self._y: FloatArray = np.zeros(0)
        self._season_var = 0.0

    def min_history(self, step_s: float) -> int:
        """Sixteen observations: the ARIMA alone, when no season is covered twice."""
        return 16

    # ------------------------------------------------------------------ hooks
    def _fit_coarse(self, y: FloatArray) -> None:
        self._y = np.array(y, dtype=np.float64)
        n = len(self._y)
        self._n_fit = self._n_seen = n
        if is_constant(self._y):
            self._constant = float(self._y[-1])
            self.periods, self._cycles = (), []
            return
        self._constant = None
        self.periods = tuple(sorted(p for p in set(self.plan.seasons) if n >= 2 * p + 1))
        if self.periods:
            dec = guarded(self.name, "MSTL decomposition", lambda: _MSTL(
                self._y, periods=self.periods if len(self.periods) > 1 else self.periods[0],
                stl_kwargs={"robust": False},
            ).fit())
            seasonal = np.asarray(dec.seasonal, dtype=np.float64).reshape(n, -1)
            self._cycles = [seasonal[n - p :, i].copy() for i, p in enumerate(self.periods)]
            # how much each seasonal component changes from one cycle to the next: the
            # error of projecting the last cycle forward, added to the ARIMA's variance
            self._season_var = float(sum(
                np.var(seasonal[p:, i] - seasonal[:-p, i])
                for i, p in enumerate(self.periods)
            ))
            deseason = self._y - seasonal.sum(axis=1)
        else:
            self._cycles = []
            self._season_var = 0.0
            deseason = self._y
        order = self.order
        self._arima = guarded(self.name, f"ARIMA{order} fit", lambda: ARIMA(
            deseason, order=order, trend="n" if order[1] else "c",
        ).fit())
        resid = np.asarray(self._arima.resid, dtype=np.float64)[max(1, order[1]) :]
        sd = float(np.std(resid)) if resid.size else 0.0
        self._resid = resid / sd if sd > 0 else np.zeros(0)

    def _extend_coarse(self, y_new: FloatArray) -> None:
        self._y = np.concatenate([self._y, y_new])
        if self._constant is not None:
            if is_constant(self._y):
                self._constant = float(self._y[-1])
                self._n_seen = len(self._y)
                return
            self._fit_coarse(self._y)
            return
        steps = np.arange(self._n_seen - self._n_fit, self._n_seen - self._n_fit + len(y_new))
        deseason = y_new - self._seasonal(steps)
        self._arima = guarded(self.name, "ARIMA extend", lambda: self._arima.extend(deseason))
        self._n_seen += len(y_new)

    def _predict_coarse(self, h: int, quantiles: tuple[float, ...]) -> FloatArray:
        if self._constant is not None:
            return np.full((len(quantiles), h), self._constant)

        def run() -> tuple[FloatArray, FloatArray]:
            fc = self._arima.get_forecast(h)
            return (np.asarray(fc.predicted_mean, dtype=np.float64),
                    np.asarray(fc.se_mean, dtype=np.float64))

        mean, se = guarded(self.name, "ARIMA forecast", run)
        steps = np.arange(self._n_seen - self._n_fit, self._n_seen - self._n_fit + h)
        point = mean + self._seasonal(steps)
        scale = np.sqrt(se**2 + self._season_var)
        out: FloatArray = point[None, :] + horizon_offsets(self._resid, scale, quantiles)
        return out

    def _detail(self) -> str:
        periods = ",".join(str(p) for p in self.periods) or "none"
        return f"{super()._detail()} mstl_periods={periods} arima={self.order}"

    # --------------------------------------------------------------- helpers
    def _seasonal(self, steps: np.ndarray[Any, np.dtype[np.int64]]) -> FloatArray:
        """Sum of the projected seasonal components ``steps`` buckets after the fit end."""
        out = np.zeros(len(steps))
        for cycle in self._cycles:
            out += cycle[steps % len(cycle)]
        return out
