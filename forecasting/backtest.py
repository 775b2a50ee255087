"""Rolling-origin evaluation of a forecaster (statsforecast's ``cross_validation`` vocabulary).

``cross_validation(series, model_factory, h, n_windows=5, step_size=h)`` places the last
window so that it ends with the series and the others ``step_size`` steps apart before it
(or takes explicit ``origins``: indices of the first forecast bucket). At every origin the
model sees only the history before it. ``refit=k`` fits a fresh model at every ``k``-th
origin and feeds the observations in between through ``update()`` otherwise
(``refit=True`` = 1: refit everywhere; ``refit=False`` = 0: fit once at the first origin).

Scores pool every forecast step of every origin. Missing actuals (``NaN`` gaps) never count
as errors. A model that raises :class:`~forecasting.errors.InsufficientHistory` or
:class:`~forecasting.errors.ForecastFailed` at an origin has that origin recorded as failed,
not the whole run. Durations are measured with ``time.perf_counter`` (never the wall clock).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forecasting.errors import ForecastFailed, InsufficientHistory
from forecasting.forecast import DEFAULT_QUANTILES, Forecast, validate_quantiles
from forecasting.protocol import Forecaster
from forecasting.scoring import coverage, mae, mase, mase_scale, pinball, rmse, smape
from forecasting.seasonality import primary_season
from forecasting.series import FloatArray, Series

__all__ = [
    "BacktestResult",
    "OriginResult",
    "cross_validation",
    "interval_bounds",
    "rolling_origins",
]

#: errors a model may raise at one origin without ending the backtest
RECOVERABLE: tuple[type[Exception], ...] = (InsufficientHistory, ForecastFailed)


def interval_bounds(level: float) -> tuple[float, float]:
    """Quantile levels bounding the central ``level`` interval: 0.9 -> (0.05, 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must lie in (0, 1), got {level}")
    a = round((1.0 - level) / 2.0, 10)
    return a, round(1.0 - a, 10)


@dataclass(frozen=True, eq=False)
class OriginResult:
    """One forecast origin of a backtest.

    Attributes:
        origin: index (in the series) of the first forecast bucket.
        origin_s: timestamp of that bucket.
        actual: the ``h`` actual values that followed (``NaN`` = missing).
        forecast: the forecast, or ``None`` when the model failed here.
        refit: whether a fresh model was fitted here (else it was updated).
        fit_s: seconds spent in ``fit`` or ``update`` at this origin.
        predict_s: seconds spent in ``predict``.
        error: ``"ErrorType: message"`` when the model failed here, else ``""``.
    """

    origin: int
    origin_s: float
    actual: FloatArray
    forecast: Forecast | None
    refit: bool
    fit_s: float
    predict_s: float
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether a forecast was made at this origin."""
        return self.forecast is not None


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Pooled scores of a rolling-origin backtest (NaN where nothing was scored).

    Attributes:
        model: the model's name.
        h: horizon in steps.
        step_s: step of the series in seconds.
        quantiles: levels every origin was asked for.
        origins: per-origin results, in order.
        season: the season (steps) of the MASE scale.
        mase_scale: in-sample seasonal-naive MAE of the history before the first origin.
        mae, rmse, mase, smape: point scores of the median forecast.
        pinball: mean pinball loss per quantile level.
        coverage: share of actuals inside each central interval, by level (0.9 -> q0.05..q0.95).
        fit_s: mean seconds per ``fit`` (refit origins only).
        update_s: mean seconds per ``update`` (NaN when the model was never updated).
        predict_s: median seconds per ``predict``.
        timed_out: the backtest stopped early because ``time_budget_s`` ran out.
        detail: the last forecast's ``detail`` (e.g. auto's choice).
    """

    model: str
    h: int
    step_s: float
    quantiles: tuple[float, ...]
    origins: tuple[OriginResult, ...]
    season: int
    mase_scale: float
    mae: float
    rmse: float
    mase: float
    smape: float
    pinball: dict[float, float]
    coverage: dict[float, float]
    fit_s: float
    update_s: float
    predict_s: float
    timed_out: bool = False
    detail: str = ""
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_ok(self) -> int:
        """Origins with a forecast."""
        return sum(o.ok for o in self.origins)

    @property
    def n_failed(self) -> int:
        """Origins where the model failed."""
        return len(self.origins) - self.n_ok

    @property
    def pinball_mean(self) -> float:
        """Mean pinball loss over the quantile levels (a discrete CRPS proxy)."""
        vals = [v for v in self.pinball.values() if not math.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The scores as JSON-ready plain data (no per-origin arrays)."""
        return {
            "model": self.model,
            "h": self.h,
            "step_s": self.step_s,
            "n_origins": len(self.origins),
            "n_ok": self.n_ok,
            "n_failed": self.n_failed,
            "season": self.season,
            "mae": _num(self.mae),
            "rmse": _num(self.rmse),
            "mase": _num(self.mase),
            "smape": _num(self.smape),
            "pinball": {f"{q:g}": _num(v) for q, v in self.pinball.items()},
            "pinball_mean": _num(self.pinball_mean),
            "coverage": {f"{lv:g}": _num(v) for lv, v in self.coverage.items()},
            "fit_s": _num(self.fit_s),
            "update_s": _num(self.update_s),
            "predict_s": _num(self.predict_s),
            "timed_out": self.timed_out,
            "detail": self.detail,
            "errors": list(self.errors),
        }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def rolling_origins(
    n: int, h: int, *, n_windows: int = 5, step_size: int | None = None
) -> list[int]:
    """Origins (indices of the first forecast bucket) of ``n_windows`` windows of ``h``
    steps, ``step_size`` apart, the last ending with the series.

    Raises:
        InsufficientHistory: the windows do not fit after at least one step of history.
        ValueError: ``h``, ``n_windows`` or ``step_size`` is below 1.
    """
    if h < 1:
        raise ValueError(f"horizon must be at least 1 step, got {h}")
    if n_windows < 1:
        raise ValueError(f"n_windows must be at least 1, got {n_windows}")
    step = h if step_size is None else step_size
    if step < 1:
        raise ValueError(f"step_size must be at least 1 step, got {step}")
    last = n - h
    first = last - step * (n_windows - 1)
    if first < 1:
        need = h + step * (n_windows - 1) + 1
        raise InsufficientHistory(
            f"{n_windows} window(s) of {h} steps, {step} apart, need at least {need} "
            f"observations, the series has {n}",
            needed=need,
            got=n,
        )
    return [first + step * i for i in range(n_windows)]


def cross_validation(
    series: Series,
    model_factory: Callable[[], Forecaster],
    h: int,
    *,
    n_windows: int = 5,
    step_size: int | None = None,
    origins: Sequence[int] | None = None,
    refit: bool | int = True,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    levels: Sequence[float] = (0.9,),
    season: int | None = None,
    time_budget_s: float | None = None,
) -> BacktestResult:
    """Rolling-origin backtest of the models ``model_factory()`` builds.

    Args:
        series: the whole series; each origin sees only the buckets before it.
        model_factory: builds a fresh, unfitted model.
        h: forecast horizon in steps.
        n_windows: number of windows when ``origins`` is not given.
        step_size: steps between consecutive origins (default ``h``).
        origins: explicit origins (indices of the first forecast bucket), increasing.
        refit: fit a fresh model every ``refit``-th origin (``True`` = every origin,
            ``False``/``0`` = only the first) and ``update()`` in between.
        quantiles: levels the forecasts are asked for; the bounds of ``levels`` are added.
        levels: central intervals whose coverage is scored (0.9 -> q0.05..q0.95).
        season: season of the MASE scale; detected on the first training window if ``None``.
        time_budget_s: stop (and set ``timed_out``) once fitting and predicting have taken
            this long in total; the origins not reached are left out.

    Raises:
        InsufficientHistory: the windows do not fit in the series.
        ValueError: bad ``h``, ``origins``, ``refit`` or levels.
    """
    n = len(series)
    if h < 1:
        raise ValueError(f"horizon must be at least 1 step, got {h}")
    if origins is None:
        orig = rolling_origins(n, h, n_windows=n_windows, step_size=step_size)
    else:
        orig = [int(o) for o in origins]
        if not orig:
            raise ValueError("origins is empty")
        if any(b <= a for a, b in itertools.pairwise(orig)):
            raise ValueError(f"origins must be strictly increasing, got {orig}")
        if orig[0] < 1 or orig[-1] + h > n:
            raise InsufficientHistory(
                f"origins must lie in [1, {n - h}] for a horizon of {h} steps on a series "
                f"of {n}; got {orig[0]}..{orig[-1]}",
                needed=orig[-1] + h,
                got=n,
            )
    every = 1 if refit is True else int(refit)
    if every < 0:
        raise ValueError(f"refit must be a bool or a non-negative int, got {refit!r}")
    bounds = [interval_bounds(lv) for lv in levels]
    qs = validate_quantiles([*quantiles, 0.5, *(b for pair in bounds for b in pair)])

    train0 = series.slice(0, orig[0])
    m = season if season is not None else primary_season(train0)
    scale = mase_scale(train0.values, m)

    results: list[OriginResult] = []
    model: Forecaster | None = None
    prev = 0
    spent = 0.0
    timed_out = False
    name = ""
    for i, o in enumerate(orig):
        if time_budget_s is not None and spent > time_budget_s:
            timed_out = True
            break
        actual = np.array(series.values[o : o + h], dtype=np.float64)
        do_refit = model is None or (every > 0 and i % every == 0)
        t0 = time.perf_counter()
        fc: Forecast | None = None
        err = ""
        fit_s = pred_s = 0.0
        try:
            if do_refit:
                model = model_factory()
                name = model.name
                model.fit(series.slice(0, o))
            else:
                assert model is not None
                model.update(series.slice(prev, o))
            t1 = time.perf_counter()
            fit_s = t1 - t0
            fc = model.predict(h, quantiles=qs)
            pred_s = time.perf_counter() - t1
        except RECOVERABLE as exc:
            err = f"{type(exc).__name__}: {exc}"
            fit_s = time.perf_counter() - t0
            model = None  # refit at the next origin
        spent += fit_s + pred_s
        prev = o
        results.append(
            OriginResult(
                origin=o, origin_s=series.start_s + o * series.step_s, actual=actual,
                forecast=fc, refit=do_refit, fit_s=fit_s, predict_s=pred_s, error=err,
            )
        )
    return _score(
        name or _factory_name(model_factory), series.step_s, h, qs, levels, results, m,
        scale, timed_out,
    )


def _factory_name(factory: Callable[[], Forecaster]) -> str:
    return str(getattr(factory, "name", getattr(factory, "__name__", "model")))


def _score(
    name: str,
    step_s: float,
    h: int,
    qs: tuple[float, ...],
    levels: Sequence[float],
    results: list[OriginResult],
    season: int,
    scale: float,
    timed_out: bool,
) -> BacktestResult:
    ok = [r for r in results if r.forecast is not None]
    fcs = [r.forecast for r in ok if r.forecast is not None]
    if ok:
        act = np.concatenate([r.actual for r in ok])
        med = np.concatenate([f.median for f in fcs])
        by_q = {q: np.concatenate([f.quantile(q) for f in fcs]) for q in qs}
    else:
        act = med = np.zeros(0)
        by_q = {q: np.zeros(0) for q in qs}
    cov = {}
    for lv in levels:
        lo, hi = interval_bounds(lv)
        cov[float(lv)] = coverage(act, by_q[lo], by_q[hi]) if act.size else float("nan")
    fits = [r.fit_s for r in results if r.refit and r.ok]
    updates = [r.fit_s for r in results if not r.refit and r.ok]
    preds = [r.predict_s for r in ok]
    return BacktestResult(
        model=name, h=h, step_s=step_s, quantiles=qs, origins=tuple(results), season=season,
        mase_scale=scale, mae=mae(act, med), rmse=rmse(act, med), mase=mase(act, med, scale),
        smape=smape(act, med),
        pinball={q: pinball(act, by_q[q], q) for q in qs},
        coverage=cov,
        fit_s=float(np.mean(fits)) if fits else float("nan"),
        update_s=float(np.mean(updates)) if updates else float("nan"),
        predict_s=float(np.median(preds)) if preds else float("nan"),
        timed_out=timed_out,
        detail=fcs[-1].detail if fcs else "",
        errors=tuple(r.error for r in results if r.error),
    )
