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

With the policy's utilisations (:class:`GuardPlan`, which the controller and the simulator
pass) the switch judges the two *plans* rather than the two medians (``score="plan"``, the
default). The plan with prediction is what the policy sizes while predicting: the
forecast's policy quantile at ``forecast_util_ratio``, and at least the floor on the demand
seen now at ``predicting_target_util_ratio``. The plan without is the reactive rule alone,
the demand seen now at ``target_util_ratio``. Each is the demand its capacity serves, and
each is scored against the demand then observed by the pinball loss at the policy's
quantile: a shortfall weighs ``q``, an excess ``1 - q``. That is the policy's own SLO-versus-cost
knob, and the loss is smallest for a plan at the outcome's ``q`` quantile:

- ``plan_loss`` and ``reactive_plan_loss`` are their means over the window.

The medians' MAE is kept and reported, but it is not what the policy uses. The reactive rule
sees demand up to a minute fresher than the forecaster's last complete bucket, so on
traffic that wanders like a random walk persistence's MAE wins by that minute alone. The
MAE switch (``score="mae"``) then turned prediction off on the ServeGen and Wikipedia
traces for nearly the whole replay, where the forecast-led plan costs 0.1-0.2x of the
oracle's GPU-hours less.

With at least ``min_samples`` scores, prediction is disabled when the score with it
exceeds ``disable_ratio`` times the score without it, and enabled again when it is at most
``enable_ratio`` times (hysteresis, so it does not flap). The guard keeps scoring while
disabled (the controller keeps forecasting in the shadow), which is how it notices
recovery. Pure: time is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from autoscaler.core.settings import PolicySettings
from forecasting.forecast import Forecast

__all__ = ["GuardPlan", "GuardSettings", "PredictionGuard"]

GuardScore = Literal["plan", "mae"]


@dataclass(frozen=True)
class GuardPlan:
    """The utilisations the policy plans at, to score its plans with and without prediction.

    Attributes:
        forecast_util_ratio: the forecast's quantile is sized at this utilisation.
        floor_util_ratio_predicting: the reactive floor's utilisation while predicting.
        floor_util_ratio: the reactive rule's utilisation without prediction.
    """

    forecast_util_ratio: float
    floor_util_ratio_predicting: float
    floor_util_ratio: float

    @classmethod
    def of(cls, settings: PolicySettings) -> GuardPlan:
        """The plan shape of a policy's settings."""
        fu = settings.forecast_util_ratio
        return cls(
            forecast_util_ratio=settings.target_util_ratio if fu is None else fu,
            floor_util_ratio_predicting=settings.reactive_util(True),
            floor_util_ratio=settings.reactive_util(False),
        )

    def with_prediction(self, upper: float, demand_now: float) -> float:
        """Demand the capacity planned with prediction serves."""
        return max(upper / self.forecast_util_ratio, demand_now / self.floor_util_ratio_predicting)

    def without_prediction(self, demand_now: float) -> float:
        """Demand the reactive rule's capacity serves."""
        return demand_now / self.floor_util_ratio


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
        score: ``"plan"``: switch on the plans' pinball loss when the policy's utilisations
            are passed (:class:`GuardPlan`), else on the MAE; ``"mae"``: always on the
            medians' MAE against persistence.
    """

    window: int = 40
    min_samples: int = 12
    disable_ratio: float = 1.1
    enable_ratio: float = 1.0
    max_pending: int = 512
    floor_rps: float = 0.05
    score: GuardScore = "plan"

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
        if self.score not in ("plan", "mae"):
            raise ValueError(f"score must be 'plan' or 'mae', got {self.score!r}")


@dataclass(frozen=True)
class _Pending:
    due_s: float
    median: float
    upper: float
    persisted: float
    plan_with: float | None = None
    plan_without: float | None = None
    quantile: float = 0.9


@dataclass(frozen=True)
class _Score:
    forecast_err: float
    reactive_err: float
    covered: bool
    plan_loss: float | None = None
    reactive_plan_loss: float | None = None


def _pinball(q: float, outcome: float, plan: float) -> float:
    """Pinball loss of ``plan`` at level ``q``: a shortfall weighs ``q``, an excess
    ``1 - q``."""
    return q * max(0.0, outcome - plan) + (1.0 - q) * max(0.0, plan - outcome)


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
        plan: GuardPlan | None = None,
    ) -> PredictionGuard:
        """Remember the forecast for ``now + lead`` (median and ``quantile``) and the
        demand seen now, to be scored when that moment's demand is observed; with ``plan``,
        also the demand the policy's capacity serves with and without prediction.

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
        d = float(demand_now)
        pw = plan.with_prediction(up, d) if plan is not None else None
        po = plan.without_prediction(d) if plan is not None else None
        pending = (*self.pending, _Pending(due, med, up, d, pw, po, quantile))
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
                None if p.plan_with is None else _pinball(p.quantile, demand_now, p.plan_with),
                None
                if p.plan_without is None
                else _pinball(p.quantile, demand_now, p.plan_without),
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
        plan: GuardPlan | None = None,
    ) -> tuple[PredictionGuard, Forecast | None]:
        """One tick: score what came due, record ``forecast`` (when there is one), and
        return the new guard with the forecast the policy may use (``None`` while
        prediction is off). ``plan``: see :meth:`record`."""
        g = self.observe(now_s, demand_now)
        if forecast is not None:
            g = g.record(now_s, forecast, demand_now, lead_s, quantile, plan)
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
    def plan_loss(self) -> float | None:
        """Mean pinball loss of the plan with prediction over the window's plan scores
        (req/s); ``None`` without any."""
        return _mean([s.plan_loss for s in self.scores if s.plan_loss is not None])

    @property
    def reactive_plan_loss(self) -> float | None:
        """The same for the reactive rule's plan (req/s)."""
        return _mean(
            [s.reactive_plan_loss for s in self.scores if s.reactive_plan_loss is not None]
        )

    @property
    def coverage(self) -> float | None:
        """Share of outcomes at or below the forecast's policy quantile."""
        return _mean([1.0 if s.covered else 0.0 for s in self.scores])

    def _switch(self) -> PredictionGuard:
        s = self.settings
        mae, rmae = self.mae, self.reactive_mae
        if self.n < s.min_samples or mae is None or rmae is None:
            return replace(self, reason=f"{self.n}/{s.min_samples} scored forecasts")
        pl, rpl = self.plan_loss, self.reactive_plan_loss
        planned = sum(1 for x in self.scores if x.plan_loss is not None)
        if s.score == "plan" and pl is not None and rpl is not None and planned >= s.min_samples:
            f, r = max(pl, s.floor_rps), max(rpl, s.floor_rps)
            summary = (
                f"plan loss {pl:.3g} vs reactive {rpl:.3g} req/s over {planned} "
                f"(MAE {mae:.3g} vs {rmae:.3g})"
            )
        else:
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
