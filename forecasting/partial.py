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

Pure numpy: a few hundred multiplications per call.
"""

from __future__ import annotations

import numpy as np

from forecasting.forecast import Forecast
from forecasting.models.nowcast import conformal_quantiles, quantile_windows
from forecasting.series import FloatArray

__all__ = ["condition_first_bucket"]


def _nanmean(a: FloatArray) -> FloatArray:
    """Row means ignoring NaN; NaN for a row with nothing (no "empty slice" warning)."""
    ok = ~np.isnan(a)
    cnt = ok.sum(axis=1)
    tot = np.where(ok, a, 0.0).sum(axis=1)
    out: FloatArray = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return out


def condition_first_bucket(
    fc: Forecast,
    observed: FloatArray,
    past: FloatArray,
    *,
    window: int = 36,
    min_buckets: int = 12,
) -> Forecast:
    """``fc`` with its first bucket conditioned on ``observed``, the fine points seen so far
    of that bucket (req/s, oldest first).

    Args:
        fc: a forecast whose first bucket is the one in progress.
        observed: the ``n`` fine points observed of it (``0 < n < k``; NaN = missing).
        past: fine points of the complete buckets before it, shape ``(buckets, k)``, oldest
            first; ``k`` fine points per bucket.
        window: recent buckets the ratios come from (widened for high levels as
            :func:`~forecasting.models.nowcast.quantile_windows` says).
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
    if past.ndim != 2:
        raise ValueError(f"past must be (buckets, points per bucket), got shape {past.shape}")
    k = past.shape[1]
    n = len(observed)
    if n >= k:
        raise ValueError(f"{n} observed points do not leave part of a {k}-point bucket")
    obs = observed[~np.isnan(observed)]
    if n == 0 or obs.size == 0:
        return fc
    qs = np.asarray(fc.quantiles, dtype=np.float64)
    need = int(quantile_windows(qs, window).max())
    recent = past[-need:]
    head = _nanmean(recent[:, :n])
    rest = _nanmean(recent[:, n:])
    whole = _nanmean(recent)
    level = float(np.mean(obs))
    seen = recent[~np.isnan(recent)]
    floor = max(1e-9, 0.05 * float(np.mean(np.abs(seen)))) if seen.size else 1e-9
    ok = ~(np.isnan(head) | np.isnan(rest))
    if int(ok.sum()) < min_buckets:
        return fc
    # the change from the head to the rest, as a share of the bucket's level: bounded
    # (a near-empty head does not blow it up) and comparable across the daily swing
    change = (rest[ok] - head[ok]) / np.maximum(whole[ok], floor)
    scale = max(level, float(whole[-1]) if not np.isnan(whole[-1]) else 0.0, floor)
    age = np.arange(len(ok))[::-1][ok]  # 0 = the newest past bucket
    out = fc.values.copy()
    for i, w in enumerate(quantile_windows(qs, window)):
        sub = change[age < w]
        q = conformal_quantiles(sub if sub.size else change, qs[i : i + 1])[0]
        out[i, 0] = max(0.0, level + q * scale)
    out[:, 0] = np.maximum.accumulate(out[:, 0])  # monotone across levels
    if len(qs) > 1 and out[-1, 0] - out[0, 0] >= fc.values[-1, 0] - fc.values[0, 0]:
        # both intervals are calibrated on their own errors: keep the sharper one (on
        # bursty minutes the few points seen say less than the model does)
        return fc
    return Forecast(
        start_s=fc.start_s,
        step_s=fc.step_s,
        quantiles=fc.quantiles,
        values=out,
        model=fc.model,
        kind=fc.kind,
        detail=(fc.detail + "; " if fc.detail else "") + f"first bucket from {n} of {k} points",
    )
