"""Season detection from the data: daily, weekly and sub-daily cycles.

A candidate period (a calendar period such as 1 h, 12 h, 1 day, 1 week, expressed in steps
of the series) is a season when the autocorrelation at that lag is clearly positive *and*
is a peak: higher than at the lags half a period (or, for a week, one day) away. The peak
test is what tells a weekly cycle from a daily one that merely repeats every 7 days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecasting.series import FloatArray, Series, fill_for_fit

__all__ = ["CALENDAR_PERIODS_S", "Season", "acf", "detect_seasons", "primary_season"]

#: Calendar periods considered, in seconds, with the neighbour offset used by the peak test.
CALENDAR_PERIODS_S: tuple[tuple[float, float], ...] = (
    (3600.0, 1800.0),
    (6 * 3600.0, 3 * 3600.0),
    (12 * 3600.0, 6 * 3600.0),
    (86400.0, 43200.0),
    (7 * 86400.0, 86400.0),
)

MIN_ACF = 0.2
MIN_PEAK = 0.05


@dataclass(frozen=True)
class Season:
    """A detected cycle.

    Attributes:
        period_s: length of the cycle in seconds.
        period: length of the cycle in steps of the series.
        strength: autocorrelation at the period lag.
        peak: how much higher than at the neighbouring lags (the peak test's margin).
    """

    period_s: float
    period: int
    strength: float
    peak: float


def acf(values: FloatArray, max_lag: int) -> FloatArray:
    """Sample autocorrelation for lags ``0..max_lag`` (FFT-based, O(n log n))."""
    x = np.asarray(values, dtype=np.float64) - float(np.mean(values))
    n = len(x)
    max_lag = min(max_lag, n - 1)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    r = np.fft.irfft(f * np.conj(f), size)[: max_lag + 1]
    if r[0] <= 0:
        return np.zeros(max_lag + 1)
    out: FloatArray = r / r[0]
    return out


def detect_seasons(series: Series, *, min_cycles: float = 2.0) -> list[Season]:
    """Seasons present in ``series``, strongest first.

    A period is only considered when the history holds at least ``min_cycles`` full cycles
    and the period is at least two steps long.
    """
    n = len(series)
    if series.n_observed < 8:
        return []
    candidates = []
    for period_s, neigh_s in CALENDAR_PERIODS_S:
        p = period_s / series.step_s
        if p < 2 or abs(p - round(p)) > 1e-6 or n < min_cycles * p:
            continue
        candidates.append((period_s, round(p), max(1, round(neigh_s / series.step_s))))
    if not candidates:
        return []
    longest = max(p for _, p, _ in candidates)
    max_neigh = max(d for _, _, d in candidates)
    values = fill_for_fit(series)
    r = acf(values, min(n - 1, longest + max_neigh))
    found = []
    for period_s, p, d in candidates:
        if p >= len(r):
            continue
        lo = r[p - d] if p - d > 0 else -1.0
        hi = r[p + d] if p + d < len(r) else lo
        peak = float(r[p] - max(lo, hi))
        if r[p] >= MIN_ACF and peak >= MIN_PEAK:
            found.append(Season(period_s=period_s, period=p, strength=float(r[p]), peak=peak))
    found.sort(key=lambda s: s.strength, reverse=True)
    return found


def primary_season(series: Series, *, default_s: float = 86400.0) -> int:
    """The season length (in steps) to use for single-season models.

    The strongest detected season, else the daily period when the data covers two days at
    a step that divides it, else ``1`` (no season).
    """
    seasons = detect_seasons(series)
    if seasons:
        return seasons[0].period
    p = default_s / series.step_s
    if p >= 2 and abs(p - round(p)) < 1e-6 and len(series) >= 2 * p:
        return round(p)
    return 1
