"""``auto``: pick (or combine) models by a rolling backtest on the tail of the history.

On :meth:`AutoForecaster.fit` every candidate (by default every other registered model, so
models added to the registry later are picked up by name) is backtested on the last few
windows of the history: fitted once before the first window, then ``update()``-d window
by window (:func:`forecasting.backtest.cross_validation` with ``refit=False``), so the cost
is one fit and a few cheap predictions per candidate. Candidates are ranked by mean pinball
loss over a grid of quantile levels (a discrete CRPS); the median of the top 2 or 3
candidates' quantiles is taken instead of the best one when it scores better on the same
windows by at least 10 % (on the shared traces smaller gains on a few tail windows
did not carry over to the following days).

It never errors on a model's behalf: a candidate that raises (anything), fails at a window,
or takes longer than ``time_budget_s`` is dropped with the reason, and when none is left
the choice falls back to seasonal naive, which is always fitted as the safety net. The
interval is then calibrated (split-conformal style) on the same windows: each quantile's
distance from the median is scaled so that its empirical level on the backtest matches
the nominal one. ``Forecast.detail`` reports the choice, the scores, the calibration and the
dropped models.

``update()`` passes new observations through to the chosen models without re-selecting;
selection happens again on the next ``fit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Self

import numpy as np

from forecasting.backtest import cross_validation
from forecasting.errors import InsufficientHistory, NotFitted, SeriesError
from forecasting.forecast import DEFAULT_QUANTILES, Forecast, validate_quantiles
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.protocol import Forecaster
from forecasting.series import FloatArray, Series

__all__ = ["GRID", "AutoForecaster", "calibration_factors"]

#: quantile levels the candidates are scored and calibrated on
GRID: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
FALLBACK = "seasonal_naive"
_MIN_CALIBRATION_POINTS = 24
#: relative pinball-loss gain an ensemble needs over the best single candidate
ENSEMBLE_MARGIN = 0.10
#: levels calibrated (the tails); levels in between are interpolated towards 1 at the median
CALIBRATED = (0.05, 0.1, 0.9, 0.95)


def calibration_factors(
    actual: FloatArray, values: FloatArray, levels: Sequence[float] = GRID
) -> dict[float, float]:
    """Per-level factors that rescale each quantile's distance from the median so that its
    empirical level on ``actual`` matches the nominal one (1.0 when too few points).

    ``values`` has shape ``(len(levels), n)`` and ``levels`` includes 0.5. A factor ``s``
    for level ``q`` turns ``median + d`` into ``median + s * d``; it is clamped to
    [0.75, 3] (a short tail narrows an interval only a little).
    """
    qs = list(levels)
    med = values[qs.index(0.5)]
    out: dict[float, float] = {}
    for i, q in enumerate(qs):
        if q == 0.5:
            continue
        off = values[i] - med
        ok = ~np.isnan(actual) & (np.abs(off) > 1e-9 * (1.0 + np.abs(med)))
        if int(ok.sum()) < _MIN_CALIBRATION_POINTS:
            out[q] = 1.0
            continue
        r = (actual[ok] - med[ok]) / off[ok]
        s = float(np.quantile(r, q if q > 0.5 else 1.0 - q))
        out[q] = float(np.clip(s, 0.75, 3.0))
    return out


class AutoForecaster:
    """Model selection by recent rolling-backtest pinball loss, with a seasonal-naive floor.

    Args:
        candidates: model names (looked up in the registry) or a mapping of name to
            factory; ``None`` means every registered model except ``auto``.
        horizon: steps ahead the selection backtest scores; ``None`` uses one hour of
            steps, clamped to [6, 48].
        n_windows: backtest windows; ``None`` uses enough for ~48 scored points (4..8).
        time_budget_s: most seconds one candidate may spend in the selection backtest (or
            in its final fit) before it is dropped. The budget is checked between fits and
            predictions (a pure model cannot be pre-empted), so one very slow fit is only
            detected when it returns.
        total_budget_s: most seconds the whole selection may take; candidates not reached
            in time are dropped.
        top_k: largest median ensemble tried (1 disables ensembles).
        calibrate: rescale the quantiles on the backtest residuals.
    """

    name = "auto"

    def __init__(
        self,
        candidates: Sequence[str] | Mapping[str, Callable[[], Forecaster]] | None = None,
        *,
        horizon: int | None = None,
        n_windows: int | None = None,
        time_budget_s: float = 60.0,
        total_budget_s: float = 240.0,
        top_k: int = 3,
        calibrate: bool = True,
    ) -> None:
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be at least 1 step, got {horizon}")
        if n_windows is not None and n_windows < 1:
            raise ValueError(f"n_windows must be at least 1, got {n_windows}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.candidates_arg = candidates
        self.horizon = horizon
        self.n_windows = n_windows
        self.time_budget_s = time_budget_s
        self.total_budget_s = total_budget_s
        self.top_k = top_k
        self.calibrate = calibrate
        self._history: Series | None = None
        self._members: dict[str, Forecaster] = {}
        self._fallback: SeasonalNaive | None = None
        self.chosen: tuple[str, ...] = ()
        self.scores: dict[str, float] = {}
        self.dropped: dict[str, str] = {}
        self.factors: dict[float, float] = {}
        self.note = ""

    # -------------------------------------------------------------- interface
    def min_history(self, step_s: float) -> int:
        """Two observations: below that even the fallback cannot forecast."""
        return 2

    def fit(self, series: Series) -> Self:
        """Select the model(s) on the tail of ``series``, then fit them on all of it.

        Raises:
            InsufficientHistory: fewer than two observations.
        """
        need = self.min_history(series.step_s)
        if series.n_observed < need:
            raise InsufficientHistory(
                f"auto needs at least {need} observations, got {series.n_observed}",
                needed=need, got=series.n_observed,
            )
        self._history = series
        self._members, self.chosen, self.scores, self.dropped = {}, (), {}, {}
        self.factors, self.note = {}, ""
        self._fallback = SeasonalNaive()
        self._fallback.fit(series)
        factories = self._factories()
        ranked = self._select(series, factories)
        for names in ranked:
            members = self._fit_members(series, {n: factories[n] for n in names})
            if members:
                self._members = members
                self.chosen = tuple(members)
                if names != ranked[0]:
                    self.factors = {}  # calibrated for the first choice, not this one
                break
        if not self._members:
            self.chosen = (FALLBACK,)
            self.factors = {}
            self.note = self.note or "no candidate survived; seasonal naive fallback"
        return self

    def update(self, new: Series) -> Self:
        """Pass new observations through to the chosen model(s); no re-selection.

        Raises:
            NotFitted: before ``fit``.
            SeriesError: ``new`` does not continue the history (different step or kind,
                or it starts before the history ends).
        """
        hist = self.history
        if new.kind != hist.kind:
            raise SeriesError(f"update has kind {new.kind!r}, history has {hist.kind!r}")
        self._history = hist.append(new)
        assert self._fallback is not None
        self._fallback.update(new)
        for name in list(self._members):
            try:
                self._members[name].update(new)
            except Exception as exc:  # a member failing must not fail auto
                self._drop_member(name, f"update failed: {_why(exc)}")
        return self

    def predict(self, h: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Forecast:
        """Quantile forecast of the chosen model(s), calibrated; seasonal naive when every
        chosen model fails here."""
        if h < 1:
            raise ValueError(f"horizon must be at least 1 step, got {h}")
        hist = self.history
        qs = validate_quantiles(quantiles)
        ask = validate_quantiles([*qs, 0.5])
        rows: list[FloatArray] = []
        for name in list(self._members):
            try:
                rows.append(np.asarray(self._members[name].predict(h, ask).values))
            except Exception as exc:  # a member failing must not fail auto
                self._drop_member(name, f"predict failed: {_why(exc)}")
        if rows:
            values = np.median(np.stack(rows), axis=0) if len(rows) > 1 else rows[0]
            values = self._calibrated(values, ask)
        else:
            assert self._fallback is not None
            values = np.asarray(self._fallback.predict(h, ask).values)
        keep = [ask.index(q) for q in qs]
        return Forecast(
            start_s=hist.end_s, step_s=hist.step_s, quantiles=qs, values=values[keep],
            model=self.name, kind=hist.kind, detail=self.detail,
        )

    # ---------------------------------------------------------------- report
    @property
    def history(self) -> Series:
        """The history seen so far."""
        if self._history is None:
            raise NotFitted("auto: call fit() before predict() or update()")
        return self._history

    @property
    def detail(self) -> str:
        """The choice, the scores, the calibration and the dropped models, in one line."""
        used = tuple(self._members) or (FALLBACK,)
        parts = [f"chose {'+'.join(used)}" + (" (median)" if len(used) > 1 else "")]
        if self.scores:
            parts.append(
                "pinball " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(
                    self.scores.items(), key=lambda kv: kv[1]))
            )
        if self.factors and tuple(self._members):
            parts.append(
                "calibration " + ",".join(f"q{q:g}x{s:.2f}" for q, s in self.factors.items())
            )
        if self.dropped:
            parts.append("dropped " + "; ".join(f"{k}: {v}" for k, v in self.dropped.items()))
        if self.note:
            parts.append(self.note)
        return " | ".join(parts)

    # -------------------------------------------------------------- internals
    def _factories(self) -> dict[str, Callable[[], Forecaster]]:
        arg = self.candidates_arg
        if isinstance(arg, Mapping):
            return dict(arg)
        from forecasting.models import REGISTRY  # the registry imports this module

        if arg is None:  # every registered model that does not opt out of auto's default
            names = [
                n for n in REGISTRY
                if n != self.name and getattr(REGISTRY[n], "auto_candidate", True)
            ]
        else:
            names = list(arg)
        out: dict[str, Callable[[], Forecaster]] = {}
        for n in names:
            if n == self.name or REGISTRY.get(n) is AutoForecaster:
                continue
            if n not in REGISTRY:
                self.dropped[n] = "not registered"
                continue
            out[n] = REGISTRY[n]
        return out

    def _select(
        self, series: Series, factories: Mapping[str, Callable[[], Forecaster]]
    ) -> list[tuple[str, ...]]:
        """Candidate sets best first (ensembles included); fills scores/dropped/factors."""
        h = self.horizon or int(min(48, max(6, round(3600.0 / series.step_s))))
        n_w = self.n_windows or min(8, max(4, math.ceil(48 / h)))
        # shrink the windows to what the history allows (keep >= half of it for training)
        while n_w > 1 and n_w * h > len(series) // 2:
            n_w -= 1
        if n_w * h > len(series) // 2:
            self.note = f"history too short to backtest {h} steps; seasonal naive fallback"
            return []
        origins = [len(series) - h * (n_w - i) for i in range(n_w)]
        actual = np.concatenate([series.values[o : o + h] for o in origins])
        preds: dict[str, FloatArray] = {}
        start = time.perf_counter()
        for name, factory in factories.items():
            if time.perf_counter() - start > self.total_budget_s:
                self.dropped[name] = f"not tried: selection budget {self.total_budget_s:g} s spent"
                continue
            try:
                res = cross_validation(
                    series, factory, h, origins=origins, refit=False, quantiles=GRID,
                    levels=(), season=1, time_budget_s=self.time_budget_s,
                )
            except Exception as exc:  # any failure of a candidate drops it, never auto
                self.dropped[name] = _why(exc)
                continue
            spent = sum(o.fit_s + o.predict_s for o in res.origins)
            if res.timed_out or spent > self.time_budget_s:
                self.dropped[name] = f"too slow: {spent:.1f} s > budget {self.time_budget_s:g} s"
                continue
            if res.n_failed:
                self.dropped[name] = next(o.error for o in res.origins if o.error)
                continue
            preds[name] = np.stack(
                [np.concatenate([o.forecast.quantile(q) for o in res.origins
                                 if o.forecast is not None]) for q in GRID]
            )
        if not preds:
            return []
        self.scores = {n: _crps(actual, p) for n, p in preds.items()}
        order = sorted(self.scores, key=lambda n: (self.scores[n], n))
        configs: list[tuple[tuple[str, ...], float, FloatArray]] = [
            ((n,), self.scores[n], preds[n]) for n in order
        ]
        for k in range(2, min(self.top_k, len(order)) + 1):
            top = tuple(order[:k])
            ens = np.median(np.stack([preds[n] for n in top]), axis=0)
            ens = np.sort(ens, axis=0)
            # an ensemble must beat the best single model clearly, not by selection noise
            configs.append((top, _crps(actual, ens) * (1 + ENSEMBLE_MARGIN), ens))
        configs.sort(key=lambda c: (c[1], len(c[0])))
        best_vals = configs[0][2]
        if self.calibrate:
            rows = [GRID.index(q) for q in (*CALIBRATED, 0.5)]
            levels = [GRID[i] for i in rows]
            self.factors = calibration_factors(actual, best_vals[rows], levels)
        return [c[0] for c in configs]

    def _fit_members(
        self, series: Series, factories: Mapping[str, Callable[[], Forecaster]]
    ) -> dict[str, Forecaster]:
        out: dict[str, Forecaster] = {}
        for name, factory in factories.items():
            if name in self.dropped:
                return {}
            t0 = time.perf_counter()
            try:
                model = factory()
                model.fit(series)
            except Exception as exc:  # a failing final fit drops the candidate
                self.dropped[name] = f"final fit failed: {_why(exc)}"
                return {}
            took = time.perf_counter() - t0
            if took > self.time_budget_s:
                self.dropped[name] = f"final fit too slow: {took:.1f} s"
                return {}
            out[name] = model
        return out

    def _drop_member(self, name: str, why: str) -> None:
        self._members.pop(name, None)
        self.dropped[name] = why

    def _calibrated(self, values: FloatArray, qs: tuple[float, ...]) -> FloatArray:
        if not self.factors:
            return values
        # the median is never moved: anchor the interpolation at factor 1 there
        anchored = {**self.factors, 0.5: 1.0}
        grid = np.array(sorted(anchored))
        fac = np.array([anchored[q] for q in grid])
        med = values[qs.index(0.5)]
        out = values.copy()
        for i, q in enumerate(qs):
            if q == 0.5:
                continue
            side = grid[grid <= 0.5] if q < 0.5 else grid[grid >= 0.5]
            side_f = fac[grid <= 0.5] if q < 0.5 else fac[grid >= 0.5]
            if side.size == 0:
                continue
            s = float(np.interp(q, side, side_f))
            out[i] = med + s * (values[i] - med)
        return out


def _crps(actual: FloatArray, values: FloatArray) -> float:
    """Mean pinball loss over the :data:`GRID` levels (rows of ``values``)."""
    ok = ~np.isnan(actual)
    if not ok.any():
        return float("inf")
    a = actual[ok]
    total = 0.0
    for i, q in enumerate(GRID):
        d = a - values[i][ok]
        total += float(np.mean(np.maximum(q * d, (q - 1) * d)))
    return total / len(GRID)


def _why(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg}"[:200]
