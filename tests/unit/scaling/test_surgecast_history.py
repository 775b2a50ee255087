"""surgecast started with backfilled history, as the live controller's first refit starts
it from Prometheus: the same forecasts as a run that lived through that history."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.core.observation import DemandView
from autoscaler.core.settings import PolicySettings
from autoscaler.core.simulator import SimConfig, simulate
from autoscaler.core.surgecast import SurgecastAutoscaler
from forecasting.series import Series

CAP = 10.0
STEP = 60.0  # the replay's step
DAY = 1440  # replay steps per day


def _daily(days: int, seed: int = 5) -> np.ndarray:
    """Per-minute demand with a daily swing and noise, a level jump every 10 minutes."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    base = 200.0 + 120.0 * np.sin(2 * np.pi * t / DAY)
    steps = np.repeat(rng.uniform(0.8, 1.2, days * DAY // 10), 10)
    return np.asarray(base * steps + rng.normal(0, 5.0, len(t)))


def _surgecast(history: Series | None = None, quantile: float = 0.9) -> SurgecastAutoscaler:
    return SurgecastAutoscaler(
        PolicySettings(
            CAP, max_replicas=400, interval_s=STEP, cold_start_prior_s=120.0, quantile=quantile
        ),
        forecast_step_s=600.0,
        refit_every_s=1.0,  # refit on every tick, so two runs hold the same model
        history=history,
    )


@pytest.mark.parametrize(
    ("cut", "quantile"),
    [(2 * DAY, 0.9), (2 * DAY + 3, 0.9), (2 * DAY, 0.99)],  # 0.99 reads 199 past buckets
)
def test_backfilled_history_gives_the_forecasts_of_a_run_that_lived_through_it(
    cut: int, quantile: float
) -> None:
    """Days [0, 2) as history, then the replay: every forecast (the bucket in progress
    conditioned on its observed minutes included) equals the one made by a forecaster
    that saw the whole series from the start on the same bucket grid. The grid starts at
    the replay (as without history), so a history that ends inside a bucket drops its
    oldest points that do not fill one."""
    values = _daily(3)
    lived = values[cut % 10 :]  # the same bucket grid as the replay's
    t0 = (cut % 10) * STEP
    full, seeded = _surgecast(quantile=quantile), _surgecast(
        Series(start_s=0.0, step_s=STEP, values=values[:cut], kind="rate", name="h"), quantile
    )
    first = seeded.forecast(cut * STEP, DemandView(cut * STEP, STEP, values[cut:cut]))
    assert first is not None and (first.start_s - cut * STEP) % 600.0 == 0
    for i in range(cut + 1, cut + 95, 7):
        now = (i + 1) * STEP
        want = full.forecast(now, DemandView(t0, STEP, lived[: i - cut % 10]))
        got = seeded.forecast(now, DemandView(cut * STEP, STEP, values[cut:i]))
        assert want is not None and got is not None
        assert got.start_s == want.start_s and got.quantiles == want.quantiles
        assert got.detail == want.detail
        np.testing.assert_allclose(got.values, want.values, rtol=1e-9)


def test_without_history_the_forecaster_waits_for_its_minimum_history() -> None:
    """The first ticks of a fresh install run on the reactive rule; with history the
    forecast is used from the first tick."""
    values = _daily(2)
    fresh = _surgecast()
    assert fresh.forecast(STEP, DemandView(DAY * STEP, STEP, values[DAY : DAY + 1])) is None
    seeded = _surgecast(Series(start_s=0.0, step_s=STEP, values=values[:DAY], kind="rate"))
    fc = seeded.forecast((DAY + 1) * STEP, DemandView(DAY * STEP, STEP, values[DAY : DAY + 1]))
    assert fc is not None and fc.start_s == DAY * STEP


def test_backfill_spares_the_first_day_of_a_replay() -> None:
    """A replay of day 2 of a daily trace: the backfilled run plans from the first hour
    with its forecast (the decisions say so) and misses no more requests than the fresh
    run, which has the reactive rule alone until its forecaster has its history."""
    values = _daily(2)
    replay = Series(start_s=DAY * STEP, step_s=STEP, values=values[DAY:], kind="rate", name="r")
    hist = Series(start_s=0.0, step_s=STEP, values=values[:DAY], kind="rate", name="h")
    cfg = SimConfig(capacity_rps_per_replica=CAP, step_s=STEP, seed=0)
    runs = {}
    for label, h in (("fresh", None), ("backfilled", hist)):
        sc = _surgecast(h)
        sc.refit_every_s = 6 * 3600.0
        runs[label] = simulate(replay, sc, cfg, name=label)
    assert runs["backfilled"].reasons.get("ForecastLead", 0) > runs["fresh"].reasons.get(
        "ForecastLead", 0
    )
    assert runs["backfilled"].slo_share >= runs["fresh"].slo_share - 1e-9


def test_history_that_does_not_end_where_the_replay_starts_is_refused() -> None:
    values = _daily(1)
    for hist, why in (
        (Series(start_s=0.0, step_s=STEP, values=values[:90], kind="rate"), "end where"),
        (Series(start_s=0.0, step_s=30.0, values=values[:200], kind="rate"), "step"),
    ):
        sc = _surgecast(hist)
        with pytest.raises(ValueError, match=why):
            sc.forecast(6001.0, DemandView(6000.0, STEP, values[100:101]))


def test_history_without_a_whole_bucket_or_any_observation_counts_as_none() -> None:
    """Nothing usable in the backfill: the forecaster starts as on a fresh install."""
    values = _daily(1)
    view = DemandView(6000.0, STEP, values[100:101])
    for hist in (
        Series(start_s=0.0, step_s=STEP, values=np.full(100, np.nan), kind="rate"),
        Series(start_s=5460.0, step_s=STEP, values=values[91:100], kind="rate"),  # 9 minutes
    ):
        assert _surgecast(hist).forecast(6001.0, view) is None


def test_split_history_days() -> None:
    """Day counts become whole steps; the replay starts where the history ends."""
    from autoscaler.core.scenario import split_history

    trace = Series(start_s=0.0, step_s=STEP, values=_daily(3), kind="rate", name="t")
    replay, hist = split_history(trace, 1.0, 1.5)
    assert hist is not None and len(hist) == DAY and hist.start_s == 0.0
    assert replay.start_s == DAY * STEP and len(replay) == DAY * 3 // 2
    assert split_history(trace, 0.7)[0].start_s == 1008 * STEP  # not 1007 (int() rounding)
    assert split_history(trace, 0.0)[1] is None and len(split_history(trace, 0.0)[0]) == 3 * DAY
    for h, d, why in ((-1.0, None, ">= 0"), (float("nan"), None, ">= 0"), (3.0, None, "too little"),
                      (2.0, 1.5, "too little")):
        with pytest.raises(ValueError, match=why):
            split_history(trace, h, d)
