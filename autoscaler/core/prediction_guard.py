"""Is prediction helping? Score live forecasts against what happened, and switch them off
(visibly) for a target whose recent forecast error is worse than the reactive rule's.

The reactive rule (the HPA) sizes for the demand it sees *now*; in forecasting terms it
predicts that demand ``lead`` seconds ahead equals demand now (persistence). So each tick
the guard records the forecast's median for ``now + lead`` next to the demand seen now;
when that moment comes, both are scored against the demand then observed:

- ``mae``: mean absolute error of the forecast median over the last ``window`` scores;
- ``reactive_mae``: the same for persistence (what the reactive rule assumed);
- ``coverage``: share of outcomes at or below the forecast's policy quantile (the one the
  policy sizes on), which should be near that quantile.

With at least ``min_samples`` scores, prediction is disabled when
``mae > disable_ratio * reactive_mae`` and enabled again when
``mae <= enable_ratio * reactive_mae`` (hysteresis, so it does not flap). The guard keeps
scoring while disabled (the controller keeps forecasting in the shadow), which is how it
notices recovery. Pure: time is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from forecasting.forecast import Forecast

__all__ = ["GuardSettings", "PredictionGuard"]


@dataclass(frozen=True)
class GuardSettings:
    """When to distrust the forecast.

    Attributes:
        window: scored forecasts kept (the rolling window).
        min_samples: scores needed before the guard may switch prediction off.
        disable_ratio: switch off when forecast MAE > this x reactive MAE.
        enable_ratio: switch back on when forecast MAE <= this x reactive MAE.
        max_pending: forecasts waiting for their outcome (older ones are dropped).
        floor_rps: errors below this (req/s) count as equal, so a flat, idle target does not
            flip on noise.
    """

    window: int = 40
    min_samples: int = 12
    disable_ratio: float = 1.1
    enable_ratio: float = 1.0
    max_pending: int = 512
    floor_rps: float = 0.05

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_samples < 1 or self.max_pending < 1:
            raise ValueError("window, min_samples and max_pending must be >= 1")
        if self.min_samples > self.window:
            raise ValueError(
                f"min_samples ({self.min_samples}) cannot exceed window ({self.window})"
            )
        if not 0 < self.enable_ratio <= self.disable_ratio:
            raise ValueError(
                f"need 0 < enable_ratio <= disable_ratio, got {self.enable_ratio}, "
                f"{self.disable_ratio}"
            )
        if self.floor_rps < 0:
            raise ValueError("floor_rps must be >= 0")


@dataclass(frozen=True)
class _Pending:
    due_s: float
    median: float
    upper: float
    persisted: float


@dataclass(frozen=True)
class _Score:
    forecast_err: float
    reactive_err: float
    covered: bool


@dataclass(frozen=True)
class PredictionGuard:
    """Rolling forecast-versus-reactive scores of one target and the resulting switch.

    Immutable: every method returns the next guard.
    """

    settings: GuardSettings = GuardSettings()
    enabled: bool = True
    pending: tuple[_Pending, ...] = ()
    scores: tuple[_Score, ...] = ()
    reason: str = "not enough scored forecasts yet"

    # ------------------------------------------------------------------ recording
    def record(
        self,
        now_s: float,
        forecast: Forecast,
        demand_now: float | None,
        lead_s: float,
        quantile: float,
    ) -> PredictionGuard:
        """Remember the forecast for ``now + lead`` (median and ``quantile``) and the
        demand seen now, to be scored when that moment's demand is observed.

        Skipped when demand now is missing (persistence has nothing to predict with) or the
        forecast does not reach ``now + lead``.
        """
        if demand_now is None or not math.isfinite(demand_now):
            return self
        due = now_s + max(0.0, lead_s)
        i = math.floor((due - forecast.start_s) / forecast.step_s)
        if i < 0 or i >= forecast.horizon:
            return self
        med = float(forecast.quantile(0.5)[i])
        up = float(forecast.quantile(_nearest(forecast, quantile))[i])
        pending = (*self.pending, _Pending(due, med, up, float(demand_now)))
        return replace(self, pending=pending[-self.settings.max_pending :])

    def observe(self, now_s: float, demand_now: float | None) -> PredictionGuard:
        """Score every pending forecast that is due by ``now_s`` against ``demand_now``
        and update the switch. A missing demand scores nothing (pending ones wait)."""
        if demand_now is None or not math.isfinite(demand_now):
            return self
        due = [p for p in self.pending if p.due_s <= now_s]
        if not due:
            return self
        left = tuple(p for p in self.pending if p.due_s > now_s)
        new = tuple(
            _Score(
                abs(p.median - demand_now),
                abs(p.persisted - demand_now),
                demand_now <= p.upper + 1e-9,
            )
            for p in due
        )
        scores = (self.scores + new)[-self.settings.window :]
        return replace(self, pending=left, scores=scores)._switch()

    def step(
        self,
        now_s: float,
        forecast: Forecast | None,
        demand_now: float | None,
        lead_s: float,
        quantile: float,
    ) -> tuple[PredictionGuard, Forecast | None]:
        """One tick: score what came due, record ``forecast`` (when there is one), and
        return the new guard with the forecast the policy may use (``None`` while
        prediction is off)."""
        g = self.observe(now_s, demand_now)
        if forecast is not None:
            g = g.record(now_s, forecast, demand_now, lead_s, quantile)
        return g, (forecast if g.enabled else None)

    # ------------------------------------------------------------------ summaries
    @property
    def n(self) -> int:
        """Scored forecasts in the window."""
        return len(self.scores)

    @property
    def mae(self) -> float | None:
        """Forecast-median MAE over the window (req/s); ``None`` before any score."""
        return _mean([s.forecast_err for s in self.scores])

    @property
    def reactive_mae(self) -> float | None:
        """Persistence (reactive rule) MAE over the same outcomes (req/s)."""
        return _mean([s.reactive_err for s in self.scores])

    @property
    def coverage(self) -> float | None:
        """Share of outcomes at or below the forecast's policy quantile."""
        return _mean([1.0 if s.covered else 0.0 for s in self.scores])

    def _switch(self) -> PredictionGuard:
        s = self.settings
        mae, rmae = self.mae, self.reactive_mae
        if self.n < s.min_samples or mae is None or rmae is None:
            return replace(self, reason=f"{self.n}/{s.min_samples} scored forecasts")
        f, r = max(mae, s.floor_rps), max(rmae, s.floor_rps)
        summary = f"forecast MAE {mae:.3g} vs reactive {rmae:.3g} req/s over {self.n}"
        if self.enabled and f > s.disable_ratio * r:
            return replace(self, enabled=False, reason=f"worse than reactive: {summary}")
        if not self.enabled and f <= s.enable_ratio * r:
            return replace(self, enabled=True, reason=f"recovered: {summary}")
        state = "better than" if f <= r else "worse than"
        return replace(self, reason=f"{state} reactive: {summary}")


def _nearest(forecast: Forecast, q: float) -> float:
    return min(forecast.quantiles, key=lambda x: abs(x - q))


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
