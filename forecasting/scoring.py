"""Forecast accuracy metrics. All take actuals and forecasts as arrays; NaN actuals (gaps)
are ignored pairwise, so a collection gap never counts as an error."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from forecasting.series import FloatArray

__all__ = [
    "coverage",
    "mae",
    "mase",
    "mase_scale",
    "pinball",
    "rmse",
    "smape",
]


def _pair(actual: npt.ArrayLike, pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    a = np.asarray(actual, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if a.shape != p.shape:
        raise ValueError(f"actual and forecast differ in size: {a.shape} vs {p.shape}")
    ok = ~np.isnan(a) & ~np.isnan(p)
    return a[ok], p[ok]


def mae(actual: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Mean absolute error (NaN when no pair is observed)."""
    a, p = _pair(actual, pred)
    return float(np.mean(np.abs(a - p))) if a.size else float("nan")


def rmse(actual: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Root mean squared error."""
    a, p = _pair(actual, pred)
    return float(np.sqrt(np.mean((a - p) ** 2))) if a.size else float("nan")


def smape(actual: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Symmetric MAPE in percent (0..200); pairs where both are zero count as 0."""
    a, p = _pair(actual, pred)
    if not a.size:
        return float("nan")
    den = np.abs(a) + np.abs(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, 2 * np.abs(a - p) / den, 0.0)
    return float(100 * np.mean(r))


def mase_scale(history: npt.ArrayLike, season: int) -> float:
    """In-sample MAE of the seasonal naive forecast: the MASE denominator."""
    y = np.asarray(history, dtype=np.float64)
    m = max(1, season)
    if len(y) <= m:
        m = 1
    d = y[m:] - y[:-m]
    d = d[~np.isnan(d)]
    return float(np.mean(np.abs(d))) if d.size else float("nan")


def mase(actual: npt.ArrayLike, pred: npt.ArrayLike, scale: float) -> float:
    """Mean absolute scaled error: MAE divided by ``scale`` (see :func:`mase_scale`)."""
    if not scale or np.isnan(scale):
        return float("nan")
    return mae(actual, pred) / scale


def pinball(actual: npt.ArrayLike, pred_q: npt.ArrayLike, q: float) -> float:
    """Mean pinball (quantile) loss of the level-``q`` forecast."""
    a, p = _pair(actual, pred_q)
    if not a.size:
        return float("nan")
    d = a - p
    return float(np.mean(np.maximum(q * d, (q - 1) * d)))


def coverage(actual: npt.ArrayLike, lo: npt.ArrayLike, hi: npt.ArrayLike) -> float:
    """Share of observed actuals inside ``[lo, hi]``."""
    a = np.asarray(actual, dtype=np.float64).ravel()
    lo_a = np.asarray(lo, dtype=np.float64).ravel()
    hi_a = np.asarray(hi, dtype=np.float64).ravel()
    ok = ~np.isnan(a)
    if not ok.any():
        return float("nan")
    inside = (a[ok] >= lo_a[ok]) & (a[ok] <= hi_a[ok])
    return float(np.mean(inside))
