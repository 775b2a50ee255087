"""A target's forecaster in the live controller: history kept on the forecast grid, a
fitted model brought up to date cheaply every tick, and refits done elsewhere.

The controller's hot path (every tick) only calls :meth:`LiveForecaster.extend` (append the
complete buckets Prometheus now has, ``update()`` the model) and
:meth:`LiveForecaster.predict`. A refit is split so it can run off the hot path (in a
thread): :meth:`LiveForecaster.snapshot` (a copy of the history), the pure
:func:`fit_model` on that copy, then :meth:`LiveForecaster.install`, which feeds the new
model the buckets that arrived while it was fitting. Pure: no clock, no I/O, no threads
(the caller holds a lock around ``extend``/``install``/``predict``/``observe``).

The bucket in progress: the model's first bucket is the one ``now`` is in, forecast before
it began. With ``fine_step_s`` set (the controller's tick), every tick's demand reading is
kept (:meth:`LiveForecaster.observe`, a few hundred buckets' worth) and
:meth:`LiveForecaster.predict` conditions that bucket on the readings already taken in it
(:func:`~forecasting.partial.condition_first_bucket`, calibrated on the readings of the
buckets before). It matters at a coarse ``step`` (10 minutes: the interval is otherwise
held for the whole bucket after the new level has been seen); at the default 1-minute step
with 15 s ticks it has three readings to go on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecasting.adaptive import AdaptiveLevel, relabel
from forecasting.errors import ForecastingError
from forecasting.forecast import Forecast
from forecasting.models import make
from forecasting.partial import PartialCalibration, apply_partial, calibrate
from forecasting.protocol import Forecaster
from forecasting.series import FloatArray, Series

__all__ = ["SIMPLER_MODELS", "LiveForecaster", "fit_model", "horizon_steps"]


def horizon_steps(now_s: float, history_end_s: float, lead_s: float, interval_s: float,
                  step_s: float) -> int:
    """Forecast steps from the end of the history to ``now + lead + interval`` (>= 1).

    The history ends before ``now`` (Prometheus lag, the bucket in progress), so the
    horizon covers that gap too.
    """
    span = now_s - history_end_s + lead_s + interval_s
    return max(1, math.ceil(span / step_s) + 1)


#: what a refit fits, in this order, when the configured model fails to (its errors are
#: counted and shown; the configured model is tried again at the next refit): the
#: short-horizon default, then the plainest rule
SIMPLER_MODELS: tuple[str, ...] = ("nowcast", "seasonal_naive")


def fit_model(model: str, kwargs: Mapping[str, Any], history: Series) -> Forecaster:
    """A fresh ``model`` fitted on ``history`` (pure; may take seconds).

    Raises:
        ForecastingError: too little history, or the model failed.
        KeyError: unknown model name.
    """
    return make(model, **dict(kwargs)).fit(history)


@dataclass
class LiveForecaster:
    """History, the installed model and its forecast for one target.

    Attributes:
        model: registry name (``forecasting.models``).
        step_s: forecast grid step, seconds.
        history_s: how much history to keep (and fit on), seconds.
        model_kwargs: keyword arguments for the model.
        fine_step_s: the spacing of the demand readings given to :meth:`observe` (the
            controller's interval); ``None`` (or a step that leaves fewer than two readings
            per bucket) leaves the bucket in progress as the model forecast it.
        scaling_quantile: the level the policy sizes for.
        adaptive: :class:`~forecasting.adaptive.AdaptiveLevel` keyword arguments: read
            ``scaling_quantile`` at a level moved by the forecast's misses, scored on every
            complete bucket :meth:`extend` adds (``None``: read it as it is).
    """

    model: str
    step_s: float
    history_s: float
    model_kwargs: Mapping[str, Any] | None = None
    fine_step_s: float | None = None
    scaling_quantile: float = 0.9
    adaptive: Mapping[str, float] | None = None

    #: buckets of readings kept for :meth:`observe` (enough for a 0.98 quantile's window)
    readings_buckets = 120

    def __post_init__(self) -> None:
        if self.step_s <= 0 or self.history_s < self.step_s:
            raise ValueError(
                f"need step_s > 0 and history_s >= step_s, got {self.step_s}, {self.history_s}"
            )
        make(self.model, **dict(self.model_kwargs or {}))  # unknown name fails here
        self.history: Series | None = None
        self.fitted: Forecaster | None = None
        self._fed_until_s = -math.inf
        self.last_error = ""
        self._cache: tuple[Forecaster, tuple[float, int, tuple[float, ...]], Forecast] | None = None
        if self.fine_step_s is not None and not self.fine_step_s > 0:
            raise ValueError(f"fine_step_s must be > 0, got {self.fine_step_s}")
        k = round(self.step_s / self.fine_step_s) if self.fine_step_s else 0
        #: readings per forecast bucket (0: the bucket in progress is not conditioned)
        self.per_bucket = k if k >= 2 else 0
        # the readings: a ring of slots (one per ``step_s / per_bucket``), each holding the
        # slot number it was written for, so a stale or never-written slot reads as NaN
        size = (self.readings_buckets + 2) * self.per_bucket
        self._ring = np.full(size, np.nan)
        self._ring_slot = np.full(size, -1, dtype=np.int64)
        self._newest = -1
        self._version = 0  # bumped when a reading lands in a bucket already complete
        self._cal: tuple[tuple[int, tuple[float, ...], int], PartialCalibration] | None = None
        #: the level ``scaling_quantile`` is read at (``None``: adaptive off)
        self.level = (AdaptiveLevel(self.scaling_quantile, **dict(self.adaptive))
                      if self.adaptive is not None else None)

    # ------------------------------------------------------------------ readings
    def _slot(self, t_s: float) -> int:
        return math.floor(t_s / (self.step_s / self.per_bucket) + 1e-9)

    def readings(self, first_slot: int, count: int) -> FloatArray:
        """The readings of slots ``first_slot ..``, ``count`` of them (NaN: none kept)."""
        slots = np.arange(first_slot, first_slot + count, dtype=np.int64)
        if not self.per_bucket:
            return np.full(count, np.nan)
        idx = slots % len(self._ring)
        out: FloatArray = np.where(self._ring_slot[idx] == slots, self._ring[idx], np.nan)
        return out

    def observe(self, t_s: float, demand_rps: float | None) -> None:
        """Keep the demand reading taken at ``t_s`` (``None``: none this tick, kept as a
        gap). Readings older than :attr:`readings_buckets` buckets are overwritten; a
        second reading in the same slot replaces the first."""
        if not self.per_bucket or demand_rps is None or not math.isfinite(demand_rps):
            return
        slot = self._slot(t_s)
        if slot < self._newest - (self.readings_buckets + 1) * self.per_bucket:
            return  # older than the ring holds
        i = slot % len(self._ring)
        if slot // self.per_bucket < self._newest // self.per_bucket:
            self._version += 1  # a late reading changes a past bucket's calibration
        self._ring[i], self._ring_slot[i] = float(demand_rps), slot
        self._newest = max(self._newest, slot)

    @property
    def n_readings(self) -> int:
        """Readings kept within the last :attr:`readings_buckets` buckets."""
        if not self.per_bucket or self._newest < 0:
            return 0
        cut = max(-1, self._newest - self.readings_buckets * self.per_bucket)
        return int(np.count_nonzero(self._ring_slot > cut))

    @property
    def readings_sparse(self) -> bool:
        """Whether fewer than half of the kept window's reading slots are filled (after a
        restart: :meth:`seed` them from the history at the reading step)."""
        return bool(self.per_bucket) and (
            self.n_readings < self.readings_buckets * self.per_bucket // 2
        )

    def seed(self, readings: Series) -> int:
        """Fill reading slots still empty from ``readings`` (the demand on the reading
        grid, e.g. a range query at the tick step after a restart); a slot a tick already
        read keeps its reading. Returns the number of slots filled."""
        if not self.per_bucket or len(readings) == 0:
            return 0
        filled = 0
        last_s = readings.start_s + readings.step_s * (len(readings) - 1)
        newest = max(self._newest, self._slot(last_s))
        cut = newest - (self.readings_buckets + 1) * self.per_bucket
        for i, v in enumerate(readings.values):
            slot = self._slot(readings.start_s + readings.step_s * i)
            j = slot % len(self._ring)
            if slot > cut and math.isfinite(float(v)) and self._ring_slot[j] != slot:
                if self._ring_slot[j] > slot:
                    continue  # the ring already holds a newer reading there
                self._ring[j], self._ring_slot[j] = float(v), slot
                self._newest = max(self._newest, slot)
                filled += 1
        self._version += 1 if filled else 0
        return filled

    def _condition(self, fc: Forecast, now_s: float) -> Forecast:
        """``fc`` with its first bucket conditioned on this bucket's readings so far."""
        k = self.per_bucket
        if not k or self._newest < 0:
            return fc
        b0 = self._slot(fc.start_s)
        n = self._slot(now_s) - b0 + 1
        if n < 1 or n >= k:
            return fc
        key = (b0, tuple(fc.quantiles), self._version)
        if self._cal is None or self._cal[0] != key:
            # once per bucket: the past buckets' calibration for every n
            nb = self.readings_buckets
            past = self.readings(b0 - nb * k, nb * k).reshape(nb, k)
            self._cal = (key, calibrate(past, key[1]))
        return apply_partial(fc, self.readings(b0, n), self._cal[1])

    # ------------------------------------------------------------------ history
    @property
    def history_end_s(self) -> float | None:
        """End of the newest complete bucket held (``None`` before any history)."""
        return None if self.history is None else self.history.end_s

    @property
    def max_buckets(self) -> int:
        """Buckets kept."""
        return max(1, int(self.history_s // self.step_s))

    def extend(self, new: Series) -> int:
        """Append complete buckets continuing the history (a gap becomes missing buckets;
        buckets already held are skipped), trim to ``history_s`` and ``update()`` the
        installed model with them. Returns the number of buckets added.

        Raises:
            forecasting.errors.SeriesError: ``new`` is on another grid or step.
        """
        if len(new) == 0:
            return 0
        if self.history is None:
            merged = new
            added = len(new)
        else:
            end = self.history.end_s
            skip = max(0, round((end - new.start_s) / self.step_s))
            if skip >= len(new):
                return 0
            part = new.slice(skip, None)
            merged = self.history.append(part)
            added = len(merged) - len(self.history)
        if len(merged) > self.max_buckets:
            merged = merged.tail(self.max_buckets)
        self.history = merged
        if self.level is not None and added:  # the new buckets move the level
            k = min(added, len(merged))
            first = round(merged.start_s / self.step_s) + len(merged) - k
            for i, v in enumerate(merged.values[len(merged) - k :]):
                self.level.score(first + i, float(v))
        self._feed()
        return added

    def _feed(self) -> None:
        """Bring the installed model up to the history's end with ``update()``."""
        if self.fitted is None or self.history is None:
            return
        end = self.history.end_s
        if end <= self._fed_until_s:
            return
        i0 = round((self._fed_until_s - self.history.start_s) / self.step_s)
        if i0 < 0:  # the model is older than the kept history: it needs a refit
            self.fitted = None
            self.last_error = "model older than the kept history; waiting for a refit"
            return
        try:
            self.fitted.update(self.history.slice(i0, None))
        except (ForecastingError, ValueError, np.linalg.LinAlgError) as exc:
            self.fitted = None
            self.last_error = f"update failed: {type(exc).__name__}: {exc}"
            return
        self._fed_until_s = end

    # ------------------------------------------------------------------ refits
    def snapshot(self) -> Series | None:
        """A copy of the history to fit on (``None`` before any history)."""
        if self.history is None:
            return None
        return self.history.replace(values=self.history.values.copy())

    def min_history(self) -> int:
        """Observed buckets the model needs before it can be fitted."""
        return make(self.model, **dict(self.model_kwargs or {})).min_history(self.step_s)

    def install(self, fitted: Forecaster, fitted_on: Series) -> None:
        """Use ``fitted`` (fitted on ``fitted_on``, a :meth:`snapshot`) from now on, first
        feeding it what arrived since."""
        self.fitted = fitted
        self._fed_until_s = fitted_on.end_s
        self.last_error = ""
        self._feed()

    def drop(self, error: str) -> None:
        """Forget the installed model (it failed); the policy runs reactive-only."""
        self.fitted = None
        self.last_error = error

    # ------------------------------------------------------------------ forecast
    def predict(self, now_s: float, lead_s: float, interval_s: float,
                quantiles: tuple[float, ...]) -> Forecast | None:
        """Quantiles over ``[history end, now + lead + interval]``, the bucket in progress
        conditioned on its readings (see :meth:`observe`); ``None`` without a model or
        when it fails (the reason is kept in ``last_error``)."""
        if self.fitted is None or self.history is None:
            return None
        h = horizon_steps(now_s, self.history.end_s, lead_s, interval_s, self.step_s)
        nominal = tuple(quantiles)
        read = self.level.levels(nominal) if self.level is not None else nominal
        # the forecast depends only on the model's state, the horizon and the levels: ticks
        # between two buckets reuse it (benchmarks/controller_loop.py: half the tick's cost)
        key = (self._fed_until_s, h, tuple(sorted(set(read))))
        if self._cache is not None and self._cache[0] is self.fitted and self._cache[1] == key:
            fc = self._cache[2]
        else:
            try:
                fc = self.fitted.predict(h, key[2])
            except (ForecastingError, ValueError, np.linalg.LinAlgError) as exc:
                self.drop(f"predict failed: {type(exc).__name__}: {exc}")
                return None
            self._cache = (self.fitted, key, fc)
        if self.level is not None:  # the first bucket, forecast before it is complete
            lv = self.level.level
            self.level.expect(round(fc.start_s / self.step_s), float(fc.quantile(lv)[0]))
        return relabel(self._condition(fc, now_s), read, nominal)
