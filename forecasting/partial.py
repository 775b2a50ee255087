"""The bucket in progress: condition a forecast's first bucket on what has already been
observed of it.

A forecaster sees complete buckets only. At a coarse forecast step (the 10-minute
ServeGen traces, the hourly Wikipedia one) its first bucket is the one in progress, and
its interval, made before the bucket began, is held for the whole bucket even after the
new level has been observed for minutes. :func:`condition_first_bucket` replaces that
bucket's quantiles with the observed part's mean plus a calibrated change: for each of the
most recent complete buckets, how far the mean of the rest of the bucket moved from the
mean of its first ``n`` fine points (``n`` as many as are observed now), as a share of the
bucket's level, read at each quantile level with the split-conformal correction. Where the
level holds within a bucket the changes are near 0 and the interval collapses onto the
observed level; where it does not (noisy minutes, a ramp inside the bucket) they say by
how much it moves. Where the few points seen say less than the model (bursts inside every
bucket), the conditioned interval comes out wider than the model's and the model's is
kept.

The calibration depends only on the past buckets, so :func:`calibrate` computes it for
every ``n`` at once (vectorised: one pass per completed bucket) and :func:`apply_partial`
uses it each tick (a few microseconds of arithmetic); :func:`condition_first_bucket` does
both. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecasting.forecast import Forecast
from forecasting.models.nowcast import quantile_windows
from forecasting.series import FloatArray

__all__ = ["PartialCalibration", "apply_partial", "calibrate", "condition_first_bucket"]


@dataclass(frozen=True, eq=False)
class PartialCalibration:
    """How the rest of a bucket moved from its first ``n`` points, in the recent past.

    Attributes:
        quantiles: the levels, as in the forecasts it applies to.
        change: shape ``(k, len(quantiles))``; row ``n`` (``1 <= n < k``) holds each level's
            quantile of the change (rest mean minus the first ``n`` points' mean, over the
            bucket's mean); NaN where too few past buckets had both parts.
        last_mean: the newest past bucket's mean (NaN when it had no point).
        floor: the smallest level the change is scaled by (5 % of the mean level).
    """

    quantiles: tuple[float, ...]
    change: FloatArray
    last_mean: float
    floor: float

    @property
    def points(self) -> int:
        """Fine points per bucket (``k``)."""
        return int(self.change.shape[0])


def _conformal_columns(srt: FloatArray, m: np.ndarray, q: float) -> FloatArray:
    """Per column, the split-conformal ``q`` quantile of its ``m`` valid (sorted, NaN last)
    values, as :func:`~forecasting.models.nowcast.conformal_quantiles` reads it."""
    mm = np.maximum(m, 1)
    if q >= 0.5:
        idx = np.minimum(mm, np.ceil((mm + 1) * q - 1e-9).astype(np.int64)) - 1
    else:
        idx = mm - np.minimum(mm, np.ceil((mm + 1) * (1 - q) - 1e-9).astype(np.int64))
    out: FloatArray = np.take_along_axis(srt, idx[None, :], axis=0)[0]
    return np.where(m > 0, out, np.nan)


def calibrate(
    past: FloatArray,
    quantiles: tuple[float, ...],
    *,
    window: int = 36,
    min_buckets: int = 12,
) -> PartialCalibration:
    """The change quantiles for every observed count ``n`` from ``past``, fine points of the
    complete buckets before the one in progress, shape ``(buckets, k)``, oldest first (NaN =
    missing).

    Args:
        past: the past buckets' fine points.
        quantiles: the levels to read.
        window: recent buckets the changes come from (widened for high levels as
            :func:`~forecasting.models.nowcast.quantile_windows` says).
        min_buckets: fewest past buckets with both parts observed for an ``n`` to be usable.

    Raises:
        ValueError: ``past`` is not 2-D or has fewer than 2 points per bucket.
    """
    if past.ndim != 2 or past.shape[1] < 2:
        raise ValueError(f"past must be (buckets, points per bucket >= 2), got {past.shape}")
    qs = np.asarray(quantiles, dtype=np.float64)
    wins = quantile_windows(qs, window)
    recent = past[-int(wins.max()):]
    k = recent.shape[1]
    ok = ~np.isnan(recent)
    seen = recent[ok]
    floor = max(1e-9, 0.05 * float(np.mean(np.abs(seen)))) if seen.size else 1e-9
    vals = np.where(ok, recent, 0.0)
    csum, ccnt = np.cumsum(vals, axis=1), np.cumsum(ok, axis=1)
    tot, cnt = csum[:, -1:], ccnt[:, -1:]
    whole = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)  # (buckets, 1)
    hs, hc = csum[:, :-1], ccnt[:, :-1]  # first n points, n = 1 .. k-1
    rs, rc = tot - hs, cnt - hc
    with np.errstate(invalid="ignore", divide="ignore"):
        change = ((rs / rc) - (hs / hc)) / np.maximum(whole, floor)
    change = np.where((hc > 0) & (rc > 0), change, np.nan)  # (buckets, k-1)
    n_valid = (~np.isnan(change)).sum(axis=0)
    out = np.full((k, len(qs)), np.nan)
    usable = n_valid >= min_buckets
    if not usable.any():
        return PartialCalibration(tuple(float(q) for q in qs), out, float("nan"), floor)
    sorted_by_w: dict[int, tuple[FloatArray, np.ndarray]] = {}
    for i, w in enumerate(wins):
        w = min(int(w), len(change))
        if w not in sorted_by_w:  # levels sharing a window share one sort
            sub = change[-w:]
            sorted_by_w[w] = (np.sort(sub, axis=0), (~np.isnan(sub)).sum(axis=0))
        srt, m = sorted_by_w[w]
        col = _conformal_columns(srt, m, float(qs[i]))
        if (usable & (m == 0)).any():
            # a level whose own window has nothing falls back to the whole window
            whole_w = len(change)
            if whole_w not in sorted_by_w:
                sorted_by_w[whole_w] = (np.sort(change, axis=0), n_valid)
            col = np.where(m > 0, col, _conformal_columns(*sorted_by_w[whole_w], float(qs[i])))
        out[1:, i] = np.where(usable, col, np.nan)
    last = float(whole[-1, 0]) if len(whole) else float("nan")
    return PartialCalibration(tuple(float(q) for q in qs), out, last, floor)


def apply_partial(fc: Forecast, observed: FloatArray, cal: PartialCalibration) -> Forecast:
    """``fc`` with its first bucket conditioned on ``observed`` (the bucket's first ``n``
    fine points, NaN = missing) through ``cal``; ``fc`` itself when nothing can be
    conditioned or the model's interval is the sharper one (see
    :func:`condition_first_bucket`).

    Raises:
        ValueError: ``observed`` does not leave part of the bucket, or ``cal`` was made for
            other quantile levels.
    """
    n = len(observed)
    if n >= cal.points:
        raise ValueError(f"{n} observed points do not leave part of a {cal.points}-point bucket")
    if tuple(fc.quantiles) != cal.quantiles:
        raise ValueError(f"calibrated for levels {cal.quantiles}, forecast has {fc.quantiles}")
    obs = observed[~np.isnan(observed)]
    if n == 0 or obs.size == 0 or np.isnan(cal.change[n]).any():
        return fc
    level = float(np.mean(obs))
    scale = max(level, 0.0 if np.isnan(cal.last_mean) else cal.last_mean, cal.floor)
    first = np.maximum.accumulate(np.maximum(0.0, level + cal.change[n] * scale))
    if len(first) > 1 and first[-1] - first[0] >= fc.values[-1, 0] - fc.values[0, 0]:
        # both intervals are calibrated on their own errors: keep the sharper one (on
        # bursty minutes the few points seen say less than the model does)
        return fc
    out = fc.values.copy()
    out[:, 0] = first
    return Forecast(
        start_s=fc.start_s,
        step_s=fc.step_s,
        quantiles=fc.quantiles,
        values=out,
        model=fc.model,
        kind=fc.kind,
        detail=(fc.detail + "; " if fc.detail else "")
        + f"first bucket from {n} of {cal.points} points",
    )


def condition_first_bucket(
    fc: Forecast,
    observed: FloatArray,
    past: FloatArray,
    *,
    window: int = 36,
    min_buckets: int = 12,
) -> Forecast:
    """``fc`` with its first bucket conditioned on ``observed``, the fine points seen so far
    of that bucket (req/s, oldest first): :func:`calibrate` then :func:`apply_partial`.

    Args:
        fc: a forecast whose first bucket is the one in progress.
        observed: the ``n`` fine points observed of it (``0 < n < k``; NaN = missing).
        past: fine points of the complete buckets before it, shape ``(buckets, k)``, oldest
            first; ``k`` fine points per bucket.
        window: recent buckets the changes come from.
        min_buckets: fewest usable past buckets; with fewer, ``fc`` is returned unchanged.

    Returns:
        A forecast equal to ``fc`` except for its first bucket, whose quantile ``q`` is the
        observed mean plus the ``q`` quantile of the past buckets' change (rest minus first
        ``n``, over the bucket's mean) times the larger of the observed mean and the last
        bucket's; or ``fc`` itself when nothing can be conditioned (no point observed, all
        missing, too little usable history) or the conditioned interval (lowest to highest
        level) is not narrower than the model's.

    Raises:
        ValueError: ``past`` is not 2-D, or ``observed`` does not fit inside one bucket.
    """
    cal = calibrate(past, tuple(fc.quantiles), window=window, min_buckets=min_buckets)
    return apply_partial(fc, observed, cal)
