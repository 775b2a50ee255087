"""Quantile gradient boosting on lag and calendar features (scikit-learn).

One ``sklearn.ensemble.HistGradientBoostingRegressor(loss="quantile")`` per trained
quantile level (``levels``, by default those of
:data:`~forecasting.forecast.DEFAULT_QUANTILES`). Other levels asked at predict time are
interpolated between the trained ones on the normal-score scale (and extrapolated from the
outermost one beyond them), so any level works without retraining.

**Strategy: direct, with the horizon as a feature.** A row is a pair (origin ``o``,
step ``j``): its features are known at ``o`` and its target is ``y[o + j]``. One model per
level then covers every step of the horizon at once, so the quantiles are those of the
``j``-step-ahead error, not of a one-step error compounded by a recursion (recursive
quantile forecasts feed medians back and come out too narrow), and predicting is one
``predict`` call per level, whatever the horizon. Rows are drawn at random (seeded) from all
(origin, step) pairs of the history up to ``max_rows``.

Features of row (``o``, ``j``), with ``t = o + j`` and every level feature divided by the
recent mean ``s`` (mean of the last season at ``o``) so the trees learn shapes, not levels,
and the target being ``y[t] / s``:

- ``j``; the last three values ``y[o]``, ``y[o-1]``, ``y[o-2]`` and the mean of the last six;
- for each season ``p`` (up to two): ``y[t - p*ceil(j/p)]`` and one season before that
  (the seasonal-naive values, the strongest predictors on seasonal traffic);
- calendar of the target bucket: hour of day and day of week when timestamps are absolute,
  else the phase of ``t`` within each detected season.

Calibration: quantile trees fitted in-sample come out too narrow. Before the final fit,
a half-size ensemble is trained on rows whose targets precede the most recent fifth of the
history and predicts the rows whose origins lie in it; for each level the factor on
``(quantile - median)`` that gives that level's coverage there (split conformal) is kept
and applied to the final models' quantiles.

Steps beyond the trained horizon (one primary season, at most ``max_train_horizon``
coarse steps) reuse the last trained ``j`` with the true seasonal lags.

Update keeps the trees and only refreshes the features from the longer history; the
trees are retrained once ``refit_every_s`` of new data has arrived. Long seasons at fine
steps are fitted on coarse buckets (:mod:`forecasting.models._coarse`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from statistics import NormalDist
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from forecasting.forecast import DEFAULT_QUANTILES, validate_quantiles
from forecasting.models._coarse import guarded, is_constant
from forecasting.models._coarse_model import CoarseForecaster
from forecasting.series import FloatArray

__all__ = ["QuantileGBM"]

_SHORT_LAGS = 3
_MEAN_WINDOW = 6
_MAX_SEASONS = 2
_CALIB_FRACTION = 0.2


class QuantileGBM(CoarseForecaster):
    """Direct multi-horizon quantile gradient boosting.

    Args:
        seasons: season lengths in fine steps; ``None`` detects them.
        levels: quantile levels to train one model each for.
        max_rows: most training rows (random (origin, step) pairs).
        max_iter: boosting iterations per model.
        max_train_horizon: most coarse steps ahead the rows cover.
        seed: seed of the row sampling and of the trees (fits are deterministic).
        calibrate: widen (or narrow) the quantiles so that they cover as they should on
            the most recent fifth of the history (split conformal; costs ~50 % more fit).
        refit_every_s: seconds of new data after which ``update`` retrains
            (``None``: never on update).
        max_points: most recent coarse buckets a fit uses.
    """

    name = "gbm"

    def __init__(
        self,
        seasons: list[int] | tuple[int, ...] | None = None,
        *,
        levels: Sequence[float] = DEFAULT_QUANTILES,
        max_rows: int = 4000,
        max_iter: int = 80,
        max_train_horizon: int = 144,
        seed: int = 0,
        calibrate: bool = True,
        refit_every_s: float | None = 86400.0,
        max_points: int = 4032,
    ) -> None:
        super().__init__(seasons, refit_every_s=refit_every_s, max_points=max_points)
        lv = validate_quantiles(levels)
        if 0.5 not in lv:
            lv = validate_quantiles((*lv, 0.5))
        if max_rows < 100 or max_iter < 1 or max_train_horizon < 1:
            raise ValueError(
                "max_rows must be >= 100, max_iter and max_train_horizon >= 1; got "
                f"{max_rows}, {max_iter}, {max_train_horizon}"
            )
        self.levels = lv
        self.max_rows = max_rows
        self.max_iter = max_iter
        self.max_train_horizon = max_train_horizon
        self.seed = seed
        self._y: FloatArray = np.zeros(0)
        self._models: list[Any] = []
        self._train_h = 1
        self._floor = 1e-9
        self._constant: float | None = None
        self._start_idx = 0  # absolute coarse index of self._y[0]
        self._keep = np.ones(0, dtype=bool)  # feature columns the trees were trained on
        self._widen = np.ones(len(lv))  # conformal factor per level
        self.calibrate = calibrate

    def min_history(self, step_s: float) -> int:
        """Twenty-four observations: a few hundred (origin, step) rows at least."""
        return 24

    # ------------------------------------------------------------------ hooks
    def _fit_coarse(self, y: FloatArray) -> None:
        self._y = np.array(y, dtype=np.float64)
        view = self._view
        step = self.plan.step_s
        start_s = view.coarse.start_s if view is not None else self.history.start_s
        self._start_idx = round(start_s / step)
        if is_constant(self._y):
            self._constant = float(self._y[-1])
            self._models = []
            return
        self._constant = None
        n = len(self._y)
        self._floor = max(1e-9, 0.05 * float(np.mean(self._y)))
        p0 = self.plan.seasons[0] if self.plan.seasons else 0
        self._train_h = max(1, min(self.max_train_horizon, p0 or 48, n // 3))
        rng = np.random.default_rng(self.seed)
        n_pairs = (n - 1) * self._train_h
        size = min(self.max_rows, n_pairs)
        flat = rng.choice(n_pairs, size=size, replace=False)
        o = flat // self._train_h
        j = flat % self._train_h + 1
        ok = o + j < n
        o, j = o[ok], j[ok]
        x, s = self._features(o, j)
        # a lag that reaches before the start in every row (e.g. two weeks back in a
        # two-week history) carries nothing, and sklearn's binning fails on it: drop it
        self._keep = ~np.all(np.isnan(x), axis=0)
        x = x[:, self._keep]
        target = self._y[o + j] / s
        self._widen = self._calibration(x, target, o, j, n)
        self._models = self._train(x, target, self.max_iter)

    def _train(self, x: FloatArray, target: FloatArray, max_iter: int) -> list[Any]:
        models = []
        for q in self.levels:
            est = HistGradientBoostingRegressor(
                loss="quantile", quantile=q, max_iter=max_iter, learning_rate=0.1,
                max_leaf_nodes=15, min_samples_leaf=20, early_stopping=False,
                random_state=self.seed,
            )
            models.append(guarded(self.name, f"fit q{q:g}", partial(est.fit, x, target)))
        return models

    def _calibration(
        self, x: FloatArray, target: FloatArray, o: np.ndarray[Any, np.dtype[np.int64]],
        j: np.ndarray[Any, np.dtype[np.int64]], n: int,
    ) -> FloatArray:
        """Per level, the factor on ``(q_level - median)`` that gives the level's coverage on
        held-out recent rows (split conformal); 1 where there is too little data."""
        widen = np.ones(len(self.levels))
        if not self.calibrate:
            return widen
        cut = int(n * (1 - _CALIB_FRACTION))
        train, held = o + j < cut, o >= cut
        if train.sum() < 200 or held.sum() < 50:
            return widen
        stage = self._train(x[train], target[train], max(10, self.max_iter // 2))
        pred = np.stack([
            np.asarray(guarded(self.name, "calibrate", partial(m.predict, x[held])),
                       dtype=np.float64)
            for m in stage
        ])
        mid = self.levels.index(0.5)
        dev = target[held] - pred[mid]
        for i, q in enumerate(self.levels):
            w = pred[i] - pred[mid]
            ok = np.abs(w) > 1e-9
            if i == mid or ok.sum() < 20:
                continue
            c = float(np.quantile(dev[ok] / w[ok], q if q > 0.5 else 1 - q))
            widen[i] = min(max(c, 0.5), 4.0)
        return widen

    def _extend_coarse(self, y_new: FloatArray) -> None:
        self._y = np.concatenate([self._y, y_new])
        if self._constant is not None and not is_constant(self._y):
            self._fit_coarse(self._y)  # it stopped being constant: train real trees
        elif self._constant is not None:
            self._constant = float(self._y[-1])

    def _predict_coarse(self, h: int, quantiles: tuple[float, ...]) -> FloatArray:
        if self._constant is not None:
            return np.full((len(quantiles), h), self._constant)
        n = len(self._y)
        o = np.full(h, n - 1)
        j = np.arange(1, h + 1)
        x, s = self._features(o, j)
        x = x[:, self._keep]
        trained = np.stack([
            np.asarray(guarded(self.name, "predict", partial(m.predict, x)), dtype=np.float64)
            for m in self._models
        ])
        mid = trained[self.levels.index(0.5)]
        trained = (mid[None, :] + self._widen[:, None] * (trained - mid[None, :])) * s[None, :]
        trained = np.sort(trained, axis=0)
        return _interpolate_levels(self.levels, trained, quantiles)

    def _detail(self) -> str:
        return f"{super()._detail()} train_h={self._train_h} levels={len(self.levels)}"

    # --------------------------------------------------------------- features
    def _features(
        self, o: np.ndarray[Any, np.dtype[np.int64]], j: np.ndarray[Any, np.dtype[np.int64]]
    ) -> tuple[FloatArray, FloatArray]:
        """Feature matrix and scale for rows (origin ``o``, step ``j``)."""
        y = self._y
        csum = np.concatenate([[0.0], np.cumsum(y)])
        seasons = self.plan.seasons[:_MAX_SEASONS]
        w = max(1, seasons[0] if seasons else 24)
        lo = np.maximum(0, o + 1 - w)
        s = np.maximum((csum[o + 1] - csum[lo]) / (o + 1 - lo), self._floor)
        t = o + j
        cols: list[FloatArray] = [np.minimum(j, self._train_h).astype(np.float64)]
        for lag in range(_SHORT_LAGS):
            cols.append(_take(y, o - lag) / s)
        lo6 = np.maximum(0, o + 1 - _MEAN_WINDOW)
        cols.append((csum[o + 1] - csum[lo6]) / (o + 1 - lo6) / s)
        for p in seasons:
            back = t - p * np.ceil(j / p).astype(np.int64)
            cols.append(_take(y, back) / s)
            cols.append(_take(y, back - p) / s)
        abs_t = self._start_idx + t
        if self.history.absolute:
            sec = abs_t.astype(np.float64) * self.plan.step_s
            cols.append((sec % 86400.0) / 3600.0)
            # 1970-01-01 was a Thursday: shift so that Monday = 0
            cols.append(np.floor(sec / 86400.0 + 3.0) % 7.0)
        else:
            for p in seasons:
                cols.append((abs_t % p).astype(np.float64) / p)
        x: FloatArray = np.column_stack(cols)
        return x, s


def _take(y: FloatArray, idx: np.ndarray[Any, np.dtype[np.int64]]) -> FloatArray:
    """``y[idx]`` with ``NaN`` where ``idx`` is before the start (trees handle NaN)."""
    out = np.full(len(idx), np.nan)
    ok = idx >= 0
    out[ok] = y[idx[ok]]
    return out


def _interpolate_levels(
    levels: tuple[float, ...], values: FloatArray, wanted: tuple[float, ...]
) -> FloatArray:
    """Quantiles at ``wanted`` levels from those at ``levels`` (normal-score scale)."""
    nd = NormalDist()
    z = np.array([nd.inv_cdf(q) for q in levels])
    med = values[levels.index(0.5)]
    out = np.empty((len(wanted), values.shape[1]))
    for i, q in enumerate(wanted):
        if q in levels:
            out[i] = values[levels.index(q)]
            continue
        zq = nd.inv_cdf(q)
        if z[0] <= zq <= z[-1]:
            k = int(np.searchsorted(z, zq))
            w = (zq - z[k - 1]) / (z[k] - z[k - 1])
            out[i] = (1 - w) * values[k - 1] + w * values[k]
        else:
            edge = 0 if zq < z[0] else len(levels) - 1
            ratio = zq / z[edge] if not math.isclose(z[edge], 0.0) else 1.0
            out[i] = med + (values[edge] - med) * ratio
    return out
