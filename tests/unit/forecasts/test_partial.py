"""The bucket in progress: a forecast's first bucket conditioned on its observed part."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from forecasting.forecast import Forecast
from forecasting.partial import condition_first_bucket
from forecasting.series import Series

QS = (0.5, 0.9, 0.95)


def _fc(first: tuple[float, float, float], later: float = 50.0, h: int = 3) -> Forecast:
    vals = np.array([[first[i]] + [later + 10 * i] * (h - 1) for i in range(3)])
    return Forecast(start_s=6000.0, step_s=600.0, quantiles=QS, values=vals, model="m")


def test_a_level_that_holds_within_buckets_collapses_the_interval_onto_it() -> None:
    """Past buckets each constant (levels varying between buckets, as a 10-minute trace
    replays): the rest of the bucket in progress is its observed level, at every quantile;
    the later buckets are left as they were."""
    rng = np.random.default_rng(1)
    past = np.repeat(rng.uniform(20, 80, 40)[:, None], 10, axis=1)
    fc = _fc((60.0, 90.0, 100.0))
    out = condition_first_bucket(fc, np.array([41.0, 41.0, 41.0]), past)
    np.testing.assert_allclose(out.values[:, 0], 41.0)
    np.testing.assert_array_equal(out.values[:, 1:], fc.values[:, 1:])
    assert "first bucket from 3 of 10 points" in out.detail


def test_a_ramp_within_every_bucket_is_carried_into_the_rest() -> None:
    """Each past bucket's second half is 30 % above its first: from 5 observed points at 40
    req/s the rest is expected at 52 (the change over the bucket's level, 0.3/1.15, times the
    scale, the larger of the level now and the last bucket's mean)."""
    head = np.linspace(30, 60, 40)[:, None]
    past = np.hstack([np.repeat(head, 5, axis=1), np.repeat(1.3 * head, 5, axis=1)])
    out = condition_first_bucket(_fc((10.0, 200.0, 300.0)), np.full(5, 40.0), past)
    scale = max(40.0, 1.15 * 60.0)
    np.testing.assert_allclose(out.values[:, 0], 40.0 + 0.3 / 1.15 * scale)


def test_bursty_minutes_keep_the_model_when_it_is_sharper() -> None:
    """When the few points seen say less than the model (bursts inside every bucket), the
    conditioned interval is the wider one and the model's forecast is kept as it is."""
    rng = np.random.default_rng(2)
    past = rng.exponential(20.0, (60, 4))
    fc = _fc((20.0, 24.0, 25.0))
    assert condition_first_bucket(fc, np.array([15.0]), past) is fc


@pytest.mark.parametrize(
    ("observed", "buckets"),
    [(np.array([]), 40), (np.array([np.nan, np.nan]), 40), (np.array([30.0]), 5)],
    ids=["nothing-observed", "all-missing", "too-little-history"],
)
def test_nothing_to_condition_on_returns_the_forecast(observed: np.ndarray, buckets: int) -> None:
    fc = _fc((60.0, 90.0, 100.0))
    past = np.full((buckets, 10), 30.0)
    assert condition_first_bucket(fc, observed, past) is fc


def test_missing_fine_points_are_skipped_not_read_as_zero() -> None:
    """NaN (a failed scrape) in the past buckets and the observed part is ignored."""
    past = np.full((40, 10), 30.0)
    past[::3, 2] = np.nan
    out = condition_first_bucket(_fc((60.0, 90.0, 100.0)), np.array([45.0, np.nan, 45.0]), past)
    np.testing.assert_allclose(out.values[:, 0], 45.0)


def test_bad_shapes_are_refused() -> None:
    fc = _fc((60.0, 90.0, 100.0))
    with pytest.raises(ValueError, match="buckets, points per bucket"):
        condition_first_bucket(fc, np.array([1.0]), np.ones(40))
    with pytest.raises(ValueError, match="do not leave part"):
        condition_first_bucket(fc, np.ones(10), np.ones((40, 10)))


def test_the_conditioned_quantiles_cover_the_rest_of_real_buckets(
    load_trace: Callable[[str], Series],
) -> None:
    """NASA's per-minute requests in 10-minute buckets: from the first ``n`` minutes of each
    bucket, the conditioned 0.9 quantile covers the rest's mean about 90 % of the time and
    the median splits it about evenly (the model's own interval is made wide, so the
    conditioned one is always used)."""
    y = load_trace("nasa_http_1995").values[: 10 * 24 * 60].astype(np.float64) / 60.0
    k = 10
    buckets = y[: len(y) // k * k].reshape(-1, k)
    wide = Forecast(start_s=0.0, step_s=600.0, quantiles=QS,
                    values=np.array([[0.0], [1e6], [2e6]]), model="wide")
    below = {0.5: 0, 0.9: 0}
    n_cases = 0
    for b in range(60, len(buckets)):
        for n in (1, 4, 8):
            out = condition_first_bucket(wide, buckets[b, :n], buckets[:b])
            rest = float(np.mean(buckets[b, n:]))
            below[0.5] += rest <= out.quantile(0.5)[0]
            below[0.9] += rest <= out.quantile(0.9)[0]
            n_cases += 1
    assert n_cases > 500
    assert 0.40 <= below[0.5] / n_cases <= 0.60
    assert 0.85 <= below[0.9] / n_cases <= 0.95
