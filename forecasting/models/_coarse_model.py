"""The fit / update / predict skeleton shared by the coarse-step models (ETS, MSTL, GBM).

A subclass models the gap-free coarse values of a :class:`~forecasting.models._coarse.CoarseView`
and implements three hooks:

- ``_fit_coarse(y)``: fit on the coarse values (``self.plan`` holds the seasons);
- ``_extend_coarse(y_new)``: take whole new coarse buckets *without* refitting
  (re-filter with the fitted parameters, refresh lag features, ...);
- ``_predict_coarse(H, quantiles)``: ``(n_q, H)`` quantiles of the next ``H`` buckets.

Everything else (season plan, bucket bookkeeping, the refit cadence, wrapping library
failures, mapping back to the fine step) lives here once.
"""

from __future__ import annotations

import numpy as np

from forecasting.errors import ForecastFailed
from forecasting.models._base import BaseForecaster
from forecasting.models._coarse import CoarsePlan, CoarseView, make_plan
from forecasting.series import FloatArray

__all__ = ["CoarseForecaster"]


class CoarseForecaster(BaseForecaster):
    """Base of the models that fit at a coarse step.

    Args:
        seasons: season lengths in fine steps; ``None`` detects them from the data.
        refit_every_s: seconds of new data after which ``update`` refits in full;
            ``None`` never refits on update (only ``fit`` does).
        max_points: most recent coarse buckets a fit uses.
        max_short_season: most coarse steps the shortest season may span (sets the factor).
        max_long_season: most coarse steps the longest season may span.
    """

    def __init__(
        self,
        seasons: list[int] | tuple[int, ...] | None = None,
        *,
        refit_every_s: float | None = 86400.0,
        max_points: int = 4032,
        max_short_season: int = 144,
        max_long_season: int = 1008,
    ) -> None:
        super().__init__()
        if refit_every_s is not None and not refit_every_s > 0:
            raise ValueError(f"refit_every_s must be positive or None, got {refit_every_s!r}")
        if max_points < 16:
            raise ValueError(f"max_points must be at least 16, got {max_points}")
        self.seasons_arg = None if seasons is None else tuple(int(s) for s in seasons)
        self.refit_every_s = refit_every_s
        self.max_points = max_points
        self.max_short_season = max_short_season
        self.max_long_season = max_long_season
        self.plan = CoarsePlan(factor=1, seasons=(), fine_seasons=(), fine_step_s=1.0)
        self._view: CoarseView | None = None
        self._model_end_s = 0.0  # end of the last coarse bucket the model has seen
        self._fit_end_s = 0.0  # ... at the last full fit
        self.n_refits = 0  # full fits so far (fit + cadence refits), for tests and reports

    # --------------------------------------------------------------- skeleton
    def _fit(self) -> None:
        hist = self.history
        self.plan = make_plan(
            hist, self.seasons_arg, max_short_season=self.max_short_season,
            max_long_season=self.max_long_season,
        )
        view = CoarseView(hist, self.plan, max_points=self.max_points)
        if len(view.coarse) < self._min_coarse():
            # the buckets hold fewer whole points than the model needs: fit unaggregated
            self.plan = CoarsePlan(1, self.plan.fine_seasons, self.plan.fine_seasons,
                                   hist.step_s)
            view = CoarseView(hist, self.plan, max_points=self.max_points)
        self._view = view
        self._fit_coarse(view.filled)
        self._model_end_s = view.end_s
        self._fit_end_s = view.end_s
        self.n_refits += 1

    def _on_update(self, n_new: int) -> None:
        view = CoarseView(self.history, self.plan, max_points=self.max_points)
        if view.end_s <= self._model_end_s + 1e-9:
            self._view = view  # only the partial bucket moved: nothing for the model
            return
        if self.refit_every_s is not None and (
            view.end_s - self._fit_end_s >= self.refit_every_s
        ):
            self._fit()
            return
        filled = view.filled
        n_new_b = round((view.end_s - self._model_end_s) / self.plan.step_s)
        n_new_b = min(n_new_b, len(filled))
        self._extend_coarse(filled[len(filled) - n_new_b :])
        self._view = view
        self._model_end_s = view.end_s

    def _predict(self, h: int, quantiles: tuple[float, ...]) -> FloatArray:
        view = self._view
        if view is None:  # pragma: no cover - history exists only after _fit
            raise ForecastFailed(f"{self.name}: no fitted state")
        big_h = view.coarse_horizon(h)
        q = self._predict_coarse(big_h, quantiles)
        if q.shape != (len(quantiles), big_h) or not np.all(np.isfinite(q)):
            raise ForecastFailed(f"{self.name}: the model produced a non-finite forecast")
        return view.to_fine(q, quantiles, h)

    def _detail(self) -> str:
        seasons = ",".join(str(s) for s in self.plan.seasons) or "none"
        return f"factor={self.plan.factor} seasons={seasons}"

    # ------------------------------------------------------------------ hooks
    def _min_coarse(self) -> int:
        """Fewest coarse points the model fits on."""
        return 16

    def _fit_coarse(self, y: FloatArray) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _extend_coarse(self, y_new: FloatArray) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def _predict_coarse(self, h: int, quantiles: tuple[float, ...]) -> FloatArray:
        raise NotImplementedError  # pragma: no cover - abstract
