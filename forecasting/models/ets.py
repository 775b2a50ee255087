"""Holt-Winters (additive ETS with a damped trend) on statsmodels, with graceful degradation.

Model: ``statsmodels.tsa.holtwinters.ExponentialSmoothing`` with an additive damped trend
and an additive season (additive because traffic has real zeros, which multiplicative
seasons cannot take). The season is the longest detected one that the history covers
twice (on Wikipedia hourly a weekly season halves the error of a daily one), then the
shorter ones. With less than two full seasons the model degrades instead of crashing (the
PHPA anchor's known crash, its issue #74): seasonal -> damped trend without season -> simple
exponential smoothing, each tried in turn; only when all fail is
:class:`~forecasting.errors.ForecastFailed` raised.

Quantiles: the empirical quantiles of the one-step in-sample residuals, widened per
horizon step by the model's own error-propagation factor
``sqrt(1 + sum_{i<j} c_i**2)`` with ``c_i = alpha * (1 + beta * sum_{k<=i} phi**k) +
gamma * [i mod m == 0]`` (Hyndman et al., *Forecasting with Exponential Smoothing*, ch. 6),
so the interval grows with the horizon as the fitted smoothing implies.

Update: the new whole buckets are run through the Holt-Winters recursion from the end
states with the fitted smoothing parameters: the states a continued filter reaches,
exactly, in microseconds (tested against statsmodels re-filtering the whole history with
the same parameters and initial states).
The parameters are re-estimated only when ``refit_every_s`` of new data has arrived.

Long seasons at fine steps are fitted on coarse buckets (:mod:`forecasting.models._coarse`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from forecasting.errors import ForecastFailed
from forecasting.models._coarse import guarded, horizon_offsets, is_constant
from forecasting.models._coarse_model import CoarseForecaster
from forecasting.series import FloatArray

__all__ = ["ETS"]


@dataclass(frozen=True)
class _Spec:
    trend: bool
    season: int  # 0 = none

    @property
    def param_keys(self) -> tuple[str, ...]:
        keys: tuple[str, ...] = ("smoothing_level",)
        if self.trend:
            keys += ("smoothing_trend", "damping_trend")
        if self.season:
            keys += ("smoothing_seasonal",)
        return keys

    @property
    def label(self) -> str:
        if self.season:
            return f"damped trend + season {self.season}"
        return "damped trend" if self.trend else "level only"


class ETS(CoarseForecaster):
    """Holt-Winters / ETS(A,Ad,A) with fallbacks and residual quantiles.

    Args:
        seasons: season lengths in fine steps; ``None`` detects them.
        refit_every_s: seconds of new data after which ``update`` re-estimates the
            parameters (``None``: never on update).
        max_points: most recent coarse buckets a fit uses.
        max_season: longest season (coarse steps) the seasonal model takes; longer
            detected seasons are skipped in favour of shorter ones.
    """

    name = "ets"

    def __init__(
        self,
        seasons: list[int] | tuple[int, ...] | None = None,
        *,
        refit_every_s: float | None = 86400.0,
        max_points: int = 4032,
        max_season: int = 1008,
    ) -> None:
        super().__init__(seasons, refit_every_s=refit_every_s, max_points=max_points)
        self.max_season = max_season
        self.spec = _Spec(trend=False, season=0)
        self._y: FloatArray = np.zeros(0)
        self._res: Any = None
        self._params: dict[str, Any] = {}
        self._resid: FloatArray = np.zeros(0)
        self._constant: float | None = None
        self._level, self._trend, self._season = 0.0, 0.0, np.zeros(0)
        self.fallbacks: list[str] = []

    def min_history(self, step_s: float) -> int:
        """Ten observations: enough for simple exponential smoothing, the last fallback."""
        return 10

    def _min_coarse(self) -> int:
        return 10

    # ------------------------------------------------------------------ hooks
    def _fit_coarse(self, y: FloatArray) -> None:
        self._y = np.array(y, dtype=np.float64)
        self.fallbacks = []
        if is_constant(self._y):
            self._constant = float(self._y[-1])
            self.spec = _Spec(trend=False, season=0)
            return
        self._constant = None
        errors: list[str] = []
        for spec in self._candidates(len(self._y)):
            try:
                res = guarded(self.name, f"fit ({spec.label})", partial(self._fit_one, spec))
            except ForecastFailed as exc:
                errors.append(str(exc))
                self.fallbacks.append(spec.label)
                continue
            params = dict(res.params)
            if not all(np.isfinite(float(params[k])) for k in spec.param_keys):
                errors.append(f"{spec.label}: non-finite parameters")
                self.fallbacks.append(spec.label)
                continue
            self.spec, self._res, self._params = spec, res, params
            self._take_states()
            skip = spec.season or 2
            self._resid = np.asarray(res.resid, dtype=np.float64)[skip:]
            return
        raise ForecastFailed(f"{self.name}: every model variant failed: {'; '.join(errors)}")

    def _extend_coarse(self, y_new: FloatArray) -> None:
        self._y = np.concatenate([self._y, y_new])
        if self._constant is not None:
            if is_constant(self._y):
                self._constant = float(self._y[-1])
                return
            self._fit_coarse(self._y)  # it stopped being constant: estimate a real model
            return
        self._filter(y_new)

    def _predict_coarse(self, h: int, quantiles: tuple[float, ...]) -> FloatArray:
        if self._constant is not None:
            return np.full((len(quantiles), h), self._constant)
        point = self._point(h)
        offsets = horizon_offsets(self._resid, self._scale(h), quantiles)
        out: FloatArray = point[None, :] + offsets
        return out

    def _detail(self) -> str:
        model = "constant" if self._constant is not None else self.spec.label
        fb = f" fallbacks={'|'.join(self.fallbacks)}" if self.fallbacks else ""
        return f"{super()._detail()} model={model}{fb}"

    # --------------------------------------------------------------- helpers
    def _candidates(self, n: int) -> list[_Spec]:
        # the longest season covered twice first (a weekly season also models the days)
        out = [
            _Spec(trend=True, season=m) for m in sorted(self.plan.seasons, reverse=True)
            if m <= self.max_season and n >= 2 * m + 2
        ]
        if n >= 10:
            out.append(_Spec(trend=True, season=0))
        out.append(_Spec(trend=False, season=0))
        return out

    def _take_states(self) -> None:
        """Copy the end states of the statsmodels fit: level, trend, last season."""
        res, spec = self._res, self.spec
        self._level = float(np.asarray(res.level)[-1])
        self._trend = float(np.asarray(res.trend)[-1]) if spec.trend else 0.0
        m = spec.season
        self._season = (np.asarray(res.season, dtype=np.float64)[-m:].copy() if m
                        else np.zeros(0))

    def _filter(self, y_new: FloatArray) -> None:
        """Run new observations through the Holt-Winters recursion with fixed parameters.

        The same equations as statsmodels' ``_holt_win_add_add_dam``, on the end states
        only: O(new points), no re-estimation, no pass over the history.
        """
        p, spec = self._params, self.spec
        alpha = float(p["smoothing_level"])
        beta = float(p["smoothing_trend"]) if spec.trend else 0.0
        phi = float(p["damping_trend"]) if spec.trend else 0.0
        gamma = float(p["smoothing_seasonal"]) if spec.season else 0.0
        lvl, b, seas = self._level, self._trend, list(self._season)
        for y in np.asarray(y_new, dtype=np.float64):
            s_old = seas[0] if seas else 0.0
            new_lvl = alpha * (y - s_old) + (1 - alpha) * (lvl + phi * b)
            new_b = beta * (new_lvl - lvl) + (1 - beta) * phi * b if spec.trend else 0.0
            if seas:
                seas = [*seas[1:], gamma * (y - lvl - phi * b) + (1 - gamma) * s_old]
            lvl, b = new_lvl, new_b
        self._level, self._trend = lvl, b
        self._season = np.asarray(seas, dtype=np.float64)

    def _point(self, h: int) -> FloatArray:
        """``l + (phi + ... + phi**j) * b + s[j]`` from the end states."""
        point = np.full(h, self._level)
        if self.spec.trend:
            phi = float(self._params["damping_trend"])
            point += np.cumsum(phi ** np.arange(1, h + 1)) * self._trend
        if self.spec.season:
            point += self._season[np.arange(h) % self.spec.season]
        return point

    def _fit_one(self, spec: _Spec) -> Any:
        return _model(self._y, spec).fit()

    def _scale(self, h: int) -> FloatArray:
        """``sqrt`` of the ETS variance factor for steps ``1..h``."""
        p = self._params
        alpha = float(p.get("smoothing_level") or 0.0)
        beta = float(p.get("smoothing_trend") or 0.0) if self.spec.trend else 0.0
        phi = float(p.get("damping_trend") or 1.0) if self.spec.trend else 1.0
        gamma = float(p.get("smoothing_seasonal") or 0.0) if self.spec.season else 0.0
        i = np.arange(1, h, dtype=np.float64)
        phis = np.cumsum(phi ** i)
        c = alpha * (1 + beta * phis)
        if self.spec.season:
            c = c + gamma * ((np.arange(1, h) % self.spec.season) == 0)
        var = np.concatenate([[1.0], 1.0 + np.cumsum(c**2)])
        out: FloatArray = np.sqrt(var)
        return out


def _model(y: FloatArray, spec: _Spec, known: dict[str, Any] | None = None) -> Any:
    kwargs: dict[str, Any] = {
        "trend": "add" if spec.trend else None,
        "damped_trend": spec.trend,
        "seasonal": "add" if spec.season else None,
        "seasonal_periods": spec.season or None,
    }
    if known is not None:
        kwargs["initialization_method"] = "known"
        kwargs["initial_level"] = known["initial_level"]
        if spec.trend:
            kwargs["initial_trend"] = known["initial_trend"]
        if spec.season:
            kwargs["initial_seasonal"] = np.asarray(known["initial_seasons"])
    else:
        kwargs["initialization_method"] = "heuristic" if spec.season else "estimated"
    return ExponentialSmoothing(y, **kwargs)
