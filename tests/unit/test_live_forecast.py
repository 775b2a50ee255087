"""LiveForecaster: history on the forecast grid, cheap updates, refits installed later."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from autoscaler.core.live_forecast import LiveForecaster, fit_model, horizon_steps
from forecasting.errors import SeriesError
from forecasting.series import Series

STEP = 60.0


@pytest.fixture(scope="module")
def nasa(load_trace: Callable[[str], Series]) -> Series:
    s = load_trace("nasa_http_1995")
    return s.slice(0, 4 * 1440).as_rate()


def test_horizon_covers_lag_lead_and_interval() -> None:
    # history ends 90 s before now; lead 120 s; interval 15 s -> 225 s -> 4 steps + 1
    assert horizon_steps(1000.0, 910.0, 120.0, 15.0, 60.0) == 5
    assert horizon_steps(0.0, 0.0, 0.0, 0.0, 60.0) == 1


def test_extend_install_predict_and_catch_up(nasa: Series) -> None:
    lf = LiveForecaster("seasonal_naive", STEP, 3 * 86400)
    assert lf.predict(0.0, 120, 15, (0.5, 0.9)) is None  # no model yet
    first = nasa.slice(0, 2 * 1440)
    assert lf.extend(first) == 2 * 1440
    snap = lf.snapshot()
    assert snap is not None and snap.n_observed >= lf.min_history()
    model = fit_model("seasonal_naive", {}, snap)
    # buckets arrive while the model is being fitted (overlapping the held ones)
    more = nasa.slice(2 * 1440 - 10, 2 * 1440 + 30)
    assert lf.extend(more) == 30
    lf.install(model, snap)
    assert model.history.end_s == lf.history_end_s  # caught up through update()
    now = lf.history_end_s + 30  # type: ignore[operator]
    fc = lf.predict(now, 120.0, 15.0, (0.5, 0.9))
    assert fc is not None and fc.start_s == lf.history_end_s
    assert fc.horizon == horizon_steps(now, lf.history_end_s, 120.0, 15.0, STEP)  # type: ignore[arg-type]
    assert np.all(fc.quantile(0.9) >= fc.quantile(0.5))
    # later ticks feed the model cheaply
    lf.extend(nasa.slice(2 * 1440 + 30, 2 * 1440 + 31))
    assert model.history.end_s == lf.history_end_s


def test_history_is_trimmed_and_a_too_old_model_is_dropped(nasa: Series) -> None:
    lf = LiveForecaster("seasonal_naive", STEP, 1 * 86400)
    lf.extend(nasa.slice(0, 1440))
    snap = lf.snapshot()
    assert snap is not None
    model = fit_model("seasonal_naive", {}, snap)
    lf.extend(nasa.slice(1440, 3 * 1440))  # two days arrive before the install
    assert len(lf.history) == lf.max_buckets == 1440  # type: ignore[arg-type]
    lf.install(model, snap)
    assert lf.fitted is None
    assert "refit" in lf.last_error


def test_gap_becomes_missing_not_zero(nasa: Series) -> None:
    lf = LiveForecaster("seasonal_naive", STEP, 86400)
    lf.extend(nasa.slice(0, 100))
    lf.extend(nasa.slice(110, 120))
    h = lf.history
    assert h is not None and len(h) == 120
    assert np.isnan(h.values[100:110]).all()


def test_off_grid_or_wrong_step_is_an_error(nasa: Series) -> None:
    lf = LiveForecaster("seasonal_naive", STEP, 86400)
    lf.extend(nasa.slice(0, 100))
    off = nasa.slice(100, 110).replace(start_s=nasa.start_s + 100 * STEP + 7)
    with pytest.raises(SeriesError):
        lf.extend(off)
    with pytest.raises(SeriesError):
        lf.extend(nasa.slice(100, 110).replace(step_s=30.0))


def test_unknown_model_and_bad_grid_fail_early() -> None:
    with pytest.raises(KeyError):
        LiveForecaster("no_such_model", STEP, 86400)
    with pytest.raises(ValueError):
        LiveForecaster("ets", STEP, 10.0)
    assert not math.isinf(LiveForecaster("ets", STEP, 86400).max_buckets)


def _jumping(n: int, seed: int = 4) -> np.ndarray:
    """Levels that jump at random between 10-minute buckets and hold within them."""
    return np.random.default_rng(seed).uniform(100.0, 300.0, n)


def test_the_bucket_in_progress_is_conditioned_on_this_buckets_readings() -> None:
    """10-minute buckets, a reading per 60 s tick (a few seconds of jitter): once four
    readings of the new bucket are in, its forecast is their level at every quantile, the
    later buckets keep the model's; without ``fine_step_s`` the model's wide interval stays."""
    step, n = 600.0, 80
    levels = _jumping(n + 1)
    t0 = 1_700_000_400.0  # on the 10-minute grid
    hist = Series(start_s=t0, step_s=step, values=levels[:n], kind="rate", name="d")
    rng = np.random.default_rng(0)
    plain = LiveForecaster("nowcast", step, 86400.0)
    live = LiveForecaster("nowcast", step, 86400.0, fine_step_s=60.0)
    assert (plain.per_bucket, live.per_bucket) == (0, 10)
    for lf in (plain, live):
        lf.extend(hist)
        snap = lf.snapshot()
        assert snap is not None
        lf.install(fit_model("nowcast", {}, snap), snap)
    for i in range(n * 10 + 4):  # every minute of history plus 4 of the bucket in progress
        t = t0 + 60.0 * i + float(rng.uniform(0, 5))
        live.observe(t, float(levels[i // 10]))
    live.observe(t0 + 60.0 * (n * 10 + 2) + 1, None)  # a missing reading changes nothing
    now = t0 + n * step + 215.0
    fc = live.predict(now, 120.0, 60.0, (0.5, 0.9, 0.95))
    ref = plain.predict(now, 120.0, 60.0, (0.5, 0.9, 0.95))
    assert fc is not None and ref is not None
    np.testing.assert_allclose(fc.values[:, 0], levels[n])
    np.testing.assert_array_equal(fc.values[:, 1:], ref.values[:, 1:])
    assert ref.quantile(0.95)[0] - ref.quantile(0.5)[0] > 20.0
    # once the bucket is over (history not yet extended) nothing is conditioned
    late = live.predict(t0 + (n + 1) * step + 30.0, 120.0, 60.0, (0.5, 0.9, 0.95))
    assert late is not None and "first bucket" not in late.detail


def test_readings_are_bounded() -> None:
    lf = LiveForecaster("nowcast", 600.0, 86400.0, fine_step_s=15.0)
    for i in range(lf.per_bucket * (lf.readings_buckets + 50)):
        lf.observe(15.0 * i, 1.0)
    assert lf.n_readings == lf.readings_buckets * lf.per_bucket  # older ones overwritten
    last = lf._slot(15.0 * (lf.per_bucket * (lf.readings_buckets + 50) - 1))
    assert np.isnan(lf.readings(last - (lf.readings_buckets + 3) * lf.per_bucket, 1))[0]
    assert lf.readings(last, 1)[0] == 1.0
    with pytest.raises(ValueError, match="fine_step_s must be > 0"):
        LiveForecaster("nowcast", 600.0, 86400.0, fine_step_s=0.0)


def test_seeding_fills_only_empty_slots() -> None:
    lf = LiveForecaster("nowcast", 600.0, 86400.0, fine_step_s=60.0)
    lf.observe(600.0 * 100 + 5, 7.0)
    fine = Series(start_s=600.0 * 99, step_s=60.0, values=np.r_[np.full(19, 3.0), np.nan],
                  kind="rate")
    assert lf.seed(fine) == 18  # 19 readings, one slot already read by a tick
    assert lf.readings(lf._slot(600.0 * 100 + 5), 1)[0] == 7.0
    assert lf.readings(lf._slot(600.0 * 99), 1)[0] == 3.0
    assert LiveForecaster("nowcast", 600.0, 86400.0).seed(fine) == 0


def test_the_adaptive_level_is_scored_on_new_buckets_and_read_by_predict() -> None:
    """Every bucket ``extend`` adds is scored against the forecast ``predict`` made for it;
    misses raise the level, and the 0.9 row ``predict`` returns is the model's row at that
    level (the warm pool's 0.95 row at least that)."""
    rng = np.random.default_rng(1)
    t0 = 1_700_000_040.0
    hist = Series(start_s=t0, step_s=STEP, values=10.0 + rng.normal(0, 1, 200), kind="rate",
                  name="d")
    lf = LiveForecaster("nowcast", STEP, 86400.0, scaling_quantile=0.9,
                        adaptive={"step": 0.05})
    off = LiveForecaster("nowcast", STEP, 86400.0)
    assert off.level is None and lf.level is not None and lf.level.level == 0.9
    for f in (lf, off):
        f.extend(hist)
        snap = f.snapshot()
        assert snap is not None
        f.install(fit_model("nowcast", {}, snap), snap)
    qs = (0.5, 0.9, 0.95)
    for _ in range(3):  # three buckets far above the forecast: three misses
        end = lf.history_end_s
        assert end is not None
        assert lf.predict(end + 20.0, 120.0, 15.0, qs) is not None
        lf.extend(Series(start_s=end, step_s=STEP, values=np.array([40.0]), kind="rate",
                         name="d"))
    assert (lf.level.scored, lf.level.missed) == (3, 3)
    assert lf.level.level == 0.98  # 0.9 + 3 * 0.045, at most hi
    end = lf.history_end_s
    assert end is not None
    fc = lf.predict(end + 20.0, 120.0, 15.0, qs)
    assert fc is not None and fc.quantiles == qs and "q0.9 read at q0.98" in fc.detail
    assert lf.fitted is not None
    raw = lf.fitted.predict(fc.horizon, (0.5, 0.98))
    np.testing.assert_array_equal(fc.quantile(0.9), raw.quantile(0.98))
    np.testing.assert_array_equal(fc.quantile(0.95), raw.quantile(0.98))
    np.testing.assert_array_equal(fc.quantile(0.5), raw.quantile(0.5))
    lf.extend(Series(start_s=end, step_s=STEP, values=np.array([math.nan]), kind="rate",
                     name="d"))  # a missing bucket moves nothing
    assert (lf.level.scored, lf.level.level) == (3, 0.98)
