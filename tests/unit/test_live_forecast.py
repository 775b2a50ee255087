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
