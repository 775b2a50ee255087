"""surgecast as an :class:`~autoscaler.core.observation.Autoscaler`: a real forecaster
(``forecasting.models.make(model)``) feeding :class:`~autoscaler.core.policy.Policy`.

Each tick the complete forecast buckets that became visible are passed to ``update()``
(cheap); the model is refit from scratch every ``refit_every_s``. Until the model has its
minimum history, or when it fails, the policy runs on the reactive rule alone (the
decision's components say so). With ``guard`` settings, a
:class:`~autoscaler.core.prediction_guard.PredictionGuard` scores every forecast against
persistence and withholds the forecast from the policy while it is the worse of the two,
as the live controller does. The benchmark runs without it: on traces recorded at a coarse
step (hourly Wikipedia, 10-minute ServeGen) the replayed demand is constant between bucket
edges, so persistence is exact most of the time and the guard switches the forecast off
exactly where it is needed, at the edges (docs/autoscaling.md). With ``partial_bucket``
(the default) the forecast's first bucket, the one in progress, is conditioned on the part
of it already observed (:func:`~forecasting.partial.condition_first_bucket`): at a coarse
forecast step the model's interval is otherwise held for the whole bucket after the new
level is known. With ``history`` (demand before the replay) the forecaster starts where
the live controller's first refit starts it, from ``forecast.history`` backfilled out of
Prometheus, instead of from nothing (a fresh install whose workers Prometheus has not
scraped before).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from autoscaler.core.decision import Decision
from autoscaler.core.observation import DemandView
from autoscaler.core.policy import Policy, PolicyState
from autoscaler.core.prediction_guard import GuardPlan, GuardSettings, PredictionGuard
from autoscaler.core.settings import DEFAULT_FORECAST_MODEL, PolicySettings
from autoscaler.core.signals import Signals
from autoscaler.core.simulator import demand_rates
from forecasting.adaptive import AdaptiveLevel, relabel
from forecasting.errors import ForecastingError
from forecasting.forecast import Forecast
from forecasting.models import make
from forecasting.models.nowcast import quantile_windows
from forecasting.partial import PartialCalibration, apply_partial, calibrate
from forecasting.protocol import Forecaster
from forecasting.series import Series

__all__ = ["SurgecastAutoscaler"]

#: recent buckets the bucket in progress is calibrated on (``calibrate``'s window; a high
#: level reads more, as ``quantile_windows`` says: 99 for 0.98)
_CAL_WINDOW = 36


class SurgecastAutoscaler:
    """Forecast-driven policy with explicit state (the forecaster and the policy state).

    ``history``: req/s before the replay, at the replay's step and ending where it starts
    (a ``ValueError`` at the first tick otherwise). Its whole forecast buckets, counted
    back from the replay's start, begin the forecaster's history, and its points calibrate
    the bucket in progress until the replay has enough of its own.
    """

    name = "surgecast"

    def __init__(
        self,
        settings: PolicySettings,
        *,
        model: str = DEFAULT_FORECAST_MODEL,
        model_kwargs: dict[str, Any] | None = None,
        forecast_step_s: float = 60.0,
        refit_every_s: float = 3600.0,
        guard: GuardSettings | None = None,
        partial_bucket: bool = True,
        history: Series | None = None,
        adaptive: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = Policy(settings)
        self.state: PolicyState = self.policy.initial_state()
        self.model_name = model
        self.model_kwargs = dict(model_kwargs or {})
        make(model, **self.model_kwargs)  # fail early on an unknown model name
        self.forecast_step_s = forecast_step_s
        self.refit_every_s = refit_every_s
        self.interval_s = settings.interval_s
        self.model: Forecaster | None = None
        self._buckets: list[float] = []
        self._start_s: float | None = None
        self._fed = 0
        #: the model's last forecast, reused while neither the model nor the horizon changed
        #: (ticks within one forecast bucket): (model, (buckets fed, h, levels), forecast)
        self._base: tuple[Forecaster, tuple[int, int, tuple[float, ...]], Forecast] | None = None
        self._fit_at_s = -math.inf
        self.last_forecast: Forecast | None = None
        self.last_error = ""
        self.guard = PredictionGuard(guard) if guard is not None else None
        self._plan = GuardPlan.of(settings)
        self.partial_bucket = partial_bucket
        self._cal: tuple[tuple[int, tuple[float, ...]], PartialCalibration] | None = None
        self._backfill = history
        #: the level the scaling quantile is read at (``None``: the nominal one)
        self.adaptive = (AdaptiveLevel(settings.quantile, **adaptive)
                         if adaptive is not None else None)
        self._scored = 0  # buckets scored by ``adaptive``
        self._pre = 0  # buckets of backfilled history before the replay's first bucket
        self._pre_fine: np.ndarray = np.empty(0)

    def _seed(self, view: DemandView, k: int) -> None:
        """Start the bucketed history with the backfill: whole forecast buckets of it that
        end where ``view`` starts (an older partial bucket is dropped). A history with no
        whole bucket, or nothing observed, counts as none."""
        hist = self._backfill
        vals = np.empty(0) if hist is None else np.asarray(hist.values, dtype=np.float64)
        pre = len(vals) // k
        if hist is not None and pre > 0 and not np.isnan(vals).all():
            end = hist.start_s + hist.step_s * len(vals)
            tol = 1e-6 * view.step_s
            if not math.isclose(hist.step_s, view.step_s, rel_tol=1e-9) or not math.isclose(
                end, view.start_s, rel_tol=0.0, abs_tol=tol
            ):
                raise ValueError(
                    f"history must be at the replay's step ({view.step_s:g} s) and end where "
                    f"it starts ({view.start_s:.3f}); got step {hist.step_s:g} s ending at "
                    f"{end:.3f}"
                )
            # gaps filled as the simulator fills the replay's
            filled = np.asarray(demand_rates(hist, view.step_s).values, dtype=np.float64)
            fine = filled[len(filled) - pre * k :]
            self._pre, self._pre_fine = pre, fine
            self._buckets = [float(x) for x in fine.reshape(pre, k).mean(axis=1)]
        self._start_s = view.start_s - self._pre * self.forecast_step_s

    def _history(self, view: DemandView) -> None:
        k = self.forecast_step_s / view.step_s
        if abs(k - round(k)) > 1e-9 or round(k) < 1:
            raise ValueError(
                f"forecast_step_s {self.forecast_step_s:g} must be a multiple of the view "
                f"step {view.step_s:g}"
            )
        k_int = round(k)
        if self._start_s is None:
            self._seed(view, k_int)
        n_full = len(view.values) // k_int
        have = len(self._buckets) - self._pre
        if n_full > have:
            new = (
                view.values[have * k_int : n_full * k_int]
                .reshape(-1, k_int)
                .mean(axis=1)
            )
            self._buckets.extend(float(x) for x in new)

    def _series(self, i0: int, i1: int) -> Series:
        assert self._start_s is not None
        return Series(
            start_s=self._start_s + i0 * self.forecast_step_s,
            step_s=self.forecast_step_s,
            values=np.asarray(self._buckets[i0:i1]),
            kind="rate",
            name="demand",
        )

    def _horizon(self, now_s: float) -> tuple[float, int]:
        """The end of the bucketed history (seconds) and the forecast steps from there that
        cover ``now`` plus the lead, one interval and the policy's ramp look-ahead."""
        assert self._start_s is not None
        lead = self.state.lead.lead_s if self.state.lead else self.settings.cold_start_prior_s
        hist_end = self._start_s + len(self._buckets) * self.forecast_step_s
        span = now_s - hist_end + lead + self.settings.interval_s + self.settings.ramp_lookahead_s
        return hist_end, max(1, math.ceil(span / self.forecast_step_s) + 1)

    def _quantiles(self) -> list[float]:
        """The quantile levels the policy reads: the median, its quantile, the warm pool's."""
        return sorted({0.5, self.settings.quantile, self.settings.warm_quantile})

    def forecast(self, now_s: float, view: DemandView) -> Forecast | None:
        """Bring the model up to date with ``view`` and forecast over the lead."""
        self._history(view)
        n = len(self._buckets)
        if self.adaptive is not None:
            for i in range(self._scored, n):  # buckets completed since: move the level
                self.adaptive.score(i, self._buckets[i])
            self._scored = n
        try:
            if self.model is None or now_s - self._fit_at_s >= self.refit_every_s:
                m = make(self.model_name, **self.model_kwargs)
                if n < m.min_history(self.forecast_step_s):
                    return None
                self.model = m.fit(self._series(0, n))
                self._fit_at_s, self._fed = now_s, n
            elif n > self._fed:
                self.model.update(self._series(self._fed, n))
                self._fed = n
            _, h = self._horizon(now_s)
            nominal = tuple(self._quantiles())
            read = self.adaptive.levels(nominal) if self.adaptive is not None else nominal
            key = (self._fed, h, tuple(sorted(set(read))))
            if self._base is not None and self._base[0] is self.model and self._base[1] == key:
                fc = self._base[2]  # the model has not changed since: same forecast
            else:
                fc = self.model.predict(h, list(key[2]))
                self._base = (self.model, key, fc)
            if self.adaptive is not None:  # the bucket in progress, forecast before it began
                lv = self.adaptive.level
                self.adaptive.expect(n, float(fc.quantile(lv)[0]))
            if self.partial_bucket:
                fc = self._condition(fc, view)
            fc = relabel(fc, read, nominal)
        except (ForecastingError, ValueError, np.linalg.LinAlgError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.model = None
            return None
        self.last_forecast = fc
        return fc

    def _condition(self, fc: Forecast, view: DemandView) -> Forecast:
        """``fc`` with its first bucket (the one in progress) conditioned on the fine
        points of it that ``view`` already holds."""
        k = round(self.forecast_step_s / view.step_s)
        n = len(self._buckets)
        n_view = n - self._pre
        part = view.values[n_view * k :]
        if k < 2 or len(part) == 0 or len(part) >= k:
            return fc
        key = (n, tuple(fc.quantiles))
        if self._cal is None or self._cal[0] != key:  # once per bucket
            past = view.values[: n_view * k]
            need = int(quantile_windows(np.asarray(key[1]), _CAL_WINDOW).max())
            if self._pre and n_view < need:  # the backfill's buckets before the replay's
                past = np.concatenate((self._pre_fine[-(need - n_view) * k :], past))
            self._cal = (key, calibrate(past.reshape(-1, k), key[1], window=_CAL_WINDOW))
        return apply_partial(fc, part, self._cal[1])

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """Forecast, let the prediction guard (if any) score it, decide with the policy."""
        now = signals.now_s
        fc = self.forecast(now, view)
        use = fc
        if self.guard is not None:
            lead = self.state.lead.lead_s if self.state.lead else self.settings.cold_start_prior_s
            self.guard, use = self.guard.step(
                now, fc, signals.demand_rps, lead, self.settings.quantile, self._plan
            )
        decision, self.state = self.policy.decide(signals, use, self.state)
        return decision
