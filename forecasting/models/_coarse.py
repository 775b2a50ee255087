"""Fit at a coarser step, forecast back at the fine step: the speed strategy of every
statistical and ML model (ETS, MSTL, GBM).

Long seasons at fine steps are what make these models slow: a daily season of 1-min data
is 1,440 seasonal states for Holt-Winters, a 1,440-step STL window, and thousands of rows
per lag for the trees. A :class:`CoarseView` aggregates the fine history into buckets of
``factor`` fine steps (the mean per *fine* step, so units do not change), the model fits
and forecasts those, and :meth:`CoarseView.to_fine` maps the coarse quantiles back:

1. **Within-bucket shape.** Each coarse bucket value is spread over its fine steps with the
   fine-step seasonal profile (the mean value at each phase of the primary season over the
   last cycles, divided by its mean over the bucket), so the forecast keeps the intraday
   shape the coarse model cannot see.
2. **Within-bucket noise.** Fine steps scatter around their bucket mean; that scatter is
   measured on the recent history (``y_fine - bucket_mean * ratio``) and added to the coarse
   quantile offsets in quadrature (``sqrt(coarse_off**2 + fine_off**2)``), as for two
   independent errors.

The factor is the smallest divisor of the detected seasons that brings the shortest season
to at most ``max_short_season`` coarse steps and the longest to at most
``max_long_season`` (defaults 144 and 1,008: 10-min buckets for a day and a week of 1-min
data). Without a detected season nothing is coarsened (factor 1) and only the history
window is bounded (``max_points`` most recent buckets).

Buckets are aligned to whole multiples of the coarse step (from the epoch, or from the
trace start for relative time), so they stay put while data arrives: an update adds whole
buckets to the model and the partly filled last bucket waits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

from forecasting.errors import ForecastFailed, ForecastingError
from forecasting.seasonality import detect_seasons
from forecasting.series import FloatArray, Series, fill_for_fit

__all__ = [
    "CoarsePlan",
    "CoarseView",
    "guarded",
    "horizon_offsets",
    "is_constant",
    "make_plan",
    "quiet_fit",
]

T = TypeVar("T")

#: how many fine residuals are kept for the within-bucket noise quantiles
_NOISE_SAMPLE = 4000


@dataclass(frozen=True)
class CoarsePlan:
    """How a model sees the data.

    Attributes:
        factor: fine steps per coarse bucket (1 = no coarsening).
        seasons: the seasons to model, in *coarse* steps, strongest first (may be empty).
        fine_seasons: the same seasons in fine steps.
        fine_step_s: the step of the fine series, seconds.
    """

    factor: int
    seasons: tuple[int, ...]
    fine_seasons: tuple[int, ...]
    fine_step_s: float

    @property
    def step_s(self) -> float:
        """The coarse step, seconds."""
        return self.fine_step_s * self.factor


def make_plan(
    series: Series,
    seasons: Sequence[int] | None = None,
    *,
    max_short_season: int = 144,
    max_long_season: int = 1008,
) -> CoarsePlan:
    """Choose the coarsening factor and the seasons for ``series``.

    Args:
        series: the fine history.
        seasons: season lengths in fine steps; ``None`` detects them
            (:func:`forecasting.seasonality.detect_seasons`).
        max_short_season: most coarse steps the shortest season may span.
        max_long_season: most coarse steps the longest season may span.

    Raises:
        ValueError: a given season is shorter than 2 steps.
    """
    if seasons is None:
        fine = tuple(s.period for s in detect_seasons(series))
    else:
        fine = tuple(int(s) for s in seasons)
        if any(s < 2 for s in fine):
            raise ValueError(f"season lengths must be at least 2 steps, got {list(fine)}")
    factor = 1
    if fine:
        g = 0
        for s in fine:
            g = math.gcd(g, s)
        shortest, longest = min(fine), max(fine)
        for d in _divisors(g):
            factor = d
            if shortest / d <= max_short_season and longest / d <= max_long_season:
                break
    coarse = tuple(s // factor for s in fine)
    keep = tuple(i for i, s in enumerate(coarse) if s >= 2)
    return CoarsePlan(
        factor=factor,
        seasons=tuple(coarse[i] for i in keep),
        fine_seasons=tuple(fine[i] for i in keep),
        fine_step_s=series.step_s,
    )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class CoarseView:
    """The fine history seen as coarse buckets, and the way back to the fine step.

    Args:
        history: the fine history (``NaN`` = missing).
        plan: from :func:`make_plan`.
        max_points: most recent coarse buckets handed to the model.
        profile_cycles: cycles of the primary season averaged into the fine profile.
    """

    def __init__(
        self, history: Series, plan: CoarsePlan, *, max_points: int = 4032,
        profile_cycles: int = 7,
    ) -> None:
        self.plan = plan
        k = plan.factor
        n = len(history)
        step_idx0 = round(history.start_s / history.step_s)
        lead = (-step_idx0) % k  # fine points before the first whole bucket
        nb = max(0, (n - lead) // k)
        first_bucket = max(0, nb - max_points)
        a0 = lead + first_bucket * k
        nb -= first_bucket
        blocks = np.asarray(history.values[a0 : a0 + nb * k], dtype=np.float64).reshape(nb, k)
        observed = (~np.isnan(blocks)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.nansum(blocks, axis=1) / observed
        means = np.where(observed >= 0.5 * k, means, np.nan)
        #: the coarse series (missing buckets are NaN)
        self.coarse = Series(
            start_s=history.start_s + a0 * history.step_s, step_s=plan.step_s,
            values=means, kind="gauge", absolute=history.absolute, name=history.name,
        )
        #: fine steps of the partly filled bucket after the last whole one
        self.pending = n - (a0 + nb * k)
        self._fine_idx0 = step_idx0
        self._ratio = np.ones(1)
        self._noise = np.zeros(1)
        if k > 1:
            self._ratio = self._profile_ratio(history, profile_cycles)
            self._noise = self._within_noise(history, a0, nb)

    @property
    def filled(self) -> FloatArray:
        """Gap-free coarse values for model fitting (gaps bridged seasonally)."""
        season = self.plan.seasons[0] if self.plan.seasons else None
        return fill_for_fit(self.coarse, season=season)

    @property
    def end_s(self) -> float:
        """End of the last whole coarse bucket (the coarse forecast origin)."""
        return self.coarse.end_s

    def coarse_horizon(self, h: int) -> int:
        """Coarse steps needed to cover ``h`` fine steps after the fine end."""
        return max(1, math.ceil((self.pending + h) / self.plan.factor))

    def to_fine(self, coarse_q: FloatArray, quantiles: Sequence[float], h: int) -> FloatArray:
        """Map coarse quantiles ``(n_q, coarse_horizon(h))`` to fine ones ``(n_q, h)``.

        The median row (or the middle level when 0.5 is not asked) is the centre; the other
        rows keep their offset from it, widened by the within-bucket noise.
        """
        k = self.plan.factor
        if k == 1:
            out: FloatArray = np.asarray(coarse_q[:, :h], dtype=np.float64)
            return out
        pos = self.pending + np.arange(h)
        vals = np.asarray(coarse_q, dtype=np.float64)[:, pos // k]
        phase = (self._fine_idx0_end() + np.arange(h)) % len(self._ratio)
        vals = vals * self._ratio[phase][None, :]
        qs = np.asarray(quantiles, dtype=np.float64)
        centre_i = int(np.argmin(np.abs(qs - 0.5)))
        centre = vals[centre_i]
        noise = np.quantile(self._noise, qs) - np.quantile(self._noise, qs[centre_i])
        off = vals - centre[None, :]
        widened = np.copysign(np.hypot(off, noise[:, None]), off + noise[:, None])
        res: FloatArray = centre[None, :] + widened
        return res

    # ---------------------------------------------------------------- internals
    def _fine_idx0_end(self) -> int:
        """Absolute fine-step index of the first forecast step."""
        n_fine = round((self.coarse.end_s - self.coarse.start_s) / self.plan.fine_step_s)
        first = round(self.coarse.start_s / self.plan.fine_step_s)
        return first + n_fine + self.pending

    def _profile_ratio(self, history: Series, cycles: int) -> FloatArray:
        """Fine value at each phase of the primary season over its bucket's mean."""
        k = self.plan.factor
        p = self.plan.fine_seasons[0]
        n = len(history)
        take = min(n, cycles * p)
        v = np.asarray(history.values[n - take :], dtype=np.float64)
        phase = (self._fine_idx0 + (n - take) + np.arange(take)) % p
        sums = np.bincount(phase, weights=np.nan_to_num(v), minlength=p)
        cnt = np.bincount(phase, weights=(~np.isnan(v)).astype(np.float64), minlength=p)
        with np.errstate(invalid="ignore", divide="ignore"):
            prof = sums / cnt
        # phases are bucket-aligned because p is a multiple of k and buckets are epoch-aligned
        prof_b = prof.reshape(p // k, k)
        seen = np.isfinite(prof_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            bucket_mean = np.where(seen, prof_b, 0.0).sum(axis=1, keepdims=True) / seen.sum(
                axis=1, keepdims=True
            )
            ratio = prof_b / bucket_mean
        ratio = np.where(np.isfinite(ratio) & (ratio >= 0), ratio, 1.0)
        out: FloatArray = ratio.reshape(p)
        return out

    def _within_noise(self, history: Series, a0: int, nb: int) -> FloatArray:
        """Recent fine residuals around ``bucket_mean * ratio``."""
        k = self.plan.factor
        use = min(nb, max(1, _NOISE_SAMPLE // k))
        b0 = nb - use
        fine = np.asarray(history.values[a0 + b0 * k : a0 + nb * k], dtype=np.float64)
        means = np.repeat(np.asarray(self.coarse.values[b0:nb]), k)
        phase = (self._fine_idx0 + a0 + b0 * k + np.arange(use * k)) % len(self._ratio)
        res = fine - means * self._ratio[phase]
        res = res[np.isfinite(res)]
        return res if res.size else np.zeros(1)


def horizon_offsets(
    residuals: FloatArray, scale: FloatArray, quantiles: Sequence[float]
) -> FloatArray:
    """Quantile offsets ``(n_q, h)``: empirical residual quantiles, each step scaled.

    ``scale[j]`` is how much wider the error at step ``j`` is than the one-step error
    (``sqrt`` of the model's variance factor). With no finite residual the offsets are 0.
    """
    r = np.asarray(residuals, dtype=np.float64)
    r = r[np.isfinite(r)]
    qs = np.asarray(quantiles, dtype=np.float64)
    if r.size == 0:
        return np.zeros((len(qs), len(scale)))
    base = np.quantile(r - np.median(r), qs)
    out: FloatArray = base[:, None] * np.asarray(scale, dtype=np.float64)[None, :]
    return out


@contextmanager
def quiet_fit() -> Iterator[None]:
    """Silence the convergence and numerical warnings statsmodels/sklearn emit while fitting.

    They are noise here: a bad fit shows up as non-finite output or an exception, which
    :func:`guarded` turns into :class:`ForecastFailed`.
    """
    from statsmodels.tools.sm_exceptions import (
        ConvergenceWarning,
        EstimationWarning,
        ValueWarning,
    )

    with warnings.catch_warnings():
        for cat in (ConvergenceWarning, EstimationWarning, ValueWarning, RuntimeWarning,
                    UserWarning, FutureWarning):
            warnings.simplefilter("ignore", cat)
        with np.errstate(all="ignore"):
            yield


def guarded(model: str, what: str, fn: Callable[[], T]) -> T:
    """Run a statsmodels/sklearn call on one thread; a library error becomes
    :class:`ForecastFailed`.

    One thread because these models are small and the machines that run them are shared:
    OpenMP's and OpenBLAS's spinning thread teams collapse when another process holds a
    core (measured on the 2-core dev machine at load 5: a 1.9 s tree fit took 39 s).
    """
    try:
        with _threads().limit(limits=1), quiet_fit():
            return fn()
    except ForecastingError:
        raise
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, RuntimeError, IndexError,
            TypeError) as exc:
        raise ForecastFailed(f"{model}: {what} failed: {type(exc).__name__}: {exc}") from exc


@cache
def _threads() -> ThreadpoolController:
    """The BLAS/OpenMP pools loaded in this process, found once (finding them costs
    ~30 ms; limiting a known set costs ~0.3 ms)."""
    return ThreadpoolController()


def is_constant(y: FloatArray) -> bool:
    """Whether every value is the same (nothing to model: the forecast is that value)."""
    return bool(y.size == 0 or float(np.ptp(y)) <= 1e-12 * max(1.0, float(np.abs(y).max())))
