"""The prediction guard: scores forecasts against outcomes and switches prediction off (and
back on) against the reactive rule's persistence error."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.core.prediction_guard import GuardSettings, PredictionGuard
from forecasting.forecast import Forecast

STEP = 60.0


def flat_forecast(start_s: float, level: float, h: int = 10, spread: float = 0.2) -> Forecast:
    qs = (0.5, 0.9)
    vals = np.vstack([np.full(h, level), np.full(h, level * (1 + spread))])
    return Forecast(start_s=start_s, step_s=STEP, quantiles=qs, values=vals, model="t")


def run(guard: PredictionGuard, demand: list[float], predicted: list[float],
        lead_s: float = 120.0) -> PredictionGuard:
    """Tick every minute: score, then record a forecast of ``predicted[i]`` for now+lead."""
    for i, d in enumerate(demand):
        now = i * STEP
        guard = guard.observe(now, d)
        guard = guard.record(now, flat_forecast(now, predicted[i]), d, lead_s, 0.9)
    return guard


def test_good_forecast_stays_on_and_reports_errors() -> None:
    # demand ramps; the forecast knows the ramp (predicts demand two minutes ahead)
    demand = [10.0 + 5 * i for i in range(40)]
    predicted = [10.0 + 5 * (i + 2) for i in range(40)]
    g = run(PredictionGuard(GuardSettings(min_samples=5)), demand, predicted)
    assert g.enabled
    assert g.n == 38  # the last two are still pending
    assert g.mae == pytest.approx(0.0)
    assert g.reactive_mae == pytest.approx(10.0)  # persistence lags the ramp by 2 steps
    assert g.coverage == pytest.approx(1.0)
    assert "better than reactive" in g.reason


def test_bad_forecast_is_switched_off_then_back_on_with_hysteresis() -> None:
    s = GuardSettings(window=10, min_samples=5)
    demand = [100.0] * 30
    wrong = [300.0] * 30  # flat demand, forecast far off: persistence is perfect
    g = run(PredictionGuard(s), demand, wrong)
    assert not g.enabled
    assert "worse than reactive" in g.reason
    # the forecast becomes exact again: the window slides, prediction comes back
    g2 = run(g, [100.0 + i for i in range(30)], [100.0 + i + 2 for i in range(30)])
    assert g2.enabled
    assert "recovered" in g2.reason or "better than" in g2.reason


def test_needs_min_samples_before_switching_off() -> None:
    s = GuardSettings(window=20, min_samples=15)
    g = run(PredictionGuard(s), [100.0] * 10, [500.0] * 10)
    assert g.enabled and g.n == 8
    assert "8/15" in g.reason


def test_missing_demand_scores_nothing_and_keeps_pending() -> None:
    g = PredictionGuard(GuardSettings(min_samples=1))
    g = g.record(0.0, flat_forecast(0.0, 50.0), 40.0, 60.0, 0.9)
    assert len(g.pending) == 1
    g = g.observe(120.0, None)
    assert len(g.pending) == 1 and g.n == 0
    g = g.observe(120.0, 50.0)
    assert len(g.pending) == 0 and g.n == 1
    assert g.mae == pytest.approx(0.0) and g.reactive_mae == pytest.approx(10.0)


def test_forecast_not_reaching_the_lead_is_not_recorded() -> None:
    g = PredictionGuard().record(0.0, flat_forecast(0.0, 50.0, h=2), 40.0, 600.0, 0.9)
    assert g.pending == ()
    assert PredictionGuard().record(0.0, flat_forecast(0.0, 1.0), None, 60.0, 0.9).pending == ()


def test_idle_target_does_not_flip_on_noise() -> None:
    s = GuardSettings(window=10, min_samples=5, floor_rps=0.05)
    g = run(PredictionGuard(s), [0.0, 0.01] * 10, [0.02] * 20)
    assert g.enabled


@pytest.mark.parametrize(
    "kwargs",
    [{"window": 0}, {"min_samples": 50, "window": 10}, {"enable_ratio": 1.2},
     {"enable_ratio": 0.0}, {"floor_rps": -1.0}],
)
def test_bad_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GuardSettings(**kwargs)  # type: ignore[arg-type]


def test_step_scores_records_and_withholds_while_off() -> None:
    """One tick through step(): the forecast is passed through while prediction is on and
    withheld (None) once the guard has switched it off; a missing forecast records nothing."""
    g = PredictionGuard(GuardSettings(window=4, min_samples=2))
    lead = 60.0
    for i in range(6):  # forecast says 100, demand stays 10: far worse than persistence
        now = i * lead
        g, use = g.step(now, flat_forecast(now, 100.0), 10.0, lead, 0.9)
    assert not g.enabled and use is None
    g2, use2 = g.step(6 * lead, None, 10.0, lead, 0.9)
    assert use2 is None and len(g2.pending) <= len(g.pending)


def test_plan_scores_are_the_pinball_loss_of_each_plan() -> None:
    """Worked numbers. Policy: forecast sized at 90 %, floor 90 % while predicting, 70 %
    without. Forecast upper (q0.9) 180 req/s, demand now 140, demand then 200:
    with prediction the capacity serves max(180/0.9, 140/0.9) = 200 -> loss 0;
    without it serves 140/0.7 = 200 too -> loss 0. Demand then 250: both short by 50 ->
    0.9 * 50 = 45 each. Demand then 100: excess 100 -> 0.1 * 100 = 10 each."""
    from autoscaler.core.prediction_guard import GuardPlan
    from autoscaler.core.settings import PolicySettings

    plan = GuardPlan.of(PolicySettings(10.0))
    assert (plan.forecast_util_ratio, plan.floor_util_ratio_predicting) == (0.9, 0.9)
    assert plan.floor_util_ratio == 0.7
    assert plan.with_prediction(180.0, 140.0) == pytest.approx(200.0)
    assert plan.without_prediction(140.0) == pytest.approx(200.0)
    g = PredictionGuard(GuardSettings(min_samples=1))
    for t, outcome in ((0.0, 200.0), (100.0, 250.0), (200.0, 100.0)):
        fc = Forecast(start_s=t, step_s=STEP, quantiles=(0.5, 0.9),
                      values=np.array([[150.0] * 3, [180.0] * 3]), model="t")
        g = g.record(t, fc, 140.0, 60.0, 0.9, plan).observe(t + 60.0, outcome)
    assert g.n == 3
    assert g.plan_loss == pytest.approx((0 + 45 + 10) / 3)
    assert g.reactive_plan_loss == pytest.approx((0 + 45 + 10) / 3)
    # a forecast 40 % too low: the floor at 90 % carries (200 -> 155.6), and the plan with
    # prediction now falls short where the 70 % rule does not
    low = Forecast(start_s=0.0, step_s=STEP, quantiles=(0.5, 0.9),
                   values=np.array([[90.0] * 3, [108.0] * 3]), model="t")
    g2 = PredictionGuard(GuardSettings(min_samples=1)).record(0.0, low, 140.0, 60.0, 0.9, plan)
    g2 = g2.observe(60.0, 190.0)
    assert g2.plan_loss == pytest.approx(0.9 * (190.0 - 140.0 / 0.9))
    assert g2.reactive_plan_loss == pytest.approx(0.1 * (200.0 - 190.0))
    assert not g2.enabled and "plan loss" in g2.reason
    # score="mae" ignores the plans: the medians (90 vs persistence 140) decide
    g3 = PredictionGuard(GuardSettings(min_samples=1, score="mae")).record(
        0.0, low, 140.0, 60.0, 0.9, plan).observe(60.0, 190.0)
    assert g3.plan_loss is not None and "forecast MAE" in g3.reason and not g3.enabled


def test_plan_score_without_the_policy_falls_back_to_mae() -> None:
    g = run(PredictionGuard(GuardSettings(min_samples=5)), [100.0] * 30, [300.0] * 30)
    assert g.plan_loss is None and "forecast MAE" in g.reason and not g.enabled
    with pytest.raises(ValueError, match="score"):
        GuardSettings(score="rmse")  # type: ignore[arg-type]
