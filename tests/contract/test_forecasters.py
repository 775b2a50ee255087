"""One conformance suite over every registered forecaster, on real trace slices.

Every model in ``REGISTRY`` must: satisfy the ``Forecaster`` protocol, refuse too short a
history with ``InsufficientHistory``, return ``(n_quantiles, h)`` monotone, non-negative
quantiles starting at the end of the history, move its origin on ``update``, and give the
same forecast when fitted twice on the same data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from forecasting.errors import InsufficientHistory
from forecasting.models import REGISTRY, make
from forecasting.protocol import Forecaster
from forecasting.series import Series

QUANTILES = (0.5, 0.9, 0.99)

# (trace, resample step in s or None, history points, horizon, update points)
SLICES = {
    "wikipedia_1h": ("wikipedia_en_2016_01", None, 24 * 21, 24, 3),
    "nasa_5min": ("nasa_http_1995", 300.0, 288 * 4, 12, 5),
    "servegen_10min": ("servegen_language_m_small", None, 144 * 4, 6, 2),
}


@pytest.fixture(scope="module", params=sorted(SLICES))
def trace_slice(
    request: pytest.FixtureRequest, load_trace: Callable[[str], Series]
) -> tuple[Series, Series, int]:
    """(history, the points that follow it, horizon) from a real trace."""
    name, step, n, h, n_upd = SLICES[request.param]
    s = load_trace(name)
    if step is not None:
        s = s.slice(0, int(n * step / s.step_s) + 2 * int(step / s.step_s)).resample(step)
    return s.slice(0, n), s.slice(n, n + n_upd), h


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_forecaster_contract(name: str, trace_slice: tuple[Series, Series, int]) -> None:
    hist, new, h = trace_slice
    model = make(name)
    assert isinstance(model, Forecaster)
    assert model.name == name

    f = model.fit(hist).predict(h, quantiles=QUANTILES)
    assert f.values.shape == (len(QUANTILES), h)
    assert f.quantiles == QUANTILES
    assert f.start_s == pytest.approx(hist.end_s) and f.step_s == hist.step_s
    assert np.all(np.isfinite(f.values)) and np.all(f.values >= 0)
    assert np.all(np.diff(f.values, axis=0) >= 0)  # q0.5 <= q0.9 <= q0.99
    # the median is on the scale of the data, not a degenerate output
    level = float(np.nanmean(hist.values[-h * 4 :]))
    assert 0.2 * level < float(np.mean(f.median)) < 5 * level

    again = make(name).fit(hist).predict(h, quantiles=QUANTILES)
    np.testing.assert_allclose(again.values, f.values, rtol=1e-9, atol=1e-9)

    moved = model.update(new).predict(h, quantiles=QUANTILES)
    assert moved.start_s == pytest.approx(new.end_s)
    assert moved.values.shape == (len(QUANTILES), h)
    assert np.all(np.diff(moved.values, axis=0) >= 0) and np.all(moved.values >= 0)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_too_little_history_is_refused(name: str) -> None:
    model = make(name)
    need = model.min_history(60.0)
    assert need >= 2
    short = Series(start_s=0, step_s=60.0, values=np.full(need - 1, 5.0))
    with pytest.raises(InsufficientHistory) as exc:
        model.fit(short)
    assert exc.value.needed == need and exc.value.got == need - 1
    # exactly the minimum is accepted and forecasts
    ok = Series(start_s=0, step_s=60.0, values=5.0 + np.arange(need) % 3)
    f = make(name).fit(ok).predict(3, quantiles=QUANTILES)
    assert f.values.shape == (3, 3)
