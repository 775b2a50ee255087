"""Adaptive conformal inference for the one quantile an autoscaler sizes for.

A forecaster's quantile ``q`` is calibrated on its recent errors (``nowcast``: the last six
hours), so it covers ``q`` on average over that window. Misses cluster in shorter runs than
that: ServeGen's daily ramp brings several level jumps within an hour or two, each one over
the interval the calm hours before it calibrated. Adaptive conformal inference (Gibbs and
Candès, "Adaptive conformal inference under distribution shift", NeurIPS 2021) closes that
loop on what actually happened: after every bucket the level read from the model moves by

    level <- level + step * (miss - (1 - q))

where ``miss`` is 1 when the bucket came out above the forecast read at the level in use.
A miss raises the level by ``step * q``; each covered bucket lowers it by ``step * (1 - q)``,
so over any long run the share of buckets above the forecast tends to ``1 - q`` whatever the
model's own calibration, and a run of misses is answered within a few buckets instead of
once they dominate the model's error window. The level is held in ``[lo, hi]`` and rounded
to ``grid`` (the model is asked for few distinct levels, so its forecasts and the bucket in
progress's calibration stay cached).

:class:`AdaptiveLevel` holds the state; :meth:`AdaptiveLevel.levels` maps the levels a
caller asks for to the ones to read from the model, and :func:`relabel` gives the model's
forecast back under the caller's levels. Pure: buckets are numbered by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from forecasting.forecast import Forecast

__all__ = ["DEFAULT_BELOW", "DEFAULT_HI", "DEFAULT_STEP", "AdaptiveLevel", "default_bounds",
           "relabel"]

#: how far one bucket moves the level (``gamma``)
DEFAULT_STEP = 0.05
#: how far below the nominal level the level may go
DEFAULT_BELOW = 0.05
#: the highest level read (unless the nominal one is higher)
DEFAULT_HI = 0.98


def default_bounds(target: float) -> tuple[float, float]:
    """The level's default ``(lo, hi)`` for a nominal ``target``: ``DEFAULT_BELOW`` under it
    (at least 0.01), up to ``DEFAULT_HI`` (or ``target`` when higher)."""
    return max(0.01, round(target - DEFAULT_BELOW, 6)), max(target, DEFAULT_HI)


@dataclass
class AdaptiveLevel:
    """The level to read the forecast at for a nominal quantile ``target``.

    Attributes:
        target: the nominal level the caller sizes for, in (0, 1).
        step: how far one bucket's outcome moves the level (``gamma``; 0 keeps ``target``).
        lo, hi: bounds of the level, ``0 < lo <= target <= hi < 1`` (``None``:
            :func:`default_bounds`).
        grid: the level is rounded to a multiple of this.
    """

    target: float
    step: float = DEFAULT_STEP
    lo: float | None = None
    hi: float | None = None
    grid: float = 0.01
    #: the unrounded level (the state)
    raw: float = field(init=False)
    #: buckets scored, and how many came out above the forecast
    scored: int = field(default=0, init=False)
    missed: int = field(default=0, init=False)
    _pending: dict[int, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        lo, hi = default_bounds(self.target) if 0.0 < self.target < 1.0 else (None, None)
        self.lo = lo if self.lo is None else self.lo
        self.hi = hi if self.hi is None else self.hi
        if self.lo is None or self.hi is None or not 0.0 < self.lo <= self.target <= self.hi < 1.0:
            raise ValueError(
                f"need 0 < lo <= target <= hi < 1, got lo={self.lo}, target={self.target}, "
                f"hi={self.hi}"
            )
        self._lo: float = self.lo
        self._hi: float = self.hi
        if not (self.step >= 0.0 and math.isfinite(self.step)) or not 0.0 < self.grid < 1.0:
            raise ValueError(f"need step >= 0 and 0 < grid < 1, got {self.step}, {self.grid}")
        self.raw = self.target

    @property
    def level(self) -> float:
        """The level in use: the state rounded to ``grid``, within ``[lo, hi]``."""
        r = round(round(self.raw / self.grid) * self.grid, 6)
        return min(self._hi, max(self._lo, r))

    def levels(self, nominal: tuple[float, ...]) -> tuple[float, ...]:
        """The level to read for each of ``nominal`` (same order): ``target`` reads
        :attr:`level`, a level above it at least that, one below it at most that, so the
        rows keep their order whichever way the level moved."""
        lv = self.level
        out = []
        for q in nominal:
            if math.isclose(q, self.target, rel_tol=0.0, abs_tol=1e-9):
                out.append(lv)
            else:
                out.append(max(q, lv) if q > self.target else min(q, lv))
        return tuple(out)

    def expect(self, bucket: int, forecast_at_level: float) -> None:
        """Remember the forecast at :attr:`level` for ``bucket`` (any increasing bucket
        number, e.g. ``round(start_s / step_s)``), made before it began. The first one is
        kept: later calls for the same bucket are ignored. Only the newest 64 buckets are
        remembered."""
        if bucket in self._pending or not math.isfinite(forecast_at_level):
            return
        self._pending[bucket] = forecast_at_level
        if len(self._pending) > 64:
            del self._pending[min(self._pending)]

    def score(self, bucket: int, actual: float) -> bool | None:
        """``bucket`` is complete with mean ``actual``: move the level. Returns whether it
        came out above the forecast (``None``: no forecast was expected for it, or
        ``actual`` is missing; the level is left alone)."""
        pred = self._pending.pop(bucket, None)
        if pred is None or not math.isfinite(actual):
            return None
        miss = actual > pred
        self.scored += 1
        self.missed += int(miss)
        moved = self.raw + self.step * (float(miss) - (1.0 - self.target))
        self.raw = min(self._hi, max(self._lo, moved))
        return miss


def relabel(fc: Forecast, read: tuple[float, ...], nominal: tuple[float, ...]) -> Forecast:
    """``fc`` (forecast at the distinct levels of ``read``) with one row per level of
    ``nominal``: the row of ``nominal[i]`` is ``fc``'s row at ``read[i]``.

    Raises:
        ValueError: ``read`` and ``nominal`` differ in length, or ``fc`` lacks a level of
            ``read``.
    """
    if len(read) != len(nominal):
        raise ValueError(f"{len(read)} levels read for {len(nominal)} nominal ones")
    if tuple(read) == tuple(nominal):
        return fc
    order = sorted(range(len(nominal)), key=lambda i: nominal[i])
    rows = []
    for i in order:
        hit = [j for j, q in enumerate(fc.quantiles) if math.isclose(q, read[i], abs_tol=1e-9)]
        if not hit:
            raise ValueError(f"forecast has levels {fc.quantiles}, not {read[i]}")
        rows.append(fc.values[hit[0]])
    moved = ", ".join(f"q{nominal[i]:g} read at q{read[i]:g}" for i in order
                      if not math.isclose(read[i], nominal[i], abs_tol=1e-9))
    return Forecast(
        start_s=fc.start_s,
        step_s=fc.step_s,
        quantiles=tuple(nominal[i] for i in order),
        values=np.vstack(rows),
        model=fc.model,
        kind=fc.kind,
        detail=f"{fc.detail} | adaptive: {moved}" if fc.detail else f"adaptive: {moved}",
    )
